"""The built-in rules of ``SecretScanner``: one compiled pattern per kind of value, plus its validator.

Each ``Rule`` carries cheap gates (digits, chars, substrings) that ``SecretScanner`` checks on a whole chunk
before running the pattern, so a chunk that cannot hold a match costs no regex pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HEX", "RULES", "Rule"]

Check = Callable[[str, "re.Match[str]"], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern; the gates (cheap checks on the whole chunk) decide whether it runs at all."""

    entity: str
    pattern: re.Pattern[str]
    group: int = 0  # 0: the whole match; -1: the last group that matched; n: group n
    check: Check | None = None  # called with the original chunk and the match
    lower: bool = False  # match against the lower-cased chunk (the pattern is written in lower case)
    min_digits: int = 0  # the chunk holds at least this many digits
    min_len: int = 0  # the chunk is at least this long
    chars: frozenset[str] = frozenset()  # the chunk holds one of these chars
    needs: tuple[str, ...] = ()  # the chunk holds one of these substrings
    words: tuple[str, ...] = ()  # the lower-cased chunk holds one of these substrings


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str, m: re.Match[str]) -> bool:
    digits = m.group().replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban(text: str, m: re.Match[str]) -> bool:
    code = m.group().replace(" ", "")
    if not 15 <= len(code) <= 34:
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _phone(text: str, m: re.Match[str]) -> bool:
    return sum(ch.isdigit() for ch in m.group()) >= 8  # no upper bound: glued digit groups mask whole


def _ipv4(text: str, m: re.Match[str]) -> bool:
    """A valid address that is not the unspecified (``0.0.0.0``) or a loopback one: those are not data."""
    octets = [int(octet) for octet in m.group().split(".")]
    return all(o <= 255 for o in octets) and octets[0] != 127 and any(octets)


def _ipv6(text: str, m: re.Match[str]) -> bool:
    s = m.group()
    groups = [g for g in s.split(":") if g]
    return 2 <= len(groups) <= 7 and any(ch.isdigit() for ch in s)


def _bearer(text: str, m: re.Match[str]) -> bool:
    value = m.group(1)
    return text.startswith("Bearer", m.start()) or len(value) >= 16 or not value.isalpha()


def _not_a_word(text: str, m: re.Match[str]) -> bool:
    """The value after ``password`` is more than an English word (``reset``, ``expired;``)."""
    return not m.group(m.lastindex or 0).rstrip(".,;:!?)]}'\"").isalpha()


_STOPWORDS = frozenset(
    {
        "a", "an", "the", "on", "in", "of", "at", "to", "by", "for", "from", "with", "my", "your", "our",
        "their", "his", "her", "its", "this", "that", "these", "those", "no", "one", "two", "more", "all",
        "every", "each", "per", "and", "or",
    }
)  # fmt: skip


def _street(text: str, m: re.Match[str]) -> bool:
    """A street name, not a phrase: the word before the suffix is no function word (``1 on the way``)."""
    words = m.group("name").split()
    return bool(words) and words[-1] not in _STOPWORDS


HEX = "[0-9A-Fa-f]"
_H4 = f"{HEX}{{1,4}}"
_B64URL = "[A-Za-z0-9_-]"
_PASSWORD_WORDS = r"(?:password|passwd|pwd|secret|token|api[_-]?key)"  # noqa: S105 (a pattern, not a password)
_PASSWORD_GATE = ("passw", "pwd", "secret", "token", "key")
# A value runs to whitespace or a quote; ``&``, ``;`` and ``,`` end it only where a ``key=`` pair follows
# (``password=Tr0ub4dor&3-horse!`` is one value, ``password=x&next=1`` is two pairs).
_VALUE = r"(?:[^\s\"'&;,<>]|[&;,](?![a-z_][a-z0-9_.-]{0,64}[=:]))"
_NAME_WORD = r"[^\W\d_](?:[^\W\d_]|['\u2019-](?=[^\W\d_]))*"
_STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|place|pl|terrace|ter"
    r"|square|sq|parkway|pkwy|highway|hwy|circle|cir|crescent|close|alley|row)"
)
_STREET_PREFIX = (
    r"(?:rue|avenue|boulevard|chemin|allée|allee|impasse|quai|calle|avenida|plaza|carrer|rua|piazza|viale"
    r"|corso|largo|travessa|straat|ulica)"
)
_POSTAL_TOWN = r"(?:,?[ \t]+[0-9]{4,5}(?:[ \t]+[^\W\d_][\w'-]*){1,2})?"

