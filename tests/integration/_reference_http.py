"""The ASGI middleware's request head and ``http.request`` event exactly as they were built before the
hot path was reworked (header plans, one dict literal, kept route templates): the reference that
``test_http_fastpath`` compares the optimized path with, byte for byte."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from auditlog.events import Status, event_dict, outcome_dict, shape_value
from auditlog.integrations._http import _FALLBACK_SCANNER
from auditlog.integrations._http_request import (
    _EMPTY_OBJ,
    _MAX_HEADER_NAMES,
    _NO_BYTES,
    _action,
    _form,
    _media_type,
    _parse_body,
    _Request,
)
from processors import Scanner
from processors.shapes import emittable_key


def reference_head(raw: Any) -> tuple[Any, ...]:
    """The request head's facts as the middleware read them before the header plans (the old loop)."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
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


def reference_route_name(self: Any, req: _Request) -> str | None:
    """The template of the route Starlette/FastAPI chose (``scope["route"]``, set by the router once
    it has routed), under the collapsed prefix of the mounts it went through; None: not routed."""
    scope = req.context
    if not isinstance(scope, MutableMapping):
        return None
    route = scope.get("route")
    path = getattr(route, "path", None)
    if type(path) is not str or isinstance(getattr(route, "routes", None), list):
        return None  # not routed, or a Mount serving an app that is not a router: the collapsed path
    if getattr(route, "endpoint", None) is None and hasattr(route, "app"):
        return None  # a Mount or Host whose app routes on its own
    root = scope.get("root_path") or ""
    first = req.root
    if root == first or not root.startswith(first):
        return path
    return self._mount_prefix(root[len(first) :], req) + path


def reference_event(self: Any, req: _Request) -> dict[str, Any]:
    """The request's ``http.request`` event, as :func:`auditlog.events.build_event` lays it out, with
    the shapes, actor, decision and action already JSON (the event goes to the journal as it is)."""
    handle = req.handle
    scanner: Scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
    fingerprint = handle.fingerprinter.fingerprint if handle is not None else None
    rule = req.rule
    fps: dict[str, str] | None = None
    args_shape: Any = None
    result_shape: Any = None
    if rule.level in ("shape", "values"):
        query: Any = _EMPTY_OBJ
        if req.query:
            query, fps = shape_value(
                _form(req.query),
                rule=rule,
                scanner=scanner,
                fingerprint=fingerprint,
                limits=self._limits,
                render=True,
            )
        body: Any = _NO_BYTES if not req.req_bytes else {"t": "bytes", "len": req.req_bytes}
        if req.req_buf is not None and req.req_bytes:
            parsed = _parse_body(bytes(req.req_buf), req.req_ctype)
            if not isinstance(parsed, bytes):
                body, fb = shape_value(
                    parsed,
                    rule=rule,
                    scanner=scanner,
                    fingerprint=fingerprint,
                    limits=self._limits,
                    render=True,
                )
                fps = {**fps, **fb} if fps else fb
        args_shape = {"query": query, "body": body}
        result_shape = {"t": "bytes", "len": req.resp_bytes}
        if req.resp_buf is not None and req.complete and req.resp_bytes:
            parsed = _parse_body(bytes(req.resp_buf), req.resp_ctype)
            if not isinstance(parsed, bytes):
                result_shape, _ = shape_value(
                    parsed, rule=rule, scanner=scanner, limits=self._limits, render=True
                )
    body_ref = self._store_body(req)
    status: Status
    if req.error_type is not None:
        status = "cancelled" if req.error_type == "CancelledError" else "error"
    elif req.status is not None and req.status >= 500:
        status = "error"
    else:
        status = "ok"
    event = event_dict(
        "http.request",
        correlation_id=req.corr.correlation_id,
        span_id=req.corr.span_id,
        actor=req.actor.redacted(scanner, fingerprint).as_json(),
        action=_action(req, reference_route_name(self, req)),
        decision=req.decision.as_json(),
        outcome=outcome_dict(
            status,
            (time.perf_counter() - req.start) * 1000.0,
            http_status=req.status,
            error_type=req.error_type,
        ),
        args_shape=args_shape,
        result_shape=result_shape,
        body_ref=body_ref,
        fp=fps,
    )
    http: dict[str, Any] = {
        "headers": req.headers,
        "request_bytes": req.req_bytes,
        "response_bytes": req.resp_bytes,
        "content_type": req.req_ctype,
        "response_content_type": req.resp_ctype,
    }
    if req.hidden_headers:
        http["hidden_headers"] = req.hidden_headers
    if req.cookies:
        http["cookies"] = req.cookies
    if req.partial:
        http["partial"] = True
    event["http"] = http
    return event
