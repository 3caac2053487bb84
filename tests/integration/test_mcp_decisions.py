"""MCP decisions: rules match the real tool name whatever the label hides, and a failure before the call
never skips an access check (SDK and fastmcp)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from fastmcp import Client as FastClient
from fastmcp import FastMCP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from auditlog.integrations.fastmcp import FastMCPAuditMiddleware
from auditlog.integrations.mcp import (
    DENIED_MESSAGE,
    DISABLED_MESSAGE,
    FAILED_MESSAGE,
    MCPAuditMiddleware,
    MCPAuditor,
)
from auditlog.policy import Policy, loads

# Names an MCP client may call: the SDKs' tool-name alphabet (SEP-986), any length up to 64.
NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)


def _policy(name: str) -> Policy:
    literal = "".join(f"[{c}]" if c in "*?[]" else c for c in name)  # a glob matching exactly the name
    return loads(
        f"""
version = 1
id = "names"
[[rules]]
id = "gate"
match = {{ tool = {json.dumps(literal)} }}
required_scopes = ["admin"]
[[rules]]
id = "off"
match = {{ tool = {json.dumps("off-" + literal)} }}
disabled = true
"""
    )


def _sdk_server(name: str, ran: list[str], mw: MCPAuditMiddleware) -> MCPServer:
    server = MCPServer("names", middleware=[mw])

    def gated() -> str:
        ran.append(name)
        return "ran"

    def off() -> str:
        ran.append("off-" + name)
        return "ran"

    server.tool(name=name)(gated)
    server.tool(name="off-" + name)(off)
    return server


def _fast_server(name: str, ran: list[str], mw: FastMCPAuditMiddleware) -> FastMCP:
    server = FastMCP("names", middleware=[mw])

    def gated() -> str:
        ran.append(name)
        return "ran"

    def off() -> str:
        ran.append("off-" + name)
        return "ran"

    server.tool(gated, name=name)
    server.tool(off, name="off-" + name)
    return server


POLICY = _policy("unused")  # the `pipeline` fixture's; each test passes its own to the middleware
SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HIDDEN = ("reset_password2fa", "oauth2token", "admin_wipe_db20240101", "9f3c2a7be41d08c6f5a9e27d4b1c3e80")


class TestRealToolName:
    @SETTINGS
    @given(name=NAMES)
    @example(name=HIDDEN[0])
    @example(name=HIDDEN[1])
    @example(name=HIDDEN[2])
    @example(name=HIDDEN[3])
    def test_sdk_rule_applies_to_any_name(self, kit: SimpleNamespace, name: str) -> None:
        """SDK: required_scopes and disabled apply to a tool whatever its name looks like."""
        ran: list[str] = []
        server = _sdk_server(name, ran, MCPAuditMiddleware(policy=_policy(name)))
        errors: list[str] = []

        async def go() -> None:
            async with Client(server) as client:
                for tool in (name, "off-" + name):
                    try:
                        await client.call_tool(tool, {})
                    except MCPError as exc:
                        errors.append(exc.message)

        kit.run(go)
        assert ([], [DENIED_MESSAGE, DISABLED_MESSAGE]) == (ran, errors)

    @SETTINGS
    @given(name=NAMES)
    @example(name=HIDDEN[0])
    @example(name=HIDDEN[1])
    @example(name=HIDDEN[2])
    def test_fastmcp_rule_applies_to_any_name(self, kit: SimpleNamespace, name: str) -> None:
        """fastmcp: required_scopes and disabled apply to a tool whatever its name looks like."""
        ran: list[str] = []
        server = _fast_server(name, ran, FastMCPAuditMiddleware(policy=_policy(name)))
        errors: list[str] = []

        async def go() -> None:
            async with FastClient(server) as client:
                for tool in (name, "off-" + name):
                    try:
                        await client.call_tool(tool, {})
                    except Exception as exc:  # fastmcp wraps the JSON-RPC error in its ToolError
                        errors.append(str(exc))

        kit.run(go)
        assert [] == ran
        assert 2 == len(errors)
        assert DENIED_MESSAGE in errors[0] and DISABLED_MESSAGE in errors[1]

    def test_hidden_name_still_journaled_hidden(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The label stays sanitized: a token-like tool name is journaled as <hidden>, and refused."""
        handle, directory = pipeline
        name = HIDDEN[3]
        ran: list[str] = []
        server = _sdk_server(name, ran, MCPAuditMiddleware(policy=_policy(name), handle=handle))

        async def go() -> None:
            async with Client(server) as client:
                with pytest.raises(MCPError):
                    await client.call_tool(name, {})

        kit.run(go)
        handle.flush()
        [denied] = kit.events(directory, "authz.denied")
        assert "<hidden>" == denied["action"]["name"]
        assert name.encode() not in kit.journal_bytes(directory)


class _Boom(Exception):
    pass


_BEGIN = MCPAuditor.begin


def _begin_raises(self: Any, **kw: Any) -> Any:
    if kw["method"] == "tools/call":  # the session still initializes
        raise _Boom
    return _BEGIN(self, **kw)


class TestInternalFailure:
    @pytest.mark.parametrize("sdk", ["mcp", "fastmcp"])
    @pytest.mark.parametrize("enforce", [True, False])
    def test_begin_failure(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch, sdk: str, enforce: bool
    ) -> None:
        """The step before the call raises: with enforce, refused and counted; without, served, and an
        ``audit.failed`` event (error type only) is journaled."""
        handle, directory = pipeline
        ran: list[str] = []
        name = "plain"
        if sdk == "mcp":
            mw: Any = MCPAuditMiddleware(policy=_policy(name), handle=handle, enforce=enforce)
            server: Any = _sdk_server(name, ran, mw)
            client_cls: Any = Client
        else:
            mw = FastMCPAuditMiddleware(policy=_policy(name), handle=handle, enforce=enforce)
            server = _fast_server(name, ran, mw)
            client_cls = FastClient
        monkeypatch.setattr(MCPAuditor, "begin", _begin_raises)
        errors: list[str] = []

        async def go() -> None:
            async with client_cls(server) as client:
                try:
                    await client.call_tool(name, {})
                except Exception as exc:
                    errors.append(str(exc))

        kit.run(go)
        handle.flush()
        failed = [e for e in kit.events(directory, "audit.failed") if e["action"]["stage"] == "mcp.begin"]
        assert failed and {"_Boom"} == {e["outcome"]["error_type"] for e in failed}
        if enforce:
            assert [] == ran
            assert 1 == len(errors) and FAILED_MESSAGE in errors[0]
            assert mw.stats.refused >= 1
        else:
            assert ([name], []) == (ran, errors)
