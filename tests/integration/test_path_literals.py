"""Journaled paths keep route literals only: a path segment that no route names is a value, whatever it
looks like (``/users/alice`` is journaled as ``/users/{id}``), in the event's name and target, in access
lines, in OpenTelemetry spans and in MCP resource names. The policy decides (``[paths]``).

Route literals come from the policy's ``route`` patterns and ``[paths] literals``, the app's route table
(Starlette, FastAPI, Flask: read at the first request) and the templates the framework records as it
routes. Planted words are letters only, so no shape rule (number, UUID, token) could hide them: only the
literal rule does. They start with ``zq`` so that no route of any app in this process names them.
"""

from __future__ import annotations

import contextlib
import re
import string
import urllib.parse
from types import SimpleNamespace
from typing import Any

import flask
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from auditlog.canaries import Canaries
from auditlog.integrations.asgi import AuditMiddleware
from auditlog.integrations.urls import ROUTE_WORDS, PathWords, collapse_path, redact_target
from auditlog.integrations.wsgi import AuditWSGIMiddleware
from auditlog.policy import PolicyError, loads

POLICY = loads(
    """
version = 1
id = "paths"

[[rules]]
id = "reports"
match = { route = "/reports/{year}/summary" }

[paths]
literals = ["healthz"]
"""
)
WORDS_POLICY = loads('version = 1\nid = "words"\n[paths]\nsegments = "words"\n')
TIMEOUT = httpx.Timeout(10.0)

# Letters only, in any case, sometimes hyphenated: what a name, a username or a slug looks like.
WORD = st.builds(
    lambda head, tail, cap: "zq" + (head.capitalize() if cap else head) + (f"-{tail}" if tail else ""),
    st.text(string.ascii_lowercase, min_size=3, max_size=10),
    st.text(string.ascii_lowercase, max_size=6),
    st.booleans(),
)


async def endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/users/{user_id}", endpoint),
            Route("/users/{user_id}/orders", endpoint),
            Route("/healthz", endpoint),
            Mount("/api", routes=[Route("/items/{item}", endpoint)]),
        ]
    )


def actions(kit: SimpleNamespace, handle: Any, directory: Any, n: int) -> list[dict[str, Any]]:
    found = kit.wait_events(handle, directory, n)
    return [e["action"] for e in found if e["kind"] in ("http.request", "authz.denied")]


class TestCollapse:
    def test_only_literals_stay_and_the_rest_keeps_its_kind(self) -> None:
        """Under literals a word segment is a value; numbers, UUIDs, emails and tokens keep their kind."""
        words = frozenset({"users", "orders"})
        assert "/users/{id}/orders" == collapse_path("/users/alice/orders", literals=words)
        assert "/users/{token}/orders" == collapse_path("/users/alice-smith/orders", literals=words)
        assert "/users/{n}/{uuid}" == collapse_path(
            "/users/42/123e4567-e89b-12d3-a456-426614174000", literals=words
        )
        assert "/users/{email}/{id}" == collapse_path("/users/ann%40example.org/{users}", literals=words)
        assert "/{id}/{id}" == collapse_path("/v1/admin", literals=words)  # versions are literals only
        assert "/users/{id}?q=&page=" == redact_target("/users/bob?q=bob&page=2", literals=words)

    def test_without_literals_words_stay(self) -> None:
        """The "words" policy: word-like segments that the scanner clears stay, as before."""
        assert "/users/alice/orders" == collapse_path("/users/alice/orders")

    @settings(max_examples=200, deadline=None)
    @given(word=WORD, tail=st.lists(WORD, max_size=3))
    def test_no_planted_word_survives(self, word: str, tail: list[str]) -> None:
        """Whatever the word, it leaves only a placeholder; the literal around it stays."""
        path = "/".join(["", "users", word, *tail])
        out = collapse_path(path, literals=frozenset({"users"}))
        assert out.startswith("/users/{")
        for planted in (word, *tail):
            assert planted not in out


