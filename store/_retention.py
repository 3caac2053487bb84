"""Retention: choosing, recording and deleting expired segments, and the writer's background thread (private).

:class:`Retention` is a base of :class:`store.journal.JournalWriter`. A purge is on the record before
anything is deleted.

:meth:`JournalWriter.enforce_retention` picks the oldest sealed segments whose seal (MAC
checked) is older than ``retention``: a contiguous run from the start, never the active segment. It then
starts a new segment (header ``reason: "retention"``) whose second line is a ``journal.retention_purged``
record (segment names, count, first and last seq, and for each purged segment its last seq and last MAC),
syncs it, and only then deletes the segments and their seals, oldest first. So a crash leaves either
nothing deleted or a deletion that is on the record (a leftover seal is a warning). With ``retention`` set
the writer runs it itself, in its background thread, every ``retention_check_interval`` seconds (the first
a minute after opening), at most 256 segments a run (a backlog continues a second later); a run that fails
is counted in :attr:`JournalWriter.stats` and retried.

:func:`verify` accepts that the first present segment chains from a segment that is gone only when a purge
record vouches for it: the record must sit at line 2 of a ``reason: "retention"`` segment, with a valid MAC,
name the missing predecessor, and the first present header's MAC must check out against the last MAC the
record kept for it. ``append`` cannot put a record at that position (the writer holds its lock from the
header to the purge record), so a record that merely looks like a purge proves nothing, and a deletion
without a purge record (by hand, or by an attacker) is reported as a missing segment.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store._segment_io import SegmentFiles
from store._segments import (
    FORMAT,
    KIND_PURGED,
    KeyCache,
    Listing,
    Seal,
    fsync_dir,
    list_journal,
    read_seal,
    segment_name,
)
from store.exceptions import JournalCorrupt, JournalError

if TYPE_CHECKING:
    from collections.abc import Mapping


def retention_victims(
    directory: Path, keys: KeyCache, *, active: str, cutoff: float
) -> tuple[Listing, list[Seal]]:
    """Choose the segments retention may purge: the oldest ones sealed at or before ``cutoff``.

    A contiguous run from the first segment, stopping at the active segment, an unsealed segment, or a
    seal that fails its check.

    Returns:
        The directory listing and the chosen segments' seals, oldest first.

    Raises:
        JournalError: the directory cannot be listed.
    """
    listing = list_journal(directory)
    victims: list[Seal] = []
    for number in sorted(listing.segments):
        if number not in listing.seals or listing.segments[number].name == active:
            break
        try:
            seal = read_seal(listing.seals[number], keys)
        except JournalCorrupt:
            break
        if seal.sealed > cutoff or seal.segment != segment_name(number):
            break
        victims.append(seal)
    return listing, victims


def purge_record(victims: list[Seal], *, retention: float, ts: float) -> dict[str, Any]:
    """The ``journal.retention_purged`` record for ``victims``: what goes, and each one's last seq and MAC."""
    firsts = [s.first_seq for s in victims if s.first_seq is not None]
    return {
        "kind": KIND_PURGED,
        "journal": FORMAT,
        "segments": [s.segment for s in victims],
        "count": len(victims),
        "first_seq": firsts[0] if firsts else None,
        "last_seq": victims[-1].last_seq,
        "anchors": [
            {"segment": s.segment, "last_seq": s.last_seq, "last_mac": s.last_mac.hex()} for s in victims
        ],
        "retention": retention,
        "ts": ts,
    }


def delete_purged(directory: Path, listing: Listing, victims: list[Seal], *, durable: bool) -> list[str]:
    """Delete the purged segments, each before its seal, oldest first.

    Returns:
        The deleted segment file names.

    Raises:
        JournalError: a file cannot be deleted (the purge record stands; the next purge retries).
    """
    deleted: list[str] = []
    try:
        for seal in victims:
            number = int(seal.segment.split(".", 1)[0])
            listing.segments[number].unlink()
            listing.seals[number].unlink(missing_ok=True)
            deleted.append(seal.segment)
        if durable:
            fsync_dir(directory)
    except OSError as exc:
        raise JournalError(
            f"retention purge in {directory} stopped after {len(deleted)} of {len(victims)} segments"
        ) from exc
    return deleted


