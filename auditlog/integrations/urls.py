"""URL redaction: keep the route, drop the identifiers and every query value.

``redact_target("/reset/canary-url-token-55?token=abc&page=2")`` gives ``"/reset/{token}?token=&page="``:
id-like path segments collapse to a placeholder naming their kind, query keys stay (when they are
identifier-like) and query values never appear. Everything is percent-decoded first, so an encoded secret
is recognised as what it is.

Given ``literals`` (the policy's default, ``[paths] segments = "literals"``), a segment stays only when it
is a route literal: a word that a route template or policy pattern names (:class:`PathWords` gathers them).
Every other segment is a value, whatever it looks like: ``/users/alice`` becomes ``/users/{id}``. Without
``literals``, word-like segments that the scanner finds nothing in stay too.
"""

from __future__ import annotations

import itertools
import re
import urllib.parse
from collections.abc import Iterable

from auditlog.policy import Policy
from auditlog.routes import template_literals
from processors import Scanner

__all__ = ["ROUTE_WORDS", "PathWords", "collapse_path", "redact_target", "query_keys"]

_WORD = re.compile(r"^[A-Za-z][A-Za-z_.\-]{0,39}[0-9]{0,2}$")
_VERSIONISH = re.compile(r"^v[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")
_NUMBER = re.compile(r"^[0-9]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"@")
_HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{12,}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]{0,63}$")
_MAX_SEGMENTS = 32
_MAX_QUERY_KEYS = 32
_TOKEN_MIN_LEN = 12


def _random_looking(seg: str) -> bool:
    """Return whether a segment of 12+ chars looks generated rather than named.

    Hex runs and mixes of upper case, lower case and digits (``wJalrXUtnFEMIK7MDENG``,
    ``bPxRfiCYCANARYKEY01``) are tokens. Letters alone are a token when capitals make up 30% or more and the
    case flips at least every fourth letter, as in base64 (``QWxhZGRpbkpvcGVu``); camelCase route words
    (``userProfile``, ``getUserProfileById``, ``XMLHttpRequest``) flip far less.
    """
    if len(seg) < _TOKEN_MIN_LEN:
        return False
    if _HEX_TOKEN.match(seg):
        return True
    if seg.upper() == seg or seg.lower() == seg:  # one case only (or no letters)
        return False
    if any(c.isdigit() for c in seg):
        return True
    letters = "".join(c for c in seg if c.isalpha())
    capitals = sum(c.isupper() for c in letters)
    flips = sum(a.isupper() != b.isupper() for a, b in itertools.pairwise(letters))
    return capitals * 10 >= len(letters) * 3 and flips * 4 >= len(letters)


# Segments that came back unchanged (route words: "orders", "v1"), per scanner: the same scanner gives the
# same answer, and these words are written out verbatim anyway. Ids, tokens and anything the scanner
# flagged are never kept. The scanner itself is held, so its id names it while it is cached.
_ACCEPTED: dict[int, tuple[Scanner | None, set[str]]] = {}
_MAX_SCANNERS = 8
_MAX_WORDS = 4096


def accepted_by(
    scanner: Scanner | None, registry: dict[int, tuple[Scanner | None, set[str]]] | None = None
) -> set[str]:
    """The set of words ``scanner`` let through, kept in ``registry`` (default: route words) per scanner.

    Callers add only what the scanner found nothing in; the registry holds at most 8 scanners.
    """
    table = _ACCEPTED if registry is None else registry
    entry = table.get(id(scanner))
    if entry is None or entry[0] is not scanner:
        if len(table) >= _MAX_SCANNERS:
            table.clear()
        entry = table[id(scanner)] = (scanner, set())
    return entry[1]


def _segment(seg: str, scanner: Scanner | None, accepted: set[str] | None = None) -> str:
    if not seg or (accepted is not None and seg in accepted):
        return seg
    out = _judge(seg, scanner)
    if out is seg and accepted is not None and len(accepted) < _MAX_WORDS:
        accepted.add(seg)
    return out


def _judge(seg: str, scanner: Scanner | None) -> str:
    kind = _kind(seg)
    if kind is not None:
        return kind
    if _VERSIONISH.match(seg) or (_WORD.match(seg) and (scanner is None or not scanner.findings(seg))):
        # Word-like segments mixing in long digit runs were rejected by _WORD already.
        return seg
    return _unnamed(seg)


