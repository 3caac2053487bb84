"""URL target redaction: routes kept, identifiers collapsed, query values gone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.urls import collapse_path, query_keys, redact_target


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
