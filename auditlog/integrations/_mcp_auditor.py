"""The framework-neutral part of the MCP adapters (private): :class:`MCPAuditor` describes and decides a
request, refuses it or runs it, and records it; the adapters (:mod:`~auditlog.integrations.mcp` for the
official SDK, :mod:`~auditlog.integrations.fastmcp`) translate their framework's request to it and shape
their framework's results. The JSON-RPC codes and the messages of refused calls are defined here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog

from auditlog.actor import Actor
from auditlog.correlation import resolve
from auditlog.events import (
    EventKind,
    MiddlewareStats,
    Status,
    decide,
    emit_event,
    event_dict,
    journal_failure,
    outcome_dict,
    shape_value,
)
from auditlog.handle import AuditHandle, current_handle
from auditlog.integrations._mcp_request import (
    _KINDS,
    _METADATA_ONLY,
    _METHOD,
    DECLARED,
    UNLISTED,
    MCPCall,
    _label,
    _learn_templates,
    _metadata,
    _resource_path,
    resource_template,
    tool_label,
)
from auditlog.integrations.urls import ROUTE_WORDS
from auditlog.policy import DEFAULT_POLICY, Policy
from processors import Scanner, SecretScanner, ShapeLimits
from processors.correlation import current_span_ids
from processors.shapes import emittable_key

INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
_FALLBACK_SCANNER = SecretScanner()

DENIED_MESSAGE = "forbidden: the caller lacks a scope this call requires"
DISABLED_MESSAGE = "unavailable: this tool is disabled by the audit policy"
CLOSED_MESSAGE = "refused: the audit log could not record this call (fail_mode closed)"
FAILED_MESSAGE = "refused: the audit middleware failed before this call ran, and the policy requires an audit"


_T = TypeVar("_T")


class MCPAuditor:
    """The framework-neutral part of the MCP adapters: decide, refuse, record. Used by
    :class:`auditlog.integrations.mcp.MCPAuditMiddleware` and
    :class:`auditlog.integrations.fastmcp.FastMCPAuditMiddleware`."""

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
        real: str | None = None
        if method in ("tools/call", "prompts/get"):
            raw = params.get("name")
            real = raw if isinstance(raw, str) else None
            arguments = params.get("arguments")
            identifier = real is not None and emittable_key(real, 128)
            # a token-like name is not kept in the policy's memo
            rule = policy.match(tool=real, method=method, remember=real is None or identifier)
            name = tool_label(real, rule, identifier)
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
            real=real,
        )

    def failed(
        self, exc: Exception, *, method: object, params: object
    ) -> tuple[int, str, dict[str, Any]] | None:
        """:meth:`begin` raised: never skip an access check. Under ``enforce``, or when the request's rule
        fails closed (or is disabled), return the JSON-RPC error to raise; else None (serve). Either way
        an ``audit.failed`` event with the error's type only is journaled."""
        handle = self._handle if self._handle is not None else current_handle()
        refuse = self.enforce or self._closed_for(handle, method, params)
        cid = journal_failure(exc, handle=handle, stats=self.stats, refused=refuse, where="mcp.begin")
        return (INTERNAL_ERROR, FAILED_MESSAGE, {"correlation_id": cid}) if refuse else None

    def _closed_for(self, handle: AuditHandle | None, method: object, params: object) -> bool:
        policy = self._policy or (handle.policy if handle is not None else DEFAULT_POLICY)
        try:
            name = params.get("name") if isinstance(params, Mapping) else None
            rule = policy.match(
                tool=name if isinstance(name, str) else None, method=str(method), remember=False
            )
        except Exception:
            return policy.may_refuse()
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
        if status == "ok" and call.name == UNLISTED and call.real is not None:
            DECLARED.learn(call.real)  # the server ran it: a tool of its own, not a name a client made up
            call.name = call.real
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

    async def serve(
        self,
        begin: Callable[[], MCPCall],
        call_next: Callable[[], Awaitable[_T]],
        *,
        method: object,
        params: object,
        shape: Callable[[MCPCall, Any], tuple[object, bool | None]],
        error: Callable[..., Exception],
    ) -> _T:
        """One request, as both adapters serve it: describe and decide it, refuse it (raising ``error(code,
        message, data)``) or run it, and record it. Returns the handler's result, a ``tools/list`` one
        without the tools the policy disables.

        Args:
            begin: describes the request (the adapter's call of :meth:`begin`); if it raises,
                :meth:`failed` decides over ``method`` and ``params`` whether the request is refused.
            call_next: runs the handler.
            shape: ``(call, result) -> (body, is_error)``: what to record of the handler's result.
            error: builds the exception that answers a refused request.
        """
        try:
            call = begin()
        except Exception as exc:
            refusal = self.failed(exc, method=method, params=params)
            if refusal is not None:
                raise error(*refusal) from None
            return await call_next()
        if not call.decision.allowed:
            raise error(*self.refuse(call))
        result = await self.run(call, call_next)
        if call.method in ("tools/list", "prompts/list"):
            try:
                DECLARED.learn_listed(result)
            except Exception as exc:
                self.stats.error("list", exc)
        if call.method == "tools/list":
            try:
                result = self.visible_tools(result)
            except Exception as exc:
                self.stats.error("tools_list", exc)
        elif call.method == "resources/templates/list":
            self.learn_templates(result)
        try:
            body, is_error = shape(call, result)
        except Exception as exc:
            self.stats.error("result", exc)
            body, is_error = None, None
        if not self.finish(call, result=body, is_error=is_error):
            raise error(INTERNAL_ERROR, CLOSED_MESSAGE, {"correlation_id": call.corr.correlation_id})
        return result
