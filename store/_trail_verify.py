"""Verifying a trail: every stream, the checkpoint log, and that they agree (private; see store.trail)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from store._checkpoints import (
    CHECKPOINTS_NAME,
    Checkpoint,
    CheckpointLog,
    read_checkpoints,
    read_trail_id,
)
from store._journal_types import Problem, VerifyReport
from store._journal_verify import verify
from store._segments import KeyCache, list_journal, read_lines, read_seal, split_mac
from store._streams import list_streams
from store._trail_types import StreamInfo, StreamReport, TrailProblem, TrailReport
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

_LOG = CHECKPOINTS_NAME


def _tp(stream: str | None, p: Problem) -> TrailProblem:
    return TrailProblem(stream=stream, segment=p.segment, seq=p.seq, line=p.line, reason=p.reason)


def _load_anchor(anchor: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(anchor, bytes):
        return anchor
    path = Path(anchor)
    if path.is_dir():
        path = path / CHECKPOINTS_NAME
    with open(path, "rb") as fh:
        return fh.read()


class _Check:
    __slots__ = ("dir", "keys", "problems", "warnings")

    def __init__(self, directory: Path, keys: KeyRing) -> None:
        self.dir = directory
        self.keys = keys
        self.problems: list[TrailProblem] = []
        self.warnings: list[TrailProblem] = []

    def problem(
        self,
        reason: str,
        stream: str | None = None,
        segment: str | None = None,
        seq: int | None = None,
        line: int | None = None,
    ) -> None:
        self.problems.append(TrailProblem(stream=stream, segment=segment, seq=seq, line=line, reason=reason))

    def warn(
        self, reason: str, stream: str | None = None, segment: str | None = None, line: int | None = None
    ) -> None:
        self.warnings.append(TrailProblem(stream=stream, segment=segment, seq=None, line=line, reason=reason))

    def log_findings(self, log: CheckpointLog, what: str) -> None:
        for line, reason in log.problems:
            self.problem(reason, segment=what, line=line)
        for line, reason in log.warnings:
            self.warn(reason, segment=what, line=line)

    def anchor(self, local: CheckpointLog, anchor: CheckpointLog, trail_id: str | None) -> None:
        """The local log must extend the anchor: its first lines are the anchor's lines, byte for byte."""
        self.log_findings(anchor, "anchor")
        if trail_id is not None and anchor.trail_ids - {trail_id}:
            self.problem(
                "the anchor belongs to another trail (trail_id differs): the trail was replaced", segment=_LOG
            )
        for i, line in enumerate(anchor.lines):
            if i >= len(local.lines):
                self.problem(
                    f"the log has {len(local.lines)} lines, the anchor {len(anchor.lines)}:"
                    " rolled back or cut short",
                    segment=_LOG,
                    line=len(local.lines) + 1,
                )
                return
            if local.lines[i] != line:
                self.problem(
                    "line differs from the anchor: the log was rewritten or replaced",
                    segment=_LOG,
                    line=i + 1,
                )
                return

    def stream(self, info: StreamInfo, head: Checkpoint | None, trail_id: str | None) -> StreamReport:
        sid = info.stream
        before = len(self.problems)
        report = verify(info.path, keys=self.keys)
        self.problems.extend(_tp(sid, p) for p in report.problems)
        self.warnings.extend(_tp(sid, w) for w in report.warnings)
        if info.trail_id != trail_id:
            self.problem("stream belongs to another trail (its headers name another trail_id)", sid)
        elif info.stream is not None and _header_stream(info) not in (None, sid):
            self.problem("stream directory renamed (its headers name another stream)", sid)
        if info.state == "open":
            self.warn("stream is open (its writer is running)", sid)
        elif info.state == "stale":
            self.warn("stream's writer stopped without sealing it (run recover_stale)", sid)
        if head is None:
            if info.state == "open":
                self.warn("stream has no checkpoint yet", sid)
            else:
                self.problem(
                    "stream is not in the checkpoint log (moved in from elsewhere, or never checkpointed)",
                    sid,
                )
        else:
            self.head(info, head, report)
        return StreamReport(
            stream=sid,
            state=info.state,
            report=report,
            checkpointed_seq=head.last_seq if head is not None else None,
            ok=len(self.problems) == before,
        )

    def head(self, info: StreamInfo, head: Checkpoint, report: VerifyReport) -> None:
        """The stream must still hold the record the checkpoint recorded as its head, with that MAC."""
        sid, seq, seg = info.stream, head.last_seq, head.segment
        ends = max((s.last_seq for s in report.segments if s.last_seq is not None), default=0)
        if ends < seq:
            self.problem(
                f"stream ends at seq {ends}, but checkpoint {head.n} (line {head.line}) recorded seq {seq}"
                f" in {seg}: its newest records or segments were removed",
                sid,
                seg,
                ends + 1,
            )
            return
        found = _mac_at(info.path, seg, seq)
        if found is not None and found != head.last_mac:
            self.problem(
                f"record differs from checkpoint {head.n} (line {head.line}):"
                " the stream was rewritten or replaced",
                sid,
                seg,
                seq,
            )


