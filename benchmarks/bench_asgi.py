"""ASGI and MCP middleware overhead, side by side. One run prints a table of ratios.

    .venv/bin/python benchmarks/bench_asgi.py [--requests 20000] [--connections 32] [--stream-mib 512]

HTTP: uvicorn (one server process) serves a small JSON endpoint (a) bare, (b) behind ``AuditMiddleware``
writing the chained journal, (c) behind a typical ``BaseHTTPMiddleware`` that logs method, path, status and
duration through stdlib ``logging`` to a file. (f), a reference, appends one minimal record per request
(correlation id, method, path, status, bytes, duration) to the same chained journal and does nothing else:
(f)/(a) bounds what any middleware that journals each request synchronously can reach. (a') and (b')
repeat (a) and (b) in an app whose router tries 100 other routes first (the middleware finds the route
template before the app runs). The load comes from a separate process: a minimal keep-alive HTTP/1.1
client on asyncio streams over loopback, a bounded number of requests. Variants are run twice,
interleaved; the better run counts.

Latency is also measured under a fixed request rate well below either variant's capacity (open loop,
``--paced-rate``): with 32 connections at saturation, latency is connections / throughput, so the closed
loop's p99 follows the throughput gap; the paced p99 is what one request waits for the middleware.

Memory: a 512 MiB streamed response through (b) with body capture on (cap 1 MiB): the server's peak
RSS growth. MCP: tool calls per second through an in-memory client session with and without
``MCPAuditMiddleware``, and with the reference (f) as the server's middleware. Targets: (b)/(a) >= 0.90,
(b) faster than (c), p99 added < 1 ms, RSS growth < 32 MiB, MCP ratio >= 0.90.

``--count`` (deterministic; ``--variants a,b``, ``--n``, ``--warm``): each variant in its own process,
driven in process with a synthetic scope/receive/send loop (MCP: the in-memory client session), counted
under callgrind: instructions per request with and without SHA-256, system calls per request (strace),
and CPU µs per request without valgrind for context. Variants: bare Starlette, a no-op wrapper, the
journal-only reference (f), ``AuditMiddleware`` (default policy; a 100-rule policy on a 100-route app),
OpenTelemetry's ASGI middleware (BatchSpanProcessor, console exporter to a file), Sentry's ASGI
middleware (traces on, a no-op transport), and MCP bare / (f) / ``MCPAuditMiddleware``. Targets, judged
without SHA-256: (b) added <= 1.5x (f) added; <= 1/10 of OpenTelemetry's and of Sentry's; MCP adapter
<= 1.5x its (f); at most one added system call per request. See ``benchmarks/_instr.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAYLOAD = {"id": 42, "status": "shipped", "items": [{"sku": "A1", "qty": 2}], "total": 19.5}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Sink:
    """A body sink that keeps only the last captured body (capped by the middleware)."""

    def __init__(self) -> None:
        self.last = 0

    def put(self, correlation_id: str, body: bytes, *, meta: Any) -> None:
        self.last = len(body)


def _handle(workdir: Path, policy: Any = None) -> Any:
    import auditlog
    from store.keys import KeyRing, MasterKey

    key = KeyRing(MasterKey.generate())
    return auditlog.configure(journal_dir=workdir / "journal", key=key, policy=policy, stdlib=False)


class JournalOnly:
    """Reference (f): the journal alone. A pure ASGI wrapper that appends one minimal record per request
    (correlation id, method, path, status, bytes, duration) to the same chained journal through
    ``handle.emit``; no route, actor, decision, redaction or shape. What (b) would cost if auditing were
    nothing but the append: the ceiling for any middleware that journals each request before it is done."""

    def __init__(self, app: Any, handle: Any) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        cid = os.urandom(16).hex()
        seen = [0, 0]

        async def audited_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
                headers = [*message.get("headers", ()), (b"x-correlation-id", cid.encode())]
                message = {**message, "headers": headers}
            else:
                seen[1] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        finally:
            self.handle.emit(
                {
                    "kind": "http.request",
                    "correlation_id": cid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": seen[0],
                    "bytes": seen[1],
                    "duration_ms": (time.perf_counter() - start) * 1000,
                },
                owned=True,
            )


def build_app(variant: str, workdir: Path) -> Any:
    import logging

    from starlette.applications import Starlette
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def order(request: Any) -> JSONResponse:
        return JSONResponse(PAYLOAD)

    async def big(request: Any) -> StreamingResponse:
        mib = int(request.query_params.get("mib", "512"))
        chunk = b"z" * (1 << 20)

        async def gen() -> Any:
            for _ in range(mib):
                yield chunk

        return StreamingResponse(gen(), media_type="application/octet-stream")

    async def rss(request: Any) -> JSONResponse:
        return JSONResponse(
            {"rss_kib": _rss_kib(), "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
        )

    routes = [Route("/orders/{order_id}", order), Route("/big", big), Route("/rss", rss)]
    if variant.endswith("-100"):  # a larger app: 100 routes tried before the one the load requests
        routes = [Route(f"/section{i}/{{item_id}}", order) for i in range(100)] + routes
        variant = variant[: -len("-100")]
    app: Any = Starlette(routes=routes)
    if variant == "journal":
        return JournalOnly(app, _handle(workdir))
    if variant == "audit":
        from auditlog.integrations.asgi import AuditMiddleware
        from auditlog.policy import loads

        policy = loads(
            'version = 1\n[[rules]]\nid = "big"\nmatch = { route = "/big" }\ncapture_body = true\n'
        )
        app = AuditMiddleware(app, handle=_handle(workdir, policy), body_store=_Sink(), capture_limit=1 << 20)
    elif variant == "logging":
        log = logging.getLogger("bench.access")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(logging.FileHandler(workdir / "access.log"))

        class AccessLog(BaseHTTPMiddleware):
            async def dispatch(self, request: Any, call_next: Any) -> Any:
                start = time.perf_counter()
                response = await call_next(request)
                log.info(
                    "%s %s %s %.3fms",
                    request.method,
                    request.url.path,
                    response.status_code,
                    (time.perf_counter() - start) * 1000,
                )
                return response

        app = AccessLog(app)
    return app


def serve(variant: str, port_file: Path) -> None:
    import uvicorn

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-asgi-{variant}-"))
    app = build_app(variant, workdir)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it (Linux)
    sock.bind(("127.0.0.1", 0))
    port_file.write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none", backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    """Send one request on a keep-alive connection and read its whole response."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)


