"""S3BodyStore against moto's server over HTTP: bucket setup, SSE, KMS, IAM refusal, outages, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import tests.store.bodies_fixtures as bf
from store.bodies import (
    AccessDenied,
    BodyMeta,
    BodyWriter,
    EncryptedBodyStore,
    Principal,
    WriterConfig,
    from_url,
)
from store.bodies.s3 import S3BodyStore
from store.keys import KeyRing
from tests.store.bodies_fixtures import (
    AWS_ENV,
    NEEDLES,
    REGION,
    AuditRecorder,
    MotoEndpoint,
    fast_config,
    find_leaks,
    free_port,
    new_ring,
    s3_client,
    start_moto,
)

moto_endpoint = bf.moto_endpoint
ROOT = Path(__file__).resolve().parents[2]
ONCALL = Principal(name="oncall", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
META = BodyMeta(tenant="acme", subject="user-1")


def s3_store(url: str, bucket: str, keys: KeyRing, **kw: Any) -> S3BodyStore:
    kw.setdefault("audit", AuditRecorder())
    return S3BodyStore(
        bucket,
        prefix="bodies",
        keys=keys,
        endpoint_url=url,
        region_name=REGION,
        client_config=fast_config(),
        **kw,
    )


def wait_until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


class TestBucketSetup:
    def test_ensure_bucket_creates_encrypts_and_sets_lifecycle(self, moto_endpoint: MotoEndpoint) -> None:
        """A missing bucket gets default encryption and a tag-filtered expiry rule; twice is fine."""
        bucket = f"fresh-{os.getpid()}-{time.monotonic_ns()}"
        store = s3_store(moto_endpoint.url, bucket, new_ring())
        store.ensure_bucket(lifecycle_days=9)
        store.ensure_bucket(lifecycle_days=9)
        s3 = moto_endpoint.s3()
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        rule = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
        assert "AES256" == enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert (9, "bodies/", [{"Key": "auditlog-expiry", "Value": "auto"}]) == (
            rule["Expiration"]["Days"],
            rule["Filter"]["And"]["Prefix"],
            rule["Filter"]["And"]["Tags"],
        )

    def test_ensure_bucket_keeps_the_buckets_other_lifecycle_rules(self, moto_endpoint: MotoEndpoint) -> None:
        """A shared bucket's own lifecycle rules survive ensure_bucket; ours are there once each."""
        bucket = f"shared-{os.getpid()}-{time.monotonic_ns()}"
        s3 = moto_endpoint.s3()
        s3.create_bucket(Bucket=bucket)
        foreign = {"ID": "logs-30d", "Status": "Enabled", "Filter": {"Prefix": "logs/"}}
        foreign["Expiration"] = {"Days": 30}
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
        store = s3_store(moto_endpoint.url, bucket, new_ring())
        store.ensure_bucket(lifecycle_days=9)
        store.ensure_bucket(lifecycle_days=10)
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert ["auditlog-bodies-bodies", "auditlog-bodies-mpu-bodies", "logs-30d"] == sorted(
            r["ID"] for r in rules
        )
        by_id = {r["ID"]: r for r in rules}
        assert (30, 10) == (
            by_id["logs-30d"]["Expiration"]["Days"],
            by_id["auditlog-bodies-bodies"]["Expiration"]["Days"],
        )

    def test_lifecycle_rules_need_distinct_ids(self) -> None:
        """merge_rules refuses rules without an ID or sharing one (it could not tell ours apart)."""
        from store._s3_lifecycle import merge_rules

        for rules in ([{"Status": "Enabled"}], [{"ID": "a"}, {"ID": "a"}]):
            with pytest.raises(ValueError, match="distinct"):
                merge_rules(None, "b", rules)

    def test_objects_are_server_side_encrypted_and_held_ones_exempt(
        self, moto_endpoint: MotoEndpoint
    ) -> None:
        """Every object asks for SSE; a legal hold re-tags header and blob out of the lifecycle rule."""
        bucket = moto_endpoint.new_bucket()
        store = s3_store(moto_endpoint.url, bucket, new_ring())
        store.put("req-1", b"body", meta=META)
        s3 = moto_endpoint.s3()
        head = s3.head_object(Bucket=bucket, Key="bodies/keys/req-1.json")
        assert "AES256" == head["ServerSideEncryption"]
        store.hold("req-1", reason="CASE-1")
        tags = {
            o["Key"]: s3.get_object_tagging(Bucket=bucket, Key=o["Key"])["TagSet"]
            for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
        }
        assert 2 == len(tags)
        assert all([{"Key": "auditlog-hold", "Value": "1"}] == t for t in tags.values())

    def test_from_url(self, moto_endpoint: MotoEndpoint) -> None:
        """s3://bucket/prefix opens an S3BodyStore with that prefix."""
        bucket = moto_endpoint.new_bucket()
        store = from_url(
            f"s3://{bucket}/team/bodies", keys=new_ring(), endpoint_url=moto_endpoint.url, region_name=REGION
        )
        store.put("req-1", b"x", meta=META)
        keys = [o["Key"] for o in moto_endpoint.s3().list_objects_v2(Bucket=bucket)["Contents"]]
        assert ["team/bodies/blobs/", "team/bodies/keys/req-1.json"] == sorted(
            k if k.endswith(".json") else k.rsplit("/", 1)[0] + "/" for k in keys
        )


