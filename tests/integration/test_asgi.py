"""AuditMiddleware against real servers: uvicorn on 127.0.0.1, FastAPI and plain Starlette."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from auditlog.canaries import load_canaries
from auditlog.handle import AuditHandle
from auditlog.integrations.asgi import AuditMiddleware
from tests._support import gate_policy

CANARIES = load_canaries()
POLICY = gate_policy(
    "asgi-test",
    key="route",
    admin="/admin/*",
    disabled="/disabled",
    closed="/closed*",
    rules="""
[[rules]]
id = "login"
match = { route = "/login", method = "POST" }
level = "values"
allow = ["username", "remember"]
fingerprint = ["username"]

[[rules]]
id = "capture"
match = { route = "/report" }
capture_body = true
body_retention = "1d"
""",
)
TOKENS = {"tok-admin": ("alice", ["admin", "read"]), "tok-reader": ("bob", ["read"])}
TIMEOUT = httpx.Timeout(10.0)


class TokenBackend(AuthenticationBackend):
    """The app's auth layer: verifies a bearer token against a table, as a real verifier would."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        header = conn.headers.get("authorization", "")
        entry = TOKENS.get(header.removeprefix("Bearer "))
        if entry is None:
            return None
        return AuthCredentials(entry[1]), SimpleUser(entry[0])


