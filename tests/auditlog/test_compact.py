"""auditlog.lake.compact: sealed segments to hive-partitioned Parquet with manifests; resumable."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import auditlog.lake._batches as batches_mod
import auditlog.lake._prune as prune_mod
import auditlog.lake._recovery as recovery_mod
import auditlog.lake.compact as compact_mod
from auditlog.lake.compact import compact
from auditlog.lake.layout import CompactionError, SegmentMismatch, load_manifests
from store._segments import GENESIS_MAC, MacKey, list_journal, mac_matches, read_seal, split_mac
from store.journal import JournalConfig, JournalWriter
from store.trail import list_streams
from tests._support import query_cli, write_key_file
from tests.auditlog.test_query import Incident, write_incident

ROOT = Path(__file__).resolve().parents[2]
PART = re.compile(r"date=\d{4}-\d{2}-\d{2}/hour=\d{2}/part-web-1\.[0-9a-f-]+-\d{8}-\d{8}\.parquet")


def stream_dirs(journal: Path) -> list[Path]:
    """Every stream directory of a trail (a classic journal is its own one stream)."""
    if not (journal / "trail.json").exists():
        return [journal]
    return [info.path for info in list_streams(journal)]


def web_stream(journal: Path) -> Path:
    """The stream the incident's server wrote (source web-1)."""
    (info,) = [i for i in list_streams(journal) if i.source == "web-1"]
    return info.path


def sealed_lines(journal: Path) -> list[bytes]:
    lines: list[bytes] = []
    for sdir in stream_dirs(journal):
        listing = list_journal(sdir)
        for number, path in sorted(listing.segments.items()):
            if number in listing.seals:
                seal = read_seal(listing.seals[number], None)
                lines += path.read_bytes()[: seal.length].splitlines()
    return lines


