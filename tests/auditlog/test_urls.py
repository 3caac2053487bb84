"""URL target redaction: routes kept, identifiers collapsed, query values gone."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.integrations.urls import collapse_path, query_keys, redact_target
from processors import SecretScanner


class TestCollapsePath:
    def test_ids_collapse_by_kind(self) -> None:
        """Numbers, UUIDs, emails and tokens become placeholders; words stay."""
        path = "/users/42/orders/3f2b8c1e-9d4a-4f6b-8a2c-1e9d4a4f6b8a/reset/abcD3f9x77Qz/x%40y.org/v2"
        assert "/users/{n}/orders/{uuid}/reset/{token}/{email}/v2" == collapse_path(path)

    def test_percent_encoded_secret_is_recognised(self) -> None:
        """Encoding does not hide an email."""
        assert "/u/{email}" == collapse_path("/u/ann%2Bx%40example.org")

    def test_client_placeholder_is_not_trusted(self) -> None:
        """A literal {…} segment from a client is collapsed too."""
        assert "/a/{id}" == collapse_path("/a/{secret}")


ROUTE_WORDS = [
    "orders",
    "userProfile",
    "v2",
    "api-keys",
    "reset_password",
    "getUserProfileById",
    "XMLHttpRequest",
    "HTMLToPDFConverter",
    "internationalization",
    "RequestBodyContentLength",
    "openid-configuration",
    "README.md",
]


def _mixes_cases_and_digits(token: str) -> bool:
    return token.upper() != token and token.lower() != token and any(c.isdigit() for c in token)


class TestRandomSegments:
    @pytest.mark.parametrize("word", ROUTE_WORDS)
    def test_route_words_stay(self, word: str) -> None:
        """Route words, camelCase included, are kept."""
        assert f"/api/{word}" == collapse_path(f"/api/{word}")

    @pytest.mark.parametrize(
        "token",
        ["bPxRfiCYCANARYKEY01", "wJalrXUtnFEMIK7MDENG", "QWxhZGRpbkpvcGVu", "deadbeefcafe", "AbCdEfGhIjKl"],
    )
    def test_random_looking_segments_collapse(self, token: str) -> None:
        """Mixed-case tokens collapse even when no scanner flags them (they used to be kept)."""
        assert "/keys/{token}/rotate" == collapse_path(f"/keys/{token}/rotate")

    @settings(max_examples=300, deadline=None)
    @given(raw=st.binary(min_size=6, max_size=32))
    def test_hex_tokens_always_collapse(self, raw: bytes) -> None:
        """A hex token of 12 to 64 chars, any case, never survives."""
        for token in (raw.hex(), raw.hex().upper()):
            assert collapse_path(f"/x/{token}") in ("/x/{token}", "/x/{n}", "/x/{uuid}")

    @settings(max_examples=300, deadline=None)
    @given(raw=st.binary(min_size=9, max_size=48))
    def test_base64_tokens_always_collapse(self, raw: bytes) -> None:
        """A base64 token of 12 to 64 chars mixing cases and digits never survives, in either alphabet."""
        for token in (
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(raw).decode().rstrip("=").replace("/", "+"),
        ):
            if _mixes_cases_and_digits(token):
                assert "/x/{token}" == collapse_path(f"/x/{token}")

    def test_random_tokens_collapse_almost_always(self) -> None:
        """Of 20,000 random base64url tokens of 12 to 64 chars, with or without digits, 99.8% collapse.

        The few that stay are letters only, of one case or nearly so: a pattern cannot tell them from words.
        """
        rnd = random.Random(20240607)
        kept = 0
        for _ in range(20_000):
            n = rnd.randint(12, 64)
            token = base64.urlsafe_b64encode(rnd.randbytes(n)).decode()[:n]
            if collapse_path(f"/x/{token}") == f"/x/{token}":
                assert not any(c.isdigit() for c in token)
                kept += 1
        assert kept <= 40


class TestRedactTarget:
    def test_query_values_removed_keys_kept(self) -> None:
        """Query keys stay, values never appear."""
        assert "/v1/items?token=&page=" == redact_target("/v1/items?token=canary-url-token-55&page=2")

    def test_token_like_keys_hidden(self) -> None:
        """A key that looks like data is counted, not shown."""
        keys, hidden = query_keys("a=1&sk_live_CANARY9a8b7c6d5e4f3a2b1c0d=2&b%40c.org=3")
        assert (["a"], 2) == (keys, hidden)

    @settings(max_examples=300, deadline=None)
    @given(st.text(min_size=6, alphabet=st.characters(codec="utf-8", exclude_characters="/?&=#%")))
    def test_planted_value_never_survives_in_query(self, secret: str) -> None:
        """Whatever value sits in the query, it is not in the output."""
        out = redact_target(f"/x?q={secret}&r=1")
        assert out.startswith("/x?")
        assert secret not in out.split("?", 1)[1] or secret in "q=&r="


class TestAcceptedWords:
    def test_each_scanner_decides_for_itself(self) -> None:
        """Route words are remembered per scanner: one that flags a word still collapses it."""
        from processors import Finding

        class Strict:
            def findings(self, text: str) -> list[Finding]:
                return [Finding("ROUTE_WORD", 0, len(text))] if text == "orders" else []

            def redact(self, text: str) -> str:
                return text

        lenient = SecretScanner()
        assert "/orders/{n}" == collapse_path("/orders/42", scanner=lenient)
        assert "/orders/{n}" == collapse_path("/orders/43", scanner=lenient)  # from the cache
        assert "/{id}/{n}" == collapse_path("/orders/42", scanner=Strict())

    def test_only_unchanged_words_are_kept(self) -> None:
        """Numbers, tokens and flagged segments are never remembered."""
        from auditlog.integrations import urls

        scanner = SecretScanner()
        collapse_path("/users/42/reset/wJalrXUtnFEMIK7MDENGbPxRfiCY/ann@example.org", scanner=scanner)
        assert {"users", "reset"} == urls.accepted_by(scanner)
