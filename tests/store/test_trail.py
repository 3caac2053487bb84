"""Trails: one stream per writer, fork safety, stale recovery, signed checkpoints and verify_trail."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import store
from store import trail
from store.journal import JournalConfig, iter_records, verify
from store.keys import KeyRing, MasterKey
from store.trail import TrailWriter, iter_trail_records, list_streams, recover_stale, verify_trail

RING = KeyRing(MasterKey(bytes(range(32))))
ROOT = Path(store.__file__).resolve().parents[1]


def cfg(**kw: Any) -> JournalConfig:
    """A test config: no fsync thread, a fixed source, overrides from ``kw``."""
    return JournalConfig(**{"fsync": "never", "source": "test-host", "retention_check_interval": None, **kw})


def open_writer(directory: Path, **kw: Any) -> TrailWriter:
    """A writer with no background thread and no SIGTERM handler (this is the pytest process)."""
    opts: dict[str, Any] = {"checkpoint_interval": None, "seal_on_sigterm": False}
    opts.update(kw)
    config = opts.pop("config", cfg())
    return TrailWriter(directory, keys=RING, config=config, **opts)


def user_records(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every non-header record of a trail, with its stream id."""
    return [(info.stream, r) for info, r in iter_trail_records(directory) if "kind" not in r]


def reasons(report: trail.TrailReport) -> list[str]:
    return [str(p) for p in report.problems]


def run_python(code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True, stdout=subprocess.PIPE, **kw
    )


PRELUDE = """
import sys, time
from store.journal import JournalConfig
from store.keys import KeyRing, MasterKey
from store.trail import TrailWriter
RING = KeyRing(MasterKey(bytes(range(32))))
"""


class TestStreams:
    def test_each_segment_header_names_trail_stream_source_and_instance(self, tmp_path: Path) -> None:
        """Consumers read the stream's identity from its headers, never from the directory name."""
        with open_writer(tmp_path, config=cfg(source="web 1/pod")) as w:
            w.append({"i": 1})
            w.rotate()
            w.append({"i": 2})
            info = w.stream
        assert info is not None
        headers = [r for r in iter_records(info.path) if r.get("kind") == "journal.segment_opened"]
        expected = {(w.trail_id, info.stream, "web 1/pod", info.instance)}
        assert expected == {(h["trail_id"], h["stream"], h["source"], h["instance"]) for h in headers}
        assert 2 == len(headers)

    def test_stream_name_is_a_safe_bounded_directory_name(self, tmp_path: Path) -> None:
        """The source part keeps only [A-Za-z0-9._-], at most 64 characters, and no leading dot."""
        with open_writer(tmp_path, config=cfg(source="../" + "x/y z" * 40)) as w:
            info = w.stream
        assert info is not None
        assert tmp_path / "streams" == info.path.parent
        assert all(c.isalnum() or c in "._-" for c in info.stream)
        assert not info.stream.startswith(".")
        assert len(info.stream) <= 64 + 1 + 40

    def test_list_streams_describes_every_stream(self, tmp_path: Path) -> None:
        """Two writers, one closed and one open: list_streams reports both with their labels and state."""
        with open_writer(tmp_path, config=cfg(source="a")) as a:
            a.append({"i": 1})
        b = open_writer(tmp_path, config=cfg(source="b"))
        try:
            infos = {i.source: i for i in list_streams(tmp_path)}
            assert ("sealed", "open") == (infos["a"].state, infos["b"].state)
            assert {a.trail_id} == {i.trail_id for i in infos.values()}
            assert a.stream is not None
            assert a.stream.instance == infos["a"].instance
        finally:
            b.close()

    def test_writers_in_one_process_never_block_each_other(self, tmp_path: Path) -> None:
        """Two open writers on one trail append side by side, each to its own stream."""
        with open_writer(tmp_path) as a, open_writer(tmp_path) as b:
            for i in range(5):
                a.append({"w": "a", "i": i})
                b.append({"w": "b", "i": i})
            assert a.stream is not None and b.stream is not None
            assert a.stream.stream != b.stream.stream
        report = verify_trail(tmp_path, keys=RING)
        assert (True, 2, 10) == (report.ok, len(report.streams), len(user_records(tmp_path)))

    def test_journal_surface_is_kept(self, tmp_path: Path) -> None:
        """append, append_owned, flush, rotate, stats, directory and close behave as JournalWriter's."""
        with open_writer(tmp_path) as w:
            owned = {"i": 1}
            assert 2 == w.append_owned(owned)
            assert 2 == owned["seq"]
            w.append({"i": 2})
            w.flush()
            w.rotate()
            assert (2, 2) == (w.stats.records, w.stats.segments)
            assert tmp_path == w.directory
        with pytest.raises(store.JournalError):
            w.append({"i": 3})

    def test_invalid_checkpoint_interval_is_refused(self, tmp_path: Path) -> None:
        """checkpoint_interval must be a positive number of seconds or None."""
        with pytest.raises(ValueError, match="checkpoint_interval"):
            open_writer(tmp_path, checkpoint_interval=0)

    def test_background_checkpoints_record_the_moving_head(self, tmp_path: Path) -> None:
        """With checkpoint_interval set, the writer's thread checkpoints a head that moved."""
        with open_writer(tmp_path, checkpoint_interval=0.02) as w:
            w.append({"i": 1})
            deadline = time.monotonic() + 5
            while (
                b'"head"' not in (tmp_path / "checkpoints.jsonl").read_bytes() and time.monotonic() < deadline
            ):
                time.sleep(0.01)
        states = [
            orjson.loads(x)["state"] for x in (tmp_path / "checkpoints.jsonl").read_bytes().splitlines()
        ]
        assert ["opened", "head", "sealed"] == states[:2] + states[-1:]


