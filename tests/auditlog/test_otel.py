"""auditlog.integrations.otel: exporters only ever receive redacted spans and log records.

Every test uses its own ``TracerProvider`` / ``LoggerProvider`` (the global providers are never set) with
in-memory exporters behind the redacting processors, and scans what the exporters received for the
shared canary corpus in the forms ``find_leaks.py`` looks for (raw, JSON-escaped, URL-encoded).

The installed MCP SDK's own ``OpenTelemetryMiddleware`` runs for real (its module-level tracer pointed at
the test provider). ``opentelemetry-instrumentation-asgi`` is not installed, so its spans are emulated with
the attribute sets, names and error handling of its source: ``collect_request_attributes``,
``get_default_span_details`` and ``set_status_code``, and the ``http send`` / ``http receive`` spans, in the
``http/dup`` semantic-convention mode (both attribute sets). An earlier form of the MCP middleware
(``MCP handle <method> [<target>]``) is emulated as well.
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace as trace_api
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from auditlog.canaries import load_canaries
from auditlog.integrations.otel import (
    ALLOWED_ATTRIBUTES,
    RedactingLogRecordProcessor,
    RedactingSpanProcessor,
    redact_url,
)
from auditlog.policy import loads
from processors import add_correlation_ids
from processors.pii import PIIScanner

CANARIES = load_canaries()
VALUES = CANARIES.values
RESOURCE = Resource.create({"service.name": "checkout", "deployment.environment": "test"})


@dataclass
class Pipeline:
    """A tracer and a stdlib logger whose telemetry ends in in-memory exporters, through our processors."""

    tracer: trace_api.Tracer
    spans: InMemorySpanExporter
    span_processor: RedactingSpanProcessor
    log: logging.Logger
    logs: InMemoryLogRecordExporter
    log_processor: RedactingLogRecordProcessor

    def clear(self) -> None:
        self.spans.clear()
        self.logs.clear()

    def exported(self) -> str:
        """Everything the exporters received, rendered as text."""
        parts = [s.to_json() + repr(dict(s.attributes or {})) for s in self.spans.get_finished_spans()]
        parts += [_log_text(r) for r in self.logs.get_finished_logs()]
        return "\n".join(parts)

    def leaks(self) -> list[str]:
        return CANARIES.leaks_in(self.exported().encode())


def _log_text(r: ReadableLogRecord) -> str:
    rec = r.log_record
    return r.to_json() + repr(rec.body) + repr(dict(rec.attributes or {})) + repr(rec.event_name)


# The spans below are made by hand, with no app whose routes would name their paths' words and no server
# that lists its tools: the policy names them (see tests/integration/test_path_literals.py).
PATHS = loads(
    '[[rules]]\nmatch = { tool = "get_weather" }\n[paths]\nliterals = ["u", "users", "orders", "reset"]\n'
)


def _pipeline(**options: Any) -> Iterator[Pipeline]:
    spans = InMemorySpanExporter()
    span_processor = RedactingSpanProcessor(
        SimpleSpanProcessor(spans), **{"policy": PATHS, **options.get("span", {})}
    )
    tracer_provider = TracerProvider(resource=RESOURCE, span_limits=options.get("limits"))
    tracer_provider.add_span_processor(span_processor)
    logs = InMemoryLogRecordExporter()
    log_processor = RedactingLogRecordProcessor(
        SimpleLogRecordProcessor(logs), **{"policy": PATHS, **options.get("log", {})}
    )
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(log_processor)
    with warnings.catch_warnings():
        # The SDK's LoggingHandler warns that it moved to opentelemetry-instrumentation-logging.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*LoggingHandler.*")
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    log = logging.getLogger(f"auditlog.tests.otel.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        yield Pipeline(tracer_provider.get_tracer("tests"), spans, span_processor, log, logs, log_processor)
    finally:
        log.removeHandler(handler)
        tracer_provider.shutdown()
        logger_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Pipeline]:
    yield from _pipeline()


@pytest.fixture(scope="module")
def shared() -> Iterator[Pipeline]:
    """One pipeline for the property tests (cleared before each example)."""
    yield from _pipeline()


@pytest.fixture(scope="module")
def shared_pii() -> Iterator[Pipeline]:
    """The same, with presidio's PIIScanner as the scanner."""
    scanner = PIIScanner()
    yield from _pipeline(span={"scanner": scanner}, log={"scanner": scanner})


