"""The structlog processor chain that every log line and audit event runs through.

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
from collections.abc import Callable, Mapping
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from auditlog.handle import Reporter, current_handle, now_iso, without_surrogates
from auditlog.policy import Policy
from processors import (
    RESERVED_KEYS,
    ExceptionShaper,
    FieldPolicy,
    Fingerprinter,
    add_correlation_ids,
    shape_of,
)
from store.trail import TrailWriter

__all__ = [
    "AuditBoundLogger",
    "CallerReserved",
    "EventStamper",
    "Guarded",
    "JournalSink",
    "LoggerFactory",
    "PolicyFingerprints",
    "PolicyResolver",
    "add_logger_name_and_timestamp",
]


class JournalSink:
    """The last processor: append the redacted event to the journal, return the console line (or "")."""

    __slots__ = ("_console", "_journal", "_reporter", "_stats")

    def __init__(self, journal: TrailWriter, reporter: Reporter, *, console: bool) -> None:
        self._journal = journal
        self._reporter = reporter
        self._stats = reporter.stats
        self._console = console

    def _append(self, event_dict: EventDict) -> None:
        if type(event_dict) is dict:  # the recorder's new dict: the journal may add `seq` in place
            self._journal.append_owned(event_dict)
        else:
            self._journal.append(event_dict)
        self._stats.written += 1

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        if "seq" in event_dict or "mac" in event_dict:
            # The journal owns these two names; a caller's field of that name is kept under another.
            for k in ("seq", "mac"):
                if k in event_dict:
                    event_dict[f"field_{k}"] = event_dict.pop(k)
        try:
            self._append(event_dict)
        except Exception as exc:
            if not isinstance(exc.__cause__ or exc, TypeError):
                self._reporter.drop(type(exc.__cause__ or exc).__name__)
            else:  # orjson cannot write a lone surrogate: replace it (U+FFFD) rather than lose the event
                event_dict.pop("seq", None)
                event_dict = without_surrogates(dict(event_dict))
                try:
                    self._append(event_dict)
                except Exception as again:
                    self._reporter.drop(type(again.__cause__ or again).__name__)
                else:
                    self._reporter.repaired("surrogate")
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

    def __init__(self, chain: list[Processor], reporter: Reporter) -> None:
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
            try:
                event = event % (args[0] if len(args) == 1 and type(args[0]) is dict and args[0] else args)
            except Exception as exc:  # deep, huge, hostile or mismatched: never raise into the host
                event = _unformatted(event, args, kw, exc)
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


def _unformatted(event: Any, args: tuple[Any, ...], kw: dict[str, Any], exc: Exception) -> Any:
    """A message whose arguments could not be interpolated: the template stays the message, the
    arguments become a field (shaped like any other), and the problem is counted (its type only)."""
    kw.setdefault("args", args)
    handle = current_handle()
    if handle is not None:
        with contextlib.suppress(Exception):
            handle._reporter.repaired(f"format:{type(exc).__name__}")
    return event


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


class LoggerFactory:
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
    event_dict["timestamp"] = now_iso()
    return event_dict


_LEVELS = {"warn": "warning", "exception": "error"}  # structlog's map_method_name

# The keys the pipeline writes itself (the recorder passes them through when their value has the form it
# gives them). A caller's value under one of them is set aside on entry (see `stash_reserved`): the
# pipeline writes its own, and the caller's is shaped like any field (CallerReserved). `seq` and `mac`
# (the journal's) and `ts` and `event_id` (emit's) are plain fields to the recorder: shaped already.
CALLER_RESERVED: frozenset[str] = RESERVED_KEYS - {"event"}
# Ids the middleware (and bind_correlation_id) bind into structlog's contextvars: taken from there.
CONTEXT_IDS = ("correlation_id", "span_id", "trace_id")
_STASH = "\x00auditlog.caller_reserved"  # never emittable: the recorder would hide it, were it left


def stash_reserved(event_dict: EventDict, caller: frozenset[str] | set[str] | None = None) -> None:
    """Set aside the reserved keys in ``event_dict`` that a caller supplied (all of them, or ``caller``)."""
    hit = CALLER_RESERVED.intersection(event_dict) if caller is None else caller
    if hit:
        stash = event_dict.get(_STASH)
        if type(stash) is not dict:
            stash = event_dict[_STASH] = {}
        for k in hit:
            stash[k] = event_dict.pop(k)


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
        # What the call passed (and the bound logger's context) is the caller's: reserved keys set aside.
        stash_reserved(event_dict)
        registry = self._vars
        if registry is None:
            event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        elif registry:
            prefix = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)
            for var_name, var in tuple(registry.items()):
                value = var.get(Ellipsis)
                if value is not Ellipsis:
                    event_dict.setdefault(var_name[prefix:], value)
        # Bound contextvars: the ids are the middleware's (or bind_correlation_id's); the rest the caller's.
        hit = CALLER_RESERVED.intersection(event_dict)
        if hit:
            stash_reserved(event_dict, hit.difference(CONTEXT_IDS))
        event_dict["level"] = _LEVELS.get(method_name, method_name)
        event_dict = add_logger_name_and_timestamp(logger, method_name, event_dict)
        event_dict = add_correlation_ids(logger, method_name, event_dict)
        if "exc_info" in event_dict or "exception" in event_dict:
            event_dict = self._exceptions(logger, method_name, event_dict)
        if self._resolve(event_dict).fingerprint:
            event_dict = self._fingerprints(logger, method_name, event_dict)
        return event_dict


class CallerReserved:
    """Wraps the recorder: a caller's value under a reserved key (set aside by :func:`stash_reserved`) is
    shaped like any field, never kept as it is.

    ``log.info("x", correlation_id=token, hidden_keys=card, policy={...})``: the recorder only checks a
    reserved value's form, and a session token has a correlation id's form, a card number a count's. So
    the caller's value is set aside before the pipeline writes its own: where the pipeline wrote one
    (the bound correlation id, the level, the logger's name, the recorder's counts), the caller's is
    dropped (counted in ``dropped_fields``); else it is shaped (dropped and counted at level
    ``metadata``, like any field).
    """

    __slots__ = ("_recorder", "_resolve")

    def __init__(self, recorder: Processor, resolve: Callable[[Mapping[str, Any]], FieldPolicy]) -> None:
        self._recorder = recorder
        self._resolve = resolve

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        stash = event_dict.pop(_STASH, None) if _STASH in event_dict else None
        out = self._recorder(logger, method_name, event_dict)
        if stash and type(stash) is dict and isinstance(out, dict):
            metadata = self._resolve(event_dict).level == "metadata"
            dropped = 0
            for k, v in stash.items():
                if k in out or metadata:
                    dropped += 1
                else:
                    out[k] = shape_of(v)
            if dropped:
                prior = out.get("dropped_fields")
                out["dropped_fields"] = (prior if type(prior) is int else 0) + dropped
        return out


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
# Access events are built field by field from redacted parts (integrations.stdlib); their values may stay,
# after the scan like any allowlisted value. A policy rule for the logger replaces this.
ACCESS_FIELD_POLICY = FieldPolicy(
    level="values",
    allow=frozenset({"method", "target", "status", "http_version"}),
    rule_id="builtin:uvicorn.access",
)


class PolicyResolver:
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
