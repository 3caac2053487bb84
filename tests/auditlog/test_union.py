"""Several trails (one per host) read as one: ``Investigation([a, b])``, and ``--also`` in the CLI.

The trails are written by real writers (``auditlog.configure`` per host, :func:`tests._support.write_hosts`);
DuckDB and Parquet files on disk; the CLI through typer's runner.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from auditlog.cli import trail
from auditlog.evidence import export, signer_public_key, verify_pack
from auditlog.investigate import DuplicateSource, EmptySource, Investigation, KeyMismatch, UnverifiedSource
from auditlog.lake.compact import compact
from store.trail import iter_trail_records, list_streams
from tests._support import Hosts, query_cli, write_hosts, write_key_file
from tests.auditlog.test_query import Sink

COUNTS_SQL = "SELECT source, count(*) AS n FROM events GROUP BY ALL ORDER BY source"


@pytest.fixture
def hosts(tmp_path: Path) -> Hosts:
    return write_hosts(tmp_path / "hosts")


def tamper(trail_dir: Path, old: bytes, new: bytes) -> Path:
    """Change bytes of a record in the trail's one stream; return the segment changed."""
    (info,) = list_streams(trail_dir)
    for seg in sorted(info.path.glob("*.jsonl")):
        data = seg.read_bytes()
        if old in data:
            seg.write_bytes(data.replace(old, new, 1))
            return seg
    raise AssertionError(f"{old!r} is in no segment of {trail_dir}")


def labels(result: Any) -> list[str]:
    return [row["what"] for row in result]


