"""Correlation ids for audit events: W3C ``traceparent``, the current OpenTelemetry span, ``x-request-id``.

Precedence, decided once per request by :func:`resolve`:

1. a valid W3C ``traceparent`` (header, or ``_meta.traceparent`` on MCP): its trace id is the correlation
   id, its parent id the span id;
2. the current OpenTelemetry span, when one is recording (an instrumented server opened it);
3. a valid ``x-request-id``: 8 to 96 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit,
   no ``..``, and nothing the secret scanner flags (a client can put anything in a header);
4. a new random id (32 lowercase hex characters, the shape of a W3C trace id).

The span id names this one request: the current OpenTelemetry span's id, else a new random 16-hex id. A
trace id is shared by every request of a trace, so per-request keys (a captured body's) are
:attr:`Correlation.request_key`: ``correlation_id.span_id``.

Every id this module returns is safe as a body-store key and a file name (see
:func:`store.bodies.validate_correlation_id`): the same charset, never longer than 128 characters.

New ids come from :func:`random_bytes24`: 24 bytes of ``os.urandom`` drawn from a buffer refilled 12 KiB
at a time (one ``getrandom`` per 512 requests instead of two per request). Each 24-byte slot is handed
out once (a slot number comes from an ``itertools.count`` tied to its buffer, which is atomic under the
GIL), and a forked child discards the buffer it inherited, so parent and child never share an id. Ids
are identifiers, not secrets: they are echoed to clients and journaled.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Literal

from processors import Scanner
from processors.correlation import current_span_ids

__all__ = [
    "Correlation",
    "new_correlation_id",
    "new_span_id",
    "parse_traceparent",
    "random_bytes24",
    "resolve",
    "valid_request_id",
]

Source = Literal["traceparent", "otel", "x-request-id", "new"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.ASCII)
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,95}", re.ASCII)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Correlation:
    """The ids an audit event is stamped with, and where they came from."""

    correlation_id: str
    span_id: str
    parent_span_id: str | None = None
    source: Source = "new"

    @property
    def request_key(self) -> str:
        """A key unique to this request (``correlation_id.span_id``), e.g. for its captured body."""
        return f"{self.correlation_id}.{self.span_id}"


_SLOT = 24
_SLOTS = 512
_pool_lock = threading.Lock()
_pool: tuple[bytes, itertools.count[int]] = (b"", itertools.count(_SLOTS))  # empty: the first call fills


def random_bytes24() -> bytes:
    """24 bytes from the operating system's CSPRNG (``os.urandom``), buffered; never handed out twice,
    in this process or a forked child."""
    global _pool
    while True:
        state = _pool
        k = next(state[1])
        if k < _SLOTS:
            i = k * _SLOT
            return state[0][i : i + _SLOT]
        with _pool_lock:
            if _pool is state:
                _pool = (os.urandom(_SLOT * _SLOTS), itertools.count())


def _discard_pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool_lock = threading.Lock()
    _pool = (b"", itertools.count(_SLOTS))


os.register_at_fork(after_in_child=_discard_pool_after_fork)


_otel: Any = False  # False: not looked for yet; None: no OpenTelemetry; else opentelemetry.context


def _current_span_ids() -> tuple[str, str] | None:
    """:func:`processors.correlation.current_span_ids`, answered at once in an empty OpenTelemetry
    context (the usual case without an instrumented server) by reading the runtime context's variable."""
    otel = _otel
    if otel is None or otel is False:
        current = current_span_ids()  # imports OpenTelemetry, when installed, on first use
        if otel is False:
            _find_otel()
        return current
    try:
        empty = not otel._RUNTIME_CONTEXT._current_context.get()
    except Exception:  # another runtime context: ask OpenTelemetry
        empty = False
    return None if empty else current_span_ids()


def _find_otel() -> None:
    global _otel
    _otel = sys.modules.get("opentelemetry.context")


def new_correlation_id() -> str:
    """A fresh random correlation id: 32 lowercase hex characters (the shape of a W3C trace id)."""
    return random_bytes24()[:16].hex()


def new_span_id() -> str:
    """A fresh random span id: 16 lowercase hex characters."""
    return random_bytes24()[:8].hex()


def parse_traceparent(value: object) -> tuple[str, str] | None:
    """Return ``(trace_id, parent_span_id)`` of a valid W3C ``traceparent``, else None.

    Version ``00`` must be exactly 55 characters; a higher version may carry more fields (forward
    compatible, as the spec asks); version ``ff``, an all-zero trace id or span id, and upper case are
    invalid.
    """
    if type(value) is not str or len(value) > 256:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


def valid_request_id(value: object, scanner: Scanner | None = None) -> str | None:
    """Return ``value`` if it is acceptable as a correlation id, else None.

    Acceptable: a ``str`` of 8 to 96 characters of ``[A-Za-z0-9._-]`` starting with a letter or digit,
    holding no ``..``, in which ``scanner`` (when given) finds nothing.
    """
    if type(value) is not str or not _REQUEST_ID.fullmatch(value) or ".." in value:
        return None
    if scanner is not None and scanner.findings(value):
        return None
    return value


def resolve(
    *,
    traceparent: object = None,
    request_id: object = None,
    scanner: Scanner | None = None,
) -> Correlation:
    """Decide the correlation id of one request (see the module docstring for the precedence)."""
    parsed = parse_traceparent(traceparent) if traceparent is not None else None
    current = _current_span_ids()
    if parsed is None and current is None and request_id is None:  # the usual case: both ids new, one read
        ids = random_bytes24().hex()
        return Correlation(correlation_id=ids[:32], span_id=ids[32:], source="new")
    span_id = current[1] if current is not None else new_span_id()
    if parsed is not None:
        return Correlation(
            correlation_id=parsed[0], span_id=span_id, parent_span_id=parsed[1], source="traceparent"
        )
    if current is not None:
        return Correlation(correlation_id=current[0], span_id=span_id, source="otel")
    if request_id is not None:
        rid = valid_request_id(request_id, scanner)
        if rid is not None:
            return Correlation(correlation_id=rid, span_id=span_id, source="x-request-id")
    return Correlation(correlation_id=new_correlation_id(), span_id=span_id, source="new")
