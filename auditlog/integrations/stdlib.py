"""Route stdlib ``logging`` (and uvicorn's loggers) through the redacting pipeline.

A :class:`structlog.stdlib.ProcessorFormatter` turns each ``LogRecord`` into an event dict. The record is
never interpolated: the message *template* (``record.msg``) becomes the event and the arguments are shaped
like any other value, so ``log.info("reset for %s", email)`` journals the template and the shape of
``email``. ``extra=`` fields are shaped too. uvicorn's access lines become structured ``http.access``
events whose target keeps the route and query keys but no query values and no id-like path segments;
the client address is not kept.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, TYPE_CHECKING, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from auditlog.handle import current_handle
from auditlog.integrations.urls import ROUTE_WORDS, redact_target
from auditlog.pipeline import CALLER_RESERVED, CONTEXT_IDS, stash_reserved
from auditlog.policy import DEFAULT_POLICY

if TYPE_CHECKING:
    from auditlog.handle import AuditHandle

__all__ = ["JournalHandler", "install", "record_to_event"]

_RECORD_ATTRS = frozenset(
    logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)


def _access_event(args: object, ed: EventDict) -> EventDict:
    if isinstance(args, tuple) and len(args) == 5:
        _client, method, target, http_version, status = args
        ed["event"] = "http.access"
        ed["method"] = method if isinstance(method, str) and method.isalpha() and len(method) < 16 else "?"
        ed["target"] = _target(target) if isinstance(target, str) else "<unshapeable>"
        ed["status"] = status if isinstance(status, int) else None
        ed["http_version"] = http_version if isinstance(http_version, str) and len(http_version) < 8 else "?"
    else:
        ed["event"] = "http.access"
    return ed


def _target(target: str) -> str:
    """An access line's target as the middleware journals it: route literals kept, per the policy."""
    handle = current_handle()
    policy = handle.policy if handle is not None else DEFAULT_POLICY
    scanner = handle.scanner if handle is not None else None
    return redact_target(target, scanner=scanner, literals=ROUTE_WORDS.literals(policy))


def record_to_event(logger: WrappedLogger, method_name: str, ed: EventDict) -> EventDict:
    """Foreign pre-chain step: template instead of the interpolated message, args and extras as fields."""
    record: logging.LogRecord = ed["_record"]
    # ProcessorFormatter moved the arguments here (and emptied record.args) before this step runs.
    args = ed.pop("positional_args", None) or record.args
    ed["logger"] = record.name
    if record.name == "uvicorn.access":
        _access_event(args, ed)
    else:
        ed["event"] = record.msg  # the template; a non-str message is shaped like any value
        if args:
            ed["args"] = args
    extras = []
    for k, v in record.__dict__.items():
        if k not in _RECORD_ATTRS and not k.startswith("_") and k not in ed:
            ed[k] = v
            extras.append(k)
    caller = CALLER_RESERVED.intersection(extras)  # extra={"correlation_id": ...}: the caller's
    if caller:
        stash_reserved(ed, caller)
    return ed


def add_bound_ids(logger: WrappedLogger, method_name: str, ed: EventDict) -> EventDict:
    """Foreign pre-chain step: the correlation ids the middleware bound for the request being served
    (structlog's contextvars), so an access line, or any stdlib record written while serving a request,
    sits with that request in a timeline. Only the ids: other bound values are the caller's."""
    bound = structlog.contextvars.get_contextvars()
    for key in CONTEXT_IDS:
        if key in bound and key not in ed:
            ed[key] = bound[key]
    return ed


def _drop_meta(logger: WrappedLogger, method_name: str, ed: EventDict) -> EventDict:
    ed.pop("_record", None)
    ed.pop("_from_structlog", None)
    return ed


class JournalHandler(logging.Handler):
    """A logging handler whose formatter journals the record; optionally echoes the redacted line."""

    def __init__(self, handle: AuditHandle, formatter: logging.Formatter, console: IO[str] | None) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._handle = handle
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self._console is not None and line:
                self._console.write(line + "\n")
        except structlog.DropEvent:
            return  # the policy says level none (or the guarded chain already counted a failure)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # logging's default prints the record's message and arguments: values. Count, never print them.
        exc_type = sys.exc_info()[0]
        self._handle._reporter.drop(f"stdlib:{exc_type.__name__ if exc_type is not None else 'error'}")


def install(
    handle: AuditHandle,
    *,
    chain: Processor,
    console: IO[str] | None,
    level: int,
    loggers: tuple[str, ...],
    exclusive: bool,
) -> None:
    """Attach a :class:`JournalHandler` to the root logger and to ``loggers`` (which stop propagating).

    With ``exclusive``, handlers already on those loggers are detached (and put back by ``shutdown()``):
    a console handler that ``logging.basicConfig`` or a framework installed would otherwise print the
    raw, interpolated record (values included) beside the redacted one.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[record_to_event, add_bound_ids, structlog.stdlib.add_log_level],
        processors=[_drop_meta, chain],
        use_get_message=False,
        pass_foreign_args=True,
    )
    handler = JournalHandler(handle, formatter, console)
    root = logging.getLogger()
    targets: list[tuple[logging.Logger, Any]] = [(root, level)]
    targets += [(logging.getLogger(name), None) for name in loggers]
    for lg, lvl in targets:
        foreign = list(lg.handlers) if exclusive else []
        handle._handlers.append((lg, handler, lg.level, lg.propagate, foreign))
        for h in foreign:
            lg.removeHandler(h)
        lg.addHandler(handler)
        if lvl is not None:
            lg.setLevel(lvl)
        else:
            lg.propagate = False