def _worker(directory: str, name: str, count: int) -> None:
    with TrailWriter(directory, keys=RING, config=cfg(), checkpoint_interval=0.05) as w:
        for i in range(count):
            w.append({"w": name, "i": i})
            if i % 100 == 0:
                w.rotate()


class TestConcurrentWriters:
    def test_processes_append_to_one_trail_at_once(self, tmp_path: Path) -> None:
        """Four processes write at the same time: every record once, in four streams, and verify passes."""
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(str(tmp_path), f"p{n}", 400)) for n in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [0] * 4 == [p.exitcode for p in procs]
        got = Counter((r["w"], r["i"]) for _, r in user_records(tmp_path))
        assert {(f"p{n}", i): 1 for n in range(4) for i in range(400)} == dict(got)
        report = verify_trail(tmp_path, keys=RING)
        assert (True, [], 4) == (report.ok, reasons(report), len(report.streams))


class TestFork:
    def test_child_opens_its_own_stream_and_the_parent_carries_on(self, tmp_path: Path) -> None:
        """Parent writes, forks, the child writes, the parent writes: two streams, every record once."""
        w = open_writer(tmp_path)
        w.append({"who": "parent", "i": 0})
        parent_stream = w.stream
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                for i in range(3):
                    w.append({"who": "child", "i": i})
                code = 0 if w.stream is not None and w.stream != parent_stream else 2
                w.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        w.append({"who": "parent", "i": 1})
        assert parent_stream == w.stream
        w.close()
        report = verify_trail(tmp_path, keys=RING)
        assert (True, [], 2) == (report.ok, reasons(report), len(report.streams))
        by_stream: dict[str, list[tuple[str, int]]] = {}
        for sid, r in user_records(tmp_path):
            by_stream.setdefault(sid, []).append((r["who"], r["i"]))
        assert parent_stream is not None
        assert [("parent", 0), ("parent", 1)] == by_stream.pop(parent_stream.stream)
        assert [[("child", 0), ("child", 1), ("child", 2)]] == list(by_stream.values())

    def test_child_exiting_normally_seals_its_stream(self, tmp_path: Path) -> None:
        """A forked child that exits through sys.exit seals its own stream (atexit), not the parent's."""
        w = open_writer(tmp_path)
        w.append({"i": 0})
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            w.append({"i": "child"})
            code = subprocess.call([sys.executable, "-c", "pass"])  # exercise: nothing leaks to children
            trail._close_all()  # what atexit runs at a normal exit
            os._exit(code)
        os.waitpid(pid, 0)
        states = sorted(i.state for i in list_streams(tmp_path))
        assert ["open", "sealed"] == states
        w.close()
        assert verify_trail(tmp_path, keys=RING).ok


