"""Spark (pyspark, local mode) over a shipped multi-host layout, through the generated DDL.

The layout three hosts shipped to one S3 prefix (moto) is mirrored to a directory (Spark's S3 connector
is not part of pyspark) and declared with ``auditlog lake ddl --engine spark``. Spark's answers must equal
the investigation's over the same ``s3://`` prefix. Skipped only when no Java runtime is installed and this
is not CI (``.ci/run`` installs one).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest

from auditlog.investigate import Investigation
from auditlog.lake.ddl import ddl
from auditlog.lake.ship import ship
from tests._support import moto_s3
from tests.auditlog.test_query import Sink
from tests.integration._fleet import Fleet, write_fleet

if shutil.which("java") is None and not os.environ.get("CI"):
    pytest.skip("no Java runtime (`.ci/run` installs openjdk-17-jre-headless)", allow_module_level=True)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, str, Any, Path]]:
    with moto_s3() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        root = tmp_path_factory.mktemp("spark")
        fleet = write_fleet(root / "hosts", hosts=3, per_writer=30)
        bucket = f"spark-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/lake"
        for trail in fleet.hosts.values():
            ship(trail, url, client=s3)
        mirror = root / "mirror"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
            for obj in page.get("Contents", []):
                target = mirror / obj["Key"][len("lake/") :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
        yield fleet, url, s3, mirror


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[1]")
        .appName("auditlog-lake-test")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse}")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def table(spark: Any, shipped: tuple[Fleet, str, Any, Path]) -> str:
    _, _, _, mirror = shipped
    for statement in ddl("spark", str(mirror)).split(";\n"):
        spark.sql(statement.rstrip(";"))
    return "audit_events"


class TestSpark:
    def test_counts_equal_the_investigation(self, spark: Any, table: str, shipped: Any) -> None:
        """Rows per source and kind in Spark equal `auditlog query`'s over the s3:// prefix."""
        fleet, url, s3, _ = shipped
        theirs = {
            (r["source"], r["kind"]): r["n"]
            for r in spark.sql(f"SELECT source, kind, count(*) AS n FROM {table} GROUP BY 1, 2").collect()
        }
        with Investigation(url, audit=Sink(fleet.ring), s3_client=s3, cache_dir=fleet.root / "c") as inv:
            mine = {
                (s, k): n
                for s, k, n in inv.sql("SELECT source, kind, count(*) FROM events GROUP BY ALL").rows
            }
        assert mine == theirs and len({s for s, _ in mine}) == 3

    def test_timeline_across_hosts(self, spark: Any, table: str, shipped: Any) -> None:
        """One correlation id on every host, in ts, stream, seq order, as the investigation has it."""
        fleet, url, s3, _ = shipped
        rows = spark.sql(
            f"SELECT source, stream, seq, kind FROM {table} WHERE correlation_id = '{fleet.shared_cid}' "
            "ORDER BY ts, stream, seq"
        ).collect()
        with Investigation(url, audit=Sink(fleet.ring), s3_client=s3, cache_dir=fleet.root / "c") as inv:
            steps = inv.timeline(fleet.shared_cid)
        assert [(r["source"], r["stream"]) for r in rows] == list(
            zip(steps.column("source"), steps.column("stream"), strict=True)
        )
        assert {"web-1", "web-2", "web-3"} == {r["source"] for r in rows}

    def test_denials_per_actor_per_hour(self, spark: Any, table: str, shipped: Any) -> None:
        """Denials per actor per hour, from the partition columns, equal what the fleet wrote."""
        fleet, *_ = shipped
        rows = spark.sql(
            f"SELECT actor_subject, `date`, hour, count(*) AS n FROM {table} WHERE kind = 'authz.denied' "
            "GROUP BY 1, 2, 3"
        ).collect()
        got = {(r["actor_subject"], f"{r['date'].isoformat()} {r['hour']:02d}"): r["n"] for r in rows}
        assert fleet.denials == got

    def test_ts_range_prunes_partitions(self, spark: Any, table: str) -> None:
        """A ts range query (with its date/hour bounds) shows PartitionFilters and a pushed ts filter."""
        query = spark.sql(
            f"SELECT count(*) FROM {table} WHERE ts >= TIMESTAMP '2026-11-20 08:10:00' "
            "AND ts < TIMESTAMP '2026-11-20 08:50:00' AND `date` = DATE '2026-11-20' AND hour = 8"
        )
        plan = query._jdf.queryExecution().executedPlan().toString()
        assert "PartitionFilters: [" in plan and "isnotnull(date" in plan and "(hour" in plan
        assert "PushedFilters: [IsNotNull(ts), GreaterThanOrEqual(ts," in plan
        assert query.collect()[0][0] > 0

    def test_schema_identical_across_hosts_and_batches(self, spark: Any, table: str, shipped: Any) -> None:
        """Every file (any host, any batch) has one schema; Spark types the partitions DATE and INT."""
        *_, mirror = shipped
        schemas = {str(pq.read_schema(p)) for p in mirror.glob("date=*/hour=*/*.parquet")}
        assert 1 == len(schemas)
        types = {f.name: f.dataType.simpleString() for f in spark.table(table).schema.fields}
        assert ("date", "int", "timestamp", "map<string,string>") == (
            types["date"], types["hour"], types["ts"], types["fp"],
        )  # fmt: skip
