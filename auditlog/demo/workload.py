"""``auditlog demo``: a scripted workload through the real pipeline, with synthetic secrets planted.

The workload logs through structlog and stdlib ``logging`` (``extra=`` fields, %-style arguments,
uvicorn-style access lines, exceptions with chained causes), with every canary value planted in arguments,
dict keys, bytes, messages and exceptions. Then it seals the journal, verifies the chain, answers "did
this email appear?" from fingerprints alone, and scans the journal for the planted values.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from auditlog._configure import configure
from auditlog.canaries import Canaries, load_canaries
from store.journal import JournalConfig
from store.keys import KeyRing, generate_key_file
from store.trail import iter_trail_records, verify_trail

__all__ = ["DemoResult", "run_demo"]

MARKER = ".auditlog-demo"

DEMO_POLICY = """\
version = 1
id = "demo-shop"

[defaults]
level = "shape"
journal_retention = "400d"

[[rules]]
id = "payments"
match = { logger = "shop.payments" }
level = "values"
allow = ["amount", "currency", "note"]
fingerprint = ["email", "card_token"]

[[rules]]
id = "debug-off"
match = { logger = "shop.debug" }
level = "none"
"""


@dataclass(slots=True)
class DemoResult:
    """What the demo did and found."""

    directory: Path
    events_logged: int = 0
    records: int = 0
    segments: int = 0
    verified: bool = False
    leaks: list[str] = field(default_factory=list)
    email_hits: int = 0
    by_event: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    policy_dropped: int = 0
    incident: dict[str, Any] = field(default_factory=dict)


def _prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise FileExistsError(f"{directory} is not empty and is not a demo directory; pick another --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("created by `auditlog demo`\n")


class _Order:
    """An application object with a secret inside and a ``__repr__`` that would leak it."""

    def __init__(self, card: str) -> None:
        self.card = card

    def __repr__(self) -> str:
        return f"Order(card={self.card})"


def _workload(c: Canaries) -> int:
    v = c.values
    n = 0
    api = structlog.get_logger("shop.api")
    pay = structlog.get_logger("shop.payments")
    dbg = structlog.get_logger("shop.debug")
    std = logging.getLogger("shop.legacy")
    access = logging.getLogger("uvicorn.access")
    for i in range(40):
        structlog.contextvars.bind_contextvars(correlation_id=f"demo-{i:04d}")
        api.info(
            "order.created",
            order_id=1000 + i,
            customer={"email": v["email"], "name": v["unicode_name"], "phone": v["phone"]},
            payment={"card": v["credit_card"], "cvv": "123", "iban": v["iban"]},
            items=[{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            headers={"authorization": v["bearer"], "x-api-key": v["api_key"]},
            raw=v["private_key"].encode(),
            tags=("new", v["password"]),
            lookup={v["email"]: 1, v["aws_access_key_id"]: 2, "ok_key": 3},
            client=_Order(v["credit_card_spaced"]),
        )
        pay.info(
            "payment.captured",
            amount=42.5 + i,
            currency="EUR",
            note=v["free_text"],
            email=v["email"],
            card_token=v["api_key"],
            db=v["db_url"],
        )
        dbg.info("debug.dump", everything=v)
        std.warning("login failed for %s from %s", v["email"], v["ipv4"], extra={"password": v["password"]})
        access.info(
            '%s - "%s %s HTTP/%s" %d', (v["ipv4"], 50000 + i), "GET", "/v1/reset/" + v["jwt"], "1.1", 200
        )
        access.info('%s - "%s %s HTTP/%s" %d', (v["ipv4"], 50000 + i), "GET", _query_target(v), "1.1", 401)
        try:
            try:
                raise KeyError(v["aws_secret_access_key"])
            except KeyError as inner:
                raise RuntimeError(f"upstream rejected token {v['jwt']} for {v['email']}") from inner
        except RuntimeError:
            api.exception("upstream.failed", attempt=i, secret=v["aws_secret_access_key"])
        n += 7
        structlog.contextvars.clear_contextvars()
    return n


def _query_target(v: dict[str, str]) -> str:
    return v["url_token"].split("example.com", 1)[1]


def run_demo(directory: str | Path, *, canaries: Canaries | None = None) -> DemoResult:
    """Run the scripted workload into ``directory`` and return what the journal shows."""
    d = Path(directory)
    _prepare(d)
    c = canaries or load_canaries()
    key = generate_key_file(d / "demo.key")
    policy_path = d / "policy.toml"
    policy_path.write_text(DEMO_POLICY)
    journal_dir = d / "journal"
    handle = configure(
        journal_dir=journal_dir,
        policy=policy_path,
        key=KeyRing(key),
        journal_config=JournalConfig(max_segment_bytes=32 * 1024, fsync="batch", fsync_every=200),
    )
    result = DemoResult(directory=d)
    try:
        result.events_logged = _workload(c)
        result.policy_dropped = result.events_logged - handle.stats.written
        email_fp = handle.fingerprinter.fingerprint(c.values["email"])
        from auditlog.demo.servers import run_incident

        result.incident = run_incident(d, handle)
    finally:
        handle.shutdown()
    result.dropped = handle.stats.dropped
    report = verify_trail(journal_dir, keys=KeyRing(key))
    result.verified = report.ok
    result.records = report.records
    result.segments = sum(len(s.report.segments) for s in report.streams if s.report is not None)
    for _, rec in iter_trail_records(journal_dir):
        ev = rec.get("kind") or rec.get("event") or "?"
        name = ev if isinstance(ev, str) else "?"
        result.by_event[name] = result.by_event.get(name, 0) + 1
        fp: Any = rec.get("fp")
        if isinstance(fp, dict) and email_fp in fp.values():
            result.email_hits += 1
    blob = b"".join(p.read_bytes() for p in sorted(journal_dir.rglob("*")) if p.is_file())
    result.leaks = c.leaks_in(blob) + list(result.incident.get("leaks", []))
    return result


def summary_rows(result: DemoResult) -> list[tuple[str, str]]:
    """The demo's summary as (label, value) rows; no row ever holds a logged value."""
    inc = result.incident
    return [
        ("directory", str(result.directory)),
        ("application log calls", str(result.events_logged)),
        ("journal records (incl. segment headers)", str(result.records)),
        ("sealed segments", str(result.segments)),
        ("chain verified", "yes" if result.verified else "NO"),
        ("records carrying the planted email, found by fingerprint", str(result.email_hits)),
        ("planted values found in the journal", str(len(result.leaks))),
        ("HTTP requests sent / journaled", f"{inc.get('http_requests')} / {inc.get('http_events')}"),
        ("MCP tool calls sent / journaled", f"{inc.get('tool_calls')} / {inc.get('tool_events')}"),
        ("every request and tool call exactly once", "yes" if inc.get("exactly_once") else "NO"),
        ("refused (authz.denied or kill switch)", str(len(inc.get("refusals", [])))),
        ("response bodies captured (encrypted store)", str(inc.get("bodies_captured", 0))),
        ("events dropped by policy (rule 'debug-off', level none)", str(result.policy_dropped)),
        ("events lost (journal could not take them)", str(result.dropped)),
        ("incident correlation id (every stolen-token call)", str(inc.get("incident_correlation_id"))),
        ("events journaled with the incident correlation id", str(inc.get("incident_events"))),
        (
            f"calls carrying the planted token (canary {inc.get('planted_canary')!r}) / found by fingerprint",
            f"{inc.get('token_calls')} / {inc.get('token_hits')}",
        ),
    ]


def follow_up(result: DemoResult) -> list[tuple[str, str]]:
    """The investigation commands for the demo's incident, as (label, command) rows.

    The ``find`` command reads the planted token from stdin, piped from its canary by name: no command
    holds the token itself.
    """
    inc = result.incident
    cid = inc.get("incident_correlation_id")
    if not cid:
        return []
    journal = shlex.quote(str(result.directory / "journal"))
    key = shlex.quote(str(result.directory / "demo.key"))
    name = inc.get("planted_canary")
    token = shlex.quote(f'from auditlog.canaries import load_canaries as c; print(c().values["{name}"])')
    return [
        ("next: the incident, step by step", f"auditlog query {journal} timeline {cid} --key-file {key}"),
        ("next: the refused calls", f"auditlog query {journal} denials --key-file {key}"),
        (
            "next: which calls carried the planted token",
            f"{shlex.quote(sys.executable)} -c {token} | auditlog query {journal} find - --key-file {key}",
        ),
    ]


def example_record(directory: Path) -> bytes:
    """One journal record of the workload (an ``order.created``), as one JSON line, to show the shapes."""
    for _, rec in iter_trail_records(directory / "journal"):
        if rec.get("event") == "order.created":
            return orjson.dumps(rec)
    return b"{}"