def _header_stream(info: StreamInfo) -> str | None:
    """The stream id the stream's headers state (list_streams keeps the directory name as ``stream``)."""
    listing = list_journal(info.path)
    for number in sorted(listing.segments):
        try:
            with open(listing.segments[number], "rb") as fh:
                obj = orjson.loads(fh.readline(1 << 16))
        except (OSError, orjson.JSONDecodeError):
            continue
        value = obj.get("stream") if isinstance(obj, dict) else None
        return value if isinstance(value, str) else None
    return None


def _mac_at(stream_dir: Path, segment: str, seq: int) -> str | None:
    """The stated MAC (hex) of record ``seq`` in ``segment``; ``None`` when it is not there (purged)."""
    path = stream_dir / segment
    seal_path = stream_dir / segment.replace(".jsonl", ".seal.json")
    try:
        seal = read_seal(seal_path, None) if seal_path.exists() else None
    except JournalCorrupt:
        seal = None
    if seal is not None and seal.last_seq == seq:
        return seal.last_mac.hex()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            for _, line, complete in read_lines(fh, size):
                if line is None or not complete:
                    continue
                parts = split_mac(line)
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and obj.get("seq") == seq:
                    return parts[1].decode("ascii", "replace") if parts is not None else ""
    except OSError:
        return None
    return None


def _newest(checkpoints: Iterable[Checkpoint], into: dict[str, Checkpoint]) -> None:
    for c in checkpoints:
        if c.stream not in into or c.last_seq >= into[c.stream].last_seq:
            into[c.stream] = c


def verify_trail(
    directory: str | os.PathLike[str],
    *,
    keys: KeyRing,
    anchor: str | os.PathLike[str] | bytes | None = None,
    allow_open: bool = False,
) -> TrailReport:
    """Check a trail: every stream, the signed checkpoint log, and that each stream reaches its checkpoints.

    Args:
        directory: the trail directory.
        keys: the key ring holding every key the trail was written under.
        anchor: an older copy of the checkpoint log (its bytes, or a path to it or to a trail directory):
            the local log must extend it, and every head it records must still be reached.
        allow_open: accept a live trail: warnings (open streams, unsealed segments) do not fail it.

    Returns:
        The report; problems name the stream, segment and seq. A missing or empty directory is a problem.
    """
    root = Path(directory)
    check = _Check(root, keys)
    empty = TrailReport(
        ok=False, trail_id=None, records=0, checkpoints=0, streams=(), problems=(), warnings=()
    )
    if not root.is_dir():
        check.problem("trail directory does not exist")
        return _report(empty, check, allow_open)
    trail_id: str | None = None
    try:
        trail_id = read_trail_id(root, KeyCache(keys))
    except JournalCorrupt as exc:
        check.problem(str(exc), segment="trail.json")
    try:
        data = (root / _LOG).read_bytes()
    except FileNotFoundError:
        data = b""
        check.problem("checkpoint log is missing", segment=_LOG)
    log = read_checkpoints(data, keys, trail_id=trail_id)
    check.log_findings(log, _LOG)
    heads: dict[str, Checkpoint] = {}
    _newest(log.checkpoints, heads)
    if anchor is not None:
        try:
            anchored = read_checkpoints(_load_anchor(anchor), keys, trail_id=None)
        except OSError as exc:
            check.problem(f"the anchor cannot be read: {exc.strerror}", segment="anchor")
        else:
            check.anchor(log, anchored, trail_id)
            _newest(anchored.checkpoints, heads)
    try:
        infos = list_streams(root)
    except JournalError as exc:
        check.problem(str(exc))
        infos = []
    if not infos and not heads:
        check.problem("the trail holds no streams")
    streams: list[StreamReport] = []
    on_disk = {i.stream for i in infos}
    for info in infos:
        try:
            streams.append(check.stream(info, heads.get(info.stream), trail_id))
        except JournalError as exc:
            check.problem(str(exc), info.stream)
    for sid, head in sorted(heads.items()):
        if sid not in on_disk:
            check.problem(
                f"stream directory is missing; checkpoint {head.n} (line {head.line}) recorded it up to seq"
                f" {head.last_seq}",
                sid,
                head.segment,
                head.last_seq,
            )
            streams.append(
                StreamReport(
                    stream=sid, state="missing", report=None, checkpointed_seq=head.last_seq, ok=False
                )
            )
    streams.sort(key=lambda s: s.stream)
    records = sum(s.report.records for s in streams if s.report is not None)
    base = TrailReport(
        ok=False,
        trail_id=trail_id,
        records=records,
        checkpoints=len(log.checkpoints),
        streams=tuple(streams),
        problems=(),
        warnings=(),
    )
    return _report(base, check, allow_open)


def _report(base: TrailReport, check: _Check, allow_open: bool) -> TrailReport:
    problems, warnings = tuple(check.problems), tuple(check.warnings)
    return TrailReport(
        ok=not problems and (allow_open or not warnings),
        trail_id=base.trail_id,
        records=base.records,
        checkpoints=base.checkpoints,
        streams=base.streams,
        problems=problems,
        warnings=warnings,
    )
