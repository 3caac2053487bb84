"""A uvicorn server for the body reliability tests: AuditMiddleware capturing 4 KiB bodies to S3.

Run as ``python -m tests.integration.bodies_server CONFIG_JSON`` with ``AUDITLOG_KEY`` and AWS credentials
in the environment. ``/capture`` captures its body (the policy's ``capture_body`` rule), ``/plain`` does
not. The store is ``open_body_store("s3://...")`` handed straight to the middleware: the outbox behind it
keeps S3 off the request path.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import uvicorn

from auditlog import configure
from auditlog.bodies import open_body_store
from auditlog.integrations.asgi import AuditMiddleware
from auditlog.policy import loads
from store.bodies import OutboxConfig, from_url
from store.bodies.s3 import client_config
from store.keys import KeyRing, MasterKey

POLICY = """
version = 1
id = "reliability"

[[rules]]
id = "capture"
match = { route = "/capture" }
capture_body = true
body_retention = "1d"
"""
BODY = os.urandom(2048).hex().encode()  # 4 KiB


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    cfg = json.loads(sys.argv[1])
    ring = KeyRing(MasterKey.from_b64(os.environ["AUDITLOG_KEY"]))
    handle = configure(journal_dir=cfg["trail"], policy=loads(POLICY), key=ring, stdlib=False)
    t = float(cfg.get("timeout", 1.0))
    timeouts = client_config(connect_timeout=t / 2, read_timeout=t, max_attempts=2)
    if cfg.get("bare"):  # a bare remote store: the middleware must put an outbox in front by itself
        store = from_url(
            cfg["store"], keys=ring, endpoint_url=cfg["endpoint"], region_name="us-east-1",
            reader_public_key=cfg["public"], client_config=timeouts,
        )  # fmt: skip
        serve(AuditMiddleware(app, handle=handle, body_store=store), int(cfg["port"]))
        return
    bodies = open_body_store(
        cfg["store"],
        handle=handle,
        endpoint_url=cfg["endpoint"],
        region_name="us-east-1",
        reader_public_key=cfg["public"],
        outbox=cfg["outbox"],
        outbox_config=OutboxConfig(
            pack_age=0.2, ship_interval=0.1, backoff_initial=0.2, backoff_max=1.0, close_timeout=1.0
        ),
        client_config=timeouts,
    )
    serve(AuditMiddleware(app, handle=handle, body_store=bodies), int(cfg["port"]))


def serve(app: Any, port: int) -> None:
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
