"""The lake at fleet scale against moto over HTTP: many hosts ship to one prefix; DDL, Glue, merge, verify."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pyarrow.parquet as pq
import pytest
import sqlglot
from typer.testing import CliRunner

from auditlog.investigate import Investigation
from auditlog.lake.compact import compact
from auditlog.lake.ddl import ddl, glue_table_input, register_glue
from auditlog.lake.layout import COLUMNS, PARTITIONS, load_manifests
from auditlog.lake.merge import merge
from auditlog.lake.ship import ship
from auditlog.lake.verify import verify_lake, verify_marker
from store.journal import JournalConfig
from store.trail import TrailWriter
from tests._support import moto_s3, query_cli, write_key_file
from tests.auditlog.test_query import Sink
from tests.integration._fleet import Fleet, write_fleet


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return write_fleet(tmp_path_factory.mktemp("fleet"), hosts=3, per_writer=30)


def shipped(fleet: Fleet, s3: Any) -> str:
    """Ship every host of the fleet to one fresh prefix; return its URL."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/lake"
    for trail in fleet.hosts.values():
        ship(trail, url, client=s3)
    return url


def objects(s3: Any, url: str) -> dict[str, bytes]:
    bucket, prefix = url[5:].split("/", 1)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj
    return found


class TestFleetShip:
    def test_many_hosts_one_prefix_no_collision(self, fleet: Fleet, s3: Any) -> None:
        """Every host's streams land side by side under one prefix; the same query answers over all."""
        url = shipped(fleet, s3)
        keys = objects(s3, url)
        streams = {k.split("/")[2] for k in keys if "/_manifest/" in k}
        assert 12 == len(streams)  # 3 hosts, 2 writers per batch, 2 batches
        with Investigation(url, audit=Sink(fleet.ring), s3_client=s3, cache_dir=fleet.root / "c") as inv:
            rows = dict(inv.sql("SELECT source, count(DISTINCT stream) FROM events GROUP BY ALL").rows)
            steps = inv.timeline(fleet.shared_cid)
        assert {"web-1": 4, "web-2": 4, "web-3": 4} == rows
        assert [h for h, _ in fleet.shared_steps] == sorted(steps.column("source"))


