"""The middleware does not change the app: it never calls the app's routing objects, streams and file
responses stay what they were, nothing is imported on the request path."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import wsgiref.simple_server
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import flask
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.testclient import TestClient
from werkzeug.routing import BaseConverter

from auditlog.integrations.asgi import AuditMiddleware
from auditlog.integrations.wsgi import AuditWSGIMiddleware
from auditlog.policy import loads

POLICY = loads('version = 1\nid = "transparency"\n')
TIMEOUT = httpx.Timeout(10.0)


class CountingRoute(BaseRoute):
    """A custom route with a side effect in ``matches`` (as Starlette's own instrumentation test has)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls = 0

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        self.calls += 1
        if scope["type"] == "http" and scope["path"] == self.path:
            return Match.FULL, {"endpoint": self.handle}
        return Match.NONE, {}

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("counted")(scope, receive, send)


class TestNoSecondRouting:
    def test_custom_route_matches_once(self, pipeline: Any) -> None:
        """A custom route's ``matches`` runs once per request: the middleware never routes itself."""
        handle, _directory = pipeline
        route = CountingRoute("/counted")
        app = Starlette(routes=[route])
        app.add_middleware(AuditMiddleware, handle=handle)
        with TestClient(app) as client:
            assert "counted" == client.get("/counted").text
        assert 1 == route.calls

    def test_flask_converter_runs_once(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A Flask URL converter's ``to_python`` runs once per request; the event names the URL rule."""
        handle, directory = pipeline
        calls: list[str] = []

        class Counting(BaseConverter):
            def to_python(self, value: str) -> str:
                calls.append(value)
                return value

        app = flask.Flask("once")
        app.url_map.converters["counting"] = Counting
        app.add_url_rule("/items/<counting:item>", "item", lambda item: "ok")
        app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle)  # type: ignore[method-assign]
        # no `with`: the client would match again to keep the context; buffered: the body is closed
        assert b"ok" == app.test_client().get("/items/abc", buffered=True).data
        assert ["abc"] == calls
        handle.flush()
        [event] = kit.events(directory, "http.request")
        assert "/items/<counting:item>" == event["action"]["name"]


# Routes in Starlette's order; the policy names each, in the same order, with the same template.
TEMPLATES = [
    "/users/me",
    "/users/{user_id:int}",
    "/users/{name}",
    "/users/{user_id:int}/orders/{order:uuid}",
    "/files/{rest:path}",
    "/api/v1/items/{item_id}",
    "/price/{p:float}",
]
RULES = "\n".join(
    f'[[rules]]\nid = "r{i}"\nmatch = {{ route = "{t}" }}\nrequired_scopes = ["s{i}"]\n'
    for i, t in enumerate(TEMPLATES)
)
ROUTED = loads(f'version = 1\nid = "routed"\n{RULES}')
SEGMENTS = st.sampled_from(
    ["users", "me", "42", "x", "orders", "files", "a.txt", "api", "v1", "items", "price", "3.5", "7",
     "123e4567-e89b-12d3-a456-426614174000", "", "%2F", "Z"]
)  # fmt: skip


def _routed_app(seen: list[str]) -> Starlette:
    def endpoint(template: str) -> Any:
        async def served(request: Request) -> PlainTextResponse:
            seen.append(template)
            return PlainTextResponse(template)

        return served

    inner = [Route(t.removeprefix("/api"), endpoint(t)) for t in TEMPLATES if t.startswith("/api")]
    routes: list[BaseRoute] = []
    for t in TEMPLATES:
        if t.startswith("/api"):
            if not any(isinstance(r, Mount) for r in routes):
                routes.append(Mount("/api", routes=inner))
        else:
            routes.append(Route(t, endpoint(t)))
    return Starlette(routes=routes)


class TestPolicyAgreesWithRouter:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(segments=st.lists(SEGMENTS, min_size=1, max_size=5))
    def test_pre_dispatch_rule_is_the_routed_one(self, segments: list[str]) -> None:
        """For rules naming an app's routes, the rule decided before dispatch (policy patterns over the
        path) is the one of the route Starlette chose, or the defaults when it chose none."""
        path = "/" + "/".join(segments)
        seen: list[str] = []
        app = _routed_app(seen)

        async def go() -> None:
            scope = {
                "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
                "query_string": b"", "headers": [], "scheme": "http", "server": ("t", 80),
                "asgi": {"version": "3.0"},
            }  # fmt: skip

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: dict[str, Any]) -> None:
                pass

            await app(scope, receive, send)

        anyio.run(go)
        rule = ROUTED.match_request(path=path, method="GET")
        expected = f"r{TEMPLATES.index(seen[0])}" if seen else "defaults"
        assert expected == rule.id


_FIRST_REQUEST = """
import sys, anyio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from auditlog.integrations.asgi import AuditMiddleware

async def ok(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/x", ok)])
mw = AuditMiddleware(app)
seen = []

async def go(asgi):
    scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "query_string": b"",
             "headers": [], "root_path": "", "scheme": "http", "server": ("t", 80),
             "asgi": {"version": "3.0"}}
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        pass
    await asgi(scope, receive, send)
    if asgi is mw:
        seen.extend(set(sys.modules) - before)

before = set(sys.modules)
anyio.run(go, app)  # the app alone first: what the event loop and the app import is not ours
before = set(sys.modules)
anyio.run(go, mw)
print(sorted(seen))
"""


class TestFirstRequestImportsNothing:
    def test_no_import_on_the_request_path(self) -> None:
        """Everything the middleware needs is imported when it is built: the first request (inside the
        event loop) imports nothing (a fresh interpreter, so no other test has imported it first)."""
        import os
        import subprocess

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_REQUEST], capture_output=True, text=True, env=env, timeout=60
        )
        assert (0, "[]") == (out.returncode, out.stdout.strip()), out.stderr[-2000:]


class _Handler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgiref(app: Any, seen: list[bool]) -> Iterator[str]:
    """wsgiref's server (Django's runserver is one), recording whether each result was the server's own
    file wrapper (what lets a server use sendfile)."""

    class Handler(wsgiref.simple_server.ServerHandler):
        def finish_response(self) -> None:
            seen.append(self.result_is_file())
            super().finish_response()

    class RequestHandler(_Handler):
        def handle(self) -> None:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.parse_request():
                return
            handler = Handler(
                self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False
            )
            handler.request_handler = self  # type: ignore[attr-defined]
            handler.run(self.server.get_app())  # type: ignore[attr-defined]

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=RequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class TestWSGIResultsPassThrough:
    def test_file_wrapper_and_length_pass_through(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The server still sees its own file wrapper (sendfile), and a one-chunk list still gets its
        Content-Length from wsgiref; both requests are journaled."""
        handle, directory = pipeline

        def app(environ: Any, start_response: Any) -> Any:
            if environ["PATH_INFO"] == "/file":
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
                return environ["wsgi.file_wrapper"](io.BytesIO(b"hello"))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]

        seen: list[bool] = []
        mw = AuditWSGIMiddleware(app, handle=handle)
        with serve_wsgiref(mw, seen) as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            file_response = client.get("/file")
            list_response = client.get("/list")
        assert (b"hello", b"hello") == (file_response.content, list_response.content)
        assert "5" == list_response.headers.get("content-length")
        assert [True, False] == seen
        events = kit.wait_events(handle, directory, 2)
        assert [5, 5] == [e["http"]["response_bytes"] for e in events]
