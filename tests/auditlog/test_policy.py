"""Policy loading, validation errors with the entry at fault, matching and warnings."""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlog.policy import (
    DAY,
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    Rule,
    load,
    loads,
    parse_duration,
    sensitive_allowlist_warnings,
)

GOOD = """
version = 1
id = "shop"

[defaults]
level = "shape"
body_retention = "7d"
journal_retention = "400d"

[[rules]]
id = "login"
match = { route = "/login", method = "POST" }
level = "values"
allow = ["username"]
fingerprint = ["email"]

[[rules]]
id = "deletes"
match = { tool = "delete_*" }
required_scopes = ["admin"]
disabled = true
fail_mode = "closed"

[[rules]]
id = "payments-log"
match = { logger = "shop.payments" }
level = "values"
allow = ["amount"]

[readers.oncall]
scopes = ["bodies:read"]
tenants = ["*"]
"""


class TestLoad:
    def test_valid_policy_loads_with_defaults_merged(self) -> None:
        """Rules inherit fields they do not set from [defaults]."""
        pol = loads(GOOD)
        login = pol.rules[0]
        assert ("login", "values", frozenset({"username"})) == (login.id, login.level, login.allow)
        assert 7 * DAY == login.body_retention
        assert 400 * DAY == pol.rules[1].journal_retention

    def test_file_round_trip_and_hash_is_stable(self, tmp_path: Path) -> None:
        """Loading the same policy twice gives the same hash; a change changes it."""
        p = tmp_path / "p.toml"
        p.write_text(GOOD)
        assert load(p).hash == loads(GOOD).hash
        assert loads(GOOD.replace('"username"', '"user"')).hash != loads(GOOD).hash

    def test_readers_are_parsed(self) -> None:
        """Readers declare scopes and tenants."""
        r = loads(GOOD).readers["oncall"]
        assert (frozenset({"bodies:read"}), frozenset({"*"})) == (r.scopes, r.tenants)

    def test_default_policy_is_safe(self) -> None:
        """With no file: level shape, nothing allowlisted or fingerprinted, no body capture."""
        d = DEFAULT_POLICY.defaults
        assert ("shape", frozenset(), frozenset(), False) == (d.level, d.allow, d.fingerprint, d.capture_body)


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "[[rules]]\nmatch={route='/a'}\n[[rules]]\nmatch={route='/b'}\n[[rules]]\nmatch={tool=3}",
                "rules[2].match.tool: expected a string",
            ),
            (
                "[defaults]\nlevel = 'everything'",
                "defaults.level: expected one of none | metadata | shape | values",
            ),
            ("[defaults]\nlevle = 'shape'", "defaults.levle: unknown field (did you mean 'level'?)"),
            ("[[rules]]\nlevel = 'values'", "rules[0].match: required"),
            ("[[rules]]\nmatch = { path = '/x' }", "rules[0].match.path: unknown field"),
            ("[[rules]]\nmatch = { tool = 'x' }\nallow = 'password'", "rules[0].allow: expected an array"),
            (
                "[[rules]]\nmatch = { tool = 'x' }\nallow = ['ok', 'not a name']",
                "rules[0].allow[1]: expected",
            ),
            ("[defaults]\nbody_retention = 'forever'", "defaults.body_retention: expected a duration"),
            ("[defaults]\nbody_retention = -1", "defaults.body_retention: a duration cannot be negative"),
            ("[defaults]\nfail_mode = 'sometimes'", "defaults.fail_mode: expected 'open' or 'closed'"),
            ("[defaults]\ndisabled = 'yes'", "defaults.disabled: expected true or false"),
            ("version = 2", "version: only version 1 is supported"),
            (
                "[[rules]]\nid='a'\nmatch={tool='x'}\n[[rules]]\nid='a'\nmatch={tool='y'}",
                "rules[1].id: duplicate",
            ),
            ("[readers.bob]\nscopes = 'bodies:read'", "readers.bob.scopes: expected an array"),
            ("rules = 3", "rules: expected an array of tables"),
        ],
    )
    def test_bad_entry_is_named(self, text: str, expected: str) -> None:
        """Each malformed entry fails with its path in the message."""
        with pytest.raises(PolicyError) as info:
            loads(text, source="p.toml")
        assert str(info.value).startswith("p.toml: ")
        assert expected in str(info.value)

    def test_invalid_toml_names_line(self) -> None:
        """A TOML syntax error reports where it is."""
        with pytest.raises(PolicyError, match=r"p.toml: invalid TOML: .*line 2"):
            loads("id = 'x'\nlevel = = 3\n", source="p.toml")

    def test_missing_file_is_a_clear_error(self, tmp_path: Path) -> None:
        """A missing file names the path."""
        with pytest.raises(PolicyError, match="cannot read policy file"):
            load(tmp_path / "nope.toml")

    def test_invalid_utf8_names_line(self, tmp_path: Path) -> None:
        """Binary junk in a policy file names the line."""
        p = tmp_path / "p.toml"
        p.write_bytes(b"id = 'x'\n\xff\xfe = 1\n")
        with pytest.raises(PolicyError, match="line 2: not valid UTF-8"):
            load(p)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=300))
    def test_arbitrary_text_never_escapes_as_another_error(self, text: str) -> None:
        """Any input either loads or raises PolicyError, never another exception."""
        with contextlib.suppress(PolicyError):
            loads(text)


