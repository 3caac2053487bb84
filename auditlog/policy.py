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

import os
import re
import tomllib
from pathlib import Path

from auditlog._policy_loader import build, parse_duration
from auditlog._policy_model import (
    ADMIN_SCOPE,
    DAY,
    MATCH_FIELDS,
    Level,
    Operator,
    Paths,
    Policy,
    PolicyError,
    Reader,
    Rule,
)

__all__ = [
    "ADMIN_SCOPE",
    "DAY",
    "DEFAULT_POLICY",
    "MATCH_FIELDS",
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

SENSITIVE_NAME = re.compile(
    r"pass(word|wd|phrase)?|pwd|token|secret|api[_-]?key|apikey|private|\bkey\b|_key$|^key|ssn|social|"
    r"e-?mail|card|cvv|cvc|pan\b|iban|account|auth|cookie|session|credential|bearer|jwt|phone|dob|birth",
    re.IGNORECASE,
)


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
        return build(data, source)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


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
