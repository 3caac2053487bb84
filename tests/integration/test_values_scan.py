"""Allowlisted values are scanned in the middleware as in the structlog path: numbers included (ASGI under
uvicorn, WSGI under werkzeug, MCP in memory)."""

from __future__ import annotations

import json
from importlib import resources
from types import SimpleNamespace
from typing import Any

import flask
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from auditlog.canaries import Canaries
from auditlog.events import shape_value
from auditlog.integrations.asgi import AuditMiddleware
from auditlog.integrations.mcp import MCPAuditMiddleware
from auditlog.integrations.wsgi import AuditWSGIMiddleware
from auditlog.policy import loads
from processors import SecretScanner


def _forms() -> Canaries:
    """The second canary corpus (values without a marker): the project copy when it is there, else the
    few values these tests plant."""
    path = resources.files("auditlog").joinpath("data/canaries-forms.json")
    if path.is_file():
        data = json.loads(path.read_text("utf-8"))
        return Canaries(values=dict(data["values"]), needles=tuple(data["needles"]))
    card = "4111111111111111"
    return Canaries(values={"card_digits_as_number": card}, needles=(card,))


FORMS = _forms()
CARD = int(FORMS.values["card_digits_as_number"])
POLICY = loads(
    """
version = 1
id = "values-scan"
[[rules]]
id = "pay"
match = { route = "/pay" }
level = "values"
allow = ["card", "n"]
[[rules]]
id = "tool"
match = { tool = "pay" }
level = "values"
allow = ["card", "n"]
"""
)
TIMEOUT = httpx.Timeout(10.0)
SCANNER = SecretScanner()


class TestNumbers:
    @given(n=st.sampled_from([CARD, float(CARD), -CARD, 1 << 70]))
    def test_shape_value_scans_numbers(self, n: int | float) -> None:
        """A number the scanner flags is redacted like a string would be; a plain number stays."""
        shape, _ = shape_value({"card": n, "n": 3}, rule=POLICY.match(route="/pay"), scanner=SCANNER)
        assert [] == FORMS.leaks_in(json.dumps(shape).encode())
        assert 3 == shape["keys"]["n"]["v"]

    @pytest.mark.parametrize("server", ["asgi", "wsgi"])
    def test_http_card_as_json_number(self, kit: SimpleNamespace, pipeline: Any, server: str) -> None:
        """A card number sent as a JSON number in an allowlisted field never reaches the journal."""
        handle, directory = pipeline
        if server == "asgi":

            async def pay(request: Request) -> PlainTextResponse:
                await request.body()
                return PlainTextResponse("ok")

            serve = kit.serve_asgi(
                AuditMiddleware(Starlette(routes=[Route("/pay", pay, methods=["POST"])]), handle=handle)
            )
        else:
            app = flask.Flask("pay")
            app.add_url_rule("/pay", "pay", lambda: (flask.request.get_data(), "ok")[1], methods=["POST"])
            app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle)  # type: ignore[method-assign]
            serve = kit.serve_wsgi(app)
        with serve as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            assert 200 == client.post("/pay", json={"card": CARD, "n": 3}).status_code
        [event] = kit.wait_events(handle, directory, 1)
        assert 3 == event["args_shape"]["body"]["keys"]["n"]["v"]
        assert [] == FORMS.leaks_in(kit.journal_bytes(directory))

    def test_mcp_card_as_json_number(self, kit: SimpleNamespace, pipeline: Any) -> None:
        """The same in a tool's allowlisted argument."""
        handle, directory = pipeline
        server = MCPServer("pay", middleware=[MCPAuditMiddleware(handle=handle)])

        @server.tool()
        def pay(card: int, n: int) -> str:
            return "ok"

        async def go() -> None:
            async with Client(server) as client:
                await client.call_tool("pay", {"card": CARD, "n": 3})

        kit.run(go)
        handle.flush()
        [event] = kit.events(directory, "mcp.tool_call")
        assert 3 == event["args_shape"]["keys"]["n"]["v"]
        assert [] == FORMS.leaks_in(kit.journal_bytes(directory))
