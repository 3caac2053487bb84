"""The built-in scanner: compiled patterns and a few validators, no third-party dependency.

``SecretScanner`` finds credentials and personal data in free text and masks each span as ``<ENTITY>``.
Entity names follow presidio's where presidio has one (``EMAIL_ADDRESS``, ``CREDIT_CARD``, ``US_SSN``,
``PHONE_NUMBER``, ``IBAN_CODE``, ``IP_ADDRESS``); the rest are ours (``JWT``, ``AWS_ACCESS_KEY``,
``AWS_SECRET_KEY``, ``BEARER_TOKEN``, ``URL_CREDENTIALS``, ``PRIVATE_KEY``, ``API_KEY``, ``PASSWORD``,
``HIGH_ENTROPY_TOKEN``, ``SUSPICIOUS_TOKEN``, ``TRUNCATED``, ``UNSCANNABLE``).

It errs towards masking. Two rules over-mask free text on purpose:

- ``SUSPICIOUS_TOKEN`` flags words that mix letters and digits the way generated secrets do
  (``a8Xk2Lm9Qz``, ``hunter2-CANARY-p4ss-7731``), and dash-joined compounds that name a credential and
  carry a number (``db-pass-31``).
- It also flags capitalised words with non-ASCII letters (``Zoë``, ``Canarÿ-ßecret``). A pattern scanner
  cannot tell a name from any other word without NER; non-ASCII capitalised words are far more often
  names than not, so they are masked. ``PIIScanner`` (presidio) finds names properly.

A label widens a rule: any 9 digits right after ``ssn`` or ``social security number`` are a ``US_SSN``,
any phone-shaped digit string after ``phone``, ``tel``, ``mobile``, ``fax`` or ``sms to`` a ``PHONE_NUMBER``
(extension included), any 30-64 char base64 value of ``aws_secret_access_key`` an ``AWS_SECRET_KEY``. The
rules themselves live in ``processors._patterns``.

Hard negatives that stay readable: ISO timestamps, versions (``v2.10.0-rc1``), canonical UUIDs (they are
correlation ids), order numbers (``ORD-2024-001234``), short integers, HTTP paths, English sentences,
snake_case identifiers, hex colours.

Work is bounded: a clean ASCII message is rejected by a prefilter (no digit, ``@``, ``=``, ``:``, long
run or keyword: about 1-2 µs); the rules' gates are compiled (:mod:`processors._rule_gates`), so the
rules a message cannot match cost no Python per rule, and a message without any gate word one regex pass
for all of them; text is scanned in overlapping chunks; past ``max_scan_chars`` the rest is masked
wholesale as ``<TRUNCATED>``. ``findings`` never raises: an internal error masks the whole text as
``<UNSCANNABLE>``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Mapping
from types import MappingProxyType

from processors._encoded_forms import encoded_findings, may_hide_encoded
from processors._patterns import HEX, RULES, Rule
from processors._rule_gates import RuleGates
from processors.scanning import Finding, mask, utf8_safe

__all__ = ["SecretScanner"]

_NO_PATTERNS: Mapping[str, str] = MappingProxyType({})
_BUILTIN_GATES = RuleGates(RULES)
_ENTITY_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_CHUNK = 1 << 16
_OVERLAP = 1 << 10

# Prefilter: a clean ASCII message has none of these.
_TRIGGER_CHARS = re.compile(r"[0-9@=:%]")
_TRIGGER_RUN = re.compile(r"[^ ]{16}")
_TRIGGER_WORDS = (
    "passw",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "bearer",
    "authoriz",
    "xox",
    "---",
    "my name",
    "dear",
    "signed",
    "regards",
    "sincerely",
)

_SECRET_CONTEXT = re.compile(r"(?i)aws|secret")


def _aws_secret(text: str, start: int, s: str) -> bool:
    """A 32-64 char base64 run is an AWS secret key if it mixes cases and digits or follows aws/secret."""
    if _classes(s) == _ALL_CLASSES and s[0] != "/" and "//" not in s:
        return True
    return _SECRET_CONTEXT.search(text, max(0, start - 64), start) is not None


_LOWER, _UPPER, _DIGIT = 1, 2, 4
_ALL_CLASSES = _LOWER | _UPPER | _DIGIT


def _classes(s: str) -> int:
    """Which of lower case, upper case and digits ``s`` holds, as a bit mask (C-speed on long runs)."""
    return (
        (_LOWER if s.upper() != s else 0)
        | (_UPPER if s.lower() != s else 0)
        | (_DIGIT if any(map(str.isdigit, s)) else 0)
    )


def _entropy(s: str, floor: float) -> float:
    """Shannon entropy of ``s`` in bits per char (0.0 when it cannot reach ``floor``)."""
    distinct = set(s)
    if math.log2(len(distinct)) < floor:  # the entropy is at most log2(distinct chars)
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in map(s.count, distinct))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_PEM_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]{0,48}PRIVATE KEY(?: BLOCK)?-{0,5}")
_PEM_END = re.compile(r"-----END[A-Z0-9 ]{0,48}(?:-----|$)")
_PEM_MAX = 1 << 16

# Token heuristics.
_UUID = re.compile(rf"{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}")
_WORD = re.compile(r"[A-Za-z0-9]{8,}")
_RUN = re.compile(r"[A-Za-z0-9+/=_-]{8,}")
_COMPOUND = re.compile(r"[A-Za-z0-9](?<![A-Za-z0-9].)[A-Za-z0-9]*(?:-[A-Za-z0-9]+){2,}")
_AWS_SECRET = re.compile(r"[A-Za-z0-9+/](?<![A-Za-z0-9+/].)[A-Za-z0-9+/]{31,63}(?![A-Za-z0-9+/=])")
_TIMESTAMP_WORD = re.compile(r"[0-9]{8}T[0-9]{4,6}Z?")
_HEX_COLOUR = re.compile(rf"{HEX}{{3,8}}")
_LEET = re.compile(r"[A-Za-z][0-9]+[A-Za-z]")
_CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "key",
        "apikey",
        "bearer",
        "cred",
        "creds",
        "credential",
        "auth",
        "session",
        "sig",
        "otp",
        "pin",
    }
)
_LETTERS = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_MARKER = re.compile(r"<[A-Z][A-Z0-9_]*>")  # what mask() writes: redacting twice changes nothing
# A flagged word takes the rest of its token with it: ``Tr0ub4dor&3-horse!`` is one secret, not a
# flagged word and a readable tail. A token stops at whitespace, quotes, brackets and URL structure;
# ``&``, ``;`` and ``,`` end it only where a ``key=`` pair follows.
_TOKEN_TAIL = re.compile(r"(?:[^\s\"'<>()\[\]{}/?#=:@&;,]|[&;,](?![A-Za-z_][A-Za-z0-9_.-]{0,64}[=:]))*")
_TOKEN_STOP = frozenset(" \t\r\n\f\v\"'<>()[]{}/?#=:@&;,")
_TOKEN_MAX = 256
_CLEAN_CACHE_SIZE = 4096
_CLEAN_CACHE_MAX_LEN = 512


def base64ish_letters(token: str) -> bool:
    """Return whether a run of letters flips case as often as base64 does (camelCase flips far less)."""
    flips = sum(a.isupper() != b.isupper() for a, b in itertools.pairwise(token))
    return flips * 3 >= len(token)


def _uuid_stub(m: re.Match[str]) -> str:
    return "0"


_NOT_DIGITS = str.maketrans("", "", "0123456789")


def _count_digits(text: str) -> int:
    """The ASCII digits in ``text`` (what the rules' ``[0-9]`` match)."""
    if text.isascii():
        return len(text) - len(text.encode().translate(None, b"0123456789"))
    return len(text) - len(text.translate(_NOT_DIGITS))


_CLASS_CHANGE = re.compile(r"[0-9](?=[A-Za-z])|[A-Za-z](?=[0-9])")


def _transitions(word: str) -> int:
    """Count the letter/digit class changes in an alphanumeric word."""
    return len(_CLASS_CHANGE.findall(word))


def _suspicious_word(word: str) -> bool:
    """Return whether an alphanumeric word of 8+ chars looks generated (mixes letters and digits)."""
    if word.isdigit() or word.isalpha():
        return False
    if _transitions(word) >= 3 or _classes(word) == _ALL_CLASSES:
        return True
    return len(word) >= 12 and _count_digits(word) >= 2


def _suspicious_compound(groups: list[str]) -> bool:
    """Return whether dash-joined groups look like a credential (``p4ss-x9-...``, ``db-pass-31``)."""
    mixed = [g for g in groups if not g.isdigit() and not g.isalpha()]
    if len(mixed) >= 2 or any(_LEET.search(g) for g in mixed):
        return True
    return bool(mixed or any(g.isdigit() for g in groups)) and any(
        g.lower() in _CREDENTIAL_WORDS for g in groups
    )


def _triggered(text: str) -> bool:
    """Prefilter for ASCII text: whether any rule could match at all."""
    if _TRIGGER_CHARS.search(text) or _TRIGGER_RUN.search(text):
        return True
    lowered = text.lower()
    return any(word in lowered for word in _TRIGGER_WORDS)


def _whole_token(chunk: str, start: int, end: int) -> tuple[int, int]:
    """Widen a flagged span to the token around it (at most ``_TOKEN_MAX`` chars each way)."""
    tail = _TOKEN_TAIL.match(chunk, end, min(len(chunk), end + _TOKEN_MAX))
    stop = tail.end() if tail is not None else end
    floor = max(0, start - _TOKEN_MAX)
    while start > floor and chunk[start - 1] not in _TOKEN_STOP and not chunk[start - 1].isspace():
        start -= 1
    return start, stop


def _private_keys(text: str, end: int, out: list[Finding]) -> None:
    """PEM private keys, on the whole text (a key can be longer than the chunk overlap)."""
    pos = 0
    while (m := _PEM_BEGIN.search(text, pos, end)) is not None:
        close = _PEM_END.search(text, m.end(), min(end, m.end() + _PEM_MAX))
        stop = close.end() if close is not None else end  # unterminated: mask to the end
        out.append(Finding("PRIVATE_KEY", m.start(), stop))
        pos = stop


def _names(chunk: str, base: int, out: list[Finding]) -> None:
    """Capitalised words with non-ASCII letters: a deliberate over-mask (see the module docstring)."""
    for m in _LETTERS.finditer(chunk):
        word = m.group()
        if word[0].isupper() and not word.isascii() and len(word) >= 2:
            out.append(Finding("SUSPICIOUS_TOKEN", base + m.start(), base + m.end()))


class SecretScanner:
    """Pattern scanner for secrets and personal data; implements :class:`processors.Scanner`.

    Args:
        extra_patterns: more rules, ``{"ENTITY_NAME": "regex"}``; the whole match is masked.
        entropy_threshold: Shannon entropy (bits per char) above which a letters-and-digits token of
            ``min_token_len`` or more chars is a ``HIGH_ENTROPY_TOKEN``.
        min_token_len: the shortest token the entropy rule considers.
        max_scan_chars: text beyond this many chars is not scanned but masked as ``<TRUNCATED>``.

    Raises:
        ValueError: an entity name is not ``UPPER_SNAKE``, a pattern does not compile, or a bound is out
            of range.
    """

    __slots__ = (
        "_clean",
        "_entropy_threshold",
        "_gates",
        "_max_scan",
        "_min_token_len",
        "_prefilter",
        "_rules",
    )

    def __init__(
        self,
        *,
        extra_patterns: Mapping[str, str] = _NO_PATTERNS,
        entropy_threshold: float = 4.0,
        min_token_len: int = 16,
        max_scan_chars: int = 1 << 20,
    ) -> None:
        if not 8 <= min_token_len <= 1024:
            raise ValueError("min_token_len must be between 8 and 1024")
        if not 0.0 < entropy_threshold <= 8.0:
            raise ValueError("entropy_threshold must be in (0, 8]")
        if max_scan_chars < _CHUNK:
            raise ValueError(f"max_scan_chars must be at least {_CHUNK}")
        extra: list[Rule] = []
        for entity, pattern in extra_patterns.items():
            if not _ENTITY_NAME.fullmatch(entity):
                raise ValueError("entity names are UPPER_SNAKE identifiers of at most 64 chars")
            try:
                extra.append(Rule(entity, re.compile(pattern)))
            except re.error as exc:
                raise ValueError(f"the pattern for {entity} does not compile: {exc.msg}") from exc
        self._rules = RULES + tuple(extra)
        self._gates = RuleGates(self._rules) if extra else _BUILTIN_GATES
        self._prefilter = not extra  # the prefilter knows the built-in rules only
        self._entropy_threshold = entropy_threshold
        self._min_token_len = min_token_len
        self._max_scan = max_scan_chars
        # Texts known to be clean (event names repeat): a hit costs one dict lookup. Clean texts only, so
        # the cache never holds a secret; cleared when full.
        self._clean: dict[str, None] = {}

    def findings(self, text: str) -> list[Finding]:
        """Return the sensitive spans of ``text``, in its own form and in its encoded forms.

        Encoded forms (percent-escapes, zero-width characters, fullwidth letters, split digits, base64
        and hex runs: see :mod:`processors._encoded_forms`) are looked at only when a cheap pre-check
        says ``text`` has one; a finding there masks the original chars it came from.

        Args:
            text: any str, surrogates included.

        Returns:
            The findings, possibly overlapping, in no particular order.
        """
        if text in self._clean:
            return []
        try:
            scan = self._must_scan(text)
            found = self._scan(text) if scan else []
            if scan and may_hide_encoded(text):
                found.extend(encoded_findings(text, self.plain_findings))
        except Exception:  # fail closed: never raise, never leak
            return [Finding("UNSCANNABLE", 0, len(text))]
        if not found and len(text) <= _CLEAN_CACHE_MAX_LEN:
            if len(self._clean) >= _CLEAN_CACHE_SIZE:
                self._clean.clear()
            self._clean[text] = None
        return found

    def plain_findings(self, text: str) -> list[Finding]:
        """The findings in ``text`` as it is written (no decoded forms); for composing scanners.

        Args:
            text: any str.

        Returns:
            The findings, possibly overlapping, in no particular order. May raise on an internal error:
            callers fail closed (:meth:`findings` does).
        """
        if text in self._clean:
            return []
        return self._scan(text) if self._must_scan(text) else []

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``<ENTITY>``.

        Args:
            text: any str, surrogates included.

        Returns:
            The masked text (``text`` itself when it is clean), lone surrogates replaced so that it
            encodes to UTF-8.
        """
        found = self.findings(text)
        return utf8_safe(mask(text, found) if found else text)

    def _must_scan(self, text: str) -> bool:
        """Whether any rule could match: long, non-ASCII, custom-ruled or prefilter-triggered text."""
        return len(text) > self._max_scan or not (self._prefilter and text.isascii()) or _triggered(text)

    def _scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        end = len(text)
        if end > self._max_scan:
            # Cut at a whitespace so that no token straddles the cut half-scanned.
            cut = self._max_scan
            space = max(text.rfind(" ", cut - _OVERLAP, cut), text.rfind("\n", cut - _OVERLAP, cut))
            end = space if space > 0 else cut - _OVERLAP
            out.append(Finding("TRUNCATED", end, len(text)))
        if "-----BEGIN" in text:
            _private_keys(text, end, out)
        start = 0
        while True:
            stop = min(start + _CHUNK, end)
            self._scan_chunk(text[start:stop], start, out)
            if stop >= end:
                return out
            start = stop - _OVERLAP

    def _scan_chunk(self, chunk: str, base: int, out: list[Finding]) -> None:
        size = len(chunk)
        digits = _count_digits(chunk)
        lowered = chunk.lower()
        if len(lowered) != size:  # a few non-ASCII chars lower-case to two; keep offsets aligned
            lowered = chunk.translate(_ASCII_LOWER)
        rules = self._rules
        opened = self._gates.open(chunk, lowered, digits)
        while opened:  # the rules whose gates hold, in rule order
            low = opened & -opened
            opened ^= low
            rule = rules[low.bit_length() - 1]
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
        min_len = self._min_token_len
        for m in _RUN.finditer(chunk):
            run = m.group()
            if len(run) < min_len and run.isalpha():
                continue  # a short word: no rule below applies to it
            offset = base + m.start()
            uuids = [u.span() for u in _UUID.finditer(run)] if "-" in run else []
            starts = [u[0] for u in uuids]
            if digits and not run.isalpha():
                for w in _WORD.finditer(run):
                    s, e = w.span()
                    inside = bisect.bisect_right(starts, s) - 1
                    if (inside >= 0 and e <= uuids[inside][1]) or not _suspicious_word(w.group()):
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
            if len(run) < min_len:
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

    def _high_entropy(self, token: str) -> bool:
        """Return whether a token (UUIDs cut out) looks random."""
        if len(token) < self._min_token_len:
            return False
        classes = _classes(token)
        if classes == _ALL_CLASSES:
            return True
        if not classes & _DIGIT:
            return classes == _LOWER | _UPPER and token.isalpha() and base64ish_letters(token)
        if classes == _DIGIT:
            return False
        return _entropy(token, self._entropy_threshold) >= self._entropy_threshold
