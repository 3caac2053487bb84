"""The built-in recognizers of :class:`processors.pii.PIIScanner`, each behind its gate.

Imported only when a ``PIIScanner`` is built (presidio is an optional extra); :func:`build_gates` returns the
whole set. Built-in presidio recognizers and patterns used as they are: ``CreditCardRecognizer`` (Luhn),
``UsSsnRecognizer``, ``IbanRecognizer`` (checksum), ``IpRecognizer``. Adapted: ``EmailRecognizer`` validates
the domain against the public-suffix snapshot bundled with tldextract, through a private extractor that
never fetches; ``IpRecognizer`` drops unspecified and loopback addresses; the card recognizer also gets the
Mastercard 2221-2720 range. Phone numbers come from :mod:`processors._phone_recognizer`.
Custom recognizers cover secrets: JWTs, AWS keys, PEM private keys, bearer tokens, credentials in URLs,
GitHub / Slack / Stripe / Google tokens, ``password=...`` assignments and high-entropy tokens.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    UsSsnRecognizer,
)

from processors._phone_recognizer import BarePhoneNumberRecognizer, PhoneNumberRecognizer, load_phone_metadata
from processors._stages import CASE_INSENSITIVE, CASE_SENSITIVE, Gate

__all__ = ["build_gates"]


class _OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, validating the domain with tldextract's bundled snapshot only."""

    def __init__(self) -> None:
        super().__init__()
        # cache_dir=None: no disk cache; suffix_list_urls=(): no HTTP fetch; the bundled snapshot is used.
        self._tld = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        self._tld("warm.example.com")  # parse the snapshot now, not on the first log line

    def validate_result(self, pattern_text: str) -> bool:
        domain = pattern_text.rpartition("@")[2].lower().rstrip(".")
        return self._tld(pattern_text).fqdn != "" or domain.rpartition(".")[2] in _RESERVED_TLDS


# Reserved top-level domains (RFC 2606, RFC 6761, ICANN's .internal): not in the public-suffix list, yet
# real mailboxes of test, staging and intranet systems use them.
_RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost", "local", "internal"})


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
            global_regex_flags=CASE_SENSITIVE,
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
            global_regex_flags=CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool:
        return _looks_random(pattern_text)


# Names of fields and query parameters that carry secrets (patterns, not secrets).
_SECRET_KEY_NAMES = r"(?:password|passwd|passphrase|pass|pwd|secret|client_secret|app_secret)"  # noqa: S105
# the lookbehind before a password value: ``password=``, ``"passwd": ``, ``pwd is``...
_PASSWORD_AFTER = r"(?<=\b" + _SECRET_KEY_NAMES + r"[\"']?\s{0,3}(?:[:=]|\bis\b)\s{0,3}"
# An unquoted value runs to whitespace or a quote; ``&``, ``;`` and ``,`` end it only where a ``key=`` pair
# follows (``password=Tr0ub4dor&3-horse!`` is one value, ``password=x&next=1`` two pairs).
_PASSWORD_VALUE = r"(?:[^\s\"'<>&;,]|[&;,](?![a-z_][a-z0-9_.\-]{0,64}[=:])){1,256}"  # noqa: S105
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
    flags: int = CASE_SENSITIVE,
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
    load_phone_metadata()
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
            # \b\d{3}[- .]?\d{2}[- .]?\d{4}\b|\b\d{5}-\d{4}\b|\b\d{3}-\d{6}\b, led by one char class
            r"\d(?<!\w\d)(?:\d{2}[- .]?\d{2}[- .]?\d{4}\b|\d{4}-\d{4}\b|\d{2}-\d{6}\b)",
            UsSsnRecognizer(),
            min_digits=9,
        ),
        _gate(
            r"[A-Z](?<![A-Z0-9][A-Z])[A-Z]\d{2}(?:[ \-]?[A-Z0-9]{4}){2}",  # (?<![A-Z0-9])[A-Z]{2}\d{2}...
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
            # (?:\+|\b00)[1-9]|\d{3}[ .\-)]\s?\d{3}[ .\-]\d{4}|0\d{1,5}\)?\s?[ .\-/]?\d{2}, led by one class
            r"[+\d](?:(?<=\+)[1-9]|(?<=0)(?<!\w0)0[1-9]|(?<=\d)\d{2}[ .\-)]\s?\d{3}[ .\-]\d{4}"
            r"|(?<=0)\d{1,5}\)?\s?[ .\-/]?\d{2})",
            PhoneNumberRecognizer(),
            min_digits=7,
        ),
        _gate(r"\d{7}", BarePhoneNumberRecognizer(), may_validate=False, min_digits=7),
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
                flags=CASE_INSENSITIVE,
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
                flags=CASE_INSENSITIVE,
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
                    Pattern("password", _PASSWORD_AFTER + r")" + _PASSWORD_VALUE, 0.8),
                ],
                context=[],
                global_regex_flags=CASE_INSENSITIVE,
            ),
            needs=("pass", "pwd", "secret"),
            needs_lower=True,
        ),
        _gate(r"[A-Za-z0-9_+/\-]{20}", _EntropyRecognizer(), windowed=True, min_digits=1, min_len=20),
    ]
