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

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from auditlog.actor import ANONYMOUS, Actor, ActorResolver, actor_from_token, default_actor
from auditlog.correlation import Correlation, resolve
from auditlog.events import (
    Decision,
    EventKind,
    MiddlewareStats,
    Status,
    decide,
    emit_event,
    event_dict,
    failure_event,
    outcome_dict,
    shape_value,
)
from auditlog.handle import AuditHandle, current_handle
from auditlog.integrations.urls import ROUTE_WORDS, accepted_by, collapse_path
from auditlog.policy import DEFAULT_POLICY, Policy, Rule
from processors import Scanner, SecretScanner, ShapeLimits
from processors.correlation import current_span_ids
from processors.shapes import emittable_key

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

__all__ = ["MCPAuditMiddleware", "MCPAuditor", "resource_template"]

INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
_KINDS: dict[str, EventKind] = {
    "tools/call": "mcp.tool_call",
    "resources/read": "mcp.resource_read",
    "prompts/get": "mcp.prompt_get",
    "tools/list": "mcp.list_tools",
    "resources/list": "mcp.list_resources",
    "resources/templates/list": "mcp.list_resource_templates",
    "prompts/list": "mcp.list_prompts",
    "initialize": "mcp.initialize",
}
_METADATA_ONLY = frozenset(
    [k for k, v in _KINDS.items() if v.startswith("mcp.list") or v == "mcp.initialize"]
    + ["server/discover", "ping"]
)
_METHOD = re.compile(r"[a-z][a-zA-Z0-9_/.-]{0,63}", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+/-]{0,95}", re.ASCII)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):", re.ASCII)
_FALLBACK_SCANNER = SecretScanner()
_METADATA_RULES: dict[int, tuple[Rule, Rule]] = {}

DENIED_MESSAGE = "forbidden: the caller lacks a scope this call requires"
DISABLED_MESSAGE = "unavailable: this tool is disabled by the audit policy"
CLOSED_MESSAGE = "refused: the audit log could not record this call (fail_mode closed)"
FAILED_MESSAGE = "refused: the audit middleware failed before this call ran, and the policy requires an audit"


def _missing_sdk(module: str) -> ImportError:
    return ImportError(f"install auditlog-pipeline[mcp] to use {module}")


def resource_template(
    uri: object, scanner: Scanner | None = None, literals: frozenset[str] | None = None
) -> tuple[str | None, str]:
    """``(scheme, template)`` of a resource URI: segments that are values collapsed (see
    :func:`~.urls.collapse_path`; ``literals``: only these words stay), query and fragment dropped.

    ``"users://42/profile?token=x"`` gives ``("users", "users://{n}/profile")``.
    """
    if not isinstance(uri, str):
        return None, "<invalid>"
    text = uri[:2048].split("#", 1)[0].split("?", 1)[0]
    m = _SCHEME.match(text)
    if m is None:
        return None, collapse_path(text, scanner=scanner, literals=literals)
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    if rest.startswith("//"):
        return scheme, f"{scheme}:/" + collapse_path(rest[1:], scanner=scanner, literals=literals)
    return scheme, f"{scheme}:" + collapse_path(rest, scanner=scanner, literals=literals)


def _learn_templates(result: object) -> None:
    """Add the literals of the URI templates a server lists (``resources/templates/list``): its code
    declares them, so reads of ``notes://daily/{date}`` keep ``daily``. ``result``: the protocol's result,
    or the list of templates fastmcp hands its middleware."""
    listed = result if isinstance(result, list | tuple) else _field(result, "resourceTemplates")
    if isinstance(listed, list | tuple):
        for item in listed[:_MAX_TEMPLATES]:
            template = _field(item, "uriTemplate")
            if template is None:
                template = _field(item, "uri_template")  # fastmcp's own ResourceTemplate
            if isinstance(template, str):
                ROUTE_WORDS.learn(template)


def _field(value: object, name: str) -> object:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def _resource_path(uri: str) -> str:
    """The URI a resource read names, without query and fragment (what a rule may name literally)."""
    return uri.split("#", 1)[0].split("?", 1)[0]


# Labels (client names and versions, session ids) that passed, per scanner: a client sends the same ones
# on every call. Only labels the scanner found nothing in are kept, and they are written out verbatim.
_MAX_TEMPLATES = 1024
_ACCEPTED_LABELS: dict[int, tuple[Scanner | None, set[str]]] = {}
_MAX_LABELS = 1024


