"""``BodyWriter``: takes bodies off the request path and stores them in the background.

``put`` enqueues and returns at once (it never raises into the caller). One worker thread seals each body
(encrypts it: from here on only ciphertext exists) and stores it. When the store fails (unreachable,
credentials refused) the envelope goes to the *spool*, a local directory of already-encrypted files, and
the writer stays in spool mode: new bodies are spooled directly and the spool is replayed, oldest first,
with exponential backoff until a delivery succeeds. A writer started over an existing spool replays it, so
nothing spooled is lost across a crash or a SIGKILL. Spool files are written to a temporary name and
renamed, so a kill mid-write leaves no half envelope behind.

When the queue is full the ``on_full`` policy applies: ``"drop"`` counts the body as dropped at once,
``"block"`` applies back-pressure for up to ``block_timeout`` seconds, then drops and counts.

Counters are in :attr:`BodyWriter.stats`; each kind of failure is logged once on the
``store.bodies`` logger (error types and counts only).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from store.bodies._crypto import Envelope
from store.bodies._ids import validate_correlation_id
from store.bodies._model import BodyMeta
from store.bodies._store import EncryptedBodyStore
from store.bodies.exceptions import (
    AccessDenied,
    BodyExists,
    BodyIntegrityError,
    BodyStoreError,
    BodyStoreUnavailable,
    InvalidCorrelationId,
)

__all__ = ["BodyWriter", "WriterConfig", "WriterStats"]

log = logging.getLogger("store.bodies")
_SUFFIX = ".env"
_TMP = ".tmp-"
_RETRYABLE = (BodyStoreUnavailable, AccessDenied)
_FIRST_PURGE_DELAY = 60.0  # seconds from start to the worker's first retention run (interval permitting)


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterConfig:
    """Settings of a :class:`BodyWriter`.

    Args:
        spool_dir: directory for envelopes the store could not take; None drops (and counts) them.
        max_queue: bodies waiting for the worker.
        max_queue_bytes: body bytes waiting for the worker; a body that would pass it is dropped (and
            counted) at once, whatever ``on_full`` says.
        on_full: ``"drop"`` (count and drop at once) or ``"block"`` (back-pressure up to ``block_timeout``).
            ``"block"`` blocks the calling thread: in an async server that is the event loop, so use it
            only with threaded servers (WSGI) or a short timeout.
        block_timeout: seconds ``put`` may wait when ``on_full="block"``.
        backoff_initial, backoff_max: the replay delay after a failed delivery doubles between these.
        replay_batch: spooled envelopes delivered per replay round before new bodies are taken again.
        fsync: sync spool files and the spool directory before counting a body as spooled.
        nice: niceness added to the worker thread (Linux; 0 leaves it alone). A positive value makes
            sealing and storing yield the CPU to the threads serving requests, at the price of more
            drops when the queue fills under load.
        purge_interval: seconds between the worker's own :meth:`~store.bodies.EncryptedBodyStore.
            purge_expired` runs (the first a minute after the writer starts, or sooner if the interval is
            shorter), so bodies past their retention go without a cron job; each run is journaled as
            ``body.purged`` (the store needs its audit sink). None: only explicit purges.
    """

    spool_dir: str | os.PathLike[str] | None = None
    max_queue: int = 1000
    max_queue_bytes: int = 64 << 20
    on_full: Literal["drop", "block"] = "drop"
    block_timeout: float = 0.5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    replay_batch: int = 64
    fsync: bool = False
    nice: int = 0
    purge_interval: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.on_full not in ("drop", "block"):
            raise ValueError("on_full: expected 'drop' or 'block'")
        if self.max_queue < 1 or self.replay_batch < 1 or self.max_queue_bytes < 1:
            raise ValueError("max_queue, max_queue_bytes and replay_batch must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max or self.block_timeout < 0:
            raise ValueError("expected 0 < backoff_initial <= backoff_max and block_timeout >= 0")
        if self.purge_interval is not None and not (
            isinstance(self.purge_interval, int | float) and 0 < self.purge_interval < float("inf")
        ):
            raise ValueError("purge_interval: expected a positive number of seconds, or None")


@dataclass(slots=True)
class WriterStats:
    """What the writer did. ``errors`` counts failures by exception type."""

    accepted: int = 0
    stored: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped_full: int = 0
    dropped_invalid: int = 0
    dropped_error: int = 0
    conflicts: int = 0
    quarantined: int = 0
    purged: int = 0
    purge_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class _Item:
    cid: str
    body: bytes
    meta: BodyMeta


class BodyWriter:
    """Background writer in front of an :class:`EncryptedBodyStore` (see the module docstring).

    It satisfies :class:`~store.bodies.PutBody`, so the middleware can take a store or a writer.
    """

    def __init__(self, store: EncryptedBodyStore, *, config: WriterConfig | None = None) -> None:
        self.store = store
        self.config = cfg = config or WriterConfig()
        self.stats = WriterStats()
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=cfg.max_queue)
        self._lock = threading.Lock()  # counters and the in-flight count; never held across I/O
        self._replay_lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._queued_bytes = 0
        self._seen: set[str] = set()
        self._spool = Path(cfg.spool_dir) if cfg.spool_dir is not None else None
        self._degraded = False
        self._backoff = cfg.backoff_initial
        self._next_replay = 0.0
        self._closed = threading.Event()
        interval = cfg.purge_interval
        self._next_purge = time.monotonic() + min(_FIRST_PURGE_DELAY, interval) if interval else math.inf
        if self._spool is not None:
            self._spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            for tmp in self._spool.glob(f"{_TMP}*"):  # half-written by a killed writer: never counted
                tmp.unlink(missing_ok=True)
            self._degraded = self.pending_spool() > 0
        self._thread = threading.Thread(target=self._run, name="auditlog-body-writer", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------------------

    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Enqueue a body. Never raises: refusals and drops are counted in :attr:`stats`."""
        try:
            validate_correlation_id(correlation_id)
            if not isinstance(body, bytes | bytearray | memoryview) or not isinstance(meta, BodyMeta):
                raise TypeError("put takes bytes and a BodyMeta")
            item = _Item(correlation_id, bytes(body), meta)
        except (InvalidCorrelationId, TypeError) as exc:
            self._count("dropped_invalid", type(exc).__name__)
            return
        size = len(item.body)
        with self._lock:
            if self._queued_bytes + size > self.config.max_queue_bytes:
                self.stats.dropped_full += 1
                self._note_locked("QueueFull", None)
                return
            self._queued_bytes += size
            self._busy += 1
        try:
            if self._closed.is_set():
                raise queue.Full
            if self.config.on_full == "block":
                self._queue.put(item, timeout=self.config.block_timeout)
            else:
                self._queue.put_nowait(item)
        except queue.Full:
            self._done(size)
            self._count("dropped_full", "QueueFull")
            return
        with self._lock:
            self.stats.accepted += 1

    # -- control ----------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted body is stored or spooled. True if that happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def replay(self) -> int:
        """Deliver the spool now, oldest first, on the caller's thread. Returns how many were delivered.

        Stops at the first delivery failure (the background loop keeps retrying with backoff).
        """
        return self._replay(limit=None)

    def pending_spool(self) -> int:
        """Envelopes waiting in the spool."""
        if self._spool is None:
            return 0
        return sum(
            1 for p in self._spool.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith(_TMP)
        )

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking bodies, store or spool what is queued, stop the worker. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def __enter__(self) -> BodyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        if self.config.nice and hasattr(os, "setpriority"):
            # Linux schedules threads individually: a nicer worker yields the CPU to request handlers.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.nice)
        while True:
            due = self._next_purge
            if self._degraded:
                due = min(due, self._next_replay)
            wait = None if due == math.inf else max(0.0, due - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            else:
                if item is None:
                    if self._queue.empty():
                        return
                    continue
                try:
                    self._handle(item)
                except Exception as exc:  # the worker must survive anything
                    msg = str(exc) if isinstance(exc, BodyStoreError) else None
                    self._count("dropped_error", type(exc).__name__, msg)
                finally:
                    self._done(len(item.body))
            if self._degraded and time.monotonic() >= self._next_replay:
                self._replay(limit=self.config.replay_batch)
            if time.monotonic() >= self._next_purge:
                self._purge()

    def _purge(self) -> None:
        """One retention run of the store, journaled by it; failures are counted (the next run retries)."""
        interval = self.config.purge_interval
        self._next_purge = time.monotonic() + interval if interval else math.inf
        try:
            report = self.store.purge_expired(actor="retention")
        except Exception as exc:  # the worker must survive anything, a missing audit sink included
            msg = str(exc) if isinstance(exc, BodyStoreError) else None
            self._count("purge_errors", f"purge:{type(exc).__name__}", msg)
            return
        with self._lock:
            self.stats.purged += report.purged

    def _handle(self, item: _Item) -> None:
        if self._degraded:  # spooling: seal locally, replay re-wraps for the preferred wrapper (KMS)
            self._to_spool(self.store.seal(item.cid, item.body, meta=item.meta, local=True))
            return
        try:
            env = self.store.seal(item.cid, item.body, meta=item.meta)
        except _RETRYABLE as exc:  # the preferred key wrapper (KMS) is unreachable
            self._note(exc)
            self._to_spool(self.store.seal(item.cid, item.body, meta=item.meta, local=True))
            self._degrade()
            return
        try:
            self.store.put_envelope(env)
        except _RETRYABLE as exc:
            self._note(exc)
            self._to_spool(env)
            self._degrade()
        except BodyExists:
            self._count("conflicts", "BodyExists")
        else:
            with self._lock:
                self.stats.stored += 1

    def _to_spool(self, env: Envelope) -> None:
        if self._spool is None:
            self._count("dropped_error", "NoSpool")
            return
        name = f"{time.time_ns():020d}-{os.getpid()}-{env.correlation_id}{_SUFFIX}"
        tmp = self._spool / f"{_TMP}{name}"
        data = env.to_bytes()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.config.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._spool / name)
        if self.config.fsync:
            dfd = os.open(self._spool, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        with self._lock:
            self.stats.spooled += 1

    def _replay(self, *, limit: int | None) -> int:
        """Deliver spooled envelopes, oldest first. Leaves spool mode when the spool empties."""
        if self._spool is None:
            self._degraded = False
            return 0
        with self._replay_lock:
            files = sorted(
                p for p in self._spool.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith(_TMP)
            )
            delivered = 0
            for path in files[:limit]:
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue  # another writer sharing the spool delivered it
                try:
                    cid = path.name[: -len(_SUFFIX)].split("-", 2)[2]
                    self.store.put_envelope(Envelope.from_bytes(raw, correlation_id=cid))
                except (BodyIntegrityError, InvalidCorrelationId, BodyExists, IndexError) as exc:
                    self._quarantine(path, exc)
                    continue
                except (BodyStoreError, OSError) as exc:
                    self._note(exc)
                    self._next_replay = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, self.config.backoff_max)
                    self._degraded = True
                    return delivered
                path.unlink(missing_ok=True)
                delivered += 1
                with self._lock:
                    self.stats.replayed += 1
            if limit is None or len(files) <= limit:
                self._degraded = False
                self._backoff = self.config.backoff_initial
            return delivered

    def _quarantine(self, path: Path, exc: Exception) -> None:
        """Move an envelope the store will never take aside (kept, counted, never retried)."""
        if self._spool is None:  # pragma: no cover - only called while replaying a spool
            return
        dest = self._spool / "quarantine"
        dest.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.replace(path, dest / path.name)
        with self._lock:
            self.stats.quarantined += 1
            self.stats.conflicts += isinstance(exc, BodyExists)
        self._note(exc)

    def _degrade(self) -> None:
        with self._lock:
            if not self._degraded:
                self._degraded = True
                self._next_replay = time.monotonic() + self._backoff

    def _done(self, size: int) -> None:
        with self._idle:
            self._busy -= 1
            self._queued_bytes -= size
            if not self._busy:
                self._idle.notify_all()

    def _count(self, counter: str, kind: str, message: str | None = None) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            self._note_locked(kind, message)

    def _note(self, exc: Exception) -> None:
        msg = str(exc) if isinstance(exc, BodyStoreError) else exc.__class__.__name__
        with self._lock:
            self._note_locked(type(exc).__name__, msg)

    def _note_locked(self, kind: str, message: str | None) -> None:
        errors = self.stats.errors
        errors[kind] = errors.get(kind, 0) + 1
        if message is not None:
            self.stats.last_error = f"{kind}: {message}"
        if kind not in self._seen:
            self._seen.add(kind)
            detail = f" ({message})" if message and message != kind else ""
            log.warning("body writer: %s%s; counting further cases in writer.stats", kind, detail)
