"""The scanners as they were before their gates were compiled: a reference that must find the same spans.

``ReferenceSecretScanner`` checks each rule's gates one by one (a set of the chunk's chars, one substring
test per gate word) and runs the token heuristics and the encoded forms as they were written before;
``ReferencePIIScanner`` composes it, with presidio's gates checked stage by stage (``select``) and behind
their original trigger regexes. Kept
verbatim for ``test_scan_equivalence.py``, which compares them with the compiled scanners.
"""

from __future__ import annotations

import bisect
import dataclasses
import re

from processors._encoded_forms import (
    _MAX_CHARS,
    _MAX_DEPTH,
    _MAX_RUNS,
    _PAIR,
    _RUN,
    HEURISTIC_ENTITIES,
    Scan,
    _decoded,
    _Form,
    _joined,
    _mapped,
    _percent,
    _unicode,
    may_hide_encoded,
)
from processors._stages import select
from processors.pii import PIIScanner, _resolve
from processors.scanning import Finding
from processors.secret_scanner import (
    _ALL_CLASSES,
    _ASCII_LOWER,
    _AWS_SECRET,
    _COMPOUND,
    _HEX_COLOUR,
    _MARKER,
    _TIMESTAMP_WORD,
    _UUID,
    _WORD,
    SecretScanner,
    _aws_secret,
    _classes,
    _names,
    _suspicious_compound,
    _uuid_stub,
    _whole_token,
)
from processors.secret_scanner import _RUN as _TOKEN_RUN

__all__ = ["ReferencePIIScanner", "ReferenceSecretScanner", "reference_encoded_findings"]

_DIGITS = frozenset("0123456789")
# presidio gates' triggers as first written (the scanner's are the same languages, led by one char class).
OLD_TRIGGERS = {
    "UsSsnRecognizer": r"\b\d{3}[- .]?\d{2}[- .]?\d{4}\b|\b\d{5}-\d{4}\b|\b\d{3}-\d{6}\b",
    "IbanRecognizer": r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2}",
    "PhoneNumberRecognizer": r"(?:\+|\b00)[1-9]|\d{3}[ .\-)]\s?\d{3}[ .\-]\d{4}|0\d{1,5}\)?\s?[ .\-/]?\d{2}",
}


def _reference_transitions(word: str) -> int:
    n = 0
    prev = word[0].isdigit()
    for ch in word:
        cur = ch.isdigit()
        n += cur != prev
        prev = cur
    return n


def _reference_suspicious_word(word: str) -> bool:
    if word.isdigit() or word.isalpha():
        return False
    if _reference_transitions(word) >= 3 or _classes(word) == _ALL_CLASSES:
        return True
    return len(word) >= 12 and sum(ch.isdigit() for ch in word) >= 2


