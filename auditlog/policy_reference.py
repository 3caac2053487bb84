"""The policy file reference: every key a policy may hold, its type, its default and what it does.

One row per key the loader (:mod:`auditlog._policy_loader`) accepts.
``tests/auditlog/test_policy_reference.py`` holds this table against the loader's own lists of keys, and
the README's copy against :func:`render`, so neither can drift: a key added to the loader without a row
here, or a row changed without the README, fails the test. ``auditlog policy reference`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROWS", "Row", "render"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One policy key.

    Attributes:
        key: the key as written in the file (``defaults.level``, ``rules[].match.route``...).
        type: its TOML type, in words.
        default: what applies when it is left out.
        meaning: what it does.
    """

    key: str
    type: str
    default: str
    meaning: str


_RULE_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("level", "`none` \\| `metadata` \\| `shape` \\| `values`", "`shape`",
     "`none` drops the event; `metadata` keeps only its name, level, time and ids; `shape` replaces every "
     "field by its shape; `values` keeps the `allow`ed fields (after the scan) and shapes the rest"),
    ("allow", "array of field names", "`[]`",
     "fields kept as values at level `values`, after the secret/PII scan (numbers included)"),
    ("fingerprint", "array of field names", "`[]`",
     "fields kept only as a keyed HMAC (`fp.<field> = \"kid:hex\"`), to answer `query find`"),
    ("pii", "array of field names", "`[]`",
     "fields shaped and annotated with the PII entity types the scanner found"),
    ("capture_body", "boolean", "`false`",
     "the middleware stores the response body (encrypted, in the body store) and journals a `body_ref`"),
    ("body_retention", "duration (`7d`, `12h`, `30m`, `45s`, or seconds)", "`7d`",
     "how long a captured body is kept before `bodies purge` deletes it"),
    ("journal_retention", "duration", "`400d`",
     "how long sealed journal segments are kept (the writer purges older ones, on the record)"),
    ("fail_mode", "`open` \\| `closed`", "`open`",
     "`closed`: refuse the request (503 / a JSON-RPC error) when its event cannot be journaled or the "
     "audit step fails; `open`: serve, count, and journal that auditing failed"),
    ("required_scopes", "array of scope names", "`[]`",
     "scopes the verified caller must hold; refused with 403 / a JSON-RPC error and an `authz.denied` event "
     "(MCP enforces by default; HTTP with `AuditMiddleware(enforce=True)`)"),
    ("disabled", "boolean", "`false`",
     "kill switch: refuse every call (503 / a JSON-RPC error, `authz.denied`), and hide the tool from "
     "`tools/list`"),
)  # fmt: skip

ROWS: tuple[Row, ...] = (
    Row(key="version", type="integer", default="`1`", meaning="the policy format; only 1 exists"),
    Row(key="id", type="identifier", default="`default`", meaning="the policy name, journaled with its hash"),
    *(Row(key=f"defaults.{k}", type=t, default=d, meaning=m) for k, t, d, m in _RULE_KEYS),
    Row(key="rules[].id", type="identifier", default="`rule-N`", meaning="the rule's name, journaled"),
    Row(key="rules[].match.route", type="glob or route template", default="",
        meaning="the request path as the framework routes it (`/users/{id}`, `/admin/*`)"),
    Row(key="rules[].match.tool", type="glob", default="",
        meaning="the MCP tool or prompt's real name (never the sanitized label)"),
    Row(key="rules[].match.method", type="glob", default="",
        meaning="the HTTP method (`HEAD` matches `GET` rules) or the MCP method (`tools/call`)"),
    Row(key="rules[].match.logger", type="logger name", default="",
        meaning="a structlog / stdlib logger and its children (`app` matches `app.db`)"),
    *(Row(key=f"rules[].{k}", type=t, default="from `[defaults]`", meaning=m) for k, t, _, m in _RULE_KEYS),
    Row(key="readers.NAME.scopes", type="array of scope names", default="`[]`",
        meaning="a reader of stored bodies needs `bodies:read` here (`bodies get --reader NAME`)"),
    Row(key="readers.NAME.tenants", type="array of tenant ids", default="`[]`",
        meaning="the tenants whose bodies the reader may read (`*`: all)"),
    Row(key="operators.NAME.scopes", type="array of scope names", default="`[]`",
        meaning="an operator of the body store needs `bodies:admin` here to hold, release, purge or erase "
                "(`bodies ... --operator NAME`); anyone else is refused and journaled"),
    Row(key="paths.segments", type="`literals` \\| `words`", default="`literals`",
        meaning="what journaled URL paths (`action.name`, `action.target`, access lines, spans) keep: "
                "`literals` keeps only route literals (words of the rules' `route` patterns, of the app's "
                "route templates and of `paths.literals`) and turns every other segment into a placeholder "
                "(`/users/alice` gives `/users/{id}`); `words` also keeps word-like segments the scanner "
                "finds nothing in"),
    Row(key="paths.literals", type="array of path segments", default="`[]`",
        meaning="more words journaled paths keep verbatim (for routes the app does not declare, such as "
                "those a proxy or a 404 handler answers)"),
)  # fmt: skip


def render() -> str:
    """The reference as a Markdown table (the README's copy is this text)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{r.key}` | {r.type} | {r.default} | {r.meaning} |" for r in ROWS]
    return "\n".join(lines) + "\n"
