"""Tests for store.journal: the chained audit journal (writer, seals, recovery, retention, verify)."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import store
from store import _retention, journal
from store._segments import MacKey
from store.exceptions import JournalCorrupt, JournalError
from store.journal import (
    JournalConfig,
    JournalRecovery,
    JournalWriter,
    Problem,
    VerifyReport,
    iter_records,
    verify,
)
from store.keys import KeyRing, MasterKey

KEY_A = MasterKey(bytes(range(32)))
KEY_B = MasterKey(bytes(range(32, 64)))
RING_A = KeyRing(KEY_A)
ROOT = Path(store.__file__).resolve().parents[1]


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cfg(**kw: Any) -> JournalConfig:
    """A test config: no fsync, a fixed source, retention only when a test enforces it, overrides from
    ``kw``."""
    return JournalConfig(**{"fsync": "never", "source": "test-host", "retention_check_interval": None, **kw})


def write(directory: Path, n: int, *, ring: KeyRing = RING_A, start: int = 0, **kw: Any) -> list[int]:
    """Append ``n`` records to a journal in ``directory`` and close it; return their seqs."""
    with JournalWriter(directory, keys=ring, config=cfg(**kw)) as w:
        return [w.append({"i": i, "who": "alice", "n": [i, i * 2]}) for i in range(start, start + n)]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.jsonl"))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def journal_lines(directory: Path) -> list[tuple[str, int, int, int, bytes]]:
    """Every line of every segment: (segment, line number, seq, byte offset, raw line with newline)."""
    out = []
    for name in segments(directory):
        offset = 0
        for n, raw in enumerate(lines_of(directory / name), 1):
            out.append((name, n, orjson.loads(raw)["seq"], offset, raw))
            offset += len(raw)
    return out


def seal_of(directory: Path, segment: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((directory / segment.replace(".jsonl", ".seal.json")).read_bytes())
    return data


def user_records(directory: Path) -> list[dict[str, Any]]:
    return [r for r in iter_records(directory) if not str(r.get("kind", "")).startswith("journal.")]


def problem_of(report: VerifyReport) -> Problem:
    """The report's first problem (failing the test when there is none)."""
    assert report.first_problem is not None, "verify found no problem"
    return report.first_problem


