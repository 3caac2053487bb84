"""A second engine (pyarrow datasets) reads the Parquet layout with the same counts as DuckDB.

This is what Athena, Trino or Spark do with the generated DDL (``auditlog lake ddl``): point at the layout
root, take ``date`` and ``hour`` from the hive paths, skip ``_``-prefixed folders (manifests, staging,
ledgers). Spark itself runs in ``test_spark.py``.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from auditlog.investigate import Investigation
from auditlog.lake.compact import compact
from auditlog.lake.engine import arrow_schema
from auditlog.lake.layout import COLUMNS
from tests.auditlog.test_query import Incident, Sink, write_incident


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Incident, Path]:
    inc = write_incident(tmp_path_factory.mktemp("engines"), per_day=20, days=3, segment_bytes=8 * 1024)
    compact(inc.journal, keys=inc.ring, max_batch_bytes=16 * 1024)
    return inc, inc.journal / "parquet"


def _type(t: pa.DataType) -> str:
    if pa.types.is_map(t):  # the entries' field name differs by writer, not the type
        return f"map<{t.key_type}, {t.item_type}>"
    return str(t).replace("element:", "item:")  # list field names differ by writer, not the type


def pyarrow_dataset(root: Path) -> ds.Dataset:
    partitioning = ds.partitioning(pa.schema([("date", pa.date32()), ("hour", pa.int32())]), flavor="hive")
    return ds.dataset(root, format="parquet", partitioning=partitioning)


class TestSecondEngine:
    def test_same_counts_per_day_source_and_kind(self, layout: tuple[Incident, Path]) -> None:
        """pyarrow and DuckDB agree on rows per (date, hour, source, kind)."""
        _, root = layout
        table = pyarrow_dataset(root).to_table(columns=["date", "hour", "source", "kind"])
        arrow_counts = Counter(
            zip(*(table.column(c).to_pylist() for c in ("date", "hour", "source", "kind")), strict=True)
        )
        rows = duckdb.sql(
            "SELECT date, hour, source, kind, count(*) FROM "
            f"read_parquet('{root}/date=*/hour=*/*.parquet', hive_partitioning = true, "
            "hive_types = {'date': DATE, 'hour': INTEGER}) GROUP BY ALL"
        ).fetchall()
        assert Counter({(d, h, s, k): n for d, h, s, k, n in rows}) == arrow_counts
        assert len(arrow_counts) > 5

    def test_same_counts_as_the_investigation(self, layout: tuple[Incident, Path]) -> None:
        """The rows pyarrow sees are the rows an Investigation over the same layout sees."""
        inc, root = layout
        with Investigation(root, audit=Sink(inc.ring)) as inv:
            mine = dict(inv.sql("SELECT kind, count(*) FROM events GROUP BY kind").rows)
        table = pyarrow_dataset(root).to_table(columns=["kind"])
        theirs = Counter(table.column("kind").to_pylist())
        assert mine == dict(theirs)

    def test_filters_and_schema(self, layout: tuple[Incident, Path]) -> None:
        """Typed columns read as declared, and a partition filter prunes to one day."""
        inc, root = layout
        dataset = pyarrow_dataset(root)
        assert [c for c, _, _ in COLUMNS] + ["date", "hour"] == dataset.schema.names
        assert [(f.name, _type(f.type)) for f in arrow_schema()] == [
            (f.name, _type(f.type)) for f in dataset.schema
        ]
        day = inc.days[1]
        one = dataset.to_table(
            filter=pc.field("date") == pa.scalar(date.fromisoformat(day)), columns=["ts", "correlation_id"]
        )
        assert one.num_rows > 0
        assert {day} == {t.strftime("%Y-%m-%d") for t in one.column("ts").to_pylist()}
        denied = dataset.to_table(filter=pc.field("kind") == "authz.denied", columns=["correlation_id"])
        assert sorted(inc.denied_cids) == sorted(denied.column("correlation_id").to_pylist())
