"""The presidio side of :class:`processors.pii.PIIScanner`: recognizers, each behind cheap gates.

Imported only when a ``PIIScanner`` is built (presidio is an optional extra). Each recognizer sits behind a
:class:`Gate`: a digit count, a length, substrings and a stdlib ``trigger`` regex. Every gate is a necessary
condition for the recognizer to report something, never a heuristic, so skipping it when a gate fails loses
nothing. A recognizer whose matches never contain whitespace (``windowed``) is run only on the
whitespace-free runs that hold a trigger match, which keeps backtracking patterns (presidio's email pattern
is quadratic in the run length) off the rest of the text.

Built-in presidio recognizers and patterns used as they are: ``CreditCardRecognizer`` (Luhn),
``UsSsnRecognizer``, ``IbanRecognizer`` (checksum), ``IpRecognizer``. Adapted: ``EmailRecognizer`` validates
the domain against the public-suffix snapshot bundled with tldextract, through a private extractor that
never fetches; ``IpRecognizer`` drops unspecified and loopback addresses; the card recognizer also gets the
Mastercard 2221-2720 range. Phone numbers are found by :class:`PhoneNumberRecognizer` (formats for the
regions presidio's ``PhoneRecognizer`` covers, each candidate validated with ``phonenumbers``), because
``PhoneRecognizer`` runs libphonenumber's matcher over the whole text once per region (~0.7 ms a message).
Custom recognizers cover secrets: JWTs, AWS keys, PEM private keys, bearer tokens, credentials in URLs,
GitHub / Slack / Stripe / Google tokens, ``password=...`` assignments and high-entropy tokens.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
import regex  # presidio's regex engine, a dependency of presidio
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NoOpNlpEngine, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)

__all__ = [
    "NER_ENTITIES",
    "Gate",
    "PhoneNumberRecognizer",
    "Stage",
    "build_gates",
    "build_ner",
    "empty_artifacts",
    "select",
]

# presidio compiles patterns with the ``regex`` module, whose flag values equal the stdlib ones.
_CASE_SENSITIVE = int(re.DOTALL | re.MULTILINE)
_CASE_INSENSITIVE = int(re.DOTALL | re.MULTILINE | re.IGNORECASE)

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
        spans = [m.span() for m in g.trigger.finditer(chunk)]
        if not spans:
            return []
        windows = self._windows(chunk, spans)
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


class _OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, validating the domain with tldextract's bundled snapshot only."""

    def __init__(self) -> None:
        super().__init__()
        # cache_dir=None: no disk cache; suffix_list_urls=(): no HTTP fetch; the bundled snapshot is used.
        self._tld = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        self._tld("warm.example.com")  # parse the snapshot now, not on the first log line

    def validate_result(self, pattern_text: str) -> bool:
        return self._tld(pattern_text).fqdn != ""


_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
_EXT = r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?"
_SEP = r"[ .\-]"
_EXT_TAIL = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}$")


