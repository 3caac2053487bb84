"""Plain helpers shared across test packages (fixtures live in the ``conftest.py`` files).

Imported as ``from tests._support import ...``; ``tests/conftest.py`` registers it for pytest's
assertion rewriting, so an assert in here fails with the same detail as one in a test module.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn

from auditlog.canaries import load_canaries
from auditlog.cli import evidence, lake, query
from auditlog.policy import Policy, loads
from store.keys import KeyRing, MasterKey
from store.trail import iter_trail_records, list_streams, verify_trail

START_TIMEOUT = 10.0
SECRETS = sorted(load_canaries().values.values())

_GATES = """
version = 1
id = "{policy_id}"

[[rules]]
id = "admin"
match = {{ {key} = "{admin}" }}
required_scopes = ["admin"]

[[rules]]
id = "kill"
match = {{ {key} = "{disabled}" }}
disabled = true

[[rules]]
id = "closed"
match = {{ {key} = "{closed}" }}
fail_mode = "closed"
"""


def gate_policy(
    policy_id: str, *, key: str, admin: str, disabled: str, closed: str, rules: str = ""
) -> Policy:
    """The policy every middleware test drives: its three gates, then ``rules`` (TOML) of its own.

    Args:
        policy_id: the policy's ``id``.
        key: what the rules match on (``"route"``, ``"tool"``).
        admin: matched by rule ``admin``, which requires the ``admin`` scope.
        disabled: matched by rule ``kill``, the kill switch.
        closed: matched by rule ``closed``, which fails closed when the journal refuses.
        rules: further ``[[rules]]`` tables, appended after the three gates.

    Returns:
        The validated policy.
    """
    gates = _GATES.format(policy_id=policy_id, key=key, admin=admin, disabled=disabled, closed=closed)
    return loads(gates + rules)


def add_mcp_tools(tool: Callable[[Callable[..., Any]], Any], *, error: type[Exception]) -> None:
    """Register the tools both MCP test servers expose, each through ``tool`` (the server's decorator).

    Args:
        tool: registers one function as a tool, under the function's name.
        error: what ``fail`` raises, with the caller's message.
    """

    def add(a: int, b: int) -> int:
        return a + b

    def secret(index: int) -> str:
        return SECRETS[index % len(SECRETS)]

    def fail(message: str) -> str:
        raise error(message)

    def delete_user(uid: str) -> str:
        return "deleted"

    def off() -> str:
        raise AssertionError("a disabled tool must not run")

    def pay(amount: int) -> str:
        return "paid"

    for fn in (add, secret, fail, delete_user, off, pay):
        tool(fn)


MCP_PLACES = ("arg_key", "result", "error", "prompt_arg", "tool_name", "meta")


async def plant_in_mcp(client: Any, where: str, canary: str, index: int) -> bool:
    """Plant ``canary`` through ``client`` at ``where``, one of :data:`MCP_PLACES`.

    Args:
        client: an MCP client session on a server with the :func:`add_mcp_tools` tools and a ``greet`` prompt.
        where: the placement.
        canary: the value to plant.
        index: which of :data:`SECRETS` the ``secret`` tool returns.

    Returns:
        Whether ``where`` is one of :data:`MCP_PLACES` (else nothing was sent).
    """
    if where == "arg_key":
        await client.call_tool("add", {canary: 1, "a": 1, "b": 2})
    elif where == "result":
        await client.call_tool("secret", {"index": index})
    elif where == "error":
        await client.call_tool("fail", {"message": canary})
    elif where == "prompt_arg":
        await client.get_prompt("greet", {"name": canary})
    elif where == "tool_name":
        await client.call_tool(canary, {})
    elif where == "meta":
        await client.call_tool("add", {"a": 1, "b": 1}, meta={"traceparent": canary, "note": canary})
    else:
        return False
    return True


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (HTTP, port 0) with dummy credentials in the environment; yields its
    endpoint URL. Stopped, and the environment restored, on exit."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_TEST_ENV.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@contextmanager
def serve_uvicorn(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1, port 0, in a thread; yield its base URL.

    Args:
        app: the ASGI application.
        **config: further ``uvicorn.Config`` arguments (``lifespan``, ``proxy_headers``...).

    Returns:
        A context manager yielding ``http://127.0.0.1:<port>``; the server stops on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, ws="none", **config))
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


def query_cli() -> typer.Typer:
    """A Typer root with the query, export, verify-pack, compact and ship commands registered."""
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """test root"""

    for group in (lake, query, evidence):
        group.register(app)
    return app


def write_key_file(ring: KeyRing, path: Path) -> Path:
    """Write ``ring``'s active key to ``path`` in the CLI's ``--key-file`` form; return ``path``."""
    path.write_text(ring.active.to_b64() + "\n")
    return path


def semconv_mode(monkeypatch: Any, mode: str) -> None:
    """Put the OpenTelemetry HTTP instrumentations in semantic-convention ``mode`` for one test.

    They read ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process; this resets that reading. ``mode`` is
    ``"default"`` (the keys before 1.21) or a value of the variable (``"http/dup"``).
    """
    import opentelemetry.instrumentation._semconv as semconv

    stability = semconv._OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    if mode == "default":
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    else:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)


def trail_records(trail: Path) -> list[dict[str, Any]]:
    """Every record of every stream of a trail (stream by stream, each in seq order)."""
    return [rec for _, rec in iter_trail_records(trail)]


def only_stream(trail: Path) -> Path:
    """The directory of a trail's one stream (for tests that open segment files)."""
    (info,) = list_streams(trail)
    return info.path


def trail_ok(trail: Path, keys: KeyRing) -> bool:
    """Whether the trail verifies (every stream, seal and checkpoint)."""
    return verify_trail(trail, keys=keys).ok


def every_record(directory: Path) -> list[dict[str, Any]]:
    """The records of a classic journal directory's own segments, then of every stream of the trail
    that shares the directory (an investigation journaling into the journal it reads)."""
    from store.journal import iter_records

    flat = list(iter_records(directory)) if any(directory.glob("[0-9]*.jsonl")) else []
    return flat + (trail_records(directory) if (directory / "trail.json").exists() else [])


#: What :func:`write_hosts` plants, host by host: (label, milliseconds after the start). Across hosts the
#: timeline orders by ts, then stream (``host-a.*`` before ``host-b.*``), then seq.
HOST_STEPS = {
    "host-a": (("a1", 0), ("a2", 2), ("a3", 2)),
    "host-b": (("b1", 1), ("b2", 2), ("b3", 5)),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Hosts:
    """Two hosts' trails written by real writers (:func:`write_hosts`), under one key ring."""

    a: Path
    b: Path
    ring: KeyRing
    cid: str
    counts: dict[str, int]

    @property
    def order(self) -> list[str]:
        """The labels of the shared request's steps in timeline order (ts, then stream, then seq)."""
        return ["a1", "b1", "a2", "a3", "b2", "b3"]


def write_hosts(root: Path, *, extra: int = 4) -> Hosts:
    """Write two trails, ``root/a`` (source host-a) and ``root/b`` (host-b), through ``auditlog.configure``.

    Both hold the steps of one request (correlation id ``cid``) that crosses the hosts (:data:`HOST_STEPS`:
    equal timestamps across and within hosts), and ``extra`` calls of their own, one refused.
    """
    import uuid
    from datetime import UTC, datetime, timedelta

    import auditlog

    ring = KeyRing(MasterKey.generate())
    cid = uuid.uuid4().hex
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=1)
    counts: dict[str, int] = {}
    for host, steps in HOST_STEPS.items():
        handle = auditlog.configure(journal_dir=root / host[-1], key=ring, source=host, stdlib=False)
        try:
            calls = [(label, ms, cid) for label, ms in steps]
            calls += [(f"{host}-own-{i}", 60_000 + i, uuid.uuid4().hex) for i in range(extra)]
            for n, (label, ms, c) in enumerate(calls):
                allowed = n != len(steps)  # the first call of its own is refused
                ts = (start + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                assert handle.emit(
                    {
                        "kind": "mcp.tool_call" if allowed else "authz.denied",
                        "ts": ts,
                        "correlation_id": c,
                        "actor": {"subject": f"svc-{host}", "tenant": "acme"},
                        "action": {"name": label, "method": "tools/call", "target": None},
                        "decision": {"allowed": allowed, "reason": "ok" if allowed else "missing_scopes"},
                    }
                )
        finally:
            handle.shutdown()
        counts[host] = len(steps) + extra
    return Hosts(a=root / "a", b=root / "b", ring=ring, cid=cid, counts=counts)
