"""``AuditMiddleware``: pure ASGI middleware that writes one audit event per HTTP request.

::

    app = AuditMiddleware(app, enforce=True)            # or app.add_middleware(AuditMiddleware, ...)

Like Starlette's ``GZipMiddleware`` it passes non-``http`` scopes (websocket, lifespan) through untouched,
wraps ``receive`` and ``send``, and writes the record in ``finally``, after the last body byte. Bodies
are teed, never held: each chunk goes on as it arrives (streaming and SSE stay streams); the tee keeps at
most ``shape_limit`` bytes to shape a JSON or form body, and at most ``capture_limit`` bytes of the
response for the body store when the rule says ``capture_body``.

Per request, before the app runs: the matching policy rule (the policy's own route patterns, compiled
once, over the path the framework routes on: the app's router is never called, so nothing of the app
runs twice), the correlation id
(``traceparent`` / the current OpenTelemetry span / ``x-request-id`` / new; echoed as
``x-correlation-id`` and bound into structlog's contextvars), the actor (from verified auth only) and
the decision. The event names the route the framework chose (``scope["route"]``, which Starlette and
FastAPI set once they have routed), else the path with id-like segments collapsed:

- ``disabled = true``: answered 503, recorded (a per-route kill switch);
- missing ``required_scopes`` with ``enforce=True``: answered 403 and recorded as ``authz.denied``;
  with ``enforce=False`` recorded only (``decision.reason = "not_enforced"``);
- ``fail_mode = "closed"``: the response is held until the event is in the journal; if the journal
  refuses it, the client gets 503 instead. Past ``closed_buffer_limit`` bytes the event is written with
  what is known so far (``outcome.partial``) and the rest streams. ``"open"`` (default): served, the
  failure counted in :attr:`AuditMiddleware.stats` and in ``handle.stats``.

A rule at level ``none`` writes no event for allowed requests (refusals are always recorded). Failures
inside the middleware are counted in :attr:`AuditMiddleware.stats`, never raised into the app.

Enforcement needs the actor *before* the app runs: put the authentication middleware outside this one
(with ``app.add_middleware``, add ``AuditMiddleware`` first and the auth middleware after it).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

import orjson
import structlog

from auditlog.actor import ActorResolver, default_actor
from auditlog.handle import AuditHandle, current_handle
from auditlog.integrations._http import _FALLBACK_SCANNER, BodySink, _Recorder
from auditlog.integrations._http_request import _MAX_HEADER_NAMES, _Head, _Request, _Route, digest_headers
from auditlog.policy import DEFAULT_POLICY, Policy
from processors import Scanner, ShapeLimits
from processors.shapes import emittable_key

__all__ = ["AuditMiddleware", "BodySink"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HIDES = re.compile(r"\{(?:email|token|id|\.\.\.)\}")  # placeholders that stand for a hidden segment
_LONG_DIGITS = re.compile(r"[0-9]{12}")  # a card or phone number is an {n} segment too, but is not kept
_MAX_KNOWN_ROUTES = 4096
_MAX_KNOWN_PATH = 512  # longer paths are decided afresh: the kept routes stay a few MiB at most
_MAX_APP_DEPTH = 16  # middleware in front of the router, and mounts within mounts


_SPECIAL_HEADERS = frozenset({"traceparent", "x-request-id", "cookie", "content-type", "content-encoding"})
_MAX_PLANS = 256
# (names as journaled, hidden names, (index, name) of each header whose value the event reads)
_Plan = tuple[list[str], int, tuple[tuple[int, str], ...]]


def _plan(raw_names: tuple[bytes, ...]) -> _Plan:
    names: list[str] = []
    hidden = 0
    special: list[tuple[int, str]] = []
    for i, raw in enumerate(raw_names):
        name = raw.decode("latin-1").lower()
        if name in _SPECIAL_HEADERS:
            special.append((i, name))
        if len(names) < _MAX_HEADER_NAMES and emittable_key(name):
            names.append(name)
        else:
            hidden += 1
    return names, hidden, tuple(special)


class _Plans(dict[tuple[bytes, ...], _Plan]):
    """Header plans by list of header names, at most ``_MAX_PLANS`` (then no more are kept)."""

    def full(self) -> bool:
        return len(self) >= _MAX_PLANS


def _structlog_var(key: str) -> contextvars.ContextVar[Any]:
    """The context variable ``structlog.contextvars.bind_contextvars(key=...)`` sets (made as it makes
    it, in its registry, so ``merge_contextvars`` finds it)."""
    registry: dict[str, contextvars.ContextVar[Any]] | None = getattr(
        structlog.contextvars, "_CONTEXT_VARS", None
    )
    name = f"{structlog.contextvars.STRUCTLOG_KEY_PREFIX}{key}"
    if registry is None:  # a structlog without the registry: bind once to have it made
        token = structlog.contextvars.bind_contextvars(**{key: None})[key]
        var: contextvars.ContextVar[Any] = token.var
        var.reset(token)
        return var
    var = registry.get(name)  # type: ignore[assignment]
    if var is None:
        var = registry[name] = contextvars.ContextVar(name, default=Ellipsis)
    return var


_CORRELATION_ID = _structlog_var("correlation_id")
_SPAN_ID = _structlog_var("span_id")


class _KnownRoutes:
    """Method, name, target and rule per (method, path, raw path, root path), under one policy, scanner
    and generation of the route literals (a new template's words change what a target keeps)."""

    __slots__ = ("generation", "policy", "routes", "scanner")

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.scanner: Scanner | None = None
        self.generation = -1
        self.routes: dict[tuple[object, ...], _Route] = {}

    def reset(self, policy: Policy, scanner: Scanner, generation: int) -> None:
        self.routes = {}
        self.policy, self.scanner, self.generation = policy, scanner, generation

    def put(self, key: tuple[object, ...], route: _Route) -> None:
        if len(self.routes) >= _MAX_KNOWN_ROUTES:
            self.routes = {}
        self.routes[key] = route


class AuditMiddleware(_Recorder):
    """Pure ASGI audit middleware (see the module docstring).

    Args:
        app: the ASGI app to wrap.
        policy: the policy deciding levels, scopes and capture; default: the handle's.
        actor: a resolver ``(scope) -> Actor | None`` over verified auth; default :func:`default_actor`.
        enforce: refuse callers lacking a rule's ``required_scopes`` (403); else record only.
        body_store: where captured response bodies go (see :class:`BodySink`); None: no capture.
        handle: the pipeline; default :func:`auditlog.current_handle` at each request.
        capture_limit: the most response bytes handed to ``body_store`` per request.
        shape_limit: the most body bytes kept to parse and shape a JSON or form body.
        closed_buffer_limit: the most response bytes held under ``fail_mode = "closed"``.
        limits: bounds on shaping work.

    Raises:
        ValueError: a limit is not a positive int.
    """

    # _known: what each known path decided; _plans: what each list of header names says
    # _routes: the template of each route object the framework routed to
    __slots__ = ("_known", "_plans", "_routes", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | None = None,
        actor: ActorResolver | None = None,
        enforce: bool = False,
        body_store: BodySink | None = None,
        handle: AuditHandle | None = None,
        capture_limit: int = 1 << 20,
        shape_limit: int = 64 << 10,
        closed_buffer_limit: int = 8 << 20,
        limits: ShapeLimits | None = None,
    ) -> None:
        super().__init__(
            policy=policy,
            actor=actor or default_actor,
            enforce=enforce,
            body_store=body_store,
            handle=handle,
            capture_limit=capture_limit,
            shape_limit=shape_limit,
            closed_buffer_limit=closed_buffer_limit,
            limits=limits,
        )
        self.app = app
        self._known = _KnownRoutes()
        self._plans = _Plans()
        self._routes: dict[int, tuple[object, str | None]] = {}

    def _lifespan_send(self, send: Send) -> Send:
        """Follow the server's lifespan: once the app has shut down, the process may end at any moment
        (uvicorn re-raises SIGTERM with its default action, so no atexit hook runs): seal the trail stream
        now, and each record after it (:meth:`store.trail.TrailWriter.quiesce`); a new startup resumes."""

        async def lifespan_send(message: Message) -> None:
            await send(message)
            kind = message.get("type")
            handle = self._handle if self._handle is not None else current_handle()
            journal = getattr(handle, "journal", None)
            try:
                if kind == "lifespan.shutdown.complete" and journal is not None:
                    journal.quiesce()
                elif kind == "lifespan.startup.complete" and journal is not None:
                    journal.resume()
            except Exception as exc:  # never into the server's lifespan
                self.stats.error("lifespan", exc)

        return lifespan_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._lifespan_send(send)
            await self.app(scope, receive, send)
            return
        self.stats.requests += 1
        handle = self._handle if self._handle is not None else current_handle()
        try:
            req = self._begin(scope, handle)
        except Exception as exc:
            refusal = self._failed(
                exc, handle=handle, method=str(scope.get("method", "GET")), path=_route_path(scope)
            )
            if refusal is not None:
                await _send_response(send, *refusal)
                return
            await self.app(scope, receive, send)
            return
        if not req.decision.allowed:
            await _send_response(send, *self._refusal(req))
            return
        closed = req.rule.fail_mode == "closed"
        held: list[Message] = []
        held_bytes = 0

        async def audited_receive() -> Message:
            message = await receive()
            try:
                if message["type"] == "http.request":
                    self._tee_request(req, message.get("body", b""))
            except Exception as exc:
                self.stats.error("receive", exc)
            return message

        async def audited_send(message: Message) -> None:
            nonlocal held_bytes
            try:
                message = self._on_send(req, message)
            except Exception as exc:
                self.stats.error("send", exc)
            if not closed or req.committed:
                await send(message)
                req.forwarded = req.started
                return
            held.append(message)
            if message["type"] == "http.response.body":
                held_bytes += len(message.get("body", b""))
            if req.complete or held_bytes > self._closed_limit:
                req.partial = not req.complete
                ok = self._commit(req)
                messages = held[:]
                held.clear()
                if ok:
                    for m in messages:
                        await send(m)
                    req.forwarded = True
                else:
                    await _send_response(send, *self._closed_refusal(req))

        corr = req.corr
        cid_token = _CORRELATION_ID.set(corr.correlation_id)
        span_token = _SPAN_ID.set(corr.span_id)
        try:
            await self.app(scope, audited_receive, audited_send)
        except BaseException as exc:
            req.error_type = type(exc).__name__
            raise
        finally:
            _CORRELATION_ID.reset(cid_token)
            _SPAN_ID.reset(span_token)
            if not req.committed:
                ok = self._commit(req)
                if closed and req.error_type is None:
                    messages = held[:]
                    held.clear()
                    if ok:
                        for m in messages:
                            await send(m)
                    elif not req.forwarded:
                        await _send_response(send, *self._closed_refusal(req))

    def _begin(self, scope: Scope, handle: AuditHandle | None) -> _Request:
        path = scope.get("path") or "/"
        raw = scope.get("raw_path")
        root = scope.get("root_path") or ""
        method = str(scope.get("method", "GET"))
        query = scope.get("query_string") or b""
        head = self._head(scope.get("headers") or ())
        # Method, name, target and rule follow from method, path and root path alone when the query is
        # empty: found once, kept per policy and scanner. Only paths whose redacted target hides nothing
        # are kept (route words, short numbers, UUIDs), so no token, email, card number or flagged
        # segment is held longer than its request.
        key = route = None
        if not query:
            key = (method, path, raw, root)
            policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
            scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
            known = self._known
            generation = self._words.generation
            if known.policy is not policy or known.scanner is not scanner or known.generation != generation:
                known.reset(policy, scanner, generation)
            route = known.routes.get(key)
        req = self._start(
            handle=handle,
            headers=(),
            head=head,
            method=method,
            path=path,
            route_path=_route_path(scope),
            target=raw.decode("latin-1") if route is None and isinstance(raw, bytes) else path,
            query=query.decode("latin-1") if query else "",  # a kept route: these are not read
            context=scope,
            route=route,
        )
        req.root = root
        if (
            route is None
            and key is not None
            and len(path) <= _MAX_KNOWN_PATH
            and not _HIDES.search(req.target)
            and not _LONG_DIGITS.search(path)
        ):
            action = orjson.dumps({"name": req.name, "method": req.method, "target": req.target})
            self._known.put(key, (req.method, req.name, req.target, req.rule, orjson.Fragment(action)))
        return req

    def _head(self, raw: Any) -> _Head:
        """What the request's headers say (see :func:`~auditlog.integrations._http.digest_headers`),
        decoding only the values it reads: which names there are, and where those values sit, is worked
        out once per list of header names (kept when every name may be journaled)."""
        if type(raw) is not list and type(raw) is not tuple:
            raw = list(raw)
        key = tuple([k for k, _ in raw])
        plan = self._plans.get(key)
        if plan is None:
            plan = _plan(key)
            if not plan[1] and not self._plans.full():
                self._plans[key] = plan
        names, hidden, special = plan
        if not special:
            return names, hidden, None, None, 0, None, False
        values = [(name, raw[i][1].decode("latin-1")) for i, name in special]
        _, _, traceparent, request_id, cookies, ctype, encoded = digest_headers(values)
        return names, hidden, traceparent, request_id, cookies, ctype, encoded

    def _route_name(self, req: _Request) -> str | None:
        """The template of the route Starlette/FastAPI chose (``scope["route"]``, set by the router once
        it has routed), under the collapsed prefix of the mounts it went through; None: not routed."""
        scope = req.context
        if type(scope) is not dict and not isinstance(scope, MutableMapping):
            return None
        route = scope.get("route")
        if route is None:
            return None
        routes = self._routes
        kept = routes.get(id(route))
        if kept is None or kept[0] is not route:
            kept = (route, _template(route))
            if len(routes) >= _MAX_KNOWN_ROUTES:
                routes.clear()
            routes[id(route)] = kept
        path = kept[1]
        if path is None:
            return None
        root = scope.get("root_path") or ""
        first = req.root
        if root == first or not root.startswith(first):
            return path
        return self._mount_prefix(root[len(first) :], req) + path

    def _declared_routes(self) -> Iterable[str]:
        return _route_table(self.app)

    def _on_send(self, req: _Request, message: Message) -> Message:
        kind = message["type"]
        if kind == "http.response.start":
            headers = list(message.get("headers") or ())
            ctype = encoding = None
            for name, value in headers:
                lname = name.lower()
                if lname == b"content-type":
                    ctype = value.decode("latin-1")
                elif lname == b"content-encoding":
                    encoding = value.decode("latin-1")
            self._response_head(req, int(message["status"]), ctype, encoding)
            headers.append((b"x-correlation-id", req.corr.correlation_id.encode("ascii")))
            return {**message, "headers": headers}
        if kind == "http.response.body":
            self._tee_response(req, message.get("body", b""))
            if not message.get("more_body", False):
                req.complete = True
        return message


def _route_table(app: object) -> Iterator[str]:
    """The path templates of a Starlette/FastAPI route table under ``app`` (through the middleware in
    front of it, by their ``app`` attribute), mounts and hosts included; attributes read, nothing called."""
    node = app
    for _ in range(_MAX_APP_DEPTH):
        routes = getattr(node, "routes", None)
        if isinstance(routes, list):
            yield from _paths_of(routes, 0)
            return
        node = getattr(node, "app", None)
        if node is None:
            return


def _paths_of(routes: list[Any], depth: int) -> Iterator[str]:
    for route in routes:
        path = getattr(route, "path", None)
        if type(path) is str:
            yield path
        inner = getattr(route, "routes", None)
        if isinstance(inner, list) and depth < _MAX_APP_DEPTH:
            yield from _paths_of(inner, depth + 1)


def _template(route: object) -> str | None:
    """A routed route's template (its ``path``); None: not routed, or a Mount serving an app that is not
    a router (the collapsed path names it), or a Mount or Host whose app routes on its own. Worked out
    once per route object (the app's routes do not change their paths)."""
    path = getattr(route, "path", None)
    if type(path) is not str or isinstance(getattr(route, "routes", None), list):
        return None
    if getattr(route, "endpoint", None) is None and hasattr(route, "app"):
        return None
    return path


def _route_path(scope: Scope) -> str:
    """The path Starlette routes on: ``path`` without the ``root_path`` it starts with."""
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _send_response(send: Send, code: int, headers: list[tuple[str, str]], payload: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": code, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
