"""MCPAuditMiddleware with the official SDK: in-memory client sessions and streamable HTTP under uvicorn."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from auditlog.actor import Actor
from auditlog.canaries import load_canaries
from auditlog.integrations.mcp import (
    CLOSED_MESSAGE,
    DENIED_MESSAGE,
    DISABLED_MESSAGE,
    MCPAuditMiddleware,
    resource_template,
)
from tests._support import MCP_PLACES, SECRETS, add_mcp_tools, gate_policy, plant_in_mcp

CANARIES = load_canaries()
POLICY = gate_policy(
    "mcp-test",
    key="tool",
    admin="delete_*",
    disabled="off",
    closed="pay",
    rules="""
[[rules]]
id = "search"
match = { tool = "search" }
level = "values"
allow = ["query", "limit"]
""",
)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TOKENS = {"tok-reader": ["read"], "tok-admin": ["read", "admin"]}


class Verifier:
    """A token verifier as the SDK's bearer auth uses it: verified scopes, subject and claims."""

    async def verify_token(self, token: str) -> AccessToken | None:
        scopes = TOKENS.get(token)
        if scopes is None:
            return None
        who = token.removeprefix("tok-")
        return AccessToken(
            token=token,
            client_id=f"cli-{who}",
            scopes=scopes,
            subject=f"user-{who}",
            claims={"tenant": "acme"},
        )


def build_server(middleware: MCPAuditMiddleware, **kw: Any) -> MCPServer:
    server = MCPServer("audit-test", middleware=[middleware], **kw)

    add_mcp_tools(lambda fn: server.tool()(fn), error=ValueError)

    @server.tool()
    def search(query: str, limit: int, token: str) -> list[str]:
        return [query]

    @server.resource("users://{uid}/profile")
    def profile(uid: str) -> str:
        return f"profile of {uid}"

    @server.prompt()
    def greet(name: str) -> str:
        return f"hello {name}"

    return server


