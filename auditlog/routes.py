"""Route patterns: what a policy's ``route`` matches, and which words a route template names.

A pattern is a route template in the frameworks' own syntax (``/orders/{id}``, ``/files/<path:name>``)
mixed with shell-style globs (``/admin/*``). :func:`route_regex` compiles one to match request paths before
the app routes (the app's router is never called). :func:`template_literals` lists the segments a template
names literally (``orders`` in ``/orders/{id}``): the only words a journaled path keeps verbatim.
"""

from __future__ import annotations

import fnmatch
import re

__all__ = ["method_matches", "route_regex", "template_literals"]

_PLACEHOLDER = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}|<(?:([A-Za-z_]+)(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>"
)
_CONVERTERS = {
    None: "[^/]+",
    "str": "[^/]+",
    "string": "[^/]+",
    "default": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": "[0-9]+(?:\\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "any": "[^/]+",
}


def method_matches(value: str, pattern: str) -> bool:
    """As the frameworks route: methods compared in upper case, and HEAD served by the GET handler
    (Starlette, Flask, Django), so a GET rule applies to HEAD too."""
    value, pattern = value.upper(), pattern.upper()
    if fnmatch.fnmatchcase(value, pattern):
        return True
    return value == "HEAD" and fnmatch.fnmatchcase("GET", pattern)


def route_regex(pattern: str) -> re.Pattern[str]:
    """Compile a rule's ``route`` to a regex over request paths (what the framework routes on).

    Placeholders stand for what the frameworks' own route syntax matches: ``{name}`` (Starlette,
    FastAPI) and ``<name>`` (Flask, werkzeug) one path segment, ``{name:path}`` / ``<path:name>`` the
    rest of the path, ``int`` / ``float`` / ``uuid`` converters their forms. Around them the pattern is
    a shell-style glob as elsewhere in the policy (``*`` also crosses ``/``, ``?``, ``[...]``).
    """
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(_glob(pattern[pos : m.start()]))
        converter = m.group(2) if m.group(1) is not None else m.group(3)
        out.append(_CONVERTERS.get(converter.lower() if converter else None, "[^/]+"))
        pos = m.end()
    out.append(_glob(pattern[pos:]))
    return re.compile("".join(out), re.DOTALL)


def _glob(text: str) -> str:
    """A glob piece as regex (fnmatch's translation without its anchors)."""
    translated = fnmatch.translate(text)  # "(?s:...)\\Z"
    return translated[: -len("\\Z")] if translated.endswith("\\Z") else translated


# A segment holding any of these is a placeholder or a glob, not a literal word.
_NOT_LITERAL = re.compile(r"[{}<>*?\[\]]|^:")
_MAX_LITERAL = 64


def template_literals(template: str) -> set[str]:
    """The segments that ``template`` (a route template or a policy's ``route`` pattern) names verbatim.

    ``/v1/orders/{id}/items`` gives ``{"v1", "orders", "items"}``; placeholders (``{id}``, ``<int:id>``,
    ``:id``), globs (``*``, ``report-?``, ``[ab]``) and segments over 64 characters are not literals. A
    URI template's scheme is one (``notes://daily/{d}`` gives ``{"notes", "daily"}``).
    """
    scheme = template.find("://")
    rest = template[scheme + 3 :] if scheme != -1 else template
    words = rest.split("/")
    if scheme > 0:
        words.append(template[:scheme])
    return {s for s in words if s and len(s) <= _MAX_LITERAL and not _NOT_LITERAL.search(s)}
