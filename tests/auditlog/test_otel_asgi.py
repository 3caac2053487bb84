"""auditlog.integrations.otel behind the real `opentelemetry-instrumentation-asgi` middleware, under uvicorn.

``test_otel.py`` emulates the attribute sets of the ASGI instrumentation; here the installed
``OpenTelemetryMiddleware`` itself wraps a small ASGI app under uvicorn on 127.0.0.1, with a local
``TracerProvider`` (the global providers are never set) feeding two exporters: one behind
``RedactingSpanProcessor`` (what must hold no canary) and one raw (the control: it proves that every
canary really reached the instrumentation's spans, so the check can fail).

Each canary is planted in the path, in query values and keys, in the user agent, referer,
x-forwarded-for (uvicorn trusts it from loopback, so it becomes the client address), the Host header,
custom request headers (captured with ``http_capture_headers_server_request``, no sanitized fields),
a header name, a response header (captured too), and in the message of an exception the app raises.
Both semantic-convention modes run: the default (pre-1.21 keys) and ``http/dup`` (both key sets).
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from auditlog.integrations.otel import RedactingSpanProcessor, redact_url
from auditlog.policy import loads
from tests._support import START_TIMEOUT, semconv_mode, serve_uvicorn
from tests.conftest import Canaries

Scope = MutableMapping[str, Any]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # what HTTP allows as a header name


async def app(
    scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    """Reads the body; ``/boom/...`` raises with the request in its message, the rest echo a header."""
    while (await receive()).get("more_body"):
        pass
    query = urllib.parse.unquote(scope["query_string"].decode())
    if scope["path"].startswith("/boom/"):
        raise RuntimeError(f"lookup failed for {scope['path']}?{query}")
    echo = dict(scope["headers"]).get(b"x-canary", b"-")
    headers = [(b"content-type", b"text/plain"), (b"x-echo", echo), (b"set-cookie", b"sid=" + echo)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Served:
    """A running server and what its spans became."""

    url: str
    mode: str
    redacted: InMemorySpanExporter
    raw: InMemorySpanExporter
    processor: RedactingSpanProcessor

    def spans(self, servers: int) -> tuple[ReadableSpan, ...]:
        """The exported spans, once ``servers`` server spans are in (a span ends after its last send)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            spans = self.redacted.get_finished_spans()
            done = servers <= sum(s.kind is SpanKind.SERVER for s in spans)
            if done or time.monotonic() > deadline:
                return spans
            time.sleep(0.01)


