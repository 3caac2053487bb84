"""Real servers on 127.0.0.1 for the middleware tests: uvicorn (ASGI) and werkzeug (WSGI), port 0, bounded.

Test modules reach the helpers through the session-scoped ``kit`` fixture (``kit.serve_asgi(app)``,
``kit.events(dir)``...), never by importing this module: ``conftest`` is not a unique module name.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn

import auditlog
from auditlog.canaries import Canaries, load_canaries
from auditlog.pipeline import AuditHandle
from auditlog.policy import Policy
from store.journal import iter_records
from store.keys import KeyRing, MasterKey

CANARIES: Canaries = load_canaries()
START_TIMEOUT = 10.0


@contextmanager
def serve_asgi(app: Any, *, lifespan: str = "auto") -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1, port 0, in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan=lifespan, ws="none", backlog=1024
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT)
        sock.close()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Run a WSGI ``app`` under werkzeug's threaded server on 127.0.0.1, port 0; yield its base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=START_TIMEOUT)


def new_handle(directory: Path, policy: Policy | None = None, **kw: Any) -> AuditHandle:
    """A pipeline journaling into ``directory`` with a fresh key."""
    kw.setdefault("stdlib", False)
    return auditlog.configure(journal_dir=directory, key=KeyRing(MasterKey.generate()), policy=policy, **kw)


def events(directory: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The audit events (records with a schema version) in a journal, optionally of one kind."""
    out = [r for r in iter_records(directory) if r.get("v") == 1]
    return [r for r in out if kind is None or r.get("kind") == kind]


def wait_events(handle: AuditHandle, directory: Path, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The journal's events once there are at least ``n``, waiting at most ``timeout`` seconds: a server
    writes the event after the last byte, so the client can see the response first."""
    deadline = time.monotonic() + timeout
    while True:
        handle.flush()
        found = events(directory)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def journal_bytes(directory: Path) -> bytes:
    """Every byte under a journal directory (segments and seals)."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


class MemoryBodies:
    """An in-test body sink: what the middleware handed over, and when."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[bytes, Any]] = {}
        self.lock = threading.Lock()

    def put(self, correlation_id: str, body: bytes, *, meta: Any) -> None:
        with self.lock:
            self.bodies[correlation_id] = (body, meta)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules."""
    return SimpleNamespace(
        canaries=CANARIES,
        serve_asgi=serve_asgi,
        serve_wsgi=serve_wsgi,
        new_handle=new_handle,
        events=events,
        wait_events=wait_events,
        journal_bytes=journal_bytes,
        MemoryBodies=MemoryBodies,
    )
