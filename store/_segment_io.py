"""The writer's segment lifecycle: lock, open, roll and seal segment files (private).

:class:`SegmentFiles` is a base of :class:`store.journal.JournalWriter`; it holds the slow path (a new
segment, a seal, the directory lock), while the writer module keeps the hot path. Every method here runs
with the writer's lock held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from store._journal_types import JournalConfig, JournalRecovery
from store._segments import (
    FORMAT,
    KIND_OPENED,
    LOCK_NAME,
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

OVERDUE = float("-inf")  # a segment deadline that has passed: sends the next append down the slow path


class SegmentFiles:
    """Segment files of one journal directory: the part of the writer that creates, seals and locks them."""

    __slots__ = (
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
        "_kid",
        "_labels",
        "_lock",
        "_lock_fd",
        "_mac",
        "_max_bytes",
        "_mk",
        "_next_number",
        "_prev_name",
        "_reopen",
        "_seg_name",
        "_segments_opened",
        "_seq",
        "_sha",
        "_size",
        "_synced_seq",
        "_thread",
        "_write_errors",
    )

    _broken: bool
    _reopen: bool
    _clock: Any
    _closed: bool
    _closed_bytes: int
    _config: JournalConfig
    _created: float
    _deadline: float
    _dir: Path
    _durable: bool
    _fd: int
    _first_seq: int
    _forked: bool
    _headers: int
    _kid: str
    _labels: dict[str, Any]
    _lock: threading.Lock
    _lock_fd: int
    _mac: bytes
    _max_bytes: int
    _mk: MacKey
    _next_number: int
    _prev_name: str | None
    _seg_name: str
    _segments_opened: int
    _seq: int
    _sha: Any
    _size: int
    _synced_seq: int
    _thread: threading.Thread | None
    _write_errors: int

    def _os_write(self, fd: int, data: bytes) -> int:  # pragma: no cover - overridden by the writer
        return os.write(fd, data)

    def _os_fsync(self, fd: int) -> None:  # pragma: no cover - overridden by the writer
        os.fsync(fd)

    def _sync(self) -> None:  # pragma: no cover - overridden by the writer
        raise NotImplementedError

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

    def seal(self) -> None:
        """Seal the active segment now without starting the next one; the next append starts it.

        For a process that is about to stop: a stream whose every segment is sealed is complete, even if
        the process then dies without closing (``reason: "reopen"`` on the header of any segment after).

        Raises:
            JournalError: the seal cannot be written (the segment stays active).
        """
        with self._lock:
            if self._closed or self._fd < 0:
                return
            self._seal_active("quiesce")
            self._reopen = True

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
            reason = "reopen" if self._reopen else "write_error"
        self._reopen = False
        self._open_segment(reason)

    def _open_segment(self, reason: str, recovered: JournalRecovery | None = None) -> None:
        number = self._next_number
        name = segment_name(number)
        path = self._dir / name
        created = self._clock()
        header: dict[str, Any] = {
            **self._labels,
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
            if self._os_write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write")
            if self._durable:
                self._os_fsync(fd)
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
        self._deadline = OVERDUE
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

    def _head(self) -> tuple[str, int, bytes]:
        """Where the chain stands: ``(segment, last seq, last MAC)`` (the caller holds the lock)."""
        return self._seg_name or (self._prev_name or ""), self._seq, self._mac

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
    def _disown(self) -> None:
        """In a forked child: never touch the parent's segment; fail every later call instead."""
        self._lock = threading.Lock()  # another thread may have held it at fork time
        self._closed = self._forked = True
        self._deadline = OVERDUE
        self._thread = None
        for fd in (self._fd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)  # the child's copies; the parent's descriptors and flock are unaffected
        self._fd = -1
