"""One trail, many writers, under the servers production runs: gunicorn (uvicorn and sync workers, with
and without ``--preload``) and ``uvicorn --workers``, on 127.0.0.1.

Each app calls ``auditlog.configure(journal_dir=TRAIL)`` at import, as the README's quick start does. The
client sends every request with its own W3C ``traceparent``, so each request's event is found by its
trace id: every answered request is journaled exactly once, every worker served, and ``auditlog verify``
passes on the trail once the server has stopped.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from store.keys import KeyRing, MasterKey
from store.trail import list_streams, verify_trail
from tests._support import trail_records

pytestmark = pytest.mark.slow

REQUESTS = 1000
WORKERS = 4
BIN = Path(sys.executable).parent

ASGI_APP = """
import os, asyncio
import auditlog
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from auditlog.integrations.asgi import AuditMiddleware

auditlog.configure(journal_dir=os.environ["TRAIL"])

async def item(request):
    await asyncio.sleep(0.002)  # long enough that one worker cannot take every connection
    return JSONResponse({"pid": os.getpid()})

app = Starlette(routes=[Route("/items/{n:int}", item)])
app.add_middleware(AuditMiddleware)
"""

WSGI_APP = """
import os, time
import auditlog
from flask import Flask, jsonify
from auditlog.integrations.wsgi import AuditWSGIMiddleware

auditlog.configure(journal_dir=os.environ["TRAIL"])
app = Flask(__name__)

@app.get("/items/<int:n>")
def item(n):
    time.sleep(0.002)
    return jsonify(pid=os.getpid())

app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app)
"""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    trail: Path
    keys: KeyRing
    log: Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(tmp_path: Path, app_source: str, argv: list[str]) -> Iterator[Server]:
    """Start a server from ``argv`` (``{port}`` and ``{app}`` filled in), wait until it answers, and stop
    it with SIGTERM (a graceful exit) afterwards."""
    master = MasterKey.generate()
    (tmp_path / "app_under_test.py").write_text(textwrap.dedent(app_source))
    trail = tmp_path / "trail"
    port = _port()
    env = {
        **os.environ,
        "TRAIL": str(trail),
        "AUDITLOG_KEY": master.to_b64(),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])]),
    }
    env.pop("AUDITLOG_KEY_FILE", None)
    log = tmp_path / "server.log"
    cmd = [a.format(port=port, app="app_under_test:app") for a in argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/items/0", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Server(url=url, proc=proc, trail=trail, keys=KeyRing(master), log=log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def load(url: str, n: int = REQUESTS, threads: int = 16) -> dict[str, int]:
    """``n`` requests, each on a new connection with its own trace id; trace id -> pid that answered."""

    def one(i: int) -> tuple[str, int] | None:
        trace = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace}-{secrets.token_hex(8)}-01", "connection": "close"}
        try:
            r = httpx.get(f"{url}/items/{i}", headers=headers, timeout=10)
        except httpx.HTTPError:
            return None
        return (trace, int(r.json()["pid"])) if r.status_code == 200 else None

    with ThreadPoolExecutor(threads) as pool:
        return dict(x for x in pool.map(one, range(1, n + 1)) if x is not None)


def journaled(trail: Path) -> Counter[str]:
    """How many ``http.request`` events each correlation id has, over every stream of the trail."""
    return Counter(r["correlation_id"] for r in trail_records(trail) if r.get("kind") == "http.request")


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)


def assert_every_request_once(server: Server, answered: dict[str, int]) -> None:
    stop(server)
    counts = journaled(server.trail)
    assert REQUESTS == len(answered)
    assert {1} == {counts[t] for t in answered}, "a request journaled never or twice"
    report = verify_trail(server.trail, keys=server.keys)
    assert report.ok, [str(p) for p in (*report.problems, *report.warnings)]
    cli = subprocess.run(
        [str(BIN / "auditlog"), "verify", str(server.trail)],
        env={**os.environ, "AUDITLOG_KEY": server.keys.active.to_b64()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert 0 == cli.returncode, cli.stdout + cli.stderr


GUNICORN_UVICORN = [str(BIN / "gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", str(WORKERS),
                    "-b", "127.0.0.1:{port}", "--graceful-timeout", "10", "{app}"]  # fmt: skip


class TestGunicorn:
    @pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
    def test_uvicorn_workers(self, tmp_path: Path, preload: bool) -> None:
        """gunicorn with 4 uvicorn workers: every request journaled once, all workers serve, verify 0."""
        argv = [*GUNICORN_UVICORN[:-1], *(["--preload"] if preload else []), GUNICORN_UVICORN[-1]]
        with serve(tmp_path, ASGI_APP, argv) as server:
            answered = load(server.url)
            assert WORKERS == len(set(answered.values())), "not every worker served"
            assert_every_request_once(server, answered)
        streams = {s.instance for s in list_streams(server.trail)}
        assert len(streams) >= WORKERS  # one stream per worker (and the master's, with --preload)

    @pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
    def test_sync_workers_wsgi(self, tmp_path: Path, preload: bool) -> None:
        """A Flask app under gunicorn's sync workers: every request journaled once, verify 0."""
        argv = [str(BIN / "gunicorn"), "-w", str(WORKERS), "-b", "127.0.0.1:{port}",
                *(["--preload"] if preload else []), "{app}"]  # fmt: skip
        with serve(tmp_path, WSGI_APP, argv) as server:
            answered = load(server.url)
            assert WORKERS == len(set(answered.values())), "not every worker served"
            assert_every_request_once(server, answered)

    def test_killed_worker_is_recovered_and_nothing_answered_is_lost(self, tmp_path: Path) -> None:
        """SIGKILL a worker under load: gunicorn restarts it, the new worker recovers and seals the dead
        worker's stream (on the record), every answered request is journaled once, verify 0."""
        with serve(tmp_path, ASGI_APP, GUNICORN_UVICORN) as server:
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(load, server.url)
                time.sleep(0.5)
                first = load(server.url, n=20, threads=4)
                victim = next(iter(set(first.values())))
                os.kill(victim, signal.SIGKILL)
                answered = {**first, **running.result()}
            more = load(server.url, n=REQUESTS - len(answered) if len(answered) < REQUESTS else 1)
            answered.update(more)
            stop(server)
            counts = journaled(server.trail)
            assert {1} == {counts[t] for t in answered}, "an answered request was lost or doubled"
            dead = [s for s in list_streams(server.trail) if f"{victim}-" in s.instance]
            assert 1 == len(dead) and "sealed" == dead[0].state
            recovered = [
                r
                for r in trail_records(server.trail)
                if r.get("kind") == "journal.segment_opened" and r.get("recovered")
            ]
            assert recovered, "the recovery is not on the record"
            report = verify_trail(server.trail, keys=server.keys)
            assert report.ok, [str(p) for p in (*report.problems, *report.warnings)]


class TestUvicornWorkers:
    def test_workers_flag(self, tmp_path: Path) -> None:
        """``uvicorn app --workers 4``: every worker serves, every request journaled once, verify 0."""
        argv = [str(BIN / "uvicorn"), "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "{port}",
                "--no-access-log", "{app}"]  # fmt: skip
        with serve(tmp_path, ASGI_APP, argv) as server:
            answered = load(server.url)
            assert WORKERS == len(set(answered.values())), "not every worker served"
            assert_every_request_once(server, answered)