def _finished(p: Pipeline) -> ReadableSpan:
    (span,) = p.spans.get_finished_spans()
    return span


class TestSpanAttributes:
    def test_allowlisted_semantic_keys_keep_their_values(self, otel: Pipeline) -> None:
        """Method, route, status, server address and MCP method / tool names pass as they are."""
        attrs = {
            "http.request.method": "POST",
            "http.route": "/users/{user_id}",
            "http.response.status_code": 201,
            "server.address": "api.internal",
            "mcp.method.name": "tools/call",
            "gen_ai.tool.name": "get_weather",
            "rpc.system": "jsonrpc",
        }
        with otel.tracer.start_as_current_span("POST /users/{user_id}", attributes=attrs):
            pass
        assert attrs == dict(_finished(otel).attributes or {})

    def test_other_values_become_their_shape(self, otel: Pipeline) -> None:
        """A value outside the allowlist is replaced by its shape, numbers by their type."""
        with otel.tracer.start_as_current_span("op") as span:
            span.set_attribute("user.email", VALUES["email"])
            span.set_attribute("cart.items", [1, 2, 3])
            span.set_attribute("enduser.id", 42)
        attrs = dict(_finished(otel).attributes or {})
        assert f'{{"len":{len(VALUES["email"])},"t":"str"}}' == attrs["user.email"]
        assert '{"items":{"t":"int"},"len":3,"t":"arr"}' == attrs["cart.items"]
        assert '{"t":"int"}' == attrs["enduser.id"]

    def test_keys_that_are_data_are_hidden_and_counted(self, otel: Pipeline) -> None:
        """A key that is a value (an email, a token) never appears; the number of such keys does."""
        with otel.tracer.start_as_current_span("op") as span:
            span.set_attribute(VALUES["email"], 1)
            span.set_attribute(VALUES["api_key"], "x")
            span.set_attribute("ok", "fine")
        attrs = dict(_finished(otel).attributes or {})
        assert {"ok", "auditlog.hidden_keys"} == set(attrs)
        assert 2 == attrs["auditlog.hidden_keys"]

    def test_allowlisted_values_are_still_scanned(self, otel: Pipeline) -> None:
        """An allowlisted key does not let a secret or a personal value through."""
        with otel.tracer.start_as_current_span("op") as span:
            span.set_attribute("server.address", VALUES["ipv4"])
            span.set_attribute("error.type", f"token {VALUES['jwt']}")
        assert [] == otel.leaks()

    def test_urls_keep_their_route_and_query_keys(self, otel: Pipeline) -> None:
        """Query values dropped (keys kept), id-like segments collapsed, userinfo and fragments dropped."""
        email = urllib.parse.quote(VALUES["email"])
        with otel.tracer.start_as_current_span("op") as span:
            span.set_attribute(
                "url.full", f"https://app:{VALUES['password']}@api.example.com/u/{email}?token=x&page=2#t"
            )
            span.set_attribute("http.target", "/reset/42?token=canary-url-token-55")
            span.set_attribute("url.path", f"/users/{email}/orders/3f2b8c1e-9d4a-4f6b-8a2c-1e9d4a4f6b8a")
            span.set_attribute("url.query", "token=canary-url-token-55&sort=desc")
        attrs = dict(_finished(otel).attributes or {})
        assert "https://api.example.com/u/{email}?token=&page=" == attrs["url.full"]
        assert "/reset/{n}?token=" == attrs["http.target"]
        assert "/users/{email}/orders/{uuid}" == attrs["url.path"]
        assert "token=&sort=" == attrs["url.query"]
        assert [] == otel.leaks()

    def test_ids_resource_and_scope_are_untouched(self, otel: Pipeline) -> None:
        """The copy keeps trace and span ids, parent, kind, times, status code, resource and scope."""
        parent = otel.tracer.start_as_current_span("parent")
        with parent, otel.tracer.start_as_current_span("child", kind=SpanKind.SERVER) as live:
            live.set_status(Status(StatusCode.ERROR, "failed"))
            context = live.get_span_context()
        child = otel.spans.get_finished_spans()[0]
        assert (context.trace_id, context.span_id) == (child.context.trace_id, child.context.span_id)
        assert child.parent is not None and child.parent.trace_id == context.trace_id
        assert (SpanKind.SERVER, StatusCode.ERROR) == (child.kind, child.status.status_code)
        assert RESOURCE == child.resource
        assert "tests" == child.instrumentation_scope.name
        assert child.start_time is not None and child.end_time is not None

    def test_dropped_counts_survive_the_copy(self) -> None:
        """What the SDK dropped under its limits is still reported as dropped."""
        for p in _pipeline(limits=SpanLimits(max_span_attributes=2)):
            with p.tracer.start_as_current_span("op", attributes={"a": 1, "b": 2, "c": 3, "d": 4}):
                pass
            assert 2 == _finished(p).dropped_attributes

    def test_allowlist_is_documented_and_covers_http_and_mcp(self) -> None:
        """The default allowlist holds the HTTP and MCP keys an incident responder needs."""
        needed = {
            "http.request.method",
            "http.route",
            "http.response.status_code",
            "server.address",
            "url.scheme",
        }
        assert needed | {"mcp.method.name", "gen_ai.tool.name"} <= ALLOWED_ATTRIBUTES