async def _load(port: int, total: int, connections: int, path: str) -> dict[str, Any]:
    request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), 300)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def _stream(port: int, mib: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /big?mib={mib} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    n = 0
    while chunk := await reader.read(1 << 20):
        n += len(chunk)
    writer.close()
    return n


async def _paced(port: int, rate: float, total: int, connections: int, path: str) -> dict[str, Any]:
    """Open-loop load: request ``i`` is due at ``i / rate`` seconds, on connection ``i % connections``.

    A request's latency runs from when it was due if its connection was still busy then (the wait counts,
    as it would for a real client), else from when it was sent (the client's timer wake-up does not count).
    """
    request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i in range(k, total, connections):
                due = start + i / rate
                now = loop.time()  # the previous request on this connection has just finished
                if now < due:
                    await asyncio.sleep(due - now)
                sent = time.perf_counter()
                begin = sent - (now - due) if now > due else sent  # busy past due: the wait counts
                await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - begin)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(connections))), 300)
    latencies.sort()
    return {
        "rate": rate,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def load_main(args: argparse.Namespace) -> None:
    if args.rate:
        result = asyncio.run(_paced(args.port, args.rate, args.requests, args.connections, "/orders/42"))
    else:
        result = asyncio.run(_load(args.port, args.requests, args.connections, "/orders/42"))
    print(json.dumps(result))


def _start(variant: str) -> tuple[subprocess.Popen[bytes], int]:
    port_file = Path(tempfile.mkstemp(prefix="bench-port-")[1])
    port_file.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, "--port-file", str(port_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = port_file.read_text()
        if text:
            port = int(text)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc, port
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {variant} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_http(requests: int, connections: int) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for _round in range(2):
        for variant in ("bare", "audit", "logging", "journal", "bare-100", "audit-100"):
            proc, port = _start(variant)
            try:
                cmd = [sys.executable, __file__, "--load", "--port", str(port)]
                cmd += ["--requests", str(requests), "--connections", str(connections)]
                warm = [*cmd[:-4], "--requests", "2000", "--connections", str(connections)]
                subprocess.run(warm, check=True, capture_output=True, timeout=300)
                out = subprocess.run(cmd, check=True, capture_output=True, timeout=600)
                result = json.loads(out.stdout)
            finally:
                _stop(proc)
            if variant not in best or result["rps"] > best[variant]["rps"]:
                best[variant] = result
    return best


def run_paced(rate: float, requests: int, connections: int) -> dict[str, dict[str, Any]]:
    """(a) and (b) under the same fixed request rate (open loop), interleaved, best p99 of 2 runs each."""
    best: dict[str, dict[str, Any]] = {}
    for _round in range(2):
        for variant in ("bare", "audit"):
            proc, port = _start(variant)
            try:
                cmd = [sys.executable, __file__, "--load", "--port", str(port)]
                cmd += ["--connections", str(connections)]
                warm = [*cmd, "--requests", "2000"]
                subprocess.run(warm, check=True, capture_output=True, timeout=300)
                cmd += ["--requests", str(requests), "--rate", str(rate)]
                result = json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=600).stdout)
            finally:
                _stop(proc)
            if variant not in best or result["p99_ms"] < best[variant]["p99_ms"]:
                best[variant] = result
    return best


