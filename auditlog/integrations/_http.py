"""What the ASGI and WSGI audit middleware share (private): the decision made before the app runs, the
capped tees of both bodies, and the ``http.request`` / ``authz.denied`` events. The per-request state
and what a request's head and body say are in :mod:`~auditlog.integrations._http_request`.

:class:`_Recorder` is framework-neutral: the ASGI middleware (:mod:`~auditlog.integrations.asgi`) and the
WSGI one (:mod:`~auditlog.integrations.wsgi`) feed it a request's head, its body chunks and its
response head, and it decides, tees and records. Nothing here reads a value into an event except the
shapers, at the rule's level.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from auditlog.actor import ANONYMOUS, ActorResolver, default_actor
from auditlog.correlation import resolve
from auditlog.events import (
    SCHEMA_VERSION,
    Action,
    Decision,
    EventKind,
    MiddlewareStats,
    Outcome,
    Status,
    build_event,
    decide,
    emit_event,
    journal_failure,
    shape_value,
)
from auditlog.handle import AuditHandle
from auditlog.integrations._http_request import (
    _EMPTY_OBJ,
    _NO_ARGS,
    _NO_BYTES,
    _action,
    _form,
    _Head,
    _media_type,
    _parse_body,
    _Request,
    _Route,
    digest_headers,
)
from auditlog.integrations.urls import ROUTE_WORDS, collapse_path, redact_target
from auditlog.policy import DEFAULT_POLICY, Policy
from processors import Scanner, SecretScanner, ShapeLimits
from processors.correlation import current_span_ids
from processors.shapes import rendered_shape

_FALLBACK_SCANNER = SecretScanner()

_WRAP_LOCK = threading.Lock()


class BodySink(Protocol):
    """Where captured response bodies go: a body store, or its background writer."""

    def put(self, correlation_id: str, body: bytes, *, meta: Any) -> None:
        """Take ``body`` (already capped) for ``correlation_id``; must not block for long."""
        ...


class _Recorder:
    """What the ASGI and WSGI middleware share: the per-request decision, the tee, the event."""

    __slots__ = (
        "_actor",
        "_body_local",
        "_body_store",
        "_capture_limit",
        "_closed_limit",
        "_declared",
        "_handle",
        "_limits",
        "_policy",
        "_shape_limit",
        "_words",
        "enforce",
        "stats",
    )

    def __init__(
        self,
        *,
        policy: Policy | None,
        actor: ActorResolver,
        enforce: bool,
        body_store: BodySink | None,
        handle: AuditHandle | None,
        capture_limit: int,
        shape_limit: int,
        closed_buffer_limit: int,
        limits: ShapeLimits | None,
    ) -> None:
        for name, value in (
            ("capture_limit", capture_limit),
            ("shape_limit", shape_limit),
            ("closed_buffer_limit", closed_buffer_limit),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int")
        self._policy = policy
        self._actor = actor
        self.enforce = enforce
        self._body_store = body_store
        self._body_local = False  # not yet checked: a remote store gets an outbox in front (local_first)
        self._handle = handle
        self._capture_limit = capture_limit
        self._shape_limit = shape_limit
        self._closed_limit = closed_buffer_limit
        self._limits = limits or ShapeLimits()
        self.stats = MiddlewareStats()
        self._words = ROUTE_WORDS
        self._declared = False  # the app's route table is read at the first request (it is complete then)
        current_span_ids()  # imports OpenTelemetry (when installed) now, not on a request in the event loop

    def set_policy(self, policy: Policy | None) -> None:
        """Swap the policy for the next requests (a kill switch at run time); None: the handle's."""
        self._policy = policy

    # -- before the app ------------------------------------------------------------------------------

    def _start(
        self,
        *,
        handle: AuditHandle | None,
        headers: Iterable[tuple[str, str]],
        method: str,
        path: str,
        route_path: str,
        target: str,
        query: str,
        context: object,
        route: _Route | None = None,
        head: _Head | None = None,
    ) -> _Request:
        """Read the request's head (header names are lower case) and decide; the app has not run yet.

        The rule comes from the policy's own route patterns matched against ``route_path`` (the path the
        framework routes on); the app's router is never called. ``path`` is what the event names until
        the framework says which route served the request (:meth:`_route_name`), collapsed.
        ``route``: the name, redacted target and rule already found for this method and path (the
        caller's cache); ``path``, ``route_path``, ``target`` and ``query`` are then not looked at.
        ``head``: what :func:`digest_headers` would find in ``headers``, found by the caller.
        """
        req = _Request()
        req.handle = handle
        req.context = context
        scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
        if head is None:
            head = digest_headers(headers)
        names, hidden, traceparent, request_id, req.cookies, req.req_ctype, req.req_encoded = head
        req.headers = names
        req.hidden_headers = hidden
        req.corr = resolve(traceparent=traceparent, request_id=request_id, scanner=scanner)
        if route is not None:
            req.method, req.name, req.target, req.rule, req.action = route
        else:
            if not self._declared:
                self._declared = True
                self._learn_declared()
            policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
            method = method.upper()
            # The label hides an odd method; the rule is matched on the real one (the framework routes it).
            req.method = method if method.isalpha() and method.isascii() and len(method) <= 16 else "OTHER"
            req.literals = literals = self._words.literals(policy)
            req.name = collapse_path(path or "/", scanner=scanner, literals=literals)
            req.query = query
            req.raw_target = f"{target}?{query}" if query else target
            req.target = redact_target(req.raw_target, scanner=scanner, literals=literals)
            req.rule = policy.match_request(path=route_path or "/", method=method)
        try:
            if (
                self._actor is default_actor
                and type(context) is dict
                and "user" not in context
                and context.get("auth") is None
            ):
                actor = ANONYMOUS  # what default_actor answers for a scope without user or auth
            else:
                actor = self._actor(context) or ANONYMOUS
        except Exception as exc:
            self.stats.error("actor", exc)
            actor = ANONYMOUS
        req.actor = actor
        req.decision = decide(req.rule, actor, enforce=self.enforce)
        shaped = req.rule.level in ("shape", "values")
        if shaped and not req.req_encoded:
            req.req_buf = bytearray()
        if shaped:
            req.resp_buf = bytearray()
        if req.rule.capture_body and self._body_store is not None:
            req.resp_capture = bytearray()
        return req

    # -- while it runs -------------------------------------------------------------------------------

    def _tee_request(self, req: _Request, body: bytes) -> None:
        req.req_bytes += len(body)
        buf = req.req_buf
        if buf is not None and body:
            if len(buf) + len(body) <= self._shape_limit:
                buf += body
            else:
                req.req_buf = None

    def _response_head(
        self, req: _Request, status: int, content_type: str | None, encoding: str | None
    ) -> None:
        req.started = True
        req.status = status
        req.resp_ctype = _media_type(content_type) if content_type else None
        req.resp_encoded = encoding is not None and encoding.strip().lower() not in ("", "identity")
        if req.resp_encoded or req.resp_ctype == "text/event-stream":
            req.resp_buf = None

    def _tee_response(self, req: _Request, body: bytes) -> None:
        n = len(body)
        req.resp_bytes += n
        if not n:
            return
        buf = req.resp_buf
        if buf is not None:
            if len(buf) + n <= self._shape_limit:
                buf += body
            else:
                req.resp_buf = None
        cap = req.resp_capture
        if cap is not None:
            room = self._capture_limit - len(cap)
            if room >= n:
                cap += body
            else:
                if room > 0:
                    cap += body[:room]
                req.resp_truncated = True

    # -- after it ------------------------------------------------------------------------------------

    def _commit(self, req: _Request) -> bool:
        """Build and write the request's event (once); hand a captured body to the store first."""
        req.committed = True
        if req.rule.level == "none":
            return True
        try:
            event = self._event(req)
        except Exception as exc:
            self.stats.error("event", exc)
            return False
        if req.handle is None:
            self.stats.dropped += 1
            return False
        return emit_event(req.handle, event, self.stats)

    def _route_name(self, req: _Request) -> str | None:
        """The route template the framework recorded once it routed ``req`` (None: not known)."""
        return None

    def _declared_routes(self) -> Iterable[str]:
        """The route templates the app declares, read from its route table (never called)."""
        return ()

    def _learn_declared(self) -> None:
        try:
            self._words.learn_all(self._declared_routes())
        except Exception as exc:  # an odd route table: the templates the framework records still teach
            self.stats.error("routes", exc)

    def _event(self, req: _Request) -> dict[str, Any]:
        """The request's ``http.request`` event, as :func:`auditlog.events.build_event` lays it out, with
        the shapes, actor, decision and action already JSON (the event goes to the journal as it is).

        One dict literal, in the schema's key order; the parts that never change for a route (actor,
        decision, action, empty arguments) are kept JSON."""
        handle = req.handle
        scanner: Scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
        fingerprint = handle.fingerprinter.fingerprint if handle is not None else None
        rule = req.rule
        level = rule.level
        fps: dict[str, str] | None = None
        args_shape: Any = None
        result_shape: Any = None
        if level == "shape" or level == "values":
            if not req.query and not req.req_bytes:
                args_shape = _NO_ARGS
            else:
                args_shape, fps = self._args_shape(req, scanner, fingerprint)
            result_shape = {"t": "bytes", "len": req.resp_bytes}
            if req.resp_buf is not None and req.complete and req.resp_bytes:
                parsed = _parse_body(bytes(req.resp_buf), req.resp_ctype)
                if not isinstance(parsed, bytes):
                    if level == "shape":  # shape_value's path for this level, without its checks
                        try:
                            result_shape = rendered_shape(parsed, limits=self._limits)
                        except Exception as exc:
                            result_shape = f"<unshapeable:{type(exc).__name__}>"
                    else:
                        result_shape, _ = shape_value(
                            parsed, rule=rule, scanner=scanner, limits=self._limits, render=True
                        )
        body_ref = self._store_body(req) if req.resp_capture is not None else None
        status: Status
        if req.error_type is not None:
            status = "cancelled" if req.error_type == "CancelledError" else "error"
        elif req.status is not None and req.status >= 500:
            status = "error"
        else:
            status = "ok"
        actor = req.actor
        corr = req.corr
        event: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "kind": "http.request",
            "correlation_id": corr.correlation_id,
            "span_id": corr.span_id,
            "actor": actor.as_json()
            if actor is ANONYMOUS
            else actor.redacted(scanner, fingerprint).as_json(),
            "action": _action(req, self._name_after(req)),
            "decision": req.decision.as_json(),
            "outcome": {
                "status": status,
                "http_status": req.status,
                "error_type": req.error_type,
                "duration_ms": round((time.perf_counter() - req.start) * 1000.0, 3),
            },
        }
        if args_shape is not None:
            event["args_shape"] = args_shape
        if result_shape is not None:
            event["result_shape"] = result_shape
        if body_ref:
            event["body_ref"] = body_ref
        if fps:
            event["fp"] = fps
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

    def _args_shape(
        self, req: _Request, scanner: Scanner, fingerprint: Callable[[object], str] | None
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """The request's query and body shaped at the rule's level, and the fingerprints it asks for."""
        rule = req.rule
        fps: dict[str, str] | None = None
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
        return {"query": query, "body": body}, fps

    def _name_after(self, req: _Request) -> str | None:
        """The template the framework recorded (see :meth:`_route_name`). Its literals join the words
        journaled paths keep; when the words changed since the request's target was collapsed (this
        template, or another request's), the target is collapsed again with them."""
        try:
            name = self._route_name(req)
        except Exception as exc:
            self.stats.error("route", exc)
            return None
        if name is not None:
            self._words.learn(name)
        if req.raw_target is not None:
            scanner, literals = self._path_rules(req.handle)
            if literals is not req.literals:
                req.target = redact_target(req.raw_target, scanner=scanner, literals=literals)
        return name

    def _mount_prefix(self, prefix: str, req: _Request) -> str:
        """A mount prefix the framework routed through (SCRIPT_NAME, a Mount's root_path), collapsed."""
        scanner, literals = self._path_rules(req.handle)
        return collapse_path(prefix, scanner=scanner, literals=literals)

    def _path_rules(self, handle: AuditHandle | None) -> tuple[Scanner, frozenset[str] | None]:
        """The scanner and the route literals that paths journaled under ``handle`` are collapsed with."""
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
        return scanner, self._words.literals(policy)

    def _store_body(self, req: _Request) -> dict[str, Any] | None:
        cap = req.resp_capture
        store = self._body_store
        if cap is None or store is None or not req.complete or req.partial:
            return None
        key = req.corr.request_key
        try:
            from auditlog.bodies import body_meta, local_first

            if not self._body_local:
                if req.handle is None:
                    raise ValueError("no audit handle: a captured body would have no body_ref")
                with _WRAP_LOCK:  # WSGI servers run requests in threads: one outbox, not two
                    if not self._body_local:
                        self._body_store = local_first(store, req.handle)
                        self._body_local = True
                store = self._body_store

            meta = body_meta(
                req.rule,
                tenant=req.actor.tenant,
                subject=req.actor.subject,
                content_type=req.resp_ctype,
                original_size=req.resp_bytes,
            )
            store.put(key, bytes(cap), meta=meta)
        except Exception as exc:
            self.stats.error("body_store", exc)
            return None
        return {"key": key, "bytes": len(cap), "truncated": req.resp_truncated}

    # -- refusals ------------------------------------------------------------------------------------

    def _failed(
        self, exc: Exception, *, handle: AuditHandle | None, method: str, path: str
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The step before the app raised: never skip an access check. Under ``enforce``, or when the
        path's rule is ``fail_mode = "closed"`` (or a kill switch), answer 503 (returned); else serve
        (None). Either way an ``audit.failed`` event with the error's type only is journaled."""
        refuse = self.enforce or self._closed_for(handle, method, path)
        cid = journal_failure(exc, handle=handle, stats=self.stats, refused=refuse, where="http.begin")
        if not refuse:
            return None
        payload = orjson.dumps(
            {"error": "audit_unavailable", "detail": _FAILED_DETAIL, "correlation_id": cid}
        )
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("x-correlation-id", cid),
        ]
        return 503, headers, payload

    def _closed_for(self, handle: AuditHandle | None, method: str, path: str) -> bool:
        """Whether the rule for ``method`` and ``path`` fails closed (or is disabled); when even that
        cannot be told, whether any rule of the policy does."""
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        try:
            rule = policy.match_request(path=path or "/", method=method.upper())
        except Exception:
            return policy.may_refuse()
        return rule.fail_mode == "closed" or rule.disabled

    def _refusal(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        """Record a refused request (kill switch or missing scopes); return status, headers and body."""
        decision: Decision = req.decision
        kind: EventKind
        status: Status
        if decision.reason == "disabled":
            self.stats.disabled += 1
            code, error, detail = 503, "disabled", "this endpoint is disabled by the audit policy"
            kind, status = "authz.denied", "disabled"
        else:
            self.stats.denied += 1
            code, error, detail = 403, "insufficient_scope", "the caller lacks a required scope"
            kind, status = "authz.denied", "denied"
        req.status = code
        req.committed = True
        try:
            handle = req.handle
            scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
            fingerprint = handle.fingerprinter.fingerprint if handle is not None else None
            event = build_event(
                kind,
                correlation_id=req.corr.correlation_id,
                span_id=req.corr.span_id,
                actor=req.actor.redacted(scanner, fingerprint),
                action=Action(name=req.name, method=req.method, target=req.target),
                decision=decision,
                outcome=Outcome(
                    status=status,
                    http_status=code,
                    duration_ms=(time.perf_counter() - req.start) * 1000.0,
                ),
                extra={"http": {"headers": req.headers}},
                render=True,
            )
            if handle is not None:
                emit_event(handle, event, self.stats)
            else:
                self.stats.dropped += 1
        except Exception as exc:
            self.stats.error("refuse", exc)
        extra: list[tuple[str, str]] = []
        if code == 403:
            scopes = " ".join(decision.required)
            extra.append(("www-authenticate", f'Bearer error="insufficient_scope", scope="{scopes}"'))
        return _error_response(req, code, error, detail, extra, required=list(decision.required))

    def _closed_refusal(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        self.stats.refused += 1
        return _error_response(req, 503, "audit_unavailable", _CLOSED_DETAIL, [])


def _error_response(
    req: _Request, code: int, error: str, detail: str, extra: list[tuple[str, str]], **fields: Any
) -> tuple[int, list[tuple[str, str]], bytes]:
    payload = orjson.dumps(
        {"error": error, "detail": detail, "correlation_id": req.corr.correlation_id, **fields}
    )
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(payload))),
        ("x-correlation-id", req.corr.correlation_id),
        *extra,
    ]
    return code, headers, payload


_FAILED_DETAIL = "the audit middleware failed before the request ran, and the policy requires an audit"
_CLOSED_DETAIL = "the audit log could not record this request, and the policy requires it (fail_mode closed)"