class TestSpanNamesEventsAndExceptions:
    def test_ids_in_span_names_are_collapsed(self, otel: Pipeline) -> None:
        """Numbers, UUIDs, emails and tokens in a span name become placeholders."""
        name = f"GET /users/42/orders/3f2b8c1e-9d4a-4f6b-8a2c-1e9d4a4f6b8a/{VALUES['email']}"
        with otel.tracer.start_as_current_span(name):
            pass
        assert "GET /users/{n}/orders/{uuid}/{email}" == _finished(otel).name

    def test_recorded_exception_is_scanned_and_reduced(self, otel: Pipeline) -> None:
        """exception.message and the status description are scanned; the stack trace keeps frames only."""
        message = f"login failed: password={VALUES['password']} for {VALUES['email']}"
        with pytest.raises(ValueError), otel.tracer.start_as_current_span("login"):
            raise ValueError(message)
        span = _finished(otel)
        (event,) = span.events
        attrs = dict(event.attributes or {})
        assert "ValueError" == attrs["exception.type"]
        assert attrs["exception.message"].startswith("login failed: ")
        assert attrs["exception.message"].endswith(" for <EMAIL_ADDRESS>")
        trace_text = attrs["exception.stacktrace"]
        assert 'File "' in trace_text and "ValueError" in trace_text
        assert "raise ValueError" not in trace_text and "login failed" not in trace_text
        assert span.status.description is not None and "<EMAIL_ADDRESS>" in span.status.description
        assert [] == otel.leaks()

    def test_stack_traces_can_be_dropped(self) -> None:
        """``stacktrace="drop"`` removes exception.stacktrace altogether."""
        for p in _pipeline(span={"stacktrace": "drop"}):
            with pytest.raises(KeyError), p.tracer.start_as_current_span("op"):
                raise KeyError(VALUES["api_key"])
            (event,) = _finished(p).events
            assert "exception.stacktrace" not in (event.attributes or {})
            assert [] == p.leaks()

    def test_event_and_link_attributes_are_shaped(self, otel: Pipeline) -> None:
        """Span events and links go through the same attribute rules."""
        other = trace_api.SpanContext(0x1234, 0x5678, is_remote=True)
        link = trace_api.Link(other, {"peer.email": VALUES["email"]})
        with otel.tracer.start_as_current_span("op", links=[link]) as span:
            span.add_event(
                f"charged {VALUES['credit_card']}", {"card": VALUES["credit_card"], "http.route": "/pay"}
            )
        span = _finished(otel)
        assert "charged {n}" == span.events[0].name
        assert "/pay" == (span.events[0].attributes or {})["http.route"]
        assert [] == otel.leaks()

    def test_the_inner_processor_never_sees_the_live_span(self) -> None:
        """on_start is not forwarded: the inner processor only ever holds the redacted copy."""
        seen: list[str] = []

        class Recorder(SpanProcessor):
            def on_start(self, span: Any, parent_context: Any = None) -> None:
                seen.append("start")

            def on_end(self, span: ReadableSpan) -> None:
                seen.append(span.name)

        provider = TracerProvider()
        provider.add_span_processor(RedactingSpanProcessor(Recorder(), policy=PATHS))
        with provider.get_tracer("t").start_as_current_span(f"GET /u/{VALUES['email']}"):
            pass
        provider.shutdown()
        assert ["GET /u/{email}"] == seen

    def test_a_failing_redaction_drops_the_span_quietly(self) -> None:
        """If redaction raises, the application is not affected and the exporter gets nothing."""

        class Broken:
            def findings(self, text: str) -> list[Any]:
                raise RuntimeError("boom")

            def redact(self, text: str) -> str:
                raise RuntimeError("boom")

        for p in _pipeline(span={"scanner": Broken()}):
            with p.tracer.start_as_current_span("op with words"):
                pass
            assert ((), 1) == (p.spans.get_finished_spans(), p.span_processor.dropped)

    def test_span_and_audit_event_share_the_trace_id(self, otel: Pipeline) -> None:
        """The correlation id structlog adds inside a span is the exported span's trace id."""
        with otel.tracer.start_as_current_span("op"):
            event = add_correlation_ids(structlog.get_logger(), "info", {"event": "x"})
        assert format(_finished(otel).context.trace_id, "032x") == event["correlation_id"]