def run_memory(mib: int) -> dict[str, Any]:
    import urllib.request

    proc, port = _start("audit")
    try:

        def rss() -> dict[str, int]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/rss", timeout=10) as r:
                data: dict[str, int] = json.loads(r.read())
                return data

        asyncio.run(_stream(port, 4))
        before = rss()
        t0 = time.perf_counter()
        got = asyncio.run(_stream(port, mib))
        seconds = time.perf_counter() - t0
        after = rss()
    finally:
        _stop(proc)
    return {
        "bytes": got,
        "seconds": seconds,
        "peak_growth_mib": (after["maxrss_kib"] - before["maxrss_kib"]) / 1024,
        "rss_growth_mib": (after["rss_kib"] - before["rss_kib"]) / 1024,
    }


def mcp_server(variant: str, handle: Any) -> Any:
    """An MCP server with one tool, bare, with ``MCPAuditMiddleware``, or with the reference (f)."""
    from mcp.server.mcpserver import MCPServer

    from auditlog.integrations.mcp import MCPAuditMiddleware

    async def journal_only(ctx: Any, call_next: Any) -> Any:
        """Reference (f): one minimal record per request appended to the same journal, nothing else."""
        if ctx.request_id is None:
            return await call_next(ctx)
        start = time.perf_counter()
        try:
            return await call_next(ctx)
        finally:
            handle.emit(
                {
                    "kind": "mcp.request",
                    "correlation_id": os.urandom(16).hex(),
                    "method": ctx.method,
                    "request_id": ctx.request_id,
                    "duration_ms": (time.perf_counter() - start) * 1000,
                },
                owned=True,
            )

    middleware: dict[str, list[Any]] = {
        "bare": [],
        "audit": [MCPAuditMiddleware(handle=handle)],
        "journal": [journal_only],
    }
    s = MCPServer("bench", middleware=middleware[variant], log_level="ERROR")

    @s.tool()
    def lookup(order_id: int, fields: list[str]) -> dict[str, Any]:
        return {"id": order_id, "fields": fields, "status": "shipped"}

    return s