def build_fastapi(handle: AuditHandle, gate: threading.Event | None = None, **kw: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/users/{user_id}")
    async def user(user_id: int, request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"id": user_id, "keys": sorted(body), "echo": body}

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        await asyncio.sleep(0.001)
        return {"cid": structlog.contextvars.get_contextvars().get("correlation_id")}

    @app.get("/admin/reset")
    async def admin() -> dict[str, str]:
        return {"ok": "reset"}

    @app.get("/disabled")
    async def disabled() -> dict[str, str]:
        raise AssertionError("a disabled route must not run")

    @app.get("/closed")
    async def closed() -> dict[str, str]:
        return {"ok": "closed"}

    @app.get("/open")
    async def open_() -> dict[str, str]:
        return {"ok": "open"}

    @app.post("/login")
    async def login(request: Request) -> dict[str, str]:
        await request.body()
        return {"ok": "in"}

    @app.get("/report")
    async def report() -> PlainTextResponse:
        return PlainTextResponse("x" * 5000)

    @app.post("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError((await request.body()).decode("utf-8", "replace"))

    @app.get("/files/{name}")
    async def files(name: str) -> dict[str, int]:
        return {"n": len(name)}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            for _ in range(500):
                if gate is not None and gate.is_set():
                    break
                await asyncio.sleep(0.01)
            yield b"released\n" if gate is not None and gate.is_set() else b"timeout\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "event: tick\ndata: 1\n\n"
            for _ in range(500):
                if gate is not None and gate.is_set():
                    break
                await asyncio.sleep(0.01)
            yield "event: tick\ndata: 2\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_middleware(AuditMiddleware, handle=handle, **kw)
    app.add_middleware(AuthenticationMiddleware, backend=TokenBackend())
    return app


class TestRequestEvents:
    def test_fastapi_event_has_template_shapes_and_correlation(
        self, kit: SimpleNamespace, pipeline: Any
    ) -> None:
        """One http.request event per request: template, redacted target, shapes, status, echoed id."""
        handle, directory = pipeline
        with kit.serve_asgi(build_fastapi(handle)) as base:
            r = httpx.post(
                f"{base}/users/42?page=2&token=abc",
                json={"password": "x", "name": "n"},
                headers={"x-request-id": "req-0001-abcdef", "x-custom": "v"},
                timeout=TIMEOUT,
            )
        assert 200 == r.status_code
        assert "req-0001-abcdef" == r.headers["x-correlation-id"]
        handle.flush()
        [event] = kit.events(directory, "http.request")
        assert "req-0001-abcdef" == event["correlation_id"]
        assert {"name": "/users/{user_id}", "method": "POST", "target": "/users/{n}?page=&token="} == event[
            "action"
        ]
        assert {"t": "str", "len": 1} == event["args_shape"]["body"]["keys"]["password"]
        assert {"page", "token"} == set(event["args_shape"]["query"]["keys"])
        assert 200 == event["outcome"]["http_status"]
        assert "ok" == event["outcome"]["status"]
        assert "x-custom" in event["http"]["headers"]
        assert {"echo", "id", "keys"} == set(event["result_shape"]["keys"])
        assert {"id": "asgi-test", "hash": POLICY.hash[:16]} == event["policy"]

    def test_traceparent_wins(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A valid traceparent's trace id becomes the correlation id, echoed to the client."""
        handle, _directory = pipeline
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with kit.serve_asgi(build_fastapi(handle)) as base:
            r = httpx.get(f"{base}/whoami", headers={"traceparent": tp, "x-request-id": "req-ignored-1"})
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == r.headers["x-correlation-id"]
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == r.json()["cid"]

    def test_plain_starlette_and_actor_from_verified_auth(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Plain Starlette: route template from the router; actor from scope["user"] and scope["auth"]."""
        handle, directory = pipeline

        async def item(request: Any) -> JSONResponse:
            return JSONResponse({"item": request.path_params["item_id"]})

        app = Starlette(routes=[Route("/items/{item_id}", item)])
        wrapped = AuthenticationMiddleware(AuditMiddleware(app, handle=handle), backend=TokenBackend())
        with kit.serve_asgi(wrapped) as base:
            r = httpx.get(f"{base}/items/7", headers={"authorization": "Bearer tok-reader"})
            anon = httpx.request("GET", f"{base}/items/8?subject=mallory", json={"sub": "mallory"})
        assert 200 == r.status_code == anon.status_code
        handle.flush()
        first, second = kit.events(directory, "http.request")
        assert "/items/{item_id}" == first["action"]["name"]
        assert {"subject": "bob", "tenant": None, "client_id": None, "scopes": ["read"]} == first["actor"]
        assert {"subject": None, "tenant": None, "client_id": None, "scopes": []} == second["actor"]

    def test_values_level_allowlist_and_fingerprint(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """level=values keeps allowlisted fields (scanned), fingerprints named ones, shapes the rest."""
        handle, directory = pipeline
        with kit.serve_asgi(build_fastapi(handle)) as base:
            httpx.post(
                f"{base}/login",
                data={"username": "carol", "password": CANARIES.values["password"], "remember": "yes"},
            )
        handle.flush()
        [event] = kit.events(directory, "http.request")
        keys = event["args_shape"]["body"]["keys"]
        assert "carol" == keys["username"]["v"]
        assert "v" not in keys["password"]
        assert event["fp"]["username"].startswith(handle.fingerprinter.fingerprint("carol")[:8])
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))


class TestStreaming:
    def test_chunks_reach_client_before_stream_ends(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The first chunk arrives while the app still holds the stream open (nothing is buffered)."""
        handle, directory = pipeline
        gate = threading.Event()
        with (
            kit.serve_asgi(build_fastapi(handle, gate)) as base,
            httpx.stream("GET", f"{base}/stream", timeout=TIMEOUT) as r,
        ):
            chunks = r.iter_raw()
            first = next(chunks)
            gate.set()
            rest = b"".join(chunks)
        assert b"first\n" == first
        assert b"released\n" == rest
        handle.flush()
        [event] = kit.events(directory, "http.request")
        assert 15 == event["http"]["response_bytes"]

    def test_sse_events_stream_through(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Server-sent events pass event by event; the body is counted, never parsed."""
        handle, directory = pipeline
        gate = threading.Event()
        with (
            kit.serve_asgi(build_fastapi(handle, gate)) as base,
            httpx.stream("GET", f"{base}/sse", timeout=TIMEOUT) as r,
        ):
            assert "text/event-stream" in r.headers["content-type"]
            lines = r.iter_lines()
            assert "event: tick" == next(lines)
            assert "data: 1" == next(lines)
            gate.set()
            assert ["", "event: tick", "data: 2", ""] == list(lines)
        handle.flush()
        [event] = kit.events(directory, "http.request")
        assert {"t": "bytes", "len": event["http"]["response_bytes"]} == event["result_shape"]

    def test_websocket_and_lifespan_pass_through_untouched(self) -> None:
        """Non-http scopes reach the app with the very same scope and receive, and websocket messages go
        out through the same send; lifespan messages reach the server unchanged (the middleware watches
        for shutdown to seal the trail stream)."""
        seen: list[tuple[Any, Any, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((scope, receive, send))

        mw = AuditMiddleware(app)

        async def receive() -> dict[str, Any]:
            return {}

        async def send(message: Any) -> None:
            pass

        sent: list[Any] = []

        async def lifespan_send(message: Any) -> None:
            sent.append(message)

        scope: dict[str, Any] = {"type": "websocket"}
        asyncio.run(mw(scope, receive, send))
        assert (scope, receive, send) == seen[-1]
        assert seen[-1][0] is scope
        lifespan: dict[str, Any] = {"type": "lifespan"}
        asyncio.run(mw(lifespan, receive, lifespan_send))
        assert (lifespan, receive) == seen[-1][:2]
        message = {"type": "lifespan.startup.complete"}
        asyncio.run(seen[-1][2](message))
        assert [message] == sent and sent[0] is message
        assert 0 == mw.stats.requests


class TestConcurrency:
    def test_500_concurrent_requests_500_events_no_bleeding(
        self, kit: SimpleNamespace, pipeline: Any
    ) -> None:
        """500 concurrent requests: 500 events, 500 distinct ids, each app saw its own id."""
        handle, directory = pipeline

        async def run(base: str) -> list[tuple[str, str, str]]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=TIMEOUT) as client:

                async def one(i: int) -> tuple[str, str, str]:
                    rid = f"req-{i:06d}-concurrent"
                    r = await client.get("/whoami", headers={"x-request-id": rid})
                    return rid, r.headers["x-correlation-id"], r.json()["cid"]

                return await asyncio.gather(*(one(i) for i in range(500)))

        with kit.serve_asgi(build_fastapi(handle)) as base:
            results = asyncio.run(asyncio.wait_for(run(base), 90))
        assert all(sent == echoed == seen for sent, echoed, seen in results)
        handle.flush()
        evs = kit.events(directory, "http.request")
        assert 500 == len(evs)
        assert {r[0] for r in results} == {e["correlation_id"] for e in evs}


class TestDecisions:
    def test_enforced_missing_scope_is_403_and_authz_denied(
        self, kit: SimpleNamespace, pipeline: Any
    ) -> None:
        """enforce=True: a caller without the rule's scopes gets 403; the denial is journaled."""
        handle, directory = pipeline
        with kit.serve_asgi(build_fastapi(handle, enforce=True)) as base:
            denied = httpx.get(f"{base}/admin/reset", headers={"authorization": "Bearer tok-reader"})
            allowed = httpx.get(f"{base}/admin/reset", headers={"authorization": "Bearer tok-admin"})
        assert 403 == denied.status_code
        assert "insufficient_scope" == denied.json()["error"]
        assert 'scope="admin"' in denied.headers["www-authenticate"]
        assert 200 == allowed.status_code
        handle.flush()
        [event] = kit.events(directory, "authz.denied")
        assert {
            "allowed": False,
            "reason": "missing_scopes",
            "rule": "admin",
            "required": ["admin"],
            "missing": ["admin"],
        } == event["decision"]
        assert ["read"] == event["actor"]["scopes"]
        assert 403 == event["outcome"]["http_status"]
        [ok] = kit.events(directory, "http.request")
        assert "scopes_ok" == ok["decision"]["reason"]

    def test_not_enforced_is_recorded_only(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """enforce=False: served, the missing scope recorded."""
        handle, directory = pipeline
        with kit.serve_asgi(build_fastapi(handle)) as base:
            r = httpx.get(f"{base}/admin/reset")
        assert 200 == r.status_code
        handle.flush()
        [event] = kit.events(directory, "http.request")
        assert "not_enforced" == event["decision"]["reason"]
        assert ["admin"] == event["decision"]["missing"]

    def test_kill_switch_answers_503_and_records(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """disabled=true: 503 without running the endpoint, recorded as a refusal (authz.denied) like
        every other refusal, its status and reason saying the kill switch."""
        handle, directory = pipeline
        with kit.serve_asgi(build_fastapi(handle)) as base:
            r = httpx.get(f"{base}/disabled")
        assert 503 == r.status_code
        assert "disabled" == r.json()["error"]
        handle.flush()
        assert [] == kit.events(directory, "http.request")
        [event] = kit.events(directory, "authz.denied")
        assert "disabled" == event["outcome"]["status"]
        assert {"allowed": False, "reason": "disabled", "rule": "kill", "required": []} == event["decision"]

    def test_fail_closed_refuses_when_the_journal_refuses(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """fail_mode=closed: 503 with a clear body; fail_mode=open: served, the drop counted."""
        handle, _directory = pipeline

        app = build_fastapi(handle)
        with kit.serve_asgi(app) as base:
            monkeypatch.setattr(handle, "journal", kit.RefusingJournal(handle.journal))
            closed = httpx.get(f"{base}/closed")
            opened = httpx.get(f"{base}/open")
        assert 503 == closed.status_code
        assert "audit_unavailable" == closed.json()["error"]
        assert "fail_mode closed" in closed.json()["detail"]
        assert "closed" not in closed.text.split('"detail"')[0]
        assert 200 == opened.status_code
        assert {"ok": "open"} == opened.json()
        assert handle.stats.dropped >= 2

    def test_middleware_failures_are_counted_not_raised(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A resolver that raises: the request is served, the failure counted."""
        handle, _directory = pipeline

        def broken(scope: Any) -> None:
            raise RuntimeError("resolver bug")

        async def ok(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        mw = AuditMiddleware(Starlette(routes=[Route("/", ok)]), handle=handle, actor=broken)
        with kit.serve_asgi(mw) as base:
            r = httpx.get(base + "/")
        assert 200 == r.status_code
        assert 1 == mw.stats.errors
        assert {"actor:RuntimeError": 1} == mw.stats.error_reasons


class TestBodyCapture:
    def test_capped_body_handed_to_store_after_response(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """capture_body: the response body, capped, goes to the body sink keyed by request; event refs it."""
        handle, directory = pipeline
        bodies = kit.MemoryBodies()
        app = build_fastapi(handle, body_store=bodies, capture_limit=1000)
        with kit.serve_asgi(app) as base:
            r = httpx.get(f"{base}/report", headers={"authorization": "Bearer tok-admin"})
            httpx.get(f"{base}/open")
        assert 5000 == len(r.content)
        handle.flush()
        event = next(e for e in kit.events(directory, "http.request") if e["action"]["name"] == "/report")
        ref = event["body_ref"]
        assert {"bytes": 1000, "truncated": True} == {k: ref[k] for k in ("bytes", "truncated")}
        body, meta = bodies.bodies[ref["key"]]
        assert b"x" * 1000 == body
        assert (5000, "capture", "alice", 86400.0) == (
            meta.original_size,
            meta.rule,
            meta.subject,
            meta.retention,
        )
        assert ref["key"].startswith(event["correlation_id"] + ".")
        assert 1 == len(bodies.bodies)


SAFE_HEADER_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _placements(canary: str) -> list[str]:
    out = [
        "json_value",
        "json_key",
        "form",
        "query_value",
        "query_key",
        "path",
        "error",
        "cookie",
        "x_request_id",
    ]
    if "\n" not in canary:
        out += ["header_value", "authorization", "traceparent"]
    if SAFE_HEADER_NAME.fullmatch(canary):
        out += ["header_name", "cookie_name"]
    return out


@st.composite
def planted(draw: st.DrawFn) -> tuple[str, str]:
    canary = draw(st.sampled_from(sorted(CANARIES.values.values())))
    return canary, draw(st.sampled_from(_placements(canary)))


def _send(client: httpx.Client, canary: str, where: str) -> httpx.Response:
    q = urllib.parse.quote(canary, safe="")
    raw = canary.encode("utf-8")
    match where:
        case "json_value":
            return client.post("/users/1", json={"note": canary, "nested": [{"v": canary}]})
        case "json_key":
            return client.post("/users/1", json={canary: 1})
        case "form":
            return client.post("/login", data={"username": canary, "password": canary})
        case "query_value":
            return client.get(f"/whoami?token={q}&q={q}")
        case "query_key":
            return client.get(f"/whoami?{q}=1")
        case "path":
            return client.get(f"/files/{q}")
        case "error":  # uvicorn closes the connection after an app error: do not reuse it
            return client.post("/boom", content=canary.encode(), headers={"connection": "close"})
        case "cookie":
            return client.get("/whoami", headers={"cookie": f"session={q}"})
        case "cookie_name":
            return client.get("/whoami", headers={"cookie": f"{canary}=1"})
        case "x_request_id":
            return client.get("/whoami", headers={"x-request-id": raw.replace(b"\n", b" ")})
        case "header_value":
            return client.get("/whoami", headers={"x-note": raw})
        case "authorization":
            return client.get("/whoami", headers={"authorization": b"Bearer " + raw})
        case "traceparent":
            return client.get("/whoami", headers={"traceparent": raw})
        case "header_name":
            return client.get("/whoami", headers={canary: "1"})
    raise AssertionError(where)


@pytest.fixture(scope="module")
def canary_server(kit: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with (
        kit.canary_sinks(tmp_path_factory.mktemp("asgi-canaries"), POLICY, stdlib=True) as sinks,
        kit.serve_asgi(build_fastapi(sinks.handle)) as base,
        httpx.Client(base_url=base, timeout=TIMEOUT) as client,
    ):
        yield sinks, client


class TestCanaries:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(plant=planted())
    def test_nothing_leaks_into_journal_or_logs(
        self, kit: SimpleNamespace, canary_server: Any, plant: Any
    ) -> None:
        """A canary in body, query, path, headers, cookies or an error message never reaches a sink."""
        sinks, client = canary_server
        canary, where = plant
        before = len(kit.events(sinks.directory))
        r = _send(client, canary, where)
        assert r.status_code in (200, 404, 422, 500)
        assert canary not in r.headers.get("x-correlation-id", "")
        assert before + 1 == len(kit.wait_events(sinks.handle, sinks.directory, before + 1))
        sinks.assert_no_leaks()
        assert [] == CANARIES.leaks_in(json.dumps(sinks.handle.stats.as_dict()).encode())


def _orders_app(handle: AuditHandle, **kw: Any) -> AuditMiddleware:
    async def order(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["order_id"], "status": "shipped"})

    async def ping(request: Any) -> PlainTextResponse:
        return PlainTextResponse("pong")

    app = Starlette(routes=[Route("/orders/{order_id}", order), Route("/ping", ping), Route("/open", ping)])
    return AuditMiddleware(app, handle=handle, **kw)


_PER_REQUEST = ("correlation_id", "span_id", "ts", "event_id", "seq", "mac")


class TestKnownRoutes:
    """What a path decided (name, target, rule) is kept per policy and scanner; nothing changes in events."""

    def test_kept_route_gives_the_same_event(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The second request to a path writes the event the first one wrote, ids and times aside."""
        handle, directory = pipeline
        mw = _orders_app(handle)
        with kit.serve_asgi(mw) as base:
            for path in ("/orders/7", "/orders/7", "/orders/8", "/ping", "/ping"):
                assert 200 == httpx.get(f"{base}{path}", timeout=TIMEOUT).status_code
        found = kit.wait_events(handle, directory, 5)
        assert 5 == len(found)
        same = [{k: v for k, v in e.items() if k not in _PER_REQUEST} for e in found]
        for e in same:
            e["outcome"].pop("duration_ms")
        assert same[0] == same[1] == same[2]
        assert same[3] == same[4]
        assert "/orders/{order_id}" == found[0]["action"]["name"]
        assert "/orders/{n}" == found[0]["action"]["target"]
        assert {("GET", "/orders/7"), ("GET", "/orders/8"), ("GET", "/ping")} == {
            (k[0], k[1]) for k in mw._known.routes
        }

    def test_hidden_segments_and_queries_are_not_kept(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """No canary planted in a path segment or a query is held in the kept routes (nor journaled)."""
        handle, directory = pipeline
        mw = _orders_app(handle)
        values = sorted(CANARIES.values.values())
        paths = [f"/orders/{urllib.parse.quote(v, safe='')}" for v in values]
        paths += [f"/orders/7?q={urllib.parse.quote(v, safe='')}" for v in values]
        paths.append("/orders/" + "/".join(["abcdefghijklmnopqrst"] * 30))  # plain words, but past the length
        with kit.serve_asgi(mw) as base:
            for path in [*paths, *paths, "/orders/7"]:
                httpx.get(f"{base}{path}", timeout=TIMEOUT)
        found = kit.wait_events(handle, directory, 2 * len(paths) + 1)
        assert 2 * len(paths) + 1 == len(found)
        assert [] == CANARIES.leaks_in(repr(mw._known.routes).encode())
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))
        assert [("GET", "/orders/7")] == [k[:2] for k in mw._known.routes]
        assert {"/orders/{token}", "/orders/{email}"} <= {e["action"]["target"] for e in found}

    def test_set_policy_applies_to_kept_paths(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A kill switch set at run time answers 503 on a path already kept, and lifting it serves again."""
        handle, directory = pipeline
        mw = _orders_app(handle)
        off = gate_policy("asgi-off", key="route", admin="/admin/*", disabled="/open", closed="/closed")
        with kit.serve_asgi(mw) as base:
            before = [httpx.get(f"{base}/open", timeout=TIMEOUT).status_code for _ in range(2)]
            mw.set_policy(off)
            during = httpx.get(f"{base}/open", timeout=TIMEOUT)
            mw.set_policy(None)
            after = httpx.get(f"{base}/open", timeout=TIMEOUT).status_code
        assert [200, 200] == before and 503 == during.status_code and 200 == after
        assert "disabled" == during.json()["error"]
        found = kit.wait_events(handle, directory, 4)
        assert ["allowed", "allowed", "disabled", "allowed"] == [e["decision"]["reason"] for e in found]
        assert ["defaults", "defaults", "kill", "defaults"] == [e["decision"]["rule"] for e in found]

    def test_host_routes_named_as_routed(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """With a Host route what serves a path depends on the host: each name is the route that served."""
        from starlette.routing import Host, Mount

        handle, directory = pipeline

        async def ok(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app = Starlette(
            routes=[
                Host("api.example.org", app=Mount("", routes=[Route("/v/{a}", ok)])),
                Route("/v/{b}", ok),
            ]
        )
        mw = AuditMiddleware(app, handle=handle)
        with kit.serve_asgi(mw) as base:
            for host in ("api.example.org", "other.example.org", "api.example.org"):
                httpx.get(f"{base}/v/1", headers={"host": host}, timeout=TIMEOUT)
        found = kit.wait_events(handle, directory, 3)
        assert ["/v/{a}", "/v/{b}", "/v/{a}"] == [e["action"]["name"] for e in found]

    def test_kept_routes_are_bounded(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the bound the kept routes start over; every event stays right."""
        import auditlog.integrations.asgi

        monkeypatch.setattr(auditlog.integrations.asgi, "_MAX_KNOWN_ROUTES", 3)
        handle, directory = pipeline
        mw = _orders_app(handle)
        with kit.serve_asgi(mw) as base:
            for i in range(10):
                httpx.get(f"{base}/orders/{i % 5}", timeout=TIMEOUT)
                assert len(mw._known.routes) <= 3
        found = kit.wait_events(handle, directory, 10)
        assert ["/orders/{order_id}"] * 10 == [e["action"]["name"] for e in found]
