"""AuditWSGIMiddleware against real servers: Flask and Django under werkzeug's threaded WSGI server."""

from __future__ import annotations

import sys
import threading
import time
import types
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import flask
import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlog.canaries import load_canaries
from auditlog.handle import AuditHandle
from auditlog.integrations.wsgi import AuditWSGIMiddleware
from tests._support import gate_policy

CANARIES = load_canaries()
POLICY = gate_policy(
    "wsgi-test",
    key="route",
    admin="/admin/*",
    disabled="/disabled",
    closed="/closed",
    rules="""
[[rules]]
id = "capture"
match = { route = "/report" }
capture_body = true
""",
)
TOKENS = {
    "tok-admin": {"sub": "alice", "tenant": "acme", "scope": "admin read"},
    "tok-reader": {"sub": "bob", "scope": "read"},
}
TIMEOUT = httpx.Timeout(10.0)


def verified_auth(app: Any) -> Any:
    """The app's auth layer, outside the audit middleware: verified claims into the environ."""

    def wrapper(environ: dict[str, Any], start_response: Any) -> Any:
        token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        if token in TOKENS:
            environ["auditlog.claims"] = TOKENS[token]
        return app(environ, start_response)

    return wrapper


def build_flask(handle: AuditHandle, gate: threading.Event | None = None, **kw: Any) -> Any:
    app = flask.Flask("audit-wsgi-test")

    @app.post("/users/<int:user_id>")
    def user(user_id: int) -> Any:
        body = flask.request.get_json()
        return {"id": user_id, "echo": body}

    @app.get("/whoami")
    def whoami() -> Any:
        time.sleep(0.001)
        return {"cid": structlog.contextvars.get_contextvars().get("correlation_id")}

    @app.get("/admin/reset")
    def admin() -> Any:
        return {"ok": "reset"}

    @app.get("/disabled")
    def disabled() -> Any:
        raise AssertionError("a disabled route must not run")

    @app.get("/closed")
    def closed() -> Any:
        return {"ok": "closed"}

    @app.get("/open")
    def open_() -> Any:
        return {"ok": "open"}

    @app.get("/report")
    def report() -> Any:
        return flask.Response("y" * 3000, mimetype="text/plain")

    @app.post("/boom")
    def boom() -> Any:
        raise RuntimeError(flask.request.get_data(as_text=True))

    @app.post("/form")
    def form() -> Any:
        return {"n": len(flask.request.form)}

    @app.get("/files/<name>")
    def files(name: str) -> Any:
        return {"n": len(name)}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[bytes]:
            yield b"first\n"
            released = gate is not None and gate.wait(5)
            yield b"released\n" if released else b"timeout\n"

        return flask.Response(chunks(), mimetype="text/plain")

    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle, **kw)  # type: ignore[method-assign]
    return verified_auth(app)


