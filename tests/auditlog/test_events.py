"""The audit event schema, decisions, level shaping, correlation ids and actors (no servers)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import auditlog.actor
import auditlog.events
from auditlog.actor import ANONYMOUS, Actor, actor_from_claims, default_actor, wsgi_actor
from auditlog.canaries import load_canaries
from auditlog.correlation import parse_traceparent, resolve, valid_request_id
from auditlog.events import Action, Outcome, build_event, decide, shape_value
from auditlog.policy import loads
from processors import SecretScanner, shape_of

CANARIES = load_canaries()
SCANNER = SecretScanner()
POLICY = loads(
    """
version = 1
[[rules]]
id = "admin"
match = { tool = "admin_*" }
required_scopes = ["admin", "write"]
[[rules]]
id = "off"
match = { tool = "off" }
disabled = true
[[rules]]
id = "vals"
match = { tool = "vals" }
level = "values"
allow = ["q", "n", "blob"]
fingerprint = ["email"]
[[rules]]
id = "meta"
match = { tool = "meta" }
level = "metadata"
fingerprint = ["email"]
[[rules]]
id = "none"
match = { tool = "none" }
level = "none"
"""
)


def fp(value: object) -> str:
    return "k1:" + str(hash(str(value)) & 0xFFFF)


class TestDecide:
    def test_kill_switch_wins(self) -> None:
        """A disabled rule refuses whatever the actor holds."""
        d = decide(POLICY.match(tool="off"), Actor(scopes=frozenset({"admin"})), enforce=False)
        assert (False, "disabled", "off") == (d.allowed, d.reason, d.rule)

    def test_missing_scopes_enforced_or_recorded(self) -> None:
        """Missing scopes refuse under enforce, are recorded otherwise."""
        rule = POLICY.match(tool="admin_drop")
        actor = Actor(scopes=frozenset({"write"}))
        enforced = decide(rule, actor, enforce=True)
        recorded = decide(rule, actor, enforce=False)
        assert (False, "missing_scopes", ("admin",)) == (enforced.allowed, enforced.reason, enforced.missing)
        assert (True, "not_enforced", ("admin",)) == (recorded.allowed, recorded.reason, recorded.missing)
        ok = decide(rule, Actor(scopes=frozenset({"admin", "write"})), enforce=True)
        assert (True, "scopes_ok", ("admin", "write")) == (ok.allowed, ok.reason, ok.required)

    def test_no_requirements_allowed(self) -> None:
        """A rule without required scopes allows the anonymous actor."""
        assert "allowed" == decide(POLICY.defaults, ANONYMOUS, enforce=True).reason


class TestBuildEvent:
    def test_schema_fields(self) -> None:
        """Every schema field is present; extra sections cannot replace schema fields."""
        event = build_event(
            "mcp.tool_call",
            correlation_id="c" * 32,
            span_id="s" * 16,
            actor=Actor(subject="u1", scopes=frozenset({"b", "a"})),
            action=Action(name="t", method="tools/call"),
            decision=decide(POLICY.defaults, ANONYMOUS, enforce=False),
            outcome=Outcome(status="ok", duration_ms=1.23456),
            args_shape={"t": "obj"},
            fp={"email": "k1:x"},
            extra={"mcp": {"is_error": False}, "kind": "forged"},
        )
        assert 1 == event["v"]
        assert "mcp.tool_call" == event["kind"]
        assert ["a", "b"] == event["actor"]["scopes"]
        assert 1.235 == event["outcome"]["duration_ms"]
        assert {"mcp": {"is_error": False}} == {"mcp": event["mcp"]}
        assert "result_shape" not in event and "body_ref" not in event

    def test_all_matches_public_names(self) -> None:
        """__all__ lists the public members of events and actor."""
        for module in (auditlog.events, auditlog.actor):
            public = {n for n in vars(module) if not n.startswith("_")} & set(module.__all__)
            assert sorted(module.__all__) == sorted(public)


class TestShapeValue:
    def test_levels(self) -> None:
        """none: nothing; metadata: fingerprints only; shape: shapes; values: allowlisted scalars, scanned."""
        args = {"q": "red shoes", "n": 3, "email": CANARIES.values["email"], "other": "x", "blob": [1]}
        assert (None, {}) == shape_value(
            args, rule=POLICY.match(tool="none"), scanner=SCANNER, fingerprint=fp
        )
        shape, fps = shape_value(args, rule=POLICY.match(tool="meta"), scanner=SCANNER, fingerprint=fp)
        assert (None, {"email": fp(args["email"])}) == (shape, fps)
        plain, _ = shape_value(args, rule=POLICY.defaults, scanner=SCANNER)
        assert {"t": "str", "len": 9} == plain["keys"]["q"]
        rendered, _ = shape_value(args, rule=POLICY.defaults, scanner=SCANNER, render=True)
        assert "Fragment" == type(rendered).__name__  # for the journal: the JSON of shape_of(args)
        assert orjson.dumps(shape_of(args)) == orjson.dumps(rendered) == orjson.dumps(plain)
        vals, _ = shape_value(args, rule=POLICY.match(tool="vals"), scanner=SCANNER, fingerprint=fp)
        assert ("red shoes", 3) == (vals["keys"]["q"]["v"], vals["keys"]["n"]["v"])
        assert "v" not in vals["keys"]["other"] and "v" not in vals["keys"]["blob"]

    @given(
        canary=st.sampled_from(sorted(CANARIES.values.values())), key=st.sampled_from(["q", "other", "zz"])
    )
    def test_allowlisted_values_are_scanned(self, canary: str, key: str) -> None:
        """A canary in an allowlisted field comes out masked; elsewhere it is only shaped."""
        import orjson

        out = shape_value({key: canary, canary: 1}, rule=POLICY.match(tool="vals"), scanner=SCANNER)
        assert [] == CANARIES.leaks_in(orjson.dumps(out))

    def test_failures_fail_closed(self) -> None:
        """A value whose mapping access raises yields an unshapeable marker, never an exception."""

        class Evil(dict[str, Any]):
            def get(self, *a: Any) -> Any:
                raise RuntimeError("boom")

        shape, _ = shape_value(
            Evil(email="x"), rule=POLICY.match(tool="meta"), scanner=SCANNER, fingerprint=fp
        )
        assert "<unshapeable:RuntimeError>" == shape


class TestCorrelation:
    def test_traceparent(self) -> None:
        """W3C rules: version ff, zero ids, upper case and extra fields on version 00 are invalid."""
        tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        assert (tid, sid) == parse_traceparent(f"00-{tid}-{sid}-01")
        assert (tid, sid) == parse_traceparent(f"01-{tid}-{sid}-01-future")
        for bad in (
            f"ff-{tid}-{sid}-01",
            f"00-{'0' * 32}-{sid}-01",
            f"00-{tid}-{'0' * 16}-01",
            f"00-{tid.upper()}-{sid}-01",
            f"00-{tid}-{sid}-01-x",
            "garbage",
            None,
            5,
        ):
            assert parse_traceparent(bad) is None

    def test_request_id(self) -> None:
        """Charset, length, no '..', nothing the scanner flags."""
        assert "req-1234.abc_X" == valid_request_id("req-1234.abc_X", SCANNER)
        for bad in ("short", "a" * 97, "-lead-1234", "a..b-1234", "has space 1", CANARIES.values["api_key"]):
            assert valid_request_id(bad, SCANNER) is None

    def test_precedence(self) -> None:
        """traceparent, then x-request-id, then a new id; span ids are per request."""
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        a = resolve(traceparent=tp, request_id="req-12345678")
        assert ("traceparent", "00f067aa0ba902b7") == (a.source, a.parent_span_id)
        assert "x-request-id" == resolve(traceparent="bad", request_id="req-12345678").source
        b, c = resolve(), resolve()
        assert ("new", 32) == (b.source, len(b.correlation_id))
        assert b.correlation_id != c.correlation_id
        assert a.request_key == f"{a.correlation_id}.{a.span_id}"

    def test_current_span(self) -> None:
        """Inside a recording span the ids are the span's (before x-request-id); outside, a new id."""
        from opentelemetry.sdk.trace import TracerProvider

        with TracerProvider().get_tracer("tests").start_as_current_span("request") as span:
            ctx = span.get_span_context()
            inside = resolve(request_id="req-12345678")
        outside = resolve(request_id="req-12345678")
        assert ("otel", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") == (
            inside.source,
            inside.correlation_id,
            inside.span_id,
        )
        assert "x-request-id" == outside.source


