"""Audit middleware for the official MCP Python SDK (``mcp`` 2.x): one event per request.

::

    from mcp.server.mcpserver import MCPServer
    from auditlog.integrations.mcp import MCPAuditMiddleware

    server = MCPServer("tools", middleware=[MCPAuditMiddleware()])
    # low-level: server.middleware.append(MCPAuditMiddleware())

Events (see :mod:`auditlog.events`): ``mcp.tool_call`` (tool name, argument shape, result shape,
``isError``, duration, JSON-RPC id, session id, client info), ``mcp.resource_read`` (the URI's scheme and
template with id-like segments collapsed, never the full URI), ``mcp.prompt_get``, ``mcp.list_*`` and
``mcp.initialize`` at metadata level, ``mcp.request`` for anything else. Notifications are not recorded.

Per tool (``match = { tool = "..." }``), resource (``route`` = the URI template) or prompt (``tool`` = the
prompt name): ``required_scopes`` checked against the verified access token (the SDK's bearer auth; a
custom ``actor`` resolver gets the request context); with ``enforce=True`` (the default here) a call
without them is refused with a JSON-RPC error and an ``authz.denied`` event; a ``disabled`` rule refuses
likewise. ``fail_mode = "closed"``: a call whose event the journal refuses is answered with a JSON-RPC
error instead of its result. Exception messages (validation errors echo argument values) never reach
the journal: only type names and JSON-RPC codes. Trace context comes from ``_meta.traceparent``, else
the HTTP ``traceparent`` / ``x-request-id`` headers, else a new id.

The SDK is imported when the middleware is built; without it: ``ImportError`` naming the extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from auditlog.actor import ANONYMOUS, Actor, ActorResolver, actor_from_token, default_actor
from auditlog.events import MiddlewareStats
from auditlog.handle import AuditHandle
from auditlog.integrations._mcp_auditor import (
    CLIENT_INFO_META_KEY,
    CLOSED_MESSAGE,
    DENIED_MESSAGE,
    DISABLED_MESSAGE,
    FAILED_MESSAGE,
    MCPAuditor,
)
from auditlog.integrations._mcp_request import MCPCall, resource_template
from auditlog.policy import Policy
from processors import ShapeLimits

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

__all__ = [
    "CLOSED_MESSAGE",
    "DENIED_MESSAGE",
    "DISABLED_MESSAGE",
    "FAILED_MESSAGE",
    "MCPAuditMiddleware",
    "MCPAuditor",
    "resource_template",
]


def _missing_sdk(module: str) -> ImportError:
    return ImportError(f"install auditlog-pipeline[mcp] to use {module}")


def tool_result(result: object) -> tuple[object, bool | None]:
    """What to shape of a tool/resource/prompt result, and its ``isError`` flag (wire dict or model)."""
    if result is None:
        return None, None
    if not isinstance(result, Mapping):
        dump = getattr(result, "model_dump", None)
        if dump is None:
            return result, None
        try:
            result = dump(by_alias=True, mode="json", exclude_none=True)
        except Exception:
            return None, None
        if not isinstance(result, Mapping):
            return None, None
    is_error = result.get("isError")
    body = {k: v for k, v in result.items() if k not in ("_meta", "isError", "resultType")}
    return body, is_error if isinstance(is_error, bool) else None


def _shaped(call: MCPCall, result: object) -> tuple[object, bool | None]:
    """What to record of an SDK handler's result: its body at ``shape``/``values`` level, and ``isError``."""
    body, is_error = tool_result(result) if call.rule.level in ("shape", "values") else (None, None)
    if is_error is None and isinstance(result, Mapping):
        flag = result.get("isError")
        is_error = flag if isinstance(flag, bool) else None
    return body, is_error


_get_access_token: Callable[[], Any] | None = None


def _access_token_getter() -> Callable[[], Any]:
    global _get_access_token
    if _get_access_token is None:
        try:
            from mcp.server.auth.middleware.auth_context import get_access_token
        except ImportError:  # pragma: no cover - the SDK is there when this runs
            _get_access_token = lambda: None  # noqa: E731
        else:
            _get_access_token = get_access_token
    return _get_access_token


def mcp_actor(ctx: Any) -> Actor | None:
    """The default MCP resolver: the SDK's verified access token, else the HTTP request's auth scope."""
    token = (_get_access_token or _access_token_getter())()
    if token is not None:
        return actor_from_token(token)
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping):
        return default_actor(scope)
    return None


class MCPAuditMiddleware:
    """``ServerMiddleware`` for the official SDK's ``MCPServer(middleware=[...])`` / low-level ``Server``.

    Args:
        policy: the policy; default: the handle's.
        actor: a resolver ``(ctx) -> Actor | None`` over the request context; default: the SDK's verified
            access token (bearer auth), else ``ctx.request.scope["user"|"auth"]``.
        enforce: refuse calls lacking a rule's ``required_scopes`` (default True).
        handle: the pipeline; default :func:`auditlog.current_handle` at each request.
        limits: bounds on shaping work.

    Raises:
        ImportError: the ``mcp`` SDK is not installed (``auditlog-pipeline[mcp]``).
    """

    __slots__ = ("_actor", "_error", "auditor")

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        actor: ActorResolver | None = None,
        enforce: bool = True,
        handle: AuditHandle | None = None,
        limits: ShapeLimits | None = None,
    ) -> None:
        try:
            from mcp.shared.exceptions import MCPError
        except ImportError as exc:
            raise _missing_sdk("auditlog.integrations.mcp.MCPAuditMiddleware") from exc
        self._error: Callable[..., Exception] = MCPError
        self._actor: ActorResolver = actor or mcp_actor
        self.auditor = MCPAuditor(policy=policy, enforce=enforce, handle=handle, limits=limits)

    @property
    def stats(self) -> MiddlewareStats:
        return self.auditor.stats

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification
            return await call_next(ctx)
        return await self.auditor.serve(
            lambda: self._begin(ctx),
            lambda: call_next(ctx),
            method=ctx.method,
            params=ctx.params,
            shape=_shaped,
            error=self._error,
        )

    def _begin(self, ctx: ServerRequestContext[Any, Any]) -> MCPCall:
        meta = ctx.meta if isinstance(ctx.meta, Mapping) else None
        request = ctx.request
        headers = getattr(request, "headers", None)
        client_info: object = meta.get(CLIENT_INFO_META_KEY) if meta else None
        if client_info is None:
            client_params = getattr(ctx.session, "client_params", None)
            info = getattr(client_params, "client_info", None)
            if info is not None:
                client_info = {"name": getattr(info, "name", None), "version": getattr(info, "version", None)}
        try:
            actor = self._actor(ctx) or ANONYMOUS
        except Exception as exc:
            self.auditor.stats.error("actor", exc)
            actor = ANONYMOUS
        return self.auditor.begin(
            method=ctx.method,
            params=ctx.params,
            meta=meta,
            request_id=ctx.request_id,
            session_id=headers.get("mcp-session-id") if headers is not None else None,
            client_info=client_info,
            headers=headers if isinstance(headers, Mapping) else None,
            actor=actor,
        )
