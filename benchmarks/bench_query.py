"""Query benchmark: timeline lookups over 2 million journaled events, three ways, in one run.

Writes N events (default 2,000,000: audit events of the DESIGN schema and structlog-style log lines, about
four per correlation id, spread over three days) through the real chained ``JournalWriter``
(``fsync="never"``), then looks up the timeline of K correlation ids:

(a) ``grep -F`` over the JSONL segments (a subprocess per lookup);
(b) DuckDB over the raw JSONL (``read_ndjson`` with the needed columns, one connection);
(c) ``Investigation.timeline`` over the compacted Parquet (sandboxed, each lookup journaled
    as ``query.run`` through a real ``AuditHandle``).

It also times ``auditlog.lake.compact.compact`` (events/s) and measures the peak memory of (c) as the peak RSS
(``VmHWM``) of a child process that does nothing else: opens the Investigation and runs the lookups (the
interpreter, duckdb and pyarrow included). Prints a table and writes the ``## Query (bench_query.py)``
section of ``benchmarks/RESULTS.md``.

Run: ``.venv/bin/python benchmarks/bench_query.py [--events N] [--lookups K] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store.journal import JournalConfig, JournalWriter  # noqa: E402
from store.keys import KeyRing, MasterKey  # noqa: E402

KEY = MasterKey(bytes(range(32)))
TOOLS = [f"tool_{i:02d}" for i in range(40)]
ROUTES = ["/orders/{order_id}", "/users/{user_id}", "/search", "/reports/{report_id}"]
SECTION = "## Query (bench_query.py)"


def write_journal(directory: Path, n: int, seed: int = 7) -> tuple[list[str], float]:
    """Write ``n`` events through the real writer; return a sample of correlation ids and the seconds."""
    rng = random.Random(seed)
    writer = JournalWriter(
        directory,
        keys=KeyRing(KEY),
        config=JournalConfig(
            fsync="never", source="bench-1", max_segment_bytes=64 << 20, max_segment_age=1e12
        ),
    )
    subjects = [f"user-{i:04d}" for i in range(2000)]
    start = datetime(2026, 11, 19, tzinfo=UTC).timestamp()
    span = 3 * 86400
    sample: list[str] = []
    fp_kid = KEY.key_id
    t0 = time.perf_counter()
    i = 0
    append = writer.append
    while i < n:
        cid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        if rng.random() < 0.0005 and len(sample) < 1000:
            sample.append(cid)
        subject = subjects[rng.randrange(2000)]
        base = start + span * i / n
        steps = min(n - i, 4)
        for k in range(steps):
            ts = base + k * 0.002
            iso = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if k == 1:
                append(
                    {
                        "event": "order.lookup",
                        "level": "info",
                        "logger": "shop.orders",
                        "timestamp": iso,
                        "correlation_id": cid,
                        "order": {"t": "obj", "keys": {"id": {"t": "int"}, "items": {"t": "arr", "len": 3}}},
                        "fp": {"email": f"{fp_kid}:{rng.getrandbits(128):032x}"},
                    }
                )
                continue
            mcp = k != 3
            allowed = rng.random() > 0.02
            append(
                {
                    "v": 1,
                    "ts": iso,
                    "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "kind": ("mcp.tool_call" if mcp else "http.request") if allowed else "authz.denied",
                    "correlation_id": cid,
                    "span_id": f"{rng.getrandbits(64):016x}",
                    "actor": {
                        "subject": subject,
                        "tenant": "acme",
                        "client_id": "web",
                        "scopes": ["orders:read"],
                    },
                    "action": {
                        "name": TOOLS[rng.randrange(40)] if mcp else ROUTES[rng.randrange(4)],
                        "method": "tools/call" if mcp else "GET",
                        "target": None,
                    },
                    "decision": {
                        "allowed": allowed,
                        "reason": "scopes_ok" if allowed else "missing_scopes",
                        "rule": "tools",
                        "required": ["orders:read"],
                    },
                    "outcome": {
                        "status": "ok" if allowed else "denied",
                        "http_status": None if mcp else 200,
                        "error_type": None,
                        "duration_ms": round(rng.random() * 20, 3),
                    },
                    "args_shape": {
                        "t": "obj",
                        "keys": {"query": {"t": "str", "len": 12}, "limit": {"t": "int"}},
                    },
                    "result_shape": {"t": "arr", "len": 7},
                    "policy": {"id": "bench", "hash": "0123456789abcdef"},
                }
            )
        i += steps
    writer.close()
    return sample, time.perf_counter() - t0


def lookups_grep(segments: list[Path], cids: list[str]) -> list[float]:
    times = []
    for cid in cids:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["grep", "-F", "-h", f'"correlation_id":"{cid}"', *map(str, segments)],
            capture_output=True,
            check=False,
        )
        times.append(time.perf_counter() - t0)
        assert proc.stdout.count(b"\n") >= 1, "grep found nothing"
    return times


def lookups_duckdb_jsonl(segments: list[Path], cids: list[str]) -> list[float]:
    import duckdb

    con = duckdb.connect()
    files = [str(p) for p in segments]
    sql = (
        "SELECT seq, coalesce(ts, timestamp) AS ts, kind, event, correlation_id FROM read_ndjson(?, columns={"
        "'seq': 'BIGINT', 'ts': 'VARCHAR', 'timestamp': 'VARCHAR', 'kind': 'VARCHAR', 'event': 'VARCHAR', "
        "'correlation_id': 'VARCHAR'}) WHERE correlation_id = ? ORDER BY 2, 1"
    )
    times = []
    for cid in cids:
        t0 = time.perf_counter()
        rows = con.execute(sql, [files, cid]).fetchall()
        times.append(time.perf_counter() - t0)
        assert rows, "duckdb found nothing"
    con.close()
    return times


def child_investigation(source: str, audit_dir: str, cids: list[str]) -> None:
    """Run in a child process: open the Investigation, time the lookups, print JSON."""
    import auditlog
    from auditlog.investigate import Investigation

    handle = auditlog.configure(journal_dir=audit_dir, key=KeyRing(KEY), stdlib=False)
    t0 = time.perf_counter()
    inv = Investigation(source, audit=handle)
    opened = time.perf_counter() - t0
    times = []
    rows = 0
    for cid in cids:
        t0 = time.perf_counter()
        rows += len(inv.timeline(cid))
        times.append(time.perf_counter() - t0)
    inv.close()
    handle.shutdown()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"open": opened, "times": times, "rows": rows, "vmhwm_kib": hwm}))


def measure_investigation(source: Path, audit_dir: Path, cids: list[str]) -> tuple[dict[str, Any], int]:
    """Run (c) in a fresh process; its peak RSS is the VmHWM it reads from /proc/self/status at its end.

    (``RUSAGE_CHILDREN`` would not do: Linux carries a forked child's pre-exec high-water mark, the
    parent's size, into its ``ru_maxrss``.)
    """
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(source), str(audit_dir), ",".join(cids)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, int(result["vmhwm_kib"])


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def write_results(table: str, notes: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{SECTION}\n\n{table}\n{notes}\n"
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head + block + (rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--lookups", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the data in this directory.")
    ap.add_argument("--no-results", action="store_true", help="Do not write benchmarks/RESULTS.md.")
    ap.add_argument("--fleet", action="store_true", help="Run the fleet table instead (bench_fleet.py).")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-query-"))
    if args.fleet:
        fleet_main(args, work)
        return
    journal = work / "journal"
    try:
        from auditlog.lake.compact import compact

        print(f"writing {args.events:,} events through JournalWriter into {journal} ...", flush=True)
        sample, write_s = write_journal(journal, args.events)
        cids = random.Random(1).sample(sample, min(args.lookups, len(sample)))
        segments = sorted(journal.glob("*.jsonl"))
        size = sum(p.stat().st_size for p in segments)
        print(f"  {write_s:.1f} s ({args.events / write_s:,.0f} events/s), {len(segments)} segments, "
              f"{size / 2**20:,.0f} MiB", flush=True)  # fmt: skip

        print("(a) grep -F ...", flush=True)
        t_grep = lookups_grep(segments, cids)
        print("(b) DuckDB over JSONL ...", flush=True)
        t_jsonl = lookups_duckdb_jsonl(segments, cids)
        print("compacting ...", flush=True)
        t0 = time.perf_counter()
        report = compact(journal, keys=KeyRing(KEY))
        compact_s = time.perf_counter() - t0
        layout = journal / "parquet"
        parquet_mib = sum(p.stat().st_size for p in layout.rglob("*.parquet")) / 2**20
        print(f"  {report.rows:,} rows in {compact_s:.1f} s", flush=True)
        print("(c) Investigation over Parquet (child process) ...", flush=True)
        child, peak_kib = measure_investigation(journal, work / "audit", cids)
        t_inv = child["times"]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    a, b, c = ms(t_grep), ms(t_jsonl), ms(t_inv)
    rate = report.rows / compact_s
    peak_mib = peak_kib / 1024
    rows = [
        ("(a) grep -F over JSONL segments", f"{a:,.1f}", f"{max(t_grep) * 1000:,.1f}", "1.0x", ""),
        ("(b) DuckDB over raw JSONL", f"{b:,.1f}", f"{max(t_jsonl) * 1000:,.1f}", f"{a / b:,.1f}x", ""),
        (
            "(c) Investigation.timeline over Parquet",
            f"{c:,.1f}",
            f"{max(t_inv) * 1000:,.1f}",
            f"{a / c:,.1f}x",
            f"target >= 20x: {'met' if a / c >= 20 else 'MISSED'}",
        ),
    ]
    table = [
        f"{args.events:,} events ({size / 2**20:,.0f} MiB of JSONL in {len(segments)} segments) written "
        f"through the real JournalWriter (fsync=never) in {write_s:.1f} s; {len(cids)} timeline lookups of "
        "random correlation ids, about 4 events each.",
        "",
        "| lookup | median ms | max ms | speed-up vs (a) | |",
        "|---|---:|---:|---:|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows],
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| compaction | {rate:,.0f} events/s ({report.rows:,} rows, {compact_s:.1f} s, "
        f"{len(report.manifests)} batches, {parquet_mib:,.0f} MiB Parquet) | >= 150,000/s: "
        f"{'met' if rate >= 150_000 else 'MISSED'} |",
        f"| peak memory of (c) | {peak_mib:,.0f} MiB | < 1 GiB: {'met' if peak_mib < 1024 else 'MISSED'} |",
        f"| (c) opening the Investigation | {child['open'] * 1000:,.0f} ms | |",
    ]
    load = os.getloadavg()[0]
    notes = (
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load:.1f} at the end of the run (other work shares the cores). Memory of (c) is the "
        "peak RSS (`VmHWM` from /proc/self/status) of a child process that only opens the Investigation "
        "and runs the lookups (interpreter, duckdb and pyarrow included). Page cache warm for all three "
        "(the data was just written). "
        f"Run on {datetime.now(UTC).strftime('%Y-%m-%d')}: `.venv/bin/python benchmarks/bench_query.py`."
    )
    print()
    print("\n".join(table))
    print(notes)
    if not args.no_results:
        write_results("\n".join(table), notes)


FLEET_SECTION = "## Lake at fleet scale (bench_query.py --fleet)"


def fleet_main(args: argparse.Namespace, work: Path) -> None:
    """The fleet table (see ``bench_fleet.py``); written as a dated section at the top of RESULTS.md."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_fleet

    try:
        table, notes = bench_fleet.run(args.events, args.lookups, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    notes += (
        f" Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load "
        f"average {load:.1f} at the end (the cores are shared)."
    )
    print(table)
    print(notes)
    if args.no_results:
        return
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text(encoding="utf-8")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    section = f"{FLEET_SECTION}, {day}\n\n{table}\n\n{notes}\n\n"
    if FLEET_SECTION in text:
        start = text.index(FLEET_SECTION)
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        first = text.find("\n## ")
        text = text[: first + 1] + section + text[first + 1 :] if first >= 0 else text + "\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_investigation(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
    else:
        main()