class TestUnionInvestigation:
    def test_timeline_orders_by_ts_then_stream_then_seq(self, hosts: Hosts) -> None:
        """A request across two hosts reads as one timeline, whichever order the sources are given in."""
        for sources in ([hosts.a, hosts.b], [hosts.b, hosts.a]):
            with Investigation(sources, audit=Sink(hosts.ring)) as inv:
                result = inv.timeline(hosts.cid)
            assert hosts.order == labels(result)
            assert [label[0] for label in hosts.order] == [r["source"][-1] for r in result]

    def test_counts_are_the_sum_of_each_source(self, hosts: Hosts) -> None:
        """Every row of both trails, once, per source; denials of both hosts."""
        single = {}
        for d in (hosts.a, hosts.b):
            with Investigation(d, audit=Sink(hosts.ring)) as inv:
                single.update(dict(inv.sql(COUNTS_SQL).rows))
        with Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring)) as inv:
            union = dict(inv.sql(COUNTS_SQL).rows)
            denials = inv.denials()
            streams = inv.sql("SELECT count(DISTINCT stream) FROM events").rows[0][0]
        assert single == union
        assert len(iter_list(hosts.a)) + len(iter_list(hosts.b)) == sum(union.values())
        assert ["svc-host-a", "svc-host-b"] == sorted(r["actor"] for r in denials)
        assert 2 == streams

    def test_compacted_and_live_parts_together(self, hosts: Hosts, tmp_path: Path) -> None:
        """One part compacted to Parquet (its own layout root), the other live: the same rows, partitions
        read right for both, in the sandbox and the named-query reader alike."""
        with Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring)) as inv:
            before = inv.sql("SELECT source, date, hour, count(*) FROM events GROUP BY ALL ORDER BY ALL").rows
        report = compact(hosts.a, keys=hosts.ring)
        assert report.rows > 0
        with Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring)) as inv:
            assert 0 == inv.catalog.parts[0].live_table().num_rows
            assert inv.catalog.parts[1].live_table().num_rows > 0
            after = inv.sql("SELECT source, date, hour, count(*) FROM events GROUP BY ALL ORDER BY ALL").rows
            assert hosts.order == labels(inv.timeline(hosts.cid))
        assert before == after
        compact(hosts.b, keys=hosts.ring)
        with Investigation([hosts.b, hosts.a], audit=Sink(hosts.ring)) as inv:
            assert 0 == inv.catalog.live_table().num_rows
            both = inv.sql("SELECT source, date, hour, count(*) FROM events GROUP BY ALL ORDER BY ALL").rows
            assert before == both
            assert hosts.order == labels(inv.timeline(hosts.cid))

    def test_a_tampered_source_fails_the_union_naming_it(self, hosts: Hosts) -> None:
        """A changed record in the second trail: no answer from the union; the message names that trail."""
        tamper(hosts.b, b'"b2"', b'"bX"')
        with pytest.raises(UnverifiedSource) as caught:
            Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring))
        text = str(caught.value)
        assert text.startswith(f"{hosts.b} fails verification, so no query answers from the union of ")
        assert f"`auditlog verify {hosts.b}`" in text
        assert f"{hosts.a} fails" not in text and f"verify {hosts.a}`" not in text

    def test_allow_unverified_flags_and_names_the_failed_source(self, hosts: Hosts) -> None:
        """With allow_unverified, results are flagged and the integrity says which source failed."""
        tamper(hosts.b, b'"b2"', b'"bX"')
        with Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring), allow_unverified=True) as inv:
            assert (str(hosts.b),) == inv.integrity.failed
            assert all(p.startswith(f"{hosts.b}: ") for p in inv.integrity.problems)
            assert not inv.timeline(hosts.cid).verified

    def test_a_changed_parquet_file_of_one_part_is_caught_before_a_query(self, hosts: Hosts) -> None:
        """A part's Parquet file changed after opening: the next query refuses, naming that part."""
        compact(hosts.b, keys=hosts.ring)
        with Investigation([hosts.a, hosts.b], audit=Sink(hosts.ring)) as inv:
            parquet = sorted((hosts.b / "parquet").rglob("*.parquet"))[0]
            parquet.write_bytes(parquet.read_bytes() + b"\0")
            with pytest.raises(UnverifiedSource, match=f"^{hosts.b} fails verification"):
                inv.denials()

    def test_the_same_directory_twice_is_refused(self, hosts: Hosts) -> None:
        """The same trail twice (spelt another way) would double every count: refused, naming both."""
        again = hosts.a.parent / ".." / hosts.a.parent.name / "a"
        with pytest.raises(DuplicateSource) as caught:
            Investigation([hosts.a, hosts.b, again], audit=Sink(hosts.ring))
        assert f"{hosts.a} and {again} are the same source" in str(caught.value)

    def test_a_copy_of_a_trail_is_refused(self, hosts: Hosts, tmp_path: Path) -> None:
        """Two directories holding the same stream (a trail and its copy) are refused, naming both."""
        copy = shutil.copytree(hosts.a, tmp_path / "copy-of-a")
        with pytest.raises(DuplicateSource) as caught:
            Investigation([hosts.a, copy], audit=Sink(hosts.ring))
        (info,) = list_streams(hosts.a)
        text = str(caught.value)
        assert f"{hosts.a} and {copy} both hold stream {info.stream} of trail {info.trail_id}" in text

    def test_a_trail_and_its_layout_are_refused(self, hosts: Hosts) -> None:
        """A trail and the layout it was compacted into hold the same streams: refused."""
        compact(hosts.a, keys=hosts.ring)
        with pytest.raises(DuplicateSource, match="both hold stream"):
            Investigation([hosts.a, hosts.a / "parquet"], audit=Sink(hosts.ring))

    def test_a_source_written_under_another_key_is_named(self, hosts: Hosts, tmp_path: Path) -> None:
        """A trail whose key the ring does not hold: KeyMismatch names that trail, not the other."""
        other = write_hosts(tmp_path / "other", extra=1)
        with pytest.raises(KeyMismatch) as caught:
            Investigation([hosts.a, other.b], audit=Sink(hosts.ring))
        assert f"does not match {other.b}," in str(caught.value)
        assert str(hosts.a) not in str(caught.value)

    def test_an_empty_source_is_named(self, hosts: Hosts, tmp_path: Path) -> None:
        """One source holding nothing: the error names it."""
        (tmp_path / "empty").mkdir()
        with pytest.raises(EmptySource, match=f"under {tmp_path / 'empty'}"):
            Investigation([hosts.a, tmp_path / "empty"], audit=Sink(hosts.ring))

    def test_export_holds_every_stream_of_both(self, hosts: Hosts, tmp_path: Path) -> None:
        """An evidence pack over two trails: both hosts' streams in events.parquet, every segment's chain
        checked in its own trail, and the pack verifies."""
        report = export([hosts.a, hosts.b], tmp_path / "pack.zip", since="1d", until="0m",
                        audit=Sink(hosts.ring), keys=hosts.ring)  # fmt: skip
        assert report.chain_ok
        assert verify_pack(report.path, public_key=report.signer).ok
        with zipfile.ZipFile(report.path) as zf:
            (tmp_path / "events.parquet").write_bytes(zf.read("events.parquet"))
            chain = orjson.loads(zf.read("chain_verification.json"))
        events = pq.read_table(tmp_path / "events.parquet")
        streams = {i.stream for d in (hosts.a, hosts.b) for i in list_streams(d)}
        assert streams == set(events.column("stream").to_pylist())
        assert sum(hosts.counts.values()) + 2 == events.num_rows  # and each stream's opening record
        assert streams == {s["stream"] for s in chain["segments"]}
        assert [str(hosts.a), str(hosts.b)] == chain["journals"]


