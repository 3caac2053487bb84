"""auditlog.investigate: the Investigation API over journal segments and Parquet, its sandbox, its journaling.

The incident here is generated through the real pipeline (``auditlog.configure``, ``AuditHandle.emit``,
structlog) into a real chained journal; :func:`write_incident` is shared with the other test modules.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import structlog
import typer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import auditlog
from auditlog.canaries import load_canaries
from auditlog.investigate import (
    BadTimeRange,
    CorruptSource,
    EmptySource,
    Investigation,
    NotJournaled,
    Result,
    SandboxViolation,
    UnknownCorrelationId,
    parse_time,
)
from auditlog.lake.compact import compact
from auditlog.policy import loads
from processors import Fingerprinter
from store.journal import JournalConfig
from store.keys import KeyRing, MasterKey
from store.trail import iter_trail_records
from tests._support import every_record, only_stream, query_cli, write_key_file

POLICY_TOML = """
version = 1
id = "incident-shop"

[defaults]
level = "shape"
journal_retention = "400d"

[[rules]]
id = "payments"
match = { logger = "shop.payments" }
level = "values"
allow = ["amount"]
fingerprint = ["card_token", "email"]
body_retention = "3d"
"""
POLICY = loads(POLICY_TOML)
ACTORS = {
    "alice": ("acme", ["orders:read"], ["search_orders", "get_order"]),
    "bob": ("acme", ["orders:read"], ["get_order"]),
    "carol": ("globex", ["orders:read", "orders:write"], ["search_orders", "update_order"]),
}
CANARIES = load_canaries()
ROOT = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Incident:
    """What :func:`write_incident` planted, to compare query results with."""

    root: Path
    journal: Path
    ring: KeyRing
    incident_cid: str
    incident_steps: list[str]
    token: str
    token_cids: list[str]
    denied_cids: list[str]
    card: str
    card_cids: list[str]
    days: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def handle(self, **kw: Any) -> auditlog.AuditHandle:
        """Re-open the journal with the incident's key and policy (for query.run events)."""
        return auditlog.configure(
            journal_dir=self.journal,
            key=self.ring,
            policy=POLICY,
            stdlib=False,
            journal_config=JournalConfig(fsync="never", source="web-1", max_segment_bytes=64 * 1024),
            **kw,
        )


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_incident(
    root: Path, *, per_day: int = 30, days: int = 3, segment_bytes: int = 16 * 1024
) -> Incident:
    """Write a baseline of normal traffic over ``days`` days, then a stolen-token incident now.

    Everything goes through ``auditlog.configure``: audit events through ``handle.emit`` (with the
    fingerprints the middleware would compute), application log lines through structlog with canaries in
    their arguments (shaped away) and a card token the policy fingerprints.
    """
    ring = KeyRing(MasterKey.generate())
    journal = root / "journal"
    handle = auditlog.configure(
        journal_dir=journal,
        key=ring,
        policy=POLICY,
        stdlib=False,
        journal_config=JournalConfig(fsync="never", source="web-1", max_segment_bytes=segment_bytes),
    )
    fp = handle.fingerprinter.fingerprint
    counts: dict[str, int] = {}

    def emit(kind: str, **fields: Any) -> str:
        cid = fields.setdefault("correlation_id", uuid.uuid4().hex)
        assert handle.emit({"v": 1, "kind": kind, "span_id": uuid.uuid4().hex[:16], **fields})
        counts[kind] = counts.get(kind, 0) + 1
        return str(cid)

    def call(actor: str, tool: str, *, allowed: bool = True, client: str = "web", **kw: Any) -> str:
        tenant, scopes, _ = ACTORS[actor]
        return emit(
            "mcp.tool_call" if allowed else "authz.denied",
            actor={"subject": actor, "tenant": tenant, "client_id": client, "scopes": scopes},
            action={"name": tool, "method": "tools/call", "target": None},
            decision={
                "allowed": allowed,
                "reason": "scopes_ok" if allowed else "missing_scopes",
                "rule": "tools",
                "required": ["orders:read"] if allowed else ["admin:export"],
            },
            outcome={
                "status": kw.pop("status", "ok" if allowed else "denied"),
                "http_status": None,
                "error_type": kw.pop("error_type", None),
                "duration_ms": 3.5,
            },
            args_shape={"t": "obj", "keys": {"query": {"t": "str", "len": 12}}},
            **kw,
        )

    now = datetime.now(UTC).replace(tzinfo=None)
    day_names = []
    for d in range(days, 0, -1):
        start = (now - timedelta(days=d)).replace(hour=8, minute=0, second=0, microsecond=0)
        day_names.append(start.strftime("%Y-%m-%d"))
        for i in range(per_day):
            name = list(ACTORS)[i % 3]
            ts = start + timedelta(minutes=17 * i)
            tools = ACTORS[name][2]
            call(name, tools[i % len(tools)], ts=_iso(ts))
            if i % 5 == 0:
                emit(
                    "http.request",
                    ts=_iso(ts + timedelta(seconds=1)),
                    actor={"subject": name, "tenant": ACTORS[name][0], "client_id": "web", "scopes": []},
                    action={"name": "/orders/{order_id}", "method": "GET", "target": "/orders/{n}"},
                    decision={"allowed": True, "reason": "allowed", "rule": "default", "required": []},
                    outcome={"status": "ok", "http_status": 200, "error_type": None, "duration_ms": 2.0},
                )
    day_names.append(now.strftime("%Y-%m-%d"))

    # The incident: alice's token is used from an unknown client, now.
    token = "tok_" + uuid.uuid4().hex
    card = CANARIES.values["credit_card"]
    cid = uuid.uuid4().hex
    log = structlog.get_logger("shop.payments")
    steps = []
    call("alice", "search_orders", client="evil-cli", correlation_id=cid)
    steps.append("mcp.tool_call")
    structlog.contextvars.bind_contextvars(correlation_id=cid)
    try:
        log.info(
            "export.requested",
            amount=12,
            card_token=card,
            email=CANARIES.values["email"],
            note=CANARIES.values["free_text"],
            password=CANARIES.values["password"],
        )
    finally:
        structlog.contextvars.unbind_contextvars("correlation_id")
    steps.append("log")
    call(
        "alice",
        "export_customers",
        allowed=False,
        client="evil-cli",
        correlation_id=cid,
        fp={"api_key": fp(token)},
    )
    steps.append("authz.denied")
    emit(
        "body.read",
        correlation_id=cid,
        actor={"subject": "oncall-ann"},
        decision={"allowed": True, "reason": None},
        purpose="INC-7731",
        tenant="acme",
        size=2048,
        store="local",
    )
    steps.append("body.read")
    call(
        "alice", "get_order", client="evil-cli", correlation_id=cid, status="error", error_type="TimeoutError"
    )
    steps.append("mcp.tool_call")

    denied = [cid]
    token_cids = [cid]
    for i in range(6):
        carried = {"fp": {"headers": {"authorization": fp(token)}}} if i < 2 else {}
        c = call(
            "alice",
            "delete_user" if i % 2 else "export_customers",
            allowed=False,
            client="evil-cli",
            **carried,
        )
        denied.append(c)
        if i < 2:
            token_cids.append(c)
    for _ in range(25):
        call("alice", "search_orders", client="evil-cli")
    emit(
        "body.read_denied",
        correlation_id=cid,
        actor={"subject": "intern"},
        decision={"allowed": False, "reason": "missing_scope", "required": ["bodies:read"]},
        purpose="curious",
        store="local",
    )
    card_cids = []
    for _ in range(2):
        c2 = uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(correlation_id=c2)
        try:
            log.info("payment.captured", amount=5, card_token=card)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id")
        card_cids.append(c2)
    handle.shutdown()
    return Incident(
        root=root,
        journal=journal,
        ring=ring,
        incident_cid=cid,
        incident_steps=steps,
        token=token,
        token_cids=token_cids,
        denied_cids=denied,
        card=card,
        card_cids=card_cids,
        days=day_names,
        counts=counts,
    )