def run_mcp(calls: int) -> dict[str, float]:
    import anyio
    from mcp import Client

    handle = _handle(Path(tempfile.mkdtemp(prefix="bench-mcp-")))
    variants = ("bare", "audit", "journal")

    async def rate(variant: str) -> float:
        async with Client(mcp_server(variant, handle)) as client:
            for i in range(200):
                await client.call_tool("lookup", {"order_id": i, "fields": ["status"]})
            t0 = time.perf_counter()
            for i in range(calls):
                await client.call_tool("lookup", {"order_id": i, "fields": ["status", "total"]})
            return calls / (time.perf_counter() - t0)

    results = dict.fromkeys(variants, 0.0)
    for _round in range(3):
        for variant in variants:
            results[variant] = max(results[variant], anyio.run(rate, variant))
    handle.shutdown()
    return results


# -- --count: instructions and system calls per request, in process, deterministic ----------------------

COUNT_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]
COUNT_VARIANTS: dict[str, str] = {
    "bare": "bare Starlette JSON endpoint",
    "noop": "a pure ASGI wrapper that does nothing (wraps send)",
    "journal": "(f) journal only: one minimal chained record per request",
    "audit": "AuditMiddleware, default policy",
    "bare-100": "bare, 100 routes before the one served",
    "journal-100": "(f) journal only, 100 routes",
    "audit-100": "AuditMiddleware, 100-rule policy, 100 routes",
    "otel": "OpenTelemetry ASGI, BatchSpanProcessor, file exporter",
    "sentry": "Sentry SDK ASGI integration, traces on, no-op transport",
    "mcp-bare": "MCP tool call, bare server (in-memory client session)",
    "mcp-journal": "MCP (f) journal only: one minimal record per call",
    "mcp-audit": "MCP tool call, MCPAuditMiddleware",
}
# Each variant's baseline: what "added" is measured against.
COUNT_BASE = {
    "audit-100": "bare-100",
    "journal-100": "bare-100",
    "mcp-journal": "mcp-bare",
    "mcp-audit": "mcp-bare",
}


class NoOpWrapper:
    """A pure ASGI wrapper that does nothing but wrap ``send`` (the floor of any middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped_send(message: dict[str, Any]) -> None:
            await send(message)

        await self.app(scope, receive, wrapped_send)


def _hundred_rules() -> Any:
    from auditlog.policy import loads

    rules = "".join(
        f'[[rules]]\nid = "section{i}"\nmatch = {{ route = "/section{i}/{{item_id}}" }}\n'
        f'required_scopes = []\nlevel = "{("shape", "metadata")[i % 2]}"\n'
        for i in range(100)
    )
    return loads('version = 1\nid = "hundred"\n' + rules)


def count_app(variant: str, workdir: Path) -> tuple[Any, Any]:
    """The ASGI app of a --count variant, and a flush hook (run before counting starts and stops)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def order(request: Any) -> JSONResponse:
        return JSONResponse(PAYLOAD)

    routes = [Route("/orders/{order_id}", order)]
    base = variant
    if variant.endswith("-100"):
        routes = [Route(f"/section{i}/{{item_id}}", order) for i in range(100)] + routes
        base = variant[: -len("-100")]
    app: Any = Starlette(routes=routes)
    flush: Any = None
    if base == "noop":
        app = NoOpWrapper(app)
    elif base == "journal":
        app = JournalOnly(app, _handle(workdir))
    elif base == "audit":
        from auditlog.integrations.asgi import AuditMiddleware

        policy = _hundred_rules() if variant.endswith("-100") else None
        app = AuditMiddleware(app, handle=_handle(workdir, policy))
    elif base == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = TracerProvider()
        spans = (workdir / "spans.jsonl").open("w")
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=spans)))
        app = OpenTelemetryMiddleware(app, tracer_provider=provider)
        flush = provider.force_flush
    elif base == "sentry":
        import sentry_sdk
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware
        from sentry_sdk.transport import Transport

        class NoOpTransport(Transport):
            def capture_envelope(self, envelope: Any) -> None:
                pass

        sentry_sdk.init(
            dsn="https://public@o0.ingest.sentry.io/0",
            transport=NoOpTransport,
            traces_sample_rate=1.0,
            default_integrations=False,
        )
        app = SentryAsgiMiddleware(app)
        flush = sentry_sdk.flush
    return app, flush


