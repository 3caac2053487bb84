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

Retention. :meth:`JournalWriter.enforce_retention` picks the oldest sealed segments whose seal (MAC
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

Processes. One writer per directory (``journal.lock`` is flock'ed; a second writer gets JournalError). A
writer inherited across ``fork()`` refuses to write in the child, which must open its own journal in its
own directory; the parent carries on.

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
import fcntl
import hashlib
import math
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
from store._recovery import delete_purged, purge_record, resume, retention_victims
from store._segments import (
    FORMAT,
    GENESIS_MAC,
    KIND_OPENED,
    LOCK_NAME,
    MAC_CLOSE,
    MAC_OPEN,
    MAX_LINE_BYTES,
    KeyCache,
    MacKey,
    Seal,
    encode,
    fsync_dir,
    hash_range,
    seal_line,
    seal_name,
    segment_name,
    write_new_file,
)
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

_OVERDUE = float("-inf")  # a segment deadline that has passed: sends the next append down the slow path

# The boundary to the OS, as module names so a test can inject a failing disk.
_write = os.write
_fsync = os.fsync
_join = b"".join
_hexlify = hexlify


class JournalWriter:
    """Appends records to a chained journal directory. Thread-safe; one writer per directory.

    Opening a directory creates it if needed, takes its lock, seals an unsealed last segment left by a
    crash (see :attr:`recovery`) and starts a new segment; ``seq`` and the chain continue.

    Args:
        directory: the journal directory.
        keys: the key ring; new segments use ``keys.active``, older keys let earlier segments be sealed.
        config: rotation, fsync and retention settings (defaults: :class:`JournalConfig`).
        clock: the wall clock (seconds since the epoch) for timestamps, segment age and retention.

    Raises:
        JournalError: the directory cannot be created, locked or written.
        JournalCorrupt: the newest segment or seal cannot be trusted to continue from (run :func:`verify`).
    """

    __slots__ = (
        "__weakref__",
        "_broken",
        "_clock",
        "_closed",
        "_closed_bytes",
        "_config",
        "_created",
        "_deadline",
        "_dir",
        "_durable",
        "_fd",
        "_first_seq",
        "_forked",
        "_headers",
        "_inner",
        "_keys",
        "_kid",
        "_lock",
        "_lock_fd",
        "_mac",
        "_max_bytes",
        "_mk",
        "_next_number",
        "_outer",
        "_prev_name",
        "_purged",
        "_recovery",
        "_retention_errors",
        "_seg_name",
        "_segments_opened",
        "_seq",
        "_sha",
        "_size",
        "_start_seq",
        "_stop",
        "_sync_every",
        "_synced_seq",
        "_thread",
        "_write_errors",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keys: KeyRing,
        config: JournalConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = config if config is not None else JournalConfig()
        self._dir = Path(directory)
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
        self._deadline = _OVERDUE
        self._sha = hashlib.sha256()
        self._broken = self._closed = self._forked = False
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
                target=_maintain,
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
        self._deadline = _OVERDUE

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

    def _roll(self) -> None:
        """Seal the active segment if its time has come (or it broke) and open the next one."""
        if self._closed:
            if self._forked:
                raise JournalError(
                    f"journal writer for {self._dir} was inherited across fork(); the child must open its"
                    " own journal (in its own directory)"
                )
            raise JournalError(f"journal writer for {self._dir} is closed")
        if self._fd >= 0:
            if self._broken:
                reason = "write_error"
            elif self._size >= self._max_bytes:
                reason = "size"
            elif self._clock() >= self._deadline:
                reason = "age"
            else:
                return
            self._seal_active(reason)
        else:
            reason = "write_error"
        self._open_segment(reason)

    def _open_segment(self, reason: str, recovered: JournalRecovery | None = None) -> None:
        number = self._next_number
        name = segment_name(number)
        path = self._dir / name
        created = self._clock()
        header: dict[str, Any] = {
            "journal": FORMAT,
            "kind": KIND_OPENED,
            "segment": name,
            "kid": self._kid,
            "source": self._config.source,
            "prev_segment": self._prev_name,
            "prev_last_seq": self._seq,
            "reason": reason,
            "ts": created,
            "seq": self._seq + 1,
        }
        if recovered is not None:
            header["recovered"] = {
                "segment": recovered.segment,
                "last_good_seq": recovered.last_good_seq,
                "torn_bytes": recovered.torn_bytes,
            }
        line, mac = encode(self._mk if self._config.chain else None, self._mac, header)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self._write_errors += 1
            raise JournalError(f"cannot create journal segment {path}: {exc.strerror}") from exc
        try:
            if _write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write")
            if self._durable:
                _fsync(fd)
                fsync_dir(self._dir)
        except OSError as exc:
            self._write_errors += 1
            os.close(fd)
            try:
                path.unlink()
            except OSError:
                self._next_number += 1  # leave the husk; verify will name it
            raise JournalError(f"cannot write the header of journal segment {path}") from exc
        self._fd = fd
        self._next_number = number + 1
        self._seg_name = name
        self._first_seq = self._seq = self._synced_seq = self._seq + 1
        self._mac = mac
        self._size = len(line)
        self._sha = hashlib.sha256(line)
        self._created = created
        self._deadline = created + self._config.max_segment_age
        self._broken = False
        self._headers += 1
        self._segments_opened += 1

    def _seal_active(self, reason: str) -> None:
        """Write the active segment's seal, then close it. On failure the segment stays active."""
        path = self._dir / self._seg_name
        torn = 0
        torn_sha = None
        if self._broken:
            try:
                torn = max(0, os.fstat(self._fd).st_size - self._size)
                if torn:
                    torn_sha = hash_range(path, self._size, torn)[0]
            except OSError:
                torn, torn_sha = 0, None
        elif self._durable and self._synced_seq != self._seq:
            self._sync()
        seal = Seal(
            segment=self._seg_name,
            kid=self._kid,
            source=self._config.source,
            count=self._seq - self._first_seq + 1,
            first_seq=self._first_seq,
            last_seq=self._seq,
            last_mac=self._mac,
            sha256=self._sha.hexdigest(),
            length=self._size,
            torn_bytes=torn,
            torn_sha256=torn_sha,
            created=self._created,
            sealed=self._clock(),
            reason=reason,
            recovered=False,
        )
        self._write_seal(seal)
        os.close(self._fd)
        self._fd = -1
        self._deadline = _OVERDUE
        self._prev_name = self._seg_name
        self._closed_bytes += self._size
        self._size = 0

    def _write_seal(self, seal: Seal, mk: MacKey | None = None) -> None:
        path = self._dir / seal_name(int(seal.segment.split(".", 1)[0]))
        try:
            write_new_file(path, seal_line(mk or self._mk, seal), durable=self._durable)
        except OSError as exc:
            self._write_errors += 1
            raise JournalError(f"cannot write journal seal {path}") from exc

    # -- opening ---------------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise JournalError(f"cannot open journal directory {self._dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"journal directory {self._dir} is in use by another writer") from exc
        return fd

    # -- public controls -------------------------------------------------------------------------------

    def rotate(self) -> None:
        """Seal the active segment now and start a new one.

        Raises:
            JournalError: the writer is closed, or the seal or the new segment cannot be written.
        """
        with self._lock:
            if self._closed:
                raise JournalError(f"journal writer for {self._dir} is closed")
            if self._fd >= 0:
                self._seal_active("write_error" if self._broken else "rotate")
            self._open_segment("rotate")

    def flush(self) -> None:
        """Sync everything written so far to disk now (whatever the fsync policy).

        Raises:
            JournalError: the sync failed; the next append starts a new segment.
        """
        with self._lock:
            if self._fd >= 0 and not self._broken:
                self._sync()

    def _background_sync(self) -> None:
        with self._lock:
            if self._fd >= 0 and not self._broken and self._synced_seq != self._seq:
                with contextlib.suppress(JournalError):  # counted; the next append rolls over
                    self._sync()

    def _background_retention(self) -> bool:
        """One bounded retention run; True when it stopped at its bound (more segments are due)."""
        try:
            return len(self.enforce_retention(limit=_PURGE_PER_RUN)) >= _PURGE_PER_RUN
        except JournalError:
            if not self._closed:
                with self._lock:
                    self._retention_errors += 1  # counted in stats; the next run retries
            return False

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
            self._deadline = _OVERDUE
            _live.discard(self)
            try:
                if self._fd >= 0:
                    self._seal_active("write_error" if self._broken else "close")
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                os.close(self._lock_fd)

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

    def _disown(self) -> None:
        """In a forked child: never touch the parent's segment; fail every later call instead."""
        self._lock = threading.Lock()  # another thread may have held it at fork time
        self._closed = self._forked = True
        self._deadline = _OVERDUE
        self._thread = None
        for fd in (self._fd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)  # the child's copies; the parent's descriptors and flock are unaffected
        self._fd = -1

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


def _maintain(
    ref: weakref.ref[JournalWriter],
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

_live: weakref.WeakSet[JournalWriter] = weakref.WeakSet()


def _disown_after_fork() -> None:
    for writer in list(_live):
        writer._disown()


os.register_at_fork(after_in_child=_disown_after_fork)