def first_problem(directory: Path, ring: KeyRing = RING_A) -> Problem:
    """Verify ``directory`` and return the first problem."""
    return problem_of(verify(directory, keys=ring))


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed journal of 40 records over several sealed segments, copied by tests that tamper."""
    d = tmp_path_factory.mktemp("template") / "journal"
    write(d, 40, max_segment_bytes=1200)
    return d


@pytest.fixture
def tampered(template: Path, tmp_path: Path) -> Path:
    d = tmp_path / "journal"
    shutil.copytree(template, d)
    return d


class TestJournalConfig:
    def test_defaults(self) -> None:
        """Defaults: 64 MiB / 1 h segments, interval fsync, chained, no retention, host name as source."""
        c = JournalConfig()
        assert (64 * 1024 * 1024, 3600.0, "interval", 1000, 1.0, None, True) == (
            c.max_segment_bytes,
            c.max_segment_age,
            c.fsync,
            c.fsync_every,
            c.fsync_interval,
            c.retention,
            c.chain,
        )
        assert c.source

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("max_segment_bytes", 0),
            ("max_segment_bytes", 1.5),
            ("max_segment_bytes", True),
            ("max_segment_age", -1),
            ("max_segment_age", float("nan")),
            ("fsync", "sometimes"),
            ("fsync_every", 0),
            ("fsync_interval", 0),
            ("fsync_interval", float("inf")),
            ("retention", 0),
            ("chain", "yes"),
            ("source", ""),
        ],
    )
    def test_rejects_invalid_values_naming_the_field(self, name: str, value: Any) -> None:
        """An invalid value raises ValueError naming the field."""
        with pytest.raises(ValueError, match=name):
            JournalConfig(**{name: value})

    def test_infinite_age_means_no_age_rotation(self) -> None:
        """max_segment_age may be infinite."""
        assert float("inf") == JournalConfig(max_segment_age=float("inf")).max_segment_age


class TestAppend:
    def test_round_trip(self, jdir: Path) -> None:
        """Records come back from iter_records as written, with seq and mac added."""
        records = [{"i": i, "nested": {"k": [1, "two", None]}, "f": 0.5} for i in range(5)]
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            seqs = [w.append(r) for r in records]
        got = user_records(jdir)
        assert records == [{k: v for k, v in r.items() if k not in ("seq", "mac")} for r in got]
        assert seqs == [r["seq"] for r in got]
        assert [2, 3, 4, 5, 6] == seqs

    def test_line_is_the_records_json_with_chained_mac(self, jdir: Path) -> None:
        """A line is the record's JSON (its key order, seq last) with the MAC spliced in, chained."""
        write(jdir, 2)
        header, first, _ = lines_of(jdir / "00000001.jsonl")[:3]
        key = KEY_A.derive("journal")
        body = b'{"i":0,"who":"alice","n":[0,0],"seq":2}'

        prev = bytes.fromhex(orjson.loads(header)["mac"])
        mac = hmac.new(key, prev + body, hashlib.sha256).hexdigest()
        assert body[:-1] + b',"mac":"' + mac.encode() + b'"}\n' == first

    def test_first_header_chains_from_zero_mac(self, jdir: Path) -> None:
        """The first header is chained from 32 zero bytes."""
        write(jdir, 0)
        header = lines_of(jdir / "00000001.jsonl")[0].rstrip(b"\n")
        i = header.rfind(b',"mac":"')
        mac = hmac.new(KEY_A.derive("journal"), bytes(32) + header[:i] + b"}", hashlib.sha256).hexdigest()
        assert mac == orjson.loads(header)["mac"]

    def test_unserializable_record_raises_without_values_and_keeps_the_chain(self, jdir: Path) -> None:
        """A record orjson cannot serialize raises JournalError (no values in it) and uses no seq."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            before = w.append({"ok": 1})
            with pytest.raises(JournalError) as info:
                w.append({"password": "hunter2-canary", "bad": {1, 2}})
            assert "hunter2" not in str(info.value)
            assert isinstance(info.value.__cause__, TypeError)
            assert before + 1 == w.append({"ok": 2})
        assert verify(jdir, keys=RING_A).ok

    @pytest.mark.parametrize(
        "record",
        [{1: "int key"}, {"big": 1 << 70}, ["not", "a", "mapping"], 5, None, {"seq": 5}, {"mac": "x"}],
        ids=["int-key", "huge-int", "list", "int", "none", "seq-key", "mac-key"],
    )
    def test_rejects_bad_records(self, jdir: Path, record: Any) -> None:
        """Non-str keys, out-of-range ints, non-mappings and reserved keys raise JournalError."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            with pytest.raises(JournalError):
                w.append(record)
            assert 0 == w.stats.records

    def test_append_owned(self, jdir: Path) -> None:
        """append_owned adds seq to the caller's dict in place; the line is what append writes."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            record: dict[str, Any] = {"b": 1, "a": {"t": "str", "len": 3}}
            seq = w.append_owned(record)
            assert {"b": 1, "a": {"t": "str", "len": 3}, "seq": seq} == record
            assert seq + 1 == w.append({"b": 1, "a": {"t": "str", "len": 3}})
            with pytest.raises(JournalError, match="reserved"):
                w.append_owned({"seq": 1})
        lines = [json.loads(ln) for ln in (jdir / "00000001.jsonl").read_text().splitlines()]
        mine = [ln for ln in lines if ln.get("b") == 1]
        assert [seq, seq + 1] == [ln["seq"] for ln in mine]
        assert {k: v for k, v in mine[0].items() if k not in ("seq", "mac")} == {
            k: v for k, v in mine[1].items() if k not in ("seq", "mac")
        }
        assert verify(jdir, keys=RING_A).ok

    def test_closed_writer_refuses_records(self, jdir: Path) -> None:
        """append after close raises JournalError; close is idempotent."""
        w = JournalWriter(jdir, keys=RING_A, config=cfg())
        w.close()
        w.close()
        with pytest.raises(JournalError, match="closed"):
            w.append({"x": 1})

    def test_one_writer_per_directory(self, jdir: Path) -> None:
        """A second writer on the same directory is refused with a clear error."""
        with (
            JournalWriter(jdir, keys=RING_A, config=cfg()),
            pytest.raises(JournalError, match="in use by another writer"),
        ):
            JournalWriter(jdir, keys=RING_A, config=cfg())

    def test_concurrent_appends_get_distinct_consecutive_seqs(self, jdir: Path) -> None:
        """Appends from several threads get distinct seqs and the chain verifies."""
        got: list[int] = []
        with JournalWriter(jdir, keys=RING_A, config=cfg(max_segment_bytes=20_000)) as w:

            def work(t: int) -> None:
                got.extend(w.append({"t": t, "i": i}) for i in range(300))

            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert 1200 == len(set(got))
        report = verify(jdir, keys=RING_A)
        assert (True, ()) == (report.ok, report.problems)

    def test_writer_inherited_across_fork_refuses_to_write(self, jdir: Path) -> None:
        """A forked child cannot append through the parent's writer; the parent carries on."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            w.append({"i": 1})
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 3
                try:
                    w.append({"i": "child"})
                    code = 1
                except JournalError as exc:
                    code = 0 if "fork" in str(exc) else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert 0 == os.waitstatus_to_exitcode(status)
            w.append({"i": 2})
        assert [1, 2] == [r["i"] for r in user_records(jdir)]
        assert verify(jdir, keys=RING_A).ok

    def test_stats(self, jdir: Path) -> None:
        """stats counts records, bytes, segments and write errors."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            for i in range(3):
                w.append({"i": i})
            w.rotate()
            stats = w.stats
        size = sum((jdir / name).stat().st_size for name in segments(jdir))
        assert journal.JournalStats(records=3, bytes=size, segments=2, write_errors=0) == stats

    def test_unchained_lines_carry_no_mac_and_fail_verify(self, jdir: Path) -> None:
        """chain=False writes plain JSON lines, which verify rejects."""
        write(jdir, 2, chain=False)
        assert b'{"i":0,"who":"alice","n":[0,0],"seq":2}\n' == lines_of(jdir / "00000001.jsonl")[1]
        assert "no MAC" in str(first_problem(jdir, RING_A))


class TestRotation:
    def test_rotates_by_size(self, jdir: Path) -> None:
        """A segment that reached max_segment_bytes is sealed and the next record opens a new one."""
        write(jdir, 60, max_segment_bytes=1000)
        names = segments(jdir)
        assert len(names) > 3
        largest_line = max(len(raw) for *_, raw in journal_lines(jdir))
        assert all((jdir / n).stat().st_size < 1000 + largest_line for n in names)
        assert ["size"] * (len(names) - 1) == [seal_of(jdir, n)["reason"] for n in names[:-1]]
        assert verify(jdir, keys=RING_A).ok

    def test_rotates_by_age(self, jdir: Path) -> None:
        """A segment older than max_segment_age is sealed before the next record."""
        clock = FakeClock()
        with JournalWriter(jdir, keys=RING_A, config=cfg(max_segment_age=60), clock=clock) as w:
            w.append({"i": 1})
            clock.advance(59)
            w.append({"i": 2})
            clock.advance(1)
            w.append({"i": 3})
        assert ["00000001.jsonl", "00000002.jsonl"] == segments(jdir)
        assert ("age", 3) == (
            seal_of(jdir, "00000001.jsonl")["reason"],
            seal_of(jdir, "00000001.jsonl")["count"],
        )
        header = orjson.loads(lines_of(jdir / "00000002.jsonl")[0])
        assert ("age", "00000001.jsonl", 3, 4) == (
            header["reason"],
            header["prev_segment"],
            header["prev_last_seq"],
            header["seq"],
        )

    def test_seal_contents(self, jdir: Path) -> None:
        """A seal records count, seqs, last MAC, SHA-256, length, key id, times and its own MAC."""
        clock = FakeClock(5000.0)
        with JournalWriter(jdir, keys=RING_A, config=cfg(), clock=clock) as w:
            for i in range(4):
                w.append({"i": i})
            clock.advance(7)
            w.rotate()
        seal = seal_of(jdir, "00000001.jsonl")
        data = (jdir / "00000001.jsonl").read_bytes()
        last = orjson.loads(data.splitlines()[-1])
        expected = {
            "journal": 1,
            "kind": "journal.segment_sealed",
            "segment": "00000001.jsonl",
            "kid": KEY_A.key_id,
            "source": "test-host",
            "count": 5,
            "first_seq": 1,
            "last_seq": 5,
            "last_mac": last["mac"],
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "torn_bytes": 0,
            "torn_sha256": None,
            "created": 5000.0,
            "sealed": 5007.0,
            "reason": "rotate",
            "recovered": False,
        }
        assert expected == {k: v for k, v in seal.items() if k != "mac"}
        raw = (jdir / "00000001.seal.json").read_bytes().rstrip(b"\n")
        i = raw.rfind(b',"mac":"')
        domain = hashlib.sha256(b"auditlog/journal/seal/v1").digest()
        mac = hmac.new(KEY_A.derive("journal"), domain + raw[:i] + b"}", hashlib.sha256).hexdigest()
        assert mac == seal["mac"]

    def test_close_seals_the_active_segment(self, jdir: Path) -> None:
        """close() seals the active segment (reason "close")."""
        write(jdir, 3)
        assert ("close", 4) == (
            seal_of(jdir, "00000001.jsonl")["reason"],
            seal_of(jdir, "00000001.jsonl")["count"],
        )


class TestFsync:
    @pytest.fixture
    def fsyncs(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        calls: list[int] = []
        real = os.fsync

        def counting(fd: int) -> None:
            calls.append(fd)
            real(fd)

        monkeypatch.setattr(journal, "_fsync", counting)
        return calls

    @pytest.mark.parametrize(
        ("policy", "every", "appends", "expected"),
        [("always", 1000, 7, 7), ("batch", 3, 7, 2), ("never", 1000, 7, 0), ("interval", 1000, 7, 0)],
    )
    def test_record_syncs_follow_the_policy(
        self, jdir: Path, fsyncs: list[int], policy: str, every: int, appends: int, expected: int
    ) -> None:
        """always syncs each record, batch every N, never and interval none on the append path."""
        cfg_ = cfg(fsync=policy, fsync_every=every, fsync_interval=3600)
        with JournalWriter(jdir, keys=RING_A, config=cfg_) as w:
            fsyncs.clear()
            for i in range(appends):
                w.append({"i": i})
            assert expected == len(fsyncs)

    def test_interval_syncs_in_the_background(self, jdir: Path, fsyncs: list[int]) -> None:
        """With fsync="interval" a background thread syncs dirty data within the interval."""
        with JournalWriter(jdir, keys=RING_A, config=cfg(fsync="interval", fsync_interval=0.02)) as w:
            fsyncs.clear()
            w.append({"i": 1})
            deadline = time.monotonic() + 5
            while not fsyncs and time.monotonic() < deadline:
                time.sleep(0.01)
            assert 1 <= len(fsyncs)
        assert not [t for t in threading.enumerate() if t.name == "auditlog-journal-fsync"]

    def test_flush_syncs_now(self, jdir: Path, fsyncs: list[int]) -> None:
        """flush() syncs immediately whatever the policy."""
        with JournalWriter(jdir, keys=RING_A, config=cfg(fsync="batch", fsync_every=1000)) as w:
            w.append({"i": 1})
            fsyncs.clear()
            w.flush()
            assert 1 == len(fsyncs)


class TestReopen:
    def test_reopen_continues_seq_and_chain(self, jdir: Path) -> None:
        """A reopened journal starts a new segment chained from the last seal; seq continues."""
        first = write(jdir, 3)
        second = write(jdir, 3, start=3)
        assert [2, 3, 4] == first
        assert [6, 7, 8] == second
        header = orjson.loads(lines_of(jdir / "00000002.jsonl")[0])
        assert ("reopen", "00000001.jsonl", 4) == (
            header["reason"],
            header["prev_segment"],
            header["prev_last_seq"],
        )
        assert list(range(6)) == [r["i"] for r in user_records(jdir)]
        report = verify(jdir, keys=RING_A)
        assert (True, 8, 2) == (report.ok, report.records, len(report.segments))

    def test_clean_reopen_reports_no_recovery(self, jdir: Path) -> None:
        """After a clean close there is nothing to recover."""
        write(jdir, 1)
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert w.recovery is None


class TestTampering:
    @settings(max_examples=50, deadline=None)
    @given(data=st.data())
    def test_flipped_byte_names_its_record(self, template: Path, data: st.DataObject) -> None:
        """Changing any byte of any line is reported first at that line's segment and seq."""
        lines = journal_lines(template)
        segment, line_no, seq, offset, raw = data.draw(st.sampled_from(lines))
        pos = offset + data.draw(st.integers(0, len(raw) - 1))
        xor = data.draw(st.integers(1, 255))
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "journal"
            shutil.copytree(template, d)
            buf = bytearray((d / segment).read_bytes())
            buf[pos] ^= xor
            (d / segment).write_bytes(bytes(buf))
            report = verify(d, keys=RING_A)
        assert not report.ok
        assert (segment, seq, line_no) == (
            problem_of(report).segment,
            problem_of(report).seq,
            problem_of(report).line,
        ), report.problems[:3]

    @pytest.mark.parametrize("line", [1, 2, 4, -1], ids=["header", "second", "middle", "last"])
    def test_deleted_line(self, tampered: Path, line: int) -> None:
        """A deleted line is reported at its seq."""
        lines = lines_of(tampered / "00000002.jsonl")
        index = line - 1 if line > 0 else len(lines) - 1
        gone = orjson.loads(lines.pop(index))["seq"]
        rewrite(tampered / "00000002.jsonl", lines)
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", gone) == (p.segment, p.seq), p

    @pytest.mark.parametrize("at", [1, 3], ids=["header", "middle"])
    def test_swapped_lines(self, tampered: Path, at: int) -> None:
        """Two swapped lines are reported at the first of them."""
        lines = lines_of(tampered / "00000002.jsonl")
        lines[at - 1], lines[at] = lines[at], lines[at - 1]
        rewrite(tampered / "00000002.jsonl", lines)
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", orjson.loads(lines[at])["seq"], at) == (p.segment, p.seq, p.line), p

    def test_inserted_copy_of_another_record(self, tampered: Path) -> None:
        """A record copied in from elsewhere is reported where it was inserted."""
        lines = lines_of(tampered / "00000002.jsonl")
        displaced = orjson.loads(lines[2])["seq"]
        lines.insert(2, lines_of(tampered / "00000001.jsonl")[3])
        rewrite(tampered / "00000002.jsonl", lines)
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", displaced, 3) == (p.segment, p.seq, p.line), p

    def test_inserted_forged_record(self, tampered: Path) -> None:
        """A well-formed record with a made-up MAC is reported where it was inserted."""
        lines = lines_of(tampered / "00000002.jsonl")
        seq = orjson.loads(lines[2])["seq"]
        lines.insert(2, b'{"i":999,"seq":%d,"mac":"%s"}\n' % (seq, b"ab" * 32))
        rewrite(tampered / "00000002.jsonl", lines)
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", seq, 3, True) == (p.segment, p.seq, p.line, "MAC" in p.reason), p

    def test_line_appended_after_the_seal(self, tampered: Path) -> None:
        """Bytes after a sealed segment's end are reported."""
        last = orjson.loads(lines_of(tampered / "00000002.jsonl")[-1])["seq"]
        with open(tampered / "00000002.jsonl", "ab") as fh:
            fh.write(lines_of(tampered / "00000001.jsonl")[2])
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", last + 1) == (p.segment, p.seq), p

    @pytest.mark.parametrize("mid_line", [True, False])
    def test_truncated_sealed_segment(self, tampered: Path, mid_line: bool) -> None:
        """Truncating a sealed segment (inside a line or at a line boundary) names the first lost record."""
        lines = lines_of(tampered / "00000002.jsonl")
        keep = b"".join(lines[:3])
        cut = keep + lines[3][:10] if mid_line else keep
        (tampered / "00000002.jsonl").write_bytes(cut)
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", orjson.loads(lines[3])["seq"], 4) == (p.segment, p.seq, p.line), p

    @pytest.mark.parametrize("keep_seal", [False, True])
    def test_deleted_middle_segment(self, tampered: Path, keep_seal: bool) -> None:
        """A deleted middle segment is reported by name at its first seq."""
        first = orjson.loads(lines_of(tampered / "00000002.jsonl")[0])["seq"]
        (tampered / "00000002.jsonl").unlink()
        if not keep_seal:
            (tampered / "00000002.seal.json").unlink()
        report = verify(tampered, keys=RING_A)
        p = problem_of(report)
        assert ("00000002.jsonl", first, "missing") == (
            p.segment,
            p.seq,
            "missing" if "missing" in p.reason else p.reason,
        )
        assert 1 == len(report.problems)

    def test_deleted_first_segment(self, tampered: Path) -> None:
        """Deleting the first segment without a retention record is reported at seq 1."""
        (tampered / "00000001.jsonl").unlink()
        (tampered / "00000001.seal.json").unlink()
        p = first_problem(tampered, RING_A)
        assert ("00000001.jsonl", 1) == (p.segment, p.seq), p

    def test_deleted_seal(self, tampered: Path) -> None:
        """A missing seal (of any segment but the last) is reported for its segment."""
        (tampered / "00000002.seal.json").unlink()
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", None, True) == (p.segment, p.seq, "seal missing" in p.reason), p

    def test_altered_seal(self, tampered: Path) -> None:
        """A seal whose content changed fails its MAC."""
        path = tampered / "00000002.seal.json"
        path.write_bytes(path.read_bytes().replace(b'"count":', b'"count":1', 1))
        p = first_problem(tampered, RING_A)
        assert ("00000002.jsonl", None, True) == (p.segment, p.seq, "seal MAC mismatch" in p.reason), p

    def test_seal_swapped_with_another(self, tampered: Path) -> None:
        """A valid seal put in place of another segment's seal is reported."""
        shutil.copy(tampered / "00000001.seal.json", tampered / "00000002.seal.json")
        p = first_problem(tampered, RING_A)
        assert "00000002.jsonl" == p.segment, p

    def test_renamed_segment(self, tampered: Path) -> None:
        """Renaming segments to hide a gap is caught by the header."""
        last = segments(tampered)[-1]
        for suffix in (".jsonl", ".seal.json"):
            (tampered / ("00000002" + suffix)).unlink()
        number = int(last.split(".")[0])
        for n in range(3, number + 1):
            for suffix in (".jsonl", ".seal.json"):
                os.rename(tampered / f"{n:08d}{suffix}", tampered / f"{n - 1:08d}{suffix}")
        assert not verify(tampered, keys=RING_A).ok

    def test_untampered_template_verifies(self, template: Path) -> None:
        """The template the tampering tests start from verifies cleanly."""
        report = verify(template, keys=RING_A)
        assert (True, (), (), ()) == (report.ok, report.problems, report.torn_tails, report.warnings)
        assert all(s.ok and s.sealed for s in report.segments)


