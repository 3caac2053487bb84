"""The tamper-evident audit journal: chained JSONL segments, seals, crash recovery, retention, verify.

A journal is a directory::

    journal.lock              flock'ed by the one writer
    00000001.jsonl            a segment: a header line, then one record per line
    00000001.seal.json        its seal, written when the segment is closed
    00000002.jsonl            the next segment, chained from the last line of the one before

Chain. Every line has a global, consecutive ``seq`` and ``mac = HMAC-SHA256(k, prev_mac || body)``:
``k = master.derive("journal")`` for the master key named by the segment's ``kid``, ``body`` is the
JSON of the record with its ``seq``, serialized once (the line without its ``mac`` field), ``prev_mac``
the MAC of the line before, across segments (32 zero bytes before the very first). Each segment opens with
a header (``kind: "journal.segment_opened"``; ``segment``, ``kid``, ``source``, ``prev_segment``,
``prev_last_seq``, ``reason``, ``ts``, and ``recovered`` after a crash) that takes the next ``seq``, so
removing a whole segment breaks the chain at the next header. A line is the record's serialized bytes with
``,"mac":"<hex>"`` spliced in before the closing brace, so verifying never re-serializes anything.
``seq`` and ``mac`` are reserved keys.

Seals. When a segment closes (size, age, :meth:`JournalWriter.rotate`, :meth:`JournalWriter.close`, a write
error, or recovery) the writer writes ``NNNNNNNN.seal.json``: ``count`` (lines, header included),
``first_seq``, ``last_seq``, ``last_mac``, ``sha256`` and ``bytes`` of the valid prefix, ``torn_bytes`` and
``torn_sha256`` of anything after it, ``kid``, ``source``, ``created``, ``sealed``, ``reason``,
``recovered``, and its own MAC (keyed like the records, under a fixed domain tag instead of a previous MAC).
A sealed segment is complete: any truncation, extension or change shows.

Crash recovery. The writer appends each record with one ``write`` on an ``O_APPEND`` descriptor, so a killed
process leaves whole lines, but for a kill that lands inside a write spanning a page boundary, which can
leave part of the last line. On open, an unsealed last segment is scanned: the longest valid prefix is
sealed, whatever follows it (a torn write) stays in place as evidence and is recorded in the seal, and
writing continues in a new segment whose header says what was recovered. :func:`verify` reports an
acknowledged torn tail as a warning when it is at most one line, as a problem otherwise. A failed write
is handled the same way at once: the segment is sealed over its valid prefix and the next append opens a
new one, so a partial line never breaks the chain.

Retention. :meth:`JournalWriter.enforce_retention` deletes the oldest sealed segments past ``retention``,
after writing a ``journal.retention_purged`` record that names them and keeps their last seq and MAC, so
:func:`verify` can tell a purge from a deletion (the details are in :mod:`store._retention`).

Processes. One writer per directory (``journal.lock`` is flock'ed; a second writer gets JournalError). A
writer inherited across ``fork()`` refuses to write in the child. Several writers (workers, forks, CLI
investigators) share a *trail* instead: :mod:`store.trail` gives each its own journal directory, a
stream, under one trail directory, and keeps signed checkpoints of every stream's head.

Errors. The writer raises :class:`~store.exceptions.JournalError` (an ``OSError``) with the cause chained,
and :class:`~store.exceptions.JournalCorrupt` when it will not continue from a newest seal or segment it
cannot trust. :func:`verify` turns any content it reads into problems; it raises only for a directory it
cannot list. Messages name files, fields and positions, never record values.

Limits. Nothing chains after the last line of the active segment. Until that segment is sealed, records
can be dropped from its end, or its last line altered (recovery then keeps it as a torn tail: a warning);
deleting the newest segments together with their seals, or only the newest seal, looks like a journal
whose writer is still running. Ship sealed segments elsewhere, or keep seal MACs in an external anchor,
to close that gap.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
import weakref
from binascii import hexlify
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from store._journal_types import (
    FsyncPolicy,
    JournalConfig,
    JournalRecovery,
    JournalStats,
    Problem,
    SegmentReport,
    TornTail,
    VerifyReport,
)
from store._journal_verify import iter_records, verify
from store._recovery import resume
from store._retention import Retention, maintain
from store._segment_io import OVERDUE
from store._segments import GENESIS_MAC, MAC_CLOSE, MAC_OPEN, MAX_LINE_BYTES, KeyCache, MacKey
from store.exceptions import JournalError
from store.keys import KeyRing

__all__ = [
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

_HEADER_FIELDS = frozenset(
    ("journal", "kind", "segment", "kid", "source", "prev_segment", "prev_last_seq", "reason", "ts", "seq")
)

# The boundary to the OS, as module names so a test can inject a failing disk.
_write = os.write
_fsync = os.fsync
_join = b"".join
_hexlify = hexlify


class JournalWriter(Retention):
    """Appends records to a chained journal directory. Thread-safe; one writer per directory.

    Opening a directory creates it if needed, takes its lock, seals an unsealed last segment left by a
    crash (see :attr:`recovery`) and starts a new segment; ``seq`` and the chain continue.

    Args:
        directory: the journal directory.
        keys: the key ring; new segments use ``keys.active``, older keys let earlier segments be sealed.
        config: rotation, fsync and retention settings (defaults: :class:`JournalConfig`).
        clock: the wall clock (seconds since the epoch) for timestamps, segment age and retention.
        labels: extra string fields written into every segment header (a trail stream's ``trail_id``,
            ``stream``, ``instance``); the header's own fields win over them.

    Raises:
        JournalError: the directory cannot be created, locked or written.
        JournalCorrupt: the newest segment or seal cannot be trusted to continue from (run :func:`verify`).
    """

    __slots__ = (
        "__weakref__",
        "_inner",
        "_outer",
        "_recovery",
        "_start_seq",
        "_stop",
        "_sync_every",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keys: KeyRing,
        config: JournalConfig | None = None,
        clock: Callable[[], float] = time.time,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        cfg = config if config is not None else JournalConfig()
        self._dir = Path(directory)
        self._labels = {k: v for k, v in (labels or {}).items() if k not in _HEADER_FIELDS}
        self._config = cfg
        self._clock = clock
        self._keys = KeyCache(keys)
        self._kid = keys.active.key_id
        self._mk = MacKey(keys.active.derive("journal"))
        self._inner: Any = self._mk.inner if cfg.chain else None
        self._outer: Any = self._mk.outer
        self._lock = threading.Lock()
        self._max_bytes = cfg.max_segment_bytes
        self._durable = cfg.fsync != "never"
        self._sync_every = {"always": 1, "batch": cfg.fsync_every}.get(cfg.fsync, 1 << 62)
        self._fd = -1
        self._seq = 0
        self._mac = GENESIS_MAC
        self._prev_name: str | None = None
        self._next_number = 1
        self._seg_name = ""
        self._size = self._first_seq = self._headers = self._closed_bytes = 0
        self._segments_opened = self._write_errors = self._purged = self._retention_errors = 0
        self._created = 0.0
        self._deadline = OVERDUE
        self._sha = hashlib.sha256()
        self._broken = self._closed = self._forked = self._reopen = False
        self._recovery: JournalRecovery | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock_fd = self._take_lock()
        try:
            state = resume(
                self._dir,
                self._keys,
                fallback=(self._kid, self._mk),
                source=cfg.source,
                chained=cfg.chain,
                durable=self._durable,
                clock=clock,
            )
            self._seq = self._start_seq = self._synced_seq = state.seq
            self._mac, self._prev_name, self._next_number = state.mac, state.prev_segment, state.next_number
            self._recovery = state.recovery
            self._open_segment(state.reason, state.recovery)
        except BaseException:
            os.close(self._lock_fd)
            raise
        _live.add(self)
        sync_every = cfg.fsync_interval if cfg.fsync == "interval" else None
        purge_every = cfg.retention_check_interval if cfg.retention is not None else None
        if sync_every is not None or purge_every is not None:
            self._thread = threading.Thread(
                target=maintain,
                args=(weakref.ref(self), self._stop, sync_every, purge_every),
                name="auditlog-journal-fsync",
                daemon=True,
            )
            self._thread.start()

    # -- the hot path ----------------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> int:
        """Append one record and return its ``seq``.

        The record is serialized once (its own key order, ``seq`` added last), chained, and written with one
        ``write``; it is then synced according to ``JournalConfig.fsync``.

        Args:
            record: a JSON-serializable mapping with ``str`` keys and no ``seq`` or ``mac`` key.

        Returns:
            The record's ``seq``.

        Raises:
            JournalError: the record is not a mapping, cannot be serialized or uses a reserved key, the
                writer is closed, or the write failed (``__cause__`` holds the ``OSError``): nothing was
                chained and the next append starts a new segment. Also when the record was written but
                the fsync the policy asks for failed: the message names the record's seq.
        """
        try:
            reserved = "seq" in record or "mac" in record
        except TypeError:
            raise JournalError("record must be a mapping with str keys") from None
        if reserved:
            raise JournalError("record uses a reserved key: 'seq' and 'mac' are set by the journal")
        with self._lock:
            return self._append(record)

    def append_owned(self, record: dict[str, Any]) -> int:
        """:meth:`append` for a dict the caller hands over: ``seq`` is added to it in place, not to a copy.

        For the logging pipeline, whose records are new dicts that nothing else holds.

        Raises:
            JournalError: as :meth:`append`.
        """
        if "seq" in record or "mac" in record:
            raise JournalError("record uses a reserved key: 'seq' and 'mac' are set by the journal")
        with self._lock:
            return self._append(record, owned=True)

    def _append(self, record: Mapping[str, Any], roll: bool = True, owned: bool = False) -> int:
        """Write one record (the caller holds the lock and has checked reserved names)."""
        if roll and (self._size >= self._max_bytes or self._clock() >= self._deadline):
            self._roll()
        seq = self._seq + 1
        try:
            if owned:
                record["seq"] = seq  # type: ignore[index]
            else:
                record = {**record, "seq": seq}
            data = orjson.dumps(record)
        except TypeError as exc:
            raise JournalError(f"record cannot be serialized: {str(exc)[:200]}") from exc
        if len(data) > MAX_LINE_BYTES:
            raise JournalError(f"record exceeds the {MAX_LINE_BYTES}-byte limit of a journal line")
        if self._inner is not None:
            h = self._inner.copy()
            h.update(self._mac + data)
            o = self._outer.copy()
            o.update(h.digest())
            mac: bytes = o.digest()
            line = _join((data[:-1], MAC_OPEN, _hexlify(mac), MAC_CLOSE))
        else:
            mac = self._mac
            line = data + b"\n"
        try:
            n = _write(self._fd, line)
        except OSError as exc:
            self._failed()
            raise JournalError(f"cannot write to journal segment {self._dir / self._seg_name}") from exc
        if n != len(line):
            self._failed()
            cause = OSError(errno.ENOSPC, "short write")
            raise JournalError(f"short write to journal segment {self._dir / self._seg_name}") from cause
        self._sha.update(line)
        self._seq = seq
        self._mac = mac
        self._size += n
        if seq - self._synced_seq >= self._sync_every:
            self._sync()
        return seq

    def _failed(self) -> None:
        """After a failed write: never write to this segment again; the next append seals it and rolls."""
        self._write_errors += 1
        self._broken = True
        self._deadline = OVERDUE

    def _os_write(self, fd: int, data: bytes) -> int:
        return _write(fd, data)

    def _os_fsync(self, fd: int) -> None:
        _fsync(fd)

    def _sync(self) -> None:
        try:
            _fsync(self._fd)
        except OSError as exc:
            self._failed()
            raise JournalError(
                f"record seq {self._seq} was written but fsync of {self._dir / self._seg_name} failed"
            ) from exc
        self._synced_seq = self._seq

    # -- segments --------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Sync everything written so far to disk now (whatever the fsync policy).

        Raises:
            JournalError: the sync failed; the next append starts a new segment.
        """
        with self._lock:
            if self._fd >= 0 and not self._broken:
                self._sync()

    def _synced_head(self) -> tuple[str, int, bytes]:
        """Sync what was written (unless ``fsync="never"``), then return ``(segment, last seq, last MAC)``.

        Raises:
            JournalError: the sync failed.
        """
        with self._lock:
            if self._durable and self._fd >= 0 and not self._broken and self._synced_seq != self._seq:
                self._sync()
            return self._head()

    def _background_sync(self) -> None:
        with self._lock:
            if self._fd >= 0 and not self._broken and self._synced_seq != self._seq:
                with contextlib.suppress(JournalError):  # counted; the next append rolls over
                    self._sync()

    def close(self) -> None:
        """Seal the active segment, release the directory and stop the sync thread. Idempotent.

        Raises:
            JournalError: the seal cannot be written (the writer is closed regardless; the next writer
                recovers the unsealed segment).
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = OVERDUE
            _live.discard(self)
            try:
                if self._fd >= 0:
                    self._seal_active("write_error" if self._broken else "close")
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                os.close(self._lock_fd)

    # -- introspection ---------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The journal directory."""
        return self._dir

    @property
    def config(self) -> JournalConfig:
        """The writer's configuration."""
        return self._config

    @property
    def recovery(self) -> JournalRecovery | None:
        """What was recovered on open (an unsealed segment left by a crash), or ``None``."""
        return self._recovery

    @property
    def active_segment(self) -> str | None:
        """The file name of the segment being written, or ``None`` (closed, or between segments)."""
        with self._lock:
            return self._seg_name if self._fd >= 0 else None

    @property
    def stats(self) -> JournalStats:
        """Counters since the writer opened."""
        with self._lock:
            return JournalStats(
                records=self._seq - self._start_seq - self._headers,
                bytes=self._closed_bytes + (self._size if self._fd >= 0 else 0),
                segments=self._segments_opened,
                write_errors=self._write_errors,
                purged_segments=self._purged,
                retention_errors=self._retention_errors,
            )

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JournalWriter({str(self._dir)!r}, segment={self._seg_name!r}, seq={self._seq})"


_live: weakref.WeakSet[JournalWriter] = weakref.WeakSet()


def _disown_after_fork() -> None:
    for writer in list(_live):
        writer._disown()


os.register_at_fork(after_in_child=_disown_after_fork)