def _label(value: object, scanner: Scanner) -> str | None:
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        accepted = accepted_by(scanner, _ACCEPTED_LABELS)
        if value in accepted:
            return value
        if _LABEL.fullmatch(value) and not scanner.findings(value):
            if len(accepted) < _MAX_LABELS:
                accepted.add(value)
            return value
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    return None


@dataclass(slots=True, kw_only=True)
class MCPCall:
    """One MCP request under audit: what it is, who sent it, what was decided."""

    start: float
    handle: AuditHandle | None
    kind: EventKind
    method: str
    name: str
    rule: Rule
    corr: Correlation
    actor: Actor
    decision: Decision
    arguments: object = None
    mcp: dict[str, Any] | None = None


_T = TypeVar("_T")


class MCPAuditor:
    """The framework-neutral part of the MCP adapters: decide, refuse, record. Used by
    :class:`MCPAuditMiddleware` and :class:`auditlog.integrations.fastmcp.FastMCPAuditMiddleware`."""

    __slots__ = ("_handle", "_limits", "_policy", "enforce", "stats")

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        enforce: bool = True,
        handle: AuditHandle | None = None,
        limits: ShapeLimits | None = None,
    ) -> None:
        self._policy = policy
        self.enforce = enforce
        self._handle = handle
        self._limits = limits or ShapeLimits()
        self.stats = MiddlewareStats()
        current_span_ids()  # imports OpenTelemetry (when installed) now, not on a request in the event loop

    def set_policy(self, policy: Policy | None) -> None:
        """Swap the policy for the next requests (a kill switch at run time); None: the handle's."""
        self._policy = policy

    def begin(
        self,
        *,
        method: str,
        params: Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None,
        request_id: object,
        session_id: object,
        client_info: object,
        headers: Mapping[str, str] | None,
        actor: Actor,
    ) -> MCPCall:
        """Describe and decide one request before it runs."""
        self.stats.requests += 1
        handle = self._handle if self._handle is not None else current_handle()
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
        method = method if method in _KINDS or _METHOD.fullmatch(method) else "<invalid>"
        kind = _KINDS.get(method, "mcp.request")
        params = params or {}
        name = method
        arguments: object = None
        info: dict[str, Any] = {}
        # Rules match what the server dispatches on (the real tool name, the real URI); only the
        # journaled label is sanitized. Matching the label let a rule miss a tool whose name looks like
        # a token ("oauth2token" -> "<hidden>"), so its scopes and kill switch never applied.
        if method in ("tools/call", "prompts/get"):
            raw = params.get("name")
            real = raw if isinstance(raw, str) else None
            name = real if real is not None and emittable_key(real, 128) else "<hidden>"
            arguments = params.get("arguments")
            rule = policy.match(tool=real, method=method, remember=real is None or name == real)
        elif method == "resources/read":
            uri = params.get("uri")
            scheme, name = resource_template(uri, scanner, ROUTE_WORDS.literals(policy))
            info["scheme"] = scheme
            rule = policy.match(route=name, method=method)
            if rule is policy.defaults and isinstance(uri, str):  # a rule naming the URI itself
                rule = policy.match(route=_resource_path(uri), method=method, remember=False)
        else:
            rule = policy.match(method=method)
        if method in _METADATA_ONLY and rule.level in ("shape", "values"):
            rule = _metadata(rule)
        traceparent = meta.get("traceparent") if meta else None
        if traceparent is None and headers is not None:
            traceparent = headers.get("traceparent")
        corr = resolve(
            traceparent=traceparent,
            request_id=headers.get("x-request-id") if headers is not None else None,
            scanner=scanner,
        )
        info["jsonrpc_id"] = _label(request_id, scanner)
        sid = _label(session_id, scanner)
        if sid is not None:
            info["session_id"] = sid
        if isinstance(client_info, Mapping):
            info["client"] = {
                "name": _label(client_info.get("name"), scanner),
                "version": _label(client_info.get("version"), scanner),
            }
        return MCPCall(
            start=time.perf_counter(),
            handle=handle,
            kind=kind,
            method=method,
            name=name,
            rule=rule,
            corr=corr,
            actor=actor,
            decision=decide(rule, actor, enforce=self.enforce),
            arguments=arguments,
            mcp=info,
        )

    def failed(
        self, exc: Exception, *, method: object, params: object
    ) -> tuple[int, str, dict[str, Any]] | None:
        """:meth:`begin` raised: never skip an access check. Under ``enforce``, or when the request's rule
        fails closed (or is disabled), return the JSON-RPC error to raise; else None (serve). Either way
        an ``audit.failed`` event with the error's type only is journaled."""
        self.stats.error("begin", exc)
        handle = self._handle if self._handle is not None else current_handle()
        refuse = self.enforce or self._closed_for(handle, method, params)
        event = failure_event(exc, refused=refuse, where="mcp.begin")
        if handle is not None:
            emit_event(handle, event, self.stats)
        else:
            self.stats.dropped += 1
        if not refuse:
            return None
        self.stats.refused += 1
        return INTERNAL_ERROR, FAILED_MESSAGE, {"correlation_id": event["correlation_id"]}

    def _closed_for(self, handle: AuditHandle | None, method: object, params: object) -> bool:
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        try:
            name = params.get("name") if isinstance(params, Mapping) else None
            rule = policy.match(
                tool=name if isinstance(name, str) else None, method=str(method), remember=False
            )
        except Exception:
            return any(r.fail_mode == "closed" or r.disabled for r in (policy.defaults, *policy.rules))
        return rule.fail_mode == "closed" or rule.disabled

    def visible_tools(self, result: Any) -> Any:
        """A ``tools/list`` result without the tools the policy disables: a kill switch hides the tool as
        well as refusing it, so clients do not offer what they cannot call. Anything else is returned as is.

        Handles the SDK's ``ListToolsResult`` (a model with ``tools``), a plain ``{"tools": [...]}`` and a
        sequence of tool objects (fastmcp); a tool is matched by its real name, as a call would be.
        """
        handle = self._handle if self._handle is not None else current_handle()
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        if not any(r.disabled for r in policy.rules):
            return result

        def shown(tool: Any) -> bool:
            name = tool.get("name") if isinstance(tool, Mapping) else getattr(tool, "name", None)
            if not isinstance(name, str):
                return True
            return not policy.match(tool=name, method="tools/call", remember=False).disabled

        if isinstance(result, list | tuple):
            return type(result)(t for t in result if shown(t))
        if isinstance(result, Mapping) and isinstance(result.get("tools"), list):
            return {**result, "tools": [t for t in result["tools"] if shown(t)]}
        tools = getattr(result, "tools", None)
        copy = getattr(result, "model_copy", None)
        if isinstance(tools, list) and callable(copy):
            return copy(update={"tools": [t for t in tools if shown(t)]})
        return result

    def refuse(self, call: MCPCall) -> tuple[int, str, dict[str, Any]]:
        """Record a refused call; return the JSON-RPC error ``(code, message, data)`` to raise."""
        decision = call.decision
        if decision.reason == "disabled":
            self.stats.disabled += 1
            status: Status = "disabled"
            kind: EventKind = "authz.denied"
            message = DISABLED_MESSAGE
        else:
            self.stats.denied += 1
            status, kind, message = "denied", "authz.denied", DENIED_MESSAGE
        self._record(call, kind=kind, status=status, result=None, is_error=None, error_type=None, code=None)
        data: dict[str, Any] = {"correlation_id": call.corr.correlation_id}
        if decision.required:
            data["required"] = list(decision.required)
        return INVALID_REQUEST, message, data

    def learn_templates(self, result: object) -> None:
        """Learn the route literals of the URI templates a ``resources/templates/list`` result lists."""
        try:
            _learn_templates(result)
        except Exception as exc:
            self.stats.error("templates", exc)

    def finish(
        self,
        call: MCPCall,
        *,
        result: object = None,
        is_error: bool | None = None,
        error: BaseException | None = None,
        code: int | None = None,
    ) -> bool:
        """Record a finished call. Returns False if its rule is ``fail_mode = "closed"`` and the journal
        refused the event (the caller then answers with :data:`CLOSED_MESSAGE`)."""
        status: Status
        if error is not None:
            status = "cancelled" if type(error).__name__ == "CancelledError" else "error"
        else:
            status = "error" if is_error else "ok"
        ok = self._record(
            call,
            kind=call.kind,
            status=status,
            result=result,
            is_error=is_error,
            error_type=type(error).__name__ if error is not None else None,
            code=code,
        )
        if not ok and call.rule.fail_mode == "closed":
            self.stats.refused += 1
            return False
        return True

    def _record(
        self,
        call: MCPCall,
        *,
        kind: EventKind,
        status: Status,
        result: object,
        is_error: bool | None,
        error_type: str | None,
        code: int | None,
    ) -> bool:
        if call.rule.level == "none" and call.decision.allowed:
            return True
        handle = call.handle
        try:
            scanner: Scanner = handle.scanner if handle is not None else _FALLBACK_SCANNER
            fingerprint = handle.fingerprinter.fingerprint if handle is not None else None
            args_shape: Any = None
            fps: dict[str, str] = {}
            if call.arguments is not None:
                args_shape, fps = shape_value(
                    call.arguments,
                    rule=call.rule,
                    scanner=scanner,
                    fingerprint=fingerprint,
                    limits=self._limits,
                    render=True,
                )
            result_shape = None
            if result is not None:
                result_shape, _ = shape_value(
                    result, rule=call.rule, scanner=scanner, limits=self._limits, render=True
                )
            info = dict(call.mcp) if call.mcp else {}
            if is_error is not None:
                info["is_error"] = is_error
            if code is not None:
                info["error_code"] = code
            event = event_dict(
                kind,
                correlation_id=call.corr.correlation_id,
                span_id=call.corr.span_id,
                actor=call.actor.redacted(scanner, fingerprint).as_json(),
                action={"name": call.name, "method": call.method, "target": None},
                decision=call.decision.as_json(),
                outcome=outcome_dict(
                    status, (time.perf_counter() - call.start) * 1000.0, error_type=error_type
                ),
                args_shape=args_shape,
                result_shape=result_shape,
                fp=fps,
            )
            event["mcp"] = info
        except Exception as exc:
            self.stats.error("event", exc)
            return False
        if handle is None:
            self.stats.dropped += 1
            return False
        return emit_event(handle, event, self.stats)

    async def run(self, call: MCPCall, call_next: Callable[[], Awaitable[_T]]) -> _T:
        """Run the handler with the call's correlation id bound in structlog's contextvars.

        A handler that raises finishes the call as failed (with its JSON-RPC code when it has one) and the
        exception propagates; on success the caller finishes the call with the result it shapes.
        """
        tokens = structlog.contextvars.bind_contextvars(
            correlation_id=call.corr.correlation_id, span_id=call.corr.span_id
        )
        try:
            return await call_next()
        except BaseException as exc:
            code = getattr(getattr(exc, "error", None), "code", None)
            self.finish(call, error=exc, code=code if isinstance(code, int) else None)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


