"""Audit policies: what is logged of each argument, which bodies are kept, who may read them.

A policy is a TOML file, loaded and validated eagerly::

    version = 1
    id = "payments-api"

    [defaults]
    level = "shape"              # none | metadata | shape | values
    body_retention = "7d"
    journal_retention = "400d"
    fail_mode = "open"           # open | closed

    [[rules]]
    id = "login"
    match = { route = "/login", method = "POST" }
    level = "values"
    allow = ["username"]         # kept as values, after the secret/PII scan
    fingerprint = ["email"]      # kept only as a keyed HMAC
    pii = ["note"]               # shape annotated with the entity types found: "pii": ["EMAIL_ADDRESS"]

    [[rules]]
    match = { tool = "delete_*" }
    required_scopes = ["admin"]

    [readers.oncall]
    scopes = ["bodies:read"]
    tenants = ["*"]

    [operators.records_team]      # may hold, release, purge and erase bodies
    scopes = ["bodies:admin"]

    [paths]                       # what journaled URL paths keep (action.name and action.target)
    segments = "literals"         # literals | words
    literals = ["healthz"]        # words kept besides the rules' routes and the app's route templates

Rules are tried in order; the first whose every ``match`` field matches wins, else ``[defaults]`` applies.
Rule fields not given inherit from ``[defaults]``. Match patterns are shell-style globs
(``fnmatch.fnmatchcase``); ``logger`` also matches any child logger (``"app"`` matches ``"app.db"``).

With no policy file the safe default applies: level ``shape``, nothing allowlisted, nothing fingerprinted,
no body capture. A malformed file raises :class:`PolicyError` naming the offending entry, for example
``policy.toml: rules[2].match.tool: expected a string``.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from auditlog.routes import method_matches, route_regex, template_literals
from processors import FieldPolicy

__all__ = [
    "ADMIN_SCOPE",
    "DEFAULT_POLICY",
    "Level",
    "Operator",
    "Paths",
    "Policy",
    "PolicyError",
    "Reader",
    "Rule",
    "load",
    "loads",
    "parse_duration",
    "sensitive_allowlist_warnings",
]

Level = Literal["none", "metadata", "shape", "values"]
FailMode = Literal["open", "closed"]
LEVELS: tuple[str, ...] = ("none", "metadata", "shape", "values")
FAIL_MODES: tuple[str, ...] = ("open", "closed")
PathSegments = Literal["literals", "words"]
PATH_SEGMENTS: tuple[str, ...] = ("literals", "words")
MATCH_FIELDS: tuple[str, ...] = ("route", "tool", "method", "logger")
DAY = 86_400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_MAX_MATCHED = 4096
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.:/*\-]{1,128}$")
SENSITIVE_NAME = re.compile(
    r"pass(word|wd|phrase)?|pwd|token|secret|api[_-]?key|apikey|private|\bkey\b|_key$|^key|ssn|social|"
    r"e-?mail|card|cvv|cvc|pan\b|iban|account|auth|cookie|session|credential|bearer|jwt|phone|dob|birth",
    re.IGNORECASE,
)


class PolicyError(ValueError):
    """A policy file is malformed. The message names the file and the offending entry."""


def parse_duration(value: object, *, where: str) -> float:
    """Parse ``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or a number of seconds into seconds.

    Raises:
        PolicyError: the value is neither a non-negative number nor such a string.
    """
    if isinstance(value, bool):
        raise PolicyError(f"{where}: expected a duration like '7d', got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise PolicyError(f"{where}: a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
        raise PolicyError(f"{where}: expected a duration like '7d', '12h', '30m' or '45s'")
    raise PolicyError(f"{where}: expected a duration like '7d', got {_tname(value)}")


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
        return _canonical(self)

    @property
    def ref(self) -> dict[str, str]:
        """The ``policy`` field stamped on audit events: id and hash prefix."""
        return {"id": self.id, "hash": self.hash[:16]}

    @property
    def ref_json(self) -> orjson.Fragment:
        """:attr:`ref` as JSON, serialized once (for events written to the journal as they are)."""
        return self._ref


def load(path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy file.

    Raises:
        PolicyError: the file is missing, not TOML, or fails validation (the message names the entry).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file ({exc.strerror or type(exc).__name__})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(f"{p}: line {line}: not valid UTF-8") from exc
    return loads(text, source=str(p))


def loads(text: str, *, source: str = "<policy>") -> Policy:
    """Validate a policy given as TOML text. See :func:`load`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from exc
    try:
        return _build(data, source)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