class PhoneNumberRecognizer(PatternRecognizer):
    """Formatted phone numbers: international, North American and trunk-prefixed (``0...``) national.

    Each candidate is validated with ``phonenumbers``: as an international number when it carries ``+`` or
    ``00``, else in each of presidio's default regions in turn (US, GB, DE, FR, IL, IN, CA, BR).
    """

    PATTERNS: Sequence[Pattern] = (
        Pattern(
            "phone (international)",
            r"(?<![\w+])(?:\+|\b00)[1-9]\d{0,2}" + _SEP + r"?(?:\(0\)" + _SEP + r"?)?\(?\d{1,5}\)?"
            r"(?:" + _SEP + r"?\d{1,5}){1,5}" + _EXT + r"(?![\w\-])",
            0.4,
        ),
        Pattern(
            "phone (north american)",
            r"(?<![\w+\-.])(?:1"
            + _SEP
            + r"?)?(?:\(\d{3}\)\s?|\d{3}"
            + _SEP
            + r")\d{3}"
            + _SEP
            + r"\d{4}"
            + _EXT
            + r"(?![\w\-])",
            0.4,
        ),
        Pattern(
            "phone (trunk prefix)",
            r"(?<![\w+\-.])(?:\(0\d{1,5}\)\s?|0\d{1,5}[ .\-/])\d{2,8}(?:[ .\-/]\d{2,8}){0,3}"
            + _EXT
            + r"(?![\w\-])",
            0.4,
        ),
    )
    CONTEXT: Sequence[str] = (
        "phone", "telephone", "tel", "cell", "mobile", "call", "fax", "sms", "msisdn", "whatsapp", "contact",
    )  # fmt: skip

    def __init__(
        self, *, patterns: Sequence[Pattern] | None = None, name: str = "PhoneNumberRecognizer"
    ) -> None:
        super().__init__(
            supported_entity="PHONE_NUMBER",
            name=name,
            patterns=list(patterns or self.PATTERNS),
            context=list(self.CONTEXT),
            global_regex_flags=_CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        return _phone_valid(pattern_text)


class _BarePhoneRecognizer(PhoneNumberRecognizer):
    """7 to 15 bare digits: a valid number in a supported region is kept only with a context word nearby."""

    def __init__(self) -> None:
        super().__init__(
            patterns=[Pattern("phone (bare digits)", r"(?<![\w+\-.])\+?\d{7,15}(?![\w\-])", 0.1)],
            name="BarePhoneNumberRecognizer",
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        # None keeps the weak score (context must lift it over the threshold); False drops the match.
        return None if _phone_valid(pattern_text) else False


_PHONE_TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip", "pager",
    "uan", "voicemail",
)  # fmt: skip
_PHONE_PREFIXES = ("0", "1", "00", "011", "90")


def _region_pattern(regions: Iterable[str]) -> re.Pattern[str]:
    """Every national number libphonenumber accepts as a known type in ``regions``, as one regex."""
    parts: list[str] = []
    for region in regions:
        md = phonenumbers.PhoneMetadata.metadata_for_region(region)
        for kind in _PHONE_TYPES:
            desc = getattr(md, kind, None) if md is not None else None
            if desc is not None and desc.national_number_pattern:
                parts.append(f"(?:{desc.national_number_pattern})")
    return re.compile("|".join(parts))


# Per default region, the numbers it can validate (US also covers the other +1 regions, as parse() does).
_PHONE_KNOWN: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (r, _region_pattern(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1] if r == "US" else (r,)))
    for r in _PHONE_REGIONS
)
_PHONE_CODES = tuple(str(phonenumbers.country_code_for_region(r)) for r in _PHONE_REGIONS)


def _national_variants(digits: str) -> set[str]:
    """What parse() may keep of a dialled number: trunk, international and carrier prefixes, country codes."""
    out = {digits}
    out.update(digits[len(p) :] for p in _PHONE_PREFIXES if digits.startswith(p))
    out.update(v[len(cc) :] for v in list(out) for cc in _PHONE_CODES if v.startswith(cc))
    if digits.startswith(("0", "90")):  # Brazil: carrier selection code before the number
        out.update((digits[-10:], digits[-11:]))
    out.discard("")
    return out


_NANP_TRUNK = re.compile(r"1[ .\-]?(?=\(?\d{3})")


def _phone_valid(pattern_text: str) -> bool:
    """Valid in one of presidio's default regions (``+``/``00`` numbers: in their own country).

    Written forms are tried as libphonenumber's matcher would find them: ``+49 (0)30...`` also as
    ``+49 30...`` and as the national ``(0)30...``; ``1 (415) ...`` also without the trunk ``1``.
    """
    number = _EXT_TAIL.sub("", pattern_text)
    if not 7 <= sum(c.isdigit() for c in number) <= 15:
        return False
    forms = [number]
    if "(0)" in number:  # "+44 (0)20 ...": the (0) is dropped when dialled from abroad, dialled at home
        forms = [number.replace("(0)", "", 1), number[number.index("(0)") :], number]
    if _NANP_TRUNK.match(number):
        forms.append(_NANP_TRUNK.sub("", number, count=1))
    return any(_valid_form(f) for f in forms)