class Sink:
    """An audit sink that keeps what it is given (and can refuse)."""

    def __init__(self, ring: KeyRing, *, accept: bool = True) -> None:
        self.keys = ring
        self.events: list[dict[str, Any]] = []
        self.accept = accept

    def emit(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return self.accept


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    return write_incident(tmp_path_factory.mktemp("incident"))


@pytest.fixture
def sink(incident: Incident) -> Sink:
    return Sink(incident.ring)


@pytest.fixture
def inv(incident: Incident, sink: Sink) -> Iterator[Investigation]:
    with Investigation(incident.journal, audit=sink) as investigation:
        yield investigation


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    """A second incident whose sealed segments are all compacted."""
    inc = write_incident(tmp_path_factory.mktemp("compacted"))
    compact(inc.journal, keys=inc.ring)
    return inc


class TestTimeline:
    def test_every_step_in_order(self, inv: Investigation, incident: Incident) -> None:
        """The incident's timeline has each step, audit events and log lines together, in order."""
        result = inv.timeline(incident.incident_cid)
        assert [*incident.incident_steps, "body.read_denied"] == result.column("kind")
        assert [
            "search_orders",
            "export.requested",
            "export_customers",
            None,
            "get_order",
            None,
        ] == result.column("what")
        assert sorted(result.column("ts")) == result.column("ts")

    def test_unknown_correlation_id(self, inv: Investigation) -> None:
        """An id nobody used is a clear error, not an empty table."""
        with pytest.raises(UnknownCorrelationId, match="no event has that correlation id"):
            inv.timeline("no-such-id")

    def test_same_rows_after_compaction(self, compacted: Incident) -> None:
        """Over Parquet (all sealed segments compacted) the timeline is identical to the JSONL one."""
        with Investigation(compacted.journal, audit=Sink(compacted.ring)) as inv:
            assert inv.catalog.live_table().num_rows == 0
            parquet = inv.timeline(compacted.incident_cid)
        raw = Investigation(compacted.journal / "parquet", audit=Sink(compacted.ring))
        with raw:
            assert parquet == raw.timeline(compacted.incident_cid)
        assert [*compacted.incident_steps, "body.read_denied"] == parquet.column("kind")

    def test_live_and_compacted_together(self, tmp_path: Path) -> None:
        """Events written after compaction (still JSONL) join the compacted ones in one timeline."""
        inc = write_incident(tmp_path, per_day=6, days=1)
        compact(inc.journal, keys=inc.ring)
        with inc.handle() as handle:
            handle.emit(
                {"kind": "http.request", "correlation_id": inc.incident_cid, "action": {"name": "/x"}}
            )
            with Investigation(inc.journal, audit=handle) as inv:
                kinds = inv.timeline(inc.incident_cid).column("kind")
        assert [*inc.incident_steps, "body.read_denied", "http.request"] == kinds


class TestFind:
    def test_finds_exactly_the_calls_that_carried_the_token(
        self, inv: Investigation, incident: Incident
    ) -> None:
        """find(token) returns the calls whose fingerprints hold it, and names the fp field."""
        result = inv.find(incident.token)
        assert sorted(incident.token_cids) == sorted(result.column("correlation_id"))
        assert {("api_key",), ("headers.authorization",)} == set(result.column("fields"))

    def test_finds_log_lines_fingerprinted_by_policy(self, inv: Investigation, incident: Incident) -> None:
        """A card token fingerprinted by the policy's rule is found in the application log lines."""
        result = inv.find(incident.card)
        assert {incident.incident_cid, *incident.card_cids} == set(result.column("correlation_id"))
        assert {"log"} == set(result.column("kind"))

    def test_value_never_journaled(self, incident: Incident, tmp_path: Path) -> None:
        """find journals the value's shape only: the journal never holds the value or its fingerprint."""
        with incident.handle() as handle, Investigation(incident.journal, audit=handle) as inv:
            assert len(inv.find(incident.token)) == 3
        runs = [r for r in every_record(incident.journal) if r.get("kind") == "query.run"]
        assert {"t": "str", "len": len(incident.token)} == runs[-1]["query"]["params"]["value"]
        raw = b"".join(p.read_bytes() for p in incident.journal.rglob("*.jsonl"))
        assert incident.token.encode() not in raw
        fp = handle.fingerprinter.fingerprint(incident.token)
        assert raw.count(fp.encode()) == 3  # the three events that carried it, not the query

    def test_rotated_keys(self, tmp_path: Path) -> None:
        """After a key rotation, find fingerprints under every key of the ring."""
        old = KeyRing(MasterKey.generate())
        h = auditlog.configure(journal_dir=tmp_path / "j", key=old, stdlib=False)
        h.emit(
            {"kind": "http.request", "correlation_id": "c-old", "fp": {"t": h.fingerprinter.fingerprint("v")}}
        )
        h.shutdown()
        new = KeyRing(MasterKey.generate(), (old.active,))
        h = auditlog.configure(journal_dir=tmp_path / "j", key=new, stdlib=False)
        h.emit(
            {"kind": "http.request", "correlation_id": "c-new", "fp": {"t": h.fingerprinter.fingerprint("v")}}
        )
        try:
            with Investigation(tmp_path / "j", audit=h) as inv:
                assert ["c-old", "c-new"] == inv.find("v").column("correlation_id")
        finally:
            h.shutdown()


class TestNamedQueries:
    def test_denials_list_the_stolen_token_calls(self, inv: Investigation, incident: Incident) -> None:
        """denials lists every refused call of the stolen token, and the refused body read."""
        result = inv.denials()
        calls = [r["correlation_id"] for r in result if r["kind"] == "authz.denied"]
        assert incident.denied_cids == calls
        assert {"alice"} == {r["actor"] for r in result if r["kind"] == "authz.denied"}
        assert ["intern"] == [r["actor"] for r in result if r["kind"] == "body.read_denied"]

    def test_body_reads(self, inv: Investigation, incident: Incident) -> None:
        """body_reads names reader, purpose and correlation id, refused reads included."""
        rows = inv.body_reads().as_dicts()
        assert [("oncall-ann", True, "INC-7731", 2048), ("intern", False, "curious", None)] == [
            (r["reader"], r["allowed"], r["purpose"], r["size"]) for r in rows
        ]
        assert {incident.incident_cid} == {r["correlation_id"] for r in rows}

    def test_actor_in_range(self, inv: Investigation, incident: Incident) -> None:
        """actor() honours the time range."""
        everything = inv.actor("bob")
        first_day = inv.actor("bob", since=incident.days[0], until=incident.days[0] + "T23:59:59")
        assert 0 < len(first_day) < len(everything)
        assert {incident.days[0]} == {r["ts"].strftime("%Y-%m-%d") for r in first_day}

    def test_top_tools(self, inv: Investigation) -> None:
        """top(by='tool') counts calls, denials and errors per tool, busiest first."""
        rows = {r["tool"]: r for r in inv.top("tool", limit=20)}
        assert (4, 3) == (rows["export_customers"]["denied"], rows["delete_user"]["denied"])
        assert 1 == rows["get_order"]["errors"]
        assert "search_orders" == inv.top("tool", limit=1).rows[0][0]

    def test_top_routes_and_actors(self, inv: Investigation) -> None:
        """Routes come from HTTP events, actors from every call."""
        assert ["/orders/{order_id}"] == inv.top("route").column("route")
        assert "alice" == inv.top("actor", limit=1).column("actor")[0]

    def test_top_rejects_unknown_dimension(self, inv: Investigation) -> None:
        """An unknown 'by' is a ValueError."""
        with pytest.raises(ValueError, match="by must be"):
            inv.top("colour")  # type: ignore[arg-type]

    def test_anomalies(self, inv: Investigation) -> None:
        """The incident shows a rate spike, a denial burst and first-seen tools, all for alice."""
        rows = inv.anomalies().as_dicts()
        kinds = {(r["type"], r["actor"]) for r in rows}
        assert {("rate_spike", "alice"), ("denial_burst", "alice"), ("first_seen_tool", "alice")} == kinds
        assert {"export_customers", "delete_user"} == {
            r["what"] for r in rows if r["type"] == "first_seen_tool"
        }


class TestTimeRanges:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-22", datetime(2026, 11, 22)),
            ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10)),
            ("2026-11-22T12:00:00+02:00", datetime(2026, 11, 22, 10)),
        ],
    )
    def test_parse(self, text: str, expected: datetime) -> None:
        """ISO dates and times become naive UTC."""
        assert expected == parse_time(text)

    def test_relative(self) -> None:
        """'24h' means 24 hours before now."""
        now = datetime(2026, 11, 22, 12)
        assert datetime(2026, 11, 21, 12) == parse_time("24h", now=now)

    @pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "5 fortnights"])
    def test_unparseable(self, inv: Investigation, bad: str) -> None:
        """An unparseable bound is a BadTimeRange naming the parameter."""
        with pytest.raises(BadTimeRange, match="since"):
            inv.denials(since=bad)

    def test_since_after_until(self, inv: Investigation) -> None:
        """An empty range is refused."""
        with pytest.raises(BadTimeRange, match="since is after until"):
            inv.denials(since="2026-11-22", until="2026-11-21")


