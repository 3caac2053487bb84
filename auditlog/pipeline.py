"""``configure()``: one call wires structlog, stdlib logging and the journal.

Every log line, from structlog or from stdlib ``logging`` (uvicorn's loggers included), runs through the
same processors before anything is written::

    contextvars -> level -> logger name, timestamp -> correlation ids -> safe exception
        -> fingerprints -> shapes (policy) -> journal (keyed hash chain) [-> console, redacted]

Audit events built by the middleware go through :meth:`AuditHandle.emit`, which stamps them and appends
them to the same journal. A journal that cannot take a record never raises into the host application:
the drop is counted (:attr:`AuditHandle.stats`) and reported on stderr, once per kind of failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from auditlog.policy import DEFAULT_POLICY, Policy
from auditlog.policy import load as load_policy
from processors import (
    ExceptionShaper,
    FieldPolicy,
    Fingerprinter,
    Scanner,
    SecretScanner,
    ShapeRecorder,
    add_correlation_ids,
)
from store.exceptions import JournalError, KeyError_
from store.journal import JournalConfig, JournalWriter
from store.keys import KeyRing, MasterKey, key_from_env

__all__ = ["AuditHandle", "Stats", "configure", "current_handle"]

_lock = threading.Lock()
_current: AuditHandle | None = None


@dataclass(slots=True)
class Stats:
    """Counters of what the pipeline wrote and what it could not write (never silently lost)."""

    written: int = 0
    dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "dropped": self.dropped, "drop_reasons": dict(self.drop_reasons)}


class _Reporter:
    """Reports each kind of failure once on stderr, with counts, never with values."""

    __slots__ = ("_seen", "stats", "stream")

    def __init__(self, stats: Stats, stream: IO[str] | None = None) -> None:
        self.stats = stats
        self.stream = stream
        self._seen: set[str] = set()

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


class JournalSink:
    """The last processor: append the redacted event to the journal, return the console line (or "")."""

    __slots__ = ("_console", "_journal", "_reporter", "_stats")

    def __init__(self, journal: JournalWriter, reporter: _Reporter, *, console: bool) -> None:
        self._journal = journal
        self._reporter = reporter
        self._stats = reporter.stats
        self._console = console

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        if "seq" in event_dict or "mac" in event_dict:
            # The journal owns these two names; a caller's field of that name is kept under another.
            for k in ("seq", "mac"):
                if k in event_dict:
                    event_dict[f"field_{k}"] = event_dict.pop(k)
        try:
            if type(event_dict) is dict:  # the recorder's new dict: the journal may add `seq` in place
                self._journal.append_owned(event_dict)
            else:
                self._journal.append(event_dict)
            self._stats.written += 1
        except JournalError as exc:
            self._reporter.drop(type(exc.__cause__ or exc).__name__)
        except Exception as exc:
            self._reporter.drop(type(exc).__name__)
        if self._console:
            return orjson.dumps(event_dict, default=_unserializable).decode()
        return ""


def _unserializable(v: object) -> str:
    return f"<unshapeable:{type(v).__name__[:64]}>"


class Guarded:
    """Run a processor chain so that nothing in it can raise into the host application.

    ``DropEvent`` (a policy's level ``none``) passes through; any other exception drops the event, which
    is counted and reported like a journal failure: a bug or a hostile value costs one event, never a
    request.
    """

    __slots__ = ("_chain", "_reporter")

    def __init__(self, chain: list[Processor], reporter: _Reporter) -> None:
        self._chain = tuple(chain)
        self._reporter = reporter

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        ed: Any = event_dict
        try:
            for proc in self._chain:
                ed = proc(logger, method_name, ed)
        except structlog.DropEvent:
            raise
        except Exception as exc:
            self._reporter.drop(f"processor:{type(exc).__name__}")
            raise structlog.DropEvent from None
        return ed


def _level_method(name: str) -> Callable[..., Any]:
    """A log method that builds the event and runs the processors itself: one call, no re-packing."""

    def meth(self: Any, event: Any = None, *args: Any, **kw: Any) -> Any:
        if args:  # positional arguments interpolate into the message, as in structlog
            event = event % (args[0] if len(args) == 1 and type(args[0]) is dict and args[0] else args)
        context = self._context
        ed: Any = {**context, **kw} if context else kw  # kw is this call's own new dict
        if event is not None:
            ed["event"] = event
        logger = self._logger
        try:
            for proc in self._processors:
                ed = proc(logger, name, ed)
        except structlog.DropEvent:
            return None
        if isinstance(ed, str | bytes | bytearray):
            return getattr(logger, name)(ed)
        if isinstance(ed, tuple):  # another chain configured over this wrapper: structlog's conventions
            return getattr(logger, name)(*ed[0], **ed[1])
        if isinstance(ed, dict):
            return getattr(logger, name)(**ed)
        raise ValueError("the last processor must return a str, bytes, a tuple of (args, kwargs) or a dict")

    meth.__name__ = name
    return meth


class AuditBoundLogger(structlog.make_filtering_bound_logger(logging.DEBUG)):  # type: ignore[misc]
    """structlog's bound logger with the level methods inlined (``log``, async methods: structlog's own)."""

    debug = _level_method("debug")
    info = msg = _level_method("info")
    warning = warn = _level_method("warning")
    error = err = _level_method("error")
    critical = fatal = _level_method("critical")


class _JournalLogger:
    """A structlog logger that prints the redacted console line (if any) and does nothing else."""

    __slots__ = ("_stream", "name")

    def __init__(self, name: str | None, stream: IO[str] | None) -> None:
        self.name = name
        self._stream = stream

    def msg(self, message: str) -> None:
        if message and self._stream is not None:
            self._stream.write(message + "\n")

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class _LoggerFactory:
    __slots__ = ("_stream",)

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _JournalLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _JournalLogger(name, self._stream)


def add_logger_name_and_timestamp(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Add ``logger`` (the structlog logger's name, or the stdlib record's), then ``timestamp``: UTC,
    ISO 8601 with microseconds (``...00.000123Z``).

    One processor for two, on every event; the timestamp replaces a caller's field of that name.
    """
    if "logger" not in event_dict:
        name = getattr(logger, "name", None)
        if name:
            event_dict["logger"] = name
    event_dict["timestamp"] = _now_iso()
    return event_dict