class TestFlask:
    def test_event_fields_route_template_and_correlation(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Flask's URL rule is the action name; body read through wsgi.input is shaped; id echoed."""
        handle, directory = pipeline
        with kit.serve_wsgi(build_flask(handle)) as base:
            r = httpx.post(
                f"{base}/users/42?token=abc",
                json={"password": "x", "n": 1},
                headers={"x-request-id": "req-wsgi-000001", "authorization": "Bearer tok-reader"},
                timeout=TIMEOUT,
            )
        assert 200 == r.status_code
        assert "req-wsgi-000001" == r.headers["x-correlation-id"]
        [event] = kit.wait_events(handle, directory, 1)
        assert {"name": "/users/<int:user_id>", "method": "POST", "target": "/users/{n}?token="} == event[
            "action"
        ]
        assert {"n", "password"} == set(event["args_shape"]["body"]["keys"])
        assert {"subject": "bob", "tenant": None, "client_id": None, "scopes": ["read"]} == event["actor"]
        assert 200 == event["outcome"]["http_status"]
        assert event["http"]["request_bytes"] > 0

    def test_streamed_chunks_reach_client_before_the_end(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A generator response streams chunk by chunk; the event is written in close()."""
        handle, directory = pipeline
        gate = threading.Event()
        with (
            kit.serve_wsgi(build_flask(handle, gate)) as base,
            httpx.stream("GET", f"{base}/stream", timeout=TIMEOUT) as r,
        ):
            chunks = r.iter_raw()
            first = next(chunks)
            gate.set()
            rest = b"".join(chunks)
        assert (b"first\n", b"released\n") == (first, rest)
        [event] = kit.wait_events(handle, directory, 1)
        assert 15 == event["http"]["response_bytes"]

    def test_concurrent_requests_do_not_bleed(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """100 concurrent requests on threads: each saw its own id; 100 events."""
        handle, directory = pipeline
        with (
            kit.serve_wsgi(build_flask(handle)) as base,
            httpx.Client(base_url=base, timeout=TIMEOUT) as client,
        ):

            def one(i: int) -> tuple[str, str]:
                rid = f"req-{i:05d}-threaded"
                return rid, client.get("/whoami", headers={"x-request-id": rid}).json()["cid"]

            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(one, range(100)))
        assert all(a == b for a, b in results)
        evs = kit.wait_events(handle, directory, 100)
        assert {r[0] for r in results} == {e["correlation_id"] for e in evs}

    def test_enforcement_kill_switch_and_fail_closed(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """403 + authz.denied without the scope; 503 for a disabled route; 503 when closed and refused."""
        handle, directory = pipeline
        with kit.serve_wsgi(build_flask(handle, enforce=True)) as base:
            denied = httpx.get(f"{base}/admin/reset", headers={"authorization": "Bearer tok-reader"})
            allowed = httpx.get(f"{base}/admin/reset", headers={"authorization": "Bearer tok-admin"})
            disabled = httpx.get(f"{base}/disabled")
            handle.flush()
            monkeypatch.setattr(handle, "journal", kit.RefusingJournal(handle.journal))
            closed = httpx.get(f"{base}/closed")
            opened = httpx.get(f"{base}/open")
        assert (403, 200, 503, 503, 200) == tuple(
            r.status_code for r in (denied, allowed, disabled, closed, opened)
        )
        assert "audit_unavailable" == closed.json()["error"]
        assert {"ok": "open"} == opened.json()
        monkeypatch.undo()
        kit.wait_events(handle, directory, 3)
        event, killed = kit.events(directory, "authz.denied")  # every refusal is one kind of event
        assert ["admin"] == event["decision"]["missing"]
        assert "bob" == event["actor"]["subject"]
        assert ("/disabled", "disabled") == (killed["action"]["name"], killed["outcome"]["status"])
        kinds = [(e["action"]["name"], e["outcome"]["status"]) for e in kit.events(directory, "http.request")]
        assert [("/admin/reset", "ok")] == kinds

    def test_body_capture(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """capture_body: the capped response body goes to the sink when the response is closed."""
        handle, directory = pipeline
        bodies = kit.MemoryBodies()
        with kit.serve_wsgi(build_flask(handle, body_store=bodies, capture_limit=100)) as base:
            r = httpx.get(f"{base}/report", headers={"authorization": "Bearer tok-admin"})
        assert 3000 == len(r.content)
        deadline = time.monotonic() + 5
        while not bodies.bodies and time.monotonic() < deadline:
            time.sleep(0.02)
        [(key, (body, meta))] = bodies.bodies.items()
        assert b"y" * 100 == body
        assert ("acme", "alice", 3000) == (meta.tenant, meta.subject, meta.original_size)
        [event] = kit.wait_events(handle, directory, 1)
        assert key == event["body_ref"]["key"]


def _django_app() -> Any:
    import django
    from django.conf import settings as dj

    urls = types.ModuleType("audit_django_urls")
    sys.modules[urls.__name__] = urls
    if not dj.configured:
        dj.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-a-secret",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF=urls.__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        django.setup()
    from django.http import JsonResponse
    from django.urls import path

    def item(request: Any, pk: int) -> Any:
        request.META["auditlog.claims"] = {"sub": "dora", "scope": "read"}
        return JsonResponse({"pk": pk, "n": len(request.body)})

    urls.urlpatterns = [path("items/<int:pk>", item)]  # type: ignore[attr-defined]
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


class TestDjango:
    def test_django_wsgi_handler(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Django's WSGI handler: the collapsed path as action name (the middleware never calls Django's
        URL resolver), body shaped, actor set by the app's auth."""
        handle, directory = pipeline
        app = AuditWSGIMiddleware(_django_app(), handle=handle)
        with kit.serve_wsgi(app) as base:
            r = httpx.post(f"{base}/items/9?x=1", json={"secret_field": "v"}, timeout=TIMEOUT)
        assert 200 == r.status_code
        assert {"pk": 9, "n": 20} == r.json()
        [event] = kit.wait_events(handle, directory, 1)
        assert "/items/{n}" == event["action"]["name"]
        assert {"secret_field"} == set(event["args_shape"]["body"]["keys"])
        assert "dora" == event["actor"]["subject"]
        assert r.headers["x-correlation-id"] == event["correlation_id"]


PLACES = ("json_value", "json_key", "form", "query_value", "query_key", "path", "error", "cookie", "header")


@pytest.fixture(scope="module")
def canary_server(kit: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with (
        kit.canary_sinks(tmp_path_factory.mktemp("wsgi-canaries"), POLICY) as sinks,
        kit.serve_wsgi(build_flask(sinks.handle)) as base,
        httpx.Client(base_url=base, timeout=TIMEOUT) as client,
    ):
        yield sinks, client


class TestCanaries:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(canary=st.sampled_from(sorted(CANARIES.values.values())), where=st.sampled_from(PLACES))
    def test_nothing_leaks(self, kit: SimpleNamespace, canary_server: Any, canary: str, where: str) -> None:
        """Canaries in bodies, query, path, headers, cookies and error messages stay out of every sink."""
        sinks, client = canary_server
        q = urllib.parse.quote(canary, safe="")
        before = len(kit.events(sinks.directory))
        if where == "json_value":
            r = client.post("/users/1", json={"v": canary})
        elif where == "json_key":
            r = client.post("/users/1", json={canary: 1})
        elif where == "form":
            r = client.post("/form", data={"password": canary})
        elif where == "query_value":
            r = client.get(f"/whoami?token={q}")
        elif where == "query_key":
            r = client.get(f"/whoami?{q}=1")
        elif where == "path":
            r = client.get(f"/files/{q}")
        elif where == "error":
            r = client.post("/boom", content=canary.encode())
        elif where == "cookie":
            r = client.get("/whoami", headers={"cookie": f"sid={q}"})
        else:
            r = client.get("/whoami", headers={"x-note": q, "x-request-id": q})
        assert r.status_code in (200, 404, 500)
        assert before + 1 == len(kit.wait_events(sinks.handle, sinks.directory, before + 1))
        sinks.assert_no_leaks()
