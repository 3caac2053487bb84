"""FastMCPAuditMiddleware with fastmcp: in-memory client sessions and streamable HTTP under uvicorn."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError

from auditlog.canaries import load_canaries
from auditlog.integrations.fastmcp import FastMCPAuditMiddleware
from auditlog.integrations.mcp import CLOSED_MESSAGE, DENIED_MESSAGE, DISABLED_MESSAGE
from tests._support import MCP_PLACES, SECRETS, add_mcp_tools, gate_policy, plant_in_mcp

CANARIES = load_canaries()
POLICY = gate_policy("fastmcp-test", key="tool", admin="delete_*", disabled="off", closed="pay")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def build_server(middleware: FastMCPAuditMiddleware, **kw: Any) -> FastMCP:
    server = FastMCP("audit-fastmcp", middleware=[middleware], **kw)

    add_mcp_tools(server.tool, error=ToolError)

    @server.tool
    def crash(message: str) -> str:
        raise RuntimeError(message)

    @server.resource("notes://{note_id}")
    def note(note_id: str) -> str:
        return f"note {note_id}"

    @server.prompt
    def greet(name: str) -> str:
        return f"hello {name}"

    return server


class TestInMemory:
    def test_events_for_tools_resources_prompts(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """Tool call with trace from _meta, resource template, prompt, tool errors by type only."""
        handle, directory = pipeline
        server = build_server(FastMCPAuditMiddleware(handle=handle))
        planted = CANARIES.values["api_key"]

        async def go() -> None:
            async with Client(server) as client:
                await client.call_tool("add", {"a": 1, "b": 2}, meta={"traceparent": TRACEPARENT})
                with pytest.raises(ToolError):
                    await client.call_tool("fail", {"message": planted})
                with pytest.raises(ToolError):
                    await client.call_tool("add", {"a": planted, "b": 1})
                await client.list_resource_templates()  # declares "notes://{note_id}": its scheme stays
                await client.read_resource("notes://12345")
                await client.get_prompt("greet", {"name": "ann"})

        kit.run(go)
        handle.flush()
        ok, failed, invalid = kit.events(directory, "mcp.tool_call")
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == ok["correlation_id"]
        assert {"a", "b"} == set(ok["args_shape"]["keys"])
        assert ("ok", False) == (ok["outcome"]["status"], ok["mcp"]["is_error"])
        assert ("error", "ToolError") == (failed["outcome"]["status"], failed["outcome"]["error_type"])
        assert "error" == invalid["outcome"]["status"]
        [read] = kit.events(directory, "mcp.resource_read")
        assert ("notes://{n}", "notes") == (read["action"]["name"], read["mcp"]["scheme"])
        [prompt] = kit.events(directory, "mcp.prompt_get")
        assert "greet" == prompt["action"]["name"]
        assert [] == CANARIES.leaks_in(kit.journal_bytes(directory))

    def test_denied_disabled_and_fail_closed(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """JSON-RPC errors for a missing scope, a disabled tool, and a refused journal under fail closed."""
        handle, directory = pipeline
        server = build_server(FastMCPAuditMiddleware(handle=handle))
        messages: list[str] = []

        async def go() -> None:
            async with Client(server) as client:
                for name, args in (("delete_user", {"uid": "u"}), ("off", {})):
                    try:
                        await client.call_tool(name, args)
                    except MCPError as exc:
                        messages.append(exc.error.message)
                handle.flush()
                monkeypatch.setattr(handle, "journal", kit.RefusingJournal(handle.journal))
                try:
                    await client.call_tool("pay", {"amount": 1})
                except MCPError as exc:
                    messages.append(exc.error.message)
                assert 2 == (await client.call_tool("add", {"a": 1, "b": 1})).data

        kit.run(go)
        assert [DENIED_MESSAGE, DISABLED_MESSAGE, CLOSED_MESSAGE] == messages
        monkeypatch.undo()
        denied, disabled = kit.events(directory, "authz.denied")  # every refusal is one kind of event
        assert ["admin"] == denied["decision"]["missing"]
        assert ("disabled", "disabled") == (disabled["outcome"]["status"], disabled["decision"]["reason"])


class TestStreamableHTTP:
    def test_disabled_tools_are_not_listed(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """A kill switch hides the tool from tools/list as well as refusing it; the others stay listed."""
        handle, _ = pipeline
        names: list[str] = []

        async def go() -> None:
            async with Client(build_server(FastMCPAuditMiddleware(handle=handle))) as client:
                names.extend(t.name for t in await client.list_tools())

        kit.run(go)
        assert "off" not in names and {"add", "delete_user"} <= set(names)

    def test_static_tokens_over_http(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """fastmcp's http app under uvicorn: actor from the verified token, scopes enforced."""
        handle, directory = pipeline
        verifier = StaticTokenVerifier(
            tokens={
                "tok-reader": {"client_id": "reader", "scopes": ["read"], "sub": "user-r"},
                "tok-admin": {"client_id": "admin", "scopes": ["read", "admin"], "sub": "user-a"},
            }
        )
        server = build_server(FastMCPAuditMiddleware(handle=handle), auth=verifier)
        results: dict[str, Any] = {}
        with kit.serve_asgi(server.http_app(path="/mcp"), lifespan="on") as base:

            async def go() -> None:
                for token in ("tok-reader", "tok-admin"):
                    transport = StreamableHttpTransport(
                        f"{base}/mcp", headers={"authorization": f"Bearer {token}"}
                    )
                    async with Client(transport) as client:
                        results[token + ":add"] = (await client.call_tool("add", {"a": 2, "b": 2})).data
                        try:
                            results[token] = (await client.call_tool("delete_user", {"uid": "u"})).data
                        except MCPError as exc:
                            results[token] = exc.error.message

            kit.run(go)
        assert {
            "tok-reader:add": 4,
            "tok-admin:add": 4,
            "tok-reader": DENIED_MESSAGE,
            "tok-admin": "deleted",
        } == results
        handle.flush()
        [denied] = kit.events(directory, "authz.denied")
        assert ("reader", ["read"]) == (denied["actor"]["client_id"], denied["actor"]["scopes"])
        clients = [e["actor"]["client_id"] for e in kit.events(directory, "mcp.tool_call")]
        assert ["reader", "admin", "admin"] == clients


PLACES = (*MCP_PLACES, "arg_value", "crash", "resource_uri")


@pytest.fixture(scope="module")
def canary_env(kit: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with kit.canary_sinks(tmp_path_factory.mktemp("fastmcp-canaries"), POLICY) as sinks:
        yield sinks, build_server(FastMCPAuditMiddleware(handle=sinks.handle))


class TestCanaries:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(index=st.integers(0, len(SECRETS) - 1), where=st.sampled_from(PLACES))
    def test_nothing_leaks(self, kit: SimpleNamespace, canary_env: Any, index: int, where: str) -> None:
        """Canaries in tool arguments and results, resource URIs, errors and _meta stay out of the journal."""
        sinks, server = canary_env
        canary = SECRETS[index]

        async def go() -> None:
            async with Client(server) as client:
                with contextlib.suppress(ToolError, MCPError):
                    if await plant_in_mcp(client, where, canary, index):
                        return
                    if where == "arg_value":
                        await client.call_tool("fail", {"message": canary})
                    elif where == "crash":
                        await client.call_tool("crash", {"message": canary})
                    else:
                        await client.read_resource(f"notes://{urllib.parse.quote(canary, safe='')}")

        sinks.run_planted(go)