def _asgi_request(p: Pipeline, *, path: str, query: str, client: str, agent: str, fail: str | None) -> None:
    """The spans opentelemetry-instrumentation-asgi makes for one HTTP request (``http/dup`` mode)."""
    unquoted = urllib.parse.unquote(query)
    attrs = {
        "http.scheme": "https",
        "url.scheme": "https",
        "http.host": "10.0.0.5:8000",
        "server.address": "api.example.com",
        "net.host.port": 8000,
        "server.port": 8000,
        "http.flavor": "1.1",
        "network.protocol.version": "1.1",
        "http.target": path,
        "url.path": path,
        "url.query": query,
        "http.url": f"https://api.example.com:8000{path}?{unquoted}",
        "http.method": "POST",
        "http.request.method": "POST",
        "http.server_name": "api.example.com:8000",
        "http.user_agent": agent,
        "user_agent.original": agent,
        "net.peer.ip": client,
        "client.address": client,
        "net.peer.port": 52114,
        "client.port": 52114,
    }
    name = f"POST {path}"  # get_default_span_details: method and raw path
    with p.tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes=attrs) as span:
        with p.tracer.start_as_current_span(f"{name} http receive") as receive:
            receive.set_attribute("asgi.event.type", "http.request")
        try:
            if fail is not None:
                raise RuntimeError(fail)
            status = 200
        except RuntimeError as exc:  # the app raised: use_span records it and sets the status
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            status = 500
        with p.tracer.start_as_current_span(f"{name} http send") as send:
            send.set_attribute("asgi.event.type", "http.response.start")
            send.set_attribute("http.status_code", status)
            send.set_attribute("http.response.status_code", status)
        span.set_attribute("http.status_code", status)
        span.set_attribute("http.response.status_code", status)


def _mcp_request(p: Pipeline, *, method: str, target: str | None, request_id: str, fail: str | None) -> None:
    """The span an earlier MCP SDK OpenTelemetryMiddleware made for one request (``MCP handle ...``)."""
    name = f"MCP handle {method}{f' {target}' if target else ''}"
    attrs = {"mcp.method.name": method, "jsonrpc.request.id": request_id}
    with p.tracer.start_as_current_span(
        name, kind=SpanKind.SERVER, attributes=attrs, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            if fail is not None:
                raise RuntimeError(fail)
        except RuntimeError as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, str(exc))


