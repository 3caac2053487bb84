"""Body-store benchmark: what envelope encryption and access control cost over plain file writes.

One run, 16 KiB bodies (random bytes, so nothing compresses), same count for every row:

(a) plain file writes / reads: ``open(root/<id>.bin, "xb").write(body)``, no encryption, no metadata;
(b) ``LocalBodyStore.put`` (a fresh AES-256-GCM data key per body, wrapped under the master-derived key,
    metadata bound as associated data, one ``O_EXCL`` file per body written under ``flock``) and
    ``LocalBodyStore.get`` (purpose, scope and tenant checks, one read, unwrap, decrypt, audit event).
    The audit sink is an in-memory list here; (b') repeats ``get`` with every
    ``body.read`` appended to a real chained journal (``store.journal``, fsync interval).

Also with ``fsync=True`` on both sides, for deployments that sync each body. Each round uses fresh
directories and times (a) and (b) back to back (order alternating between rounds, ``os.sync()`` before
each timing so no row pays for another's writeback). Printed: median ops/s and the median per-round
ratio (b)/(a) (target >= 0.5 for put and for get).

Second half, request latency through ``AuditMiddleware`` with body capture on vs off (target: added p50
< 5%). uvicorn serves a raw ASGI app answering a 16 KiB JSON body on 127.0.0.1, wrapped in
``AuditMiddleware`` with a policy whose ``capture_body`` is off or on (on: bodies go through a
``BodyWriter`` to a ``LocalBodyStore``). The server runs in its own process per configuration; this
process is the client (``http.client``, one keep-alive connection, sequential requests, a warm-up first),
rounds alternate the order. Printed: p50 and p99 per configuration, the added p50, and how many bodies the
writer stored or dropped (warm-up requests included). A third configuration runs the writer thread at
``nice=10`` (``WriterConfig.nice``) so that sealing and storing yield the CPU to request handling. Two
reference sinks bound what any in-process writer can reach here: one thread writing each body to its own
plaintext file behind a bounded queue of the writer's size (no encryption, metadata or audit), and a sink
that discards (the capture's own cost on the request path; its spread around zero is the noise).

Run: ``.venv/bin/python benchmarks/bench_bodies.py [--bodies N] [--size BYTES] [--requests N]``

``--paced``: the local-first outbox under a paced open-loop load (default 1000 req/s, 4 KiB bodies, 30 s
per configuration, 8 keep-alive connections from this process, uvicorn in its own process). ``off``
(capture off) against the outbox (``open_body_store(..., outbox=DIR, reader_public_key=...)``: each body
sealed for an X25519 reader key and appended to a local pack before the event is written; packs are
delivered to a ``LocalBodyStore``), with the shipper in its own process (``sidecar``: the server runs
``OutboxConfig(ship=False)`` next to ``auditlog bodies ship``) and as a thread in the server (``outbox``).
Printed: p50/p99 per configuration, p99 added (target < 1 ms),
bodies dropped (target 0). Then saturation: a 256 KiB outbox budget in front of an S3 endpoint that
refuses every connection; drops are expected, and each must be counted and journaled (``body.dropped``
events in the trail = the outbox's count).

``--count``: instructions per captured body under callgrind (``valgrind --tool=callgrind``; ``perf stat``
is not supported on this VM), in-process loops of N and 5N puts (the difference over 4N, so interpreter
start-up cancels): ``BodyOutbox.put`` (seal for a reader key + one append) against the plaintext-files
reference ``open(root/<id>.bin, "xb").write(body)``. Target ratio <= 1.5.

"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
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
        with open(root / f"req-{i}.bin", "xb") as fh:  # new files: "wb" (O_TRUNC) trips ext4 auto_da_alloc
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


POLICY = """
version = 1
id = "bench-bodies"

