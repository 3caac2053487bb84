"""The policy model: rules, readers, operators, path settings and the policy they make up.

What :mod:`auditlog.policy` loads. A :class:`Policy` answers which rule applies (:meth:`Policy.match`,
:meth:`Policy.match_request`) and gives its canonical form, whose SHA-256 every event records.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

from auditlog.routes import method_matches, route_regex, template_literals
from processors import FieldPolicy

__all__ = [
    "ADMIN_SCOPE",
    "DAY",
    "FAIL_MODES",
    "LEVELS",
    "MATCH_FIELDS",
    "PATH_SEGMENTS",
    "FailMode",
    "Level",
    "Operator",
    "PathSegments",
    "Paths",
    "Policy",
    "PolicyError",
    "Reader",
    "Rule",
    "canonical",
]

Level = Literal["none", "metadata", "shape", "values"]
FailMode = Literal["open", "closed"]
LEVELS: tuple[str, ...] = ("none", "metadata", "shape", "values")
FAIL_MODES: tuple[str, ...] = ("open", "closed")
PathSegments = Literal["literals", "words"]
PATH_SEGMENTS: tuple[str, ...] = ("literals", "words")
MATCH_FIELDS: tuple[str, ...] = ("route", "tool", "method", "logger")
DAY = 86_400.0
_MAX_MATCHED = 4096


class PolicyError(ValueError):
    """A policy file is malformed. The message names the file and the offending entry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """The resolved settings of one rule (``[defaults]`` merged in)."""

    id: str
    index: int | None = None
    match: Mapping[str, str] = field(default_factory=dict)
    level: Level = "shape"
    allow: frozenset[str] = frozenset()
    fingerprint: frozenset[str] = frozenset()
    pii: frozenset[str] = frozenset()
    capture_body: bool = False
    body_retention: float = 7 * DAY
    journal_retention: float = 400 * DAY
    fail_mode: FailMode = "open"
    required_scopes: frozenset[str] = frozenset()
    disabled: bool = False
    field_policy: FieldPolicy = field(init=False, repr=False, compare=False)
    route_regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fp = FieldPolicy(
            level=self.level, allow=self.allow, fingerprint=self.fingerprint, rule_id=self.id, pii=self.pii
        )
        object.__setattr__(self, "field_policy", fp)
        route = self.match.get("route")
        object.__setattr__(self, "route_regex", route_regex(route) if route is not None else None)

    def matches_request(self, *, path: str, method: str) -> bool:
        """True when this rule applies to an HTTP request for ``path`` (decoded, as the framework routes
        it) with ``method``: its ``route`` compiled (:func:`route_regex`), its ``method`` as in
        :meth:`matches`; a rule naming a ``tool`` or ``logger`` never applies to a request."""
        for name, pattern in self.match.items():
            if name == "route":
                if self.route_regex is None or self.route_regex.fullmatch(path) is None:
                    return False
            elif name != "method" or not method_matches(method, pattern):
                return False
        return True

    def matches(self, *, route: str | None, tool: str | None, method: str | None, logger: str | None) -> bool:
        """True when every field of this rule's ``match`` table matches the given request attributes."""
        given = {"route": route, "tool": tool, "method": method, "logger": logger}
        for name, pattern in self.match.items():
            value = given[name]
            if value is None:
                return False
            if name == "method":
                if not method_matches(value, pattern):
                    return False
                continue
            if name == "logger" and (value == pattern or value.startswith(pattern + ".")):
                continue
            if not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Reader:
    """A principal allowed to read stored bodies: its scopes and the tenants it may read (``*`` = all)."""

    name: str
    scopes: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()


