"""Captured bodies under failure: real uvicorn, moto's S3 server over HTTP, and a TCP proxy we control.

Each scenario ends with ``auditlog bodies reconcile`` reporting 0 dangling refs. Outage durations are
scaled down from the issue's (S3 refusing 30 s -> :data:`REFUSE_S`, hanging 60 s -> :data:`HANG_S`) with
the client timeouts scaled the same way (read timeout 1 s instead of 6 s, 2 attempts): the mechanism is
the same (requests never touch S3; packs accumulate locally; the shipper backs off and catches up).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from store.bodies import generate_reader_key
from tests.store.bodies_fixtures import AWS_ENV, MotoEndpoint, free_port, moto_endpoint, new_ring

__all__ = ["moto_endpoint"]

ROOT = Path(__file__).resolve().parents[2]
REFUSE_S = 6.0  # the 30 s, scaled
HANG_S = 10.0  # the 60 s, scaled
RATE = 100.0  # captured requests per second during the scenarios


class ChaosProxy:
    """A TCP proxy to S3: ``pass`` forwards, ``refuse`` resets every connection, ``hang`` accepts and
    forwards nothing (an endpoint that never answers). Applies to open connections too."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.mode = "pass"
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = False
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "refuse":
                self._reset(conn)
            elif self.mode == "hang":
                self._held.append(conn)
            else:
                try:
                    up = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    self._reset(conn)
                    continue
                for a, b in ((conn, up), (up, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _reset(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "hang":
                    time.sleep(0.05)  # swallow nothing, answer nothing
                if self.mode == "refuse":
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._reset(src)
        self._reset(dst)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self._held:
            self._reset(c)


@dataclass
class Load:
    """Paced requests from a few keep-alive connections; latencies by path, failures counted."""

    base_port: int
    rate: float
    path: str = "/capture"
    conns: int = 4
    stop: threading.Event = field(default_factory=threading.Event)
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.conns):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self, i: int) -> None:
        interval = self.conns / self.rate
        nxt = time.monotonic() + i * interval / self.conns
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            nxt += interval
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.base_port, timeout=5)
                t0 = time.perf_counter()
                conn.request("GET", self.path)
                conn.getresponse().read()
                self.latencies.append(time.perf_counter() - t0)
                self.ok += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def finish(self) -> Load:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        return self


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else (xs[0] if xs else 0.0)


