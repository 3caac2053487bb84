"""The shipper of a :class:`~store.bodies.BodyOutbox`: it seals packs and delivers them to the store.

:class:`PackShipper` is the part of the outbox that runs off the request path: its thread seals packs by
age and refreshes session keys; :meth:`PackShipper.ship_once` delivers every envelope of each sealed pack
(and of packs orphaned by dead processes), oldest first, in parallel, and deletes a pack only when every
envelope in it is resolved: ``stored``, or ``body.lost`` on the record (``store_refused``, ``conflict``,
``unreadable``). A failed delivery leaves the pack for the next try; after one, a single envelope probes
the store before the pack goes out in parallel again. It also keeps the accounting both paths share
(losses, errors, the journal of outbox events).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from store.bodies._crypto import envelope_from_record
from store.bodies._ids import validate_correlation_id
from store.bodies._outbox_types import OutboxConfig, OutboxStats
from store.bodies._pack import OPEN, SEALED, orphaned, read_pack
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import (
    AccessDenied,
    BodyExists,
    BodyStoreError,
    BodyStoreUnavailable,
)

__all__ = ["PackShipper"]

log = logging.getLogger("store.bodies")
_RETRYABLE = (BodyStoreUnavailable, AccessDenied)


class PackShipper:
    """Sealing and delivery of an outbox's packs; :class:`~store.bodies.BodyOutbox` sets the state up."""

    store: EncryptedBodyStore
    directory: Path
    config: OutboxConfig
    stats: OutboxStats
    _audit: AuditSink | None
    _lock: threading.Lock
    _space: threading.Condition
    _fd: int
    _pack: Path | None
    _pack_size: int
    _pack_born: float
    _bytes: int
    _closed: threading.Event
    _wake: threading.Event
    _progress: dict[str, set[int]]
    _backoff: float
    _failing: bool

    def _seal_locked(self) -> None:
        if self._fd < 0 or self._pack is None:
            return
        path = self._pack
        os.rename(path, path.with_suffix(SEALED))
        os.close(self._fd)
        self._fd, self._pack, self._pack_size = -1, None, 0
        self._wake.set()

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
                if entry.name.endswith(SEALED):
                    yield Path(entry.path)
                elif entry.name.endswith(OPEN):
                    if include_open:
                        yield Path(entry.path)
                    elif entry.path != str(self._pack) and orphaned(entry.path):
                        sealed = Path(entry.path).with_suffix(SEALED)
                        with contextlib.suppress(FileNotFoundError):
                            os.rename(entry.path, sealed)
                            yield sealed

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