class TestLifecycle:
    def test_sigterm_seals_the_stream(self, tmp_path: Path) -> None:
        """A process with a default SIGTERM disposition exits through atexit and seals its stream."""
        code = (
            PRELUDE
            + """
w = TrailWriter(sys.argv[1], keys=RING, config=JournalConfig(fsync="never"))
w.append({"i": 1})
print("ready", flush=True)
time.sleep(30)
"""
        )
        with run_python(code, str(tmp_path)) as proc:
            assert proc.stdout is not None
            assert "ready\n" == proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            assert 128 + signal.SIGTERM == proc.wait(20)
        assert ["sealed"] == [i.state for i in list_streams(tmp_path)]
        assert verify_trail(tmp_path, keys=RING).ok

    def test_a_session_continues_one_stream(self, tmp_path: Path) -> None:
        """Writers with the same session, one after another, continue one stream (the chain goes on);
        while one holds it, another with that session opens a stream of its own."""
        first = open_writer(tmp_path, session="ann-20261207")
        first.append({"i": 1})
        busy = open_writer(tmp_path, session="ann-20261207")  # the first still holds it
        busy.append({"i": 2})
        busy.close()
        first.close()
        second = open_writer(tmp_path, session="ann-20261207")
        second.append({"i": 3})
        second.close()
        by_stream: dict[str, list[int]] = {}
        for stream, rec in user_records(tmp_path):
            by_stream.setdefault(stream, []).append(rec["i"])
        assert sorted([[1, 3], [2]]) == sorted(by_stream.values())
        assert "test-host.ann-20261207" in by_stream
        assert verify_trail(tmp_path, keys=RING).ok

    def test_quiesced_stream_stays_sealed_when_the_process_dies(self, tmp_path: Path) -> None:
        """After quiesce() every record is sealed as it is written: a process that then dies without any
        exit hook (SIGTERM re-raised with its default action, as uvicorn does) leaves a sealed stream."""
        code = (
            PRELUDE
            + """
import os, signal
w = TrailWriter(sys.argv[1], keys=RING, config=JournalConfig(fsync="never"), seal_on_sigterm=False)
w.append({"i": 1})
w.quiesce()
w.append({"i": 2})
w.append({"i": 3})
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGTERM)
"""
        )
        with run_python(code, str(tmp_path)) as proc:
            assert -signal.SIGTERM == proc.wait(20)
        assert ["sealed"] == [i.state for i in list_streams(tmp_path)]
        assert [1, 2, 3] == [r["i"] for _, r in user_records(tmp_path)]
        report = verify_trail(tmp_path, keys=RING)
        assert report.ok, reasons(report) + [str(w) for w in report.warnings]

    def test_resume_goes_back_to_one_segment(self, tmp_path: Path) -> None:
        """After resume() records share a segment again (no seal per record)."""
        w = open_writer(tmp_path)
        w.append({"i": 1})
        w.quiesce()
        w.append({"i": 2})
        w.resume()
        w.append({"i": 3})
        w.append({"i": 4})
        (info,) = list_streams(tmp_path)
        segments = sorted(info.path.glob("*.jsonl"))
        seals = sorted(info.path.glob("*.seal.json"))
        assert (3, 2) == (len(segments), len(seals))  # the first two sealed, the third open
        w.close()
        assert verify_trail(tmp_path, keys=RING).ok

    def test_a_normal_exit_seals_without_close(self, tmp_path: Path) -> None:
        """A writer never closed is sealed by the atexit hook."""
        code = (
            PRELUDE
            + """
w = TrailWriter(sys.argv[1], keys=RING, config=JournalConfig(fsync="never"))
w.append({"i": 1})
"""
        )
        with run_python(code, str(tmp_path)) as proc:
            assert 0 == proc.wait(20)
        assert ["sealed"] == [i.state for i in list_streams(tmp_path)]

    def test_a_killed_writer_is_recovered_by_the_next_one(self, tmp_path: Path) -> None:
        """SIGKILL mid-load: the next writer seals the stale stream, nothing flushed is lost."""
        code = (
            PRELUDE
            + """
w = TrailWriter(sys.argv[1], keys=RING, config=JournalConfig(fsync="never", max_segment_bytes=20000))
i = 0
while True:
    w.append({"i": i, "pad": "x" * 50})
    i += 1
    if i % 50 == 0:
        w.flush()
        print(i, flush=True)
"""
        )
        with run_python(code, str(tmp_path)) as proc:
            assert proc.stdout is not None
            acked = 0
            while acked < 1000:
                acked = int(proc.stdout.readline())
            proc.send_signal(signal.SIGKILL)
            proc.wait(20)
        assert ["stale"] == [i.state for i in list_streams(tmp_path)]
        dead = list_streams(tmp_path)[0]
        with open_writer(tmp_path) as w:
            assert [dead.stream] == [r.stream for r in w.recovered]
            assert w.recovered[0].recovery is not None
        got = [r["i"] for sid, r in user_records(tmp_path) if sid == dead.stream]
        assert list(range(len(got))) == got
        assert acked <= len(got)
        recovered = [r for _, r in iter_trail_records(tmp_path) if "recovered" in r]
        assert 1 == len(recovered)
        report = verify_trail(tmp_path, keys=RING)
        assert (True, [], []) == (report.ok, reasons(report), [str(x) for x in report.warnings])

    def test_recover_stale_never_touches_a_live_stream(self, tmp_path: Path) -> None:
        """A stream whose lock is held is left alone, whatever state its segments are in."""
        with open_writer(tmp_path) as w:
            w.append({"i": 1})
            assert w.stream is not None
            before = sorted(p.name for p in w.stream.path.iterdir())
            assert [] == recover_stale(tmp_path, RING)
            assert before == sorted(p.name for p in w.stream.path.iterdir())