class TestPolicy:
    def test_rules_and_literals_make_the_words(self) -> None:
        """A policy's literals: its [paths] list and the literal segments of every rule's route."""
        assert POLICY.route_literals == frozenset({"reports", "summary", "healthz"})
        assert WORDS_POLICY.route_literals is None

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ('segments = "all"', "paths.segments: expected 'literals' or 'words'"),
            ('literals = "x"', "paths.literals: expected an array of path segments"),
            ('literals = ["a/b"]', "paths.literals[0]: expected one path segment"),
            ('literals = ["ok", "{id}"]', "paths.literals[1]: expected one path segment"),
            ("literal = []", "paths.literal: unknown field (did you mean 'literals'?)"),
        ],
    )
    def test_malformed_paths_name_the_field(self, table: str, message: str) -> None:
        with pytest.raises(PolicyError) as caught:
            loads(f"[paths]\n{table}\n", source="p.toml")
        assert str(caught.value).startswith(f"p.toml: {message}")

    def test_a_policy_without_paths_keeps_its_hash(self) -> None:
        """[paths] enters the canonical form (and hash) only when it is not the default."""
        plain = loads('version = 1\nid = "x"\n')
        assert plain.hash == loads('version = 1\nid = "x"\n[paths]\nsegments = "literals"\n').hash
        assert plain.hash != loads('version = 1\nid = "x"\n[paths]\nsegments = "words"\n').hash

    def test_learned_words_join_under_a_policy(self) -> None:
        """Templates teach their literals; the merged set follows the generation."""
        words = PathWords()
        before = words.literals(POLICY)
        assert words.learn("/widgets/{wid}/parts") and not words.learn("/widgets/{x}")
        assert words.literals(POLICY) == (before or frozenset()) | {"widgets", "parts"}
        assert words.literals(WORDS_POLICY) is None