def iter_list(trail_dir: Path) -> list[Any]:
    return list(iter_trail_records(trail_dir))


@pytest.fixture
def cli() -> typer.Typer:
    app = query_cli()
    trail.register(app)
    return app


def run(cli: typer.Typer, *args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def query_runs(trail_dir: Path) -> list[str]:
    """The sources of the ``query.run`` records in a trail."""
    return [info.source for info, r in iter_trail_records(trail_dir) if r.get("kind") == "query.run"]


class TestUnionCLI:
    def test_query_also_reads_both_as_one(self, cli: typer.Typer, hosts: Hosts, tmp_path: Path) -> None:
        """`query A timeline CID --also B`, or --also before SOURCE: one ordered timeline."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        journal = tmp_path / "investigations"
        for args in (
            ["query", hosts.a, "timeline", hosts.cid, "--also", hosts.b],
            ["query", "--also", hosts.a, hosts.b, "timeline", hosts.cid],
        ):
            res = run(cli, *args, "--json", "--key-file", key, "--journal", journal)
            assert 0 == res.exit_code, res.output
            assert hosts.order == [r["what"] for r in orjson.loads(res.stdout)]
        res = run(cli, "query", hosts.a, "sql", COUNTS_SQL, "--also", hosts.b, "--json", "--key-file", key,
                  "--journal", journal)  # fmt: skip
        assert 0 == res.exit_code, res.output
        expected = [{"source": h, "n": n + 1} for h, n in sorted(hosts.counts.items())]  # + opening records
        assert expected == orjson.loads(res.stdout)

    def test_journals_into_the_first_source(self, cli: typer.Typer, hosts: Hosts, tmp_path: Path) -> None:
        """Without --journal, query.run goes into the first source's trail, as the CLI's own stream."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        res = run(cli, "query", hosts.a, "denials", "--also", hosts.b, "--key-file", key)
        assert 0 == res.exit_code, res.output
        assert "denials (2 rows)" in res.stdout
        assert ["cli."] == [s[:4] for s in query_runs(hosts.a)]
        assert [] == query_runs(hosts.b)

    def test_a_tampered_second_source_fails_naming_it(
        self, cli: typer.Typer, hosts: Hosts, tmp_path: Path
    ) -> None:
        """Exit 1, and the message names the trail that fails."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        tamper(hosts.b, b'"b1"', b'"bX"')
        res = run(cli, "query", hosts.a, "denials", "--also", hosts.b, "--key-file", key,
                  "--journal", tmp_path / "j")  # fmt: skip
        assert 1 == res.exit_code, res.output
        err = " ".join(res.stderr.split())
        assert f"{hosts.b} fails verification" in err
        assert f"auditlog verify {hosts.b}" in err

    def test_the_same_directory_twice_is_refused(
        self, cli: typer.Typer, hosts: Hosts, tmp_path: Path
    ) -> None:
        """Exit 2, naming both."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        res = run(cli, "query", hosts.a, "denials", "--also", hosts.a, "--key-file", key,
                  "--journal", tmp_path / "j")  # fmt: skip
        assert 2 == res.exit_code, res.output
        assert f"{hosts.a} and {hosts.a} are the same source" in " ".join(res.stderr.split())

    def test_export_over_two_directories_verifies(
        self, cli: typer.Typer, hosts: Hosts, tmp_path: Path
    ) -> None:
        """`export A --also B`: one pack with both hosts' events; `verify-pack --public-key` accepts it."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        pack = tmp_path / "pack.zip"
        res = run(cli, "export", hosts.a, "--also", hosts.b, "--out", pack, "--since", "1d", "--until", "0m",
                  "--key-file", key, "--json", "--quiet")  # fmt: skip
        assert 0 == res.exit_code, res.output
        summary = orjson.loads(res.stdout)
        assert [str(hosts.a), str(hosts.b)] == summary["sources"]
        with zipfile.ZipFile(pack) as zf:
            (tmp_path / "events.parquet").write_bytes(zf.read("events.parquet"))
        events = pq.read_table(tmp_path / "events.parquet").to_pylist()
        assert {"host-a", "host-b"} <= {e["source"] for e in events}
        per_stream: dict[str, int] = {}
        for e in events:
            per_stream[e["stream"]] = per_stream.get(e["stream"], 0) + 1
        assert per_stream == summary["streams"]  # reported per stream, and in total
        assert sum(per_stream.values()) == summary["events"]
        with zipfile.ZipFile(pack) as zf:
            assert per_stream == orjson.loads(zf.read("manifest.json"))["streams"]
            assert "Records per stream" in zf.read("report.md").decode()
        assert hosts.order == [e["action_name"] for e in sorted(
            (e for e in events if e["correlation_id"] == hosts.cid),
            key=lambda e: (e["ts"], e["stream"], e["seq"]),
        )]  # fmt: skip
        _, fingerprint = signer_public_key(hosts.ring)
        res = run(cli, "verify-pack", pack, "--public-key", fingerprint)
        assert 0 == res.exit_code, res.output
        assert query_runs(hosts.a) and not query_runs(hosts.b)  # journaled into the first source

    def test_compact_each_then_query_both(self, cli: typer.Typer, hosts: Hosts, tmp_path: Path) -> None:
        """`compact A --also B`: each into its own layout, reported per directory (per stream), in total."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        res = run(cli, "compact", hosts.a, "--also", hosts.b, "--key-file", key, "--json", "--quiet")
        assert 0 == res.exit_code, res.output
        doc = orjson.loads(res.stdout)
        assert [str(hosts.a), str(hosts.b)] == [d["directory"] for d in doc["directories"]]
        for d in doc["directories"]:
            assert [d["rows"]] == [s["rows"] for s in d["streams"]]
            assert d["rows"] > 0
        assert sum(d["rows"] for d in doc["directories"]) == doc["total"]["rows"]
        assert 2 == doc["total"]["directories"]
        assert any((hosts.a / "parquet").rglob("*.parquet")) and any((hosts.b / "parquet").rglob("*.parquet"))
        res = run(cli, "compact", hosts.a, "--also", hosts.b, "--key-file", key)
        assert 0 == res.exit_code, res.output
        assert "compact: total" in res.stdout
        res = run(cli, "query", hosts.a, "timeline", hosts.cid, "--also", hosts.b, "--json",
                  "--key-file", key, "--journal", tmp_path / "j")  # fmt: skip
        assert 0 == res.exit_code, res.output
        assert hosts.order == [r["what"] for r in orjson.loads(res.stdout)]

    def test_compact_out_takes_one_directory(self, cli: typer.Typer, hosts: Hosts, tmp_path: Path) -> None:
        """--out names one layout root: refused with several directories."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        res = run(cli, "compact", hosts.a, "--also", hosts.b, "--out", tmp_path / "lake", "--key-file", key)
        assert 2 == res.exit_code, res.output
        assert "--out names one layout root" in " ".join(res.stderr.split())

    def test_verify_also(self, cli: typer.Typer, hosts: Hosts, tmp_path: Path) -> None:
        """`verify A --also B` checks both, per stream, then says the total."""
        key = write_key_file(hosts.ring, tmp_path / "k.key")
        res = run(cli, "verify", hosts.a, "--also", hosts.b, "--key-file", key)
        assert 0 == res.exit_code, res.output
        assert f"2 trails, {len(iter_list(hosts.a)) + len(iter_list(hosts.b))} records: OK" in res.stdout