_LEVELS = {"warn": "warning", "exception": "error"}  # structlog's map_method_name


class EventStamper:
    """The structlog path's first processor: seven steps in one call, each as its own processor does it.

    structlog's ``merge_contextvars`` (bound context fills in what the call did not pass) and
    ``add_log_level``, then :func:`add_logger_name_and_timestamp`, :func:`processors.add_correlation_ids`,
    the exception shaper (only when the event carries ``exc_info`` or ``exception``) and the policy's
    fingerprints (only when the matching rule names fields).
    """

    __slots__ = ("_exceptions", "_fingerprints", "_resolve", "_vars")

    def __init__(self, exceptions: ExceptionShaper, fingerprints: PolicyFingerprints) -> None:
        self._exceptions = exceptions
        self._fingerprints = fingerprints
        self._resolve = fingerprints._resolve
        # structlog's registry of bound context variables (name -> ContextVar); when a structlog release
        # moves it, merge_contextvars runs instead.
        self._vars: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        registry = self._vars
        if registry is None:
            event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        elif registry:
            prefix = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)
            for var_name, var in tuple(registry.items()):
                value = var.get(Ellipsis)
                if value is not Ellipsis:
                    event_dict.setdefault(var_name[prefix:], value)
        event_dict["level"] = _LEVELS.get(method_name, method_name)
        event_dict = add_logger_name_and_timestamp(logger, method_name, event_dict)
        event_dict = add_correlation_ids(logger, method_name, event_dict)
        if "exc_info" in event_dict or "exception" in event_dict:
            event_dict = self._exceptions(logger, method_name, event_dict)
        if self._resolve(event_dict).fingerprint:
            event_dict = self._fingerprints(logger, method_name, event_dict)
        return event_dict