def _trail(directory: Path, records: int = 3, *, rotate: int = 0, source: str = "test-host") -> str:
    """Write one closed stream of ``records`` records (rotating ``rotate`` times); return its id."""
    with open_writer(directory, config=cfg(source=source)) as w:
        for _ in range(rotate):
            w.append({"i": -1})
            w.rotate()
        for i in range(records):
            w.append({"i": i})
        assert w.stream is not None
        return w.stream.stream


class TestVerifyTrail:
    def test_a_missing_or_empty_directory_fails(self, tmp_path: Path) -> None:
        """Nothing to verify is a problem, never OK."""
        (tmp_path / "empty").mkdir()
        for path in (tmp_path / "absent", tmp_path / "empty"):
            report = verify_trail(path, keys=RING)
            assert (False, True) == (report.ok, bool(report.problems))

    def test_an_open_trail_passes_only_with_allow_open(self, tmp_path: Path) -> None:
        """An open stream is a warning: fatal by default, accepted for a live trail."""
        with open_writer(tmp_path) as w:
            w.append({"i": 1})
            assert (False, True) == (verify_trail(tmp_path, keys=RING).ok, True)
            report = verify_trail(tmp_path, keys=RING, allow_open=True)
            assert (True, []) == (report.ok, reasons(report))

    def test_a_deleted_stream_is_named(self, tmp_path: Path) -> None:
        """Removing a whole stream directory is reported with the stream id and its checkpointed seq."""
        gone = _trail(tmp_path, 4)
        _trail(tmp_path, 2)
        shutil.rmtree(tmp_path / "streams" / gone)
        report = verify_trail(tmp_path, keys=RING)
        assert not report.ok
        assert [(gone, 5)] == [(p.stream, p.seq) for p in report.problems]
        assert "missing" in report.problems[0].reason

    def test_newest_segments_and_seals_deleted_are_named(self, tmp_path: Path) -> None:
        """Cutting a stream's newest segments with their seals (the stream itself still verifies) shows."""
        sid = _trail(tmp_path, 3, rotate=3)
        stream = tmp_path / "streams" / sid
        assert verify(stream, keys=RING).ok
        for name in ("00000004.jsonl", "00000004.seal.json", "00000003.jsonl", "00000003.seal.json"):
            (stream / name).unlink()
        assert verify(stream, keys=RING).ok  # the per-stream chain cannot tell
        report = verify_trail(tmp_path, keys=RING)
        assert [(sid, "00000004.jsonl", 5)] == [(p.stream, p.segment, p.seq) for p in report.problems]

    def test_a_rollback_is_caught_by_the_anchor(self, tmp_path: Path) -> None:
        """Restore an older copy of the trail: the newer checkpoint log, kept elsewhere, exposes it."""
        live, old = tmp_path / "trail", tmp_path / "old"
        first = _trail(live, 2)
        shutil.copytree(live, old)
        second = _trail(live, 2)
        anchor = (live / "checkpoints.jsonl").read_bytes()
        assert verify_trail(live, keys=RING, anchor=anchor).ok
        shutil.rmtree(live)
        shutil.copytree(old, live)
        assert verify_trail(live, keys=RING).ok  # on its own the old copy is consistent
        report = verify_trail(live, keys=RING, anchor=anchor)
        assert not report.ok
        named = {(p.stream, p.segment) for p in report.problems}
        assert {(None, "checkpoints.jsonl"), (second, "00000001.jsonl")} == named
        assert first not in {p.stream for p in report.problems}

    def test_a_swapped_trail_is_caught_by_the_anchor(self, tmp_path: Path) -> None:
        """Another trail written with the same key, moved in place: the anchor names another trail."""
        live, other = tmp_path / "trail", tmp_path / "other"
        _trail(live, 2)
        shutil.copy(live / "checkpoints.jsonl", tmp_path / "anchor.jsonl")
        _trail(other, 2)
        shutil.rmtree(live)
        other.rename(live)
        report = verify_trail(live, keys=RING, anchor=tmp_path / "anchor.jsonl")
        assert not report.ok
        assert any("another trail" in p.reason for p in report.problems)

    def test_a_stream_moved_in_from_another_trail_is_named(self, tmp_path: Path) -> None:
        """A stream of another trail (same key) moved into streams/ is foreign and not checkpointed."""
        _trail(tmp_path / "a", 2)
        foreign = _trail(tmp_path / "b", 2)
        (tmp_path / "b" / "streams" / foreign).rename(tmp_path / "a" / "streams" / foreign)
        report = verify_trail(tmp_path / "a", keys=RING)
        assert {foreign} == {p.stream for p in report.problems}
        assert any("another trail" in p.reason for p in report.problems)

    def test_an_altered_checkpoint_line_is_named(self, tmp_path: Path) -> None:
        """Changing a checkpoint (here: its seq) breaks its signature and the chain after it."""
        _trail(tmp_path, 2)
        log = tmp_path / "checkpoints.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        lines[0] = lines[0].replace(b'"last_seq":1,', b'"last_seq":2,')
        log.write_bytes(b"".join(lines))
        report = verify_trail(tmp_path, keys=RING)
        assert [("checkpoints.jsonl", 1)] == [(p.segment, p.line) for p in report.problems]

    def test_a_deleted_checkpoint_line_is_named(self, tmp_path: Path) -> None:
        """Dropping a line from the middle of the log breaks its numbering."""
        _trail(tmp_path, 1)
        _trail(tmp_path, 1)
        log = tmp_path / "checkpoints.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:1] + lines[2:]))
        report = verify_trail(tmp_path, keys=RING)
        assert [("checkpoints.jsonl", 2)] == [(p.segment, p.line) for p in report.problems]


