"""uvicorn on 127.0.0.1 with configure(): its error and access loggers are journaled, redacted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import auditlog
from auditlog.canaries import load_canaries
from auditlog.policy import loads
from store.keys import KeyRing, MasterKey
from tests._support import trail_ok, trail_records

Scope = MutableMapping[str, Any]
CANARIES = load_canaries()
# The app below declares no routes: the policy names the words its paths keep.
ROUTE_WORDS = "[paths]\nliterals = [%s]\n"


async def app(
    scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class TestUvicornLogs:
    def test_access_lines_redacted_through_real_server(self, tmp_path: Path) -> None:
        """A real request's access line is journaled without the token in path or query, nor the client IP."""
        key = KeyRing(MasterKey.generate())
        handle = auditlog.configure(
            journal_dir=tmp_path / "j", key=key, policy=loads(ROUTE_WORDS % '"reset"')
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.started
            target = (
                f"/reset/{CANARIES.values['jwt']}?token=canary-url-token-55&email={CANARIES.values['email']}"
            )
            r = httpx.get(f"http://127.0.0.1:{port}{target}", timeout=5)
            assert 200 == r.status_code
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            handle.shutdown()
        recs = trail_records(tmp_path / "j")
        access = [r for r in recs if r.get("event") == "http.access"]
        assert ["/reset/{token}?token=&email="] == [r["target"] for r in access]
        assert any(r.get("logger") == "uvicorn.error" for r in recs)
        blob = b"".join(p.read_bytes() for p in (tmp_path / "j").rglob("*") if p.is_file())
        assert [] == CANARIES.leaks_in(blob)
        assert b"127.0.0.1" not in b"".join(orjson_line(r) for r in access)
        assert trail_ok(tmp_path / "j", key)

    def test_access_line_carries_the_requests_correlation_id(self, tmp_path: Path) -> None:
        """Behind AuditMiddleware, uvicorn's access line has the correlation id of the request it logs
        (so a timeline shows it with the request), and a request's own traceparent wins."""
        from auditlog.integrations.asgi import AuditMiddleware

        key = KeyRing(MasterKey.generate())
        handle = auditlog.configure(
            journal_dir=tmp_path / "j", key=key, policy=loads(ROUTE_WORDS % '"a", "b"')
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(AuditMiddleware(app), log_config=None, access_log=True, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        try:
            deadline = time.monotonic() + 10
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.02)
            httpx.get(
                f"http://127.0.0.1:{port}/a", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
            )
            httpx.get(f"http://127.0.0.1:{port}/b", timeout=5)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            handle.shutdown()
        recs = trail_records(tmp_path / "j")
        requests = {
            r["action"]["target"]: r["correlation_id"] for r in recs if r.get("kind") == "http.request"
        }
        access = {r["target"]: r.get("correlation_id") for r in recs if r.get("event") == "http.access"}
        assert trace == requests["/a"] == access["/a"]
        assert requests["/b"] == access["/b"] != trace


def orjson_line(rec: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(rec)