_TOP = ("version", "id", "defaults", "rules", "readers", "operators", "paths")
_RULE_FIELDS = (
    "id",
    "match",
    "level",
    "allow",
    "fingerprint",
    "capture_body",
    "body_retention",
    "journal_retention",
    "fail_mode",
    "required_scopes",
    "disabled",
    "pii",
)
_PATH_FIELDS = ("segments", "literals")
_DEFAULT_FIELDS = tuple(f for f in _RULE_FIELDS if f not in ("id", "match"))


def _build(data: dict[str, Any], source: str) -> Policy:
    _no_unknown(data, _TOP, "")
    version = data.get("version", 1)
    if version != 1:
        raise PolicyError("version: only version 1 is supported")
    pid = data.get("id", "default")
    if not isinstance(pid, str) or not _FIELD_NAME.match(pid):
        raise PolicyError("id: expected an identifier-like string")
    dtable = data.get("defaults", {})
    if not isinstance(dtable, dict):
        raise PolicyError("defaults: expected a table")
    _no_unknown(dtable, _DEFAULT_FIELDS, "defaults.")
    defaults = _rule(dtable, base=None, where="defaults", rid="defaults", index=None)
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("rules: expected an array of tables ([[rules]])")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(rules_raw):
        where = f"rules[{i}]"
        if not isinstance(r, dict):
            raise PolicyError(f"{where}: expected a table")
        _no_unknown(r, _RULE_FIELDS, f"{where}.")
        rid = r.get("id", f"rule-{i}")
        if not isinstance(rid, str) or not _FIELD_NAME.match(rid):
            raise PolicyError(f"{where}.id: expected an identifier-like string")
        if rid in seen:
            raise PolicyError(f"{where}.id: duplicate rule id {rid!r}")
        seen.add(rid)
        rules.append(_rule(r, base=defaults, where=where, rid=rid, index=i))
    readers = _readers(data.get("readers", {}))
    operators = _operators(data.get("operators", {}))
    paths = _paths(data.get("paths", {}))
    draft = Policy(
        id=pid,
        hash="",
        defaults=defaults,
        rules=tuple(rules),
        readers=readers,
        source=source,
        operators=operators,
        paths=paths,
    )
    digest = hashlib.sha256(orjson.dumps(_canonical(draft), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Policy(
        id=pid,
        hash=digest,
        defaults=defaults,
        rules=tuple(rules),
        readers=readers,
        source=source,
        operators=operators,
        paths=paths,
    )


def _rule(t: dict[str, Any], *, base: Rule | None, where: str, rid: str, index: int | None) -> Rule:
    b = base or Rule(id="defaults")
    match: dict[str, str] = {}
    if base is not None:
        m = t.get("match")
        if m is None:
            raise PolicyError(f"{where}.match: required (a table of route / tool / method / logger)")
        if not isinstance(m, dict):
            raise PolicyError(f"{where}.match: expected a table")
        _no_unknown(m, MATCH_FIELDS, f"{where}.match.")
        if not m:
            raise PolicyError(f"{where}.match: needs at least one of {', '.join(MATCH_FIELDS)}")
        for k, v in m.items():
            if not isinstance(v, str) or not v:
                raise PolicyError(f"{where}.match.{k}: expected a string")
            match[k] = v
    level = t.get("level", b.level)
    if level not in LEVELS:
        raise PolicyError(f"{where}.level: expected one of {' | '.join(LEVELS)}")
    fail_mode = t.get("fail_mode", b.fail_mode)
    if fail_mode not in FAIL_MODES:
        raise PolicyError(f"{where}.fail_mode: expected 'open' or 'closed'")
    return Rule(
        id=rid,
        index=index,
        match=match,
        level=cast(Level, level),
        allow=_names(t, "allow", b.allow, where),
        fingerprint=_names(t, "fingerprint", b.fingerprint, where),
        pii=_names(t, "pii", b.pii, where),
        capture_body=_bool(t, "capture_body", b.capture_body, where),
        body_retention=_duration(t, "body_retention", b.body_retention, where),
        journal_retention=_duration(t, "journal_retention", b.journal_retention, where),
        fail_mode=cast(FailMode, fail_mode),
        required_scopes=_scopes(t, "required_scopes", b.required_scopes, where),
        disabled=_bool(t, "disabled", b.disabled, where),
    )


def _readers(raw: object) -> dict[str, Reader]:
    if not isinstance(raw, dict):
        raise PolicyError("readers: expected a table of reader tables")
    out: dict[str, Reader] = {}
    for name, t in raw.items():
        where = f"readers.{name}"
        if not _FIELD_NAME.match(name):
            raise PolicyError(f"{where}: reader names must be identifier-like")
        if not isinstance(t, dict):
            raise PolicyError(f"{where}: expected a table")
        _no_unknown(t, ("scopes", "tenants"), f"{where}.")
        out[name] = Reader(
            name=name,
            scopes=_scopes(t, "scopes", frozenset(), where),
            tenants=_scopes(t, "tenants", frozenset(), where),
        )
    return out


def _operators(raw: object) -> dict[str, Operator]:
    if not isinstance(raw, dict):
        raise PolicyError("operators: expected a table of operator tables")
    out: dict[str, Operator] = {}
    for name, t in raw.items():
        where = f"operators.{name}"
        if not _FIELD_NAME.match(name):
            raise PolicyError(f"{where}: operator names must be identifier-like")
        if not isinstance(t, dict):
            raise PolicyError(f"{where}: expected a table")
        _no_unknown(t, ("scopes",), f"{where}.")
        out[name] = Operator(name=name, scopes=_scopes(t, "scopes", frozenset(), where))
    return out


def _paths(raw: object) -> Paths:
    if not isinstance(raw, dict):
        raise PolicyError("paths: expected a table")
    _no_unknown(raw, _PATH_FIELDS, "paths.")
    segments = raw.get("segments", "literals")
    if segments not in PATH_SEGMENTS:
        raise PolicyError("paths.segments: expected 'literals' or 'words'")
    words = raw.get("literals", [])
    if not isinstance(words, list):
        raise PolicyError("paths.literals: expected an array of path segments")
    for i, word in enumerate(words):
        if not isinstance(word, str) or template_literals(word) != {word}:
            raise PolicyError(
                f"paths.literals[{i}]: expected one path segment (no '/', placeholder or glob; at most 64 "
                "characters)"
            )
    return Paths(segments=cast(PathSegments, segments), literals=frozenset(words))


def _names(t: dict[str, Any], key: str, default: frozenset[str], where: str) -> frozenset[str]:
    if key not in t:
        return default
    v = t[key]
    if not isinstance(v, list):
        raise PolicyError(f"{where}.{key}: expected an array of field names")
    for i, name in enumerate(v):
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise PolicyError(f"{where}.{key}[{i}]: expected an identifier-like field name")
    return frozenset(v)


def _scopes(t: dict[str, Any], key: str, default: frozenset[str], where: str) -> frozenset[str]:
    if key not in t:
        return default
    v = t[key]
    if not isinstance(v, list):
        raise PolicyError(f"{where}.{key}: expected an array of strings")
    for i, s in enumerate(v):
        if not isinstance(s, str) or not _SCOPE.match(s):
            raise PolicyError(f"{where}.{key}[{i}]: expected a scope-like string")
    return frozenset(v)


def _bool(t: dict[str, Any], key: str, default: bool, where: str) -> bool:
    if key not in t:
        return default
    v = t[key]
    if not isinstance(v, bool):
        raise PolicyError(f"{where}.{key}: expected true or false")
    return v


def _duration(t: dict[str, Any], key: str, default: float, where: str) -> float:
    return default if key not in t else parse_duration(t[key], where=f"{where}.{key}")


def _no_unknown(t: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    for k in t:
        if k not in known:
            hint = difflib.get_close_matches(k, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise PolicyError(f"{prefix}{k}: unknown field{extra}")


def _tname(v: object) -> str:
    return {str: "a string", int: "a number", float: "a number", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__
    )


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


def _canonical(p: Policy) -> dict[str, Any]:
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


def sensitive_allowlist_warnings(policy: Policy) -> list[str]:
    """Warnings for allowlisted fields whose names look sensitive (``password``, ``token``, ``email``...)."""
    out: list[str] = []
    for where, rule in [("defaults", policy.defaults)] + [
        (f"rules[{r.index}]", r) for r in policy.rules if r.index is not None
    ]:
        if rule.level != "values" and rule.allow:
            out.append(f"{where}.allow: has no effect unless level = 'values'")
        for name in sorted(rule.allow):
            if SENSITIVE_NAME.search(name):
                out.append(
                    f"{where}.allow: {name!r} looks sensitive; values are still scanned, "
                    "but consider `fingerprint` instead"
                )
    return out


DEFAULT_POLICY = loads("version = 1\nid = 'default'\n", source="<default>")
