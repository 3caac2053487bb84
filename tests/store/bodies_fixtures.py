"""Fixtures and helpers shared by the body-store tests (imported explicitly, not a conftest).

The S3 backend runs against moto's server over HTTP on 127.0.0.1 (one server per test module). moto keeps
its state per process, so every store gets its own bucket.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from store.bodies import EncryptedBodyStore, LocalBodyStore, MemoryBodyStore
from store.bodies._backend import blob_name
from store.bodies._crypto import Envelope, pack, unpack
from store.bodies.memory import MemoryBackend
from store.keys import KeyRing, MasterKey
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[2]
CANARIES = corpus()
NEEDLES: list[str] = list(CANARIES.needles)
CANARY_VALUES: dict[str, str] = CANARIES.values
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
REGION = "us-east-1"
ONCALL_READ = {"bodies:read"}


class AuditRecorder:
    """An audit sink that keeps events; ``fail = True`` makes it raise like a journal that is down."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("journal down")
        self.events.append(json.loads(json.dumps(event)))

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def last(self, kind: str) -> dict[str, Any]:
        return [e for e in self.events if e["kind"] == kind][-1]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_ring() -> KeyRing:
    return KeyRing(MasterKey.generate())


def free_port() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoEndpoint:
    url: str
    port: int
    server: Any

    def s3(self, **kw: Any) -> Any:
        return s3_client(self.url, **kw)

    def kms(self) -> Any:
        import boto3

        return boto3.client("kms", endpoint_url=self.url, region_name=REGION, config=fast_config())

    def new_bucket(self) -> str:
        name = f"bodies-{uuid.uuid4().hex[:12]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def new_kms_key(self) -> str:
        return str(self.kms().create_key(Description="auditlog bodies")["KeyMetadata"]["KeyId"])


def fast_config() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=5)


def s3_client(url: str, **kw: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name=REGION, config=fast_config(), **kw)


def start_moto(port: int = 0) -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[MotoEndpoint]:
    """moto's S3/KMS/IAM server on 127.0.0.1 (HTTP), with dummy credentials in the environment."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_ENV.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        server = start_moto()
        host, port = server.get_host_and_port()
        try:
            yield MotoEndpoint(url=f"http://{host}:{port}", port=port, server=server)
        finally:
            server.stop()


@dataclass
class StoreFactory:
    """Opens stores of one kind over one location, so a test can reopen it with other keys or clock."""

    kind: str
    keys: KeyRing
    audit: AuditRecorder
    clock: FakeClock
    tmp: Path
    moto: MotoEndpoint | None = None
    bucket: str = ""
    kms_key_id: str | None = None
    _memory: MemoryBackend = field(default_factory=MemoryBackend)

    def open(self, **kw: Any) -> EncryptedBodyStore:
        opts: dict[str, Any] = {"keys": self.keys, "audit": self.audit, "clock": self.clock}
        opts.update(kw)
        if self.kind == "memory":
            return EncryptedBodyStore(self._memory, **opts)
        if self.kind == "local":
            return LocalBodyStore(self.tmp / "store", **opts)
        from store.bodies.s3 import S3BodyStore

        assert self.moto is not None
        return S3BodyStore(
            self.bucket,
            prefix="bodies",
            endpoint_url=self.moto.url,
            region_name=REGION,
            client_config=fast_config(),
            kms_key_id=self.kms_key_id,
            **opts,
        )

    # -- raw access, for tampering and leak scans -------------------------------------------------

    def raw_header(self, store: EncryptedBodyStore, cid: str) -> bytes:
        return store.backend.read_header(cid)

    def set_raw_header(self, store: EncryptedBodyStore, cid: str, data: bytes) -> None:
        env = Envelope.from_parts(store.backend.read_header(cid), b"", correlation_id=cid)
        store.backend.replace_header(cid, data, blob=blob_name(cid, env.nonce), held=False)

    def blob_of(self, store: EncryptedBodyStore, cid: str) -> str:
        env = Envelope.from_parts(store.backend.read_header(cid), b"", correlation_id=cid)
        return blob_name(cid, env.nonce)

    def set_raw_blob(self, store: EncryptedBodyStore, blob: str, data: bytes) -> None:
        if self.kind == "memory":
            self._memory.raw()[1][blob] = data
        elif self.kind == "local":
            cid = blob.rsplit(".", 1)[0]
            path = Path(store.backend.path(cid))  # type: ignore[attr-defined]
            header, _ = unpack(path.read_bytes(), correlation_id=cid)
            path.write_bytes(pack(header, data))
        else:
            store.backend.client.put_object(  # type: ignore[attr-defined]
                Bucket=self.bucket, Key=f"bodies/blobs/{blob}", Body=data
            )

    def dump(self, dest: Path) -> Path:
        """Copy every stored byte (headers, blobs) into ``dest`` for a leak scan."""
        dest.mkdir(parents=True, exist_ok=True)
        if self.kind == "memory":
            headers, blobs = self._memory.raw()
            for i, data in enumerate([*headers.values(), *blobs.values()]):
                (dest / f"{i}.bin").write_bytes(data)
        elif self.kind == "local":
            return self.tmp / "store"
        else:
            assert self.moto is not None
            s3 = self.moto.s3()
            for i, obj in enumerate(s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])):
                (dest / f"{i}.bin").write_bytes(
                    s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                )
        return dest


BACKENDS = ["memory", "local", "s3", "s3-kms"]


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    kind = str(request.param)
    f = StoreFactory(
        kind=kind.split("-")[0], keys=new_ring(), audit=AuditRecorder(), clock=FakeClock(), tmp=tmp_path
    )
    if f.kind == "s3":
        f.moto = request.getfixturevalue("moto_endpoint")
        f.bucket = f.moto.new_bucket()
        if kind == "s3-kms":
            f.kms_key_id = f.moto.new_kms_key()
    return f


def memory_store(**kw: Any) -> MemoryBodyStore:
    kw.setdefault("keys", new_ring())
    return MemoryBodyStore(**kw)


def find_leaks(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's leak scanner (``python -m auditlog.canaries``) over ``paths``: exit 0, no leak."""
    extra = [arg for c in (os.environ.get("AUDITLOG_CANARIES"),) if c for arg in ("--canaries", c)]
    return subprocess.run(
        [sys.executable, "-m", "auditlog.canaries", *extra, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def canary_bodies() -> dict[str, bytes]:
    """Every canary as a body, plus one JSON body holding them all."""
    out = {f"canary-{i}": v.encode() for i, v in enumerate(NEEDLES)}
    out["canary-all"] = json.dumps({"values": CANARY_VALUES, "needles": NEEDLES}).encode()
    return out
