"""Encoded forms: values planted percent-encoded, with format characters, fullwidth, split, base64, hex."""

from __future__ import annotations

import base64
import functools
import re
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable
from functools import cache

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors._encoded_forms import may_hide_encoded
from processors.pii import PIIScanner
from processors.redact import FieldPolicy, ShapeRecorder
from processors.scanning import Scanner
from processors.secret_scanner import SecretScanner, _triggered
from processors.tracebacks import safe_exception
from tests.processors._corpus import CANARIES, FORMS

MARKER = re.compile(r"<[A-Z_]+>")  # which entity names an overlap is the scanner's choice
FORMAT_CHARS = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


@cache
def scanner(name: str) -> Scanner:
    """One scanner of each kind for the module (PIIScanner takes a while to build)."""
    return SecretScanner() if name == "secret" else PIIScanner()


SCANNERS = ("secret", "pii")


def _percent_all(v: str) -> str:
    return "".join(f"%{b:02X}" for b in v.encode())


ENCODERS: dict[str, Callable[[str], str]] = {
    "percent": lambda v: urllib.parse.quote(v, safe=""),
    "percent-every-byte": _percent_all,
    **{f"format-U+{ord(c):04X}": functools.partial(str.join, c) for c in FORMAT_CHARS},
    "fullwidth": lambda v: v.translate(FULLWIDTH),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64-urlsafe": lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
    "hex": lambda v: v.encode().hex(),
}
# Values found by form (no CANARY marker), and marked canaries of the structural kinds.
PLANTED = {
    **{k: v for k, v in FORMS.values.items() if k not in ("street_address", "name_lower")},
    "api_key": CANARIES.values["api_key"],
    "email": CANARIES.values["email"],
    "jwt": CANARIES.values["jwt"],
}
# Split across blanks: the structural kinds (heuristics do not run on glued tokens, see _encoded_forms).
SPLIT = {
    "card": FORMS.values["card_digits_as_number"],
    "github_token": FORMS.values["github_token"],
    "email": FORMS.values["email_test_tld"],
}


def decoded(text: str) -> str:
    """The output as a reader could decode it: format chars dropped, NFKC, percent-escapes decoded."""
    kept = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return urllib.parse.unquote(unicodedata.normalize("NFKC", kept))


def needles_in(value: str) -> list[str]:
    return [n for n in (*FORMS.needles, *CANARIES.needles) if n in value]


class TestEncodedValues:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize("encoding", sorted(ENCODERS))
    @pytest.mark.parametrize("name", sorted(PLANTED))
    def test_encoded_value_is_masked(self, which: str, encoding: str, name: str) -> None:
        """A planted value in any encoding leaves neither its encoded form nor a decodable needle."""
        value = PLANTED[name]
        encoded = ENCODERS[encoding](value)
        out = scanner(which).redact(f"note {encoded} end")
        assert (False, []) == (encoded in out, [n for n in needles_in(value) if n in decoded(out)])

    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize("name", sorted(SPLIT))
    def test_value_split_across_blanks_is_masked(self, which: str, name: str) -> None:
        """A card number, a token or an address typed one char at a time, blank-separated, is masked."""
        value = SPLIT[name]
        out = scanner(which).redact(f"note {' '.join(value)} end")
        assert ("note <", "> end", False) == (out[:6], out[-5:], value[:8] in out.replace(" ", ""))


class TestMappingToOriginal:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("mail jonas.weber%40postbox.test now", "mail <> now"),
            ("key g\u200bh\u200bp_4mB7xQ2vLp9RkT5wZc8NyH3dFs6JaE1uGo0K ok", "key <> ok"),
            ("card " + "4111111111111111".translate(FULLWIDTH) + " ok", "card <> ok"),
            ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 ok", "card <> ok"),
        ],
    )
    def test_the_original_span_is_masked(self, which: str, text: str, expected: str) -> None:
        """A finding in the normalized form masks exactly the original chars it came from."""
        assert expected == MARKER.sub("<>", scanner(which).redact(text))

    @pytest.mark.parametrize("which", SCANNERS)
    def test_decoded_credentials_mask_their_whole_run(self, which: str) -> None:
        """Base64 of ``user:password`` (basic auth) is a credential: the whole encoded run goes."""
        run = base64.b64encode(b"admin:password").decode()
        assert "auth Basic <> sent" == MARKER.sub("<>", scanner(which).redact(f"auth Basic {run} sent"))


class TestEverywhereTheScannersRun:
    @pytest.mark.parametrize("which", SCANNERS)
    def test_message(self, which: str) -> None:
        """An event message with a percent-encoded e-mail is masked by ShapeRecorder."""
        rec = ShapeRecorder(policy=FieldPolicy(), scanner=scanner(which))
        out = rec(None, "info", {"event": "mail jonas.weber%40postbox.test"})
        assert "mail <EMAIL_ADDRESS>" == out["event"]

    @pytest.mark.parametrize("which", SCANNERS)
    def test_allowlisted_value(self, which: str) -> None:
        """An allowlisted value holding a hex-encoded token is masked at level values."""
        token = FORMS.values["github_token"].encode().hex()
        rec = ShapeRecorder(
            policy=FieldPolicy(level="values", allow=frozenset({"note"})), scanner=scanner(which)
        )
        out = rec(None, "info", {"event": "x", "note": {"text": f"token {token}"}})
        assert (False, "token <") == (token in orjson.dumps(out).decode(), out["note"]["text"][:7])

    @pytest.mark.parametrize("which", SCANNERS)
    def test_exception_message(self, which: str) -> None:
        """An exception message with base64 basic auth in it is masked."""
        run = FORMS.values["basic_auth"].split()[1]
        out = safe_exception(ValueError(f"login failed: {base64.b64encode(run.encode()).decode()}"),
                             scanner=scanner(which))  # fmt: skip
        assert [] == FORMS.leaks(decoded(orjson.dumps(out).decode()))


class TestPrecheck:
    @pytest.mark.parametrize(
        "text",
        [
            "user logged in",
            "GET /api/v1/users 200 in 12 ms",
            "réservé à la réception",
            "retry 3 of 5 after 250ms",
        ],
    )
    def test_plain_text_has_nothing_to_decode(self, text: str) -> None:
        """Ordinary log text, ASCII or not, is not decoded at all."""
        assert not may_hide_encoded(text)

    @pytest.mark.parametrize("encoding", sorted(ENCODERS))
    def test_every_encoding_is_noticed(self, encoding: str) -> None:
        """Each encoded form passes the pre-check."""
        assert may_hide_encoded(ENCODERS[encoding](FORMS.values["email_test_tld"]))

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
    def test_prefilter_implies_nothing_to_decode(self, text: str) -> None:
        """ASCII text the secret scanner's prefilter skips has no encoded form either."""
        if not _triggered(text):
            assert not may_hide_encoded(text)

    def test_every_format_character_is_removed(self) -> None:
        """The format-character class holds every category-Cf code point of the running Python."""
        from processors._encoded_forms import _FORMAT

        missing = [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"]
        assert [] == [hex(cp) for cp in missing if _FORMAT.fullmatch(chr(cp)) is None]