class TestSandbox:
    def test_copy_to_refused(self, inv: Investigation, tmp_path: Path) -> None:
        """COPY ... TO is refused by the statement check and, underneath, by the engine."""
        target = tmp_path / "out.csv"
        with pytest.raises(SandboxViolation, match="COPY"):
            inv.sql(f"COPY (SELECT * FROM events) TO '{target}'")
        with pytest.raises(duckdb.PermissionException):
            inv.connection.execute(f"COPY (SELECT 1) TO '{target}'")
        assert not target.exists()

    def test_copy_over_audit_data_refused(self, inv: Investigation, compacted: Incident) -> None:
        """Even the audit data's own files cannot be overwritten by the engine."""
        part = next((compacted.journal / "parquet").rglob("*.parquet"))
        before = part.read_bytes()
        with pytest.raises(duckdb.PermissionException):
            inv.connection.execute(f"COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)")
        assert before == part.read_bytes()

    def test_attach_refused(self, inv: Investigation, tmp_path: Path) -> None:
        """ATTACH is refused (statement check and engine)."""
        db = tmp_path / "x.duckdb"
        with pytest.raises(SandboxViolation, match="ATTACH"):
            inv.sql(f"ATTACH '{db}' AS x")
        with pytest.raises(duckdb.PermissionException):
            inv.connection.execute(f"ATTACH '{db}' AS x")
        assert not db.exists()

    @pytest.mark.parametrize(
        "query",
        [
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_text('{journal}/00000001.jsonl')",
            "SELECT * FROM read_parquet('{journal}/parquet/**/*.parquet')",
            "SELECT * FROM glob('{journal}/*')",
        ],
    )
    def test_reads_outside_the_views_refused(
        self, inv: Investigation, incident: Incident, query: str
    ) -> None:
        """No file can be read by SQL, not even the journal's: data enters only through the events view."""
        with pytest.raises(SandboxViolation, match="refused"):
            inv.sql(query.replace("{journal}", str(incident.journal)))

    @pytest.mark.parametrize(
        "stmt",
        [
            "SET enable_external_access = true",
            "SET threads = 1",
            "RESET allowed_directories",
            "PRAGMA threads=1",
        ],
    )
    def test_set_refused(self, inv: Investigation, stmt: str) -> None:
        """SET, RESET and PRAGMA are refused; the engine's configuration is locked anyway."""
        with pytest.raises(SandboxViolation):
            inv.sql(stmt)
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            inv.connection.execute(stmt)

    @pytest.mark.parametrize(
        "stmt",
        [
            "INSTALL httpfs",
            "LOAD httpfs",
            "CREATE TABLE t AS SELECT 1",
            "SELECT 1; SELECT 2",
            "DROP VIEW events",
        ],
    )
    def test_other_statements_refused(self, inv: Investigation, stmt: str) -> None:
        """Only a single query passes."""
        with pytest.raises(SandboxViolation):
            inv.sql(stmt)

    def test_select_with_params(self, inv: Investigation) -> None:
        """A read-only query with parameters runs against the events view."""
        result = inv.sql("SELECT count(*) AS n FROM events WHERE actor_subject = ?", ["intern"])
        assert [(1,)] == list(result.rows)

    def test_named_query_connection_reads_only_the_parquet_files(
        self, inv: Investigation, compacted: Incident
    ) -> None:
        """The connection for named queries reads the audit Parquet files and nothing else, and is locked."""
        with Investigation(compacted.journal, audit=Sink(compacted.ring)) as inv2:
            reader = inv2.reader
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] > 0
            for path in ("/etc/passwd", str(sorted(compacted.journal.glob("*.jsonl"))[0])):
                with pytest.raises(duckdb.PermissionException):
                    reader.execute(f"SELECT * FROM read_text('{path}')")
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                reader.execute("SET enable_external_access = true")

    def test_refusals_are_journaled(self, inv: Investigation, sink: Sink) -> None:
        """A refused statement is journaled as refused, with the SQL's hash, not its text."""
        with pytest.raises(SandboxViolation):
            inv.sql("COPY (SELECT 1) TO '/tmp/nope.csv'")
        event = sink.events[-1]
        assert ("sql", "refused") == (event["query"]["name"], event["outcome"]["status"])
        assert "nope" not in orjson.dumps(event).decode()
        assert 64 == len(event["query"]["sql_sha256"])