def _valid_form(number: str) -> bool:
    """Valid as written. The plain national reading is checked first without ``parse()``; otherwise a
    pre-check against libphonenumber's own number patterns orders the regions to try (and skips ``parse()``
    when no region knows the number at all), so a valid number costs one parse at most.
    """
    if number.startswith(("+", "00")):
        return _valid_phone("+" + number[2:] if number.startswith("00") else number, None)
    if _valid_national(number):
        return True
    variants = _national_variants("".join(c for c in number if c.isdigit()))
    likely = [r for r, known in _PHONE_KNOWN if any(known.fullmatch(v) for v in variants)]
    if not likely:
        return False
    return any(_valid_phone(number, r) for r in (*likely, *(r for r in _PHONE_REGIONS if r not in likely)))


_PHONE_NATIONAL = tuple(
    (
        phonenumbers.country_code_for_region(r),
        getattr(phonenumbers.PhoneMetadata.metadata_for_region(r), "national_prefix", None) or "",
        _region_pattern((r,)),
    )
    for r in _PHONE_REGIONS
)


def _valid_national(number: str) -> bool:
    """The number read as national in a region (trunk prefix dropped) is valid there: what ``parse()``
    concludes for a plain national number, without its cost. False means "not shown", never "invalid".
    """
    if "(0)" in number:
        return False
    digits = "".join(c for c in number if c.isdigit())
    for code, prefix, known in _PHONE_NATIONAL:
        nsn = digits[len(prefix) :] if prefix and digits.startswith(prefix) else digits
        if not nsn or nsn[0] == "0" or not known.fullmatch(nsn):
            continue
        if phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn))
        ):
            return True
    return False


def _valid_phone(text: str, region: str | None) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(text, region)))
    except phonenumbers.NumberParseException:
        return False


# presidio's card pattern misses the Mastercard 2221-2720 range; validated with the same Luhn check.
_MASTERCARD_2_SERIES = Pattern(
    "card (mastercard 2-series)",
    r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b",
    0.3,
)


class _IpRecognizer(IpRecognizer):
    """presidio's IP recognizer; unspecified and loopback addresses (``0.0.0.0``, ``::1``) are not data."""

    def invalidate_result(self, pattern_text: str) -> bool:
        try:
            ip = ipaddress.ip_interface(pattern_text).ip
        except ValueError:
            return True
        return ip.is_unspecified or ip.is_loopback


class _EntropyRecognizer(PatternRecognizer):
    """Long tokens mixing upper case, lower case and digits with high Shannon entropy.

    UUIDs, hex digests and version strings lack upper case; words and slugs lack entropy.
    """

    def __init__(self) -> None:
        super().__init__(
            supported_entity="HIGH_ENTROPY_TOKEN",
            name="HighEntropyTokenRecognizer",
            patterns=[Pattern("token", r"(?<![\w+/\-])[A-Za-z0-9_+/\-]{20,512}={0,2}(?![\w+/=\-])", 0.5)],
            context=["token", "secret", "key", "signature", "sig", "credential"],
            global_regex_flags=_CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool:
        return _looks_random(pattern_text)


_DIGIT = re.compile(r"\d")


def _looks_random(tok: str) -> bool:
    if tok.lower() == tok or tok.upper() == tok or _DIGIT.search(tok) is None:
        return False
    n = len(tok)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(tok).values())
    return entropy >= 3.5


