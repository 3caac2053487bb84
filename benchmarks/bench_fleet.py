"""Fleet part of the query benchmark (run through ``bench_query.py --fleet``): 8 hosts, >= 2M events.

Each host is a trail written through the real ``TrailWriter`` (``fsync="never"``), compacted every half
hour of event time (the small batches a frequent compaction leaves), then every host ships to one prefix
of moto's S3 server over HTTP. Measured:

- bytes shipped per event: v1 (segments always shipped: ``--with-segments``) vs v2 (Parquet, manifests,
  seals, checkpoints);
- objects and requests per 1M events, before and after ``lake merge``;
- merge throughput;
- timeline latency over ``s3://`` with a cold cache: only the files whose manifest Bloom filter may hold
  the id, vs downloading every file first.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HOSTS = 8
CYCLES = 12  # compactions per host (every 30 minutes of event time over 6 hours)


def write_host(trail: Path, host: str, n: int, ring: Any, shared: list[str], rng: random.Random) -> None:
    from auditlog.lake.compact import compact
    from store.journal import JournalConfig
    from store.trail import TrailWriter

    w = TrailWriter(
        trail,
        keys=ring,
        config=JournalConfig(fsync="never", source=host, max_segment_bytes=8 << 20, max_segment_age=1e12),
        checkpoint_interval=None,
        seal_on_sigterm=False,
    )
    base = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    per_cycle = n // CYCLES
    for c in range(CYCLES):
        start = base + timedelta(minutes=30 * c)
        for i in range(per_cycle):
            ts = start + timedelta(microseconds=int(1_800_000_000 * i / per_cycle))
            cid = shared[rng.randrange(len(shared))] if i % 1000 == 0 else uuid.uuid4().hex
            allowed = i % 17 != 0
            w.append_owned(
                {
                    "v": 1,
                    "kind": "mcp.tool_call" if allowed else "authz.denied",
                    "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "correlation_id": cid,
                    "actor": {"subject": f"user-{i % 500}", "tenant": "acme", "client_id": "web"},
                    "action": {"name": f"tool_{i % 40:02d}", "method": "tools/call", "target": None},
                    "decision": {"allowed": allowed, "reason": "ok" if allowed else "missing_scopes"},
                    "outcome": {"status": "ok", "http_status": None, "duration_ms": 2.5},
                    "args_shape": {"t": "obj", "keys": {"q": {"t": "str", "len": 12}}},
                }
            )
        w.rotate()
        compact(trail, keys=ring)
    w.close()
    compact(trail, keys=ring)


def run(events: int, lookups: int, work: Path) -> tuple[str, str]:
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    from auditlog.investigate._connections import Connections
    from auditlog.investigate.catalog import open_catalog
    from auditlog.lake.layout import load_manifests
    from auditlog.lake.merge import merge
    from auditlog.lake.ship import ship
    from store.keys import KeyRing, MasterKey

    os.environ.update(AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1")
    ring = KeyRing(MasterKey(bytes(range(32))))
    rng = random.Random(11)
    shared = [uuid.uuid4().hex for _ in range(200)]
    per_host = events // HOSTS
    t0 = time.perf_counter()
    hosts = {}
    for h in range(HOSTS):
        host = f"web-{h + 1}"
        hosts[host] = work / host
        write_host(hosts[host], host, per_host, ring, shared, rng)
    write_s = time.perf_counter() - t0
    total = per_host * HOSTS
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        addr, port = server.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{addr}:{port}", region_name="us-east-1")
        s3.create_bucket(Bucket="fleet-v1")
        s3.create_bucket(Bucket="fleet-v2")
        v1 = [ship(t, "s3://fleet-v1/lake", client=s3, with_segments=True) for t in hosts.values()]
        v2 = [ship(t, "s3://fleet-v2/lake", client=s3) for t in hosts.values()]

        def objects(bucket: str) -> int:
            n = 0
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
                n += len(page.get("Contents", []))
            return n

        objs_v1, objs_v2 = objects("fleet-v1"), objects("fleet-v2")
        files_before = sum(len(m.files) for t in hosts.values() for m in load_manifests(t / "parquet"))
        t1 = time.perf_counter()
        merged = [merge(t / "parquet", keys=ring, grace=0, now=time.time() + 7200) for t in hosts.values()]
        merge_s = time.perf_counter() - t1
        after = [ship(t, "s3://fleet-v2/lake", client=s3) for t in hosts.values()]
        objs_merged = objects("fleet-v2")
        files_after = sum(len(m.files) for t in hosts.values() for m in load_manifests(t / "parquet"))

        def timeline(cid: str, *, bloom: bool) -> tuple[float, int]:
            cache = work / f"cache-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            catalog = open_catalog("s3://fleet-v2/lake", cache_dir=cache, s3_client=s3)
            conns = Connections(catalog, memory_limit="1GB", threads=2)
            try:
                con = conns.reader_for(None, None, correlation_id=cid if bloom else None)
                rows = con.execute(
                    "SELECT ts, source, kind FROM events WHERE correlation_id = $c ORDER BY ts, stream, seq",
                    {"c": cid},
                ).fetchall()
            finally:
                conns.close()
            took = time.perf_counter() - started
            shutil.rmtree(cache, ignore_errors=True)
            return took, len(rows)

        picks = rng.sample(shared, lookups)
        cold = [timeline(c, bloom=True) for c in picks]
        everything = [timeline(c, bloom=False) for c in picks[: max(2, lookups // 5)]]
        assert all(a[1] == b[1] for a, b in zip(cold, everything, strict=False))
    finally:
        server.stop()
    per_m = 1_000_000 / total
    b1 = sum(r.bytes for r in v1)
    b2 = sum(r.bytes for r in v2)
    req_v1 = sum(r.requests for r in v1)
    req_v2 = sum(r.requests for r in v2)
    req_merge = sum(r.requests for r in after)
    rows_merged = sum(m.rows for m in merged)
    bytes_merged = sum(m.bytes_in for m in merged)
    table = "\n".join(
        [
            "| measure | v1 (segments always shipped) | v2 | v2 after `lake merge` |",
            "|---|---:|---:|---:|",
            f"| bytes shipped per event | {b1 / total:.1f} | {b2 / total:.1f} | - |",
            f"| objects per 1M events | {objs_v1 * per_m:,.0f} | {objs_v2 * per_m:,.0f} | "
            f"{objs_merged * per_m:,.0f} |",
            f"| upload requests per 1M events | {req_v1 * per_m:,.0f} | {req_v2 * per_m:,.0f} | "
            f"+{req_merge * per_m:,.0f} (merge ship) |",
            f"| Parquet files (all hosts) | {files_before:,} | {files_before:,} | {files_after:,} |",
            f"| merge throughput | | | {rows_merged / merge_s:,.0f} rows/s, "
            f"{bytes_merged / merge_s / 1e6:.1f} MB/s |",
            f"| timeline over s3://, cold cache (Bloom-filtered fetch), median | | "
            f"{statistics.median(t for t, _ in cold) * 1000:,.0f} ms | |",
            f"| timeline over s3://, download everything first, median | | "
            f"{statistics.median(t for t, _ in everything) * 1000:,.0f} ms | |",
        ]
    )
    notes = (
        f"{HOSTS} hosts x {per_host:,} events = {total:,} events, written through TrailWriter in "
        f"{write_s:.0f} s (compacted every 30 min of event time: {CYCLES} batches per host), shipped to "
        f"moto's S3 server over HTTP on 127.0.0.1. v1 = the same layout shipped with `--with-segments` (v1 "
        "always shipped the JSONL segments; its Parquet files differed only by the partition columns), v2 = "
        f"the default. Timelines: {lookups} ids that occur on several hosts, cold cache each time; "
        f"'download everything' is {len(everything)} runs with the Bloom filter off."
    )
    return table, notes