class PolicyFingerprints:
    """Fingerprint the fields the matching rule names (``fingerprint = [...]``) and drop their values."""

    __slots__ = ("_fp", "_resolve")

    def __init__(self, fingerprinter: Fingerprinter, resolve: Callable[[Mapping[str, Any]], FieldPolicy]):
        self._fp = fingerprinter
        self._resolve = resolve

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        names = self._resolve(event_dict).fingerprint
        if names:
            hit = names.intersection(event_dict)
            if hit:
                fps = event_dict.get("fp")
                # A caller's own `fp` argument is kept only in a fresh dict; the recorder vets it.
                fps = dict(fps) if type(fps) is dict else {}
                event_dict["fp"] = fps
                for k in hit:
                    fps[k] = self._fp.fingerprint(event_dict.pop(k))
        return event_dict


ACCESS_LOGGER = "uvicorn.access"
# Access events are built field by field from redacted parts (auditlog.stdlib); their values may stay,
# after the scan like any allowlisted value. A policy rule for the logger replaces this.
ACCESS_FIELD_POLICY = FieldPolicy(
    level="values",
    allow=frozenset({"method", "target", "status", "http_version"}),
    rule_id="builtin:uvicorn.access",
)


class _Resolver:
    """Maps an event to the field policy of the rule for its logger; cached per logger name."""

    __slots__ = ("_cache", "_policy")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._cache: dict[str | None, FieldPolicy] = {}

    def __call__(self, event_dict: Mapping[str, Any]) -> FieldPolicy:
        name = event_dict.get("logger")
        try:
            return self._cache[name]
        except (KeyError, TypeError):
            pass
        rule = self._policy.for_logger(name if isinstance(name, str) else None)
        fp = rule.field_policy
        if name == ACCESS_LOGGER and rule is self._policy.defaults:
            fp = ACCESS_FIELD_POLICY
        if isinstance(name, str) and len(self._cache) < 4096:
            self._cache[name] = fp
        return fp