CHILD = r"""
import sys
from store.journal import JournalConfig, JournalWriter
from store.keys import KeyRing, MasterKey

ring = KeyRing(MasterKey(bytes.fromhex(sys.argv[2])))
w = JournalWriter(sys.argv[1], keys=ring, config=JournalConfig(fsync="never", source="child"))
i = 0
while True:
    w.append({"i": i, "note": "x" * 24})
    i += 1
    if i == 500:
        print("ready", flush=True)
"""


def run_and_kill(directory: Path) -> None:
    """Run a child that appends in a loop and SIGKILL it mid-stream."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), KEY_A.secret.hex()],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert b"ready\n" == proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert -signal.SIGKILL == proc.returncode


class TestCrashRecovery:
    @pytest.mark.parametrize("torn", [True, False], ids=["torn-tail", "intact"])
    def test_sigkill_mid_stream(self, jdir: Path, torn: bool) -> None:
        """After SIGKILL (and a torn half line) the writer recovers, continues, and verify passes."""
        run_and_kill(jdir)
        last = segments(jdir)[-1]
        assert not (jdir / last.replace(".jsonl", ".seal.json")).exists()
        # A kill that lands inside a write (across a page boundary) can itself leave part of a line.
        content = (jdir / last).read_bytes()
        killed_mid_line = content[content.rfind(b"\n") + 1 :]
        with open(jdir / last, "r+b") as fh:
            fh.truncate(len(content) - len(killed_mid_line))
        on_disk = journal_lines(jdir)
        last_seq = on_disk[-1][2]
        half = killed_mid_line + (on_disk[-1][4][: len(on_disk[-1][4]) // 2] if torn else b"")
        with open(jdir / last, "ab") as fh:
            fh.write(half)
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert JournalRecovery(segment=last, last_good_seq=last_seq, torn_bytes=len(half)) == w.recovery
            assert last_seq + 2 == w.append({"i": "after"})
        header = orjson.loads(lines_of(jdir / segments(jdir)[-1])[0])
        assert ("recovery", {"segment": last, "last_good_seq": last_seq, "torn_bytes": len(half)}) == (
            header["reason"],
            header["recovered"],
        )
        report = verify(jdir, keys=RING_A)
        assert (True, ()) == (report.ok, report.problems)
        expected_torn = (
            journal.TornTail(segment=last, last_good_seq=last_seq, torn_bytes=len(half), sealed=True),
        )
        assert (expected_torn if half else ()) == report.torn_tails
        got = [r["i"] for r in user_records(jdir)]
        assert [*range(len(got) - 1), "after"] == got
        assert (jdir / last).read_bytes().endswith(half)

    def test_bad_complete_last_line_is_a_torn_tail(self, jdir: Path) -> None:
        """A complete but invalid last line of an unsealed segment is treated as torn."""
        write(jdir, 3)
        (jdir / "00000001.seal.json").unlink()
        with open(jdir / "00000001.jsonl", "ab") as fh:
            fh.write(b'{"i":3,"seq":5,"mac":"00"}\n')
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert JournalRecovery(segment="00000001.jsonl", last_good_seq=4, torn_bytes=27) == w.recovery
        report = verify(jdir, keys=RING_A)
        assert (True, 1) == (report.ok, len(report.torn_tails))

    def test_damage_beyond_one_line_is_a_problem(self, jdir: Path) -> None:
        """Several bad lines after the valid prefix are sealed as evidence but fail verification."""
        write(jdir, 3)
        (jdir / "00000001.seal.json").unlink()
        with open(jdir / "00000001.jsonl", "ab") as fh:
            fh.write(b"garbage\nmore garbage\n")
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert 21 == w.recovery.torn_bytes if w.recovery else None
        p = first_problem(jdir, RING_A)
        assert ("00000001.jsonl", 5, True) == (p.segment, p.seq, "several lines" in p.reason), p

    def test_unsealed_active_segment_with_partial_line_is_a_warning(self, jdir: Path) -> None:
        """verify during writing (or before recovery) reports a partial last line as a torn tail warning."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            w.append({"i": 1})
            with open(jdir / "00000001.jsonl", "ab") as fh:
                fh.write(b'{"i":2,"se')
            report = verify(jdir, keys=RING_A)
            assert (True, 1, False) == (report.ok, len(report.torn_tails), report.torn_tails[0].sealed)
            assert 1 == len(report.warnings)
            w.rotate()  # the writer never writes after foreign bytes; its seal covers its own prefix
        assert not verify(jdir, keys=RING_A).ok

    def test_write_failure_rolls_to_a_new_segment(self, jdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed write raises JournalError, keeps the chain, and the next append starts a new segment."""

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert 2 == w.append({"i": 1})
            monkeypatch.setattr(journal, "_write", full)
            with pytest.raises(JournalError) as info:
                w.append({"i": 2})
            assert errno.ENOSPC == info.value.__cause__.errno  # type: ignore[union-attr]
            monkeypatch.undo()
            assert 1 == w.stats.write_errors
            assert 4 == w.append({"i": 3})
        assert ("write_error", 0) == (
            seal_of(jdir, "00000001.jsonl")["reason"],
            seal_of(jdir, "00000001.jsonl")["torn_bytes"],
        )
        assert [1, 3] == [r["i"] for r in user_records(jdir)]
        assert verify(jdir, keys=RING_A).ok

    def test_short_write_leaves_an_acknowledged_torn_tail(
        self, jdir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A partial write is left as a torn tail, sealed, and the chain continues in a new segment."""
        real = os.write

        def partial(fd: int, data: bytes) -> int:
            return real(fd, data[: len(data) // 2])

        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            w.append({"i": 1})
            monkeypatch.setattr(journal, "_write", partial)
            with pytest.raises(JournalError, match="short write"):
                w.append({"i": 2, "pad": "y" * 40})
            monkeypatch.undo()
            w.append({"i": 3})
        report = verify(jdir, keys=RING_A)
        assert (True, 1, True) == (report.ok, len(report.torn_tails), report.torn_tails[0].sealed)
        assert [1, 3] == [r["i"] for r in user_records(jdir)]

    def test_fsync_failure_counts_and_rolls(self, jdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed fsync raises JournalError, is counted, and the next record goes to a new segment."""

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        with JournalWriter(jdir, keys=RING_A, config=cfg(fsync="always")) as w:
            monkeypatch.setattr(journal, "_fsync", eio)
            with pytest.raises(JournalError, match="fsync"):
                w.append({"i": 1})
            monkeypatch.undo()
            w.append({"i": 2})
            assert 1 == w.stats.write_errors
        assert ["00000001.jsonl", "00000002.jsonl"] == segments(jdir)
        assert verify(jdir, keys=RING_A).ok

    @pytest.fixture
    def read_only_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
        """A directory nobody may write to: chmod, or chattr +i as root, else the kernel's EACCES emulated.

        The last resort (root on a filesystem without the immutable flag) makes ``os.open`` and
        ``os.mkdir`` refuse paths below the directory with the error the kernel would give.
        """
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        immutable = False
        try:
            try:
                (d / "probe").touch()
            except PermissionError:
                pass
            else:
                (d / "probe").unlink()
                chattr = shutil.which("chattr")
                if (
                    chattr is not None
                    and not subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode
                ):
                    immutable = True
                else:
                    _refuse_writes_below(monkeypatch, d)
            yield d
        finally:
            if immutable:
                subprocess.run([shutil.which("chattr") or "chattr", "-i", str(d)], check=True)
            d.chmod(0o755)

    @pytest.mark.parametrize("sub", ["", "journal"], ids=["existing", "to-create"])
    def test_read_only_directory(self, read_only_dir: Path, sub: str) -> None:
        """Opening a journal in a read-only directory fails with a JournalError naming it."""
        target = read_only_dir / sub if sub else read_only_dir
        with pytest.raises(JournalError, match=re.escape(str(target))):
            JournalWriter(target, keys=RING_A, config=cfg())

    def test_path_that_is_a_file(self, tmp_path: Path) -> None:
        """A journal path that is a regular file fails with a JournalError naming it."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(JournalError, match=re.escape(str(tmp_path / "file"))):
            JournalWriter(tmp_path / "file", keys=RING_A, config=cfg())

    def test_altered_last_seal_refuses_to_continue(self, jdir: Path) -> None:
        """A writer will not continue a chain from a seal that fails its MAC."""
        write(jdir, 2)
        path = jdir / "00000001.seal.json"
        path.write_bytes(path.read_bytes().replace(b'"count":', b'"count":9', 1))
        with pytest.raises(JournalCorrupt, match="cannot be trusted"):
            JournalWriter(jdir, keys=RING_A, config=cfg())


class TestKeyRotation:
    def test_old_segments_verify_after_rotation(self, jdir: Path) -> None:
        """Segments under the old key verify with a ring that still holds it, and not without."""
        write(jdir, 3)
        rotated = KeyRing(KEY_B, older=(KEY_A,))
        write(jdir, 3, ring=rotated)
        assert [KEY_A.key_id, KEY_B.key_id] == [seal_of(jdir, n)["kid"] for n in segments(jdir)]
        assert verify(jdir, keys=rotated).ok
        report = verify(jdir, keys=KeyRing(KEY_B))
        p = problem_of(report)
        assert ("00000001.jsonl", 1, True) == (p.segment, p.seq, "unknown key id" in p.reason), p
        assert {"00000001.jsonl"} == {q.segment for q in report.problems}

    def test_recovery_of_a_segment_under_the_old_key(self, jdir: Path) -> None:
        """An unsealed segment written under the old key is recovered and sealed under that key."""
        write(jdir, 3)
        (jdir / "00000001.seal.json").unlink()
        rotated = KeyRing(KEY_B, older=(KEY_A,))
        with JournalWriter(jdir, keys=rotated, config=cfg()) as w:
            assert w.recovery is not None
            w.append({"i": 9})
        assert KEY_A.key_id == seal_of(jdir, "00000001.jsonl")["kid"]
        assert verify(jdir, keys=rotated).ok

    def test_recovery_under_an_unknown_key_is_refused(self, jdir: Path) -> None:
        """A writer will not seal a segment whose key it does not hold."""
        write(jdir, 3)
        (jdir / "00000001.seal.json").unlink()
        with pytest.raises(JournalCorrupt, match="key ring does not hold"):
            JournalWriter(jdir, keys=KeyRing(KEY_B), config=cfg())


class TestRetention:
    def test_the_writer_enforces_retention_itself(self, jdir: Path) -> None:
        """With retention set, the writer's own thread purges expired segments on the record."""
        clock = FakeClock(1000.0)
        config = cfg(retention=100.0, retention_check_interval=0.05)
        with JournalWriter(jdir, keys=RING_A, config=config, clock=clock) as w:
            for s in range(4):
                w.append({"s": s})
                clock.advance(10)
                w.rotate()
            assert w._thread is not None  # started for retention alone (fsync="never")
            clock.advance(95)  # segments 1-3 sealed more than 100 s ago
            deadline = time.monotonic() + 10
            while w.stats.purged_segments < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert (3, 0) == (w.stats.purged_segments, w.stats.retention_errors)
        assert not (jdir / "00000001.jsonl").exists() and (jdir / "00000004.jsonl").exists()
        assert verify(jdir, keys=RING_A).ok

    def test_failed_retention_runs_are_counted_and_retried(
        self, jdir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run that cannot delete is counted; appends go on; a later run finishes the purge."""
        clock = FakeClock(1000.0)
        config = cfg(retention=100.0, retention_check_interval=0.05)
        real = _retention.delete_purged

        def refuse(*a: Any, **kw: Any) -> list[str]:
            raise JournalError("cannot delete (simulated)")

        monkeypatch.setattr(_retention, "delete_purged", refuse)
        with JournalWriter(jdir, keys=RING_A, config=config, clock=clock) as w:
            for s in range(2):
                w.append({"s": s})
                clock.advance(10)
                w.rotate()
            clock.advance(200)
            deadline = time.monotonic() + 10
            while w.stats.retention_errors < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert w.stats.retention_errors >= 1
            w.append({"after": True})
            monkeypatch.setattr(_retention, "delete_purged", real)
            while w.stats.purged_segments < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert w.stats.purged_segments >= 1
        assert verify(jdir, keys=RING_A).ok

    def test_a_limited_purge_takes_the_oldest_and_leaves_the_rest_for_later(
        self, jdir: Path, aged: tuple[JournalWriter, FakeClock]
    ) -> None:
        """limit bounds one run; successive runs purge the backlog oldest first, verifying after each."""
        w, _ = aged
        with w:
            assert ["00000001.jsonl", "00000002.jsonl"] == w.enforce_retention(now=1135.0, limit=2)
            assert verify(jdir, keys=RING_A).ok
            assert ["00000003.jsonl"] == w.enforce_retention(now=1135.0, limit=2)
            assert [] == w.enforce_retention(now=1135.0, limit=2)
            assert 3 == w.stats.purged_segments
        assert verify(jdir, keys=RING_A).ok

    def test_the_background_thread_works_through_a_backlog(
        self, jdir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """More expired segments than one run takes: the thread comes back soon, not an interval later."""
        monkeypatch.setattr(_retention, "_PURGE_PER_RUN", 2)
        monkeypatch.setattr(_retention, "_FIRST_PURGE_DELAY", 0.05)
        monkeypatch.setattr(_retention, "_BACKLOG_PURGE_DELAY", 0.05)
        clock = FakeClock(1000.0)
        with JournalWriter(jdir, keys=RING_A, config=cfg(retention=100.0), clock=clock) as w:
            for s in range(6):
                w.append({"s": s})
                clock.advance(10)
                w.rotate()
        clock.advance(500)  # six sealed segments past retention before the writer below opens
        config = cfg(retention=100.0, retention_check_interval=600.0)  # an interval the test never sees
        with JournalWriter(jdir, keys=RING_A, config=config, clock=clock) as w:
            deadline = time.monotonic() + 15
            while w.stats.purged_segments < 7 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert 7 == w.stats.purged_segments  # the six, and the segment the first writer sealed on close
        assert verify(jdir, keys=RING_A).ok

    def test_no_thread_without_retention_or_interval_sync(self, jdir: Path) -> None:
        """fsync other than "interval" and no retention: no background thread."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            assert w._thread is None
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="retention_check_interval"):
                JournalConfig(retention_check_interval=bad)

    @pytest.fixture
    def aged(self, jdir: Path) -> tuple[JournalWriter, FakeClock]:
        """A writer with four sealed segments, sealed 10 s apart, and retention of 100 s."""
        clock = FakeClock(1000.0)
        w = JournalWriter(jdir, keys=RING_A, config=cfg(retention=100.0), clock=clock)
        for s in range(4):
            for i in range(3):
                w.append({"s": s, "i": i})
            clock.advance(10)
            w.rotate()
        return w, clock

    def test_purges_old_sealed_segments_on_the_record(
        self, jdir: Path, aged: tuple[JournalWriter, FakeClock]
    ) -> None:
        """Segments sealed before the cutoff go, a purge record says so, and verify passes."""
        w, _ = aged
        last_seq = seal_of(jdir, "00000003.jsonl")["last_seq"]
        with w:
            purged = w.enforce_retention(now=1135.0)
        assert ["00000001.jsonl", "00000002.jsonl", "00000003.jsonl"] == purged
        assert not any((jdir / n).exists() for n in purged)
        assert not any((jdir / n.replace(".jsonl", ".seal.json")).exists() for n in purged)
        record = next(r for r in iter_records(jdir) if r.get("kind") == "journal.retention_purged")
        assert (purged, 3, 1, last_seq) == (
            record["segments"],
            record["count"],
            record["first_seq"],
            record["last_seq"],
        )
        report = verify(jdir, keys=RING_A)
        assert (True, (), ()) == (report.ok, report.problems, report.warnings)

    def test_keeps_recent_and_active_segments(
        self, jdir: Path, aged: tuple[JournalWriter, FakeClock]
    ) -> None:
        """Nothing newer than the cutoff, and never the active segment, is purged."""
        w, _ = aged
        with w:
            assert [] == w.enforce_retention(now=1050.0)
            active = w.active_segment
            assert [
                "00000001.jsonl",
                "00000002.jsonl",
                "00000003.jsonl",
                "00000004.jsonl",
            ] == w.enforce_retention(now=10_000.0)
            assert active is not None and (jdir / active).exists()
        assert verify(jdir, keys=RING_A).ok

    def test_repeated_purges_verify(self, jdir: Path, aged: tuple[JournalWriter, FakeClock]) -> None:
        """A second purge (taking the first purge record with it) still verifies."""
        w, clock = aged
        with w:
            w.enforce_retention(now=1135.0)
            first_purge_in = w.active_segment
            clock.advance(500)
            w.append({"late": True})
            w.rotate()
            clock.advance(500)
            assert first_purge_in in w.enforce_retention()
        report = verify(jdir, keys=RING_A)
        assert (True, ()) == (report.ok, report.problems)

    def test_disabled_retention_purges_nothing(self, jdir: Path) -> None:
        """With retention=None nothing is ever deleted."""
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            w.rotate()
            assert [] == w.enforce_retention(now=1e12)

    def test_deletion_by_hand_fails_verify(self, tampered: Path) -> None:
        """Segments deleted without a purge record are reported missing."""
        for n in ("00000001", "00000002"):
            (tampered / f"{n}.jsonl").unlink()
            (tampered / f"{n}.seal.json").unlink()
        p = first_problem(tampered, RING_A)
        assert ("00000001.jsonl", 1, True) == (p.segment, p.seq, "no retention record" in p.reason), p

    def test_deletion_beyond_the_purge_fails_verify(
        self, jdir: Path, aged: tuple[JournalWriter, FakeClock]
    ) -> None:
        """Deleting the first segment that survived a purge is reported at that segment."""
        w, _ = aged
        with w:
            w.enforce_retention(now=1135.0)
        first = orjson.loads(lines_of(jdir / "00000004.jsonl")[0])["seq"]
        (jdir / "00000004.jsonl").unlink()
        (jdir / "00000004.seal.json").unlink()
        p = first_problem(jdir, RING_A)
        assert ("00000004.jsonl", first) == (p.segment, p.seq), p

    def test_look_alike_purge_record_proves_nothing(self, jdir: Path) -> None:
        """A record that merely looks like a purge record does not excuse a deletion."""
        write(jdir, 3)
        seal = seal_of(jdir, "00000001.jsonl")
        fake = {
            "kind": "journal.retention_purged",
            "journal": 1,
            "segments": ["00000001.jsonl"],
            "anchors": [
                {"segment": "00000001.jsonl", "last_seq": seal["last_seq"], "last_mac": seal["last_mac"]}
            ],
        }
        with JournalWriter(jdir, keys=RING_A, config=cfg()) as w:
            w.rotate()
            w.append(fake)
        (jdir / "00000001.jsonl").unlink()
        (jdir / "00000001.seal.json").unlink()
        assert "00000001.jsonl" == first_problem(jdir, RING_A).segment

    def test_leftover_seal_after_a_crash_mid_purge_is_a_warning(
        self, jdir: Path, aged: tuple[JournalWriter, FakeClock]
    ) -> None:
        """A seal left behind by an interrupted purge is a warning, not a failure."""
        w, _ = aged
        kept = (jdir / "00000003.seal.json").read_bytes()
        with w:
            w.enforce_retention(now=1135.0)
        (jdir / "00000003.seal.json").write_bytes(kept)
        report = verify(jdir, keys=RING_A)
        assert (True, "00000003.jsonl") == (report.ok, report.warnings[0].segment)


class TestVerifyInput:
    def test_empty_directory(self, tmp_path: Path) -> None:
        """An empty directory is not a valid journal."""
        report = verify(tmp_path, keys=RING_A)
        assert (False, None, "no journal segments in the directory") == (
            report.ok,
            problem_of(report).segment,
            problem_of(report).reason,
        )

    def test_nonexistent_directory(self, tmp_path: Path) -> None:
        """A missing directory raises JournalError naming it."""
        with pytest.raises(JournalError, match="does not exist"):
            verify(tmp_path / "nope", keys=RING_A)
        with pytest.raises(JournalError, match="does not exist"):
            list(iter_records(tmp_path / "nope"))

    @pytest.mark.parametrize(
        ("junk", "reason"),
        [
            (b"\x00\xff\xfe binary junk \x80\n", "not valid UTF-8"),
            (b"not json at all\n", "not valid JSON"),
            (b'["a", "list"]\n', "not a journal record"),
            (b"\xff" * 5000, "incomplete"),
        ],
        ids=["binary", "text", "json-list", "no-newline"],
    )
    def test_garbage_segment_is_a_problem(self, tmp_path: Path, junk: bytes, reason: str) -> None:
        """A sealed segment full of junk gives a clear problem, not a traceback."""
        write(tmp_path, 2)
        write(tmp_path, 2)
        (tmp_path / "00000001.jsonl").write_bytes(junk)
        report = verify(tmp_path, keys=RING_A)
        p = problem_of(report)
        assert ("00000001.jsonl", 1, 1, True) == (p.segment, p.seq, p.line, reason in p.reason), p

    def test_junk_in_the_active_segment(self, tmp_path: Path) -> None:
        """Junk lines in the unsealed last segment are problems; a partial last line is only a warning."""
        write(tmp_path, 2)
        (tmp_path / "00000002.jsonl").write_bytes(b"junk\nmore junk")
        report = verify(tmp_path, keys=RING_A)
        p = problem_of(report)
        assert ("00000002.jsonl", 4, 1, "line is not valid JSON") == (p.segment, p.seq, p.line, p.reason)
        assert (1, False) == (len(report.torn_tails), report.torn_tails[0].sealed)

    def test_invalid_utf8_inside_a_record(self, tampered: Path) -> None:
        """A record with an invalid UTF-8 byte is reported at its seq."""
        lines = lines_of(tampered / "00000001.jsonl")
        seq = orjson.loads(lines[2])["seq"]
        lines[2] = lines[2].replace(b"alice", b"al\xffce")
        rewrite(tampered / "00000001.jsonl", lines)
        p = first_problem(tampered, RING_A)
        assert ("00000001.jsonl", seq, "line is not valid UTF-8") == (p.segment, p.seq, p.reason)

    def test_huge_line(self, tmp_path: Path) -> None:
        """A line longer than the maximum record size is a problem, read in bounded memory."""
        with JournalWriter(tmp_path, keys=RING_A, config=cfg()) as w:
            w.append({"i": 1})
            with open(tmp_path / "00000001.jsonl", "ab") as fh:
                fh.write(b"x" * (17 * 1024 * 1024) + b"\n")
            report = verify(tmp_path, keys=RING_A)
            w.rotate()
        p = problem_of(report)
        assert ("00000001.jsonl", 3, 3, True) == (p.segment, p.seq, p.line, "longer than" in p.reason), p

    def test_garbage_seal(self, tampered: Path) -> None:
        """An unparseable seal is reported for its segment."""
        (tampered / "00000001.seal.json").write_bytes(b"\x00garbage")
        p = first_problem(tampered, RING_A)
        assert ("00000001.jsonl", True) == (p.segment, "seal is malformed" in p.reason)

    def test_stray_files_are_warnings(self, tampered: Path) -> None:
        """Files that only look like journal files are ignored with a warning."""
        (tampered / "notes.jsonl").write_bytes(b"hello\n")
        report = verify(tampered, keys=RING_A)
        assert (True, ["notes.jsonl"]) == (report.ok, [w.segment for w in report.warnings])

    def test_iter_records_rejects_a_corrupt_middle_line(self, tampered: Path) -> None:
        """iter_records raises JournalCorrupt on a line that is not a record (and not a torn tail)."""
        lines = lines_of(tampered / "00000001.jsonl")
        lines[1] = b"junk\n"
        rewrite(tampered / "00000001.jsonl", lines)
        with pytest.raises(JournalCorrupt, match=r"00000001\.jsonl line 2"):
            list(iter_records(tampered))


class TestMacKey:
    @pytest.mark.parametrize("key", [b"", b"k" * 32, b"x" * 64, b"long" * 40])
    def test_matches_stdlib_hmac(self, key: bytes) -> None:
        """The pre-keyed HMAC equals hmac.new(key, prev + body, sha256)."""
        prev, body = b"p" * 32, b'{"seq":1}'
        assert hmac.new(key, prev + body, hashlib.sha256).digest() == MacKey(key).digest(prev, body)


class TestExports:
    def test_all_is_sorted_and_names_the_public_api(self) -> None:
        """__all__ is sorted, and every name in it exists."""
        expected = [
            "FsyncPolicy",
            "JournalConfig",
            "JournalRecovery",
            "JournalStats",
            "JournalWriter",
            "Problem",
            "SegmentReport",
            "TornTail",
            "VerifyReport",
            "iter_records",
            "verify",
        ]
        assert expected == journal.__all__
        assert all(hasattr(journal, name) for name in journal.__all__)


def _refuse_writes_below(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make os.open (for writing) and os.mkdir fail with EACCES below ``root``, as a read-only dir would."""
    real_open, real_mkdir = os.open, os.mkdir
    prefix = str(root)

    def guarded_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(prefix) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(prefix) and str(path) != prefix:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
