"""The journal's value objects: configuration, recovery, counters and verify reports (private).

The public names are exported by :mod:`store.journal`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Literal

FsyncPolicy = Literal["always", "batch", "interval", "never"]
_POLICIES = ("always", "batch", "interval", "never")


def _positive(name: str, value: object, *, integer: bool, allow_inf: bool = False) -> None:
    ok = type(value) is int if integer else type(value) in (int, float)
    if not ok or not value > 0 or (value == float("inf") and not allow_inf):  # type: ignore[operator]
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise ValueError(f"JournalConfig.{name} must be {kind}")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalConfig:
    """How the journal rotates, syncs and expires segments. Validated on construction.

    Attributes:
        max_segment_bytes: rotate once the active segment reaches this size (it may pass it by one record).
        max_segment_age: rotate once the active segment is this many seconds old (``math.inf``: never).
        fsync: ``"always"`` after every record, ``"batch"`` every ``fsync_every`` records, ``"interval"``
            at most ``fsync_interval`` seconds after a write (background thread), ``"never"`` (leave it to
            the OS; seals and new segments are then not synced either).
        fsync_every: batch size for ``fsync="batch"``.
        fsync_interval: seconds between syncs for ``fsync="interval"``.
        retention: seconds a sealed segment is kept by :meth:`JournalWriter.enforce_retention`; ``None``
            keeps everything.
        retention_check_interval: with ``retention`` set, seconds between the writer's own retention runs,
            in its background thread (the first a minute after it opens, or sooner if the interval is
            shorter); ``None``: only explicit :meth:`JournalWriter.enforce_retention` calls.
        chain: ``False`` writes plain lines without MACs, for benchmarks only; :func:`verify` rejects them.
        source: the host name recorded in headers and seals.
    """

    max_segment_bytes: int = 64 * 1024 * 1024
    max_segment_age: float = 3600.0
    fsync: FsyncPolicy = "interval"
    fsync_every: int = 1000
    fsync_interval: float = 1.0
    retention: float | None = None
    retention_check_interval: float | None = 3600.0
    chain: bool = True
    source: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        _positive("max_segment_bytes", self.max_segment_bytes, integer=True)
        _positive("max_segment_age", self.max_segment_age, integer=False, allow_inf=True)
        if self.fsync not in _POLICIES:
            raise ValueError(f"JournalConfig.fsync must be one of {', '.join(_POLICIES)}")
        _positive("fsync_every", self.fsync_every, integer=True)
        _positive("fsync_interval", self.fsync_interval, integer=False)
        if self.retention is not None:
            _positive("retention", self.retention, integer=False)
        if self.retention_check_interval is not None:
            _positive("retention_check_interval", self.retention_check_interval, integer=False)
        if type(self.chain) is not bool:
            raise ValueError("JournalConfig.chain must be a bool")
        if type(self.source) is not str or not self.source or len(self.source) > 255:
            raise ValueError("JournalConfig.source must be a non-empty string of at most 255 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalRecovery:
    """What the writer found on open: the previous writer left ``segment`` unsealed.

    Attributes:
        segment: the unsealed segment's file name; it is now sealed over its valid prefix.
        last_good_seq: the ``seq`` of its last valid line (where the chain continues).
        torn_bytes: bytes after the valid prefix (a torn write), left in place as evidence; 0 if intact.
    """

    segment: str
    last_good_seq: int
    torn_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalStats:
    """Counters since the writer opened: records appended (headers excluded), bytes written (headers
    included), segments opened, writes or syncs that failed, segments its retention runs deleted, and
    retention runs of its background thread that failed (the next run retries)."""

    records: int
    bytes: int
    segments: int
    write_errors: int
    purged_segments: int = 0
    retention_errors: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding of :func:`verify`.

    Attributes:
        segment: the segment file it concerns (a missing one included), or ``None`` for the directory.
        seq: the ``seq`` expected at that position (the first missing one, for a gap), or ``None``.
        line: the 1-based line in ``segment``, or ``None`` for a seal or a whole segment.
        reason: what is wrong, in words; never a logged value.
    """

    segment: str | None
    seq: int | None
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.segment or "journal"
        where += f" seq {self.seq}" if self.seq is not None else ""
        where += f" (line {self.line})" if self.line is not None else ""
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TornTail:
    """Bytes after a segment's last valid record, left by a crash or a failed write.

    Attributes:
        segment: the segment file.
        last_good_seq: the ``seq`` of the last valid record before them.
        torn_bytes: how many bytes.
        sealed: True when the seal acknowledges them (recovered); False for the active segment's tail.
    """

    segment: str
    last_good_seq: int | None
    torn_bytes: int
    sealed: bool

    def __str__(self) -> str:
        state = "acknowledged by its seal" if self.sealed else "segment not sealed yet"
        return f"{self.segment}: {self.torn_bytes} bytes after seq {self.last_good_seq} ({state})"


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentReport:
    """What :func:`verify` found in one segment file (``records`` counts lines, header included)."""

    name: str
    kid: str | None
    records: int
    first_seq: int | None
    last_seq: int | None
    sealed: bool
    torn_bytes: int
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """The result of :func:`verify`.

    Attributes:
        ok: no problems (warnings and acknowledged torn tails do not count).
        records: lines verified in all segments, headers included.
        segments: one report per segment file, in order.
        problems: what is wrong, first bad record first.
        torn_tails: torn writes after a crash (warnings).
        warnings: other findings that do not fail verification (an unsealed active segment, stray files).
    """

    ok: bool
    records: int
    segments: tuple[SegmentReport, ...]
    problems: tuple[Problem, ...]
    torn_tails: tuple[TornTail, ...]
    warnings: tuple[Problem, ...]

    @property
    def first_problem(self) -> Problem | None:
        """The first bad record (or seal, or missing segment) in journal order, or ``None``."""
        return self.problems[0] if self.problems else None
