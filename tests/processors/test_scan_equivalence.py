"""The compiled gates find exactly what the rule-by-rule scanners found: same findings, same masked text.

The reference (``tests/processors/_reference_scanners.py``) is the scanners' code as first written; the
inputs are random text with both leak-test corpora planted in it, raw and encoded (percent, base64, hex,
fullwidth, zero-width characters, typed apart), next to the labels that widen rules, and the benchmark's
corpus of log messages.
"""

from __future__ import annotations

import base64
import functools
import urllib.parse
from collections.abc import Callable
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors._patterns import RULES, Rule
from processors._rule_gates import RuleGates, Substrings
from processors._stages import Selector, select
from processors.pii import PIIScanner
from processors.scanning import Finding
from processors.secret_scanner import SecretScanner
from tests.pii_corpus import corpus
from tests.processors._corpus import CANARIES, FORMS
from tests.processors._reference_scanners import ReferencePIIScanner, ReferenceSecretScanner

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
ENCODERS: dict[str, Callable[[str], str]] = {
    "raw": str,
    "percent": lambda v: urllib.parse.quote(v, safe=""),
    "percent-every-byte": lambda v: "".join(f"%{b:02X}" for b in v.encode()),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64-urlsafe": lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
    "hex": lambda v: v.encode().hex(),
    "fullwidth": lambda v: v.translate(FULLWIDTH),
    "zero-width": functools.partial(str.join, "\u200b"),
    "soft-hyphen": functools.partial(str.join, "\u00ad"),
    "typed-apart": functools.partial(str.join, " "),
    "upper": str.upper,
}
# Both corpora, and values of the kinds both scanners find by form (checksums, number layouts).
VALUES = sorted(
    {
        *CANARIES.values.values(),
        *FORMS.values.values(),
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "020 7946 0432",
        "001-280-780-1075",
        "123-45-6789",
        "078051120",
        "4111 1111 1111 1111",
        "5555555555554444",
        "2223000048400011",
        "203.0.113.42",
        "2001:db8::8a2e:370:7334",
        "jonas.weber@example.org",
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "42 Baker Street",
        "Rue des Lilas 42, 75011 Paris",
    }
)
# The labels and prefixes that open gates (and widen rules), and near misses of them.
LABELS = (
    "password=", "passwd: ", "pwd ", "secret is ", "token=", "api_key=", "x-api-key: ", "access_key=",
    "Bearer ", "authorization: ", "Proxy-Authorization=", "ssn ", "social security number: ", "phone ",
    "tel: ", "mobile ", "fax ", "sms to ", "aws_secret_access_key=", "https://", "postgres://u:",
    "?token=", "&sig=", ";session=", "my name is ", "Dear ", "From: ", "signed, ", "regards,\n",
    "sincerely, ", "name: ", "first_name=", "Rue ", " Street", "Hauptstraße ", " allee ", "Calle ",
    "-----BEGIN RSA PRIVATE KEY-----\n", "-----END RSA PRIVATE KEY-----", "eyJ", "AKIA", "::", "ghp_",
    "sk_live_", "xoxb-", "AIza", "npm_", "glpat-", "sk-proj-", "ya29.", "hooks.slack.com/services/",
    "<EMAIL_ADDRESS>", "straat", "telephone", "keyword", "passport", "tokens", "cellar", "ring ",
)  # fmt: skip
FILLER = st.text(
    alphabet=st.sampled_from(
        [
            *"abcdefghijklmnopqrstuvwxyzABCDEFKLSZ0123456789 \t\n-_./:=@%+#&;,?\"'()[]<>",
            *"éëßİΣ\u200b\uff21\u0663\ud800",
        ]
    ),
    max_size=24,
)
PIECES = st.one_of(
    FILLER,
    st.sampled_from(LABELS),
    st.builds(lambda enc, v: ENCODERS[enc](v), st.sampled_from(sorted(ENCODERS)), st.sampled_from(VALUES)),
    st.integers(0, 10**19).map(str),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)


@cache
def pair(kind: str) -> tuple[SecretScanner | PIIScanner, SecretScanner | PIIScanner]:
    """(scanner, reference) of one kind, built once for the module (PIIScanner takes a while)."""
    if kind == "secret":
        return SecretScanner(), ReferenceSecretScanner()
    return PIIScanner(cache_size=0), ReferencePIIScanner()


def key(found: list[Finding]) -> list[tuple[str, int, int]]:
    return sorted((f.entity, f.start, f.end) for f in found)


