"""The scanner protocol: find secrets and personal data in text, and mask them.

Two backends implement it: the built-in, regex-based :class:`processors.SecretScanner` (fast, always
available) and :class:`processors.PIIScanner` (presidio-analyzer, optional). Everything that redacts free
text (event messages, exception messages, allowlisted values) takes a ``Scanner``, never a concrete class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Finding", "Scanner", "mask"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span: ``text[start:end]`` is an ``entity`` (``"EMAIL_ADDRESS"``, ``"JWT"``, ...)."""

    entity: str
    start: int
    end: int


@runtime_checkable
class Scanner(Protocol):
    """Finds sensitive spans in text. Implementations must be thread-safe and never raise on any ``str``."""

    def findings(self, text: str) -> list[Finding]:
        """Return the sensitive spans of ``text`` (possibly overlapping, in any order)."""
        ...

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``<ENTITY>``."""
        ...


def mask(text: str, findings: Iterable[Finding]) -> str:
    """Replace each finding's span with ``<ENTITY>``; overlapping spans merge (the earliest names it)."""
    spans = sorted(findings, key=lambda f: (f.start, -f.end))
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    cur: Finding | None = None
    cur_end = -1
    for f in spans:
        if cur is not None and f.start < cur_end:
            cur_end = max(cur_end, f.end)
            continue
        if cur is not None:
            out.append(f"<{cur.entity}>")
            pos = cur_end
        out.append(text[pos : f.start])
        cur, cur_end = f, f.end
    if cur is not None:
        out.append(f"<{cur.entity}>")
    out.append(text[max(pos, cur_end) :])
    return "".join(out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """Return ``text`` with each lone surrogate replaced by U+FFFD, so that it encodes to UTF-8.

    Args:
        text: any str (``"\\ud800"`` included).

    Returns:
        ``text`` itself when it holds no surrogate (the common case costs one ``isascii`` call).
    """
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)