class TestEmulatedInstrumentations:
    def test_asgi_spans_keep_the_route_and_lose_the_values(self, otel: Pipeline) -> None:
        """Path ids, query values, client address and user agent never reach the exporter."""
        email = urllib.parse.quote(VALUES["email"])
        _asgi_request(
            otel,
            path=f"/users/{email}/reset/{VALUES['password']}",
            query=urllib.parse.urlencode({"token": "canary-url-token-55", "card": VALUES["credit_card"]}),
            client=VALUES["ipv4"],
            agent=f"curl/8.0 {VALUES['bearer']}",
            fail=f"upstream refused {VALUES['db_url']}",
        )
        assert [] == otel.leaks()
        server = next(s for s in otel.spans.get_finished_spans() if s.kind is SpanKind.SERVER)
        attrs = dict(server.attributes or {})
        assert ("POST", 500) == (attrs["http.request.method"], attrs["http.response.status_code"])
        assert "token=&card=" == attrs["url.query"]
        assert server.name.startswith("POST /users/{email}/reset/")

    def test_mcp_spans_keep_the_method_and_lose_the_values(self, otel: Pipeline) -> None:
        """A tool name, request id and error message from the client never reach the exporter unscanned."""
        _mcp_request(
            otel, method="tools/call", target=VALUES["api_key"], request_id=VALUES["email"], fail=None
        )
        _mcp_request(
            otel, method="tools/call", target="get_weather", request_id="7", fail=VALUES["free_text"]
        )
        assert [] == otel.leaks()
        first, second = otel.spans.get_finished_spans()
        assert "MCP handle tools/call {token}" == first.name
        assert "MCP handle tools/call get_weather" == second.name
        assert "tools/call" == (second.attributes or {})["mcp.method.name"]

    def test_a_tool_name_no_server_declared_is_a_value(self, otel: Pipeline) -> None:
        """A word-like name a client made up (no server listed it, no rule names it) leaves the span's
        name and attributes as ``<unlisted>``: it could be anything, a password included."""
        _mcp_request(otel, method="tools/call", target="zqcorrecthorse", request_id="8", fail=None)
        (span,) = otel.spans.get_finished_spans()
        assert "MCP handle tools/call <unlisted>" == span.name
        assert "zqcorrecthorse" not in otel.exported()


