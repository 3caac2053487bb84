"""``S3BodyStore``: envelopes as S3 objects (boto3, imported lazily), data keys optionally wrapped by KMS.

Layout under ``s3://BUCKET/PREFIX``::

    PREFIX/keys/<cid>.json     the header: metadata and the wrapped data key
    PREFIX/blobs/<cid>.<tag>   the ciphertext

Headers are created with ``If-None-Match: *`` so two writers never share an id. Objects carry the tag
``auditlog-expiry=auto``; :meth:`S3BodyStore.ensure_bucket` installs a lifecycle rule that expires
tagged objects after ``lifecycle_days`` (defence in depth: the store enforces retention itself). A legal
hold re-tags the header and blob ``auditlog-hold=1`` so the lifecycle rule skips them.

Server-side encryption (``sse="AES256"`` or ``"aws:kms"``) is requested on every put and set as the
bucket default; it is a second layer under the envelope, which never leaves the process unencrypted.
With ``kms_key_id`` the per-body data keys are wrapped by KMS (encryption context: the correlation id)
instead of the local master key; while KMS is unreachable the background writer seals with the local
key and the store re-wraps for KMS on delivery. With ``kms_session_key_id`` (what the local-first
:class:`~store.bodies.BodyOutbox` wants: no KMS call per body) data keys are wrapped under session keys
from KMS ``GenerateDataKey`` and every read calls KMS ``Decrypt`` (see :mod:`store.bodies.readerkey`).

Timeouts. Every client this module builds has a connect timeout, a read timeout and bounded retries
with exponential backoff (botocore ``standard`` mode): :data:`DEFAULT_TIMEOUTS`, ~2 s to detect a dead
endpoint and at most ``(connect + read) * attempts`` (~24 s) for one that accepts and never answers.
Pass ``client_config`` (a ``botocore.config.Config``) to change them.

Errors are translated at this boundary: connection failures and 5xx -> :class:`BodyStoreUnavailable`,
refused credentials -> :class:`AccessDenied`, missing keys -> :class:`BodyNotFound`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from store._s3_lifecycle import merge_rules
from store.bodies._crypto import KeyWrapper, WrappedKey
from store.bodies._model import DEFAULT_MAX_BODY_BYTES
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import (
    AccessDenied,
    BodyExists,
    BodyIntegrityError,
    BodyNotFound,
    BodyStoreError,
    BodyStoreUnavailable,
)
from store.bodies.readerkey import _KMS_CONTEXT, KMS_SESSION_SCHEME, Session
from store.keys import KeyRing

__all__ = ["KMS_SCHEME", "KmsKeyWrapper", "S3Backend", "S3BodyStore"]

KMS_SCHEME = "aws-kms"
EXPIRY_TAG = "auditlog-expiry=auto"
HOLD_TAG = "auditlog-hold=1"
_HINT = "install auditlog-pipeline[s3] to use S3BodyStore"
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "DisabledException",
    "KMSInvalidStateException",
    "403",
}
_MISSING = {"NoSuchKey", "404", "NotFound"}
_EXISTS = {"PreconditionFailed", "ConditionalRequestConflict", "412"}
_BAD_KEY = {"InvalidCiphertextException", "IncorrectKeyException"}

SSE = Literal["AES256", "aws:kms"]


def _botocore() -> Any:
    try:
        import botocore.exceptions
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_HINT) from exc
    return botocore.exceptions


DEFAULT_TIMEOUTS: dict[str, float] = {"connect_timeout": 2.0, "read_timeout": 6.0, "max_attempts": 3}


def client_config(
    *, connect_timeout: float = 2.0, read_timeout: float = 6.0, max_attempts: int = 3, pool: int = 16
) -> Any:
    """A ``botocore.config.Config`` with connect and read timeouts and bounded retries with backoff."""
    try:
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_HINT) from exc
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=pool,
        tcp_keepalive=True,
    )


def make_client(
    service: str, *, endpoint_url: str | None, region_name: str | None, config: Any | None = None
) -> Any:
    """A boto3 client with timeouts and bounded retries (the outbox and writer add their own backoff)."""
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(_HINT) from exc
    cfg = config or client_config()
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region_name, config=cfg)


def translate(exc: Exception, what: str) -> BodyStoreError:
    """Map a botocore error to the body-store hierarchy. The message holds the AWS error code only."""
    errors = _botocore()
    if isinstance(exc, errors.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING:
            return BodyNotFound(f"{what}: not found")
        if code in _EXISTS:
            return BodyExists(f"{what}: already exists")
        if code in _BAD_KEY:
            return BodyIntegrityError(f"{what}: KMS refuses the wrapped key ({code})", part="wrapped_key")
        if code in _DENIED or status == 403:
            return AccessDenied(f"{what}: credentials refused ({code})")
        if code == "NoSuchBucket":
            return BodyStoreUnavailable(f"{what}: the bucket does not exist (run ensure_bucket())")
        return BodyStoreUnavailable(f"{what}: {code or 'error'} (HTTP {status})")
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return AccessDenied(f"{what}: no AWS credentials configured")
    if isinstance(exc, errors.BotoCoreError):
        return BodyStoreUnavailable(f"{what}: {type(exc).__name__}")
    raise exc


class KmsKeyWrapper:
    """Wraps data keys with AWS KMS ``Encrypt``/``Decrypt``; the correlation id is the encryption context,
    so a wrapped key moved to another body fails to unwrap.

    Args:
        client: a boto3 KMS client.
        key_id: the KMS key new data keys are wrapped under; None makes an unwrap-only wrapper (reading
            KMS-wrapped bodies needs no key id: the stored key ARN names it).
        factory: builds the client on first use, when ``client`` is None.
    """

    __slots__ = ("_client", "_errors", "_factory", "key_id")

    scheme = KMS_SCHEME

    def __init__(
        self,
        client: Any | None = None,
        *,
        key_id: str | None = None,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        if client is None and factory is None:
            raise ValueError("KmsKeyWrapper needs a client or a factory")
        self._client = client
        self._factory = factory
        self._errors = _botocore()
        self.key_id = key_id

    def _kms(self) -> Any:
        if self._client is None and self._factory is not None:
            self._client = self._factory()
        return self._client

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        if self.key_id is None:
            raise ValueError("this KMS wrapper has no key id: it can only unwrap")
        try:
            resp = self._kms().encrypt(KeyId=self.key_id, Plaintext=data_key, EncryptionContext=dict(context))
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, "KMS encrypt") from exc
        key_id = str(resp.get("KeyId", self.key_id))
        return WrappedKey(scheme=self.scheme, key_id=key_id, blob=resp["CiphertextBlob"])

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        try:
            resp = self._kms().decrypt(
                CiphertextBlob=wrapped.blob, EncryptionContext=dict(context), KeyId=wrapped.key_id
            )
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, "KMS decrypt") from exc
        plaintext: bytes = resp["Plaintext"]
        return plaintext


class KmsSessions:
    """Session keys from AWS KMS ``GenerateDataKey``; reading calls KMS ``Decrypt`` for every body.

    Args:
        client: a boto3 KMS client.
        key_id: the KMS key sessions are generated under (None: read only).
    """

    __slots__ = ("_client", "_errors", "_factory", "key_id")

    scheme = KMS_SESSION_SCHEME
    local = False

    def __init__(
        self,
        client: Any | None = None,
        *,
        key_id: str | None = None,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        if client is None and factory is None:
            raise ValueError("KmsSessions needs a client or a factory")
        self._client = client
        self._factory = factory
        self._errors = _botocore()
        self.key_id = key_id

    def _kms(self) -> Any:
        if self._client is None and self._factory is not None:
            self._client = self._factory()
        return self._client

    def new_session(self) -> Session:
        if self.key_id is None:
            raise ValueError("this KMS session source has no key id: it can only read")
        try:
            resp = self._kms().generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=_KMS_CONTEXT
            )
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, "KMS generate data key") from exc
        return Session(
            secret=bytes(resp["Plaintext"]),
            descriptor=resp["CiphertextBlob"],
            key_id=str(resp.get("KeyId", self.key_id)),
            born=time.monotonic(),
        )

    def open_session(self, descriptor: bytes, key_id: str) -> bytes:
        try:
            resp = self._kms().decrypt(
                CiphertextBlob=descriptor, EncryptionContext=_KMS_CONTEXT, KeyId=key_id
            )
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, "KMS decrypt") from exc
        return bytes(resp["Plaintext"])


class S3Backend:
    """Headers and blobs as objects in ``bucket`` under ``prefix``."""

    __slots__ = ("_errors", "_sse", "bucket", "client", "prefix")

    kind = "s3"
    remote = True

    def __init__(
        self,
        bucket: str,
        *,
        client: Any,
        prefix: str = "",
        sse: SSE | None = "AES256",
        sse_kms_key_id: str | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError("bucket: expected a bucket name")
        if sse not in (None, "AES256", "aws:kms"):
            raise ValueError("sse: expected 'AES256', 'aws:kms' or None")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client
        self._errors = _botocore()
        self._sse: dict[str, str] = {}
        if sse is not None:
            self._sse["ServerSideEncryption"] = sse
            if sse == "aws:kms" and sse_kms_key_id:
                self._sse["SSEKMSKeyId"] = sse_kms_key_id

    def _hkey(self, cid: str) -> str:
        return f"{self.prefix}keys/{cid}.json"

    def _bkey(self, blob: str) -> str:
        return f"{self.prefix}blobs/{blob}"

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kw)
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, what) from exc

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        what = f"S3 put of body {correlation_id!r}"
        put = self.client.put_object
        self._call(what, put, Key=self._bkey(blob), Body=data, Tagging=EXPIRY_TAG, **self._sse)
        self._call(
            what,
            put,
            Key=self._hkey(correlation_id),
            Body=header,
            Tagging=EXPIRY_TAG,
            IfNoneMatch="*",
            **self._sse,
        )

    def replace_header(self, correlation_id: str, header: bytes, *, blob: str, held: bool) -> None:
        what = f"S3 update of body {correlation_id!r}"
        self._call(what, self.client.head_object, Key=self._hkey(correlation_id))
        tag = HOLD_TAG if held else EXPIRY_TAG
        self._call(
            what,
            self.client.put_object,
            Key=self._hkey(correlation_id),
            Body=header,
            Tagging=tag,
            **self._sse,
        )
        k, v = tag.split("=")
        tagging = {"TagSet": [{"Key": k, "Value": v}]}
        self._call(what, self.client.put_object_tagging, Key=self._bkey(blob), Tagging=tagging)

    def read_header(self, correlation_id: str) -> bytes:
        return self._read(self._hkey(correlation_id), f"S3 get of body {correlation_id!r}")

    def read_envelope(self, correlation_id: str) -> tuple[bytes, bytes | None]:
        return self.read_header(correlation_id), None

    def read_blob(self, blob: str) -> bytes:
        return self._read(self._bkey(blob), f"S3 get of blob {blob!r}")

    def _read(self, key: str, what: str) -> bytes:
        resp = self._call(what, self.client.get_object, Key=key)
        try:
            data: bytes = resp["Body"].read()
        except (self._errors.BotoCoreError, OSError) as exc:
            raise BodyStoreUnavailable(f"{what}: {type(exc).__name__}") from exc
        return data

    def delete_header(self, correlation_id: str) -> None:
        self._call(
            f"S3 delete of body {correlation_id!r}", self.client.delete_object, Key=self._hkey(correlation_id)
        )

    def delete_blob(self, blob: str) -> None:
        self._call(f"S3 delete of blob {blob!r}", self.client.delete_object, Key=self._bkey(blob))

    def ids(self) -> Iterator[str]:
        start = f"{self.prefix}keys/"
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", ()):
                    key = str(obj["Key"])
                    if key.endswith(".json"):
                        yield key[len(start) : -len(".json")]
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            raise translate(exc, "S3 list of bodies") from exc


class S3BodyStore(EncryptedBodyStore):
    """An :class:`EncryptedBodyStore` over S3 (see the module docstring).

    Args:
        bucket: the bucket name.
        prefix: key prefix inside the bucket (``s3://bucket/prefix``).
        client: a boto3 S3 client; built from ``endpoint_url`` / ``region_name`` when omitted.
        endpoint_url: an S3-compatible endpoint (MinIO, moto, LocalStack).
        region_name: the bucket's region.
        sse: server-side encryption requested on every put: ``"AES256"``, ``"aws:kms"`` or None.
        kms_key_id: wrap per-body data keys with this KMS key (and use it for SSE-KMS).
        kms_session_key_id: wrap data keys under session keys from ``GenerateDataKey`` on this KMS key
            (no KMS call per body; reads call ``Decrypt``).
        kms_client: a boto3 KMS client; built like ``client`` when omitted.
        wrapper: the key wrapper new bodies are sealed with (a reader key); wins over the KMS options.
        client_config: a ``botocore.config.Config`` for the clients this store builds.
        keys, audit, max_body_bytes, clock: see :class:`EncryptedBodyStore`.

    Raises:
        ImportError: boto3 is not installed (``pip install auditlog-pipeline[s3]``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        keys: KeyRing,
        audit: AuditSink | None = None,
        prefix: str = "",
        client: Any | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        sse: SSE | None = "AES256",
        kms_key_id: str | None = None,
        kms_session_key_id: str | None = None,
        kms_client: Any | None = None,
        client_config: Any | None = None,
        wrapper: KeyWrapper | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
        ledger: Callable[[str], str | None] | None = None,
    ) -> None:
        from store.bodies.readerkey import SessionKeyWrapper

        s3 = client or make_client(
            "s3", endpoint_url=endpoint_url, region_name=region_name, config=client_config
        )
        kms_wrapper = KmsKeyWrapper(
            kms_client,
            key_id=kms_key_id,
            factory=lambda: make_client(
                "kms", endpoint_url=endpoint_url, region_name=region_name, config=client_config
            ),
        )
        kms_sessions = SessionKeyWrapper(
            KmsSessions(
                kms_client,
                key_id=kms_session_key_id,
                factory=lambda: make_client(
                    "kms", endpoint_url=endpoint_url, region_name=region_name, config=client_config
                ),
            )
        )
        backend = S3Backend(
            bucket, client=s3, prefix=prefix, sse=sse, sse_kms_key_id=kms_key_id if sse == "aws:kms" else None
        )
        if wrapper is None:
            if kms_session_key_id is not None:
                wrapper = kms_sessions
            elif kms_key_id is not None:
                wrapper = kms_wrapper
        super().__init__(
            backend,
            keys=keys,
            audit=audit,
            wrapper=wrapper,
            unwrappers=(kms_wrapper, kms_sessions),
            max_body_bytes=max_body_bytes,
            clock=clock,
            ledger=ledger,
        )
        self.bucket = bucket
        self.prefix = backend.prefix
        self.s3 = backend

    def ensure_bucket(self, *, lifecycle_days: int = 8) -> None:
        """Create the bucket if missing, set default encryption and a lifecycle rule for the prefix (the
        bucket's other lifecycle rules are kept).

        Args:
            lifecycle_days: objects tagged ``auditlog-expiry=auto`` under the prefix expire after this
                many days. Set it above your longest ``body_retention``; held bodies are re-tagged and
                exempt.

        Raises:
            AccessDenied, BodyStoreUnavailable: the bucket cannot be created or configured.
        """
        if isinstance(lifecycle_days, bool) or not isinstance(lifecycle_days, int) or lifecycle_days < 1:
            raise ValueError("lifecycle_days: expected a positive integer")
        b = self.s3
        errors = _botocore()
        try:
            b.client.head_bucket(Bucket=self.bucket)
        except errors.ClientError as exc:
            if translate(exc, "S3 head bucket").__class__ is not BodyNotFound:
                raise translate(exc, f"S3 bucket {self.bucket!r}") from exc
            region = b.client.meta.region_name
            kw: dict[str, Any] = {}
            if region and region != "us-east-1":
                kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
            b._call(f"S3 create bucket {self.bucket!r}", b.client.create_bucket, **kw)
        except errors.BotoCoreError as exc:
            raise translate(exc, f"S3 bucket {self.bucket!r}") from exc
        sse = b._sse.get("ServerSideEncryption", "AES256")
        rule: dict[str, Any] = {"SSEAlgorithm": sse}
        if "SSEKMSKeyId" in b._sse:
            rule["KMSMasterKeyID"] = b._sse["SSEKMSKeyId"]
        b._call(
            "S3 put bucket encryption",
            b.client.put_bucket_encryption,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": rule}]},
        )
        k, v = EXPIRY_TAG.split("=")
        name = self.prefix.strip("/") or "root"
        rules = [
            {
                "ID": f"auditlog-bodies-{name}"[:255],
                "Status": "Enabled",
                "Filter": {"And": {"Prefix": self.prefix, "Tags": [{"Key": k, "Value": v}]}},
                "Expiration": {"Days": lifecycle_days},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            },
            {
                "ID": f"auditlog-bodies-mpu-{name}"[:255],
                "Status": "Enabled",
                "Filter": {"Prefix": self.prefix},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]
        # The bucket's other lifecycle rules (a shared bucket's) are kept; ours replace ours.
        try:
            merge_rules(b.client, self.bucket, rules)
        except (errors.ClientError, errors.BotoCoreError) as exc:
            raise translate(exc, "S3 bucket lifecycle") from exc
