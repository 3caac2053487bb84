"""One MCP request under audit (private): the :class:`MCPCall` the auditor
(:mod:`~auditlog.integrations._mcp_auditor`) decides and records, and how the journal names it: its event
kind (list and initialize requests at metadata level), the template of a resource URI, the client and
session labels that pass the scanner, the route literals learned from the URI templates a server lists,
and the tool and prompt names servers declared (:data:`DECLARED`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from auditlog.actor import Actor
from auditlog.correlation import Correlation
from auditlog.events import Decision, EventKind
from auditlog.handle import AuditHandle
from auditlog.integrations.urls import ROUTE_WORDS, accepted_by, collapse_path
from auditlog.policy import Rule
from processors import Scanner
from processors.shapes import emittable_key

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
_METADATA_RULES: dict[int, tuple[Rule, Rule]] = {}


def resource_template(
    uri: object, scanner: Scanner | None = None, literals: frozenset[str] | None = None
) -> tuple[str | None, str]:
    """``(scheme, template)`` of a resource URI: segments that are values collapsed (see
    :func:`~.urls.collapse_path`; ``literals``: only these words stay), query and fragment dropped.

    ``"users://42/profile?token=x"`` gives ``("users", "users://{n}/profile")``; under ``literals`` the
    scheme too stays only when it is one (``{scheme}`` otherwise).
    """
    if not isinstance(uri, str):
        return None, "<invalid>"
    text = uri[:2048].split("#", 1)[0].split("?", 1)[0]
    m = _SCHEME.match(text)
    if m is None:
        return None, collapse_path(text, scanner=scanner, literals=literals)
    scheme = m.group(1).lower()
    if literals is not None and scheme not in literals:
        scheme = "{scheme}"  # a client names any scheme it likes: a word no server declared is a value
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
    real: str | None = None  # the tool or prompt name as sent, while the label may still become it


UNLISTED = "<unlisted>"
_MAX_DECLARED = 4096


class DeclaredNames:
    """Tool and prompt names this process's servers declared: listed (``tools/list``, ``prompts/list``) or
    called successfully. A name a client sends is journaled only when it is one of them, or when the
    policy's rule names it; any other name is a value (``<unlisted>``): a client may call a tool named
    after a password. At most 4096 names."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: set[str] = set()

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def learn(self, name: str) -> None:
        if len(self._names) < _MAX_DECLARED:
            self._names.add(name)

    def learn_listed(self, result: object) -> None:
        """The names of a ``tools/list`` or ``prompts/list`` result: the protocol's model or dict, or the
        list of objects fastmcp hands its middleware."""
        listed = result
        if not isinstance(result, list | tuple):
            listed = _field(result, "tools")
            if listed is None:
                listed = _field(result, "prompts")
        if isinstance(listed, list | tuple):
            for item in listed[:_MAX_DECLARED]:
                name = _field(item, "name")
                if isinstance(name, str) and emittable_key(name, 128):
                    self.learn(name)


DECLARED = DeclaredNames()


def tool_label(real: str | None, rule: Rule, identifier: bool | None = None) -> str:
    """How the journal names a called tool or prompt: ``<hidden>`` when the name is no identifier (a
    token, a value), ``<unlisted>`` when no server declared it and ``rule`` does not name it.
    ``identifier``: whether ``real`` is one (:func:`~processors.shapes.emittable_key`), when known."""
    if identifier is None:
        identifier = real is not None and emittable_key(real, 128)
    if real is None or not identifier:
        return "<hidden>"
    if real in DECLARED or rule.match.get("tool") == real:
        return real
    return UNLISTED


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
