"""The gates of ``SecretScanner``'s rules, compiled: which rules can match a chunk, as one bit mask.

A rule runs on a chunk only when all its gates hold (:class:`processors._patterns.Rule`: digits, length,
chars, substrings). Checked rule by rule, that is a Python loop over every rule and every gate word for
every message. Compiled here, the substring gates of all rules are one regex over the chunk (``needs``)
and one over its lower-cased form (``words``), each searched once per occurrence of a gate word, and the
other gates a few comparisons; a message with no gate word costs one regex pass per form.

Exact, not a heuristic: bit ``i`` of :meth:`RuleGates.open` is set if and only if every gate of rule ``i``
holds, so skipping a rule whose bit is clear loses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from processors._patterns import Rule

__all__ = ["RuleGates", "Substrings", "below", "thresholds"]


class Substrings:
    """Which rules have one of their gate words in a text, for all rules in one alternation.

    The alternation is a trie (``a(?:ll(?:ee)?|v)``: one char test per branch, not one per word) whose
    optional tails are greedy, so a match at a position names the longest gate word that starts there;
    every other gate word starting there is a prefix of it, and :attr:`opens` maps each word to the rules
    of all its prefixes. Searching again one char after each match start visits every
    position where a gate word starts, so the result equals ``any(w in text for w in words)`` per rule.
    """

    __slots__ = ("free", "opens", "pattern")

    def __init__(self, gates: Sequence[tuple[str, ...]]) -> None:
        bits_of: dict[str, int] = {}
        self.free = 0  # rules without a gate of this kind (or with an empty word): always open
        for i, words in enumerate(gates):
            if not words or "" in words:
                self.free |= 1 << i
                continue
            for w in words:
                bits_of[w] = bits_of.get(w, 0) | 1 << i
        self.opens: dict[str, int] = {}
        for w in bits_of:
            self.opens[w] = self.free
            for v, bits in bits_of.items():
                if w.startswith(v):
                    self.opens[w] |= bits
        self.pattern = re.compile(_trie(sorted(bits_of))) if bits_of else None

    def open(self, text: str, wanted: int) -> int:
        """The rules of ``wanted`` whose gate holds in ``text`` (one of its words occurs), as a bit mask."""
        mask = self.free & wanted
        if self.pattern is None:
            return mask
        search, opens = self.pattern.search, self.opens
        pos = 0
        while mask != wanted and (m := search(text, pos)) is not None:
            mask |= opens[m.group()] & wanted
            pos = m.start() + 1
        return mask


class RuleGates:
    """All gates of a rule list, as one function from a chunk to the bit mask of the rules to run."""

    __slots__ = ("_chars", "_digits", "_lengths", "_needs", "_no_chars", "_words")

    def __init__(self, rules: Sequence[Rule]) -> None:
        chars: dict[str, int] = {}
        self._no_chars = 0
        for i, rule in enumerate(rules):
            if not rule.chars:
                self._no_chars |= 1 << i
            for c in rule.chars:
                chars[c] = chars.get(c, 0) | 1 << i
        self._chars = tuple(sorted(chars.items()))
        self._digits = thresholds([rule.min_digits for rule in rules])
        self._lengths = thresholds([rule.min_len for rule in rules])
        self._needs = Substrings([rule.needs for rule in rules])
        self._words = Substrings([rule.words for rule in rules])

    def open(self, chunk: str, lowered: str, digits: int) -> int:
        """Bit ``i`` set: every gate of rule ``i`` holds on ``chunk`` (``lowered``: its lower-cased form,
        ``digits``: its count of ASCII digits)."""
        mask = self._no_chars
        for c, bits in self._chars:
            if c in chunk:
                mask |= bits
        mask = below(below(mask, self._digits, digits), self._lengths, len(chunk))
        if mask:
            mask = self._needs.open(chunk, mask)
        if mask:
            mask = self._words.open(lowered, mask)
        return mask


def _trie(words: Sequence[str]) -> str:
    """A regex matching exactly ``words``, longest first at a position, with common prefixes factored."""
    heads: dict[str, list[str]] = {}
    for w in words:
        heads.setdefault(w[0], []).append(w[1:])
    alts = []
    for head, tails in sorted(heads.items()):
        rest = [t for t in tails if t]
        body = _trie(rest) if rest else ""
        if rest and len(rest) < len(tails):  # the head alone is a word too: the longer ones optional
            body = f"(?:{body})?"
        alts.append(re.escape(head) + body)
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def thresholds(values: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(threshold, rules needing at least it)``, highest first; a chunk below one closes those rules and
    every rule of a higher threshold (already cleared by then)."""
    out: dict[int, int] = {}
    for i, least in enumerate(values):
        if least > 0:
            out[least] = out.get(least, 0) | 1 << i
    return tuple(sorted(out.items(), reverse=True))


def below(mask: int, steps: tuple[tuple[int, int], ...], value: int) -> int:
    """``mask`` without the rules whose threshold (:func:`thresholds`, highest first) ``value`` is under."""
    for least, bits in steps:
        if value >= least:
            break
        mask &= ~bits
    return mask
