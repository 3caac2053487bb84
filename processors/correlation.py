"""Correlation ids: one id ties an event to its request, its trace and its stored body.

``add_correlation_ids`` keeps a ``correlation_id`` already in the event (bound with
:func:`bind_correlation_id` / ``structlog.contextvars``) if it is well formed, replaces a malformed one
with ``"<invalid>"``, and otherwise takes the trace id of the current OpenTelemetry span.
OpenTelemetry is optional: it is imported on first use, once; without it, no id is added.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

__all__ = [
    "VALID_CORRELATION_ID",
    "add_correlation_ids",
    "bind_correlation_id",
    "current_span_ids",
    "new_correlation_id",
]

VALID_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_INVALID = "<invalid>"


_otel_loaded = False
_get_current_span: Callable[[], Any] | None = None
_get_current_context: Callable[[], Any] = dict


def _load_otel() -> Callable[[], Any] | None:
    """Import ``opentelemetry.trace.get_current_span`` on first use (27 ms: not at package import)."""
    global _otel_loaded, _get_current_span, _get_current_context
    try:
        from opentelemetry.context import get_current
        from opentelemetry.trace import get_current_span
    except ImportError:
        _get_current_span = None
    else:
        _get_current_span, _get_current_context = get_current_span, get_current
    _otel_loaded = True
    return _get_current_span


def current_span_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current OpenTelemetry span as hex (32 and 16 characters), if valid.

    None without OpenTelemetry, in an empty context, for an invalid span, or when the tracer raises.
    """
    get_current_span = _get_current_span if _otel_loaded else _load_otel()
    if get_current_span is None:
        return None
    try:
        if not _get_current_context():  # an empty OpenTelemetry context holds no span: skip the lookups
            return None
        ctx = get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:  # a broken tracer must not break logging
        return None


def add_correlation_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: validate or add ``correlation_id``, ``trace_id`` and ``span_id``.

    Args:
        logger: the wrapped logger (unused).
        method_name: the log method name (unused).
        event_dict: the event.

    Returns:
        The event: a bound ``correlation_id`` kept if valid (``"<invalid>"`` otherwise); else, inside a
        recording OpenTelemetry span, ``correlation_id`` = ``trace_id`` (32 hex) and ``span_id`` (16 hex);
        else unchanged.
    """
    cid = event_dict.get("correlation_id")
    if cid is not None:
        if type(cid) is not str or not VALID_CORRELATION_ID.fullmatch(cid):
            event_dict["correlation_id"] = _INVALID
        return event_dict
    ids = current_span_ids()
    if ids is not None:
        event_dict["correlation_id"] = event_dict["trace_id"] = ids[0]
        event_dict["span_id"] = ids[1]
    return event_dict


def new_correlation_id() -> str:
    """Return a fresh correlation id: 32 lowercase hex chars (a random UUID4)."""
    return uuid.uuid4().hex


@contextmanager
def bind_correlation_id(cid: str | None = None) -> Iterator[str]:
    """Bind a correlation id to structlog's context variables for the ``with`` block.

    Args:
        cid: the id (``[A-Za-z0-9._:-]``, 1-128 chars); ``None`` makes a new one.

    Returns:
        A context manager yielding the bound id; the previous binding is restored on exit.

    Raises:
        ValueError: ``cid`` is malformed.
    """
    if cid is None:
        cid = new_correlation_id()
    elif type(cid) is not str or not VALID_CORRELATION_ID.fullmatch(cid):
        raise ValueError("a correlation id is 1-128 chars of [A-Za-z0-9._:-]")
    with structlog.contextvars.bound_contextvars(correlation_id=cid):
        yield cid