ADMIN_SCOPE = "bodies:admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """A principal allowed to hold, release, purge and erase bodies: it needs ``bodies:admin``."""

    name: str
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Paths:
    """Which segments of a journaled URL path stay verbatim (the ``[paths]`` table).

    ``segments = "literals"`` (the default): only route literals, the words that the rules' ``route``
    patterns, the app's route templates or ``literals`` name; every other segment becomes a placeholder
    naming its kind (``{n}``, ``{uuid}``, ``{email}``, ``{token}``, ``{id}``), so ``/users/alice`` is
    journaled as ``/users/{id}``. ``"words"``: word-like segments the scanner finds nothing in stay too
    (``/users/alice``), for apps whose paths name no people.
    """

    segments: PathSegments = "literals"
    literals: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A validated policy. ``hash`` is the SHA-256 of its canonical form, recorded with every event."""

    id: str
    hash: str
    defaults: Rule
    rules: tuple[Rule, ...] = ()
    readers: Mapping[str, Reader] = field(default_factory=dict)
    source: str | None = None
    operators: Mapping[str, Operator] = field(default_factory=dict)
    paths: Paths = field(default_factory=Paths)
    # The words a journaled path keeps (see Paths): its literals and those of every rule's route; None
    # when word-like segments are kept too.
    route_literals: frozenset[str] | None = field(init=False, repr=False, compare=False)
    # What match() answered, per attributes: a policy never changes, and its rules are tried in order on
    # every request otherwise. Keys are route templates or collapsed paths, tool names and methods (never
    # raw paths or values); bounded, cleared when full.
    _matched: dict[tuple[str | None, ...], Rule] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _ref: orjson.Fragment = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ref", orjson.Fragment(orjson.dumps(self.ref)))
        words: frozenset[str] | None = None
        if self.paths.segments == "literals":
            routes = [r.match["route"] for r in self.rules if "route" in r.match]
            words = self.paths.literals.union(*(template_literals(t) for t in routes))
        object.__setattr__(self, "route_literals", words)

    def __getstate__(self) -> list[Any]:  # copies and pickles: the fields, not the memo or the kept JSON
        return [getattr(self, f.name) for f in fields(self) if f.init]

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip([f for f in fields(self) if f.init], state, strict=True):
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "_matched", {})
        self.__post_init__()

    def match(
        self,
        *,
        route: str | None = None,
        tool: str | None = None,
        method: str | None = None,
        logger: str | None = None,
        remember: bool = True,
    ) -> Rule:
        """Return the first rule matching the given attributes, else the defaults.

        ``remember=False``: the attributes are raw client input (a tool name that looks like a token, a
        resource URI); the answer is not kept, so nothing a client sent outlives its request here.
        """
        key = (route, tool, method, logger)
        found = self._matched.get(key) if remember else None
        if found is not None:
            return found
        found = self.defaults
        for rule in self.rules:
            if rule.matches(route=route, tool=tool, method=method, logger=logger):
                found = rule
                break
        if not remember:
            return found
        if len(self._matched) >= _MAX_MATCHED:
            self._matched.clear()
        self._matched[key] = found
        return found

    def match_request(self, *, path: str, method: str) -> Rule:
        """The first rule that applies to an HTTP request (see :meth:`Rule.matches_request`), else the
        defaults: decided from the policy's own compiled patterns over the request path, before and
        without the app's router (nothing of the app runs twice). Not memoized: paths are client input."""
        for rule in self.rules:
            if rule.matches_request(path=path, method=method):
                return rule
        return self.defaults

    def may_refuse(self) -> bool:
        """Whether any rule (or the defaults) fails closed or is disabled: what an audit step that cannot
        even tell which rule applies must assume."""
        return any(r.fail_mode == "closed" or r.disabled for r in (self.defaults, *self.rules))

    def for_logger(self, name: str | None) -> Rule:
        """The rule for an application log line: rules with only a ``logger`` match apply."""
        if name:
            for rule in self.rules:
                if set(rule.match) == {"logger"} and rule.matches(
                    route=None, tool=None, method=None, logger=name
                ):
                    return rule
        return self.defaults

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready form of the policy (for evidence packs and ``policy check``)."""
        return canonical(self)

    @property
    def ref(self) -> dict[str, str]:
        """The ``policy`` field stamped on audit events: id and hash prefix."""
        return {"id": self.id, "hash": self.hash[:16]}

    @property
    def ref_json(self) -> orjson.Fragment:
        """:attr:`ref` as JSON, serialized once (for events written to the journal as they are)."""
        return self._ref


def _rule_dict(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "match": dict(r.match),
        "level": r.level,
        "allow": sorted(r.allow),
        "fingerprint": sorted(r.fingerprint),
        "pii": sorted(r.pii),
        "capture_body": r.capture_body,
        "body_retention": r.body_retention,
        "journal_retention": r.journal_retention,
        "fail_mode": r.fail_mode,
        "required_scopes": sorted(r.required_scopes),
        "disabled": r.disabled,
    }


def canonical(p: Policy) -> dict[str, Any]:
    return {
        "version": 1,
        "id": p.id,
        "defaults": _rule_dict(p.defaults),
        "rules": [_rule_dict(r) for r in p.rules],
        "readers": {
            n: {"scopes": sorted(r.scopes), "tenants": sorted(r.tenants)}
            for n, r in sorted(p.readers.items())
        },
        # Only when declared, so the hash of a policy without operators is unchanged.
        **(
            {"operators": {n: {"scopes": sorted(o.scopes)} for n, o in sorted(p.operators.items())}}
            if p.operators
            else {}
        ),
        **(
            {"paths": {"segments": p.paths.segments, "literals": sorted(p.paths.literals)}}
            if p.paths != Paths()
            else {}
        ),
    }