class AuditHandle:
    """What :func:`configure` returns: the live pipeline (``flush``, ``shutdown``, ``emit``, ``stats``)."""

    def __init__(
        self,
        *,
        journal: JournalWriter,
        policy: Policy,
        keys: KeyRing,
        scanner: Scanner,
        fingerprinter: Fingerprinter,
        processors: list[Processor],
        reporter: _Reporter,
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
            event["ts"] = _now_iso()
        if "event_id" not in event:
            event["event_id"] = os.urandom(16).hex()  # 128 random bits, as uuid4 but a quarter of the cost
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
            self._reporter.drop(type(exc.__cause__ or exc).__name__)
            return False
        self.stats.written += 1
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


def _py_now_iso() -> str:
    """The current UTC time, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, from one clock read."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return "%s%06dZ" % (cached[1], us)  # noqa: UP031  (the fastest formatting here)


def _compiled_now_iso() -> Callable[[], str] | None:
    """The same timestamp from the compiled module (a tenth of the cost), when it was built."""
    if os.environ.get("AUDITLOG_PURE_PYTHON"):
        return None
    try:
        from processors._cshape import utc_timestamp
    except ImportError:
        return None
    return utc_timestamp


_now_iso: Callable[[], str] = _compiled_now_iso() or _py_now_iso


def _keys(key: KeyRing | MasterKey | bytes | str | os.PathLike[str] | None) -> KeyRing:
    if isinstance(key, KeyRing):
        return key
    if isinstance(key, MasterKey):
        return KeyRing(key)
    if isinstance(key, bytes):
        return KeyRing(MasterKey(key))
    if isinstance(key, str | os.PathLike):
        return KeyRing.from_file(key)
    ring = key_from_env()
    if ring is None:
        raise KeyError_(
            "no audit key: set AUDITLOG_KEY (base64, 32 bytes) or AUDITLOG_KEY_FILE, or pass key= "
            "(create a key file with `auditlog keygen`)"
        )
    return ring


def current_handle() -> AuditHandle | None:
    """The handle of the active :func:`configure` call, if any (the middleware uses it by default)."""
    return _current


def configure(
    *,
    journal_dir: str | os.PathLike[str],
    policy: Policy | str | os.PathLike[str] | None = None,
    key: KeyRing | MasterKey | bytes | str | os.PathLike[str] | None = None,
    scanner: Scanner | None = None,
    journal_config: JournalConfig | None = None,
    console: IO[str] | None = None,
    stdlib: bool = True,
    stdlib_level: int = logging.INFO,
    capture_loggers: tuple[str, ...] = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastmcp"),
    exclusive: bool = True,
) -> AuditHandle:
    """Wire structlog, stdlib logging and the journal in one call.

    Args:
        journal_dir: directory of the chained journal segments (created if missing).
        policy: a :class:`~auditlog.policy.Policy`, a path to a policy TOML file, or None for the safe
            default (level ``shape``, nothing allowlisted).
        key: the master key (a KeyRing, MasterKey, 32 raw bytes, or a key file path); None reads
            ``AUDITLOG_KEY`` / ``AUDITLOG_KEY_FILE``.
        scanner: the secret/PII scanner for messages and allowlisted values (default: SecretScanner).
        journal_config: rotation, fsync and retention settings of the journal.
        console: a stream that also receives each *redacted* line (e.g. ``sys.stderr``), or None.
        stdlib: route stdlib ``logging`` (root logger and ``capture_loggers``) through the pipeline.
        stdlib_level: the level set on the root logger when ``stdlib`` is on.
        capture_loggers: loggers that do not propagate to root by default (uvicorn's, fastmcp's) and
            get the handler directly.
        exclusive: detach other handlers from the root logger and ``capture_loggers`` while configured
            (they would print raw values); ``shutdown()`` restores them.

    Returns:
        An :class:`AuditHandle`. Calling ``configure`` again shuts the previous handle down first.

    Raises:
        KeyError_: no key was given and none is in the environment.
        PolicyError: the policy file is malformed.
        JournalError: the journal directory cannot be opened.
    """
    global _current
    with _lock:
        previous = _current
    if previous is not None:
        previous.shutdown()

    pol = DEFAULT_POLICY if policy is None else policy if isinstance(policy, Policy) else load_policy(policy)
    ring = _keys(key)
    scan = scanner if scanner is not None else SecretScanner()
    jconf = journal_config or JournalConfig(retention=pol.defaults.journal_retention)
    journal = JournalWriter(Path(journal_dir), keys=ring, config=jconf)
    reporter = _Reporter(Stats())
    fingerprinter = Fingerprinter(key=ring.active.derive("fingerprint"), key_id=ring.active.key_id, fields=())
    resolver = _Resolver(pol)
    sink = JournalSink(journal, reporter, console=console is not None)
    exceptions = ExceptionShaper(scan)
    fingerprints = PolicyFingerprints(fingerprinter, resolver)
    recorder = ShapeRecorder(policy=resolver, scanner=scan, render=True)  # the sink serializes with orjson
    shared: list[Processor] = [
        add_logger_name_and_timestamp,
        add_correlation_ids,
        exceptions,
        fingerprints,
        recorder,
    ]
    # structlog's contextvars and level, then `shared` up to the recorder, in one call
    chain: list[Processor] = [EventStamper(exceptions, fingerprints), recorder, sink]
    structlog.configure(
        processors=[Guarded(chain, reporter)],
        logger_factory=_LoggerFactory(console),
        wrapper_class=AuditBoundLogger,
        cache_logger_on_first_use=True,
    )
    handle = AuditHandle(
        journal=journal,
        policy=pol,
        keys=ring,
        scanner=scan,
        fingerprinter=fingerprinter,
        processors=chain,
        reporter=reporter,
    )
    if stdlib:
        from auditlog.stdlib import install

        install(
            handle,
            chain=Guarded([*shared, sink], reporter),
            console=console,
            level=stdlib_level,
            loggers=capture_loggers,
            exclusive=exclusive,
        )
    with _lock:
        _current = handle
    return handle