def _metadata(rule: Rule) -> Rule:
    """The same rule at level ``metadata`` (list and initialize requests carry no argument data)."""
    entry = _METADATA_RULES.get(id(rule))
    if entry is not None and entry[0] is rule:
        return entry[1]
    downgraded = replace(rule, level="metadata")
    if len(_METADATA_RULES) > 1024:
        _METADATA_RULES.clear()
    _METADATA_RULES[id(rule)] = (rule, downgraded)
    return downgraded


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
        auditor = self.auditor
        try:
            call = self._begin(ctx)
        except Exception as exc:
            refusal = auditor.failed(exc, method=ctx.method, params=ctx.params)
            if refusal is not None:
                raise self._error(*refusal) from None
            return await call_next(ctx)
        if not call.decision.allowed:
            raise self._error(*auditor.refuse(call))
        result = await auditor.run(call, lambda: call_next(ctx))
        if call.method == "tools/list":
            try:
                result = auditor.visible_tools(result)
            except Exception as exc:
                auditor.stats.error("tools_list", exc)
        elif call.method == "resources/templates/list":
            auditor.learn_templates(result)
        try:
            body, is_error = tool_result(result) if call.rule.level in ("shape", "values") else (None, None)
            if is_error is None and isinstance(result, Mapping):
                flag = result.get("isError")
                is_error = flag if isinstance(flag, bool) else None
        except Exception as exc:
            auditor.stats.error("result", exc)
            body, is_error = None, None
        if not auditor.finish(call, result=body, is_error=is_error):
            raise self._error(INTERNAL_ERROR, CLOSED_MESSAGE, {"correlation_id": call.corr.correlation_id})
        return result

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