class TestRealMCPServer:
    def test_sdk_middleware_spans_and_logs_are_redacted(
        self, otel: Pipeline, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The installed MCP SDK's own middleware spans and logs leak nothing (in-memory client session)."""
        import anyio
        import mcp.shared._otel as mcp_otel
        from mcp import Client
        from mcp.server.mcpserver import MCPServer

        # The SDK traces through a module-level tracer from the global provider; point it at ours instead.
        monkeypatch.setattr(mcp_otel, "_tracer", otel.tracer)
        server = MCPServer("otel-test")

        @server.tool()
        def echo(text: str) -> str:
            return "ok"

        @server.tool()
        def zq_otel_fails(message: str) -> str:  # a name no other test's server declares
            raise ValueError(message)

        async def session() -> None:
            with anyio.fail_after(30):
                async with Client(server) as client:
                    await client.call_tool("echo", {"text": VALUES["free_text"]})
                    await client.call_tool("zq_otel_fails", {"message": VALUES["db_url"]})
                    unknown = await client.call_tool(VALUES["api_key"], {"x": VALUES["email"]})
                    assert unknown.is_error

        # The SDK's own logs (it logs failing tools with their message) go through our handler too.
        sdk_logger = logging.getLogger("mcp")
        sdk_logger.addHandler(otel.log.handlers[0])
        try:
            anyio.run(session)
        finally:
            sdk_logger.removeHandler(otel.log.handlers[0])
        names = [s.name for s in otel.spans.get_finished_spans()]
        # echo ran (its span did not fail): a tool of the server's. zq_otel_fails failed and was never
        # listed, so its name could be anything a client sent; the secret-looking name is a token either way.
        assert {"tools/call echo", "tools/call <unlisted>", "tools/call {token}"} <= set(names)
        spans = otel.spans.get_finished_spans()
        assert not [s for s in spans if "zq_otel_fails" in s.name + repr(dict(s.attributes or {}))]
        assert otel.logs.get_finished_logs(), "the SDK logged nothing through the handler"
        assert [] == otel.leaks()


class TestLogRecords:
    def test_extra_fields_are_shaped(self, otel: Pipeline) -> None:
        """``extra=`` fields arrive as attributes and leave as shapes; code locations stay."""
        otel.log.info("login", extra={"email": VALUES["email"], "card": VALUES["credit_card"]})
        (record,) = otel.logs.get_finished_logs()
        attrs = dict(record.log_record.attributes or {})
        assert f'{{"len":{len(VALUES["email"])},"t":"str"}}' == attrs["email"]
        assert "test_extra_fields_are_shaped" == attrs["code.function.name"]
        assert [] == otel.leaks()

    def test_interpolated_message_is_scanned(self, otel: Pipeline) -> None:
        """The formatted message (template plus arguments) goes through the scanner."""
        otel.log.warning("reset requested for %s from %s", VALUES["email"], VALUES["ipv4"])
        (record,) = otel.logs.get_finished_logs()
        assert "reset requested for <EMAIL_ADDRESS> from <IP_ADDRESS>" == record.log_record.body

    def test_logged_exception_is_reduced(self, otel: Pipeline) -> None:
        """logger.exception: message scanned, stack trace reduced to frames, nothing leaks."""
        try:
            raise PermissionError(f"denied for {VALUES['aws_access_key_id']}")
        except PermissionError:
            otel.log.exception("charge failed for card %s", VALUES["credit_card_spaced"])
        (record,) = otel.logs.get_finished_logs()
        attrs = dict(record.log_record.attributes or {})
        assert "PermissionError" == attrs["exception.type"]
        assert "raise PermissionError" not in attrs["exception.stacktrace"]
        assert [] == otel.leaks()

    def test_body_can_be_shaped_instead_of_scanned(self) -> None:
        """``body="shape"`` keeps even a name (which no pattern finds) out of the record."""
        for p in _pipeline(log={"body": "shape"}):
            p.log.info("hello %s", VALUES["unicode_name"])
            (record,) = p.logs.get_finished_logs()
            assert f'{{"len":{len("hello " + VALUES["unicode_name"])},"t":"str"}}' == record.log_record.body

    def test_structured_body_is_shaped(self, otel: Pipeline) -> None:
        """A mapping logged as the message is shaped, keys included."""
        otel.log.info({"user": VALUES["email"], VALUES["email"]: 1})
        (record,) = otel.logs.get_finished_logs()
        assert [] == otel.leaks()
        assert '"hidden_keys":1' in str(record.log_record.body)

    def test_log_keeps_the_trace_context(self, otel: Pipeline) -> None:
        """A record logged inside a span carries the span's trace and span ids."""
        with otel.tracer.start_as_current_span("op") as span:
            otel.log.info("inside")
            ctx = span.get_span_context()
        (record,) = otel.logs.get_finished_logs()
        assert (ctx.trace_id, ctx.span_id) == (record.log_record.trace_id, record.log_record.span_id)

    def test_bad_options_are_refused(self) -> None:
        """Unknown modes raise ValueError at construction."""
        inner = SimpleLogRecordProcessor(InMemoryLogRecordExporter())
        with pytest.raises(ValueError):
            RedactingLogRecordProcessor(inner, body="keep")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            RedactingSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), stacktrace="all")  # type: ignore[arg-type]


SLOTS = (
    "attribute",
    "attribute_key",
    "event_attribute",
    "exception",
    "status",
    "span_name",
    "url_path",
    "url_query",
    "extra",
    "extra_key",
    "log_argument",
    "logged_exception",
)