@pytest.fixture(params=["default", "http/dup"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """uvicorn on 127.0.0.1 (port 0) running the real middleware in one semantic-convention mode."""
    import opentelemetry.instrumentation.asgi as asgi

    semconv_mode(monkeypatch, request.param)
    # uvicorn logs the app's exception with its message; this test is about spans, keep it quiet.
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "disabled", True)

    redacted, raw = InMemorySpanExporter(), InMemorySpanExporter()
    # A bare ASGI app declares no routes: the policy names the words its paths keep.
    processor = RedactingSpanProcessor(
        SimpleSpanProcessor(redacted), policy=loads('[paths]\nliterals = ["items", "boom", "a", "b"]\n')
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(raw))
    wrapped = asgi.OpenTelemetryMiddleware(
        app,
        tracer_provider=provider,
        http_capture_headers_server_request=[".*"],
        http_capture_headers_server_response=[".*"],
    )
    try:
        with serve_uvicorn(
            wrapped, lifespan="off", proxy_headers=True, forwarded_allow_ips="127.0.0.1"
        ) as url:
            yield Served(url, request.param, redacted, raw, processor)
    finally:
        provider.shutdown()


def _text(spans: tuple[ReadableSpan, ...]) -> str:
    """Everything an exporter received: names, attributes, events, links, status, as JSON and repr."""
    parts = []
    for s in spans:
        parts.append(s.to_json())
        parts.append(repr((s.name, dict(s.attributes or {}), s.status.description)))
        parts += [repr((e.name, dict(e.attributes or {}))) for e in s.events]
        parts += [repr(dict(link.attributes or {})) for link in s.links]
    return "\n".join(parts)


def _plant(client: httpx.Client, name: str, value: str) -> None:
    """Requests carrying ``value`` wherever a client can put it: one served, one raising, one as Host."""
    quoted = urllib.parse.quote(value, safe="")
    header = value.replace("\n", " ").encode()  # header values cannot hold line breaks
    headers: list[tuple[bytes, bytes]] = [
        (b"user-agent", b"curl/8.5 " + header),
        (b"referer", f"https://shop.example/cart?ref={quoted}".encode()),
        (b"x-forwarded-for", header),
        (b"x-canary", header),
        (b"authorization", b"Bearer " + header),
        (b"cookie", b"session=" + quoted.encode()),
    ]
    if _TOKEN.fullmatch(value):
        headers.append((value.encode(), b"1"))
    r = client.get(f"/items/{quoted}?q={quoted}&{quoted}=1&page=2", headers=headers)
    assert 200 == r.status_code, name
    r = client.post(f"/boom/{quoted}?q={quoted}", content=value.encode(), headers=headers)
    assert 500 == r.status_code, name
    r = client.get("/host", headers=[(b"host", header)])
    assert 200 == r.status_code, name


def _server(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == name]
    return span


class TestRealAsgiInstrumentation:
    def test_no_canary_reaches_the_exporter(self, served: Served, canaries: Canaries) -> None:
        """Every canary, wherever a client can put it, is in the raw spans and not in the exported ones."""
        with httpx.Client(base_url=served.url, timeout=5) as client:
            for name, value in canaries.values.items():
                _plant(client, name, value)
        spans = served.spans(3 * len(canaries.values))
        assert 3 * len(canaries.values) == sum(s.kind is SpanKind.SERVER for s in spans)
        assert any(s.name.endswith(" http receive") for s in spans)
        assert any(s.name.endswith(" http send") for s in spans)
        assert (len(served.raw.get_finished_spans()), 0) == (len(spans), served.processor.dropped)
        assert list(canaries.needles) == canaries.leaks(_text(served.raw.get_finished_spans()))
        text = _text(spans)
        assert [] == canaries.leaks(text)
        # The instrumentation lowercases header names, and urlsplit a Host header: look for those forms too.
        lowered = Canaries(values={}, needles=tuple({n.lower() for n in canaries.needles}))
        assert [] == lowered.leaks(text.lower())
        assert [] == lowered.leaks(text.lower().replace("_", "-"))

    def test_method_target_and_status_survive(self, served: Served) -> None:
        """The server span keeps method, collapsed path, query keys and status; send / receive spans too."""
        with httpx.Client(base_url=served.url, timeout=5) as client:
            assert 200 == client.get("/items/42?page=2&sort=desc").status_code
        spans = served.spans(1)
        attrs = dict(_server(spans, "GET /items/{n}").attributes or {})
        assert ("GET", 200, "http") == (attrs["http.method"], attrs["http.status_code"], attrs["http.scheme"])
        assert "/items/{n}" == attrs["http.target"]
        assert attrs["http.url"].endswith("/items/{n}?page=&sort=")
        if served.mode == "http/dup":
            assert ("GET", 200) == (attrs["http.request.method"], attrs["http.response.status_code"])
            assert ("/items/{n}", "page=&sort=") == (attrs["url.path"], attrs["url.query"])
        internal = {
            (s.name, (s.attributes or {}).get("asgi.event.type"))
            for s in spans
            if s.kind is SpanKind.INTERNAL
        }
        assert {
            ("GET /items/{n} http receive", "http.request"),
            ("GET /items/{n} http send", "http.response.start"),
            ("GET /items/{n} http send", "http.response.body"),
        } == internal
        (start,) = [s for s in spans if (s.attributes or {}).get("asgi.event.type") == "http.response.start"]
        assert 200 == (start.attributes or {})["http.status_code"]

    def test_app_exception_keeps_its_type_and_frames(self, served: Served, canaries: Canaries) -> None:
        """The raised exception keeps its type and frames; its message and the status are scanned."""
        quoted = urllib.parse.quote(canaries.values["db_url"], safe="")
        with httpx.Client(base_url=served.url, timeout=5) as client:
            assert 500 == client.post(f"/boom/7?token={quoted}").status_code
        span = _server(served.spans(1), "POST /boom/{n}")
        assert StatusCode.ERROR == span.status.status_code
        assert (span.status.description or "").startswith("RuntimeError: lookup failed for /boom/7?token=")
        (event,) = span.events
        attrs = dict(event.attributes or {})
        assert "RuntimeError" == attrs["exception.type"]
        assert attrs["exception.stacktrace"].endswith(", in app\nRuntimeError")
        assert [] == canaries.leaks(_text(served.spans(1)))

    def test_a_host_header_that_is_no_host_name_is_dropped(self, served: Served, canaries: Canaries) -> None:
        """http.url is built from the client's Host header: a value that is no DNS name or IP is replaced."""
        with httpx.Client(base_url=served.url, timeout=5) as client:
            assert (
                200
                == client.get("/a", headers=[(b"host", canaries.values["unicode_name"].encode())]).status_code
            )
            assert 200 == client.get("/b", headers=[(b"host", b"shop.example:8443")]).status_code
        spans = served.spans(2)
        unicode_host = dict(_server(spans, "GET /a").attributes or {})
        plain_host = dict(_server(spans, "GET /b").attributes or {})
        assert ("http://<invalid-host>/a", "http://shop.example:8443/b") == (
            unicode_host["http.url"],
            plain_host["http.url"],
        )


class TestRedactUrlHost:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://Zoë Canarÿ-ßecret/x", "http://<invalid-host>/x"),
            ("http://bearer abc/x", "http://<invalid-host>/x"),
            ("http://My_Svc.internal:8080/x", "http://my_svc.internal:8080/x"),
            ("http://[::1]:8080/x", "http://::1:8080/x"),
        ],
    )
    def test_hosts_that_are_no_host_names_are_replaced(self, url: str, expected: str) -> None:
        """urlsplit lowercases the host, which hides a name from the scanner: anything but a DNS name goes."""
        assert expected == redact_url(url)