def _kind(seg: str) -> str | None:
    """The placeholder of an id-like segment (number, UUID, e-mail, token); None: it may be a word."""
    if seg.startswith("{") and seg.endswith("}"):
        return "{id}"  # a literal placeholder from a client is still not trusted
    if _NUMBER.match(seg):
        return "{n}"
    if _UUID.match(seg):
        return "{uuid}"
    if _EMAIL.search(seg):
        return "{email}"
    if _random_looking(seg):
        return "{token}"
    return None


def _unnamed(seg: str) -> str:
    return "{token}" if len(seg) >= 8 else "{id}"


def _literal(seg: str, literals: frozenset[str]) -> str:
    if not seg or seg in literals:
        return seg
    return _kind(seg) or _unnamed(seg)


def collapse_path(
    path: str, *, scanner: Scanner | None = None, literals: frozenset[str] | None = None
) -> str:
    """Collapse the segments of a URL path that are values to placeholders naming their kind.

    Args:
        path: the path, percent-encoded or not.
        scanner: decides word-like segments when ``literals`` is None.
        literals: the route literals (see :class:`PathWords`): only these stay; None: word-like segments
            the scanner finds nothing in stay too.
    """
    decoded = urllib.parse.unquote(path, errors="replace")
    parts = decoded.split("/")
    if literals is not None:
        out = [_literal(p, literals) for p in parts[:_MAX_SEGMENTS]]
    else:
        accepted = accepted_by(scanner)
        out = [_segment(p, scanner, accepted) for p in parts[:_MAX_SEGMENTS]]
    if len(parts) > _MAX_SEGMENTS:
        out.append("{...}")
    return "/".join(out)


def query_keys(query: str) -> tuple[list[str], int]:
    """The identifier-like keys of a query string, and how many other keys were hidden."""
    keys: list[str] = []
    hidden = 0
    for n, (k, _v) in enumerate(urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")):
        if n >= _MAX_QUERY_KEYS:
            hidden += 1
        elif _KEY.match(k) and not _looks_like_token(k):
            keys.append(k)
        else:
            hidden += 1
    return keys, hidden


def _looks_like_token(k: str) -> bool:
    return len(k) >= 12 and sum(c.isdigit() for c in k) >= 3


def redact_target(
    target: str, *, scanner: Scanner | None = None, literals: frozenset[str] | None = None
) -> str:
    """Redact a request target (path plus optional query): collapsed path (see :func:`collapse_path`),
    query keys without values."""
    path, sep, query = target.partition("?")
    out = collapse_path(path, scanner=scanner, literals=literals)
    if sep:
        keys, hidden = query_keys(query)
        parts = [f"{k}=" for k in keys]
        if hidden:
            parts.append(f"<{hidden} hidden>")
        out += "?" + "&".join(parts)
    return out


class PathWords:
    """The route literals journaled paths keep under a policy (see :class:`auditlog.policy.Paths`).

    The policy's own (``[paths] literals`` and its rules' ``route`` patterns), plus the words of the app's
    route templates: those it declared (:meth:`learn_all` at the first request) and those the framework
    recorded as it routed (:meth:`learn`). Templates are the app's code, never client input. At most 4096
    learned words; ``generation`` counts the changes, so callers know when what they kept is stale.
    """

    __slots__ = ("_kept", "_learned", "_templates", "generation")

    def __init__(self) -> None:
        self._learned: set[str] = set()
        self._templates: set[str] = set()  # templates already read: a route's template comes every request
        self._kept: tuple[Policy | None, int, frozenset[str] | None] = (None, -1, None)
        self.generation = 0

    def learn(self, template: str) -> bool:
        """Add the literals of one route template; True when a word was new."""
        if template in self._templates:
            return False
        if len(self._templates) < _MAX_WORDS:
            self._templates.add(template)
        new = template_literals(template) - self._learned
        if not new or len(self._learned) + len(new) > _MAX_WORDS:
            return False
        self._learned |= new
        self.generation += 1
        return True

    def learn_all(self, templates: Iterable[str]) -> None:
        """Add the literals of many route templates (an app's route table)."""
        for template in itertools.islice(templates, _MAX_WORDS):
            self.learn(template)

    def literals(self, policy: Policy) -> frozenset[str] | None:
        """The words ``policy`` lets a journaled path keep; None: it keeps word-like segments too."""
        kept_policy, generation, words = self._kept
        if kept_policy is policy and generation == self.generation:
            return words
        base = policy.route_literals
        words = None if base is None else base | self._learned
        self._kept = (policy, self.generation, words)
        return words


# The process's route literals: every middleware adds the templates of its app, and every sink that writes
# a path (events, access lines, spans) reads them, so one path is journaled alike everywhere.
ROUTE_WORDS = PathWords()
