"""One HTTP request as the audit middleware sees it (private): its state while it runs (:class:`_Request`),
what its headers say (:func:`digest_headers`), how a body is parsed for shaping, and the event's action.

:mod:`~auditlog.integrations._http` fills these in as the request goes; nothing here decides or records.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import orjson

from auditlog.actor import Actor
from auditlog.correlation import Correlation
from auditlog.events import Decision
from auditlog.handle import AuditHandle
from auditlog.policy import Rule
from processors.shapes import emittable_key

_MAX_HEADER_NAMES = 64
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,49}/[a-z0-9][a-z0-9.+-]{0,49}", re.ASCII)
_KNOWN_MEDIA_TYPES = {
    "application/json": "application/json",
    "text/plain; charset=utf-8": "text/plain",
    "text/html; charset=utf-8": "text/html",
    "text/event-stream": "text/event-stream",
    "application/x-www-form-urlencoded": "application/x-www-form-urlencoded",
}
_Route = tuple[str, str, str, Rule, orjson.Fragment]  # method, name, redacted target, rule, action JSON
_EMPTY_OBJ = orjson.Fragment(b'{"t":"obj","n":0}')
_NO_BYTES = orjson.Fragment(b'{"t":"bytes","len":0}')
_NO_ARGS = orjson.Fragment(b'{"query":{"t":"obj","n":0},"body":{"t":"bytes","len":0}}')  # no query, no body


# What a request's header names and a few values say: names (as journaled), hidden names, traceparent,
# x-request-id, cookie count, request media type, whether the request body is encoded.
_Head = tuple[list[str], int, str | None, str | None, int, str | None, bool]


def digest_headers(headers: Iterable[tuple[str, str]]) -> _Head:
    """The facts the event keeps from a request's headers (names lower case, values decoded)."""
    traceparent = request_id = ctype = None
    hidden = cookies = 0
    encoded = False
    names: list[str] = []
    for name, value in headers:
        if name == "traceparent":
            traceparent = value
        elif name == "x-request-id":
            request_id = value
        elif name == "cookie":
            cookies += value.count(";") + 1
        elif name == "content-type":
            ctype = _media_type(value)
        elif name == "content-encoding":
            encoded = value.strip().lower() not in ("", "identity")
        if len(names) < _MAX_HEADER_NAMES and emittable_key(name):
            names.append(name)
        else:
            hidden += 1
    return names, hidden, traceparent, request_id, cookies, ctype, encoded


class _Request:
    """What one request has shown so far. One per call; never shared between requests."""

    __slots__ = (
        "action",
        "actor",
        "committed",
        "complete",
        "context",
        "cookies",
        "corr",
        "decision",
        "error_type",
        "forwarded",
        "handle",
        "headers",
        "hidden_headers",
        "literals",
        "method",
        "name",
        "partial",
        "query",
        "raw_target",
        "req_buf",
        "req_bytes",
        "req_ctype",
        "req_encoded",
        "resp_buf",
        "resp_bytes",
        "resp_capture",
        "resp_ctype",
        "resp_encoded",
        "resp_length",
        "resp_truncated",
        "root",
        "routed",
        "rule",
        "start",
        "started",
        "status",
        "target",
    )

    actor: Actor
    context: object
    corr: Correlation
    decision: Decision
    handle: AuditHandle | None
    method: str
    name: str
    rule: Rule
    target: str

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.action: orjson.Fragment | None = None  # the action's JSON, when the route was known
        self.status: int | None = None
        self.started = False
        self.forwarded = False
        self.complete = False
        self.committed = False
        self.partial = False
        self.error_type: str | None = None
        self.req_bytes = 0
        self.req_buf: bytearray | None = None
        self.req_ctype: str | None = None
        self.req_encoded = False
        self.resp_bytes = 0
        self.resp_buf: bytearray | None = None
        self.resp_capture: bytearray | None = None
        self.resp_ctype: str | None = None
        self.resp_encoded = False
        self.resp_truncated = False
        self.resp_length: int | None = None  # the response's Content-Length, when it gave one
        self.cookies = 0
        self.headers: list[str] = []
        self.hidden_headers = 0
        self.query = ""
        self.raw_target: str | None = None  # the target as sent, while a template may still add literals
        self.literals: frozenset[str] | None = None  # the route literals ``target`` was collapsed with
        self.root = ""  # the ASGI root_path before the app ran (Mount extends it)
        self.routed: str | None = None  # the route template the framework recorded, once it has routed


def _media_type(value: str) -> str | None:
    known = _KNOWN_MEDIA_TYPES.get(value)
    if known is not None:
        return known
    mt = value.split(";", 1)[0].strip().lower()
    return mt if _MEDIA_TYPE.fullmatch(mt) else None


def _parse_body(data: bytes, media_type: str | None) -> object:
    """A JSON or form body parsed for shaping; anything else stays bytes (shaped by length)."""
    if media_type is None:
        return data
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
    if media_type == "application/x-www-form-urlencoded":
        return _form(data.decode("latin-1"))
    return data


def _form(text: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in urllib.parse.parse_qsl(text, keep_blank_values=True, errors="replace"):
        prev = out.get(k)
        if prev is None:
            out[k] = v
        elif isinstance(prev, list):
            prev.append(v)
        else:
            out[k] = [prev, v]
    return out


def _action(req: _Request, name: str | None) -> Any:
    """The event's action: the framework's route template when known, else the collapsed path."""
    if name is None or name == req.name:
        return req.action or {"name": req.name, "method": req.method, "target": req.target}
    return {"name": name, "method": req.method, "target": req.target}