class Retention(SegmentFiles):
    """Retention runs of a journal writer (explicit, or from its background thread)."""

    __slots__ = ("_keys", "_purged", "_retention_errors")

    _keys: KeyCache
    _purged: int
    _retention_errors: int

    def _append(
        self, record: Mapping[str, Any], roll: bool = True, owned: bool = False
    ) -> int:  # pragma: no cover
        raise NotImplementedError

    def _background_retention(self) -> bool:
        """One bounded retention run; True when it stopped at its bound (more segments are due)."""
        try:
            return len(self.enforce_retention(limit=_PURGE_PER_RUN)) >= _PURGE_PER_RUN
        except JournalError:
            if not self._closed:
                with self._lock:
                    self._retention_errors += 1  # counted in stats; the next run retries
            return False

    def enforce_retention(self, now: float | None = None, *, limit: int | None = None) -> list[str]:
        """Delete sealed segments (and seals) whose seal is older than ``JournalConfig.retention``.

        Deletes a contiguous run of the oldest sealed segments, never the active one. First it rotates and
        writes a ``journal.retention_purged`` record as the new segment's first record, naming them and
        keeping each one's last seq and MAC, so :func:`verify` can tell this purge from a deletion.
        Nothing happens when ``retention`` is None or no segment is old enough.

        Args:
            now: the current time (defaults to the writer's clock).
            limit: purge at most this many segments (the oldest); the next call takes the rest. Appends
                wait while a purge runs, so the background thread bounds each run.

        Returns:
            The deleted segment file names, oldest first.

        Raises:
            JournalError: the purge record cannot be written (nothing is deleted) or a file cannot be
                deleted (the record stands; the next call retries).
        """
        retention = self._config.retention
        if retention is None:
            return []
        with self._lock:
            if self._closed:
                raise JournalError(f"journal writer for {self._dir} is closed")
            cutoff = (self._clock() if now is None else now) - retention
            listing, victims = retention_victims(self._dir, self._keys, active=self._seg_name, cutoff=cutoff)
            if limit is not None:
                victims = victims[: max(0, limit)]
            if not victims:
                return []
            if self._fd >= 0:
                self._seal_active("write_error" if self._broken else "retention")
            self._open_segment("retention")
            self._append(purge_record(victims, retention=retention, ts=self._clock()), roll=False)
            if self._durable:
                self._sync()
            deleted = delete_purged(self._dir, listing, victims, durable=self._durable)
            self._purged += len(deleted)
            return deleted


def maintain(
    ref: weakref.ref[Any],
    stop: threading.Event,
    sync_every: float | None,
    purge_every: float | None,
) -> None:
    """The writer's background thread: sync the dirty segment every ``sync_every`` seconds
    (``fsync="interval"``) and enforce retention every ``purge_every`` seconds (the first run a minute
    after opening, or sooner if the interval is shorter). Holds no reference to the writer while waiting."""
    start = time.monotonic()
    next_sync = start + sync_every if sync_every is not None else math.inf
    next_purge = start + min(_FIRST_PURGE_DELAY, purge_every) if purge_every is not None else math.inf
    while not stop.wait(max(0.0, min(next_sync, next_purge) - time.monotonic())):
        writer = ref()
        if writer is None:
            return
        now = time.monotonic()
        if sync_every is not None and now >= next_sync:
            writer._background_sync()
            next_sync = now + sync_every
        if purge_every is not None and now >= next_purge:
            more = writer._background_retention()  # a backlog goes a bounded run at a time, a second apart
            next_purge = time.monotonic() + (min(_BACKLOG_PURGE_DELAY, purge_every) if more else purge_every)
        del writer


_PURGE_PER_RUN = 256  # segments per background retention run: bounds how long appends wait for one
_FIRST_PURGE_DELAY = 60.0  # seconds from opening to the first background run (interval permitting)
_BACKLOG_PURGE_DELAY = 1.0  # seconds between runs while a backlog lasts