class _AwsSecretRecognizer(PatternRecognizer):
    """40-character base64 runs (the AWS secret access key form), mixed case and digits required."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="AWS_SECRET_KEY",
            name="AwsSecretKeyRecognizer",
            patterns=[Pattern("aws secret", r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])", 0.5)],
            context=["aws", "secret", "secret_access_key", "aws_secret_access_key"],
            global_regex_flags=_CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool:
        return _looks_random(pattern_text)


# Names of fields and query parameters that carry secrets (patterns, not secrets).
_SECRET_KEY_NAMES = r"(?:password|passwd|passphrase|pass|pwd|secret|client_secret|app_secret)"  # noqa: S105
# the lookbehind before a password value: ``password=``, ``"passwd": ``, ``pwd is``...
_PASSWORD_AFTER = r"(?<=\b" + _SECRET_KEY_NAMES + r"[\"']?\s{0,3}(?:[:=]|\bis\b)\s{0,3}"
_TOKEN_PARAMS = (
    r"(?:access_token|refresh_token|id_token|token|api_key|apikey|api-key|key|sig|signature|secret|"  # noqa: S105
    r"password|passwd|pwd|auth|code|client_secret|x-amz-signature|x-goog-signature)"
)


def _pattern(
    entity: str,
    name: str,
    regex: str,
    score: float,
    *,
    flags: int = _CASE_SENSITIVE,
    context: Iterable[str] = (),
) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=[Pattern(name, regex, score)],
        context=list(context),
        global_regex_flags=flags,
    )


def _gate(trigger: str, recognizer: EntityRecognizer, **kw: Any) -> Gate:
    return Gate(re.compile(trigger), recognizer, **kw)


_SSN_MEDIUM = [p for p in UsSsnRecognizer.PATTERNS if p.score >= 0.5]
_SSN_WEAK = [p for p in UsSsnRecognizer.PATTERNS if p.score < 0.5]
_IPV4 = [p for p in IpRecognizer.PATTERNS if p.name == "IPv4"]
_IPV6 = [p for p in IpRecognizer.PATTERNS if p.name != "IPv4"]


def build_gates() -> list[Gate]:
    """Every recognizer of the built-in set, each behind its gate."""
    for region in _PHONE_REGIONS:  # load libphonenumber's metadata now, not on the first log line
        _valid_phone("0", region)
    return [
        # --- personal data (presidio's recognizers and patterns) ---
        _gate(
            r"[\w!#$%&'*+\-/=?^`{|}~.]@\w",
            _OfflineEmailRecognizer(),
            windowed=True,
            narrow=True,
            needs=("@",),
        ),
        _gate(
            r"\b[1-6]\d{3}[- ]?\d{3}",
            CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, _MASTERCARD_2_SERIES]),
            min_digits=13,
        ),
        _gate(
            r"\b\d{3}[- .]?\d{2}[- .]?\d{4}\b|\b\d{5}-\d{4}\b|\b\d{3}-\d{6}\b",
            UsSsnRecognizer(),
            min_digits=9,
        ),
        _gate(
            r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2}",
            IbanRecognizer(),
            exact=False,
            min_digits=2,
            min_len=15,
        ),
        _gate(
            r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
            _IpRecognizer(patterns=_IPV4),
            windowed=True,
            needs=(".",),
            min_digits=4,
        ),
        _gate(
            r"::|(?:[0-9A-Fa-f]{1,4}:){6}",
            _IpRecognizer(patterns=_IPV6),
            windowed=True,
            narrow=True,
            needs=(":",),
        ),
        _gate(
            r"(?:\+|\b00)[1-9]|\d{3}[ .\-)]\s?\d{3}[ .\-]\d{4}|0\d{1,5}\)?\s?[ .\-/]?\d{2}",
            PhoneNumberRecognizer(),
            min_digits=7,
        ),
        _gate(r"\d{7}", _BarePhoneRecognizer(), may_validate=False, min_digits=7),
        # --- secrets (ours) ---
        _gate(
            r"eyJ",
            _pattern(
                "JWT",
                "JwtRecognizer",
                r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
                0.95,
            ),
            windowed=True,
            needs=("eyJ",),
        ),
        _gate(
            r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA|SCA)",
            _pattern(
                "AWS_ACCESS_KEY",
                "AwsAccessKeyRecognizer",
                r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\b",
                0.95,
            ),
            windowed=True,
            needs=("A",),
            min_len=20,
        ),
        _gate(r"[A-Za-z0-9/+]{40}", _AwsSecretRecognizer(), windowed=True, min_digits=1, min_len=40),
        _gate(
            r"-----BEGIN",
            _pattern(
                "PRIVATE_KEY",
                "PemPrivateKeyRecognizer",
                r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----.*?"
                r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
                1.0,
            ),
            needs=("-----BEGIN",),
        ),
        _gate(
            r"(?i:bearer)\s",
            _pattern(
                "BEARER_TOKEN",
                "BearerTokenRecognizer",
                r"\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}",
                0.9,
                flags=_CASE_INSENSITIVE,
            ),
            needs=("bearer",),
            needs_lower=True,
        ),
        _gate(
            r"://[^\s/@]*:[^\s/@]*@",
            _pattern(
                "URL_CREDENTIALS",
                "UrlUserinfoRecognizer",
                r"(?<=://)[^\s/:@]{1,256}:[^\s/@]{1,256}(?=@)",
                0.95,
            ),
            windowed=True,
            needs=("://",),
        ),
        _gate(
            r"(?i:[?&;]" + _TOKEN_PARAMS + r"=)",
            _pattern(
                "URL_CREDENTIALS",
                "UrlSecretParamRecognizer",
                r"(?<=[?&;]" + _TOKEN_PARAMS + r"=)[^&#;\s\"'<>]{4,}",
                0.8,
                flags=_CASE_INSENSITIVE,
            ),
            windowed=True,
            needs=("=",),
        ),
        _gate(
            r"gh[pousr]_|github_pat_|xox[abposr]-|hooks\.slack\.com/|[sr]k_(?:live|test)_|AIza|ya29\.",
            _pattern(
                "API_KEY",
                "SaasTokenRecognizer",
                r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|xox[abposr]-[A-Za-z0-9\-]{10,}"
                r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|AIza[0-9A-Za-z_\-]{35}|ya29\.[0-9A-Za-z_\-]{20,})"
                r"|(?<=hooks\.slack\.com/services/)[A-Za-z0-9/]{20,}",
                0.95,
            ),
            windowed=True,
            needs=("gh", "github_pat_", "xox", "hooks.slack.com/", "k_live_", "k_test_", "AIza", "ya29."),
        ),
        _gate(
            r"(?i:pass|pwd|secret)",
            PatternRecognizer(
                supported_entity="PASSWORD",
                name="PasswordAssignmentRecognizer",
                patterns=[
                    Pattern("password (double-quoted)", _PASSWORD_AFTER + r"\")[^\"\r\n]{1,256}", 0.8),
                    Pattern("password (single-quoted)", _PASSWORD_AFTER + r"')[^'\r\n]{1,256}", 0.8),
                    Pattern("password", _PASSWORD_AFTER + r")[^\s\"'<>]{1,256}", 0.8),
                ],
                context=[],
                global_regex_flags=_CASE_INSENSITIVE,
            ),
            needs=("pass", "pwd", "secret"),
            needs_lower=True,
        ),
        _gate(r"[A-Za-z0-9_+/\-]{20}", _EntropyRecognizer(), windowed=True, min_digits=1, min_len=20),
    ]


NER_ENTITIES: tuple[str, ...] = ("LOCATION", "NRP", "ORGANIZATION", "PERSON")


def build_ner(model: str) -> AnalyzerEngine:
    """A presidio analyzer running only spaCy's named-entity recognizer with ``model``.

    Raises:
        ImportError: the spaCy model is not installed (presidio would try to download it; we never do).
    """
    import spacy.util

    if not (spacy.util.is_package(model) or Path(model).exists()):
        raise ImportError(
            f"spaCy model {model!r} is not installed; PIIScanner never downloads models. "
            f"Install it with: python -m spacy download {model}"
        )
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=list(NER_ENTITIES)))
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def empty_artifacts() -> NlpArtifacts:
    """The artifacts of presidio's ``NoOpNlpEngine`` (no model): what recognizers get without NER."""
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
    engine.load()
    return engine.process_text("", "en")