[defaults]
level = "shape"
capture_body = {capture}
body_retention = "1h"
"""


CONFIGS = {
    "off": "capture_body = false",
    "on": "capture_body = true, BodyWriter defaults",
    "on-nice": "capture_body = true, BodyWriter(nice=10)",
    "plain": "reference: capture to a thread writing plaintext files",
    "discard": "reference: capture to a sink that discards",
}


class PlainWriter:
    """Reference sinks. ``plain``: the least an off-request-path writer can do, one plaintext file per
    body from one thread behind a bounded queue (no encryption, metadata, index or audit); ``discard``:
    the capture's cost on the request path alone (the copy and the hand-off)."""

    def __init__(self, root: Path, *, discard: bool, queue_size: int = 1000) -> None:
        import queue
        import threading

        self.root, self.discard = root, discard
        self.stored = self.dropped = 0
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(queue_size)
        root.mkdir(parents=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, correlation_id: str, body: bytes, *, meta: Any) -> None:
        import queue

        if self.discard:
            self.stored += 1
            return
        try:
            self.queue.put_nowait((correlation_id, body))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            with open(self.root / item[0], "xb") as fh:
                fh.write(item[1])
            self.stored += 1

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(30)


def serve(port: int, config: str, directory: Path, size: int) -> None:
    """The server process: uvicorn + AuditMiddleware (+ BodyWriter -> LocalBodyStore when capturing)."""
    import uvicorn

    from auditlog import configure
    from auditlog.integrations.asgi import AuditMiddleware
    from auditlog.policy import loads
    from store.bodies import BodyWriter, WriterConfig

    payload = b'{"items": "' + b"x" * (size - 14) + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    capture = config != "off"
    policy = loads(POLICY.format(capture="true" if capture else "false"))
    handle = configure(
        journal_dir=directory / "journal", policy=policy, key=MasterKey.generate(), stdlib=False
    )
    writer = reference = None
    if config in ("plain", "discard"):
        reference = PlainWriter(directory / "plain", discard=config == "discard")
    elif capture:
        store = LocalBodyStore(directory / "bodies", keys=handle.keys)
        cfg = WriterConfig(spool_dir=directory / "spool", nice=10 if config == "on-nice" else 0)
        writer = BodyWriter(store, config=cfg)
    wrapped = AuditMiddleware(app, body_store=writer or reference, handle=handle)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a no-op handler lets us report.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(wrapped, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    stats = {"stored": 0, "dropped": 0}
    if writer is not None:
        writer.flush(30)
        writer.close()
        ws = writer.stats
        stats = {"stored": ws.stored + ws.spooled, "dropped": ws.dropped_full + ws.dropped_error}
    if reference is not None:
        reference.close()
        stats = {"stored": reference.stored, "dropped": reference.dropped}
    print(json.dumps(stats), flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(port: int, requests: int, warmup: int) -> list[float]:
    """Sequential GETs on one keep-alive connection; latencies in microseconds (warm-up dropped)."""
    import http.client

    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/orders/1")
            conn.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    out: list[float] = []
    for i in range(warmup + requests):
        start = time.perf_counter()
        conn.request("GET", "/orders/1", headers={"x-request-id": f"bench-{port}-{i}"})
        resp = conn.getresponse()
        resp.read()
        if i >= warmup:
            out.append((time.perf_counter() - start) * 1e6)
    conn.close()
    return out


def run_asgi(requests: int, size: int, rounds: int) -> dict[str, tuple[list[float], dict[str, int]]]:
    """Per configuration: latencies of all rounds pooled, and the writer's counts."""
    import subprocess

    out: dict[str, tuple[list[float], dict[str, int]]] = {
        c: ([], {"stored": 0, "dropped": 0}) for c in CONFIGS
    }
    for r in range(rounds):
        order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
        for config in order:
            port = _free_port()
            lat, counts = out[config]
            with tempfile.TemporaryDirectory(prefix="bench-asgi-") as tmp:
                cmd = [sys.executable, __file__, "--serve", config, "--port", str(port)]
                cmd += ["--dir", tmp, "--size", str(size)]
                with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as server:
                    try:
                        lat += client(port, requests, warmup=min(500, requests))
                    finally:
                        server.terminate()
                        stdout, _ = server.communicate(timeout=60)
                for k, v in json.loads(stdout.strip().splitlines()[-1]).items():
                    counts[k] += v
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# -- local-first outbox: paced load, saturation, instruction counts ----------------------------------


def serve_outbox(port: int, config: str, directory: Path, size: int) -> None:
    """The server process for ``--paced``: capture off, or through the outbox (``outbox`` / ``saturate``)."""
    import uvicorn

    from auditlog import configure
    from auditlog.bodies import open_body_store
    from auditlog.integrations.asgi import AuditMiddleware
    from auditlog.policy import loads
    from store.bodies import OutboxConfig, generate_reader_key

    payload = os.urandom(size // 2).hex().encode()[:size]
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    capture = config != "off"
    policy = loads(POLICY.format(capture="true" if capture else "false"))
    key = (
        MasterKey.from_b64(os.environ["AUDITLOG_KEY"])
        if "AUDITLOG_KEY" in os.environ
        else MasterKey.generate()
    )
    handle = configure(journal_dir=directory / "trail", policy=policy, key=key, stdlib=False)
    bodies = None
    if capture:
        public = generate_reader_key(directory / "reader.pem")
        if config == "saturate":
            url, opts = "s3://bench/bodies", {"endpoint_url": f"http://127.0.0.1:{_free_port()}"}
            cfg = OutboxConfig(max_outbox_bytes=256 << 10, backoff_initial=5.0, backoff_max=5.0)
            opts["region_name"] = "us-east-1"
        else:
            url, opts, cfg = f"file://{directory}/bodies", {}, OutboxConfig(ship=config != "sidecar")
        bodies = open_body_store(
            url,
            handle=handle,
            outbox=directory / "outbox",
            outbox_config=cfg,
            reader_public_key=public,
            **opts,
        )
    wrapped = AuditMiddleware(app, body_store=bodies, handle=handle)
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(wrapped, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    stats: dict[str, Any] = {"accepted": 0, "dropped": 0, "stored": 0}
    if bodies is not None and bodies.outbox is not None:
        box = bodies.outbox
        if config == "outbox":
            box.flush(60)
        st = box.stats
        stats = {"accepted": st.accepted, "dropped": sum(st.dropped.values()), "stored": st.stored}
        box.close(timeout=0)
    handle.shutdown()
    print(json.dumps(stats), flush=True)


def paced_client(port: int, rate: float, seconds: float, conns: int = 8) -> tuple[list[float], int]:
    """Open-loop GETs at ``rate`` per second over ``conns`` keep-alive connections; latencies (µs), errors."""
    import http.client
    import threading

    deadline = time.monotonic() + 20
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/warm")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    lat: list[float] = []
    errors = [0]
    start = time.monotonic() + 0.2
    end = start + seconds

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        k = 0
        while True:
            due = start + (k * conns + i) / rate
            if due >= end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            try:
                conn.request("GET", f"/orders/{k}")
                conn.getresponse().read()
                lat.append((time.perf_counter() - t0) * 1e6)
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            k += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors[0]


def run_paced(rate: float, seconds: float, size: int) -> None:
    import subprocess

    def one(config: str, secs: float) -> tuple[list[float], int, dict[str, Any], int]:
        port = _free_port()
        env = {**os.environ, "AUDITLOG_KEY": MasterKey.generate().to_b64(), "PYTHONPATH": str(ROOT)}
        with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
            cmd = [sys.executable, __file__, "--serve-outbox", config, "--port", str(port)]
            cmd += ["--dir", tmp, "--size", str(size)]
            sidecar = None
            if config == "sidecar":  # the shipper in its own process: `auditlog bodies ship`
                ship = [sys.executable, "-m", "auditlog", "bodies", "ship", f"{tmp}/outbox"]
                ship += ["--store", f"file://{tmp}/bodies", "--journal", f"{tmp}/trail", "--nice", "19"]
                sidecar = subprocess.Popen(ship, env=env, cwd=ROOT)
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as server:
                try:
                    lat, errors = paced_client(port, rate, secs)
                finally:
                    server.terminate()
                    stdout, _ = server.communicate(timeout=120)
            stats = json.loads(stdout.strip().splitlines()[-1])
            if sidecar is not None:
                deadline = time.monotonic() + 120
                while any(Path(tmp, "outbox").iterdir()) and time.monotonic() < deadline:
                    time.sleep(0.2)
                stats["stored"] = sum(1 for _ in Path(tmp, "bodies").rglob("*.body"))
                sidecar.terminate()
                sidecar.wait(60)
            journaled = _count_events(Path(tmp) / "trail", "body.dropped")
        return lat, errors, stats, journaled

    print(f"paced: {rate:.0f} req/s, {size}-byte bodies, {seconds:.0f} s per configuration, 8 connections")
    print()
    print("| configuration | requests | p50 µs | p99 µs | p99 added | bodies kept / dropped | target |")
    print("|---|---:|---:|---:|---:|---:|---|")
    runs = {c: one(c, seconds) for c in ("off", "sidecar", "outbox")}
    off99 = pct(runs["off"][0], 99)
    labels = {
        "off": "capture off",
        "sidecar": "capture on: outbox, shipper in its own process (`auditlog bodies ship`)",
        "outbox": "capture on: outbox, shipper thread in the server",
    }
    for config, (lat, errors, stats, _) in runs.items():
        added = "" if config == "off" else f"{(pct(lat, 99) - off99) / 1000:+.2f} ms"
        kept = (
            "" if config == "off" else f"{stats['accepted']} / {stats['dropped']} ({stats['stored']} shipped)"
        )
        target = "" if config == "off" else "p99 added < 1 ms, 0 dropped"
        p50, p99 = pct(lat, 50), pct(lat, 99)
        row = (
            f"| {labels[config]} | {len(lat)} (+{errors} errors) | {p50:,.0f} | {p99:,.0f} | {added} | {kept}"
        )
        print(f"{row} | {target} |")
    lat, errors, stats, journaled = one("saturate", min(seconds, 5.0))
    print()
    print(
        f"saturation ({rate:.0f} req/s for {min(seconds, 5.0):.0f} s, 256 KiB outbox, S3 refusing): "
        f"{stats['accepted']} kept locally, {stats['dropped']} dropped, {journaled} body.dropped events "
        f"journaled ({'every drop journaled' if journaled == stats['dropped'] else 'MISMATCH'}); "
        f"p99 {pct(lat, 99):,.0f} µs"
    )


def _count_events(trail: Path, kind: str) -> int:
    from store.trail import iter_trail_records

    return sum(1 for _, rec in iter_trail_records(trail) if rec.get("kind") == kind)


def count_loop(kind: str, n: int, size: int) -> None:
    """The loop callgrind measures: ``n`` captured bodies through ``kind``.

    ``plain``: ``open(root/<id>.bin, "xb").write(body)`` on the calling thread; ``plain-writer``: the
    plaintext reference sink of the ASGI half (:class:`PlainWriter`: a bounded queue and one thread
    writing each body to its own file), flushed at the end; ``outbox``: :meth:`BodyOutbox.put` (seal for
    an X25519 reader key, append to the pack).
    """
    from store.bodies import BodyOutbox, MemoryBodyStore, generate_reader_key
    from store.keys import KeyRing

    body = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="bench-count-") as tmp:
        root = Path(tmp)
        if kind == "plain":
            for i in range(n):
                with open(root / f"req-{i}.bin", "xb") as fh:
                    fh.write(body)
            return
        if kind == "plain-writer":
            writer = PlainWriter(root / "plain", discard=False, queue_size=n + 1)
            for i in range(n):
                writer.put(f"req-{i}", body, meta=META)
            writer.close()
            return
        public = generate_reader_key(root / "reader.pem")
        store = MemoryBodyStore(keys=KeyRing(MasterKey.generate()), wrapper=_reader_wrapper(public))
        box = BodyOutbox(store, root / "outbox", start=False)
        box.put("warm-0", body, meta=META)
        for i in range(n):
            box.put(f"req-{i}", body, meta=META)


def _reader_wrapper(public: str) -> Any:
    from store.bodies import ReaderKeySessions, SessionKeyWrapper

    return SessionKeyWrapper(ReaderKeySessions(public))


def instructions(kind: str, n: int, size: int) -> int:
    import re
    import subprocess

    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    cmd += ["--count-loop", kind, "--bodies", str(n), "--size", str(size)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if m is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(m.group(1))


def run_count(n: int, size: int) -> None:
    print(f"instructions per captured body (callgrind), {size}-byte bodies, loops of {n} and {5 * n}")
    print()
    print("| path | instructions / body | outbox / this |")
    print("|---|---:|---:|")
    kinds = ("plain", "plain-writer", "outbox")
    per = {k: (instructions(k, 5 * n, size) - instructions(k, n, size)) / (4 * n) for k in kinds}
    labels = {
        "plain": "open(xb).write(body) on the request thread",
        "plain-writer": "plaintext reference sink: bounded queue + writer thread, one file per body",
        "outbox": "BodyOutbox.put: seal for a reader key + one pack append",
    }
    for k in kinds:
        print(f"| {labels[k]} | {per[k]:,.0f} | {per['outbox'] / per[k]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bodies", type=int, default=2000)
    ap.add_argument("--size", type=int, default=16 * 1024)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--serve", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--paced", action="store_true", help="paced load through the local-first outbox")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--count", action="store_true", help="instructions per captured body (callgrind)")
    ap.add_argument(
        "--serve-outbox", choices=["off", "outbox", "sidecar", "saturate"], help=argparse.SUPPRESS
    )
    ap.add_argument("--count-loop", choices=["plain", "plain-writer", "outbox"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.port, args.serve, args.dir, args.size)
        return
    if args.serve_outbox:
        serve_outbox(args.port, args.serve_outbox, args.dir, args.size)
        return
    if args.count_loop:
        count_loop(args.count_loop, args.bodies, args.size)
        return
    if args.paced:
        run_paced(args.rate, args.seconds, args.size if args.size != 16 * 1024 else 4096)
        return
    if args.count:
        run_count(
            min(args.bodies, 1000) if args.bodies != 2000 else 200,
            args.size if args.size != 16 * 1024 else 4096,
        )
        return
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
    requests = max(100, min(args.requests, 50_000))
    asgi_rounds = 4
    print(
        f"ASGI: uvicorn + AuditMiddleware, {args.size}-byte JSON responses, {requests} sequential requests "
        f"x {asgi_rounds} rounds per configuration, one keep-alive connection, 127.0.0.1"
    )
    print()
    results = run_asgi(requests, args.size, asgi_rounds)
    off50 = pct(results["off"][0], 50)
    print("| configuration | p50 µs | p99 µs | added p50 | bodies stored / dropped | target |")
    print("|---|---:|---:|---:|---:|---|")
    for config, (lat, counts) in results.items():
        p50 = pct(lat, 50)
        added = "" if config == "off" else f"{100 * (p50 / off50 - 1):+.1f}%"
        stored = "" if config == "off" else f"{counts['stored']} / {counts['dropped']}"
        target = "added p50 < 5%" if config in ("on", "on-nice") else ""
        print(f"| {CONFIGS[config]} | {p50:,.0f} | {pct(lat, 99):,.0f} | {added} | {stored} | {target} |")


if __name__ == "__main__":
    main()