@dataclass
class Rig:
    tmp: Path
    moto: MotoEndpoint
    proxy: ChaosProxy
    bucket: str
    key_b64: str
    public: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    bare: bool = False  # the middleware is handed a bare S3BodyStore, not open_body_store's

    @property
    def trail(self) -> Path:
        return self.tmp / "trail"

    @property
    def outbox(self) -> Path:
        return self.tmp / ("trail.bodies-outbox" if self.bare else "outbox")

    def env(self) -> dict[str, str]:
        return {**os.environ, **AWS_ENV, "AUDITLOG_KEY": self.key_b64, "PYTHONPATH": str(ROOT)}

    def start(self) -> None:
        self.port = free_port()
        cfg = {
            "trail": str(self.trail),
            "outbox": str(self.outbox),
            "store": f"s3://{self.bucket}/bodies",
            "endpoint": f"http://127.0.0.1:{self.proxy.port}",
            "public": self.public,
            "port": self.port,
            "bare": self.bare,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bodies_server", json.dumps(cfg)],
            env=self.env(),
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        raise AssertionError("the server did not start")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def unshipped(self) -> int:
        """Non-empty packs in the outbox (one the shipper deletes while this counts is not counted)."""
        if not self.outbox.exists():
            return 0
        count = 0
        for p in self.outbox.iterdir():
            with contextlib.suppress(FileNotFoundError):
                count += 1 if p.stat().st_size else 0
        return count

    def drain(self, timeout: float = 90.0) -> None:
        """Wait until the outbox holds no non-empty pack (everything shipped)."""
        deadline = time.monotonic() + timeout
        while self.unshipped() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert 0 == self.unshipped(), "the outbox did not drain"

    def reconcile(self) -> dict[str, Any]:
        cmd = [
            sys.executable, "-m", "auditlog", "bodies", "reconcile", str(self.trail),
            "--store", f"s3://{self.bucket}/bodies", "--endpoint-url", self.moto.url, "--json",
        ]  # fmt: skip
        r = subprocess.run(cmd, env=self.env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
        report: dict[str, Any] = json.loads(r.stdout)
        report["exit"] = r.returncode
        return report


@pytest.fixture
def rig(tmp_path: Path, moto_endpoint: MotoEndpoint) -> Iterator[Rig]:
    proxy = ChaosProxy(moto_endpoint.port)
    ring = new_ring()
    r = Rig(
        tmp=tmp_path,
        moto=moto_endpoint,
        proxy=proxy,
        bucket=moto_endpoint.new_bucket(),
        key_b64=ring.active.to_b64(),
        public=generate_reader_key(tmp_path / "reader.pem"),
    )
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(10)
        proxy.close()


def finish_and_reconcile(rig: Rig) -> dict[str, Any]:
    """Restart over what is left, let it ship, stop gracefully, reconcile."""
    rig.proxy.mode = "pass"
    rig.start()
    rig.drain()
    rig.signal(signal.SIGTERM)
    return rig.reconcile()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_under_load_leaves_no_dangling_ref(rig: Rig, sig: int) -> None:
    """Killed mid-load with S3 slow to take bodies: the next start ships the packs; nothing dangles."""
    rig.start()
    rig.proxy.mode = "hang"  # bodies pile up locally, as under a burst
    load = Load(rig.port, RATE).start()
    time.sleep(2.0)
    rig.signal(sig)
    load.finish()
    assert load.ok > 50 and rig.unshipped() > 0
    report = finish_and_reconcile(rig)
    assert (0, 0) == (report["exit"], report["dangling"]), report
    assert report["refs"] >= load.ok - 10 and report["stored"] + report["accounted"] == report["refs"]


@pytest.mark.parametrize(("mode", "seconds"), [("refuse", REFUSE_S), ("hang", HANG_S)])
def test_an_s3_outage_never_stalls_a_request(rig: Rig, mode: str, seconds: float) -> None:
    """S3 refusing or hanging: requests keep their latency (captured or not), packs accumulate, the
    shipper catches up after, and reconcile reports 0 dangling."""
    rig.start()
    base = Load(rig.port, 50.0, path="/plain", conns=1).start()
    time.sleep(2.0)
    base.finish()
    rig.proxy.mode = mode
    plain = Load(rig.port, 50.0, path="/plain", conns=1).start()
    captured = Load(rig.port, RATE).start()
    time.sleep(seconds)
    plain.finish()
    captured.finish()
    assert rig.unshipped() > 0  # bodies waited on local disk
    rig.proxy.mode = "pass"
    rig.drain()
    rig.signal(signal.SIGTERM)
    assert 0 == plain.failed + captured.failed
    budget = max(3 * p99(base.latencies), 0.05)
    assert p99(plain.latencies) < budget, (p99(base.latencies), p99(plain.latencies))
    assert p99(captured.latencies) < budget, (p99(base.latencies), p99(captured.latencies))
    report = rig.reconcile()
    assert (0, 0) == (report["exit"], report["dangling"]), report
    assert report["refs"] == captured.ok == report["stored"]


def test_a_bare_remote_store_is_put_behind_an_outbox(rig: Rig) -> None:
    """Handed a bare S3BodyStore (no outbox of its own), the middleware puts an outbox in front: with S3
    hanging, captured requests keep their latency and the bodies wait on local disk, then ship."""
    rig.bare = True
    rig.start()
    base = Load(rig.port, 50.0, path="/plain", conns=1).start()
    time.sleep(2.0)
    base.finish()
    rig.proxy.mode = "hang"
    captured = Load(rig.port, RATE).start()
    time.sleep(HANG_S / 2)
    captured.finish()
    assert rig.unshipped() > 0  # in the outbox the middleware made, next to the trail
    rig.proxy.mode = "pass"
    rig.drain()
    rig.signal(signal.SIGTERM)
    assert 0 == captured.failed
    assert p99(captured.latencies) < max(3 * p99(base.latencies), 0.05)
    report = rig.reconcile()
    assert (0, 0) == (report["exit"], report["dangling"]), report
