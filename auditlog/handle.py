"""The live pipeline's handle: :class:`AuditHandle` (``emit``, ``flush``, ``shutdown``, ``stats``).

:func:`auditlog.configure` builds one and makes it current; the middleware and investigations find it with
:func:`current_handle`. Audit events built by the middleware go through :meth:`AuditHandle.emit`, which stamps
them and appends them to the journal. A journal that cannot take a record never raises into the host
application: the drop is counted (:attr:`AuditHandle.stats`) and reported on stderr, once per kind of failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import IO, Any

import structlog
from structlog.typing import Processor

from auditlog.correlation import random_bytes24
from auditlog.policy import Policy
from processors import (
    Fingerprinter,
    Scanner,
)
from store.exceptions import JournalError
from store.keys import KeyRing
from store.trail import TrailWriter

__all__ = [
    "AuditHandle",
    "Reporter",
    "Stats",
    "current_handle",
    "now_iso",
    "set_current",
    "without_surrogates",
]


def _unencodable(exc: BaseException) -> bool:
    """Whether the journal refused a record because it could not serialize it (orjson's TypeError)."""
    return isinstance(exc, TypeError) or isinstance(exc.__cause__, TypeError)


def without_surrogates(value: Any, depth: int = 0) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, which orjson
    cannot write; pairs are joined. Dicts and lists are copied where needed; depth bounded (past 64
    levels the value is replaced by a marker)."""
    tp = type(value)
    if tp is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if depth > 64:
        return "<unshapeable:depth>"
    if tp is dict:
        return {without_surrogates(k, depth + 1): without_surrogates(v, depth + 1) for k, v in value.items()}
    if tp is list or tp is tuple:
        return [without_surrogates(v, depth + 1) for v in value]
    return value


_lock = threading.Lock()
_current: AuditHandle | None = None


@dataclass(slots=True)
class Stats:
    """Counters of what the pipeline wrote and what it could not write (never silently lost)."""

    written: int = 0
    dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    # Events written after a repair (a message that could not be formatted, a lone surrogate replaced)
    repaired: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "repaired": dict(self.repaired),
        }


class Reporter:
    """Reports each kind of failure once on stderr, with counts, never with values."""

    __slots__ = ("_seen", "stats", "stream")

    def __init__(self, stats: Stats, stream: IO[str] | None = None) -> None:
        self.stats = stats
        self.stream = stream
        self._seen: set[str] = set()

    def repaired(self, reason: str) -> None:
        """Count an event that was written after a repair (never its value)."""
        r = self.stats.repaired
        r[reason] = r.get(reason, 0) + 1

    def drop(self, reason: str) -> None:
        s = self.stats
        s.dropped += 1
        s.drop_reasons[reason] = s.drop_reasons.get(reason, 0) + 1
        if reason not in self._seen:
            self._seen.add(reason)
            with contextlib.suppress(Exception):  # reporting must never raise into the host
                print(
                    f"auditlog: audit event not written ({reason}); counting further drops in handle.stats",
                    file=self.stream or sys.stderr,
                )


class AuditHandle:
    """What :func:`configure` returns: the live pipeline (``flush``, ``shutdown``, ``emit``, ``stats``)."""

    def __init__(
        self,
        *,
        journal: TrailWriter,
        policy: Policy,
        keys: KeyRing,
        scanner: Scanner,
        fingerprinter: Fingerprinter,
        processors: list[Processor],
        reporter: Reporter,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self.keys = keys
        self.scanner = scanner
        self.fingerprinter = fingerprinter
        self.processors = processors
        self.stats = reporter.stats
        self._reporter = reporter
        self._handlers: list[tuple[logging.Logger, logging.Handler, int, bool, list[logging.Handler]]] = []
        self._closed = False

    def emit(self, event: MutableMapping[str, Any], *, owned: bool = False) -> bool:
        """Append an already-redacted audit event (built by the middleware) to the journal.

        Stamps ``ts`` and ``event_id`` (when missing) and the policy reference, in place. With
        ``owned=True`` the caller hands a dict over (the middleware's own, new events): it is journaled
        without a copy, ``seq`` is added to it and the policy reference is kept JSON; the caller must not
        use it afterwards. Returns False (and counts the drop) when the journal cannot take it; never
        raises.
        """
        if "ts" not in event:
            event["ts"] = now_iso()
        if "event_id" not in event:
            event["event_id"] = random_bytes24()[:16].hex()  # 128 random bits (buffered os.urandom)
        try:
            if owned and type(event) is dict:
                if "policy" not in event:
                    event["policy"] = self.policy.ref_json
                self.journal.append_owned(event)
            else:
                if "policy" not in event:
                    event["policy"] = self.policy.ref
                self.journal.append(event)
        except Exception as exc:
            if not _unencodable(exc) or not self._append_repaired(event, owned=owned):
                self._reporter.drop(type(exc.__cause__ or exc).__name__)
                return False
        self.stats.written += 1
        return True

    def _append_repaired(self, event: MutableMapping[str, Any], *, owned: bool) -> bool:
        """Append ``event`` with its lone surrogates replaced (U+FFFD); False if that fails too."""
        event.pop("seq", None)
        clean = without_surrogates(dict(event))
        try:
            self.journal.append_owned(clean) if owned and type(event) is dict else self.journal.append(clean)
        except Exception:
            return False
        self._reporter.repaired("surrogate")
        return True

    def flush(self) -> None:
        """Make everything written so far durable (fsync)."""
        try:
            self.journal.flush()
        except JournalError as exc:
            self._reporter.drop(f"flush:{type(exc.__cause__ or exc).__name__}")

    def shutdown(self) -> None:
        """Detach from logging, seal the active segment and close the journal. Idempotent."""
        global _current
        if self._closed:
            return
        self._closed = True
        for lg, handler, old_level, old_propagate, foreign in self._handlers:
            lg.removeHandler(handler)
            for h in foreign:
                lg.addHandler(h)
            lg.setLevel(old_level)
            lg.propagate = old_propagate
        self._handlers.clear()
        structlog.reset_defaults()
        try:
            self.journal.close()
        except JournalError as exc:
            self._reporter.drop(f"close:{type(exc.__cause__ or exc).__name__}")
        with _lock:
            if _current is self:
                _current = None

    def __enter__(self) -> AuditHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


_second: tuple[int, str] = (-1, "")  # the last whole second and its prefix (``...:SS.``), swapped as one


def py_now_iso() -> str:
    """The current UTC time, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, from one clock read."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return "%s%06dZ" % (cached[1], us)  # noqa: UP031  (the fastest formatting here)


def compiled_now_iso() -> Callable[[], str] | None:
    """The same timestamp from the compiled module (a tenth of the cost), when it was built."""
    if os.environ.get("AUDITLOG_PURE_PYTHON"):
        return None
    try:
        from processors._cshape import utc_timestamp
    except ImportError:
        return None
    return utc_timestamp


now_iso: Callable[[], str] = compiled_now_iso() or py_now_iso


def current_handle() -> AuditHandle | None:
    """The handle of the active :func:`configure` call, if any (the middleware uses it by default)."""
    return _current


def set_current(handle: AuditHandle) -> AuditHandle | None:
    """Make ``handle`` the current one; returns the one it replaces (for :func:`auditlog.configure`)."""
    global _current
    with _lock:
        previous, _current = _current, handle
    return previous