def _plant(p: Pipeline, slot: str, value: str) -> None:
    """Put ``value`` where ``slot`` says, through the SDK's own API and handler."""
    t, log = p.tracer, p.log
    quoted = urllib.parse.quote(value, safe="")
    if slot == "attribute":
        with t.start_as_current_span("op", attributes={"arg": value, "http.route": value}):
            pass
    elif slot == "attribute_key":
        with t.start_as_current_span("op", attributes={value: 1}):
            pass
    elif slot == "event_attribute":
        with t.start_as_current_span("op") as span:
            span.add_event("lookup", {"q": value, "exception.message": value})
    elif slot == "exception":
        with pytest.raises(ValueError), t.start_as_current_span("op"):
            raise ValueError(f"bad input {value!r}")
    elif slot == "status":
        with t.start_as_current_span("op") as span:
            span.set_status(StatusCode.ERROR, f"failed: {value}")
    elif slot == "span_name":
        with t.start_as_current_span(f"GET /items/{value}"):
            pass
    elif slot == "url_path":
        with t.start_as_current_span("op", attributes={"url.full": f"https://h.example/a/{quoted}/b"}):
            pass
    elif slot == "url_query":
        attrs = {"url.query": f"q={quoted}&x={value}", "http.target": f"/s?q={quoted}"}
        with t.start_as_current_span("op", attributes=attrs):
            pass
    elif slot == "extra":
        log.info("event", extra={"field": value, "nested": {"v": [value]}})
    elif slot == "extra_key":
        log.info("event", extra={value: 1})
    elif slot == "log_argument":
        log.warning("user said %s", value)
    else:
        try:
            raise RuntimeError(value)
        except RuntimeError:
            log.exception("failed")


class TestCanaryCorpus:
    @settings(max_examples=120, deadline=None)
    @given(name=st.sampled_from(sorted(VALUES)), slot=st.sampled_from(SLOTS))
    def test_no_canary_reaches_an_exporter(self, shared: Pipeline, name: str, slot: str) -> None:
        """Any canary, planted anywhere a span or log record can carry it, is absent from the exporters."""
        shared.clear()
        _plant(shared, slot, VALUES[name])
        assert shared.exported()
        assert [] == shared.leaks()

    @pytest.mark.parametrize("slot", SLOTS)
    def test_every_slot_with_every_canary(self, shared: Pipeline, slot: str) -> None:
        """The same, exhaustively: each slot with each canary value."""
        for value in VALUES.values():
            shared.clear()
            _plant(shared, slot, value)
            assert [] == shared.leaks(), value

    @pytest.mark.parametrize("slot", SLOTS)
    def test_every_slot_with_presidio_as_the_scanner(self, shared_pii: Pipeline, slot: str) -> None:
        """Exhaustively with PIIScanner: every canary a pattern can find, in every slot."""
        for name, value in VALUES.items():
            if name != "unicode_name":
                shared_pii.clear()
                _plant(shared_pii, slot, value)
                assert [] == shared_pii.leaks(), value

    @settings(max_examples=60, deadline=None)
    @given(
        name=st.sampled_from(sorted(k for k in VALUES if k != "unicode_name")),
        slot=st.sampled_from(SLOTS),
    )
    def test_with_presidio_as_the_scanner(self, shared_pii: Pipeline, name: str, slot: str) -> None:
        """With PIIScanner the same holds for every canary a pattern can find (names need NER)."""
        shared_pii.clear()
        _plant(shared_pii, slot, VALUES[name])
        assert [] == shared_pii.leaks()

    def test_the_check_sees_what_an_unredacted_pipeline_leaks(self) -> None:
        """Control: without the redacting processors, every slot leaks the canary (so the check can fail)."""
        spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
        tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*LoggingHandler.*")
            handler = LoggingHandler(logger_provider=logger_provider)
        log = logging.getLogger(f"auditlog.tests.otel.raw.{uuid.uuid4().hex}")
        log.propagate, log.level = False, logging.DEBUG
        log.addHandler(handler)
        raw = Pipeline(tracer_provider.get_tracer("t"), spans, None, log, logs, None)  # type: ignore[arg-type]
        try:
            for slot in SLOTS:
                raw.clear()
                _plant(raw, slot, VALUES["email"])
                assert [VALUES["email"]] == raw.leaks(), slot
        finally:
            log.removeHandler(handler)
            tracer_provider.shutdown()
            logger_provider.shutdown()


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "https://bob:pw@api.example.com/users/42?token=abc#frag",
                "https://api.example.com/users/{n}?token=",
            ),
            ("http://203.0.113.77:8080/x", "http://<IP_ADDRESS>:8080/x"),
            ("/relative/path?a=1", "/relative/path?a="),
            ("http://[::1", "<unparseable-url>"),
        ],
    )
    def test_examples(self, url: str, expected: str) -> None:
        """Userinfo and fragment dropped, host scanned, path collapsed, query values dropped."""
        from processors import SecretScanner

        assert expected == redact_url(url, scanner=SecretScanner())
