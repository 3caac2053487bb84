"""``BodyOutbox``: local first, then remote. Captured bodies never wait for, or get lost to, a remote store.

The request path (:meth:`BodyOutbox.put`) seals the body (encrypts it: from here on only ciphertext exists)
and appends it to a local *pack* with one ``write`` on an ``O_APPEND`` descriptor, before the request's
event is journaled. A write that returned is in the kernel: it survives ``SIGTERM`` and ``SIGKILL`` (not a
power cut, unless ``fsync=True``). Nothing is held in memory, so there is nothing to lose at exit.

A background *shipper* thread (:mod:`store.bodies._shipper`) seals packs (``pack_bytes`` or ``pack_age``),
delivers every envelope of the oldest sealed pack to the store (in parallel, ``ship_concurrency``), and
deletes the pack only when every envelope in it is confirmed. A failure leaves the pack where it is and
retries it with exponential backoff; packs accumulate meanwhile, up to ``max_outbox_bytes``. A new outbox
over a directory with packs left by a dead process (its ``flock`` is free) ships them first.

Layout (directory 0700, files 0600)::

    OUTBOX/<pid>-<ns>-<rand>.open    the pack being appended to (its writer holds an exclusive flock)
    OUTBOX/<pid>-<ns>-<rand>.pack    sealed, waiting for the shipper

The format of a pack's records is :mod:`store.bodies._pack`'s.

Every ``body_ref`` resolves: each body the outbox takes ends as exactly one of ``stored`` (journaled
``body.stored`` once confirmed), ``body.dropped`` (on the request path: ``outbox_full``, ``disk_full``,
``key_unavailable``, ``closed``, ``error``) or ``body.lost`` (while shipping: ``store_refused``,
``conflict``, ``unreadable``), each with the correlation id and the reason. With ``on_full="block"`` a
full outbox makes ``put`` wait up to ``block_timeout`` for the shipper to free space, then drop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from store.bodies._ids import validate_correlation_id
from store.bodies._model import BodyMeta
from store.bodies._outbox_types import OutboxConfig, OutboxStats
from store.bodies._pack import OPEN, cid_of, frame, read_pack
from store.bodies._shipper import PackShipper
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import BodyStoreUnavailable, InvalidCorrelationId

__all__ = ["BodyOutbox", "OutboxConfig", "OutboxStats", "read_pack"]

_cid_of = cid_of  # auditlog.bodies reads correlation ids of pack records through this name


class BodyOutbox(PackShipper):
    """Local-first writer in front of an :class:`EncryptedBodyStore` (see the module docstring).

    It satisfies :class:`~store.bodies.PutBody`: hand it to the middleware as ``body_store``.

    Args:
        store: where bodies end up (S3, a local store...). It seals (its wrapper must not call the
            network on the request path: use a reader key, or KMS sessions, see
            :mod:`store.bodies.readerkey`).
        directory: the outbox directory (created 0700).
        audit: the sink ``body.dropped``, ``body.lost`` and ``body.stored`` go to.
        config: see :class:`OutboxConfig`.
        start: start the shipper now (else call :meth:`start`, or ship with :meth:`ship_once`).
    """

    def __init__(
        self,
        store: EncryptedBodyStore,
        directory: str | os.PathLike[str],
        *,
        audit: AuditSink | None = None,
        config: OutboxConfig | None = None,
        start: bool = True,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.config = config or OutboxConfig()
        self.stats = OutboxStats()
        self._audit = audit
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._fd = -1
        self._pack: Path | None = None
        self._pack_size = 0
        self._pack_born = 0.0
        self._bytes = 0
        self._pid = os.getpid()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: dict[str, set[int]] = {}
        self._backoff = self.config.backoff_initial
        self._failing = False
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._bytes = self._scan_bytes()
        if start:
            self.start()

    # -- the request path -------------------------------------------------------------------------

    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Seal ``body`` and append it to the current pack. Never raises: a body that cannot be kept is
        counted and journaled as ``body.dropped`` with its reason."""
        try:
            cid = validate_correlation_id(correlation_id)
        except InvalidCorrelationId as exc:
            self._count_drop("invalid", type(exc).__name__)
            return  # an invalid id cannot be journaled as one, nor referenced by an event
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed.is_set():
            self._drop(cid, "closed")
            return
        estimate = len(body) + 1024
        if not self._has_room(estimate):
            self._drop(cid, "outbox_full")
            return
        try:
            record = frame(self.store.seal_record(cid, body, meta=meta))
        except BodyStoreUnavailable:
            self._drop(cid, "key_unavailable")
            return
        except TypeError as exc:
            self._drop(cid, "invalid", exc)
            return
        except Exception as exc:
            self._drop(cid, "error", exc)
            return
        try:
            self._append(record)
        except OSError as exc:
            self._drop(cid, "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "error", exc)

    def _has_room(self, size: int) -> bool:
        limit = self.config.max_outbox_bytes
        if self._bytes + size <= limit:  # the common case, without the condition's lock
            return True
        with self._space:
            if self._bytes + size <= limit:
                return True
            if self.config.on_full == "drop" or self.config.block_timeout <= 0:
                return False
            self._wake.set()
            return self._space.wait_for(lambda: self._bytes + size <= limit, self.config.block_timeout)

    def _append(self, record: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                self._open_pack()
            n = os.write(self._fd, record)
            if n != len(record):  # a short write: the disk filled mid-record; the tail is torn
                os.ftruncate(self._fd, self._pack_size)
                raise OSError(errno.ENOSPC, "short write")
            if self.config.fsync:
                os.fsync(self._fd)
            self._pack_size += n
            self._bytes += n
            self.stats.accepted += 1
            cfg = self.config
            if self._pack_size >= cfg.pack_bytes or time.monotonic() - self._pack_born >= cfg.pack_age:
                self._seal_locked()

    def _open_pack(self) -> None:
        name = f"{os.getpid()}-{time.time_ns():020d}-{os.urandom(3).hex()}{OPEN}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self._pack, self._pack_size, self._pack_born = fd, path, 0, time.monotonic()

    # -- control ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shipper thread (idempotent)."""
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="auditlog-body-shipper", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Seal the current pack and wait until the outbox is empty. True if that happened in time."""
        with self._lock:
            self._seal_locked()
        deadline = time.monotonic() + timeout
        while self.pending_packs():
            if time.monotonic() >= deadline:
                return False
            if self._thread is None or not self._thread.is_alive():
                self.ship_once()
            else:
                self._wake.set()
                time.sleep(0.02)
        return True

    def pending_packs(self) -> int:
        """Packs in the outbox (open or sealed, any process)."""
        return sum(1 for _ in self._pack_paths(include_open=True))

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def close(self, timeout: float | None = None) -> None:
        """Seal the current pack, ship for up to ``close_timeout`` seconds, stop. Idempotent; what is left
        is shipped by the next outbox over this directory."""
        if self._closed.is_set():
            return
        with self._lock:
            self._seal_locked()
        wait = self.config.close_timeout if timeout is None else timeout
        if self.config.ship:
            self.flush(wait)
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(wait, 0.1))

    def __enter__(self) -> BodyOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's pack (its flock stays the parent's) and thread."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._pack, self._pack_size = -1, None, 0
        shipping = self._thread is not None
        self._thread = None
        self._progress = {}
        if shipping:
            self.start()

    # -- accounting -------------------------------------------------------------------------------

    def _count_drop(self, reason: str, error: str | None = None) -> None:
        with self._lock:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
            if error is not None:
                self.stats.errors[error] = self.stats.errors.get(error, 0) + 1

    def _drop(self, cid: str, reason: str, exc: BaseException | None = None) -> None:
        self._count_drop(reason)
        if exc is not None:
            self._note(exc)
        self._journal({"kind": "body.dropped", "correlation_id": cid, "reason": reason})