class TestActor:
    def test_scope_user_and_auth(self) -> None:
        """Starlette user + AuthCredentials; the MCP user's token; a claims mapping in scope['auth']."""
        user = SimpleNamespace(is_authenticated=True, identity="alice")
        creds = SimpleNamespace(scopes=["read", "write"])
        assert Actor(subject="alice", scopes=frozenset({"read", "write"})) == default_actor(
            {"user": user, "auth": creds}
        )
        token = SimpleNamespace(client_id="cli", scopes=["x"], subject="sub-1", claims={"tid": "acme"})
        assert Actor(
            subject="sub-1", tenant="acme", client_id="cli", scopes=frozenset({"x"})
        ) == default_actor({"user": SimpleNamespace(access_token=token)})
        claims = {"claims": {"sub": "s", "org_id": "o", "azp": "c", "scope": "a b"}}
        assert Actor(subject="s", tenant="o", client_id="c", scopes=frozenset({"a", "b"})) == default_actor(
            {"auth": claims}
        )

    def test_never_from_unverified_input(self) -> None:
        """Headers, query and body in the scope are not identity; unauthenticated users are anonymous."""
        scope = {
            "headers": [(b"x-user", b"mallory")],
            "query_string": b"sub=mallory",
            "user": SimpleNamespace(is_authenticated=False, identity="mallory"),
        }
        assert ANONYMOUS == default_actor(scope)
        assert ANONYMOUS == wsgi_actor({"HTTP_X_USER": "mallory", "QUERY_STRING": "sub=mallory"})
        assert Actor(subject="bob") == wsgi_actor({"REMOTE_USER": "bob"})
        assert "t1" == wsgi_actor({"auditlog.claims": {"tenant": "t1"}}).tenant

    def test_redacted_fingerprints_pii_identifiers(self) -> None:
        """An email as subject becomes its fingerprint; a clean label stays."""
        actor = actor_from_claims({"sub": CANARIES.values["email"], "tenant": "acme", "scp": ["ok", "a b"]})
        red = actor.redacted(SCANNER, fp)
        assert (fp(CANARIES.values["email"]), "acme") == (red.subject, red.tenant)
        assert None is Actor(subject=CANARIES.values["api_key"]).redacted(SCANNER, None).subject


