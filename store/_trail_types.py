"""The trail's value objects: streams, recoveries and verify reports (private; exported by store.trail)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from store._journal_types import JournalRecovery, VerifyReport

StreamState = Literal["open", "sealed", "stale"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInfo:
    """One stream of a trail, as :func:`store.trail.list_streams` finds it.

    Attributes:
        stream: the stream id (also its directory name; never parse it, use the fields below).
        source: the writer's source (host or pod name) from the stream's first segment header.
        instance: the writer's instance (pid, start time, random part) from that header.
        trail_id: the trail the header says the stream belongs to.
        path: the stream directory: a journal directory (``list_journal``, ``read_seal``, ``iter_records``,
            ``verify`` work on it).
        state: ``"open"`` (its writer holds its lock), ``"sealed"`` (closed: the last segment is sealed),
            ``"stale"`` (no writer, last segment unsealed or no segment: the writer died).
    """

    stream: str
    source: str | None
    instance: str | None
    trail_id: str | None
    path: Path
    state: StreamState


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleRecovery:
    """What :func:`store.trail.recover_stale` did to one stale stream.

    Attributes:
        stream: the stream id.
        path: the stream directory.
        recovery: the sealed segment and where its chain stopped (``None``: nothing was unsealed).
        error: why the stream could not be recovered (left untouched, verify names it), or ``None``.
    """

    stream: str
    path: Path
    recovery: JournalRecovery | None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrailProblem:
    """One finding of :func:`store.trail.verify_trail`.

    Attributes:
        stream: the stream it concerns, or ``None`` for the trail itself (``trail.json``, the checkpoint
            log, the anchor).
        segment: the segment file (or ``checkpoints.jsonl``), or ``None``.
        seq: the ``seq`` concerned (the first missing one, or a checkpointed head), or ``None``.
        line: the 1-based line in ``segment``, or ``None``.
        reason: what is wrong, in words; never a logged value.
    """

    stream: str | None
    segment: str | None
    seq: int | None
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.stream or "trail"
        where += f" {self.segment}" if self.segment else ""
        where += f" seq {self.seq}" if self.seq is not None else ""
        where += f" (line {self.line})" if self.line is not None else ""
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReport:
    """What :func:`store.trail.verify_trail` found for one stream.

    Attributes:
        stream: the stream id.
        state: as in :class:`StreamInfo`, or ``"missing"``: the checkpoint log names it, it is gone.
        report: :func:`store.journal.verify` of the stream directory (``None`` when missing).
        checkpointed_seq: the newest head the checkpoint log (or the anchor) recorded for it, or ``None``.
        ok: no problem concerns this stream.
    """

    stream: str
    state: StreamState | Literal["missing"]
    report: VerifyReport | None
    checkpointed_seq: int | None
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TrailReport:
    """The result of :func:`store.trail.verify_trail`.

    Attributes:
        ok: no problems, and no warnings unless ``allow_open`` was given.
        trail_id: the trail's id from ``trail.json`` (``None`` when it cannot be trusted).
        records: lines verified in every stream, headers included.
        checkpoints: valid lines in the checkpoint log.
        streams: one report per stream (on disk or named by the log), by stream id.
        problems: what is wrong: per stream, or about the trail, the checkpoint log or the anchor.
        warnings: what a live trail shows (open streams, unsealed segments); fatal unless ``allow_open``.
    """

    ok: bool
    trail_id: str | None
    records: int
    checkpoints: int
    streams: tuple[StreamReport, ...]
    problems: tuple[TrailProblem, ...]
    warnings: tuple[TrailProblem, ...]
