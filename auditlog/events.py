"""The audit event schema (version 1) and its builders. No I/O: the middleware builds, the handle writes.

One event per request or tool call::

    {
      "v": 1, "kind": "http.request",                    # or authz.denied, mcp.tool_call, ...
      "ts": "...", "event_id": "...",                    # stamped by AuditHandle.emit
      "correlation_id": "4bf92f35...", "span_id": "00f067aa0ba902b7",
      "actor":    {"subject": "user-42", "tenant": "acme", "client_id": "cli", "scopes": ["read"]},
      "action":   {"name": "/users/{user_id}", "method": "GET", "target": "/users/{n}?page="},
      "decision": {"allowed": true, "reason": "scopes_ok", "rule": "users", "required": ["read"]},
      "outcome":  {"status": "ok", "http_status": 200, "error_type": null, "duration_ms": 1.9},
      "args_shape": {...}, "result_shape": {...},        # shapes (values only where a rule allows)
      "body_ref": {"key": "4bf9....00f0", "bytes": 1234, "truncated": false},
      "fp": {"email": "k1:9f2c..."},                     # keyed fingerprints the rule asks for
      "policy": {"id": "payments-api", "hash": "..."},   # stamped by AuditHandle.emit
      "http": {...} | "mcp": {...}                       # transport details (shapes and names only)
    }

Nothing here reads a value into an event except :func:`shape_value` at level ``values`` for allowlisted
fields, after the scanner. Error messages never enter an event: only exception type names and codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from auditlog.actor import Actor, _kept_json, _pickles_without_kept_json
from auditlog.correlation import new_correlation_id, new_span_id
from processors import Scanner, ShapeLimits, rendered_shape, shape_of

if TYPE_CHECKING:
    from auditlog.handle import AuditHandle
    from auditlog.policy import Rule

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "Decision",
    "EventKind",
    "MiddlewareStats",
    "Outcome",
    "Status",
    "build_event",
    "decide",
    "emit_event",
    "event_dict",
    "failure_event",
    "journal_failure",
    "outcome_dict",
    "shape_value",
]

SCHEMA_VERSION = 1

EventKind = Literal[
    "http.request",
    "authz.denied",
    "mcp.tool_call",
    "mcp.resource_read",
    "mcp.prompt_get",
    "mcp.list_tools",
    "mcp.list_resources",
    "mcp.list_resource_templates",
    "mcp.list_prompts",
    "mcp.initialize",
    "mcp.request",
    "audit.failed",
]
Status = Literal["ok", "error", "denied", "disabled", "refused", "cancelled", "unaudited"]
Reason = Literal["allowed", "scopes_ok", "missing_scopes", "not_enforced", "disabled"]

_SCALARS = (int, float, bool, type(None))
_MAX_VALUE_CHARS = 256
_DEFAULT_LIMITS = ShapeLimits()
_log = logging.getLogger("auditlog.middleware")
# The decision of each rule that requires nothing, by rule (held, so its id names it while cached).
_ALLOWED: dict[int, tuple[Rule, Decision]] = {}
_MAX_ALLOWED = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """What was attempted: a route template or tool name, the method, the redacted target."""

    name: str
    method: str
    target: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "target": self.target}


@_pickles_without_kept_json
@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The policy decision: allowed or not, why, under which rule, what it required."""

    allowed: bool
    reason: Reason
    rule: str
    required: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    _json: orjson.Fragment | None = field(default=None, init=False, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed, "reason": self.reason, "rule": self.rule}
        out["required"] = list(self.required)
        if self.missing:
            out["missing"] = list(self.missing)
        return out

    def as_json(self) -> orjson.Fragment:
        """:meth:`as_dict` as JSON, serialized on first use and kept (a decision never changes)."""
        return _kept_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How it ended: status, HTTP status (if any), exception type name (never its message), duration."""

    status: Status
    duration_ms: float
    http_status: int | None = None
    error_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return outcome_dict(
            self.status, self.duration_ms, http_status=self.http_status, error_type=self.error_type
        )


def outcome_dict(
    status: Status, duration_ms: float, *, http_status: int | None = None, error_type: str | None = None
) -> dict[str, Any]:
    """The ``outcome`` field of an event (:meth:`Outcome.as_dict` without building an ``Outcome``)."""
    return {
        "status": status,
        "http_status": http_status,
        "error_type": error_type,
        "duration_ms": round(duration_ms, 3),
    }


def decide(rule: Rule, actor: Actor, *, enforce: bool) -> Decision:
    """The decision for ``actor`` under ``rule``: disabled (kill switch), missing scopes, or allowed.

    With ``enforce=False`` missing scopes are recorded (``not_enforced``) and the call is allowed.
    """
    if not rule.required_scopes and not rule.disabled:  # most rules: one decision, made once per rule
        entry = _ALLOWED.get(id(rule))
        if entry is not None and entry[0] is rule:
            return entry[1]
        decision = Decision(allowed=True, reason="allowed", rule=rule.id)
        if len(_ALLOWED) >= _MAX_ALLOWED:
            _ALLOWED.clear()
        _ALLOWED[id(rule)] = (rule, decision)
        return decision
    required = tuple(sorted(rule.required_scopes))
    if rule.disabled:
        return Decision(allowed=False, reason="disabled", rule=rule.id, required=required)
    if not required:
        return Decision(allowed=True, reason="allowed", rule=rule.id)
    missing = tuple(s for s in required if s not in actor.scopes)
    if not missing:
        return Decision(allowed=True, reason="scopes_ok", rule=rule.id, required=required)
    if enforce:
        return Decision(
            allowed=False, reason="missing_scopes", rule=rule.id, required=required, missing=missing
        )
    return Decision(allowed=True, reason="not_enforced", rule=rule.id, required=required, missing=missing)


def build_event(
    kind: EventKind,
    *,
    correlation_id: str,
    span_id: str | None,
    actor: Actor,
    action: Action,
    decision: Decision,
    outcome: Outcome,
    args_shape: Any = None,
    result_shape: Any = None,
    body_ref: Mapping[str, Any] | None = None,
    fp: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """Assemble one audit event (``ts``, ``event_id`` and ``policy`` are stamped by ``emit``).

    ``extra`` adds transport sections (``http``, ``mcp``); it cannot replace a schema field. With
    ``render=True`` (the middleware, whose events go to the journal as they are) ``actor`` and
    ``decision`` are their kept JSON (``orjson.Fragment``), not dicts.
    """
    event = event_dict(
        kind,
        correlation_id=correlation_id,
        span_id=span_id,
        actor=actor.as_json() if render else actor.as_dict(),
        action=action.as_dict(),
        decision=decision.as_json() if render else decision.as_dict(),
        outcome=outcome.as_dict(),
        args_shape=args_shape,
        result_shape=result_shape,
        body_ref=dict(body_ref) if body_ref else None,
        fp=dict(fp) if fp else None,
    )
    if extra:
        for k, v in extra.items():
            event.setdefault(k, v)
    return event


def event_dict(
    kind: EventKind,
    *,
    correlation_id: str,
    span_id: str | None,
    actor: Any,
    action: Any,
    decision: Any,
    outcome: Any,
    args_shape: Any = None,
    result_shape: Any = None,
    body_ref: Any = None,
    fp: Any = None,
) -> dict[str, Any]:
    """The event's layout from parts already in their journaled form (dicts, or ``orjson.Fragment``s of
    their JSON): what :func:`build_event` and the middleware's own event builders share.

    ``args_shape`` and ``result_shape`` are left out when None, ``body_ref`` and ``fp`` when empty;
    transport sections (``http``, ``mcp``) are the caller's to add.
    """
    event: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": kind,
        "correlation_id": correlation_id,
        "span_id": span_id,
        "actor": actor,
        "action": action,
        "decision": decision,
        "outcome": outcome,
    }
    if args_shape is not None:
        event["args_shape"] = args_shape
    if result_shape is not None:
        event["result_shape"] = result_shape
    if body_ref:
        event["body_ref"] = body_ref
    if fp:
        event["fp"] = fp
    return event


def shape_value(
    value: object,
    *,
    rule: Rule,
    scanner: Scanner,
    fingerprint: Callable[[object], str] | None = None,
    limits: ShapeLimits = _DEFAULT_LIMITS,
    render: bool = False,
) -> tuple[Any, dict[str, str]]:
    """Apply ``rule``'s level to arguments or a result: ``(shape or None, fingerprints)``.

    - ``none`` / ``metadata``: no shape.
    - ``shape``: :func:`processors.shape_of`; with ``render=True`` (the middleware, whose events go to the
      journal as they are) :func:`processors.rendered_shape`, an ``orjson.Fragment`` of the same JSON.
    - ``values``: the shape, plus ``"v"`` on each top-level field the rule allowlists whose value is a
      scalar; strings pass ``scanner.redact`` first and are cut at 256 characters.

    Top-level fields named in ``rule.fingerprint`` get a keyed fingerprint in the returned mapping
    (levels other than ``none``). Never raises: a failure yields ``"<unshapeable:...>"``.
    """
    level = rule.level
    if level == "none":
        return None, {}
    fps: dict[str, str] = {}
    try:
        if fingerprint is not None and rule.fingerprint and isinstance(value, Mapping):
            for name in rule.fingerprint:
                v = value.get(name)
                if isinstance(v, str | int) and not isinstance(v, bool):
                    fps[name] = fingerprint(v)
        if level == "metadata":
            return None, fps
        if level == "shape" and render:  # nothing is added to it: rendered for the journal, no dicts built
            return rendered_shape(value, limits=limits), fps
        shape = shape_of(value, limits=limits)
        if level == "values" and rule.allow and isinstance(value, Mapping) and isinstance(shape, dict):
            keys = shape.get("keys")
            if isinstance(keys, dict):
                for name in rule.allow:
                    if name in keys and isinstance(keys[name], dict) and name in value:
                        v = value[name]
                        if isinstance(v, str):
                            keys[name]["v"] = scanner.redact(v)[:_MAX_VALUE_CHARS]
                        elif isinstance(v, _SCALARS):
                            keys[name]["v"] = _scanned_number(v, scanner)
        return shape, fps
    except Exception as exc:  # shaping must never raise into the host
        return f"<unshapeable:{type(exc).__name__}>", fps


def failure_event(error: BaseException, *, refused: bool, where: str) -> dict[str, Any]:
    """The ``audit.failed`` event: the middleware could not audit a request before it ran.

    It carries the exception's type name and the stage that failed, never its message, and whether the
    request was refused (``outcome.status = "refused"``, an access check or a closed rule may have been
    at stake) or served unaudited (``"unaudited"``). Its correlation and span ids are new.
    """
    return event_dict(
        "audit.failed",
        correlation_id=new_correlation_id(),
        span_id=new_span_id(),
        actor=None,
        action={"stage": where},
        decision={"allowed": not refused, "reason": "audit_failed"},
        outcome=outcome_dict(
            "refused" if refused else "unaudited", 0.0, error_type=type(error).__name__[:64]
        ),
    )


def _scanned_number(v: int | float | bool | None, scanner: Scanner) -> Any:
    """An allowlisted scalar as the structlog path keeps it (:class:`processors.ShapeRecorder`): a number
    goes through the scanner as text (a card number sent as a JSON number is a card number), and what
    it flags is redacted like a string; an int past 64 bits is not kept at all."""
    if v is None or type(v) is bool:
        return v
    if type(v) is int and v.bit_length() > 64:
        return None
    texts = [str(v)]
    if type(v) is float and v.is_integer() and abs(v) < 1e20:
        texts.append(str(int(v)))  # 4.111111111111111e+15 is 4111111111111111 too
    for text in texts:
        if scanner.findings(text):
            return scanner.redact(texts[-1])[:_MAX_VALUE_CHARS]
    return v


@dataclass(slots=True)
class MiddlewareStats:
    """Counters of one middleware instance: what it saw, wrote, refused, and what failed inside it."""

    requests: int = 0
    events: int = 0
    dropped: int = 0
    denied: int = 0
    disabled: int = 0
    refused: int = 0
    errors: int = 0
    error_reasons: dict[str, int] = field(default_factory=dict)

    def error(self, where: str, exc: BaseException) -> None:
        """Count a failure inside the middleware; log its kind once (never its message)."""
        reason = f"{where}:{type(exc).__name__}"
        self.errors += 1
        first = reason not in self.error_reasons
        self.error_reasons[reason] = self.error_reasons.get(reason, 0) + 1
        if first:
            _log.warning("audit middleware failure counted (%s); further ones counted in stats", reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "dropped": self.dropped,
            "denied": self.denied,
            "disabled": self.disabled,
            "refused": self.refused,
            "errors": self.errors,
            "error_reasons": dict(self.error_reasons),
        }


def journal_failure(
    error: Exception, *, handle: AuditHandle | None, stats: MiddlewareStats, refused: bool, where: str
) -> str:
    """The audit step before a request raised: count it (and the refusal), journal its ``audit.failed``
    event (:func:`failure_event`; counted dropped without a handle). Returns the event's correlation id,
    for the refusal's answer."""
    stats.error("begin", error)
    event = failure_event(error, refused=refused, where=where)
    if handle is not None:
        emit_event(handle, event, stats)
    else:
        stats.dropped += 1
    if refused:
        stats.refused += 1
    return str(event["correlation_id"])


def emit_event(handle: AuditHandle, event: MutableMapping[str, Any], stats: MiddlewareStats) -> bool:
    """Hand ``event`` (a new dict the caller gives up) to ``handle.emit``; count it written or dropped.
    Never raises."""
    try:
        ok = handle.emit(event, owned=True)  # emit itself takes only a plain dict without a copy
    except Exception as exc:
        stats.error("emit", exc)
        ok = False
    if ok:
        stats.events += 1
    else:
        stats.dropped += 1
    return ok
