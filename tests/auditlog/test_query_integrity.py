"""No silent wrong answers: queries verify their source, check the key, and stop at resource limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from auditlog.cli._options import query_errors
from auditlog.investigate import (
    CorruptSource,
    Investigation,
    KeyMismatch,
    QueryTimeout,
    ResultTooLarge,
    UnknownCorrelationId,
    UnverifiedSource,
)
from auditlog.lake.compact import compact
from store.keys import KeyRing, MasterKey
from tests._support import query_cli, write_key_file
from tests.auditlog.test_query import Incident, Sink, write_incident


def _cli(*args: Any, input: str | None = None) -> Any:
    return CliRunner().invoke(query_cli(), [str(a) for a in args], input=input)


def _said(res: Any) -> str:
    return " ".join(res.stderr.split())


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    """An incident that nothing tampers with."""
    return write_incident(tmp_path_factory.mktemp("small"), per_day=6, days=1)


def _tamper_segment(inc: Incident) -> str:
    """Change one actor in a sealed segment, keeping the line valid JSON; return the segment's name."""
    for seg in sorted(inc.journal.rglob("[0-9]*.jsonl")):  # a journal's segments, or a trail's streams'
        if not seg.with_name(seg.name.replace(".jsonl", ".seal.json")).exists():
            continue  # only sealed segments
        data = seg.read_bytes()
        if b'"subject":"alice"' in data:
            seg.write_bytes(data.replace(b'"subject":"alice"', b'"subject":"mallo"', 1))
            return seg.name
    raise AssertionError("no sealed segment names alice")


def _compacted(root: Path) -> Incident:
    inc = write_incident(root, per_day=6, days=1)
    compact(inc.journal, keys=inc.ring)
    return inc


def _tamper_parquet(inc: Incident) -> Path:
    """Rewrite one compacted Parquet file with one actor changed (a valid file, other bytes)."""
    path = sorted((inc.journal / "parquet").rglob("*.parquet"))[0]
    table = pq.read_table(path, partitioning=None)
    i = table.schema.get_field_index("actor_subject")
    changed = pc.if_else(pc.equal(table.column(i), "alice"), "mallo", table.column(i))
    pq.write_table(table.set_column(i, "actor_subject", changed), path)
    return path


class TestKeyMismatch:
    def test_library_refuses_a_key_that_did_not_write_the_source(self, small: Incident) -> None:
        """Opening with another key fails and names both key ids."""
        other = KeyRing(MasterKey.generate())
        with pytest.raises(KeyMismatch, match=rf"key id {other.active.key_id}.*{small.ring.active.key_id}"):
            Investigation(small.journal, audit=Sink(other))

    def test_find_never_answers_with_a_wrong_key(self, small: Incident) -> None:
        """Even with unverified answers allowed, find with a wrong key fails instead of finding nothing."""
        other = KeyRing(MasterKey.generate())
        with (
            Investigation(small.journal, audit=Sink(other), allow_unverified=True) as inv,
            pytest.raises(KeyMismatch, match="does not match"),
        ):
            inv.find(small.token)

    def test_cli_find_with_a_wrong_key_fails(self, small: Incident, tmp_path: Path) -> None:
        """`query find` with the wrong key exits 2 and says the key id does not match (not 0 rows, exit 0)."""
        wrong = write_key_file(KeyRing(MasterKey.generate()), tmp_path / "wrong.key")
        res = _cli("query", small.journal, "find", "-", "--key-file", wrong, "--journal", tmp_path / "a",
                   input=small.token + "\n")  # fmt: skip
        assert 2 == res.exit_code, res.output
        assert "does not match" in _said(res) and small.ring.active.key_id in _said(res)
        assert "[]" not in res.stdout