async def _drive(app: Any, k: int) -> None:
    """``k`` GET /orders/42 requests straight into the app: a synthetic scope, receive and send."""
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(k):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": "/orders/42",
            "raw_path": b"/orders/42",
            "query_string": b"",
            "headers": list(COUNT_HEADERS),
            "state": {},
        }
        await app(scope, receive, send)


def count_child(variant: str, warm: int, n: int) -> None:
    """One --count variant in this process: warm up, then count ``n`` requests (or MCP tool calls)."""
    sys.path.insert(0, str(HERE))
    import _instr

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-count-{variant}-"))
    if variant.startswith("mcp-"):
        import anyio
        from mcp import Client

        server = mcp_server(variant[4:], _handle(workdir))

        async def calls() -> float:
            async with Client(server) as client:
                for i in range(warm):
                    await client.call_tool("lookup", {"order_id": i, "fields": ["status"]})
                t0 = time.process_time()
                _instr.start()
                for i in range(n):
                    await client.call_tool("lookup", {"order_id": i, "fields": ["status", "total"]})
                _instr.stop()
                return time.process_time() - t0

        seconds = anyio.run(calls)
    else:
        app, flush = count_app(variant, workdir)

        async def requests() -> float:
            await _drive(app, warm)
            if flush is not None:
                flush()
            t0 = time.process_time()
            _instr.start()
            await _drive(app, n)
            if flush is not None:
                flush()
            _instr.stop()
            return time.process_time() - t0

        seconds = asyncio.run(requests())
    print(json.dumps({"us": seconds / n * 1e6 if n else 0.0}))