class TestMatch:
    def test_first_match_wins_and_globs(self) -> None:
        """Rules are tried in order; tool globs match."""
        pol = loads(GOOD)
        assert "deletes" == pol.match(tool="delete_user").id
        assert "defaults" == pol.match(tool="read_user").id

    def test_all_match_fields_must_match(self) -> None:
        """A rule with route and method needs both."""
        pol = loads(GOOD)
        assert "login" == pol.match(route="/login", method="post").id
        assert "defaults" == pol.match(route="/login", method="GET").id
        assert "defaults" == pol.match(route="/login").id

    def test_logger_matches_children(self) -> None:
        """A logger rule matches the logger and its children, not a prefix-sharing sibling."""
        pol = loads(GOOD)
        assert "payments-log" == pol.for_logger("shop.payments.stripe").id
        assert "defaults" == pol.for_logger("shop.paymentsX").id
        assert "defaults" == pol.for_logger(None).id

    def test_field_policy_carries_rule_settings(self) -> None:
        """Each rule exposes the processors' FieldPolicy."""
        fp = loads(GOOD).rules[0].field_policy
        assert ("values", frozenset({"username"}), frozenset({"email"}), "login") == (
            fp.level,
            fp.allow,
            fp.fingerprint,
            fp.rule_id,
        )


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), (90, 90)],
    )
    def test_units(self, text: object, seconds: float) -> None:
        """Durations accept s, m, h, d, w and plain seconds."""
        assert float(seconds) == parse_duration(text, where="x")


class TestWarnings:
    def test_sensitive_allowlisted_names_warn(self) -> None:
        """Allowlisting password-like or email-like fields warns; harmless names do not."""
        pol = loads(
            "[[rules]]\nmatch={tool='x'}\nlevel='values'\nallow=['password','user_email','amount','api_key']"
        )
        warned = sorted(w.split("'")[1] for w in sensitive_allowlist_warnings(pol))
        assert ["api_key", "password", "user_email"] == warned

    def test_allow_without_values_level_warns(self) -> None:
        """allow has no effect below level values, and the check says so."""
        pol = loads("[[rules]]\nmatch={tool='x'}\nallow=['amount']")
        assert ["rules[0].allow: has no effect unless level = 'values'"] == sensitive_allowlist_warnings(pol)


MEMO = loads(
    """
version = 1
[[rules]]
id = "orders-post"
match = { route = "/orders/*", method = "POST" }
[[rules]]
id = "orders"
match = { route = "/orders/*" }
[[rules]]
id = "tools"
match = { tool = "admin_*" }
[[rules]]
id = "payments"
match = { logger = "shop.payments" }
"""
)


def _scan(policy: Policy, **given: str | None) -> Rule:
    """What ``match`` answers without its memo: the first matching rule, in order, else the defaults."""
    attrs = {k: given.get(k) for k in ("route", "tool", "method", "logger")}
    found = [r for r in policy.rules if r.matches(**attrs)]
    return found[0] if found else policy.defaults


class TestMatchMemo:
    @settings(max_examples=200, deadline=None)
    @given(
        route=st.one_of(st.none(), st.sampled_from(["/orders/1", "/orders/{id}", "/users/2", "/"])),
        tool=st.one_of(st.none(), st.sampled_from(["admin_reset", "lookup", "admin"])),
        method=st.one_of(st.none(), st.sampled_from(["GET", "POST", "post", "tools/call"])),
        logger=st.one_of(st.none(), st.sampled_from(["shop.payments", "shop.payments.card", "shop"])),
    )
    def test_answers_as_the_rules_in_order(
        self, route: str | None, tool: str | None, method: str | None, logger: str | None
    ) -> None:
        """The memo returns the rule a scan of the rules returns, the first time and every time after."""
        expected = _scan(MEMO, route=route, tool=tool, method=method, logger=logger)
        for _ in range(2):
            assert expected is MEMO.match(route=route, tool=tool, method=method, logger=logger)

    def test_bounded_and_still_right(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past its bound the memo starts over; answers stay those of the rules."""
        import auditlog._policy_model

        monkeypatch.setattr(auditlog._policy_model, "_MAX_MATCHED", 4)
        policy = loads(GOOD.replace('id = "shop"', 'id = "memo-bound"'))
        for i in range(50):
            route = "/login" if i % 3 == 0 else f"/x/{i}"
            expected = _scan(policy, route=route, method="POST")
            assert expected is policy.match(route=route, method="POST")
            assert len(policy._matched) <= 4
        assert "login" == policy.match(route="/login", method="POST").id

    def test_copies_and_pickles_start_a_fresh_memo(self) -> None:
        """A policy that has matched still copies and pickles, and the copy matches as the original."""
        import copy
        import pickle

        MEMO.match(route="/orders/1", method="POST")
        for twin in (copy.deepcopy(MEMO), pickle.loads(pickle.dumps(MEMO))):
            assert twin == MEMO and twin.hash == MEMO.hash
            assert "orders-post" == twin.match(route="/orders/1", method="POST").id
            assert orjson.dumps(MEMO.ref_json) == orjson.dumps(twin.ref_json)

    def test_memo_is_not_part_of_the_policy(self) -> None:
        """Matching changes neither the snapshot, the hash nor equality with a fresh load."""
        text = GOOD.replace('id = "shop"', 'id = "memo-eq"')
        used, fresh = loads(text), loads(text)
        used.match(route="/orders/1", method="GET")
        assert used == fresh
        assert used.snapshot() == fresh.snapshot() and used.hash == fresh.hash
        assert orjson.dumps(used.ref) == orjson.dumps(used.ref_json)