class TestTamperedJournal:
    def test_a_changed_record_is_not_served(self, tmp_path: Path) -> None:
        """A record changed in a sealed segment: the investigation refuses, naming the segment."""
        inc = write_incident(tmp_path, per_day=6, days=1)
        name = _tamper_segment(inc)
        with pytest.raises(UnverifiedSource, match=rf"fails verification.*{name}.*auditlog verify"):
            Investigation(inc.journal, audit=Sink(inc.ring))

    def test_allow_unverified_flags_every_result(self, tmp_path: Path) -> None:
        """With allow_unverified the rows come back, marked verified=False, the problem in integrity."""
        inc = write_incident(tmp_path, per_day=6, days=1)
        name = _tamper_segment(inc)
        with Investigation(inc.journal, audit=Sink(inc.ring), allow_unverified=True) as inv:
            result = inv.actor("mallo")
            assert (False, False) == (result.verified, inv.integrity.verified)
            assert any(name in p for p in inv.integrity.problems)

    def test_an_intact_source_is_verified(self, small: Incident) -> None:
        """Results over an intact journal say verified=True."""
        with Investigation(small.journal, audit=Sink(small.ring)) as inv:
            assert (True, True) == (inv.denials().verified, inv.find(small.token).verified)

    def test_cli_fails_then_answers_with_a_warning_under_unverified(self, tmp_path: Path) -> None:
        """The CLI exits 1 over a tampered journal; --unverified prints the rows and a warning."""
        inc = write_incident(tmp_path / "i", per_day=6, days=1)
        _tamper_segment(inc)
        key = write_key_file(inc.ring, tmp_path / "k.key")
        opts = ["--key-file", key, "--journal", tmp_path / "a", "--json"]
        res = _cli("query", inc.journal, "actor", "mallo", *opts)
        assert 1 == res.exit_code, res.output
        assert "fails verification" in _said(res) and "" == res.stdout
        res = _cli("query", inc.journal, "actor", "mallo", *opts, "--unverified")
        assert 0 == res.exit_code, res.output
        assert orjson.loads(res.stdout)
        assert "warning: answered from data that fails verification" in _said(res)


class TestTamperedParquet:
    def test_a_rewritten_parquet_file_is_not_served(self, tmp_path: Path) -> None:
        """A compacted file whose bytes differ from its manifest's SHA-256 fails verification."""
        inc = _compacted(tmp_path)
        path = _tamper_parquet(inc)
        with pytest.raises(UnverifiedSource, match=rf"{path.name} does not match the SHA-256"):
            Investigation(inc.journal, audit=Sink(inc.ring))

    def test_a_file_changed_after_opening_is_caught_before_the_next_query(self, tmp_path: Path) -> None:
        """Files are re-checked (a stat, a hash when it changed) before every query."""
        inc = _compacted(tmp_path)
        with Investigation(inc.journal, audit=Sink(inc.ring)) as inv:
            assert inv.denials().verified
            _tamper_parquet(inc)
            with pytest.raises(UnverifiedSource, match="does not match the SHA-256"):
                inv.actor("mallo")

    def test_a_changed_manifest_fails_its_mac(self, tmp_path: Path) -> None:
        """A manifest edited after compaction (its row count) fails its MAC."""
        inc = _compacted(tmp_path)
        manifest = sorted((inc.journal / "parquet" / "_manifest").rglob("*.json"))[0]
        obj = orjson.loads(manifest.read_bytes())
        obj["rows"] += 1
        manifest.write_bytes(orjson.dumps(obj))
        with pytest.raises(UnverifiedSource, match="MAC does not match"):
            Investigation(inc.journal, audit=Sink(inc.ring))