@pytest.mark.parametrize("name", ["auditlog.integrations.mcp", "auditlog.integrations.fastmcp"])
def test_mcp_modules_import(name: str) -> None:
    """The MCP adapters import with the extra installed."""
    __import__(name)


class TestKeptJson:
    @given(
        subject=st.one_of(st.none(), st.text(max_size=8)),
        tenant=st.one_of(st.none(), st.text(max_size=8)),
        scopes=st.frozensets(st.text(min_size=1, max_size=6), max_size=4),
    )
    def test_actor_json_is_its_dict(
        self, subject: str | None, tenant: str | None, scopes: frozenset[str]
    ) -> None:
        """Actor.as_json holds the JSON of as_dict, on first use and after."""
        actor = Actor(subject=subject, tenant=tenant, scopes=scopes)
        for _ in range(2):
            assert orjson.dumps(actor.as_dict()) == orjson.dumps(actor.as_json())
        assert actor == Actor(subject=subject, tenant=tenant, scopes=scopes)  # the kept JSON is not compared

    @pytest.mark.parametrize("tool", ["anything", "admin_x", "off"])
    @pytest.mark.parametrize("scopes", [frozenset(), frozenset({"admin"}), frozenset({"admin", "write"})])
    @pytest.mark.parametrize("enforce", [True, False])
    def test_decision_json_and_kept_decisions(self, tool: str, scopes: frozenset[str], enforce: bool) -> None:
        """decide answers as the rule says whether or not it kept the decision; as_json is as_dict's JSON."""
        rule = POLICY.match(tool=tool)
        actor = Actor(subject="u", scopes=scopes)
        first, second = decide(rule, actor, enforce=enforce), decide(rule, actor, enforce=enforce)
        assert first == second
        assert orjson.dumps(first.as_dict()) == orjson.dumps(first.as_json())
        missing = tuple(sorted(rule.required_scopes - scopes))
        assert (not rule.disabled and (not missing or not enforce)) == first.allowed
        if rule.disabled:
            assert "disabled" == first.reason
        elif not rule.required_scopes:
            assert "allowed" == first.reason
            assert first is second  # one decision per rule that requires nothing
        elif not missing:
            assert "scopes_ok" == first.reason
        else:
            assert ("missing_scopes" if enforce else "not_enforced") == first.reason
            assert missing == first.missing

    def test_copies_and_pickles_leave_the_kept_json_behind(self) -> None:
        """An actor or decision whose JSON was kept still copies and pickles (orjson.Fragment does not)."""
        import copy
        import pickle

        actor = Actor(subject="u1", tenant="t", scopes=frozenset({"a"}))
        decision = decide(POLICY.match(tool="admin_x"), actor, enforce=True)
        for value in (actor, decision):
            value.as_json()
            for twin in (copy.deepcopy(value), copy.copy(value), pickle.loads(pickle.dumps(value))):
                assert value == twin
                assert orjson.dumps(value.as_json()) == orjson.dumps(twin.as_json())

    def test_rendered_event_serializes_as_the_dict_event(self) -> None:
        """build_event(render=True) writes the same JSON as the dict form."""
        kw: dict[str, Any] = {
            "correlation_id": "c" * 32,
            "span_id": "s" * 16,
            "actor": Actor(subject="u1", tenant="t", scopes=frozenset({"b", "a"})),
            "action": Action(name="t", method="tools/call"),
            "decision": decide(POLICY.match(tool="admin_x"), ANONYMOUS, enforce=True),
            "outcome": Outcome(status="ok", duration_ms=1.23456),
            "args_shape": {"t": "obj"},
            "extra": {"mcp": {"is_error": False}},
        }
        plain = build_event("mcp.tool_call", **kw)
        rendered = build_event("mcp.tool_call", **kw, render=True)
        assert orjson.dumps(plain) == orjson.dumps(rendered)
        assert isinstance(rendered["actor"], orjson.Fragment) and isinstance(plain["actor"], dict)


class TestNewIds:
    def test_new_ids_are_fresh_hex(self) -> None:
        """With nothing to go on, the correlation and span ids are new random hex, different per call."""
        seen = set()
        for _ in range(200):
            corr = resolve()
            assert "new" == corr.source
            assert 32 == len(corr.correlation_id) and 16 == len(corr.span_id)
            int(corr.correlation_id, 16), int(corr.span_id, 16)
            seen.add((corr.correlation_id, corr.span_id))
        assert 200 == len(seen)
