"""Encrypted, access-controlled, short-retention storage of response bodies, keyed by correlation id.

::

    from store.bodies import BodyMeta, Principal, from_url

    bodies = from_url("file:///var/lib/app/bodies", keys=ring, audit=journal_sink)
    bodies.put(cid, body, meta=BodyMeta(tenant="acme", subject="user-42", retention=7 * 86400))
    bodies.get(cid, reader=Principal(name="oncall", scopes={"bodies:read"}, tenants={"*"}), purpose="INC-1")

Every body is envelope-encrypted (its own AES-256-GCM data key, wrapped by the master key or KMS; the
correlation id and metadata bound as associated data). Reads need ``bodies:read`` for the body's tenant
and a purpose, and are journaled before data is returned. Expired bodies are unreadable and purged; a
legal hold suspends expiry; ``erase(subject=...)`` crypto-shreds a data subject's bodies. The
:class:`BodyWriter` keeps all of this off the request path and spools encrypted bodies when S3 fails.

``S3BodyStore`` lives in :mod:`store.bodies.s3` and imports boto3 when used.
"""

from __future__ import annotations

from store.bodies._crypto import KeyWrapper, LocalKeyWrapper
from store.bodies._ids import MAX_ID_LENGTH, validate_correlation_id
from store.bodies._model import READ_SCOPE, BodyInfo, BodyMeta, EraseReport, Principal, PurgeReport
from store.bodies._protocols import BodyStore, EraseBodies, GetBody, HeadBody, HoldBody, PurgeBodies, PutBody
from store.bodies._store import AuditSink, EncryptedBodyStore, Ledger
from store.bodies.exceptions import (
    AccessDenied,
    AuditUnavailable,
    BodyExists,
    BodyExpired,
    BodyIntegrityError,
    BodyNotFound,
    BodyStoreError,
    BodyStoreUnavailable,
    InvalidCorrelationId,
)
from store.bodies.local import LocalBodyStore
from store.bodies.memory import MemoryBodyStore
from store.bodies.outbox import BodyOutbox, OutboxConfig, OutboxStats
from store.bodies.readerkey import (
    ReaderKey,
    ReaderKeySessions,
    SessionKeyWrapper,
    generate_reader_key,
    load_public_key,
)
from store.bodies.url import from_url
from store.bodies.writer import BodyWriter, WriterConfig, WriterStats

__all__ = [
    "AccessDenied",
    "AuditSink",
    "AuditUnavailable",
    "BodyExists",
    "BodyExpired",
    "BodyInfo",
    "BodyIntegrityError",
    "BodyMeta",
    "BodyNotFound",
    "BodyOutbox",
    "BodyStore",
    "BodyStoreError",
    "BodyStoreUnavailable",
    "BodyWriter",
    "EncryptedBodyStore",
    "EraseBodies",
    "EraseReport",
    "GetBody",
    "HeadBody",
    "HoldBody",
    "InvalidCorrelationId",
    "KeyWrapper",
    "Ledger",
    "LocalBodyStore",
    "LocalKeyWrapper",
    "MAX_ID_LENGTH",
    "MemoryBodyStore",
    "OutboxConfig",
    "OutboxStats",
    "Principal",
    "PurgeBodies",
    "PurgeReport",
    "PutBody",
    "READ_SCOPE",
    "ReaderKey",
    "ReaderKeySessions",
    "SessionKeyWrapper",
    "WriterConfig",
    "WriterStats",
    "from_url",
    "generate_reader_key",
    "load_public_key",
    "validate_correlation_id",
]


def __getattr__(name: str) -> object:
    """``S3BodyStore`` on first use, so importing ``store.bodies`` never imports boto3."""
    if name == "S3BodyStore":
        from store.bodies.s3 import S3BodyStore

        return S3BodyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
