"""``AuditWSGIMiddleware``: the ASGI middleware's semantics for WSGI apps (Flask, Django, any PEP 3333 app).

::

    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app)                 # Flask
    application = AuditWSGIMiddleware(get_wsgi_application())       # Django (wsgi.py)

It wraps ``start_response`` (adding ``x-correlation-id``), counts and tees ``wsgi.input`` lazily as the
app reads it (nothing is read ahead), tees the response iterable as the server pulls it, and writes the
event in the iterable's ``close()``, after the last byte. The correlation id is in
``environ["auditlog.correlation_id"]`` and bound into structlog's contextvars while the app runs and
while each chunk is produced.

The actor comes from verified auth only: ``environ["auditlog.actor"]`` / ``environ["auditlog.claims"]``
set by an authentication layer (a Django middleware: ``request.META`` *is* the environ; Flask:
``request.environ``) or ``REMOTE_USER``; see :func:`auditlog.actor.wsgi_actor`. It is read before the app
runs (for enforcement) and again at the end (for the record), so an app that authenticates inside
still gets its actor recorded.

Rules are matched before the app runs with the policy's own route patterns over ``PATH_INFO``; the app's
URL map is never called (its converters run once, in the app). The event names the URL rule Flask
recorded once it routed (``request.url_rule``, found through ``environ["werkzeug.request"]``), or what
an optional ``route`` finder reads from the environ after the app ran, else the path with id-like
segments collapsed. Decisions, ``fail_mode`` and levels behave as in :mod:`auditlog.integrations.asgi`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Protocol

import structlog

from auditlog.actor import ANONYMOUS, ActorResolver, wsgi_actor
from auditlog.handle import AuditHandle, current_handle
from auditlog.integrations._http import BodySink, _Recorder
from auditlog.integrations._http_request import _Request
from auditlog.policy import Policy
from processors import ShapeLimits

__all__ = ["AuditWSGIMiddleware"]

Environ = MutableMapping[str, Any]
Headers = list[tuple[str, str]]
Write = Callable[[bytes], object]


class StartResponse(Protocol):
    def __call__(self, status: str, headers: Headers, exc_info: Any = ..., /) -> Write: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteFinder = Callable[[Environ], "str | None"]


def _header_pairs(environ: Environ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append((key[5:].replace("_", "-").lower(), str(value)))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            out.append((key.replace("_", "-").lower(), str(value)))
    return out


def flask_route(environ: Environ) -> str | None:
    """The URL rule Flask (werkzeug) matched for this request, read after it routed: werkzeug keeps the
    request in ``environ["werkzeug.request"]`` and Flask sets its ``url_rule``. None: not routed."""
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None) if request is not None else None
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None


class _Input:
    """``wsgi.input`` counted and teed as the app reads it; never read ahead."""

    __slots__ = ("_rec", "_req", "_stream")

    def __init__(self, stream: Any, rec: _Recorder, req: _Request) -> None:
        self._stream = stream
        self._rec = rec
        self._req = req

    def _seen(self, data: bytes) -> bytes:
        try:
            self._rec._tee_request(self._req, data)
        except Exception as exc:
            self._rec.stats.error("input", exc)
        return data

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        return self._seen(data)

    def readline(self, size: int = -1, /) -> bytes:
        data: bytes = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        return self._seen(data)

    def readinto(self, buffer: Any, /) -> int | None:
        n: int | None = self._stream.readinto(buffer)
        if n:
            self._seen(bytes(memoryview(buffer)[:n]))
        return n

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        return [self._seen(line) for line in self._stream.readlines(hint)]

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield self._seen(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Body:
    """The response iterable, teed chunk by chunk; ``close()`` writes the event (once)."""

    __slots__ = ("_iter", "_mw", "_req", "_result")

    def __init__(self, result: Iterable[bytes], mw: AuditWSGIMiddleware, req: _Request) -> None:
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._mw = mw
        self._req = req

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iter is None:
            self._iter = iter(self._result)
        tokens = self._mw._bind(self._req)
        try:
            chunk = next(self._iter)
        except StopIteration:
            self._req.complete = True
            raise
        except BaseException as exc:
            self._req.error_type = type(exc).__name__
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        try:
            self._mw._tee_response(self._req, chunk)
        except Exception as exc:
            self._mw.stats.error("body", exc)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._mw._finish(self._req)


class _SizedBody(_Body):
    """:class:`_Body` over a sized result (a list of chunks): its length passes through, as PEP 3333
    servers (wsgiref, Django's runserver) set Content-Length from a one-chunk response's length."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


class AuditWSGIMiddleware(_Recorder):
    """WSGI audit middleware (see the module docstring). Arguments as :class:`~.asgi.AuditMiddleware`;
    ``actor`` is a resolver over the WSGI environ (default :func:`auditlog.actor.wsgi_actor`), ``route`` an
    optional ``(environ) -> template`` finder, called after the app ran (default :func:`flask_route`)."""

    __slots__ = ("_route", "app")

    def __init__(
        self,
        app: WSGIApp,
        *,
        policy: Policy | None = None,
        actor: ActorResolver | None = None,
        enforce: bool = False,
        body_store: BodySink | None = None,
        handle: AuditHandle | None = None,
        route: RouteFinder | None = None,
        capture_limit: int = 1 << 20,
        shape_limit: int = 64 << 10,
        closed_buffer_limit: int = 8 << 20,
        limits: ShapeLimits | None = None,
    ) -> None:
        super().__init__(
            policy=policy,
            actor=actor or wsgi_actor,
            enforce=enforce,
            body_store=body_store,
            handle=handle,
            capture_limit=capture_limit,
            shape_limit=shape_limit,
            closed_buffer_limit=closed_buffer_limit,
            limits=limits,
        )
        self.app = app
        self._route = route or flask_route

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        self.stats.requests += 1
        handle = self._handle if self._handle is not None else current_handle()
        try:
            req = self._begin(environ, handle)
        except Exception as exc:
            refusal = self._failed(  # the rule by PATH_INFO, as the framework routes
                exc,
                handle=handle,
                method=str(environ.get("REQUEST_METHOD", "GET")),
                path=str(environ.get("PATH_INFO") or "/"),
            )
            if refusal is not None:
                code, headers, payload = refusal
                start_response(_status_line(code), headers)
                return [payload]
            return self.app(environ, start_response)
        if not req.decision.allowed:
            code, headers, payload = self._refusal(req)
            start_response(_status_line(code), headers)
            return [payload]
        environ["auditlog.correlation_id"] = req.corr.correlation_id
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = _Input(stream, self, req)
        if req.rule.fail_mode == "closed":
            return self._closed(environ, start_response, req)

        def audited_start(status: str, headers: Headers, exc_info: Any = None) -> Write:
            headers = self._on_start(req, status, headers)
            write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            def audited_write(data: bytes) -> object:
                self._tee_response(req, data)
                return write(data)

            return audited_write

        tokens = self._bind(req)
        try:
            result = self.app(environ, audited_start)
        except BaseException as exc:
            req.error_type = type(exc).__name__
            self._finish(req)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(result, wrapper):
            return self._file(result, req)
        if hasattr(type(result), "__len__"):  # a list: the server may set Content-Length from its length
            return _SizedBody(result, self, req)
        return _Body(result, self, req)

    def _file(self, result: Any, req: _Request) -> Iterable[bytes]:
        """The server's own ``wsgi.file_wrapper`` result, handed back as it is (so the server can still
        use sendfile): its bytes are counted from the response's Content-Length, never read here; the
        event is written when the server closes it."""
        req.resp_buf = req.resp_capture = None
        original = getattr(result, "close", None)

        def close() -> None:
            try:
                if original is not None:
                    original()
            finally:
                self._file_done(req)

        try:
            result.close = close
        except (AttributeError, TypeError):  # a wrapper that takes no attribute: recorded now
            self._file_done(req)
        served: Iterable[bytes] = result
        return served

    def _file_done(self, req: _Request) -> None:
        req.complete = True
        if req.resp_length is not None:
            req.resp_bytes = req.resp_length
        self._finish(req)

    def _closed(self, environ: Environ, start_response: StartResponse, req: _Request) -> Iterable[bytes]:
        """``fail_mode = "closed"``: hold the response until the event is written; 503 if it is not."""
        head: list[tuple[str, Headers]] = []
        chunks: list[bytes] = []

        def held_start(status: str, headers: Headers, exc_info: Any = None) -> Write:
            head[:] = [(status, self._on_start(req, status, headers))]
            return chunks.append

        tokens = self._bind(req)
        result: Iterable[bytes] = ()
        try:
            result = self.app(environ, held_start)
            size = 0
            it = iter(result)
            for chunk in it:
                chunks.append(chunk)
                self._tee_response(req, chunk)
                size += len(chunk)
                if size > self._closed_limit:
                    req.partial = True
                    break
            else:
                req.complete = True
        except BaseException as exc:
            req.error_type = type(exc).__name__
            self._finish(req)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        if req.complete:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not self._commit(req) or not head:
            if not req.complete:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            code, headers, payload = self._closed_refusal(req)
            start_response(_status_line(code), headers)
            return [payload]
        start_response(*head[0])
        if req.complete:
            return chunks
        return _Rest(chunks, it, result, self, req)

    def _begin(self, environ: Environ, handle: AuditHandle | None) -> _Request:
        path_info = environ.get("PATH_INFO") or "/"
        path = (environ.get("SCRIPT_NAME") or "") + path_info
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        target = raw.split("?", 1)[0] if isinstance(raw, str) and raw.startswith("/") else path
        return self._start(
            handle=handle,
            headers=_header_pairs(environ),
            method=str(environ.get("REQUEST_METHOD", "GET")),
            path=path,
            route_path=path_info,  # what Flask's and Django's routers match
            target=target,
            query=str(environ.get("QUERY_STRING") or ""),
            context=environ,
        )

    def _route_name(self, req: _Request) -> str | None:
        """The route the framework recorded once it routed (``route``, default :func:`flask_route`), as
        read when the app started its response (Flask forgets its request when the app returns)."""
        name = req.routed
        if name is None:
            return None
        env = _environ_of(req)
        script = env.get("SCRIPT_NAME") or ""
        if not script:
            return name
        return self._mount_prefix(script, req) + name

    def _declared_routes(self) -> Iterable[str]:
        """The URL rules of the Flask app wrapped (``app`` or its bound ``wsgi_app``), read from its
        ``url_map``; other apps declare none (the rules the route finder reports still teach)."""
        owner = getattr(self.app, "__self__", self.app)
        url_map = getattr(owner, "url_map", None)
        rules = getattr(url_map, "iter_rules", None)
        if rules is None:
            return ()
        return [r.rule for r in rules() if isinstance(getattr(r, "rule", None), str)]

    def _on_start(self, req: _Request, status: str, headers: Headers) -> Headers:
        if self._route is not None:
            try:
                req.routed = self._route(_environ_of(req))
            except Exception as exc:
                self.stats.error("route", exc)
        try:
            ctype = encoding = None
            length = None
            for name, value in headers:
                lname = name.lower()
                if lname == "content-type":
                    ctype = value
                elif lname == "content-encoding":
                    encoding = value
                elif lname == "content-length":
                    length = value
            self._response_head(req, int(status[:3]), ctype, encoding)
            if length is not None and length.isdigit():
                req.resp_length = int(length)
        except Exception as exc:
            self.stats.error("start_response", exc)
        return [*headers, ("X-Correlation-ID", req.corr.correlation_id)]

    def _bind(self, req: _Request) -> dict[str, Any]:
        return dict(
            structlog.contextvars.bind_contextvars(
                correlation_id=req.corr.correlation_id, span_id=req.corr.span_id
            )
        )

    def _finish(self, req: _Request) -> None:
        if req.committed:
            return
        if not req.actor.authenticated:
            try:
                req.actor = self._actor(_environ_of(req)) or ANONYMOUS
            except Exception as exc:
                self.stats.error("actor", exc)
        self._commit(req)


class _Rest:
    """Under ``fail_mode = "closed"`` past the buffer limit: the held chunks, then the rest, streamed."""

    __slots__ = ("_held", "_it", "_mw", "_req", "_result")

    def __init__(
        self,
        held: list[bytes],
        it: Iterator[bytes],
        result: Iterable[bytes],
        mw: AuditWSGIMiddleware,
        req: _Request,
    ) -> None:
        self._held = held
        self._it = it
        self._result = result
        self._mw = mw
        self._req = req

    def __iter__(self) -> Iterator[bytes]:
        yield from self._held
        for chunk in self._it:
            self._mw._tee_response(self._req, chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


def _status_line(code: int) -> str:
    return {403: "403 Forbidden", 503: "503 Service Unavailable"}.get(code, f"{code} Error")


def _environ_of(req: _Request) -> Environ:
    env = req.context
    return env if isinstance(env, MutableMapping) else {}