class TestErrorHints:
    def test_s3_errors_do_not_suggest_verifying_a_bucket(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlog verify` reads a local journal: an s3:// error points at the one it was shipped from."""
        exit_ = query_errors("s3://bucket/prod")(CorruptSource("the S3 source cannot be read: boom"))
        said = " ".join(capsys.readouterr().err.split())
        assert isinstance(exit_, typer.Exit) and 1 == exit_.exit_code
        assert "auditlog verify s3://" not in said
        assert "the journal it was shipped from" in said

    def test_a_local_journal_error_points_at_verify(
        self, small: Incident, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A local journal's error names the command that says more."""
        query_errors(str(small.journal))(CorruptSource("cannot read"))
        assert f"auditlog verify {small.journal}" in " ".join(capsys.readouterr().err.split())


class TestLimits:
    def test_a_huge_value_is_refused_before_it_becomes_python_objects(self, small: Incident) -> None:
        """`SELECT list(range(...))` stops at max_bytes with a clear error."""
        with (
            Investigation(small.journal, audit=Sink(small.ring), max_bytes=1 << 20) as inv,
            pytest.raises(ResultTooLarge, match="larger than 1048576 bytes"),
        ):
            inv.sql("SELECT list(range(2000000)) AS x")

    def test_too_many_rows_are_refused(self, small: Incident) -> None:
        """A result past max_rows is refused, and journaled as refused."""
        sink = Sink(small.ring)
        with Investigation(small.journal, audit=sink, max_rows=10) as inv:
            assert 10 == len(inv.sql("SELECT * FROM range(10)"))
            with pytest.raises(ResultTooLarge, match="more than 10 rows"):
                inv.sql("SELECT * FROM range(1000000)")
        assert "refused" == sink.events[-1]["outcome"]["status"]

    def test_a_long_statement_is_interrupted(self, small: Incident) -> None:
        """A statement past the timeout is interrupted; the connection still answers afterwards."""
        with Investigation(small.journal, audit=Sink(small.ring), timeout=0.5) as inv:
            with pytest.raises(QueryTimeout, match=r"longer than 0\.5 seconds"):
                inv.sql("SELECT count(*) FROM range(1000000000000) a")
            assert [(1,)] == list(inv.sql("SELECT 1 AS one").rows)

    def test_types_survive_the_size_check(self, small: Incident) -> None:
        """Results are counted as Arrow; HUGEINT, UUID and timestamps keep DuckDB's Python types."""
        with Investigation(small.journal, audit=Sink(small.ring)) as inv:
            row = inv.sql(
                "SELECT sum(range) AS s, gen_random_uuid() AS u, max(ts) AS t FROM range(3), events"
            )
            s, u, t = row.rows[0]
        assert (int, "UUID", "datetime") == (type(s), type(u).__name__, type(t).__name__)

    def test_cli_flags(self, small: Incident, tmp_path: Path) -> None:
        """--max-rows and --timeout reach the sandbox; both are usage errors (exit 2) with a clear message."""
        key = write_key_file(small.ring, tmp_path / "k.key")
        opts = ["--key-file", key, "--journal", tmp_path / "a"]
        res = _cli("query", small.journal, "sql", "SELECT * FROM range(100)", "--max-rows", "5", *opts)
        assert (2, True) == (res.exit_code, "more than 5 rows" in _said(res)), res.output
        res = _cli("query", small.journal, "sql", "SELECT count(*) FROM range(1000000000000) a",
                   "--timeout", "0.3", *opts)  # fmt: skip
        assert (2, True) == (res.exit_code, "longer than 0.3 seconds" in _said(res)), res.output


class TestSpillAndRanges:
    def test_named_queries_spill_to_a_private_directory_removed_on_close(self, tmp_path: Path) -> None:
        """The named-query connection may spill to a directory of its own; it is gone after close()."""
        inc = write_incident(tmp_path, per_day=3, days=1)
        with Investigation(inc.journal, audit=Sink(inc.ring)) as inv:
            con = inv._conns.reader_for(None, None)
            (spill,) = con.execute("SELECT current_setting('temp_directory')").fetchone()
            assert Path(spill).is_dir() and Path(spill).name.startswith("auditlog-spill-")
        assert not Path(spill).exists()

    def test_timeline_takes_a_time_range(self, tmp_path: Path) -> None:
        """A timeline limited to a range where the id has no event finds nothing; the full range finds it."""
        inc = write_incident(tmp_path, per_day=3, days=2)
        with Investigation(inc.journal, audit=Sink(inc.ring)) as inv:
            steps = inv.timeline(inc.incident_cid)
            first = steps.column("ts")[0]
            assert len(steps) == len(inv.timeline(inc.incident_cid, since=first, until="now"))
            with pytest.raises(UnknownCorrelationId):
                inv.timeline(inc.incident_cid, until=first - timedelta(seconds=1))
