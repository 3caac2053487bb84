"""``BodyOutbox``: local first, then remote. Captured bodies never wait for, or get lost to, a remote store.

The request path (:meth:`BodyOutbox.put`) seals the body (encrypts it: from here on only ciphertext exists)
and appends it to a local *pack* with one ``write`` on an ``O_APPEND`` descriptor, before the request's
event is journaled. A write that returned is in the kernel: it survives ``SIGTERM`` and ``SIGKILL`` (not a
power cut, unless ``fsync=True``). Nothing is held in memory, so there is nothing to lose at exit.

A background *shipper* thread seals packs (``pack_bytes`` or ``pack_age``), delivers every envelope of the
oldest sealed pack to the store (in parallel, ``ship_concurrency``), and deletes the pack only when every
envelope in it is confirmed. A failure leaves the pack where it is and retries it with exponential backoff;
packs accumulate meanwhile, up to ``max_outbox_bytes``. A new outbox over a directory with packs left by a
dead process (its ``flock`` is free) ships them first.

Layout (directory 0700, files 0600)::

    OUTBOX/<pid>-<ns>-<rand>.open    the pack being appended to (its writer holds an exclusive flock)
    OUTBOX/<pid>-<ns>-<rand>.pack    sealed, waiting for the shipper

Each record is ``b"ALPK" | u32 length | sealed record`` (:func:`store.bodies._crypto.seal_record`: the
ciphertext, wrapped key and associated data; the JSON header is built by the shipper); a torn tail (shorter
than announced, or no magic) ends the pack's readable records. No checksum: the envelope is AEAD-sealed,
so a corrupted record fails to verify on delivery and resolves as ``body.lost`` (``unreadable``).

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
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from store.bodies._crypto import envelope_from_record
from store.bodies._ids import validate_correlation_id
from store.bodies._model import BodyMeta
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import (
    AccessDenied,
    BodyExists,
    BodyStoreError,
    BodyStoreUnavailable,
    InvalidCorrelationId,
)

__all__ = ["BodyOutbox", "OutboxConfig", "OutboxStats", "read_pack"]

log = logging.getLogger("store.bodies")
_MAGIC = b"ALPK"
_REC = struct.Struct(">4sI")
_OPEN = ".open"
_SEALED = ".pack"
_RETRYABLE = (BodyStoreUnavailable, AccessDenied)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxConfig:
    """Settings of a :class:`BodyOutbox`.

    Args:
        max_outbox_bytes: the disk budget of the outbox; past it, new bodies meet ``on_full``.
        on_full: ``"drop"`` (count and journal ``body.dropped`` at once) or ``"block"`` (wait up to
            ``block_timeout`` for the shipper to free space, then drop). ``"block"`` blocks the calling
            thread: the event loop, in an async server.
        block_timeout: seconds ``put`` may wait when ``on_full="block"``.
        pack_bytes, pack_age: a pack is sealed for shipping at this size or age (seconds).
        ship_interval: seconds between the shipper's looks at the outbox.
        ship_concurrency: envelopes delivered in parallel.
        backoff_initial, backoff_max: the delay after a failed delivery doubles between these.
        fsync: sync each append (survives a power cut; costs one fsync per body).
        journal_stored: journal ``body.stored`` for every confirmed body.
        close_timeout: seconds :meth:`BodyOutbox.close` keeps shipping before it leaves the rest for the
            next start.
        ship: deliver packs from this process. ``False``: this process only appends and seals packs
            (its thread still seals by age and refreshes session keys); a separate shipper over the same
            directory (``auditlog bodies ship``) delivers them, so the app's interpreter never spends
            time on delivery, and the app server needs no credentials for the store.
    """

    max_outbox_bytes: int = 1 << 30
    on_full: Literal["drop", "block"] = "drop"
    block_timeout: float = 0.05
    pack_bytes: int = 4 << 20
    pack_age: float = 1.0
    ship_interval: float = 0.2
    ship_concurrency: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    fsync: bool = False
    journal_stored: bool = True
    close_timeout: float = 2.0
    ship: bool = True

    def __post_init__(self) -> None:
        if self.on_full not in ("drop", "block"):
            raise ValueError("on_full: expected 'drop' or 'block'")
        if min(self.max_outbox_bytes, self.pack_bytes, self.ship_concurrency) < 1:
            raise ValueError("max_outbox_bytes, pack_bytes and ship_concurrency must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("expected 0 < backoff_initial <= backoff_max")
        if min(self.block_timeout, self.pack_age, self.ship_interval, self.close_timeout) < 0:
            raise ValueError("timeouts and intervals must not be negative")


@dataclass(slots=True)
class OutboxStats:
    """What the outbox did. ``dropped`` and ``lost`` count by reason; ``errors`` by exception type."""

    accepted: int = 0
    stored: int = 0
    packs_shipped: int = 0
    ship_failures: int = 0
    audit_errors: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _frame(payload: bytes) -> bytes:
    return _REC.pack(_MAGIC, len(payload)) + payload


def read_pack(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, envelope bytes)`` for every intact record of a pack; stops at a torn tail."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + _REC.size <= len(data):
        magic, n = _REC.unpack_from(data, pos)
        start = pos + _REC.size
        payload = data[start : start + n]
        if magic != _MAGIC or len(payload) != n:
            return
        yield pos, payload
        pos = start + n


def _cid_of(payload: bytes) -> str:
    return validate_correlation_id(envelope_from_record(payload).correlation_id)


class BodyOutbox:
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
            record = _frame(self.store.seal_record(cid, body, meta=meta))
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
        name = f"{os.getpid()}-{time.time_ns():020d}-{os.urandom(3).hex()}{_OPEN}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self._pack, self._pack_size, self._pack_born = fd, path, 0, time.monotonic()

    def _seal_locked(self) -> None:
        if self._fd < 0 or self._pack is None:
            return
        path = self._pack
        os.rename(path, path.with_suffix(_SEALED))
        os.close(self._fd)
        self._fd, self._pack, self._pack_size = -1, None, 0
        self._wake.set()

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

    # -- the shipper ------------------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        while not self._closed.is_set():
            self._refresh_key()
            with self._lock:
                if self._fd >= 0 and self._pack_size and time.monotonic() - self._pack_born >= cfg.pack_age:
                    self._seal_locked()
            try:
                ok = self.ship_once() if cfg.ship else True
            except Exception as exc:  # the shipper must survive anything
                self._note(exc)
                ok = False
            if ok:
                self._backoff = cfg.backoff_initial
                delay = cfg.ship_interval
            else:
                delay = self._backoff
                self._backoff = min(cfg.backoff_max, self._backoff * 2)
            self._wake.wait(delay)
            self._wake.clear()

    def _refresh_key(self) -> None:
        refresh = getattr(self.store.wrapper, "refresh", None)
        if refresh is not None:
            refresh()

    def ship_once(self) -> bool:
        """Deliver every sealed pack (and packs orphaned by dead processes), oldest first, on this thread.

        Returns False at the first pack that could not be fully delivered (it stays for the next try).
        """
        for path in sorted(self._pack_paths(include_open=False), key=lambda p: p.name.split("-", 1)[1]):
            if not self._ship_pack(path):
                with self._lock:
                    self.stats.ship_failures += 1
                return False
        return True

    def _pack_paths(self, *, include_open: bool) -> Iterator[Path]:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if entry.name.endswith(_SEALED):
                    yield Path(entry.path)
                elif entry.name.endswith(_OPEN):
                    if include_open:
                        yield Path(entry.path)
                    elif entry.path != str(self._pack) and self._orphaned(entry.path):
                        sealed = Path(entry.path).with_suffix(_SEALED)
                        with contextlib.suppress(FileNotFoundError):
                            os.rename(entry.path, sealed)
                            yield sealed

    @staticmethod
    def _orphaned(path: str) -> bool:
        """True when no live process holds the pack's lock (its writer died)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def _ship_pack(self, path: Path) -> bool:
        try:
            records = list(read_pack(path))
        except FileNotFoundError:
            return True  # another process sharing the outbox shipped it
        done = self._progress.setdefault(path.name, set())
        todo = [(off, payload) for off, payload in records if off not in done]
        if todo and self._failing:
            # After a failure, one envelope probes the store before the pack goes out in parallel: a
            # store that is still down costs one attempt per backoff period, not one per body.
            off, payload = todo.pop(0)
            if not self._deliver(payload):
                return False
            done.add(off)
            self._failing = False
        abort = threading.Event()

        def deliver(payload: bytes) -> bool:
            if abort.is_set():
                return False
            ok = self._deliver(payload)
            if not ok:
                abort.set()
            return ok

        if todo:
            workers = min(self.config.ship_concurrency, len(todo))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auditlog-ship") as pool:
                for off, outcome in zip(
                    (o for o, _ in todo), pool.map(deliver, (p for _, p in todo)), strict=True
                ):
                    if outcome:
                        done.add(off)
        if abort.is_set():
            self._failing = True
            return False
        size = 0
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
        self._progress.pop(path.name, None)
        with self._space:
            self._bytes = max(0, self._bytes - size)
            self.stats.packs_shipped += 1
            self._space.notify_all()
        return True

    def _deliver(self, payload: bytes) -> bool:
        """Deliver one envelope. True when it is resolved (stored, or lost on the record)."""
        try:
            env = envelope_from_record(payload)
            cid = validate_correlation_id(env.correlation_id)
        except Exception as exc:
            self._note(exc)
            self._lost(None, "unreadable")
            return True
        try:
            self.store.put_envelope(env)
        except _RETRYABLE as exc:
            self._note(exc)
            return False
        except BodyExists:
            self._lost(cid, "conflict")
            return True
        except BodyStoreError as exc:
            self._note(exc)
            self._lost(cid, "store_refused")
            return True
        except Exception as exc:  # an unexpected failure: retry the pack later
            self._note(exc)
            return False
        with self._lock:
            self.stats.stored += 1
        if self.config.journal_stored:
            self._journal({"kind": "body.stored", "correlation_id": cid, "store": self.store.backend.kind})
        return True

    # -- accounting -------------------------------------------------------------------------------

    def _scan_bytes(self) -> int:
        total = 0
        for path in self._pack_paths(include_open=True):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

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

    def _lost(self, cid: str | None, reason: str) -> None:
        with self._lock:
            self.stats.lost[reason] = self.stats.lost.get(reason, 0) + 1
        event: dict[str, Any] = {"kind": "body.lost", "reason": reason}
        if cid is not None:
            event["correlation_id"] = cid
        self._journal(event)

    def _journal(self, event: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            self._audit(event)
        except Exception:
            with self._lock:
                self.stats.audit_errors += 1

    def _note(self, exc: BaseException) -> None:
        name = type(exc).__name__
        with self._lock:
            first = name not in self.stats.errors
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            self.stats.last_error = str(exc) if isinstance(exc, BodyStoreError) else name
        if first:
            log.warning("body outbox: %s (counting further errors of this kind)", name)
