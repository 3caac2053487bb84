"""Body-store benchmark: what envelope encryption and access control cost over plain file writes.

One run, 16 KiB bodies (random bytes, so nothing compresses), same count for every row:

(a) plain file writes / reads: ``open(root/<id>.bin, "wb").write(body)``, no encryption, no metadata;
(b) ``LocalBodyStore.put`` (per-body AES-256-GCM data key, wrapped key in a separate header file, atomic
    exclusive publish) and ``LocalBodyStore.get`` (scope/tenant/purpose check, header + blob read, unwrap,
    decrypt, audit event). The audit sink is an in-memory list here; (b') repeats ``get`` with every
    ``body.read`` appended to a real chained journal (``store.journal``, fsync interval).

Also with ``fsync=True`` on both sides, for deployments that sync each body. Each round uses fresh
directories and times (a) and (b) back to back (order alternating between rounds, ``os.sync()`` before
each timing so no row pays for another's writeback). Printed: median ops/s and the median per-round
ratio (b)/(a) (target >= 0.5 for put and for get).

Second half, request latency through the ASGI middleware with body capture on vs off (target: added p50
< 5%): **pending**, the middleware (issue 3) does not exist yet; the section prints so and measures nothing.

Run: ``.venv/bin/python benchmarks/bench_bodies.py [--bodies N] [--size BYTES]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store.bodies import BodyMeta, LocalBodyStore, Principal  # noqa: E402
from store.keys import KeyRing, MasterKey  # noqa: E402

READER = Principal(name="bench", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
META = BodyMeta(tenant="acme", subject="user-1", retention=3600)


def timed(fn: Callable[[int], Any], n: int) -> float:
    """Seconds for ``fn(i)`` over ``range(n)``, GC off."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return time.perf_counter() - start
    finally:
        gc.enable()


def plain_put(root: Path, bodies: list[bytes], *, fsync: bool) -> Callable[[int], None]:
    def put(i: int) -> None:
        with open(root / f"req-{i}.bin", "wb") as fh:
            fh.write(bodies[i])
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    return put


def plain_get(root: Path) -> Callable[[int], bytes]:
    def get(i: int) -> bytes:
        with open(root / f"req-{i}.bin", "rb") as fh:
            return fh.read()

    return get


def measure(fn: Callable[[int], Any], n: int) -> float:
    """ops/s of ``fn`` over ``n`` calls, after flushing earlier writes (no row pays another's writeback)."""
    os.sync()
    return n / timed(fn, n)


def pair(a: Callable[[int], Any], b: Callable[[int], Any], n: int, r: int) -> tuple[float, float]:
    """Time (a) and (b) back to back; odd rounds run (b) first, so drift in the machine cancels out."""
    if r % 2:
        rb = measure(b, n)
        return measure(a, n), rb
    ra = measure(a, n)
    return ra, measure(b, n)


def one_round(
    tmp: Path, r: int, n: int, bodies: list[bytes], ring: KeyRing
) -> dict[str, tuple[float, float]]:
    from store.journal import JournalConfig, JournalWriter

    out: dict[str, tuple[float, float]] = {}
    for fsync in (False, True):
        count = n if not fsync else max(50, n // 10)
        sfx = " (fsync)" if fsync else ""
        plain_root = tmp / f"plain-{fsync}"
        plain_root.mkdir()
        events: list[dict[str, Any]] = []
        store = LocalBodyStore(tmp / f"store-{fsync}", keys=ring, audit=events.append, fsync=fsync)

        def store_put(i: int, store: LocalBodyStore = store) -> None:
            store.put(f"req-{i}", bodies[i], meta=META)

        def store_get(i: int, store: LocalBodyStore = store) -> bytes:
            return store.get(f"req-{i}", reader=READER, purpose="BENCH-1")

        out[f"put{sfx}"] = pair(plain_put(plain_root, bodies, fsync=fsync), store_put, count, r)
        if fsync:
            continue
        assert bodies[0] == store_get(0)
        out["get"] = pair(plain_get(plain_root), store_get, count, r)
        journal = JournalWriter(tmp / "journal", keys=ring, config=JournalConfig(fsync="interval"))
        try:
            journaled = LocalBodyStore(tmp / f"store-{fsync}", keys=ring, audit=journal.append)

            def journaled_get(i: int, store: LocalBodyStore = journaled) -> bytes:
                return store.get(f"req-{i}", reader=READER, purpose="BENCH-1")

            out["get, reads journaled (b')"] = pair(plain_get(plain_root), journaled_get, count, r)
        finally:
            journal.close()
    return out


def run(n: int, size: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """Rows of (label, plain ops/s, store ops/s, ratio): medians over ``rounds`` rounds; the ratio is the
    median of the per-round ratios (each round times (a) and (b) back to back)."""
    bodies = [os.urandom(size) for _ in range(n)]
    ring = KeyRing(MasterKey.generate())
    per: dict[str, list[tuple[float, float]]] = {}
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
            for label, ab in one_round(Path(tmp), r, n, bodies, ring).items():
                per.setdefault(label, []).append(ab)
    return [
        (
            label,
            statistics.median(a for a, _ in v),
            statistics.median(b for _, b in v),
            statistics.median(b / a for a, b in v),
        )
        for label, v in per.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bodies", type=int, default=2000)
    ap.add_argument("--size", type=int, default=16 * 1024)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    n = max(1, min(args.bodies, 100_000))
    rounds = max(1, min(args.rounds, 20))
    print(
        f"body store: {n} bodies of {args.size} bytes, median of {rounds} rounds, local disk, "
        f"Python {sys.version.split()[0]}"
    )
    print()
    print("| operation | (a) plain files, ops/s | (b) LocalBodyStore, ops/s | (b)/(a) | target |")
    print("|---|---:|---:|---:|---|")
    for label, a, b, ratio in run(n, args.size, rounds):
        target = ">= 0.5" if label in ("put", "get") else "(info)"
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {ratio:.2f} | {target} |")
    print()
    print("## ASGI request latency, body capture on vs off (target: added p50 < 5%)")
    print("pending: ASGI middleware not built yet")


if __name__ == "__main__":
    main()