class TestKms:
    def test_data_keys_are_wrapped_by_kms_with_the_id_as_context(self, moto_endpoint: MotoEndpoint) -> None:
        """With kms_key_id the wrapped key is a KMS ciphertext bound to the correlation id."""
        import base64

        bucket, kid = moto_endpoint.new_bucket(), moto_endpoint.new_kms_key()
        store = s3_store(moto_endpoint.url, bucket, new_ring(), kms_key_id=kid, sse="aws:kms")
        store.put("req-1", b"body", meta=META)
        info = store.head("req-1")
        assert ("aws-kms", True) == (info.key_scheme, info.key_id.endswith(kid))
        header = json.loads(store.backend.read_header("req-1"))
        blob = base64.b64decode(header["key"]["blob"])
        kms = moto_endpoint.kms()
        ok = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"auditlog": "body-key/v1", "cid": "req-1"})
        assert 32 == len(ok["Plaintext"])
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob, EncryptionContext={"auditlog": "body-key/v1", "cid": "req-2"})

    def test_kms_bodies_read_without_a_configured_key_id(self, moto_endpoint: MotoEndpoint) -> None:
        """A reader needs no kms_key_id: the stored key ARN names the key."""
        bucket, kid, ring = moto_endpoint.new_bucket(), moto_endpoint.new_kms_key(), new_ring()
        s3_store(moto_endpoint.url, bucket, ring, kms_key_id=kid).put("req-1", b"body", meta=META)
        assert b"body" == s3_store(moto_endpoint.url, bucket, ring).get(
            "req-1", reader=ONCALL, purpose="INC-1"
        )


@contextmanager
def iam_enforced(url: str) -> Iterator[None]:
    """Switch moto's IAM enforcement on for the server (POST /moto-api/reset-auth), and off again."""

    def reset(value: bytes) -> None:
        req = urllib.request.Request(
            f"{url}/moto-api/reset-auth", data=value, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert 200 == resp.status

    reset(b"0")
    try:
        yield
    finally:
        reset(b"inf")


class TestIamEnforcement:
    def test_denied_credentials_are_a_clear_error_and_nothing_is_lost(
        self, moto_endpoint: MotoEndpoint, tmp_path: Path
    ) -> None:
        """IAM enforced: a user without s3:PutObject gets AccessDenied; the writer spools, delivers later."""
        import boto3

        bucket, ring = moto_endpoint.new_bucket(), new_ring()
        iam = boto3.client("iam", endpoint_url=moto_endpoint.url, region_name=REGION)
        user = f"no-s3-{time.monotonic_ns()}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        denied = s3_client(
            moto_endpoint.url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            aws_session_token=None,
        )
        store = S3BodyStore(bucket, prefix="bodies", client=denied, keys=ring, audit=AuditRecorder())
        writer = BodyWriter(store, config=WriterConfig(spool_dir=tmp_path / "spool", backoff_initial=0.05))
        try:
            with iam_enforced(moto_endpoint.url):
                with pytest.raises(AccessDenied, match=r"credentials refused \(AccessDenied\)"):
                    store.put("direct", b"x", meta=META)
                for i in range(5):
                    writer.put(f"req-{i}", b"body %d" % i, meta=META)
                assert writer.flush(10)
                assert writer.stats.errors["AccessDenied"] >= 1
                assert 5 == writer.stats.spooled + writer.stats.stored and 0 == writer.stats.stored
            # enforcement off: the same credentials now work, and the spool drains
            assert wait_until(lambda: writer.pending_spool() == 0, 15)
        finally:
            writer.close()
        reader = s3_store(moto_endpoint.url, bucket, ring)
        assert [b"body %d" % i for i in range(5)] == [
            reader.get(f"req-{i}", reader=ONCALL, purpose="INC-1") for i in range(5)
        ]