class TestJournaling:
    def test_every_query_is_journaled(self, inv: Investigation, sink: Sink, incident: Incident) -> None:
        """Each named query writes one query.run with its name, parameter shapes and row count."""
        inv.timeline(incident.incident_cid)
        inv.actor("bob", since="2000-01-01")
        inv.denials()
        inv.body_reads()
        inv.top("actor")
        inv.anomalies()
        names = [(e["kind"], e["query"]["name"]) for e in sink.events]
        assert [
            ("query.run", n) for n in ("timeline", "actor", "denials", "body_reads", "top", "anomalies")
        ] == names
        timeline = sink.events[0]["query"]
        assert {
            "correlation_id": {"t": "str", "len": len(incident.incident_cid)},
            "since": {"t": "null"},
            "until": {"t": "null"},
        } == timeline["params"]
        assert 6 == timeline["rows"]
        assert {
            "subject": {"t": "str", "len": 3},
            "since": {"t": "time"},
            "until": {"t": "null"},
        } == sink.events[1]["query"]["params"]

    def test_no_values_in_query_events(self, inv: Investigation, sink: Sink, incident: Incident) -> None:
        """Neither parameters nor SQL literals reach the event."""
        inv.actor("carol")
        inv.sql("SELECT count(*) FROM events WHERE actor_subject = 'carol'")
        blob = orjson.dumps(sink.events)
        assert b"carol" not in blob

    def test_refused_by_journal_withholds_result(self, incident: Incident) -> None:
        """A journal that does not take query.run refuses the query."""
        with (
            Investigation(incident.journal, audit=Sink(incident.ring, accept=False)) as inv,
            pytest.raises(NotJournaled, match="withheld"),
        ):
            inv.denials()

    def test_needs_an_audit_handle(self, incident: Incident, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a handle (and none configured) an investigation cannot start."""
        monkeypatch.setattr("auditlog.handle._current", None)
        with pytest.raises(NotJournaled, match="journaled"):
            Investigation(incident.journal)

    def test_uses_the_configured_handle(self, incident: Incident) -> None:
        """With no audit= the active configure() handle journals, into the same journal."""
        with incident.handle(), Investigation(incident.journal) as inv:
            inv.denials()
        runs = [r for r in every_record(incident.journal) if r.get("kind") == "query.run"]
        assert "denials" == runs[-1]["query"]["name"]


@pytest.fixture(scope="module")
def shared_inv(incident: Incident) -> Iterator[tuple[Investigation, Sink]]:
    sink = Sink(incident.ring)
    with Investigation(incident.journal, audit=sink) as investigation:
        yield investigation, sink


class TestNoValuesJournaled:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=st.one_of(st.text(min_size=6, max_size=80), st.sampled_from(sorted(set(CANARIES.needles)))))
    def test_find_and_actor_journal_shapes_only(
        self, shared_inv: tuple[Investigation, Sink], value: str
    ) -> None:
        """Whatever is looked up, the query.run events hold neither it nor its fingerprint."""
        inv, sink = shared_inv
        sink.events.clear()
        inv.find("#" * len(value))
        inv.actor("#" * len(value))
        assume(value not in orjson.dumps(sink.events).decode())  # e.g. "subject": part of every event
        sink.events.clear()
        inv.find(value)
        inv.actor(value)
        blob = orjson.dumps(sink.events).decode()
        fingerprint = Fingerprinter(
            key=inv.keys.active.derive("fingerprint"),
            key_id=inv.keys.active.key_id,
            fields=(),  # type: ignore[union-attr]
        ).fingerprint(value)
        assert value not in blob and orjson.dumps(value).decode()[1:-1] not in blob
        assert fingerprint not in blob


class TestSources:
    def test_empty_directory(self, tmp_path: Path, sink: Sink) -> None:
        """A directory with no segments and no Parquet is an EmptySource."""
        with pytest.raises(EmptySource, match="no journal segments"):
            Investigation(tmp_path, audit=sink)

    def test_missing_directory(self, tmp_path: Path, sink: Sink) -> None:
        """A path that does not exist is an EmptySource."""
        with pytest.raises(EmptySource, match="not a directory"):
            Investigation(tmp_path / "nope", audit=sink)

    def test_corrupt_segment_names_segment_and_line(self, tmp_path: Path) -> None:
        """A line that is not a record names its segment and line, and points at `auditlog verify`."""
        inc = write_incident(tmp_path, per_day=6, days=1)
        seg = sorted(only_stream(inc.journal).glob("*.jsonl"))[1]
        lines = seg.read_bytes().split(b"\n")
        lines[2] = b"{not json" + lines[2][9:]
        seg.write_bytes(b"\n".join(lines))
        with pytest.raises(CorruptSource, match=rf"{seg.name} line 3 .*auditlog verify"):
            Investigation(inc.journal, audit=Sink(inc.ring))

    def test_torn_tail_of_active_segment_is_ignored(self, tmp_path: Path) -> None:
        """A half-written last line (a writer killed mid-append) is not an error."""
        inc = write_incident(tmp_path, per_day=6, days=1)
        with inc.handle() as h:
            h.emit({"kind": "http.request", "correlation_id": "c-last"})
            h.flush()
            active = sorted(h.journal.stream.path.glob("*.jsonl"))[-1]
            with open(active, "ab") as fh:
                fh.write(b'{"correlation_id":"c-torn","kind":"ht')
            with Investigation(inc.journal, audit=h) as inv:
                assert ["http.request"] == inv.timeline("c-last").column("kind")
                with pytest.raises(UnknownCorrelationId):
                    inv.timeline("c-torn")

    def test_tolerates_records_of_any_shape(self, tmp_path: Path) -> None:
        """Records with missing fields or unexpected types become rows with NULLs, never errors."""
        h = auditlog.configure(journal_dir=tmp_path / "j", key=KeyRing(MasterKey.generate()), stdlib=False)
        for rec in (
            {"kind": "http.request", "correlation_id": "c1", "actor": "not-an-object", "decision": [1, 2]},
            {"kind": 7, "correlation_id": "c1", "outcome": {"http_status": "two hundred"}, "ts": "garbage"},
            {"correlation_id": "c1", "fp": ["odd"], "action": {"name": {"nested": 1}}},
        ):
            assert h.emit(dict(rec))
        try:
            with Investigation(tmp_path / "j", audit=h) as inv:
                rows = inv.timeline("c1").as_dicts()
        finally:
            h.shutdown()
        assert 3 == len(rows)
        assert [None, None, None] == [r["actor"] for r in rows]
        assert all(isinstance(r["ts"], datetime) for r in rows)


class TestImports:
    def test_heavy_dependencies_are_lazy(self) -> None:
        """Importing query, compaction, shipping, evidence and CLI modules loads no duckdb, pyarrow, boto3."""
        code = (
            "import sys\n"
            "import auditlog.investigate, auditlog.lake.compact, auditlog.lake.ship, auditlog.evidence\n"
            "import auditlog.cli, auditlog.integrations.asgi, auditlog.demo.workload\n"
            "print(','.join(m for m in ('duckdb', 'pyarrow', 'boto3') if m in sys.modules))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert (0, "") == (proc.returncode, proc.stdout.strip()), proc.stderr

    def test_missing_extra_names_it(self, tmp_path: Path) -> None:
        """Without duckdb, an investigation fails with the extra to install."""
        code = (
            "import sys\nsys.modules['duckdb'] = None\n"
            "from auditlog.investigate import Investigation\n"
            "class S:\n    keys = None\n    def emit(self, e): return True\n"
            "try:\n    Investigation(sys.argv[1], audit=S())\n"
            "except ImportError as exc:\n    print(exc)\n"
        )
        inc_dir = tmp_path / "j"
        inc_dir.mkdir()
        (inc_dir / "00000001.jsonl").write_bytes(b'{"kind":"x","seq":1}\n')
        proc = subprocess.run(
            [sys.executable, "-c", code, str(inc_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert "install auditlog-pipeline[query]" in proc.stdout, proc.stderr


class TestResult:
    def test_result_helpers(self) -> None:
        """Result iterates as dicts, exposes columns, converts to Arrow."""
        r = Result(name="x", columns=("a", "b"), rows=((1, "p"), (2, "q")))
        assert [{"a": 1, "b": "p"}, {"a": 2, "b": "q"}] == r.as_dicts()
        assert ["p", "q"] == r.column("b")
        assert 2 == r.to_arrow().num_rows
        with pytest.raises(KeyError):
            r.column("c")


@pytest.fixture
def cli() -> typer.Typer:
    return query_cli()


@pytest.fixture
def key_file(incident: Incident, tmp_path: Path) -> Path:
    return write_key_file(incident.ring, tmp_path / "k.key")


class TestCLI:
    def run(self, cli: typer.Typer, *args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, [str(a) for a in args], input=input)

    def test_timeline_json(
        self, cli: typer.Typer, incident: Incident, key_file: Path, tmp_path: Path
    ) -> None:
        """`query SOURCE timeline CID --json` prints the steps in order."""
        res = self.run(cli, "query", incident.journal, "timeline", incident.incident_cid, "--json",
                       "--key-file", key_file, "--journal", tmp_path / "a")  # fmt: skip
        assert 0 == res.exit_code, res.output
        rows = orjson.loads(res.stdout)
        assert [*incident.incident_steps, "body.read_denied"] == [r["kind"] for r in rows]
        runs = [r for r in every_record(tmp_path / "a") if r.get("kind") == "query.run"]
        assert ["timeline"] == [r["query"]["name"] for r in runs]

    def test_table_and_csv(
        self, cli: typer.Typer, incident: Incident, key_file: Path, tmp_path: Path
    ) -> None:
        """The default is a rich table; --csv prints a header and one line per row."""
        opts = ["--key-file", key_file, "--journal", tmp_path / "a"]
        res = self.run(cli, "query", incident.journal, "denials", *opts)
        assert 0 == res.exit_code, res.output
        assert "denials (8 rows)" in res.stdout
        res = self.run(
            cli, "query", "--key-file", key_file, incident.journal, "reads", "--csv", "--journal", tmp_path
        )
        assert ["ts", "reader"] == res.stdout.splitlines()[0].split(",")[:2]
        assert 3 == len(res.stdout.splitlines())

    def test_find_from_stdin_never_echoes(
        self, cli: typer.Typer, incident: Incident, key_file: Path, tmp_path: Path
    ) -> None:
        """`find -` reads the value from stdin and never prints it."""
        res = self.run(cli, "query", incident.journal, "find", "-", "--json", "--key-file", key_file,
                       "--journal", tmp_path / "a", input=incident.token + "\n")  # fmt: skip
        assert 0 == res.exit_code, res.output
        assert sorted(incident.token_cids) == sorted(r["correlation_id"] for r in orjson.loads(res.stdout))
        assert incident.token not in res.output

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["timeline", "nope"], 1, "no event has that correlation id"),
            (["denials", "--since", "tomorrow-ish"], 2, "since: expected an ISO 8601"),
            (["denials", "--since", "2026-11-22", "--until", "2026-11-01"], 2, "since is after until"),
            (["sql", "COPY (SELECT 1) TO '/tmp/x.csv'"], 2, "COPY statements are not allowed"),
            (["top", "--by", "colour"], 2, "--by must be"),
        ],
    )
    def test_clear_errors(
        self,
        cli: typer.Typer,
        incident: Incident,
        key_file: Path,
        tmp_path: Path,
        args: list[str],
        code: int,
        message: str,
    ) -> None:
        """Errors are one clear line on stderr with the documented exit code."""
        res = self.run(
            cli, "query", incident.journal, *args, "--key-file", key_file, "--journal", tmp_path / "a"
        )
        assert code == res.exit_code, res.output
        assert message in " ".join(res.stderr.split())

    def test_empty_source(self, cli: typer.Typer, key_file: Path, tmp_path: Path) -> None:
        """An empty directory is reported as such."""
        (tmp_path / "empty").mkdir()
        res = self.run(cli, "query", tmp_path / "empty", "denials", "--key-file", key_file,
                       "--journal", tmp_path / "a")  # fmt: skip
        assert 2 == res.exit_code
        assert "no journal segments and no Parquet files" in " ".join(res.stderr.split())

    def test_corrupt_segment(self, cli: typer.Typer, tmp_path: Path) -> None:
        """A corrupt segment names segment and line and points at `auditlog verify`."""
        inc = write_incident(tmp_path / "i", per_day=6, days=1)
        seg = sorted(only_stream(inc.journal).glob("*.jsonl"))[0]
        seg.write_bytes(seg.read_bytes().replace(b"\n", b"\n\x00garbage\n", 1))
        key = write_key_file(inc.ring, tmp_path / "k.key")
        res = self.run(cli, "query", inc.journal, "denials", "--key-file", key, "--journal", tmp_path / "a")
        assert 1 == res.exit_code
        err = " ".join(res.stderr.split())
        assert f"journal segment {seg.name} line 2 is not a valid record" in err
        assert "auditlog verify" in err

    def test_live_trail_takes_the_investigation_as_its_own_stream(
        self, cli: typer.Typer, tmp_path: Path
    ) -> None:
        """While the application writes to the trail, the CLI journals its query beside it, in a stream of
        its own (source cli.<host>): no "in use by another writer"."""
        inc = write_incident(tmp_path / "i", per_day=3, days=1)
        key = write_key_file(inc.ring, tmp_path / "k.key")
        with inc.handle() as app_handle:
            app_handle.emit({"kind": "http.request", "correlation_id": "c-live"})
            res = self.run(cli, "query", inc.journal, "denials", "--key-file", key)
        assert 0 == res.exit_code, res.output
        runs = [
            (info.source, r) for info, r in iter_trail_records(inc.journal) if r.get("kind") == "query.run"
        ]
        assert [("cli.", "denials")] == [(s[:4], r["query"]["name"]) for s, r in runs]

    def test_default_audit_dir_is_the_source_journal(self, cli: typer.Typer, tmp_path: Path) -> None:
        """Without --journal the query.run event goes into the source journal itself."""
        inc = write_incident(tmp_path / "i", per_day=3, days=1)
        key = write_key_file(inc.ring, tmp_path / "k.key")
        res = self.run(cli, "query", inc.journal, "top", "--by", "actor", "--key-file", key)
        assert 0 == res.exit_code, res.output
        assert (
            "top"
            == [r for r in every_record(inc.journal) if r.get("kind") == "query.run"][-1]["query"]["name"]
        )