def old_gates(rules: tuple[Rule, ...], chunk: str) -> int:
    """Which rules' gates hold, checked rule by rule as ``SecretScanner`` first did."""
    present = set(chunk)
    digits = sum(map(chunk.count, "0123456789"))
    lowered = chunk.lower()
    if len(lowered) != len(chunk):
        lowered = chunk.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))
    mask = 0
    for i, rule in enumerate(rules):
        if rule.min_digits > digits or rule.min_len > len(chunk):
            continue
        if rule.chars and rule.chars.isdisjoint(present):
            continue
        if rule.needs and not any(x in chunk for x in rule.needs):
            continue
        if rule.words and not any(x in lowered for x in rule.words):
            continue
        mask |= 1 << i
    return mask


class TestRuleGates:
    @SETTINGS
    @given(text=TEXTS)
    def test_the_compiled_gates_open_exactly_the_rules_the_loop_opened(self, text: str) -> None:
        """Bit i of RuleGates.open is set iff every gate of rule i holds."""
        lowered = text.lower()
        if len(lowered) != len(text):
            lowered = text.translate(
                str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
            )
        digits = sum(map(text.count, "0123456789"))
        assert old_gates(RULES, text) == RuleGates(RULES).open(text, lowered, digits)

    @SETTINGS
    @given(text=TEXTS)
    def test_the_presidio_selector_selects_what_select_did(self, text: str) -> None:
        """Selector (compiled) and select (stage by stage): the same stages, in the same order."""
        scanner, _ = pair("pii")
        assert isinstance(scanner, PIIScanner)
        lower = text.lower()
        assert select(scanner._gated, text, lower) == Selector(scanner._gated)(text, lower)

    @settings(max_examples=500, deadline=None)
    @given(
        gates=st.lists(st.lists(st.text("abc", min_size=1, max_size=4), max_size=4).map(tuple), max_size=8),
        text=st.text("abcd", max_size=30),
    )
    def test_overlapping_and_nested_words_are_all_seen(self, gates: list[tuple[str, ...]], text: str) -> None:
        """Words that are prefixes, suffixes or overlaps of each other: each gate as any(w in text)."""
        expected = sum(1 << i for i, words in enumerate(gates) if not words or any(w in text for w in words))
        wanted = (1 << len(gates)) - 1
        assert expected == Substrings(gates).open(text, wanted)


class TestSameFindings:
    @SETTINGS
    @given(text=TEXTS)
    def test_secret_scanner(self, text: str) -> None:
        """SecretScanner: the same findings, in the same order, and the same masked text."""
        scanner, reference = pair("secret")
        assert reference.findings(text) == scanner.findings(text)
        assert reference.redact(text) == scanner.redact(text)

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=TEXTS)
    def test_pii_scanner(self, text: str) -> None:
        """PIIScanner (which composes SecretScanner): the same findings and the same masked text."""
        scanner, reference = pair("pii")
        assert isinstance(scanner, PIIScanner) and isinstance(reference, PIIScanner)
        assert key(reference._presidio(text)) == key(scanner._presidio(text))  # its own half alone
        assert key(reference.findings(text)) == key(scanner.findings(text))
        assert reference.redact(text) == scanner.redact(text)

    def test_every_planted_value_in_every_form(self) -> None:
        """Each corpus value, alone and after a label, in each encoding: both scanners as their references."""
        for kind in ("secret", "pii"):
            scanner, reference = pair(kind)
            for value in VALUES:
                for enc in ENCODERS.values():
                    for text in (enc(value), f"login ok password={enc(value)} from 10.1.2.3"):
                        assert key(reference.findings(text)) == key(scanner.findings(text)), (kind, text)
                        if isinstance(scanner, PIIScanner) and isinstance(reference, PIIScanner):
                            assert key(reference._presidio(text)) == key(scanner._presidio(text)), text

    def test_benchmark_corpus(self) -> None:
        """The log messages of bench_pii.py (another seed): the same findings and masked text."""
        texts = [s.text for s in corpus(800, seed=7)]
        for kind in ("secret", "pii"):
            scanner, reference = pair(kind)
            assert [key(reference.findings(t)) for t in texts] == [key(scanner.findings(t)) for t in texts]
            assert [reference.redact(t) for t in texts] == [scanner.redact(t) for t in texts]
        scanner, reference = pair("pii")
        assert isinstance(scanner, PIIScanner) and isinstance(reference, PIIScanner)
        assert [key(reference._presidio(t)) for t in texts] == [key(scanner._presidio(t)) for t in texts]

    def test_extra_patterns_still_run_on_every_chunk(self) -> None:
        """A custom rule has no gate: it runs whatever the text holds, as before."""
        extra = {"TICKET": r"TCK-[0-9]{4}"}
        scanner = SecretScanner(extra_patterns=extra)
        reference = ReferenceSecretScanner(extra_patterns=extra)
        for text in ("see TCK-1234 now", "plain words only here", "TCK-12"):
            assert reference.findings(text) == scanner.findings(text)
        assert [Finding("TICKET", 4, 12)] == scanner.findings("see TCK-1234 now")
