"""What the OpenTelemetry processors keep and how they redact it (private; the processors are in ``otel``).

The allowlists (:data:`ALLOWED_ATTRIBUTES`, :data:`ALLOWED_PREFIXES`, :data:`URL_ATTRIBUTES`), the
redactor that turns one span's or record's attributes, names, events, status and exception text into
redacted copies, and :func:`redact_url`. Imports OpenTelemetry's SDK types only for events.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

import orjson

from auditlog.handle import current_handle
from auditlog.integrations._mcp_request import DECLARED, UNLISTED, tool_label
from auditlog.integrations.urls import ROUTE_WORDS, collapse_path, redact_target
from auditlog.policy import DEFAULT_POLICY, Policy
from processors import Scanner, shape_of
from processors.shapes import emittable_key

try:
    from opentelemetry.sdk.trace import Event
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("install auditlog-pipeline[otel] to use auditlog.integrations.otel") from exc

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_PREFIXES",
    "HIDDEN_KEYS",
    "URL_ATTRIBUTES",
    "Redactor",
    "redact_url",
    "shape_json",
]

ALLOWED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # HTTP, stable semantic conventions
        "http.request.method",
        "http.request.method_original",
        "http.response.status_code",
        "http.route",
        "url.scheme",
        "server.address",
        "server.port",
        "network.protocol.name",
        "network.protocol.version",
        "network.transport",
        "network.type",
        "error.type",
        # HTTP, the conventions before 1.21 (still emitted by default by the ASGI instrumentation)
        "http.method",
        "http.status_code",
        "http.scheme",
        "http.flavor",
        "http.host",
        "http.server_name",
        "net.host.name",
        "net.host.port",
        "net.transport",
        "asgi.event.type",
        # MCP and GenAI (the MCP SDK's middleware, the MCP / GenAI semantic conventions)
        "mcp.method.name",
        "mcp.protocol.version",
        "mcp.tool.name",
        "gen_ai.tool.name",
        "gen_ai.operation.name",
        "gen_ai.prompt.name",
        "gen_ai.system",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "jsonrpc.protocol.version",
        # exceptions (exception.message and exception.stacktrace are handled apart)
        "exception.type",
        "exception.escaped",
        # code locations (what LoggingHandler adds to every record)
        "code.file.path",
        "code.function.name",
        "code.line.number",
        "code.filepath",
        "code.function",
        "code.lineno",
        "code.namespace",
        "thread.id",
        "thread.name",
    }
)
"""Attribute keys whose values pass (string values through the scanner), the rest are shaped."""

ALLOWED_PREFIXES: tuple[str, ...] = ("rpc.",)
"""Key prefixes allowed as :data:`ALLOWED_ATTRIBUTES` are (``rpc.method``, ``rpc.jsonrpc.error_code``...)."""

URL_ATTRIBUTES: Mapping[str, str] = {
    "url.full": "url",
    "http.url": "url",
    "url.original": "url",
    "http.target": "target",
    "url.path": "path",
    "url.query": "query",
}
"""Keys holding URLs or parts of them, and how each is scrubbed."""

HIDDEN_KEYS = "auditlog.hidden_keys"
_MAX_VALUE = 1024
_MAX_WORDS = 32
_MAX_FRAMES = 64
_FRAME = re.compile(r'^[ |+\-]*File "([^"\n]{1,512})", line (\d{1,9}), in ([^\n]{1,256})$')
_EXC_HEADER = re.compile(r"^[ |+\-]*([A-Za-z_][A-Za-z0-9_.]{0,255})(?::.*)?$")
_KEEP_LINES = frozenset(
    {
        "Traceback (most recent call last):",
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
_SCRUB_KINDS = ("url", "target", "path", "query")
# Tool and prompt names a client sends: kept when a server declared them (see _mcp_request.DECLARED).
_TOOL_NAMES = frozenset({"mcp.tool.name", "gen_ai.tool.name", "gen_ai.prompt.name"})
_NAMED_BY_CLIENT = frozenset({"tools/call", "prompts/get"})  # span names: "<method> <tool or prompt>"
_HOST = re.compile(r"[a-z0-9._:%-]{1,253}")  # DNS names and IP literals, as urlsplit gives them
_VERSION = re.compile(r"^v?\d{1,4}(?:\.\d{1,4}){0,3}(?:[-.]?(?:rc|alpha|beta|a|b)\d{0,3})?$")


class Redactor:
    """The rules shared by spans and log records. Never returns a value it has not scanned or shaped."""

    __slots__ = ("_allow", "_policy", "_prefixes", "_scanner", "_stacktrace", "_urls")

    def __init__(
        self,
        scanner: Scanner,
        allow: Iterable[str],
        allow_prefixes: Iterable[str],
        url_attributes: Mapping[str, str],
        stacktrace: str,
        policy: Policy | None = None,
    ) -> None:
        if stacktrace not in ("frames", "drop"):
            raise ValueError("stacktrace must be 'frames' or 'drop'")
        bad = sorted(k for k, v in url_attributes.items() if v not in _SCRUB_KINDS)
        if bad:
            raise ValueError(f"url_attributes values must be one of {', '.join(_SCRUB_KINDS)} (see {bad[0]})")
        self._scanner = scanner
        self._allow = frozenset(allow)
        self._prefixes = tuple(allow_prefixes)
        self._urls = dict(url_attributes)
        self._stacktrace = stacktrace
        self._policy = policy

    def _current_policy(self) -> Policy:
        """This redactor's policy, else the current handle's, else the default."""
        if self._policy is not None:
            return self._policy
        handle = current_handle()
        return handle.policy if handle is not None else DEFAULT_POLICY

    def _literals(self) -> frozenset[str] | None:
        """The route literals paths keep (see :class:`~.urls.PathWords`); None: the policy keeps
        word-like segments too."""
        return ROUTE_WORDS.literals(self._current_policy())

    def learn_ran(self, attrs: Mapping[str, Any] | None) -> None:
        """A span of a tool call or prompt that did not fail: the server ran it, so its name is one of
        the server's own (see :data:`~._mcp_request.DECLARED`), not a name a client made up."""
        if not attrs or attrs.get("mcp.method.name") not in _NAMED_BY_CLIENT:
            return
        for key in _TOOL_NAMES:
            name = attrs.get(key)
            if type(name) is str and emittable_key(name, 128):
                DECLARED.learn(name)

    def _unlisted(self, name: str) -> bool:
        """Whether a tool or prompt name is one no server declared and no rule names (a value)."""
        rule = self._current_policy().match(tool=name, method="tools/call", remember=False)
        return tool_label(name, rule) == UNLISTED

    def text(self, value: str) -> str:
        return self._scanner.redact(value)

    def name(self, name: str) -> str:
        """Collapse id-like words (and path segments) of a span, event or log event name."""
        words = name.split(" ")
        literals = self._literals()
        out = [
            UNLISTED
            if n and words[n - 1] in _NAMED_BY_CLIENT and self._unlisted(w)
            else _harden(
                collapse_path(w, scanner=self._scanner, literals=literals if w.startswith("/") else None)
            )
            if w
            else w
            for n, w in enumerate(words[:_MAX_WORDS])
        ]
        if len(words) > _MAX_WORDS:
            out.append("{...}")
        return " ".join(out)

    def attributes(self, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        hidden = 0
        for key, value in (attrs or {}).items():
            if not emittable_key(key, 128):
                hidden += 1
                continue
            out[key] = self.value(key, value)
        if hidden:
            out[HIDDEN_KEYS] = hidden
        return out

    def value(self, key: str, value: Any) -> Any:
        kind = self._urls.get(key)
        if kind is not None and type(value) is str:
            return _scrub(kind, value, self._scanner, self._literals())
        if key in _TOOL_NAMES and type(value) is str and self._unlisted(value):
            return UNLISTED
        if key == "exception.message" and type(value) is str:
            return self.text(value)
        if key == "exception.stacktrace" and type(value) is str:
            return self.stacktrace(value)
        if key in self._allow or key.startswith(self._prefixes):
            return self._allowed(value)
        return shape_json(value)

    def _allowed(self, value: Any) -> Any:
        tp = type(value)
        if tp is bool or tp is int or tp is float:
            return value
        if tp is str and len(value) <= _MAX_VALUE:
            return self.text(value)
        if tp in (list, tuple) and all(type(v) in (bool, int, float, str) for v in value):
            return [self._allowed(v) if type(v) is str else v for v in value]
        return shape_json(value)

    def stacktrace(self, text: str) -> str | None:
        """Frames and exception type names only; ``None`` when stack traces are dropped."""
        if self._stacktrace == "drop":
            return None
        out: list[str] = []
        frames = 0
        in_message = False  # after "Type: message", lines up to the next frame belong to the message
        for line in text.splitlines():
            line = line.rstrip()
            if line in _KEEP_LINES:
                out.append(line)
                in_message = False
            elif (m := _FRAME.match(line)) is not None:
                frames += 1
                in_message = False
                if frames <= _MAX_FRAMES:
                    out.append(f'  File "{m.group(1)}", line {m.group(2)}, in {m.group(3)}')
            elif not in_message and line and not line[0].isspace() and (m := _EXC_HEADER.match(line)):
                out.append(m.group(1))  # "ValueError: message" keeps the type; the message is elsewhere
                in_message = True
        if frames > _MAX_FRAMES:
            out.append(f"  ... {frames - _MAX_FRAMES} more frames")
        return self.text("\n".join(out))

    def event(self, event: Event) -> Event:
        attrs = self.attributes(event.attributes)
        if attrs.get("exception.stacktrace", "") is None:
            del attrs["exception.stacktrace"]
        return Event(self.name(event.name), attrs, event.timestamp)


def shape_json(value: Any) -> str:
    shape = shape_of(value)
    return shape if isinstance(shape, str) else orjson.dumps(shape, option=orjson.OPT_SORT_KEYS).decode()


def _scrub(kind: str, value: str, scanner: Scanner, literals: frozenset[str] | None) -> str:
    if kind == "url":
        return redact_url(value, scanner=scanner, literals=literals)
    if kind == "target":
        return _redact_target(value, scanner, literals)
    if kind == "path":
        return _harden(collapse_path(value, scanner=scanner, literals=literals))
    return redact_target("?" + value, scanner=scanner)[1:]


def _redact_target(target: str, scanner: Scanner | None, literals: frozenset[str] | None) -> str:
    path, sep, query = redact_target(target, scanner=scanner, literals=literals).partition("?")
    return _harden(path) + sep + query


def _token_like(segment: str) -> bool:
    """A path segment or word that ``collapse_path`` kept but that still looks generated.

    Kept segments are word-like by its rules; the scanner decides the rest, so a weak scanner would let
    ``bPxRfiCYCANARYKEY01`` or ``canary-url-token-55`` through. Three lower-to-upper case changes, or
    letters mixed with digits over 8+ characters (versions like ``v2.1`` aside), make it a token.
    """
    if segment.startswith("{") or len(segment) < 8:
        return False
    flips = sum(a.islower() and b.isupper() for a, b in pairwise(segment))
    if flips >= 3:
        return True
    return (
        any(c.isdigit() for c in segment)
        and any(c.isalpha() for c in segment)
        and not _VERSION.match(segment)
    )


def _harden(path: str) -> str:
    return "/".join("{token}" if _token_like(seg) else seg for seg in path.split("/"))


def redact_url(url: str, *, scanner: Scanner | None = None, literals: frozenset[str] | None = None) -> str:
    """Redact a URL: scheme and host kept (host scanned), userinfo and fragment dropped, path collapsed,
    query keys kept without values (see :func:`~.urls.redact_target`). A host that is not a DNS
    name or an IP literal (a client's ``Host`` header can hold anything) becomes ``<invalid-host>``.

    ``https://bob:pw@api.example.com/users/42?token=abc#x`` gives ``https://api.example.com/users/{n}?token=``.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = urllib.parse.unquote(parts.hostname or "", errors="replace")
        port = parts.port
    except ValueError:
        return "<unparseable-url>"
    if host and not _HOST.fullmatch(host):  # urlsplit lowercased it, which hides a name from the scanner
        host = "<invalid-host>"
    if scanner is not None and host:
        host = scanner.redact(host)
    netloc = f"{host}:{port}" if port is not None else host
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    rest = _redact_target(target, scanner, literals) if target else ""
    if parts.scheme:
        return f"{parts.scheme}://{netloc}{rest}" if parts.netloc else f"{parts.scheme}:{rest}"
    return f"//{netloc}{rest}" if parts.netloc else rest
