"""The ASGI middleware's reworked hot path journals exactly what the reference path did: for generated
requests (headers, methods, paths, queries, bodies, responses, policy levels), the request head's facts
and the ``http.request`` event serialize to the same bytes as :mod:`tests.integration._reference_http`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

import auditlog
from auditlog.integrations._http_request import _Request
from auditlog.integrations.asgi import AuditMiddleware
from auditlog.policy import loads
from store.keys import KeyRing, MasterKey
from tests.integration._reference_http import reference_event, reference_head

POLICY = loads(
    """version = 1
id = "fastpath"
[[rules]]
id = "values"
match = { route = "/values/*" }
level = "values"
allow = ["q", "name", "n"]
fingerprint = ["email"]
[[rules]]
id = "meta"
match = { route = "/meta/*" }
level = "metadata"
[[rules]]
id = "quiet"
match = { route = "/quiet/*" }
level = "none"
"""
)


class Comparing(AuditMiddleware):
    """Builds every event twice, the reworked way and the reference way, and keeps both."""

    __slots__ = ("pairs",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pairs: list[tuple[bytes, bytes]] = []

    def _commit(self, req: _Request) -> bool:
        if not req.committed and req.rule.level != "none":
            now = req.start
            new = self._event(req)
            old = reference_event(self, req)
            for ev in (new, old):  # the duration is the one field that differs between two builds
                ev["outcome"]["duration_ms"] = 0.0
            self.pairs.append((orjson.dumps(new), orjson.dumps(old)))
            req.start = now
        return super()._commit(req)


async def _json(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"echo": len(body), "items": [{"sku": "A1", "qty": 2}], "note": "x" * 3})


async def _text(request: Request) -> Response:
    return PlainTextResponse("plain")


async def _broken(request: Request) -> Response:
    return Response(b'{"not json', media_type="application/json", status_code=502)


def _app() -> Starlette:
    inner = [Route("/items/{item_id}", _json, methods=["GET", "POST", "PUT"])]
    return Starlette(
        routes=[
            Route("/orders/{order_id}", _json, methods=["GET", "POST", "DELETE"]),
            Route("/values/{name}", _json, methods=["GET", "POST"]),
            Route("/meta/{name}", _json),
            Route("/quiet/{name}", _json),
            Route("/text", _text),
            Route("/broken", _broken),
            Mount("/api", routes=inner),
        ]
    )


@pytest.fixture(scope="module")
def handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[auditlog.AuditHandle]:
    directory: Path = tmp_path_factory.mktemp("fastpath")
    h = auditlog.configure(
        journal_dir=directory, key=KeyRing(MasterKey.generate()), policy=POLICY, stdlib=False
    )
    yield h
    h.shutdown()


HEADER_NAMES = st.sampled_from(
    [
        b"host",
        b"accept",
        b"user-agent",
        b"traceparent",
        b"x-request-id",
        b"cookie",
        b"content-type",
        b"content-encoding",
        b"Authorization",
        b"X-Custom",
        b"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        b"x-amz-date",
    ]
)
HEADER_VALUES = st.sampled_from(
    [
        b"",
        b"*/*",
        b"a=1; b=2",
        b"application/json",
        b"application/x-www-form-urlencoded",
        b"text/plain; charset=utf-8",
        b"gzip",
        b" identity ",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"req-12345678",
        b"Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "caf\xe9".encode("latin-1"),
    ]
)
REQUESTS = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "M-SEARCH"]),
        "path": st.sampled_from(
            [
                "/orders/42",
                "/orders/4111111111111111",
                "/orders/jane@example.com",
                "/values/jane",
                "/meta/x",
                "/quiet/x",
                "/text",
                "/broken",
                "/api/items/7",
                "/missing/9",
            ]
        ),
        "query": st.sampled_from([b"", b"q=1&name=jane", b"email=jane@example.com&n=4111111111111111", b"a"]),
        "headers": st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8),
        "extra_headers": st.integers(min_value=0, max_value=70),
        "body": st.sampled_from(
            [b"", b'{"name": "jane", "n": 3}', b"q=1&name=x", b"\x00\x01binary", b"{bad"]
        ),
    }
)


def _scope(r: dict[str, Any]) -> dict[str, Any]:
    headers = list(r["headers"]) + [(f"x-extra-{i}".encode(), b"v") for i in range(r["extra_headers"])]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": r["method"],
        "scheme": "http",
        "root_path": "",
        "path": r["path"],
        "raw_path": r["path"].encode(),
        "query_string": r["query"],
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def _run(app: Any, scope: dict[str, Any], body: bytes) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


class TestFastPath:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(requests=st.lists(REQUESTS, min_size=1, max_size=4))
    def test_events_are_byte_identical_to_the_reference(
        self, handle: auditlog.AuditHandle, requests: list[dict[str, Any]]
    ) -> None:
        """Each generated request's event, and its head's facts, equal the reference path's bytes."""
        app = Comparing(_app(), handle=handle)
        for r in requests:  # the same requests twice: the second time routes and header plans are kept
            for _ in range(2):
                scope = _scope(r)
                assert reference_head(scope["headers"]) == app._head(scope["headers"])
                asyncio.run(_run(app, scope, r["body"]))
        assert app.pairs or all(r["path"].startswith("/quiet/") for r in requests)
        for new, old in app.pairs:
            assert old == new