class TestVerifyLake:
    def test_a_clean_fleet_verifies_per_source(self, fleet: Fleet, s3: Any) -> None:
        """Manifests, files, seals and checkpoints of every host verify; markers are written and check out."""
        url = shipped(fleet, s3)
        report = verify_lake(url, keys=fleet.ring, client=s3, markers=True)
        assert report.ok, report.problems
        assert ["web-1", "web-2", "web-3"] == [s.source for s in report.sources]
        assert all(s.ok and len(s.streams) == 4 for s in report.sources)
        assert report.checkpoints > 0 and report.seals > 0 and report.markers
        bucket, prefix = url[5:].split("/", 1)
        marker = s3.get_object(Bucket=bucket, Key=f"{prefix}/{report.markers[0]}")["Body"].read()
        content = verify_marker(marker, fleet.ring)
        assert content is not None and content["files"]
        assert verify_marker(marker.replace(b'"rows"', b'"rowz"'), fleet.ring) is None

    def test_changed_missing_and_rolled_back_are_named(self, fleet: Fleet, s3: Any) -> None:
        """A changed Parquet object, a deleted seal and a rolled-back checkpoint copy are each reported."""
        url = shipped(fleet, s3)
        bucket = url[5:].split("/", 1)[0]
        keys = objects(s3, url)
        part = next(k for k in keys if k.endswith(".parquet") and "part-web-2" in k)
        s3.put_object(Bucket=bucket, Key=part, Body=b"PAR1 tampered")
        seal = next(k for k in keys if k.endswith(".seal.json") and "stream=web-3" in k)
        s3.delete_object(Bucket=bucket, Key=seal)
        log = next(k for k in keys if "/checkpoints/" in k)
        old = s3.get_object(Bucket=bucket, Key=log)["Body"].read()
        newer = log.replace("/checkpoints/", "/checkpoints/~")  # sorts after: a newer copy, shorter
        s3.put_object(Bucket=bucket, Key=newer, Body=old[: old.index(b"\n") + 1])
        report = verify_lake(url, keys=fleet.ring, client=s3)
        assert not report.ok
        found = {(p.kind, p.what.split("/")[-1] if "/" in p.what else p.what) for p in report.problems}
        assert ("changed", part.split("/")[-1]) in found
        assert any(p.kind == "missing" and "seal of" in p.what for p in report.problems)
        assert any("does not extend the older" in p.reason for p in report.problems)
        assert {"web-2": False, "web-3": False, "web-1": True} == {s.source: s.ok for s in report.sources}

    def test_a_local_mirror_verifies_and_the_cli_reports(self, fleet: Fleet, s3: Any, tmp_path: Path) -> None:
        """`auditlog lake verify DIR --json` over a local mirror of the bucket: ok, per source."""
        url = shipped(fleet, s3)
        bucket, prefix = url[5:].split("/", 1)
        mirror = tmp_path / "mirror"
        for key in objects(s3, url):
            target = mirror / key[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        key_file = write_key_file(fleet.ring, tmp_path / "k.key")
        res = CliRunner().invoke(
            query_cli(), ["lake", "verify", str(mirror), "--key-file", str(key_file), "--json"]
        )
        assert 0 == res.exit_code, res.output
        summary = orjson.loads(res.stdout)
        assert summary["ok"] and 3 == len(summary["sources"]) and summary["markers"] > 0
        assert (mirror / "_verified").is_dir()

    def test_root_verify_takes_an_s3_lake(self, fleet: Fleet, s3: Any, tmp_path: Path) -> None:
        """`auditlog verify s3://...` verifies a shipped lake across hosts, as `lake verify` does."""
        from auditlog.cli.app import app

        url = shipped(fleet, s3)
        key_file = write_key_file(fleet.ring, tmp_path / "k.key")
        args = ["verify", url, "--key-file", str(key_file), "--endpoint-url", s3.meta.endpoint_url, "--json"]
        res = CliRunner().invoke(app, args)
        assert 0 == res.exit_code, res.output
        assert 3 == len(orjson.loads(res.stdout)["sources"])


class TestTables:
    def test_athena_ddl_parses_with_projection(self) -> None:
        """The Athena DDL parses as Athena SQL; date and hour are projected partitions."""
        sql = ddl("athena", "s3://bkt/lake", database="audit")
        (create,) = sqlglot.parse(sql, read="athena")
        assert isinstance(create, sqlglot.exp.Create)
        props = {p.name: p.text("value") for p in create.find_all(sqlglot.exp.Property) if p.name}
        assert "true" == props["projection.enabled"]
        assert ("date", "integer") == (props["projection.date.type"], props["projection.hour.type"])
        assert "s3://bkt/lake/date=${date}/hour=${hour}/" == props["storage.location.template"]
        columns = [c.name for c in create.find_all(sqlglot.exp.ColumnDef)]
        assert [n for n, _, _ in COLUMNS + PARTITIONS] == columns

    @pytest.mark.parametrize("engine", ["trino", "spark", "duckdb"])
    def test_other_engines_parse(self, engine: str) -> None:
        """Trino, Spark and DuckDB statements parse in their dialects and name every column."""
        sql = ddl(engine, "s3://bkt/lake")
        create = sqlglot.parse(sql, read=engine)[0]
        assert isinstance(create, sqlglot.exp.Create)
        if engine != "duckdb":
            assert [n for n, _, _ in COLUMNS + PARTITIONS] == [
                c.name for c in create.find_all(sqlglot.exp.ColumnDef)
            ]

    def test_duckdb_ddl_reads_a_layout(self, fleet: Fleet) -> None:
        """The DuckDB view over a local layout reads typed partitions."""
        import duckdb

        root = fleet.hosts["web-1"] / "parquet"
        con = duckdb.connect()
        con.execute(ddl("duckdb", str(root)))
        ((n, dtype, htype),) = con.sql(
            "SELECT count(*), typeof(min(date)), typeof(min(hour)) FROM audit_events"
        ).fetchall()
        assert (sum(m.rows for m in load_manifests(root)), "DATE", "INTEGER") == (n, dtype, htype)

    def test_glue_round_trip(self, endpoint: str) -> None:
        """register creates the database and table in Glue, a second run updates it; the table reads back."""
        glue = boto3.client("glue", endpoint_url=endpoint, region_name="us-east-1")
        first = register_glue("s3://bkt/lake", database="audit_db", client=glue)
        again = register_glue("s3://bkt/lake2", database="audit_db", client=glue)
        assert ("created", True, "updated", False) == (
            first.action, first.database_created, again.action, again.database_created,
        )  # fmt: skip
        table = glue.get_table(DatabaseName="audit_db", Name="audit_events")["Table"]
        expected = glue_table_input("s3://bkt/lake2")
        assert expected["StorageDescriptor"]["Columns"] == table["StorageDescriptor"]["Columns"]
        assert expected["PartitionKeys"] == table["PartitionKeys"]
        assert expected["Parameters"] == table["Parameters"]
        assert "s3://bkt/lake2/" == table["StorageDescriptor"]["Location"]

    def test_cli_ddl_and_register(self, endpoint: str) -> None:
        """`auditlog lake ddl --engine trino` prints; `auditlog lake register --glue` registers."""
        res = CliRunner().invoke(query_cli(), ["lake", "ddl", "s3://bkt/lake", "--engine", "trino"])
        assert 0 == res.exit_code and "sync_partition_metadata" in res.stdout
        res = CliRunner().invoke(query_cli(), ["lake", "ddl", "s3://bkt/lake", "--engine", "oracle"])
        assert 2 == res.exit_code
        res = CliRunner().invoke(
            query_cli(),
            ["lake", "register", "s3://bkt/lake", "--glue", "--database", "cli_db",
             "--endpoint-url", endpoint, "--json"],
        )  # fmt: skip
        assert 0 == res.exit_code, res.output
        assert "created" == orjson.loads(res.stdout)["action"]


class TestMerge:
    def test_small_files_of_closed_hours_merge_and_verify(self, tmp_path: Path, s3: Any) -> None:
        """Batches compacted every few records leave many small files; merge leaves one per hour, the same
        rows, a manifest that verifies, and a shipped lake without the superseded objects."""
        from store.keys import KeyRing, MasterKey

        ring = KeyRing(MasterKey.generate())
        trail = tmp_path / "trail"
        w = TrailWriter(
            trail, keys=ring, config=JournalConfig(fsync="never", source="web-9"), checkpoint_interval=None,
            seal_on_sigterm=False,
        )  # fmt: skip
        base = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
        for batch in range(4):
            for i in range(10):
                ts = base + timedelta(minutes=batch * 10 + i)
                w.append(
                    {
                        "kind": "http.request",
                        "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "correlation_id": f"c{i}",
                    }
                )
            w.rotate()
            compact(trail, keys=ring)
        w.close()
        compact(trail, keys=ring)
        root = trail / "parquet"
        before = load_manifests(root)
        rows = sum(m.rows for m in before)
        url = f"s3://merge-{uuid.uuid4().hex[:8]}/lake"
        s3.create_bucket(Bucket=url[5:].split("/")[0])
        ship(trail, url, client=s3)
        report = merge(root, keys=ring, grace=0, now=time.time() + 7200)
        after = load_manifests(root)
        assert len(after) == 1 and after[0].supersedes == tuple(m.batch for m in before)
        assert (
            rows
            == after[0].rows
            == sum(pq.ParquetFile(root / f.path).metadata.num_rows for f in after[0].files)
        )
        assert report.files_out < report.files_in
        assert after[0].verify_mac(ring)
        assert {str(p.relative_to(root)) for p in root.glob("date=*/hour=*/*.parquet")} == {
            f.path for f in after[0].files
        }
        with Investigation(root, audit=Sink(ring)) as inv:
            assert [(rows,)] == list(inv.sql("SELECT count(*) FROM events").rows)
        shipped_report = ship(trail, url, client=s3)
        assert shipped_report.deleted
        assert verify_lake(url, keys=ring, client=s3).ok
        assert () == merge(root, keys=ring, grace=0, now=time.time() + 7200).manifests  # idempotent