class TestTrailProperties:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=40))
    def test_interleaved_writers_keep_every_record_once(
        self, tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, bool]]
    ) -> None:
        """Any interleaving of three writers' appends and rotations verifies, each record once, in order."""
        directory = tmp_path_factory.mktemp("trail")
        writers = [open_writer(directory) for _ in range(3)]
        for n, (who, rotate) in enumerate(ops):
            writers[who].append({"n": n})
            if rotate:
                writers[who].rotate()
        for w in writers:
            w.close()
        report = verify_trail(directory, keys=RING)
        assert (True, []) == (report.ok, reasons(report))
        assert list(range(len(ops))) == sorted(r["n"] for _, r in user_records(directory))
        for w in writers:
            assert w.stream is not None
            mine = [r["n"] for sid, r in user_records(directory) if sid == w.stream.stream]
            assert mine == sorted(mine)


class TestExports:
    def test_all_lists_the_public_api_sorted(self) -> None:
        """store.trail exports its writer, readers, recovery, verify and their value objects."""
        expected = [
            "StaleRecovery",
            "StreamInfo",
            "StreamReport",
            "TrailProblem",
            "TrailReport",
            "TrailWriter",
            "iter_trail_records",
            "list_streams",
            "recover_stale",
            "verify_trail",
        ]
        assert expected == trail.__all__
        assert all(hasattr(trail, name) for name in trail.__all__)
