"""How :class:`processors.pii.PIIScanner` runs a presidio recognizer: behind a :class:`Gate`, as a Stage.

Each recognizer sits behind a gate: a digit count, a length, substrings and a stdlib ``trigger`` regex.
Every gate is a necessary condition for the recognizer to report something, never a heuristic, so skipping
it when a gate fails loses nothing. A recognizer whose matches never contain whitespace (``windowed``) is
run only on the whitespace-free runs that hold a trigger match, which keeps backtracking patterns
(presidio's email pattern is quadratic in the run length) off the rest of the text. A pattern recognizer
is scored here exactly as presidio's ``PatternRecognizer`` scores it, without its per-call overhead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import regex  # presidio's regex engine, a dependency of presidio
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors._rule_gates import Substrings, below, thresholds

__all__ = ["CASE_INSENSITIVE", "CASE_SENSITIVE", "Gate", "Selector", "Stage", "select"]

# presidio compiles patterns with the ``regex`` module, whose flag values equal the stdlib ones.
CASE_SENSITIVE = int(re.DOTALL | re.MULTILINE)
CASE_INSENSITIVE = int(re.DOTALL | re.MULTILINE | re.IGNORECASE)

_CONTEXT_BEFORE = 48
_CONTEXT_AFTER = 24
_CONTEXT_BOOST = 0.35  # presidio's LemmaContextAwareEnhancer defaults
_MIN_SCORE_WITH_CONTEXT = 0.4
_RUNS = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Gate:
    """One recognizer and the cheap, necessary conditions for it to match.

    Checked in order: the text has ``min_digits`` digits and ``min_len`` characters, one of ``needs`` occurs
    in it (in the lower-cased text when ``needs_lower``), ``trigger`` matches. ``exact``: the recognizer is a
    pattern recognizer evaluated by :class:`Stage` itself (its patterns compiled with ``re``, or with
    presidio's ``regex`` engine when ``re`` cannot compile them).
    ``may_validate``: ``validate_result`` can lift a match to the maximum score (when it cannot, a weak
    match without a context word is dropped before validation). ``windowed``: the pattern never matches
    whitespace, so presidio only needs the whitespace-free runs that hold a trigger match; ``narrow``:
    evaluate an ``exact`` recognizer on those runs only too (worth it for costly patterns).
    """

    trigger: re.Pattern[str]
    recognizer: EntityRecognizer
    exact: bool = True
    windowed: bool = False
    narrow: bool = False
    may_validate: bool = True
    needs: tuple[str, ...] = ()
    needs_lower: bool = False
    min_digits: int = 0
    min_len: int = 0


def select(stages: Sequence[Stage], chunk: str, lower: str) -> list[Stage]:
    """The stages whose cheapest necessary conditions hold: digit count, length, substrings, context words."""
    digits = _count_digits(chunk)
    n = len(chunk)
    out: list[Stage] = []
    for s in stages:
        if digits < s.min_digits or n < s.min_len:
            continue
        text = lower if s.needs_lower else chunk
        if (s.needle is not None and s.needle not in text) or (
            s.needles is not None and not s.needles.search(text)
        ):
            continue
        if s.needs_context is not None and not s.needs_context.search(lower):
            continue
        out.append(s)
    return out


class Selector:
    """:func:`select` compiled for one sequence of stages: the same stages, in the same order.

    Digit and length thresholds are bit masks; the substring gates of all stages are one trie regex over
    the chunk and one over its lower-cased form (:class:`processors._rule_gates.Substrings`); only the
    context words of weak-only stages are searched stage by stage.
    """

    __slots__ = ("_all", "_context", "_digits", "_lengths", "_lower", "_plain", "_stages")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self._stages = tuple(stages)
        self._all = (1 << len(self._stages)) - 1
        self._digits = thresholds([s.min_digits for s in self._stages])
        self._lengths = thresholds([s.min_len for s in self._stages])
        needs = [s.gate.needs if s.gate is not None else () for s in self._stages]
        self._plain = Substrings(
            [() if s.needs_lower else w for s, w in zip(self._stages, needs, strict=True)]
        )
        self._lower = Substrings(
            [w if s.needs_lower else () for s, w in zip(self._stages, needs, strict=True)]
        )
        self._context = tuple(
            (1 << i, s.needs_context) for i, s in enumerate(self._stages) if s.needs_context is not None
        )

    def __call__(self, chunk: str, lower: str) -> list[Stage]:
        """The stages whose gates hold on ``chunk`` (``lower``: ``chunk.lower()``), in their order."""
        mask = self._all
        mask = below(below(mask, self._digits, _count_digits(chunk)), self._lengths, len(chunk))
        if mask:
            mask = self._plain.open(chunk, mask)
        if mask:
            mask = self._lower.open(lower, mask)
        for bit, context in self._context:
            if mask & bit and context.search(lower) is None:
                mask &= ~bit
        out: list[Stage] = []
        stages = self._stages
        while mask:
            low = mask & -mask
            mask ^= low
            out.append(stages[low.bit_length() - 1])
        return out


def _count_digits(text: str) -> int:
    """Digits in ``text``: at least as many as ``\\d`` matches (``str.isdigit`` is a superset of it)."""
    if text.isascii():
        return len(text) - len(text.encode().translate(None, b"0123456789"))
    return sum(map(str.isdigit, text))


class Stage:
    """A recognizer as the scanner runs it: its gate, then the recognizer, then the score and context rule.

    A pattern recognizer (``exact``) is evaluated here, exactly as presidio's ``PatternRecognizer`` scores
    a match (same patterns and flags, same ``validate_result`` / ``invalidate_result``, same scores and
    de-duplication), without its per-call overhead; the others (IBAN, whose recognizer has its own
    analysis, and extra recognizers) go through presidio's ``analyze()``. :meth:`run_presidio` always goes
    through ``analyze()``: the tests check that both agree.
    """

    __slots__ = (
        "context",
        "entities",
        "exact",
        "gate",
        "min_digits",
        "min_len",
        "needle",
        "needles",
        "needs_context",
        "needs_lower",
        "pattern_recognizer",
        "recognizer",
        "threshold",
    )

    def __init__(
        self, recognizer: EntityRecognizer, entities: list[str], threshold: float, gate: Gate | None
    ) -> None:
        self.recognizer = recognizer
        self.entities = entities
        self.threshold = threshold
        self.gate = gate
        words = [w for w in (recognizer.context or []) if w]
        self.context = (
            re.compile(r"\b(?:" + "|".join(re.escape(w.lower()) for w in words) + r")") if words else None
        )
        exact = gate is not None and gate.exact and isinstance(recognizer, PatternRecognizer)
        self.pattern_recognizer = recognizer if exact and isinstance(recognizer, PatternRecognizer) else None
        self.exact = (
            _compile_patterns(self.pattern_recognizer) if self.pattern_recognizer is not None else None
        )
        self.min_digits = gate.min_digits if gate is not None else 0
        self.min_len = gate.min_len if gate is not None else 0
        needs = gate.needs if gate is not None else ()
        self.needle = needs[0] if len(needs) == 1 else None
        self.needles = re.compile("|".join(map(re.escape, needs))) if len(needs) > 1 else None
        self.needs_lower = gate.needs_lower if gate is not None else False
        # Only weak matches and no validation that could lift them: a context word must be in the text.
        weak = (
            gate is not None
            and not gate.may_validate
            and self.exact is not None
            and all(score < threshold for _, score in self.exact)
        )
        self.needs_context = (
            (re.compile("|".join(map(re.escape, (w.lower() for w in words))) or "(?!)")) if weak else None
        )

    def run(
        self, chunk: str, lower: str, artifacts: NlpArtifacts | None, covered: Sequence[tuple[int, int]] = ()
    ) -> list[tuple[str, int, int]]:
        """``(entity, start, end)`` of each match at or above the threshold (context applied).

        ``covered``: spans already found by a more specific recognizer; a match inside one of them is
        skipped where that can be known beforehand (its finding would merge into the covering one anyway).
        """
        g = self.gate
        if g is None:
            return self._analyze([(0, len(chunk))], chunk, lower, artifacts)
        if self.exact is not None and not g.narrow:
            return self._evaluate(chunk, lower, covered) if g.trigger.search(chunk) is not None else []
        if g.windowed:
            spans = [m.span() for m in g.trigger.finditer(chunk)]
            if not spans:
                return []
            windows = self._windows(chunk, spans)
        elif g.trigger.search(chunk) is None:
            return []
        else:
            windows = [(0, len(chunk))]
        if self.exact is not None:
            return self._evaluate(chunk, lower, covered, windows)
        return self._analyze(windows, chunk, lower, artifacts)

    def run_presidio(
        self, chunk: str, lower: str, artifacts: NlpArtifacts | None
    ) -> list[tuple[str, int, int]]:
        """Like :meth:`run`, with no gate and presidio's ``analyze()`` over the whole chunk."""
        return self._analyze([(0, len(chunk))], chunk, lower, artifacts)

    def _windows(self, chunk: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The whole chunk, or (``windowed``) only the whitespace-free runs holding a candidate."""
        if self.gate is None or not self.gate.windowed:
            return [(0, len(chunk))]
        return [m.span() for m in _RUNS.finditer(chunk) if any(m.start() <= a < m.end() for a, _ in spans)]

    def _keep(self, lower: str, start: int, end: int, score: float) -> bool:
        if score < self.threshold and self._context_near(lower, start, end):
            score = max(score + _CONTEXT_BOOST, _MIN_SCORE_WITH_CONTEXT)
        return score >= self.threshold

    def _context_near(self, lower: str, start: int, end: int) -> bool:
        if self.context is None:
            return False
        window = lower[max(0, start - _CONTEXT_BEFORE) : start] + " " + lower[end : end + _CONTEXT_AFTER]
        return self.context.search(window) is not None

    def _analyze(
        self, windows: list[tuple[int, int]], chunk: str, lower: str, artifacts: NlpArtifacts | None
    ) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        for base, stop in windows:
            text = chunk if (base, stop) == (0, len(chunk)) else chunk[base:stop]
            for r in self.recognizer.analyze(text, self.entities, artifacts) or ():  # type: ignore[arg-type]
                start, end = base + int(r.start), base + int(r.end)
                if (
                    r.entity_type in self.entities
                    and end > start
                    and self._keep(lower, start, end, float(r.score))
                ):
                    out.append((r.entity_type, start, end))
        return out

    def _evaluate(
        self,
        chunk: str,
        lower: str,
        covered: Sequence[tuple[int, int]],
        windows: Sequence[tuple[int, int]] | None = None,
    ) -> list[tuple[str, int, int]]:
        """presidio's ``PatternRecognizer`` scoring of each match of its patterns (in ``windows`` only:
        the whitespace-free runs a never-whitespace pattern can match in; the text around stays visible to
        lookarounds, so the matches are the same)."""
        assert self.exact is not None and self.gate is not None and self.pattern_recognizer is not None
        rec = self.pattern_recognizer
        entity = rec.supported_entities[0]
        may_validate = self.gate.may_validate
        scored: list[tuple[int, int, float]] = []
        matches = (
            [m for pattern, score in self.exact for m in _finditer(pattern, score, chunk, windows)]
            if windows
            else [(m, score) for pattern, score in self.exact for m in pattern.finditer(chunk)]
        )
        for m, base_score in matches:
            start, end = m.span()
            if start == end or (covered and any(a <= start and end <= b for a, b in covered)):
                continue
            if not may_validate and base_score < self.threshold and not self._context_near(lower, start, end):
                continue  # nothing can lift this match over the threshold: skip its validation
            text = m.group()
            score = base_score
            valid = rec.validate_result(text)
            if valid is not None:
                score = EntityRecognizer.MAX_SCORE if valid else EntityRecognizer.MIN_SCORE
            if rec.invalidate_result(text):
                score = EntityRecognizer.MIN_SCORE
            if score > EntityRecognizer.MIN_SCORE:
                scored.append((start, end, score))
        if len(scored) > 1:  # as presidio does: drop a match contained in a same-or-better one
            kept = EntityRecognizer.remove_duplicates(
                [RecognizerResult(entity, a, b, sc) for a, b, sc in scored]
            )
            scored = [(int(r.start), int(r.end), float(r.score)) for r in kept]
        return [(entity, a, b) for a, b, sc in scored if self._keep(lower, a, b, sc)]


def _finditer(
    pattern: Any, score: float, text: str, windows: Sequence[tuple[int, int]]
) -> list[tuple[Any, float]]:
    return [(m, score) for a, b in windows for m in pattern.finditer(text, a, b)]


def _compile_patterns(recognizer: PatternRecognizer) -> tuple[tuple[Any, float], ...] | None:
    """The recognizer's patterns compiled with ``re`` (same flags), else with presidio's own ``regex``."""
    patterns: list[Pattern] = getattr(recognizer, "patterns", None) or []
    if not patterns or recognizer.deny_list:
        return None
    flags = int(recognizer.global_regex_flags or 0)
    out: list[tuple[Any, float]] = []
    for p in patterns:
        try:
            out.append((re.compile(p.regex, flags), float(p.score)))
        except re.error:  # variable-width lookbehind and the like: presidio's engine compiles it
            out.append((regex.compile(p.regex, flags), float(p.score)))
    return tuple(out)
