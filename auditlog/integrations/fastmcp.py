"""Audit middleware for ``fastmcp`` servers (its ``Middleware`` class): one event per request.

::

    from fastmcp import FastMCP
    from auditlog.integrations.fastmcp import FastMCPAuditMiddleware

    server = FastMCP("tools", middleware=[FastMCPAuditMiddleware()])

The same events, decisions and guarantees as :mod:`auditlog.integrations.mcp` (it shares
:class:`~auditlog.integrations.mcp.MCPAuditor`): ``mcp.tool_call``, ``mcp.resource_read``, ``mcp.prompt_get``,
``mcp.list_*`` and ``mcp.initialize`` at metadata level; per-tool ``required_scopes`` from the verified
access token (fastmcp's ``get_access_token()``), refusals as JSON-RPC errors with an ``authz.denied``
event, ``disabled`` tools refused, ``fail_mode = "closed"`` answered with an error when the journal refuses
the event. Tool errors raised as ``ToolError`` are recorded by type name (``outcome.error_type``), never
by message. The class is built on first use of this module's attribute, so importing
:mod:`auditlog.integrations.fastmcp` without fastmcp installed fails with an ``ImportError`` naming the extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from auditlog.actor import ANONYMOUS, Actor, ActorResolver, actor_from_token
from auditlog.events import MiddlewareStats
from auditlog.handle import AuditHandle
from auditlog.integrations._mcp_auditor import CLIENT_INFO_META_KEY, MCPAuditor
from auditlog.integrations._mcp_request import MCPCall
from auditlog.integrations.mcp import mcp_actor
from auditlog.policy import Policy
from processors import ShapeLimits

try:
    from fastmcp.server.middleware import Middleware as _Middleware
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("install auditlog-pipeline[mcp] to use auditlog.integrations.fastmcp") from exc

if TYPE_CHECKING:
    from fastmcp.server.middleware import CallNext, MiddlewareContext

__all__ = ["FastMCPAuditMiddleware", "fastmcp_actor"]

_SHAPED = frozenset({"tools/call", "resources/read", "prompts/get"})


def fastmcp_actor(context: Any) -> Actor | None:
    """The default fastmcp resolver: fastmcp's verified access token, else the SDK's (see
    :func:`auditlog.integrations.mcp.mcp_actor`)."""
    try:
        from fastmcp.server.dependencies import get_access_token
    except ImportError:  # pragma: no cover
        token = None
    else:
        token = get_access_token()
    if token is not None:
        return actor_from_token(token)
    fc = getattr(context, "fastmcp_context", None)
    rc = fc.request_context if fc is not None else None
    return mcp_actor(rc)


def _shaped(call: MCPCall, result: object) -> tuple[object, bool | None]:
    """What to record of a fastmcp hook result (``ToolResult``, ``ResourceResult``, ``PromptResult``): its
    body at ``shape``/``values`` level, and its ``is_error``; nothing of any other request's result."""
    if call.method not in _SHAPED or call.rule.level not in ("shape", "values"):
        return None, None
    flag = getattr(result, "is_error", None)
    is_error = flag if isinstance(flag, bool) else None
    if hasattr(result, "content"):
        return {
            "content": result.content,
            "structuredContent": getattr(result, "structured_content", None),
        }, is_error
    if hasattr(result, "contents"):
        return {"contents": result.contents}, is_error
    if hasattr(result, "messages"):
        return {"messages": result.messages}, is_error
    return None, is_error


class FastMCPAuditMiddleware(_Middleware):
    """fastmcp ``Middleware`` that audits every request (see the module docstring).

    Args:
        policy: the policy; default: the handle's.
        actor: a resolver ``(middleware_context) -> Actor | None``; default :func:`fastmcp_actor`.
        enforce: refuse calls lacking a rule's ``required_scopes`` (default True).
        handle: the pipeline; default :func:`auditlog.current_handle` at each request.
        limits: bounds on shaping work.
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        actor: ActorResolver | None = None,
        enforce: bool = True,
        handle: AuditHandle | None = None,
        limits: ShapeLimits | None = None,
    ) -> None:
        self._actor: ActorResolver = actor or fastmcp_actor
        self.auditor = MCPAuditor(policy=policy, enforce=enforce, handle=handle, limits=limits)

    @property
    def stats(self) -> MiddlewareStats:
        return self.auditor.stats

    async def on_request(self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]) -> Any:
        return await self.auditor.serve(
            lambda: self._begin(context),
            lambda: call_next(context),
            method=context.method,
            params={"name": getattr(context.message, "name", None)},
            shape=_shaped,
            error=MCPError,
        )

    def _begin(self, context: MiddlewareContext[Any]) -> MCPCall:
        message = context.message
        params: dict[str, Any] = {}
        for name in ("name", "arguments", "uri"):
            value = getattr(message, name, None)
            if value is not None:
                params[name] = str(value) if name == "uri" else value
        fc = context.fastmcp_context
        rc = fc.request_context if fc is not None else None
        meta: Mapping[str, Any] | None = rc.meta if rc is not None and isinstance(rc.meta, Mapping) else None
        if meta is None:
            raw_meta = getattr(message, "meta", None)
            meta = raw_meta if isinstance(raw_meta, Mapping) else None
        request = rc.request if rc is not None else None
        headers = getattr(request, "headers", None)
        client_info: object = meta.get(CLIENT_INFO_META_KEY) if meta else None
        if client_info is None and rc is not None:
            info = getattr(getattr(rc.session, "client_params", None), "client_info", None)
            if info is not None:
                client_info = {"name": getattr(info, "name", None), "version": getattr(info, "version", None)}
        try:
            actor = self._actor(context) or ANONYMOUS
        except Exception as exc:
            self.auditor.stats.error("actor", exc)
            actor = ANONYMOUS
        return self.auditor.begin(
            method=str(context.method or ""),
            params=params,
            meta=meta,
            request_id=rc.request_id if rc is not None else None,
            session_id=headers.get("mcp-session-id") if isinstance(headers, Mapping) else None,
            client_info=client_info,
            headers=headers if isinstance(headers, Mapping) else None,
            actor=actor,
        )
