"""Encoded forms of free text: what a scanner must also see, and where each finding sits in the original.

A value can pass a pattern scanner by changing its form, not its content. Before scanning, the scanners
(:class:`processors.SecretScanner`, :class:`processors.PIIScanner`) derive from a text:

- one *normalized* form: Unicode format characters (category ``Cf``: zero-width spaces and joiners, word
  joiner, BOM, soft hyphen, bidi controls) removed, each other non-ASCII character NFKC-normalized
  (fullwidth letters and digits read as ASCII), percent-escapes decoded (``%40`` is ``@``), and a value
  typed apart (single chars or digit groups, blank-separated: ``4 1 1 1 ...``) joined;
- *decoded* forms: each base64 or hex run of 16 to 8192 characters (in the normalized form) that decodes
  to printable UTF-8 text, scanned in turn (one more level of encoding inside is decoded too). A decoded
  ``user:password`` pair (HTTP basic auth) is a credential by itself.

Every char of the normalized form remembers the span of the original it came from, so a finding there
masks exactly the original chars it covers (a decoded percent-escape masks all three chars, a removed
zero-width char inside a finding is masked with it). A finding inside a decoded run masks the whole run
in the original: fail closed, there is no exact mapping through base64.

In the joined form only structural findings count (emails, cards, keys...), not the letters-and-digits
heuristics (``SUSPICIOUS_TOKEN``, ``HIGH_ENTROPY_TOKEN``), which glued words would trip. Out of reach
here: confusable letters from other scripts (a Cyrillic ``a`` for a Latin one), spelled-out forms (``jonas dot
weber at ...``), compression and encryption.

Cost: :func:`may_hide_encoded` is the pre-check (a few C-speed scans); when it says no, nothing is
decoded. For ASCII text it is implied by the secret scanner's own prefilter: a text that prefilter skips
has no ``%``, digit or 16-char run, so nothing to decode.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Sequence

from processors.scanning import Finding

__all__ = ["HEURISTIC_ENTITIES", "encoded_findings", "may_hide_encoded"]

Scan = Callable[[str], list[Finding]]

HEURISTIC_ENTITIES = frozenset({"SUSPICIOUS_TOKEN", "HIGH_ENTROPY_TOKEN"})

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# A value typed apart: four or more single chars, or three or more groups of 1-4 digits, separated by
# single blanks (a run must hold a digit or an ``@`` to be joined).
_SPLIT = re.compile(r"(?<!\S)(?:\S(?:[ \t]\S){3,}|[0-9]{1,4}(?:[ \t][0-9]{1,4}){2,})(?!\S)")
_SPLIT_MARK = re.compile(r"[0-9@]")
_SPLIT_HINT = re.compile(r"[ \t]\S[ \t]|[0-9][ \t][0-9]")  # in every split run: a cheap scan first
_TOKEN = re.compile(r"\S+")
_MIN_RUN, _MAX_RUN = 16, 8192
_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,8192}(?![A-Za-z0-9+/_-])={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PAIR = re.compile(r"[^\s:]{1,128}:\S{1,512}")
_BLANKS = str.maketrans("\t\n\r", "   ")
_MAX_RUNS = 64
_MAX_DEPTH = 2
_MAX_CHARS = 1 << 20


# Every Unicode format character (category ``Cf``, Unicode 15): soft hyphen, Arabic marks, zero-width
# space / joiners, bidi controls, word joiner and invisible operators, BOM, interlinear annotation, tags.
# A test checks this class against ``unicodedata`` of the running Python.
_FORMAT = re.compile(
    "[\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def may_hide_encoded(text: str) -> bool:
    """Pre-check: whether ``text`` has any form worth decoding (no decoding happens here).

    Args:
        text: any str.

    Returns:
        ``True`` when a normalized or decoded form could differ from ``text``.
    """
    if not text.isascii() and (
        not unicodedata.is_normalized("NFKC", text) or _FORMAT.search(text) is not None
    ):
        return True
    if "%" in text and _PERCENT.search(text) is not None:
        return True
    if _RUN.search(text) is not None:
        return True
    if _SPLIT_HINT.search(text) is None:
        return False
    return any(_SPLIT_MARK.search(m.group()) for m in _SPLIT.finditer(text))


class _Form:
    """A text derived from the original, each char with the original span ``[starts[i], ends[i])``.

    ``starts is None``: the original itself (each char its own span), so plain text costs no lists.
    """

    __slots__ = ("ends", "starts", "text")

    def __init__(self, text: str, starts: list[int] | None = None, ends: list[int] | None = None) -> None:
        self.text = text
        self.starts = starts
        self.ends = ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (a non-empty slice)."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


class _Builder:
    """Builds the next form from ``src``: kept slices keep their spans, new chars get the given span."""

    __slots__ = ("ends", "parts", "src", "starts")

    def __init__(self, src: _Form) -> None:
        self.src = src
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def keep(self, a: int, b: int) -> None:
        self.parts.append(self.src.text[a:b])
        if self.src.starts is None or self.src.ends is None:
            self.starts.extend(range(a, b))
            self.ends.extend(range(a + 1, b + 1))
        else:
            self.starts.extend(self.src.starts[a:b])
            self.ends.extend(self.src.ends[a:b])

    def put(self, text: str, a: int, b: int) -> None:
        """``text`` replaces ``src.text[a:b]`` (each of its chars maps to that whole span)."""
        start, end = self.src.span(a, b)
        self.parts.append(text)
        self.starts.extend([start] * len(text))
        self.ends.extend([end] * len(text))

    def form(self) -> _Form:
        return _Form("".join(self.parts), self.starts, self.ends)


def _unicode(form: _Form) -> _Form | None:
    """Format characters removed, other non-ASCII chars NFKC-normalized one by one; None if unchanged."""
    out = _Builder(form)
    pos = 0
    changed = False
    for m in _NON_ASCII.finditer(form.text):
        out.keep(pos, m.start())
        for i, ch in enumerate(m.group(), m.start()):
            if _FORMAT.match(ch) is not None:
                changed = True
                continue
            norm = unicodedata.normalize("NFKC", ch)
            changed = changed or norm != ch
            out.put(norm, i, i + 1)
        pos = m.end()
    if not changed:
        return None
    out.keep(pos, len(form.text))
    return out.form()


def _percent(form: _Form) -> _Form | None:
    """Percent-escapes decoded (UTF-8); an ASCII char maps to its own escape, others to their run."""
    out = _Builder(form)
    pos = 0
    for m in _PERCENT.finditer(form.text):
        out.keep(pos, m.start())
        raw = bytes.fromhex(m.group().replace("%", ""))
        if raw.isascii():
            for i, byte in enumerate(raw):
                at = m.start() + 3 * i
                out.put(chr(byte), at, at + 3)
        else:
            out.put(raw.decode("utf-8", "replace"), m.start(), m.end())
        pos = m.end()
    if pos == 0:
        return None
    out.keep(pos, len(form.text))
    return out.form()


def _joined(form: _Form) -> _Form | None:
    """Values typed apart, the blanks between their chars removed; None if there is none."""
    out = _Builder(form)
    pos = 0
    for m in _SPLIT.finditer(form.text):
        if _SPLIT_MARK.search(m.group()) is None:
            continue
        out.keep(pos, m.start())
        for t in _TOKEN.finditer(form.text, m.start(), m.end()):
            out.keep(t.start(), t.end())
        pos = m.end()
    if pos == 0:
        return None
    out.keep(pos, len(form.text))
    return out.form()


def _decoded(run: str) -> str | None:
    """The printable UTF-8 text a hex or base64 run encodes, or None."""
    body = run.rstrip("=")
    try:
        if len(body) == len(run) and len(run) % 2 == 0 and _HEX.fullmatch(run):
            raw = bytes.fromhex(run)
        elif len(body) % 4 != 1:
            padded = body.encode("ascii").translate(_URLSAFE) + b"=" * (-len(body) % 4)
            raw = base64.b64decode(padded, validate=True)
        else:
            return None
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return text if len(text) >= 6 and text.translate(_BLANKS).isprintable() else None


def _mapped(form: _Form, found: Sequence[Finding], skip: frozenset[str] = frozenset()) -> list[Finding]:
    out = []
    for f in found:
        if f.end > f.start and f.entity not in skip:
            a, b = form.span(f.start, min(f.end, len(form.text)))
            out.append(Finding(f.entity, a, b))
    return out


def encoded_findings(text: str, scan: Scan, *, credentials: bool = True, depth: int = 0) -> list[Finding]:
    """Findings in the normalized and decoded forms of ``text``, as spans of ``text``.

    Args:
        text: the original text.
        scan: the scanner's own findings on a text (not these: no recursion through it).
        credentials: report a decoded ``user:password`` pair as ``URL_CREDENTIALS``.
        depth: how many decodings deep ``text`` already is.

    Returns:
        The findings, in no particular order; ``[]`` when no form holds anything. Raises only what
        ``scan`` raises (the scanners catch it and fail closed).
    """
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS]  # the scanners mask what lies past their own (smaller) limits
    out: list[Finding] = []
    form = _Form(text)
    step = _unicode(form) if not text.isascii() else None
    form = step or form
    step2 = _percent(form) if "%" in form.text else None
    form = step2 or form
    if form.text != text:
        out.extend(_mapped(form, scan(form.text)))
    joined = _joined(form) if _SPLIT_HINT.search(form.text) is not None else None
    if joined is not None:
        out.extend(_mapped(joined, scan(joined.text), HEURISTIC_ENTITIES))
        form = joined
    runs = 0
    for m in _RUN.finditer(form.text):
        if runs >= _MAX_RUNS:
            break
        runs += 1
        inner = _decoded(m.group())
        if inner is None:
            continue
        found = scan(inner)
        if not found and depth + 1 < _MAX_DEPTH and may_hide_encoded(inner):
            found = encoded_findings(inner, scan, credentials=credentials, depth=depth + 1)
        if not found and credentials and _PAIR.fullmatch(inner.strip()):
            found = [Finding("URL_CREDENTIALS", 0, len(inner))]
        if found:
            a, b = form.span(m.start(), m.end())
            out.append(Finding(found[0].entity, a, b))
    return out
