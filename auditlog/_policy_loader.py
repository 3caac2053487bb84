"""The policy loader: TOML tables checked field by field into the model (:mod:`auditlog._policy_model`).

Every error names its entry (``rules[2].match.tool: expected a string``); :mod:`auditlog.policy` adds the
file. The field lists here are what the policy reference (:mod:`auditlog.policy_reference`) documents.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import orjson

from auditlog._policy_model import (
    DAY,
    FAIL_MODES,
    LEVELS,
    MATCH_FIELDS,
    PATH_SEGMENTS,
    FailMode,
    Level,
    Operator,
    Paths,
    PathSegments,
    Policy,
    PolicyError,
    Reader,
    Rule,
    canonical,
)
from auditlog.routes import template_literals

__all__ = ["DEFAULT_FIELDS", "PATH_FIELDS", "RULE_FIELDS", "TOP_KEYS", "build", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.:/*\-]{1,128}$")


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


TOP_KEYS = ("version", "id", "defaults", "rules", "readers", "operators", "paths")
RULE_FIELDS = (
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
PATH_FIELDS = ("segments", "literals")
DEFAULT_FIELDS = tuple(f for f in RULE_FIELDS if f not in ("id", "match"))


def build(data: dict[str, Any], source: str) -> Policy:
    _no_unknown(data, TOP_KEYS, "")
    version = data.get("version", 1)
    if version != 1:
        raise PolicyError("version: only version 1 is supported")
    pid = data.get("id", "default")
    if not isinstance(pid, str) or not _FIELD_NAME.match(pid):
        raise PolicyError("id: expected an identifier-like string")
    dtable = data.get("defaults", {})
    if not isinstance(dtable, dict):
        raise PolicyError("defaults: expected a table")
    _no_unknown(dtable, DEFAULT_FIELDS, "defaults.")
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
        _no_unknown(r, RULE_FIELDS, f"{where}.")
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
    digest = hashlib.sha256(orjson.dumps(canonical(draft), option=orjson.OPT_SORT_KEYS)).hexdigest()
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
    return {
        name: Reader(
            name=name,
            scopes=_scopes(t, "scopes", frozenset(), where),
            tenants=_scopes(t, "tenants", frozenset(), where),
        )
        for name, t, where in _named_tables(raw, "readers", "reader", ("scopes", "tenants"))
    }


def _operators(raw: object) -> dict[str, Operator]:
    return {
        name: Operator(name=name, scopes=_scopes(t, "scopes", frozenset(), where))
        for name, t, where in _named_tables(raw, "operators", "operator", ("scopes",))
    }


def _named_tables(
    raw: object, section: str, noun: str, fields: tuple[str, ...]
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(name, table, where)`` of each ``[section.NAME]`` table, its name and fields checked."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{section}: expected a table of {noun} tables")
    for name, t in raw.items():
        where = f"{section}.{name}"
        if not _FIELD_NAME.match(name):
            raise PolicyError(f"{where}: {noun} names must be identifier-like")
        if not isinstance(t, dict):
            raise PolicyError(f"{where}: expected a table")
        _no_unknown(t, fields, f"{where}.")
        yield name, t, where


def _paths(raw: object) -> Paths:
    if not isinstance(raw, dict):
        raise PolicyError("paths: expected a table")
    _no_unknown(raw, PATH_FIELDS, "paths.")
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