# A lookbehind placed after the first char (``[0-9](?<![0-9].)``) lets the regex engine skip ahead to
# candidate chars instead of trying the lookbehind at every position: 2-3x faster on short messages.
RULES: tuple[Rule, ...] = (
    Rule(
        "EMAIL_ADDRESS",
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
            r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
        ),
        chars=frozenset("@"),
    ),
    Rule(
        "CREDIT_CARD",
        re.compile(
            r"[0-9](?<![0-9].)(?:[0-9]{12,18}(?![0-9])|[0-9]{3}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}"
            r"|[0-9]{3}([ -])[0-9]{6}\2[0-9]{5})"
        ),
        check=_card,
        min_digits=13,
    ),
    Rule(
        "US_SSN",
        re.compile(
            r"[0-9](?<![0-9-].)[0-9]{2}(?<!000)(?<!666)(?<!9..)"
            r"([- ])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![0-9-])"
        ),
        min_digits=9,
        chars=frozenset("- "),
    ),
    Rule(
        "US_SSN",  # bare or grouped, right after its label: any area number (err towards masking)
        re.compile(
            r"(?<![a-z])(?:ssn|social[ _-]?security(?:[ _-]?(?:number|num|no))?)[\"']?[ \t]*[:=#]{0,2}[ \t]*"
            r"[\"']?([0-9]{3}([- ]?)[0-9]{2}\2[0-9]{4})(?![0-9])"
        ),
        group=1,
        lower=True,
        min_digits=9,
        words=("ssn", "social"),
    ),
    Rule(
        "PHONE_NUMBER",  # the number and its extension (``x553``, ``ext. 12``)
        re.compile(
            r"[+(0-9](?<![A-Za-z0-9+.-].)"
            r"(?:(?<=\+)[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]++\)?){1,6}+"  # +44(0)121 496 0377, +1-561-400-7878
            r"|(?<=0)(?<![0-9A-Z] 0)0[1-9][0-9]{0,2}(?:[ .-]\(?[0-9]++\)?){3,6}+"  # 001-280-780-1075
            r"|(?<=\()[0-9]{2,5}\)[ .-]?[0-9]++(?:[ .-][0-9]++){0,3}+"  # (0161) 496 0352, (820)652-8073
            r"|(?<=[0-9])[0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4}"  # 798.207.9972
            r"|(?<=0)(?<![0-9A-Z] 0)[1-9][0-9]{1,3} [0-9]{3,4} ?[0-9]{3,4})"  # 020 7946 0432 (not in an IBAN)
            r"(?: ?(?:x|ext\.?|#) ?[0-9]{1,6})?(?![A-Za-z0-9-])"
        ),
        check=_phone,
        min_digits=8,
    ),
    Rule(
        "PHONE_NUMBER",  # any digit string right after its label (``phone 4006976235``, ``sms to 0389...``)
        re.compile(
            r"(?<![a-z])(?:phone|telephone|tel|mobile|cell|fax|sms)(?:[ _-]?(?:number|num|no))?[\"']?[ \t]*"
            r"(?:[:=]|to )?[ \t]*[\"']?(\+?[0-9(][0-9 ().-]{5,22}[0-9](?: ?(?:x|ext\.?|#) ?[0-9]{1,6})?)"
            r"(?![0-9a-z])"
        ),
        group=1,
        check=_phone,
        lower=True,
        min_digits=8,
        words=("phone", "tel", "mobile", "cell", "fax", "sms"),
    ),
    Rule(
        "IBAN_CODE",
        re.compile(
            r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
        ),
        check=_iban,
        min_digits=2,
    ),
    Rule(
        "IP_ADDRESS",
        re.compile(r"[0-9](?<![A-Za-z0-9.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![A-Za-z0-9]|\.[0-9])"),
        check=_ipv4,
        min_digits=4,
        chars=frozenset("."),
    ),
    Rule(
        "IP_ADDRESS",
        re.compile(rf"{HEX}(?<![A-Za-z0-9:.].){HEX}{{0,3}}(?::{_H4}){{7}}(?![A-Za-z0-9:])"),
        min_digits=1,
        chars=frozenset(":"),
    ),
    Rule(
        "IP_ADDRESS",
        re.compile(
            rf"(?<![A-Za-z0-9:.])(?:{_H4}(?::{_H4}){{0,6}})?::(?:{_H4}(?::{_H4}){{0,6}})?(?![A-Za-z0-9:])"
        ),
        check=_ipv6,
        min_digits=1,
        needs=("::",),
    ),
    Rule(
        "JWT",
        re.compile(rf"eyJ(?<!{_B64URL}eyJ){_B64URL}{{4,}}\.{_B64URL}{{4,}}\.{_B64URL}*"),
        needs=("eyJ",),
    ),
    Rule(
        "AWS_ACCESS_KEY",
        re.compile(
            r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|A3T[A-Z0-9])(?<![A-Z0-9].{4})[A-Z0-9]{16}(?![A-Z0-9])"
        ),
        chars=frozenset("A"),
    ),
    Rule(
        "AWS_SECRET_KEY",  # by its label, whatever the value's case mix
        re.compile(
            r"(?:aws[_ -]?secret[_ -]?(?:access[_ -]?)?key|secret[_-]?access[_-]?key)[\"']?[ \t]*[:=][ \t]*"
            r"[\"']?([a-z0-9+/]{30,64})(?![a-z0-9+/])"
        ),
        group=1,
        lower=True,
        chars=frozenset("=:"),
        words=("secret",),
    ),
    Rule(
        "BEARER_TOKEN",
        re.compile(r"\bbearer[ \t]+([a-z0-9._~+/=-]+)"),
        group=1,
        check=_bearer,
        lower=True,
        words=("bearer",),
    ),
    Rule(
        "BEARER_TOKEN",
        re.compile(r"\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*([^\r\n]{1,4096})"),
        group=1,
        lower=True,
        words=("authorization",),
    ),
    Rule(
        "URL_CREDENTIALS",  # '#' included: passwords hold it unencoded in logged DSNs
        re.compile(r"://([^\s/?]{1,512})@"),
        group=1,
        chars=frozenset("@"),
        needs=("://",),
    ),
    Rule(
        "URL_CREDENTIALS",
        re.compile(
            r"[?&;][a-z0-9_.-]{0,32}(?:token|key|secret|pass|pwd|sig|auth|session|credential|code)"
            r"[a-z0-9_.-]{0,32}=([^&#\s]{1,4096})"
        ),
        group=1,
        lower=True,
        chars=frozenset("="),
    ),
    Rule(
        "API_KEY",
        re.compile(
            r"(?<![A-Za-z0-9])(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,247}"
            r"|gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255}"
            r"|xox[abposr]-[A-Za-z0-9-]{8,255}|AIza[0-9A-Za-z_-]{35}"
            r"|glpat-[A-Za-z0-9_-]{20,64}|sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,255}|npm_[A-Za-z0-9]{36})"
        ),
        needs=(
            "sk_",
            "rk_",
            "pk_",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "xox",
            "AIza",
            "glpat-",
            "sk-",
            "npm_",
        ),
    ),
    Rule(
        "API_KEY",
        re.compile(r"(?:api[_-]?key|x-api-key|access[_-]?key)[\"']?\s*[=:]\s*[\"']?([^\s\"',&;]{4,4096})"),
        group=1,
        lower=True,
        chars=frozenset("=:"),
        words=("key",),
    ),
    Rule(
        "PASSWORD",
        re.compile(
            rf"{_PASSWORD_WORDS}[\"']?[ \t]*[=:][ \t]*"
            rf"(?:\"([^\"\r\n]{{1,1024}})\"|'([^'\r\n]{{1,1024}})'|({_VALUE}{{1,1024}}))"
        ),
        group=-1,
        lower=True,
        chars=frozenset("=:"),
        words=_PASSWORD_GATE,
    ),
    Rule(
        "PASSWORD",
        re.compile(rf"(?<![a-z]){_PASSWORD_WORDS}(?:[ \t]+(?:is|was|of|for|to))?[ \t]+({_VALUE}{{1,1024}})"),
        group=1,
        check=_not_a_word,
        lower=True,
        words=_PASSWORD_GATE,
    ),
    Rule(
        "STREET_ADDRESS",  # 42 Baker Street, 1600 Pennsylvania Ave NW, 12b Rose Lane
        re.compile(
            r"[0-9](?<![0-9a-z.,:/#-].)[0-9]{0,5}[a-z]?(?P<name>(?:[ \t]+[^\W\d_][\w'.-]*){1,3}?)[ \t]+"
            + _STREET_SUFFIX
            + r"\b\.?(?:[ \t]+(?:n|s|e|w|ne|nw|se|sw)\b)?"
        ),
        check=_street,
        lower=True,
        min_digits=1,
    ),
    Rule(
        "STREET_ADDRESS",  # Rue des Lilas 42, 75011 Paris; Calle Mayor 5
        re.compile(
            rf"(?<![\w-]){_STREET_PREFIX}(?:[ \t]+[^\W\d_][\w'.-]*){{1,4}}?,?[ \t]+[0-9]{{1,5}}[a-z]?\b"
            + _POSTAL_TOWN
        ),
        lower=True,
        min_digits=1,
        words=(
            "rue",
            "av",
            "boulevard",
            "chemin",
            "all",
            "impasse",
            "quai",
            "calle",
            "plaza",
            "carrer",
            "rua",
            "piazza",
            "viale",
            "corso",
            "largo",
            "travessa",
            "straat",
            "ulica",
        ),
    ),
    Rule(
        "STREET_ADDRESS",  # Hauptstraße 5, Lindenweg 12a, 10115 Berlin
        re.compile(
            r"(?<![\w-])[^\W\d_]{2,}(?:straße|strasse|str\.|weg|platz|gasse|allee|ring|damm|laan|gracht)"
            r"[ \t]+[0-9]{1,4}[a-z]?\b" + _POSTAL_TOWN
        ),
        lower=True,
        min_digits=1,
        words=("str", "weg", "platz", "gasse", "allee", "ring", "damm", "laan", "gracht"),
    ),
    Rule(
        "PERSON",  # a name where the text says it is one (names without such a context need NER)
        re.compile(
            r"(?:(?<![a-z0-9_])(?:(?:full|first|last|given|family|display|sur|maiden)[ _-]?)?name[\"']?[ \t]*"
            r"[:=][ \t]*[\"']?|(?<![a-z])my name is[ \t]+|(?<![a-z])(?:dear|from:|signed,?|regards,"
            r"|sincerely,)[ \t\r\n]*)"
            rf"({_NAME_WORD}(?:[ \t]+(?!{_NAME_WORD}[ \t]*[=:]){_NAME_WORD}){{0,2}})(?![\w@])"
        ),
        group=1,
        lower=True,
        words=("name", "dear", "from:", "signed", "regards,", "sincerely,"),
    ),
)