def parquet_rows(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(root.glob("date=*/hour=*/*.parquet")):
        day, hour = path.parent.parent.name[5:], int(path.parent.name[5:])
        rows += [
            {**r, "date": date.fromisoformat(day), "hour": hour} for r in pq.read_table(path).to_pylist()
        ]
    return rows


def layout_state(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_ship" not in p.parts
    }


@pytest.fixture
def incident(tmp_path: Path) -> Incident:
    return write_incident(tmp_path, per_day=12, days=2, segment_bytes=8 * 1024)


class TestLayout:
    def test_hive_partitions_zstd(self, incident: Incident) -> None:
        """Files sit under date=/hour=, one per hour and batch, zstd-compressed."""
        report = compact(incident.journal, keys=incident.ring)
        root = incident.journal / "parquet"
        files = sorted(str(p.relative_to(root)) for p in root.glob("date=*/hour=*/*.parquet"))
        assert files and all(PART.fullmatch(f) for f in files)
        assert set(incident.days) == {f.split("/")[0][5:] for f in files}
        assert {(r["date"].isoformat(), r["hour"]) for r in parquet_rows(root)} == {
            (f.split("/")[0][5:], int(f.split("/")[1][5:])) for f in files
        }
        meta = pq.ParquetFile(root / files[0]).metadata
        codecs = {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}
        assert {"ZSTD"} == codecs
        assert not (root / "_staging").exists() or not any((root / "_staging").rglob("*.parquet"))
        assert report.compacted == len(report.manifests[0].segments) + sum(
            len(m.segments) for m in report.manifests[1:]
        )

    def test_sorted_by_correlation_id_then_time(self, incident: Incident) -> None:
        """Within each file, rows are ordered by correlation id, then time, then seq."""
        compact(incident.journal, keys=incident.ring)
        for path in (incident.journal / "parquet").glob("date=*/hour=*/*.parquet"):
            rows = pq.read_table(path, columns=["correlation_id", "ts", "seq"]).to_pylist()
            keys = [(r["correlation_id"] is None, r["correlation_id"] or "", r["ts"], r["seq"]) for r in rows]
            assert sorted(keys) == keys

    def test_every_sealed_line_is_a_row_byte_for_byte(self, incident: Incident) -> None:
        """Each line of each sealed segment is one row whose record is the line as journaled."""
        compact(incident.journal, keys=incident.ring)
        rows = parquet_rows(incident.journal / "parquet")
        assert sorted(sealed_lines(incident.journal)) == sorted(r["record"].encode() for r in rows)

    def test_rows_reverify_against_the_chain(self, incident: Incident) -> None:
        """Taken in seq order, each stream's Parquet records re-verify against its MAC chain."""
        compact(incident.journal, keys=incident.ring)
        stream = web_stream(incident.journal).name
        rows = sorted(
            (r for r in parquet_rows(incident.journal / "parquet") if r["stream"] == stream),
            key=lambda r: r["seq"],
        )
        mk = MacKey(incident.ring.active.derive("journal"))
        prev = GENESIS_MAC
        for n, row in enumerate(rows, 1):
            assert n == row["seq"]
            split = split_mac(row["record"].encode())
            assert split is not None
            body, mac_hex = split
            assert mac_matches(mk, prev, body, mac_hex)
            assert mac_hex.decode() == row["mac"]
            prev = bytes.fromhex(row["mac"])

    def test_manifest_ties_files_to_seals(self, incident: Incident) -> None:
        """The manifest records each segment's seal (hash, count, last MAC) and each file's hash and rows."""
        compact(incident.journal, keys=incident.ring)
        root = incident.journal / "parquet"
        listing = list_journal(web_stream(incident.journal))
        per_segment: dict[str, int] = {}
        for m in load_manifests(root):
            assert m.verify_mac(incident.ring)
            for s in m.segments:
                number = int(s.segment[:8])
                seal = read_seal(listing.seals[number], None)
                assert (seal.sha256, seal.last_mac.hex(), seal.count, seal.first_seq, seal.last_seq) == (
                    s.sha256, s.last_mac, s.count, s.first_seq, s.last_seq,
                )  # fmt: skip
                assert hashlib.sha256(listing.seals[number].read_bytes()).hexdigest() == s.seal_sha256
            for f in m.files:
                data = (root / f.path).read_bytes()
                assert (hashlib.sha256(data).hexdigest(), len(data)) == (f.sha256, f.bytes)
                assert f.rows == pq.ParquetFile(root / f.path).metadata.num_rows == sum(f.segments.values())
                for seg, n in f.segments.items():
                    per_segment[seg] = per_segment.get(seg, 0) + n
        counts = {s.segment: s.count for m in load_manifests(root) for s in m.segments}
        assert counts == per_segment

    def test_manifest_mac_detects_edits(self, incident: Incident) -> None:
        """Editing a manifest breaks its MAC."""
        compact(incident.journal, keys=incident.ring)
        path = next((incident.journal / "parquet" / "_manifest").rglob("*.json"))
        doc = orjson.loads(path.read_bytes())
        doc["rows"] += 1
        path.write_bytes(orjson.dumps(doc))
        assert not load_manifests(incident.journal / "parquet")[0].verify_mac(incident.ring)

    def test_active_segment_is_pending(self, incident: Incident) -> None:
        """The segment a writer still appends to is left for a later run."""
        with incident.handle() as handle:
            handle.emit({"kind": "http.request", "correlation_id": "c-live"})
            report = compact(incident.journal, keys=incident.ring)
            stream = handle.journal.stream
            assert (f"{stream.stream}/{handle.journal._journal.active_segment}",) == report.pending
            (mine,) = [s for s in report.streams if s.stream == stream.stream]
            assert ("open", (handle.journal._journal.active_segment,)) == (mine.state, mine.pending)


class TestIdempotent:
    def test_second_run_changes_nothing(self, incident: Incident) -> None:
        """Running again compacts nothing and leaves every file as it was."""
        first = compact(incident.journal, keys=incident.ring)
        before = layout_state(incident.journal / "parquet")
        again = compact(incident.journal, keys=incident.ring)
        assert (0, 0, first.compacted) == (again.compacted, again.rows, again.skipped)
        assert before == layout_state(incident.journal / "parquet")

    def test_only_new_segments_next_time(self, incident: Incident) -> None:
        """Segments sealed after a run go into a new batch; nothing is compacted twice."""
        first = compact(incident.journal, keys=incident.ring)
        with incident.handle() as handle:
            for i in range(40):
                handle.emit({"kind": "http.request", "correlation_id": f"c-{i}", "action": {"name": "/x"}})
        second = compact(incident.journal, keys=incident.ring)
        assert second.compacted > 0 and first.compacted == second.skipped
        assert sorted(sealed_lines(incident.journal)) == sorted(
            r["record"].encode() for r in parquet_rows(incident.journal / "parquet")
        )

    def test_small_batches(self, incident: Incident) -> None:
        """max_batch_bytes splits the work into several committed batches."""
        report = compact(incident.journal, keys=incident.ring, max_batch_bytes=10 * 1024)
        assert len(report.manifests) > 1
        assert report.rows == len(sealed_lines(incident.journal))


class TestResumable:
    def test_crash_before_commit_is_discarded(
        self, incident: Incident, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run that dies before writing its manifest leaves only staging; the next run redoes the batch."""
        clean = incident.root / "clean"
        shutil.copytree(incident.journal, clean)
        expected = compact(clean, keys=incident.ring)

        def boom(*a: Any, **k: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(batches_mod, "_commit", boom)
        with pytest.raises(OSError, match="disk full"):
            compact(incident.journal, keys=incident.ring)
        root = incident.journal / "parquet"
        assert any((root / "_staging").rglob("*.parquet"))
        assert not list(root.glob("date=*/hour=*/*.parquet"))
        monkeypatch.undo()
        report = compact(incident.journal, keys=incident.ring)
        assert any("discarded" in r for r in report.recovered)
        assert (expected.rows, expected.compacted) == (report.rows, report.compacted)
        assert not any((root / "_staging").rglob("*.parquet"))
        assert len(parquet_rows(root)) == expected.rows

    def test_crash_after_commit_rolls_forward(
        self, incident: Incident, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run that dies after its manifest, while moving files, is finished by the next run."""
        calls = []
        real = os.replace

        def flaky(src: Any, dst: Any) -> None:
            calls.append(dst)
            if str(dst).endswith(".parquet") and len(calls) == 2:
                raise OSError("killed")
            real(src, dst)

        monkeypatch.setattr(recovery_mod, "_replace", flaky)
        with pytest.raises(OSError, match="killed"):
            compact(incident.journal, keys=incident.ring, max_batch_bytes=1 << 30)
        monkeypatch.undo()
        report = compact(incident.journal, keys=incident.ring)
        assert any("rolled forward" in r for r in report.recovered)
        assert 0 == report.compacted
        assert sorted(sealed_lines(incident.journal)) == sorted(
            r["record"].encode() for r in parquet_rows(incident.journal / "parquet")
        )

    def test_sigkill_mid_run(self, incident: Incident) -> None:
        """A compaction killed with SIGKILL while moving files into place is completed on the next run."""
        key = incident.root / "k.key"
        key.write_text(incident.ring.active.to_b64() + "\n")
        script = (
            "import os, signal, sys\n"
            "import auditlog.lake._recovery as r\n"
            "import auditlog.lake.compact as c\n"
            "from store.keys import KeyRing\n"
            "real = os.replace\n"
            "def die(src, dst):\n"
            "    if str(dst).endswith('.parquet'):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    real(src, dst)\n"
            "r._replace = die\n"
            "c.compact(sys.argv[1], keys=KeyRing.from_file(sys.argv[2]))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", script, str(incident.journal), str(key)],
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert -9 == proc.returncode
        report = compact(incident.journal, keys=incident.ring)
        assert any("rolled forward" in r for r in report.recovered)
        assert len(sealed_lines(incident.journal)) == len(parquet_rows(incident.journal / "parquet"))


class TestIntegrity:
    def test_changed_segment_is_refused(self, incident: Incident) -> None:
        """A byte changed in a sealed segment fails compaction, naming the segment."""
        seg = sorted(web_stream(incident.journal).glob("*.jsonl"))[1]
        data = seg.read_bytes()
        i = data.index(b'"duration_ms":3.5')
        seg.write_bytes(data[:i] + b'"duration_ms":9.5' + data[i + 17 :])
        with pytest.raises(SegmentMismatch, match=rf"{seg.name} does not match its seal.*auditlog verify"):
            compact(incident.journal, keys=incident.ring)
        assert not list((incident.journal / "parquet").glob("date=*/hour=*/*.parquet"))

    def test_truncated_segment_is_refused(self, incident: Incident) -> None:
        """A sealed segment cut short fails compaction."""
        seg = sorted(web_stream(incident.journal).glob("*.jsonl"))[0]
        seg.write_bytes(seg.read_bytes()[:-200])
        with pytest.raises(SegmentMismatch, match=seg.name):
            compact(incident.journal, keys=incident.ring)

    def test_forged_seal_is_refused(self, incident: Incident) -> None:
        """A seal whose MAC does not verify is not trusted."""
        seal = sorted(web_stream(incident.journal).glob("*.seal.json"))[0]
        seal.write_bytes(seal.read_bytes().replace(b'"count":', b'"count":1', 1))
        with pytest.raises(CompactionError, match="cannot be trusted"):
            compact(incident.journal, keys=incident.ring)

    def test_seal_changed_after_compaction(self, incident: Incident) -> None:
        """A compacted segment whose seal no longer matches the manifest is reported."""
        compact(incident.journal, keys=incident.ring)
        path = next((incident.journal / "parquet" / "_manifest").rglob("*.json"))
        doc = orjson.loads(path.read_bytes())
        doc["segments"][0]["sha256"] = "0" * 64
        path.write_bytes(orjson.dumps(doc))
        with pytest.raises(SegmentMismatch, match="was compacted in batch"):
            compact(incident.journal, keys=incident.ring)

    def test_torn_tail_after_a_crash(self, incident: Incident, tmp_path: Path) -> None:
        """A stream whose writer died is recovered first (stale), then compacted up to its seal; the torn
        bytes stay out."""
        crashed = tmp_path / "crashed"
        with incident.handle() as handle:
            for i in range(5):
                handle.emit({"kind": "http.request", "correlation_id": f"c-torn-{i}"})
            handle.flush()
            shutil.copytree(incident.journal, crashed, ignore=shutil.ignore_patterns("parquet"))
            died = handle.journal.stream.stream
        active = sorted((crashed / "streams" / died).glob("*.jsonl"))[-1]
        with open(active, "ab") as fh:
            fh.write(b'{"kind":"http.request","correlation_id":"c-half')
        report = compact(crashed, keys=incident.ring)
        assert [died] == [r.stream for r in report.stale_recovered]
        assert "stale" == next(s.state for s in report.streams if s.stream == died)
        rows = parquet_rows(crashed / "parquet")
        assert report.rows == len(rows) == len(sealed_lines(crashed))
        assert 5 == sum(1 for r in rows if (r["correlation_id"] or "").startswith("c-torn-"))
        assert not any("c-half" in r["record"] for r in rows)


class TestCLI:
    def test_compact_json_and_rerun(self, incident: Incident, tmp_path: Path) -> None:
        """`auditlog compact DIR --json` reports the batch; a rerun compacts nothing."""
        app = query_cli()
        key = write_key_file(incident.ring, tmp_path / "k.key")
        res = CliRunner().invoke(app, ["compact", str(incident.journal), "--key-file", str(key), "--json"])
        assert 0 == res.exit_code, res.output
        first = orjson.loads(res.stdout)
        assert first["compacted_segments"] > 0 and first["rows"] > 0
        res = CliRunner().invoke(app, ["compact", str(incident.journal), "--key-file", str(key), "--json"])
        again = orjson.loads(res.stdout)
        assert (0, first["compacted_segments"]) == (again["compacted_segments"], again["already_compacted"])

    def test_compact_names_the_bad_segment(self, incident: Incident, tmp_path: Path) -> None:
        """A segment that does not match its seal: exit 1, the segment named, `verify` suggested."""
        app = query_cli()
        seg = sorted(web_stream(incident.journal).glob("*.jsonl"))[0]
        seg.write_bytes(seg.read_bytes().replace(b'"journal":1', b'"journal":2', 1))
        key = write_key_file(incident.ring, tmp_path / "k.key")
        res = CliRunner().invoke(app, ["compact", str(incident.journal), "--key-file", str(key)])
        assert 1 == res.exit_code
        err = " ".join(res.stderr.split())
        assert f"segment {seg.name} does not match its seal" in err and "auditlog verify" in err


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def aged_journal(root: Path, *, source: str = "web-1", segments: int = 4) -> tuple[Path, Any, Any, _Clock]:
    """A journal of ``segments`` sealed segments, 10 s apart, under a 100 s retention, and a writer on it."""
    from store.keys import KeyRing, MasterKey

    ring = KeyRing(MasterKey.generate())
    clock = _Clock(1_795_168_800.0)  # 2026-11-20T10:00:00Z: headers and records fall on one day
    jdir = root / f"journal-{source}"
    config = JournalConfig(fsync="never", source=source, retention=100.0, retention_check_interval=None)
    w = JournalWriter(jdir, keys=ring, config=config, clock=clock)
    for s in range(segments):
        for i in range(3):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(clock.now + i))
            w.append({"v": 1, "kind": "http.request", "ts": ts, "correlation_id": f"c-{s}-{i}"})
        clock.now += 10
        w.rotate()
    return jdir, ring, w, clock


def rows_by_batch(root: Path) -> dict[str, int]:
    return {m.batch: m.rows for m in load_manifests(root)}


class TestPrune:
    def test_purged_batches_go_the_rest_stay(self, tmp_path: Path) -> None:
        """After retention purges segments 1-3, their batches (manifest and files) go; batch 4 stays."""
        jdir, ring, w, clock = aged_journal(tmp_path)
        compact(jdir, keys=ring, max_batch_bytes=1)  # one batch per segment
        root = jdir / "parquet"
        assert ["00000001-00000001", "00000002-00000002", "00000003-00000003", "00000004-00000004"] == sorted(
            rows_by_batch(root)
        )
        before = {f.path for m in load_manifests(root) for f in m.files}
        with w:
            assert 3 == len(w.enforce_retention(now=clock.now + 95))
        report = compact_mod.prune(jdir, keys=ring)
        assert ("00000001-00000001", "00000002-00000002", "00000003-00000003") == report.pruned
        assert (3, 1) == (report.files, report.kept) and 12 == report.rows  # 3 records + header, x3
        assert ["00000004-00000004"] == list(rows_by_batch(root))
        left = {str(p.relative_to(root)) for p in root.glob("date=*/hour=*/*.parquet")}
        assert left == {f.path for m in load_manifests(root) for f in m.files} and left < before
        folders = [d for d in root.glob("date=*/**") if d.is_dir()]
        assert folders and all(any(d.iterdir()) for d in folders)  # no partition folder left empty
        assert () == compact_mod.prune(jdir, keys=ring).pruned  # idempotent
        compact(jdir, keys=ring)  # and compaction carries on with what is new
        assert len(load_manifests(root)) == 2

    def test_a_segment_deleted_by_hand_prunes_nothing(self, tmp_path: Path) -> None:
        """A segment gone without a retention record fails verify: no copy is deleted (it is evidence)."""
        jdir, ring, w, _clock = aged_journal(tmp_path)
        w.close()
        compact(jdir, keys=ring, max_batch_bytes=1)
        state = layout_state(jdir / "parquet")
        (jdir / "00000001.jsonl").unlink()
        (jdir / "00000001.seal.json").unlink()
        with pytest.raises(CompactionError, match=r"does not verify.*nothing pruned"):
            compact_mod.prune(jdir, keys=ring)
        assert state == layout_state(jdir / "parquet")

    def test_a_batch_with_a_remaining_segment_stays_whole(self, tmp_path: Path) -> None:
        """One batch over segments 1-4 with 1-3 purged is kept, rows and all."""
        jdir, ring, w, clock = aged_journal(tmp_path)
        compact(jdir, keys=ring)
        state = layout_state(jdir / "parquet")
        with w:
            w.enforce_retention(now=clock.now + 95)
        report = compact_mod.prune(jdir, keys=ring)
        assert ((), 1) == (report.pruned, report.kept)
        assert state == layout_state(jdir / "parquet")

    def test_other_sources_in_the_same_root_are_left_alone(self, tmp_path: Path) -> None:
        """Batches of another journal compacted into the same root are never pruned by this one."""
        out = tmp_path / "layout"
        ja, ring_a, wa, clock_a = aged_journal(tmp_path, source="web-1")
        jb, ring_b, wb, _ = aged_journal(tmp_path, source="web-2")
        wb.close()
        compact(ja, out, keys=ring_a, max_batch_bytes=1)
        compact(jb, out, keys=ring_b, max_batch_bytes=1)
        with wa:
            wa.enforce_retention(now=clock_a.now + 95)
        web2 = [m.batch for m in load_manifests(out) if m.source == "web-2"]
        report = compact_mod.prune(ja, out, keys=ring_a)
        assert 3 == len(report.pruned)
        assert ["00000004-00000004"] == [m.batch for m in load_manifests(out) if m.source == "web-1"]
        assert web2 == [m.batch for m in load_manifests(out) if m.source == "web-2"] and web2

    def test_an_interrupted_prune_is_finished(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A run stopped after retiring a manifest (before deleting files) is finished by the next run."""
        jdir, ring, w, clock = aged_journal(tmp_path)
        compact(jdir, keys=ring, max_batch_bytes=1)
        with w:
            w.enforce_retention(now=clock.now + 95)

        def crash(manifest: Any, root: Path, marker: Path) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(prune_mod, "delete_batch", crash)
        with pytest.raises(KeyboardInterrupt):
            compact_mod.prune(jdir, keys=ring)
        root = jdir / "parquet"
        assert 3 == len(load_manifests(root))  # the retired one is no longer seen by queries
        assert 4 == len(list(root.glob("date=*/hour=*/*.parquet")))  # its file is still there
        monkeypatch.undo()
        report = compact_mod.prune(jdir, keys=ring)
        assert ("stream=web-1/00000001-00000001: pruning finished",) == report.recovered
        assert ("00000002-00000002", "00000003-00000003") == report.pruned
        assert ["part-web-1-00000004-00000004.parquet"] == [
            p.name for p in root.glob("date=*/hour=*/*.parquet")
        ]
        assert not list((root / "_manifest").rglob("*.pruned"))

    def test_cli_compact_prune(self, tmp_path: Path) -> None:
        """`auditlog compact --prune --json` compacts, then names the pruned batches."""
        jdir, ring, w, clock = aged_journal(tmp_path)
        compact(jdir, keys=ring, max_batch_bytes=1)
        with w:
            w.enforce_retention(now=clock.now + 95)
        key = write_key_file(ring, tmp_path / "k")
        result = CliRunner().invoke(
            query_cli(), ["compact", str(jdir), "--key-file", str(key), "--prune", "--json"]
        )
        assert 0 == result.exit_code, result.output
        summary = orjson.loads(result.stdout)
        assert 3 == len(summary["pruned_batches"]) and 12 == summary["pruned_rows"]


class TestPublicPaths:
    def test_names_stay_importable_from_compact(self) -> None:
        """The module's public names, moved or not, are importable from auditlog.lake.compact."""
        names = ["CompactReport", "Progress", "PruneReport", "StreamCompaction", "compact", "prune"]
        assert [] == [n for n in names if not hasattr(compact_mod, n)]
        assert set(names) - {"Progress"} <= set(compact_mod.__all__)