class TestOutage:
    def test_server_stopped_mid_run_then_restarted_loses_nothing(
        self, moto_endpoint: MotoEndpoint, tmp_path: Path
    ) -> None:
        """S3 (and KMS) go away while bodies keep arriving; after restart every body is present."""
        server = start_moto()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        try:
            s3_client(url).create_bucket(Bucket=(bucket := f"outage-{port}"))
            kid = MotoEndpoint(url=url, port=port, server=server).new_kms_key()
            ring = new_ring()
            store = s3_store(url, bucket, ring, kms_key_id=kid)
            cfg = WriterConfig(spool_dir=tmp_path / "spool", backoff_initial=0.05, backoff_max=0.2)
            with BodyWriter(store, config=cfg) as writer:
                for i in range(60):
                    if i == 20:
                        assert writer.flush(10)
                        server.stop()
                    writer.put(f"req-{i}", b"body %d" % i, meta=META)
                assert writer.flush(20)
                assert (20, 40) == (writer.stats.stored, writer.stats.spooled)
                assert 0 == find_leaks(tmp_path / "spool").returncode
                server = start_moto(port)
                assert wait_until(lambda: writer.pending_spool() == 0, 20)
                assert 40 == writer.stats.replayed
            bodies = [store.get(f"req-{i}", reader=ONCALL, purpose="INC-1") for i in range(60)]
            assert [b"body %d" % i for i in range(60)] == bodies
            assert {"aws-kms"} == {store.head(f"req-{i}").key_scheme for i in range(60)}
        finally:
            server.stop()


CHILD = """
import os, sys, time
from botocore.config import Config
from store.bodies import BodyMeta, BodyWriter, WriterConfig
from store.bodies.s3 import S3BodyStore
from store.keys import KeyRing, MasterKey

ring = KeyRing(MasterKey.from_b64(os.environ["AUDITLOG_KEY"]))
config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=2)
store = S3BodyStore(os.environ["BUCKET"], prefix="bodies", keys=ring, endpoint_url=os.environ["ENDPOINT"],
                    region_name="us-east-1", client_config=config)
cfg = WriterConfig(spool_dir=os.environ["SPOOL"], backoff_initial=60, backoff_max=60)
writer = BodyWriter(store, config=cfg)
needle = os.environ["NEEDLE"]
for batch in range(500):
    for i in range(10):
        writer.put(f"b{batch}-{i}", f"{needle} {batch} {i}".encode() * 40, meta=BodyMeta(tenant="acme"))
    if not writer.flush(10):
        sys.exit(3)
    print(f"FLUSHED {batch}", flush=True)
time.sleep(60)
"""


class TestSigkill:
    def test_writer_killed_while_spooling_loses_nothing_after_restart(
        self, moto_endpoint: MotoEndpoint, tmp_path: Path
    ) -> None:
        """A writer spooling during an outage is SIGKILLed; a new writer delivers every flushed body."""
        ring, bucket, spool = new_ring(), moto_endpoint.new_bucket(), tmp_path / "spool"
        env = {
            **os.environ,
            **AWS_ENV,
            "AUDITLOG_KEY": ring.active.to_b64(),
            "BUCKET": bucket,
            "ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens: every put fails
            "SPOOL": str(spool),
            "NEEDLE": NEEDLES[0],
            "PYTHONPATH": str(ROOT),
        }
        flushed: list[int] = []
        with subprocess.Popen(
            [sys.executable, "-c", CHILD], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        ) as child:
            try:
                assert child.stdout is not None
                deadline = time.monotonic() + 30
                while len(flushed) < 4 and time.monotonic() < deadline:
                    line = child.stdout.readline()
                    if not line:
                        break
                    flushed.append(int(line.split()[1]))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(10)
        assert [0, 1, 2, 3] == flushed
        assert 0 == find_leaks(spool).returncode
        store: EncryptedBodyStore = s3_store(moto_endpoint.url, bucket, ring)
        with BodyWriter(store, config=WriterConfig(spool_dir=spool)) as writer:
            writer.replay()
            assert wait_until(lambda: writer.pending_spool() == 0, 20)
            assert [] == list(spool.glob(".tmp-*"))
        for batch in flushed:
            for i in range(10):
                body = store.get(f"b{batch}-{i}", reader=ONCALL, purpose="INC-1")
                assert f"{NEEDLES[0]} {batch} {i}".encode() * 40 == body
        assert len(list(store.iter_info())) >= 40
