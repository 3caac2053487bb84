"""Trail benchmark: 4 processes writing to one trail directory vs 4 writing to 4 separate directories.

(a) 4 processes, each with its own ``JournalWriter`` in its own directory (one writer per directory, as
    before trails);
(b) 4 processes, each with a ``TrailWriter`` on the same trail directory (one stream each, signed
    checkpoints every ``--checkpoint-interval`` seconds).

Both run in the same invocation, interleaved over ``--rounds`` rounds; each process appends ``--events``
records of a realistic size with ``fsync="interval"`` (the default policy). Prints the aggregate events/s
(all records / wall time from the start signal to the last process done, best round) and the ratio (b)/(a)
(target >= 0.9). Then verifies the last trail.

Run: ``.venv/bin/python benchmarks/bench_trail.py [--events N] [--procs N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store.journal import JournalConfig, JournalWriter  # noqa: E402
from store.keys import KeyRing, MasterKey  # noqa: E402
from store.trail import TrailWriter, verify_trail  # noqa: E402

RING = KeyRing(MasterKey(bytes(range(32))))
CONFIG = JournalConfig(fsync="interval", retention_check_interval=None)


def _event(i: int) -> dict[str, Any]:
    return {
        "ts": 1_700_000_000.0 + i,
        "event_id": f"{i:032x}",
        "kind": "http.request",
        "correlation_id": f"c{i:015x}",
        "actor": {"subject": "user:alice", "tenant": "acme", "scopes": ["read", "write"]},
        "action": {"name": "GET /orders/{id}", "method": "GET", "target": "/orders/{id}"},
        "decision": {"allowed": True, "reason": "scopes"},
        "outcome": {"status": "ok", "http_status": 200, "duration_ms": 3.2},
        "args_shape": {
            "type": "dict",
            "keys": {"id": {"type": "str", "len": 12}, "q": {"type": "str", "len": 5}},
        },
    }


def _writer(kind: str, directory: str, n: int, events: int, interval: float, go: Any, done: Any) -> None:
    records = [_event(i) for i in range(events)]
    if kind == "trail":
        w: Any = TrailWriter(directory, keys=RING, config=CONFIG, checkpoint_interval=interval)
    else:
        w = JournalWriter(Path(directory) / f"writer-{n}", keys=RING, config=CONFIG)
    go.wait()
    for r in records:
        w.append_owned(r)
    w.close()
    done.put(time.perf_counter())


def _run(kind: str, root: Path, procs: int, events: int, interval: float) -> float:
    """Return events/s for one run of ``procs`` processes."""
    ctx = multiprocessing.get_context("fork")
    go, done = ctx.Event(), ctx.Queue()
    ps = [
        ctx.Process(target=_writer, args=(kind, str(root), n, events, interval, go, done))
        for n in range(procs)
    ]
    for p in ps:
        p.start()
    time.sleep(0.5)  # let every process open its writer and build its records
    start = time.perf_counter()
    go.set()
    ends = [done.get(timeout=300) for _ in ps]
    for p in ps:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a {kind} writer failed with exit code {p.exitcode}")
    return procs * events / (max(ends) - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000, help="records per process")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint-interval", type=float, default=0.1)
    args = ap.parse_args()
    best = {"dirs": 0.0, "trail": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        last = Path(tmp)
        for r in range(args.rounds):
            for kind in ("dirs", "trail") if r % 2 == 0 else ("trail", "dirs"):
                root = Path(tmp) / f"{kind}-{r}"
                eps = _run(kind, root, args.procs, args.events, args.checkpoint_interval)
                best[kind] = max(best[kind], eps)
                last = root if kind == "trail" else last
        report = verify_trail(last, keys=RING)
    a, b = best["dirs"], best["trail"]
    print(f"\n{args.procs} processes x {args.events} events, fsync=interval, best of {args.rounds} rounds\n")
    print("| layout | events/s |")
    print("|---|---:|")
    print(f"| (a) {args.procs} JournalWriters, {args.procs} directories | {a:,.0f} |")
    print(f"| (b) {args.procs} TrailWriters, one trail directory | {b:,.0f} |")
    print(f"\n(b)/(a) = {b / a:.2f} (target >= 0.9)")
    print(f"last trail: verify_trail ok={report.ok}, {len(report.streams)} streams, {report.records} lines")


if __name__ == "__main__":
    main()
