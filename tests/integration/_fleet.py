"""A small fleet for lake tests: several hosts, each a trail with two writers, events across hosts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditlog.lake.compact import compact
from store.journal import JournalConfig
from store.keys import KeyRing, MasterKey
from store.trail import TrailWriter

BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@dataclass
class Fleet:
    """What :func:`write_fleet` wrote: per host a trail; the shared correlation id and expected counts."""

    root: Path
    ring: KeyRing
    hosts: dict[str, Path]
    shared_cid: str
    shared_steps: list[tuple[str, str]]  # (host, kind) in time order
    events: int = 0
    denials: dict[tuple[str, str], int] = field(default_factory=dict)  # (actor, hour) -> n


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_fleet(
    root: Path, *, hosts: int = 3, per_writer: int = 40, batches: int = 2, ring: KeyRing | None = None
) -> Fleet:
    """Write ``hosts`` trails; each has two writers (two streams) writing ``per_writer`` events per batch,
    compacted after each batch (several batches per stream). One correlation id crosses every host."""
    ring = ring or KeyRing(MasterKey.generate())
    fleet = Fleet(root=root, ring=ring, hosts={}, shared_cid=uuid.uuid4().hex, shared_steps=[])
    actors = ["alice", "bob", "carol"]
    for h in range(hosts):
        host = f"web-{h + 1}"
        trail = root / host
        fleet.hosts[host] = trail
        for b in range(batches):
            writers = [
                TrailWriter(
                    trail,
                    keys=ring,
                    config=JournalConfig(fsync="never", source=host, max_segment_bytes=4096),
                    checkpoint_interval=None,
                    seal_on_sigterm=False,
                )
                for _ in range(2)
            ]
            for w, writer in enumerate(writers):
                for i in range(per_writer):
                    ts = BASE + timedelta(hours=b, minutes=(i * 53 + w * 7 + h) % 60, seconds=i % 60)
                    actor = actors[(i + h) % 3]
                    allowed = i % 7 != 0
                    writer.append(_event(ts, actor, allowed, uuid.uuid4().hex))
                    fleet.events += 1
                    if not allowed:
                        key = (actor, ts.strftime("%Y-%m-%d %H"))
                        fleet.denials[key] = fleet.denials.get(key, 0) + 1
            step = BASE + timedelta(hours=b, minutes=30, seconds=h)
            kind = "mcp.tool_call"
            writers[0].append(_event(step, "alice", True, fleet.shared_cid, kind=kind))
            fleet.events += 1
            fleet.shared_steps.append((host, kind))
            for writer in writers:
                writer.close()
            compact(trail, keys=ring)
    fleet.shared_steps.sort(key=lambda s: s[0])
    return fleet


def _event(ts: datetime, actor: str, allowed: bool, cid: str, kind: str | None = None) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": kind or ("mcp.tool_call" if allowed else "authz.denied"),
        "ts": _iso(ts),
        "correlation_id": cid,
        "actor": {"subject": actor, "tenant": "acme", "client_id": "web", "scopes": ["orders:read"]},
        "action": {"name": "search_orders", "method": "tools/call", "target": None},
        "decision": {"allowed": allowed, "reason": "ok" if allowed else "missing_scopes", "required": []},
        "outcome": {"status": "ok" if allowed else "denied", "http_status": None, "duration_ms": 1.5},
        "args_shape": {"t": "obj", "keys": {"query": {"t": "str", "len": 12}}},
        "fp": {"args": {"email": "k1:" + "ab" * 16}},
    }
