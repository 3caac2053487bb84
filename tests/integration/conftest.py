"""Real servers on 127.0.0.1 for the middleware tests: uvicorn (ASGI) and werkzeug (WSGI), port 0, bounded.

Test modules reach the helpers through the session-scoped ``kit`` fixture (``kit.serve_asgi(app)``,
``kit.events(dir)``...), never by importing this module: ``conftest`` is not a unique module name.
The ``pipeline`` fixture journals under the test module's ``POLICY``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import auditlog
from auditlog.canaries import Canaries, load_canaries
from auditlog.handle import AuditHandle
from auditlog.policy import Policy
from store.exceptions import JournalError
from store.keys import KeyRing, MasterKey
from tests._support import START_TIMEOUT, serve_uvicorn, trail_records

CANARIES: Canaries = load_canaries()


def serve_asgi(app: Any, *, lifespan: str = "auto") -> AbstractContextManager[str]:
    """Run ``app`` under uvicorn on 127.0.0.1, port 0, in a thread; yield its base URL."""
    return serve_uvicorn(app, lifespan=lifespan, backlog=1024)


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


@contextmanager
def journaled(directory: Path, policy: Policy | None = None, **kw: Any) -> Iterator[AuditHandle]:
    """A :func:`new_handle`, shut down on exit."""
    handle = new_handle(directory, policy, **kw)
    try:
        yield handle
    finally:
        handle.shutdown()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sinks:
    """Where a canary could surface: the journal under ``directory`` and the ``console`` log output."""

    handle: AuditHandle
    directory: Path
    console: io.StringIO

    def assert_no_leaks(self) -> None:
        """No canary in the journal's bytes, none in what was logged to the console."""
        assert [] == CANARIES.leaks_in(journal_bytes(self.directory))
        assert [] == CANARIES.leaks_in(self.console.getvalue().encode())

    def run_planted(self, go: Callable[[], Awaitable[Any]]) -> None:
        """:func:`run` ``go``, which plants a canary: at least one new event, and no leak in any sink."""
        before = len(events(self.directory))
        run(go)
        self.handle.flush()
        assert len(events(self.directory)) > before
        self.assert_no_leaks()


@contextmanager
def canary_sinks(root: Path, policy: Policy, **kw: Any) -> Iterator[Sinks]:
    """A handle journaling into ``root / "journal"`` and logging into a console buffer; shut down on exit."""
    console = io.StringIO()
    with journaled(root / "journal", policy, console=console, **kw) as handle:
        yield Sinks(handle=handle, directory=root / "journal", console=console)


def events(directory: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The audit events (records with a schema version) in a journal, optionally of one kind."""
    out = [r for r in trail_records(directory) if r.get("v") == 1]
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


def run(fn: Callable[[], Awaitable[Any]], seconds: float = 30) -> Any:
    """Run the coroutine function ``fn`` under anyio, failing after ``seconds``."""

    async def bounded() -> Any:
        with anyio.fail_after(seconds):
            return await fn()

    return anyio.run(bounded)


class RefusingJournal:
    """Stands in for the journal writer: every append fails the way a full disk would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def append(self, record: Any) -> int:
        raise JournalError("journal refused the record (simulated)")

    def append_owned(self, record: Any) -> int:
        raise JournalError("journal refused the record (simulated)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


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
        canary_sinks=canary_sinks,
        events=events,
        wait_events=wait_events,
        journal_bytes=journal_bytes,
        MemoryBodies=MemoryBodies,
        RefusingJournal=RefusingJournal,
        run=run,
    )


@pytest.fixture(scope="module")
def policy(request: pytest.FixtureRequest) -> Policy:
    """The test module's ``POLICY``."""
    policy: Policy = request.module.POLICY
    return policy


@pytest.fixture
def pipeline(policy: Policy, tmp_path: Path) -> Iterator[tuple[AuditHandle, Path]]:
    """A handle under the test module's ``POLICY``, journaling into ``tmp_path / "journal"``."""
    with journaled(tmp_path / "journal", policy) as handle:
        yield handle, tmp_path / "journal"