def run_count(variants: list[str], warm: int, n: int, timed: int) -> dict[str, dict[str, float]]:
    sys.path.insert(0, str(HERE))
    import _instr

    out: dict[str, dict[str, float]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    for variant in variants:
        cmd = [sys.executable, __file__, "--count-child", variant]
        ir, sha = _instr.instructions(cmd, warm=warm, n=n, tag=variant)
        sc = _instr.syscalls(cmd, warm=warm, n=n)
        res = subprocess.run([*cmd, "--warm", str(warm), "--n", str(timed)], check=True, capture_output=True)
        us = json.loads(res.stdout.splitlines()[-1])["us"]
        out[variant] = {"ir": ir, "sha": sha, "syscalls": sc if sc is not None else float("nan"), "us": us}
        print(
            f"  {variant}: {ir / 1000:.1f}k instructions ({sha / 1000:.1f}k SHA-256), "
            f"{out[variant]['syscalls']:.2f} syscalls, {us:.1f} µs CPU",
            file=sys.stderr,
        )
    return out


def print_count(res: dict[str, dict[str, float]], warm: int, n: int) -> None:
    print(
        f"instructions per request (callgrind, {n} requests after {warm} warm-up, in process; "
        "'w/o SHA' = less OpenSSL's sha256 block functions); system calls per request (strace -f -c, "
        "difference of two runs); CPU µs per request (in process, no valgrind; context only)"
    )
    print()
    print(
        "| variant | instr / req | w/o SHA | added | added w/o SHA | syscalls / req | added | CPU µs / req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v, r in res.items():
        base = res.get(COUNT_BASE.get(v, "mcp-bare" if v.startswith("mcp-") else "bare"))
        if base is None or base is r:
            added = added_ns = added_sc = ""
        else:
            added = f"+{(r['ir'] - base['ir']) / 1000:,.1f}k"
            added_ns = f"+{((r['ir'] - r['sha']) - (base['ir'] - base['sha'])) / 1000:,.1f}k"
            added_sc = f"{r['syscalls'] - base['syscalls']:+.2f}"
        print(
            f"| {COUNT_VARIANTS[v]} | {r['ir'] / 1000:,.1f}k | {(r['ir'] - r['sha']) / 1000:,.1f}k | "
            f"{added} | {added_ns} | {r['syscalls']:.2f} | {added_sc} | {r['us']:.1f} |"
        )

    def added(v: str) -> float:
        """Instructions ``v`` adds over its baseline, without SHA-256 (what the targets are judged on)."""
        base = res[COUNT_BASE.get(v, "mcp-bare" if v.startswith("mcp-") else "bare")]
        r = res[v]
        return (r["ir"] - base["ir"]) - (r["sha"] - base["sha"])

    print()
    checks = []
    if {"audit", "journal"} <= res.keys():
        checks.append(
            ("AuditMiddleware added / journal-only added, w/o SHA", added("audit") / added("journal"), 1.5)
        )
    if {"audit-100", "journal-100"} <= res.keys():
        checks.append(
            (
                "100 routes: AuditMiddleware added / journal-only added, w/o SHA",
                added("audit-100") / added("journal-100"),
                1.5,
            )
        )
    if {"audit", "otel"} <= res.keys():
        checks.append(
            ("AuditMiddleware added / OpenTelemetry added, w/o SHA", added("audit") / added("otel"), 0.1)
        )
    if {"audit", "sentry"} <= res.keys():
        checks.append(
            ("AuditMiddleware added / Sentry added, w/o SHA", added("audit") / added("sentry"), 0.1)
        )
    if {"mcp-audit", "mcp-journal"} <= res.keys():
        checks.append(
            (
                "MCP adapter added / MCP journal-only added, w/o SHA",
                added("mcp-audit") / added("mcp-journal"),
                1.5,
            )
        )
    for name, value, target in checks:
        verdict = "met" if value <= target else "NOT met"
        print(f"- {name}: {value:.2f} (target <= {target}: **{verdict}**)")
    if "audit" in res and "bare" in res:
        sc = res["audit"]["syscalls"] - res["bare"]["syscalls"]
        print(
            f"- AuditMiddleware added syscalls per request: {sc:.2f} (target <= 1: **"
            f"{'met' if sc <= 1.0 else 'NOT met'}**)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve")
    ap.add_argument("--port-file", type=Path)
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--port", type=int)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--stream-mib", type=int, default=512)
    ap.add_argument("--mcp-calls", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s of a paced (open-loop) load")
    ap.add_argument("--paced-rate", type=float, default=2000.0)
    ap.add_argument("--paced-requests", type=int, default=12000)
    ap.add_argument("--paced-connections", type=int, default=8)
    ap.add_argument("--count", action="store_true", help="instructions and syscalls per request (callgrind)")
    ap.add_argument("--count-child", help=argparse.SUPPRESS)
    ap.add_argument("--variants", help="--count: comma-separated variants (default: all)")
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--n", type=int, default=1000, help="--count: requests counted per variant")
    ap.add_argument("--timed", type=int, default=5000, help="--count: requests timed for the CPU column")
    args = ap.parse_args()
    if args.count_child:
        count_child(args.count_child, args.warm, args.n)
        return
    if args.count:
        variants = args.variants.split(",") if args.variants else list(COUNT_VARIANTS)
        print_count(run_count(variants, args.warm, args.n, args.timed), args.warm, args.n)
        return
    if args.serve:
        serve(args.serve, args.port_file)
        return
    if args.load:
        load_main(args)
        return
    http = run_http(args.requests, args.connections)
    paced = run_paced(args.paced_rate, args.paced_requests, args.paced_connections)
    mem = run_memory(args.stream_mib)
    mcp = run_mcp(args.mcp_calls)
    a, b, c, f = http["bare"], http["audit"], http["logging"], http["journal"]
    rows = [
        ("(a) bare uvicorn", f"{a['rps']:.0f} req/s", "1.00", f"{a['p50_ms']:.2f}", f"{a['p99_ms']:.2f}"),
        (
            "(b) AuditMiddleware",
            f"{b['rps']:.0f} req/s",
            f"{b['rps'] / a['rps']:.2f}",
            f"{b['p50_ms']:.2f}",
            f"{b['p99_ms']:.2f}",
        ),
        (
            "(c) BaseHTTPMiddleware logging",
            f"{c['rps']:.0f} req/s",
            f"{c['rps'] / a['rps']:.2f}",
            f"{c['p50_ms']:.2f}",
            f"{c['p99_ms']:.2f}",
        ),
        (
            "(f) reference: the journal alone, one minimal record per request",
            f"{f['rps']:.0f} req/s",
            f"{f['rps'] / a['rps']:.2f}",
            f"{f['p50_ms']:.2f}",
            f"{f['p99_ms']:.2f}",
        ),
        (
            "(a') bare uvicorn, 100 routes before the one served",
            f"{http['bare-100']['rps']:.0f} req/s",
            "1.00",
            f"{http['bare-100']['p50_ms']:.2f}",
            f"{http['bare-100']['p99_ms']:.2f}",
        ),
        (
            "(b') AuditMiddleware, 100 routes before the one served",
            f"{http['audit-100']['rps']:.0f} req/s",
            f"{http['audit-100']['rps'] / http['bare-100']['rps']:.2f}",
            f"{http['audit-100']['p50_ms']:.2f}",
            f"{http['audit-100']['p99_ms']:.2f}",
        ),
        ("MCP tool calls, bare", f"{mcp['bare']:.0f} calls/s", "1.00", "", ""),
        (
            "MCP tool calls, MCPAuditMiddleware",
            f"{mcp['audit']:.0f} calls/s",
            f"{mcp['audit'] / mcp['bare']:.2f}",
            "",
            "",
        ),
        (
            "MCP tool calls, reference: the journal alone",
            f"{mcp['journal']:.0f} calls/s",
            f"{mcp['journal'] / mcp['bare']:.2f}",
            "",
            "",
        ),
    ]
    print(
        f"requests per variant: {args.requests}, connections: {args.connections}, best of 2 interleaved runs"
    )
    print("| variant | throughput | ratio to bare | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"p99 added by (b), closed loop at saturation: {b['p99_ms'] - a['p99_ms']:.3f} ms (target < 1 ms)")
    pa, pb = paced["bare"], paced["audit"]
    print(
        f"paced load ({args.paced_rate:.0f} req/s, {args.paced_requests} requests, "
        f"{args.paced_connections} connections, open loop): "
        f"(a) p50 {pa['p50_ms']:.3f} / p99 {pa['p99_ms']:.3f} ms, "
        f"(b) p50 {pb['p50_ms']:.3f} / p99 {pb['p99_ms']:.3f} ms: "
        f"p99 added {pb['p99_ms'] - pa['p99_ms']:.3f} ms (target < 1 ms)"
    )
    print(f"(b) vs (c) throughput: {b['rps'] / c['rps']:.2f}x (target > 1)")
    print(
        f"the journal alone (f): {f['rps'] / a['rps']:.2f} of bare over HTTP, "
        f"{mcp['journal'] / mcp['bare']:.2f} over MCP; (b)/(f) = {b['rps'] / f['rps']:.2f}, "
        f"MCP {mcp['audit'] / mcp['journal']:.2f} (what redaction, decisions and shapes cost beyond it)"
    )
    print(
        f"{mem['bytes'] / (1 << 20):.0f} MiB streamed through (b) with capture (cap 1 MiB) "
        f"in {mem['seconds']:.1f} s: peak RSS growth {mem['peak_growth_mib']:.1f} MiB, "
        f"RSS growth {mem['rss_growth_mib']:.1f} MiB (target < 32)"
    )


if __name__ == "__main__":
    main()