class ReferenceSecretScanner(SecretScanner):
    """``SecretScanner`` with the rule loop, token heuristics and encoded forms as first written."""

    __slots__ = ()

    def findings(self, text: str) -> list[Finding]:
        try:
            scan = self._must_scan(text)
            found = self._scan(text) if scan else []
            if scan and may_hide_encoded(text):
                found.extend(reference_encoded_findings(text, self.plain_findings))
        except Exception:
            return [Finding("UNSCANNABLE", 0, len(text))]
        return found

    def plain_findings(self, text: str) -> list[Finding]:
        return self._scan(text) if self._must_scan(text) else []

    def _scan_chunk(self, chunk: str, base: int, out: list[Finding]) -> None:
        size = len(chunk)
        present = set(chunk)
        digits = sum(map(chunk.count, "0123456789")) if not _DIGITS.isdisjoint(present) else 0
        lowered = chunk.lower()
        if len(lowered) != size:  # a few non-ASCII chars lower-case to two; keep offsets aligned
            lowered = chunk.translate(_ASCII_LOWER)
        for rule in self._rules:
            if rule.min_digits > digits or rule.min_len > size:
                continue
            if rule.chars and rule.chars.isdisjoint(present):
                continue
            if rule.needs and not any(x in chunk for x in rule.needs):
                continue
            if rule.words and not any(x in lowered for x in rule.words):
                continue
            check, search, target = rule.check, rule.pattern.search, lowered if rule.lower else chunk
            pos = 0
            while (m := search(target, pos)) is not None:
                if check is not None and not check(chunk, m):
                    pos = m.start() + 1  # a rejected match may hide a valid one that overlaps it
                    continue
                pos = max(m.end(), m.start() + 1)
                s, e = m.span((m.lastindex or 0) if rule.group < 0 else rule.group)
                if e > s and not (chunk[s] == "<" and _MARKER.fullmatch(chunk, s, e)):  # already masked
                    out.append(Finding(rule.entity, base + s, base + e))
        if size >= 8:
            self._tokens(chunk, base, out, digits)
        if not chunk.isascii():
            _names(chunk, base, out)

    def _tokens(self, chunk: str, base: int, out: list[Finding], digits: int) -> None:
        """Token heuristics, run by run (one regex pass over the chunk, the rest on short runs)."""
        for m in _TOKEN_RUN.finditer(chunk):
            run = m.group()
            offset = base + m.start()
            uuids = [u.span() for u in _UUID.finditer(run)] if "-" in run else []
            starts = [u[0] for u in uuids]
            if digits and not run.isalpha():
                for w in _WORD.finditer(run):
                    s, e = w.span()
                    inside = bisect.bisect_right(starts, s) - 1
                    if (inside >= 0 and e <= uuids[inside][1]) or not _reference_suspicious_word(w.group()):
                        continue
                    if _TIMESTAMP_WORD.fullmatch(w.group()):
                        continue
                    if _HEX_COLOUR.fullmatch(w.group()) and chunk[m.start() + s - 1 : m.start() + s] == "#":
                        continue
                    lo, hi = _whole_token(chunk, m.start() + s, m.start() + e)
                    out.append(Finding("SUSPICIOUS_TOKEN", base + lo, base + hi))
                if run.count("-") >= 2:
                    for c in _COMPOUND.finditer(_UUID.sub(_uuid_stub, run) if uuids else run):
                        if _suspicious_compound(c.group().split("-")):
                            lo, hi = _whole_token(chunk, m.start() + c.start(), m.start() + c.end())
                            out.append(Finding("SUSPICIOUS_TOKEN", base + lo, base + hi))
            if len(run) < self._min_token_len:
                continue
            if len(run) >= 32:
                for a in _AWS_SECRET.finditer(run):
                    if _aws_secret(chunk, m.start() + a.start(), a.group()):
                        out.append(Finding("AWS_SECRET_KEY", offset + a.start(), offset + a.end()))
            pos = 0
            for seg in run.split("/"):  # path segments are judged one by one
                if len(seg) >= self._min_token_len and self._high_entropy(
                    _UUID.sub("-", seg) if uuids else seg
                ):
                    lo, hi = _whole_token(chunk, m.start() + pos, m.start() + pos + len(seg))
                    out.append(Finding("HIGH_ENTROPY_TOKEN", base + lo, base + hi))
                pos += len(seg) + 1


def reference_encoded_findings(
    text: str, scan: Scan, *, credentials: bool = True, depth: int = 0
) -> list[Finding]:
    """``encoded_findings`` as it was: every stage tried, the joined form included."""
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
    joined = _joined(form)
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
            found = reference_encoded_findings(inner, scan, credentials=credentials, depth=depth + 1)
        if not found and credentials and _PAIR.fullmatch(inner.strip()):
            found = [Finding("URL_CREDENTIALS", 0, len(inner))]
        if found:
            a, b = form.span(m.start(), m.end())
            out.append(Finding(found[0].entity, a, b))
    return out


class ReferencePIIScanner(PIIScanner):
    """``PIIScanner`` over :class:`ReferenceSecretScanner`, its gates behind their original triggers."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(cache_size=0)
        self._secrets = ReferenceSecretScanner()
        gated = self._gated
        self._select = lambda chunk, lower: select(gated, chunk, lower)
        for stage in self._gated:
            old = OLD_TRIGGERS.get(stage.recognizer.name)
            if old is not None and stage.gate is not None:
                stage.gate = dataclasses.replace(stage.gate, trigger=re.compile(old))

    def findings(self, text: str) -> list[Finding]:
        try:
            out = self._plain(text)
            if may_hide_encoded(text):
                credentials = "URL_CREDENTIALS" in self._entities
                out.extend(reference_encoded_findings(text, self._plain, credentials=credentials))
        except Exception:
            return [Finding("SCAN_ERROR", 0, len(text))]
        return _resolve(out)
