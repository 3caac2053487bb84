"""Phone numbers for :class:`processors.pii.PIIScanner`: formatted and bare, validated with ``phonenumbers``.

presidio's ``PhoneRecognizer`` runs libphonenumber's matcher over the whole text once per region (~0.7 ms a
message); these recognizers match the formats of the same regions with one pattern each and validate each
candidate, mostly without ``parse()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import phonenumbers
from presidio_analyzer import Pattern, PatternRecognizer

from processors._stages import CASE_SENSITIVE

__all__ = ["BarePhoneNumberRecognizer", "PhoneNumberRecognizer", "load_phone_metadata"]

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
            global_regex_flags=CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        return _phone_valid(pattern_text)


class BarePhoneNumberRecognizer(PhoneNumberRecognizer):
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


def load_phone_metadata() -> None:
    """Load libphonenumber's metadata for every supported region now, not on the first log line."""
    for region in _PHONE_REGIONS:
        _valid_phone("0", region)