class TestInMemory:
    def test_tool_call_event(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """mcp.tool_call: name, argument and result shapes, isError, JSON-RPC id, client, trace from _meta."""
        handle, directory = pipeline
        server = build_server(MCPAuditMiddleware(handle=handle))

        async def go() -> Any:
            async with Client(server) as client:
                return await client.call_tool("add", {"a": 1, "b": 2}, meta={"traceparent": TRACEPARENT})

        result = kit.run(go)
        assert not result.is_error
        handle.flush()
        [event] = kit.events(directory, "mcp.tool_call")
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == event["correlation_id"]
        assert {"name": "add", "method": "tools/call", "target": None} == event["action"]
        assert {"t": "obj", "n": 2, "keys": {"a": {"t": "int"}, "b": {"t": "int"}}} == event["args_shape"]
        assert {"result": {"t": "int"}} == event["result_shape"]["keys"]["structuredContent"]["keys"]
        assert False is event["mcp"]["is_error"]
        assert {"name": "mcp", "version": "0.1.0"} == event["mcp"]["client"]
        assert event["mcp"]["jsonrpc_id"] is not None
        assert "ok" == event["outcome"]["status"]

    def test_validation_error_text_never_journaled(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The client sees the validation error (it echoes the value); the journal has only its shape."""
        handle, directory = pipeline
        server = build_server(MCPAuditMiddleware(handle=handle))
        planted = CANARIES.values["password"]

        async def go() -> Any:
            async with Client(server) as client:
                return await client.call_tool("add", {"a": planted, "b": 2})

        result = kit.run(go)
        assert result.is_error
        assert planted in result.content[0].text
        handle.flush()
        [event] = kit.events(directory, "mcp.tool_call")
        assert ("error", True) == (event["outcome"]["status"], event["mcp"]["is_error"])
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))

    def test_values_level_keeps_only_allowlisted_scanned_values(
        self, kit: SimpleNamespace, pipeline: Any
    ) -> None:
        """level=values: allowlisted arguments kept (after the scan), the rest shaped."""
        handle, directory = pipeline
        server = build_server(MCPAuditMiddleware(handle=handle))

        async def go() -> Any:
            async with Client(server) as client:
                await client.call_tool(
                    "search", {"query": "red shoes", "limit": 5, "token": CANARIES.values["jwt"]}
                )
                await client.call_tool(
                    "search", {"query": CANARIES.values["email"], "limit": 1, "token": "t"}
                )

        kit.run(go)
        handle.flush()
        first, second = kit.events(directory, "mcp.tool_call")
        keys = first["args_shape"]["keys"]
        assert ("red shoes", 5) == (keys["query"]["v"], keys["limit"]["v"])
        assert "v" not in keys["token"]
        assert "canary" not in second["args_shape"]["keys"]["query"]["v"]
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))

    def test_resources_prompts_and_lists(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """resource_read records scheme and template, never the URI (the words of the templates the
        server listed stay); lists are metadata only."""
        handle, directory = pipeline
        server = build_server(MCPAuditMiddleware(handle=handle))
        uid = urllib.parse.quote(CANARIES.values["api_key"], safe="")

        async def go() -> None:
            async with Client(server) as client:
                await client.list_resource_templates()
                await client.read_resource(f"users://{uid}/profile")
                await client.get_prompt("greet", {"name": CANARIES.values["unicode_name"]})
                await client.list_tools()
                await client.list_prompts()

        kit.run(go)
        handle.flush()
        [read] = kit.events(directory, "mcp.resource_read")
        assert ("users://{token}/profile", "users") == (read["action"]["name"], read["mcp"]["scheme"])
        [prompt] = kit.events(directory, "mcp.prompt_get")
        assert {"name"} == set(prompt["args_shape"]["keys"])
        for kind in ("mcp.list_tools", "mcp.list_prompts"):
            [listed] = kit.events(directory, kind)
            assert "args_shape" not in listed and "result_shape" not in listed
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))

    def test_scopes_kill_switch_and_unknown_names(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Missing scope: JSON-RPC error + authz.denied; disabled tool refused; a secret tool name hidden."""
        handle, directory = pipeline
        admin = build_server(
            MCPAuditMiddleware(handle=handle, actor=lambda ctx: Actor(scopes=frozenset({"admin"})))
        )
        anonymous = build_server(MCPAuditMiddleware(handle=handle))
        errors: list[str] = []

        async def go() -> None:
            async with Client(anonymous) as client:
                for name, args in (("delete_user", {"uid": "u1"}), ("off", {})):
                    try:
                        await client.call_tool(name, args)
                    except MCPError as exc:
                        errors.append(exc.message)
                await client.call_tool(CANARIES.values["api_key"], {})
            async with Client(admin) as client:
                assert (
                    "deleted"
                    == (await client.call_tool("delete_user", {"uid": "u1"})).structured_content["result"]
                )

        kit.run(go)
        assert [DENIED_MESSAGE, DISABLED_MESSAGE] == errors
        handle.flush()
        denied, disabled = kit.events(directory, "authz.denied")  # every refusal is one kind of event
        assert ("off", "disabled") == (disabled["action"]["name"], disabled["outcome"]["status"])
        assert {
            "allowed": False,
            "reason": "missing_scopes",
            "rule": "admin",
            "required": ["admin"],
            "missing": ["admin"],
        } == denied["decision"]
        calls = [
            (e["action"]["name"], e["outcome"]["status"]) for e in kit.events(directory, "mcp.tool_call")
        ]
        assert [("<hidden>", "error"), ("delete_user", "ok")] == calls
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))

    def test_disabled_tools_are_not_listed(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A kill switch hides the tool from tools/list as well as refusing it; the others stay listed."""
        handle, _ = pipeline
        names: list[list[str]] = []

        async def go() -> None:
            async with Client(build_server(MCPAuditMiddleware(handle=handle))) as client:
                names.append(sorted(t.name for t in (await client.list_tools()).tools))

        kit.run(go)
        assert "off" not in names[0] and {"add", "delete_user"} <= set(names[0])

    def test_fail_closed(self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """fail_mode=closed: the call's result is replaced by a JSON-RPC error when the journal refuses."""
        handle, _directory = pipeline
        mw = MCPAuditMiddleware(handle=handle)
        server = build_server(mw)
        outcome: dict[str, Any] = {}

        async def go() -> None:
            async with Client(server) as client:
                monkeypatch.setattr(handle, "journal", kit.RefusingJournal(handle.journal))
                try:
                    await client.call_tool("pay", {"amount": 5})
                except MCPError as exc:
                    outcome["pay"] = exc.message
                outcome["add"] = (await client.call_tool("add", {"a": 1, "b": 1})).structured_content

        kit.run(go)
        assert {"pay": CLOSED_MESSAGE, "add": {"result": 2}} == outcome
        assert 1 == mw.stats.refused


class TestStreamableHTTP:
    def test_bearer_scopes_enforced_over_http(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Under uvicorn with the SDK's bearer auth: actor from the verified token, scopes enforced."""
        handle, directory = pipeline
        server = build_server(
            MCPAuditMiddleware(handle=handle),
            token_verifier=Verifier(),
            auth=AuthSettings(
                issuer_url="http://127.0.0.1:9",
                resource_server_url="http://127.0.0.1/mcp",
                validate_token_resource=False,
            ),
        )
        app = server.streamable_http_app()
        with kit.serve_asgi(app, lifespan="on") as base:
            seen: dict[str, Any] = {}

            async def go() -> None:
                for token in ("tok-reader", "tok-admin"):
                    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"})
                    transport = streamable_http_client(f"{base}/mcp", http_client=http)
                    async with http, Client(transport) as client:
                        seen[token + ":add"] = (
                            await client.call_tool("add", {"a": 2, "b": 3})
                        ).structured_content
                        try:
                            await client.call_tool(
                                "delete_user", {"uid": "u9"}, meta={"traceparent": TRACEPARENT}
                            )
                            seen[token] = "ok"
                        except MCPError as exc:
                            seen[token] = exc.message

            kit.run(go)
        assert {"result": 5} == seen["tok-reader:add"] == seen["tok-admin:add"]
        assert (DENIED_MESSAGE, "ok") == (seen["tok-reader"], seen["tok-admin"])
        handle.flush()
        [denied] = kit.events(directory, "authz.denied")
        assert {
            "subject": "user-reader",
            "tenant": "acme",
            "client_id": "cli-reader",
            "scopes": ["read"],
        } == denied["actor"]
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == denied["correlation_id"]
        calls = [e["actor"]["subject"] for e in kit.events(directory, "mcp.tool_call")]
        assert ["user-reader", "user-admin", "user-admin"] == calls


class TestResourceTemplate:
    def test_templates(self) -> None:
        """Scheme kept, id-like segments collapsed, query and fragment dropped."""
        assert ("users", "users://{n}/profile") == resource_template("users://42/profile?token=x#f")
        assert ("file", "file:///var/data/{token}") == resource_template("file:///var/data/a8Xk2Lm9Qz77PqR")
        assert (None, "<invalid>") == resource_template(None)


class TestLabels:
    def test_flagged_labels_are_refused_every_time_and_never_kept(self) -> None:
        """Client names, versions and session ids: a canary is refused on every call and never remembered;
        a plain label passes every time."""
        from auditlog.integrations import _mcp_request as audit_mcp
        from processors import SecretScanner

        scanner = SecretScanner()
        for _ in range(3):
            assert "claude-desktop" == audit_mcp._label("claude-desktop", scanner)
            assert "1.2.3" == audit_mcp._label("1.2.3", scanner)
            assert "7" == audit_mcp._label(7, scanner)
            assert audit_mcp._label(True, scanner) is None
            for value in CANARIES.values.values():
                assert audit_mcp._label(value, scanner) is None
        kept = audit_mcp._ACCEPTED_LABELS[id(scanner)][1]
        assert {"claude-desktop", "1.2.3"} == kept
        assert [] == CANARIES.leaks_in(repr(kept).encode())


PLACES = (*MCP_PLACES, "arg_value", "resource_uri")


@pytest.fixture(scope="module")
def canary_env(kit: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with kit.canary_sinks(tmp_path_factory.mktemp("mcp-canaries"), POLICY, stdlib=True) as sinks:
        yield sinks, build_server(MCPAuditMiddleware(handle=sinks.handle))


class TestCanaries:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(index=st.integers(0, len(SECRETS) - 1), where=st.sampled_from(PLACES))
    def test_nothing_leaks(self, kit: SimpleNamespace, canary_env: Any, index: int, where: str) -> None:
        """Canaries in tool arguments and results, resource URIs, errors and _meta stay out of every sink."""
        sinks, server = canary_env
        canary = SECRETS[index]

        async def go() -> None:
            async with Client(server) as client:
                if await plant_in_mcp(client, where, canary, index):
                    return
                if where == "arg_value":
                    await client.call_tool("search", {"query": canary, "limit": 1, "token": canary})
                else:
                    with contextlib.suppress(MCPError):
                        await client.read_resource(
                            f"users://{urllib.parse.quote(canary, safe='')}/x?k={canary}"
                        )

        sinks.run_planted(go)