class TestASGI:
    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(planted=st.lists(WORD, min_size=6, max_size=6, unique=True))
    def test_no_unrouted_word_reaches_the_journal(
        self, kit: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory, planted: list[str]
    ) -> None:
        """Routed, mounted, unknown (404) and policy-named paths, over uvicorn: only route words stay."""
        a, b, c, d, e, f = planted
        directory = tmp_path_factory.mktemp("asgi") / "journal"
        handle = kit.new_handle(directory, POLICY)
        try:
            with kit.serve_asgi(AuditMiddleware(starlette_app(), handle=handle)) as base:
                paths = [f"/{a}/{b}", f"/users/{c}", f"/users/{d}/orders", f"/api/items/{e}"]
                paths += [f"/reports/{f}/summary?q={b}", "/healthz"]
                for path in paths:
                    httpx.get(base + path, timeout=TIMEOUT)
                got = actions(kit, handle, directory, len(paths))
        finally:
            handle.shutdown()
        by_target = {x["target"].split("{")[0]: x for x in got}
        names = sorted(x["name"] for x in got)
        assert "/users/{user_id}" in names and "/users/{user_id}/orders" in names
        assert "/api/items/{item}" in names and "/healthz" in names
        assert by_target["/reports/"]["target"].endswith("}/summary?q=")
        assert {"/", "/users/", "/api/items/", "/reports/", "/healthz"} <= set(by_target)
        journal = kit.journal_bytes(directory)
        for word in planted:
            assert word.encode() not in journal

    def test_a_recorded_template_teaches_its_words(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """An app whose route table cannot be read: the template the router records teaches its words,
        and the first request's target is collapsed again with them."""
        handle, directory = pipeline
        inner = Starlette(routes=[Route("/gadgets/{gid}/parts", endpoint)])

        async def hidden(scope: Any, receive: Any, send: Any) -> None:  # no .routes, no .app
            await inner(scope, receive, send)

        assert "gadgets" not in (ROUTE_WORDS.literals(POLICY) or ())
        with kit.serve_asgi(AuditMiddleware(hidden, handle=handle)) as base:
            httpx.get(base + "/gadgets/zqlamp/parts", timeout=TIMEOUT)
            [action] = actions(kit, handle, directory, 1)
        assert {"name": "/gadgets/{gid}/parts", "method": "GET", "target": "/gadgets/{id}/parts"} == action

    def test_the_words_policy_keeps_word_segments(self, kit: SimpleNamespace, tmp_path: Any) -> None:
        """segments = "words": a 404's word-like segments stay (the policy decided)."""
        handle = kit.new_handle(tmp_path / "journal", WORDS_POLICY)
        try:
            with kit.serve_asgi(AuditMiddleware(starlette_app(), handle=handle)) as base:
                httpx.get(base + "/zqnowhere/zqelse", timeout=TIMEOUT)
                [action] = actions(kit, handle, tmp_path / "journal", 1)
        finally:
            handle.shutdown()
        assert "/zqnowhere/zqelse" == action["target"]


class TestCorpus:
    def test_every_planted_value_leaves_paths_whole_and_in_pieces(
        self, kit: SimpleNamespace, pipeline: Any, canaries: Canaries
    ) -> None:
        """Every value of both corpora, as one path segment and cut into its words (a lowercase name, a
        street address: what no needle and no scanner without NER finds), on a routed and an unknown
        path: no needle in the journal, and no piece of a value in any journaled path (unless a route of
        the app names it)."""
        handle, directory = pipeline
        paths: list[str] = []
        pieces: set[str] = set()
        for value in canaries.values.values():
            words = [w for w in re.split(r"[\s,/?#%]+", value) if w]
            pieces |= {w for w in words if len(w) >= 4}
            whole = urllib.parse.quote(value, safe="")
            paths += [
                f"/users/{whole}",
                "/users/x/" + "/".join(urllib.parse.quote(w, safe="") for w in words),
            ]
        with kit.serve_asgi(AuditMiddleware(starlette_app(), handle=handle)) as base:
            for path in paths:
                httpx.get(base + path, timeout=TIMEOUT)
            got = actions(kit, handle, directory, len(paths))
        assert len(paths) == len(got)
        assert [] == canaries.leaks_in(kit.journal_bytes(directory))
        journaled = " ".join(f"{a['name']} {a['target']}" for a in got)
        routes = ROUTE_WORDS.literals(POLICY) or frozenset()  # "items" is a piece of a URL and a route word
        assert [] == sorted(p for p in pieces - routes if p in journaled)


class TestWSGI:
    def test_flask_url_map_words_before_any_route_ran(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The first request is a 404: the Flask url_map's words are known already; others collapse."""
        handle, directory = pipeline
        app = flask.Flask("paths")
        app.add_url_rule("/accounts/<name>/invoices", "invoices", lambda name: "ok")
        app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle)  # type: ignore[method-assign]
        with kit.serve_wsgi(app) as base:
            assert 404 == httpx.get(base + "/invoices/zqalice/accounts", timeout=TIMEOUT).status_code
            assert 200 == httpx.get(base + "/accounts/zqbob/invoices", timeout=TIMEOUT).status_code
            first, second = actions(kit, handle, directory, 2)
        assert "/invoices/{id}/accounts" == first["target"] == first["name"]
        assert ("/accounts/<name>/invoices", "/accounts/{id}/invoices") == (second["name"], second["target"])
        assert b"zqalice" not in kit.journal_bytes(directory) and b"zqbob" not in kit.journal_bytes(directory)


class TestSpans:
    def test_span_names_and_url_attributes_keep_literals(self) -> None:
        """A span named by a path, and URL-valued attributes, keep route literals only (real SDK spans);
        a name that is not a path keeps its words."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from auditlog.integrations.otel import RedactingSpanProcessor

        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(spans), policy=POLICY))
        tracer = provider.get_tracer("paths")
        attributes = {
            "url.path": "/reports/zqalpha/summary",
            "url.full": "https://api.example.com/healthz/zqbeta?zq=zqgamma",
            "http.target": "/zqdelta/summary?q=1",
        }
        with tracer.start_as_current_span("GET /reports/zqeps/summary", attributes=attributes):
            pass
        with tracer.start_as_current_span("reports.render"):
            pass
        first, second = spans.get_finished_spans()
        provider.shutdown()
        assert "GET /reports/{id}/summary" == first.name
        assert first.attributes is not None
        assert "/reports/{id}/summary" == first.attributes["url.path"]
        assert "https://api.example.com/healthz/{id}?zq=" == first.attributes["url.full"]
        assert "/{id}/summary?q=" == first.attributes["http.target"]
        assert "reports.render" == second.name
        assert "zq" not in repr([first.name, *map(str, first.attributes.values())]).replace("?zq=", "")


class TestMCPResources:
    @pytest.mark.parametrize("sdk", ["mcp", "fastmcp"])
    def test_resource_names_keep_the_listed_templates_words(
        self, kit: SimpleNamespace, pipeline: Any, sdk: str
    ) -> None:
        """A resource read names its URI by route literals: before the server listed its templates the
        words collapse too; after ``resources/templates/list`` the template's words stay."""
        handle, directory = pipeline
        server, client_class = _mcp_server(sdk, handle, f"{sdk}-notes")

        @server.resource(f"{sdk}-notes://journal{sdk}/{{day}}/entry{sdk}")
        def entry(day: str) -> str:
            return f"entry of {day}"

        async def go() -> None:
            async with client_class(server) as client:
                await client.read_resource(f"{sdk}-notes://journal{sdk}/zqmonday/entry{sdk}")
                await client.list_resource_templates()
                await client.read_resource(f"{sdk}-notes://journal{sdk}/zqtuesday/entry{sdk}")

        kit.run(go)
        handle.flush()
        before, after = kit.events(directory, "mcp.resource_read")
        assert "{scheme}://{token}/{token}/{token}" == before["action"]["name"]
        assert f"{sdk}-notes://journal{sdk}/{{token}}/entry{sdk}" == after["action"]["name"]
        assert b"zqmonday" not in kit.journal_bytes(directory)
        assert b"zqtuesday" not in kit.journal_bytes(directory)


def _mcp_server(sdk: str, handle: Any, name: str) -> tuple[Any, Any]:
    """A server of ``sdk`` ("mcp": the SDK's MCPServer; "fastmcp") under the audit middleware, and the
    in-memory client class that talks to it."""
    if sdk == "mcp":
        from mcp import Client
        from mcp.server.mcpserver import MCPServer

        from auditlog.integrations.mcp import MCPAuditMiddleware

        return MCPServer(name, middleware=[MCPAuditMiddleware(handle=handle)]), Client
    from fastmcp import Client as FastClient
    from fastmcp import FastMCP

    from auditlog.integrations.fastmcp import FastMCPAuditMiddleware

    return FastMCP(name, middleware=[FastMCPAuditMiddleware(handle=handle)]), FastClient


class TestMCPToolNames:
    @pytest.mark.parametrize("sdk", ["mcp", "fastmcp"])
    def test_a_name_no_server_declared_is_a_value(
        self, kit: SimpleNamespace, pipeline: Any, sdk: str
    ) -> None:
        """A tool name is journaled when the server listed it, ran it, or a rule names it; a word-like
        name a client made up (or a tool that failed before anyone listed it) is ``<unlisted>``."""
        handle, directory = pipeline
        server, client_class = _mcp_server(sdk, handle, f"{sdk}-tools")
        ok, boom = f"zq_{sdk}_ok", f"zq_{sdk}_boom"

        def fine() -> str:
            return "ok"

        def broken() -> str:
            raise ValueError("no")

        server.tool(name=ok)(fine)
        server.tool(name=boom)(broken)

        async def go() -> None:
            async with client_class(server) as client:
                for name in (f"zqamelie{sdk}", boom, ok):
                    with contextlib.suppress(Exception):  # fastmcp raises on a tool error; the SDK does not
                        await client.call_tool(name, {})
                await client.list_tools()
                with contextlib.suppress(Exception):
                    await client.call_tool(boom, {})

        kit.run(go)
        handle.flush()
        names = [e["action"]["name"] for e in kit.events(directory, "mcp.tool_call")]
        assert ["<unlisted>", "<unlisted>", ok, boom] == names
        assert f"zqamelie{sdk}".encode() not in kit.journal_bytes(directory)
