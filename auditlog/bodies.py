"""The body store, composed with the policy (who may read) and the journal (every read is an event).

``store.bodies`` knows nothing of policies or of :func:`~auditlog.configure`: it takes a
:class:`~store.bodies.Principal` and an audit sink. This module supplies both::

    handle = auditlog.configure(journal_dir="journal", policy="policy.toml")
    bodies = open_body_store("file:///var/lib/app/bodies", handle=handle)
    data = bodies.get(cid, reader="oncall", purpose="INC-1234")   # journaled as body.read first

Readers are the policy's ``[readers.NAME]`` tables. An undeclared reader name becomes a principal with no
scopes, so its attempt is refused *and journaled* by the store like any other refusal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
from typing import Any

from auditlog.events import SCHEMA_VERSION
from auditlog.handle import AuditHandle
from auditlog.policy import DAY, Policy, Rule
from store.bodies import (
    AuditSink,
    AuditUnavailable,
    BodyInfo,
    BodyMeta,
    EncryptedBodyStore,
    EraseReport,
    Principal,
    PurgeReport,
    from_url,
)

__all__ = [
    "PolicyBodyStore",
    "audit_sink",
    "body_meta",
    "lifecycle_days",
    "open_body_store",
    "principal_for",
]


_FREE_TEXT = ("purpose", "reason")


def audit_sink(handle: AuditHandle) -> AuditSink:
    """An audit sink that appends to the handle's journal and raises when the journal refuses.

    Events get the schema version (``v``); ``emit`` stamps ``ts``, ``event_id`` and ``policy``. The
    operator's free text (a read's ``purpose``, a hold's ``reason``) goes through the handle's scanner
    first, so a ticket note that quotes an email address or a token is journaled redacted.

    Raises (from the sink):
        AuditUnavailable: ``handle.emit`` returned False (the journal did not take the event).
    """

    scanner = handle.scanner

    def sink(event: MutableMapping[str, Any]) -> None:
        record = {"v": SCHEMA_VERSION, **event}
        for key in _FREE_TEXT:
            text = record.get(key)
            if isinstance(text, str):
                record[key] = scanner.redact(text)
        if not handle.emit(record):
            raise AuditUnavailable("the audit journal did not take the event")

    return sink


def principal_for(policy: Policy, reader: str) -> Principal:
    """The principal of reader ``reader`` as the policy declares it; an unknown name holds no scopes."""
    declared = policy.readers.get(reader)
    if declared is None:
        return Principal(name=reader)
    return Principal(name=declared.name, scopes=declared.scopes, tenants=declared.tenants)


def body_meta(
    rule: Rule,
    *,
    tenant: str | None,
    subject: str | None = None,
    content_type: str | None = None,
    original_size: int | None = None,
) -> BodyMeta:
    """The metadata of a body captured under ``rule``: its retention is the rule's ``body_retention``.

    ``tenant`` and ``subject`` must come from verified auth, never from the request.
    """
    return BodyMeta(
        tenant=tenant,
        subject=subject,
        retention=rule.body_retention,
        content_type=content_type,
        rule=rule.id,
        original_size=original_size,
    )


def lifecycle_days(policy: Policy) -> int:
    """Days for ``S3BodyStore.ensure_bucket(lifecycle_days=...)``: the longest body retention plus one."""
    longest = max((r.body_retention for r in (policy.defaults, *policy.rules)), default=7 * DAY)
    return max(1, math.ceil(longest / DAY) + 1)


class PolicyBodyStore:
    """A body store whose readers are named in the policy. Everything else delegates to :attr:`store`."""

    __slots__ = ("policy", "store")

    def __init__(self, store: EncryptedBodyStore, policy: Policy) -> None:
        self.store = store
        self.policy = policy

    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Store a body; see :meth:`store.bodies.EncryptedBodyStore.put`."""
        self.store.put(correlation_id, body, meta=meta)

    def get(self, correlation_id: str, *, reader: str | Principal, purpose: str) -> bytes:
        """Read a body as the policy reader named ``reader`` (or as an explicit principal).

        Raises:
            AccessDenied, AuditUnavailable, BodyNotFound, BodyExpired, BodyIntegrityError,
            InvalidCorrelationId: see :meth:`store.bodies.EncryptedBodyStore.get`.
        """
        who = reader if isinstance(reader, Principal) else principal_for(self.policy, reader)
        return self.store.get(correlation_id, reader=who, purpose=purpose)

    def head(self, correlation_id: str) -> BodyInfo:
        return self.store.head(correlation_id)

    def hold(self, correlation_id: str, *, reason: str, actor: str = "operator") -> BodyInfo:
        return self.store.hold(correlation_id, reason=reason, actor=actor)

    def release(self, correlation_id: str, *, reason: str | None = None, actor: str = "operator") -> BodyInfo:
        return self.store.release(correlation_id, reason=reason, actor=actor)

    def purge_expired(self, *, actor: str = "retention") -> PurgeReport:
        return self.store.purge_expired(actor=actor)

    def erase(self, *, subject: str, reason: str | None = None, actor: str = "operator") -> EraseReport:
        return self.store.erase(subject=subject, reason=reason, actor=actor)

    def iter_info(self) -> Iterator[BodyInfo]:
        return self.store.iter_info()


def open_body_store(
    url: str, *, handle: AuditHandle, policy: Policy | None = None, **options: Any
) -> PolicyBodyStore:
    """Open the body store at ``url`` with the handle's keys, journaling into the handle's journal.

    Args:
        url: ``memory://``, ``file:///abs/path`` or ``s3://bucket/prefix``.
        handle: what :func:`auditlog.configure` returned.
        policy: whose readers may read (default: the handle's policy).
        options: passed to the store (``fsync=``, ``endpoint_url=``, ``kms_key_id=``, ``clock=``...).
    """
    store = from_url(url, keys=handle.keys, audit=audit_sink(handle), **options)
    return PolicyBodyStore(store, policy if policy is not None else handle.policy)
