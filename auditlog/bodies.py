"""The body store, composed with the policy (who may read) and the journal (every read is an event).

``store.bodies`` knows nothing of policies or of :func:`~auditlog.configure`: it takes a
:class:`~store.bodies.Principal` and an audit sink. This module supplies both::

    handle = auditlog.configure(journal_dir="journal", policy="policy.toml")
    bodies = open_body_store("file:///var/lib/app/bodies", handle=handle)
    data = bodies.get(cid, reader="oncall", purpose="INC-1234")   # journaled as body.read first

Readers are the policy's ``[readers.NAME]`` tables. An undeclared reader name becomes a principal with no
scopes, so its attempt is refused *and journaled* by the store like any other refusal. Operators (hold,
release, purge, erase) are the policy's ``[operators.NAME]`` tables holding ``bodies:admin``; anything
else is refused and journaled as ``body.operation_denied``.

A remote store (S3) is never written on the request path: :func:`open_body_store` puts a
:class:`~store.bodies.BodyOutbox` (an encrypted local pack, shipped in the background) behind
:meth:`PolicyBodyStore.put`, so ``body_store=open_body_store("s3://...", handle=h)`` is safe to hand to
the middleware. :func:`reconcile` checks that every ``body_ref`` in a trail resolves.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from auditlog.events import SCHEMA_VERSION
from auditlog.handle import AuditHandle
from auditlog.policy import ADMIN_SCOPE, DAY, Policy, Rule
from store.bodies import (
    AccessDenied,
    AuditSink,
    AuditUnavailable,
    BodyInfo,
    BodyMeta,
    BodyOutbox,
    EncryptedBodyStore,
    EraseReport,
    OutboxConfig,
    Principal,
    PurgeReport,
    ReaderKey,
    ReaderKeySessions,
    SessionKeyWrapper,
    from_url,
)
from store.bodies.outbox import read_pack
from store.trail import iter_trail_records

__all__ = [
    "PolicyBodyStore",
    "ReconcileReport",
    "TrailLedger",
    "audit_sink",
    "body_meta",
    "lifecycle_days",
    "open_body_store",
    "principal_for",
    "reconcile",
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
    """A body store whose readers and operators are named in the policy; ``put`` goes through the outbox
    when there is one. Everything else delegates to :attr:`store`."""

    __slots__ = ("_audit", "outbox", "policy", "store")

    def __init__(
        self,
        store: EncryptedBodyStore,
        policy: Policy,
        *,
        outbox: BodyOutbox | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.outbox = outbox
        self._audit = audit

    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Take a body: into the local outbox (remote stores), else straight into the store."""
        if self.outbox is not None:
            self.outbox.put(correlation_id, body, meta=meta)
        else:
            self.store.put(correlation_id, body, meta=meta)

    def get(self, correlation_id: str, *, reader: str | Principal, purpose: str) -> bytes:
        """Read a body as the policy reader named ``reader`` (or as an explicit principal).

        Raises:
            AccessDenied, AuditUnavailable, BodyNotFound, BodyExpired, BodyIntegrityError,
            InvalidCorrelationId: see :meth:`store.bodies.EncryptedBodyStore.get`.
        """
        who = reader if isinstance(reader, Principal) else principal_for(self.policy, reader)
        return self.store.get(correlation_id, reader=who, purpose=purpose)

    def keys_for(self, correlation_id: str) -> list[str]:
        """The body keys stored for a request's correlation id.

        The middleware stores a body under ``correlation_id.span_id`` (a trace id is shared by every request
        of a trace). A full key is returned as it is; a bare correlation id (no ``.``) lists the keys that
        start with it, sorted (the store's listing, so nothing is read or journaled).
        """
        if "." in correlation_id:
            return [correlation_id]
        prefix = correlation_id + "."
        return sorted(k for k in self.store.backend.ids() if k == correlation_id or k.startswith(prefix))

    def head(self, correlation_id: str) -> BodyInfo:
        return self.store.head(correlation_id)

    def authorize(self, operator: str | None, action: str, correlation_id: str | None = None) -> str:
        """The actor name of policy operator ``operator`` for ``action``.

        Raises:
            AccessDenied: ``operator`` is not declared with ``bodies:admin`` (journaled first as
                ``body.operation_denied``).
            AuditUnavailable: the refusal could not be journaled.
        """
        declared = self.policy.operators.get(operator) if operator else None
        if declared is not None and ADMIN_SCOPE in declared.scopes:
            return f"operator:{declared.name}"
        reason = "not_an_operator" if declared is None else "missing_scope"
        event: dict[str, Any] = {
            "kind": "body.operation_denied",
            "actor": {"subject": f"operator:{operator}" if operator else "operator:?"},
            "decision": {"allowed": False, "reason": reason, "required": [ADMIN_SCOPE]},
            "operation": action,
        }
        if correlation_id is not None:
            event["correlation_id"] = correlation_id
        if self._audit is None:
            raise AuditUnavailable("this body store has no audit sink, so it cannot refuse on the record")
        self._audit(event)
        raise AccessDenied(f"operator {operator!r} may not {action} bodies (needs {ADMIN_SCOPE!r})")

    def hold(self, correlation_id: str, *, reason: str, operator: str | None = None) -> BodyInfo:
        actor = self.authorize(operator, "hold", correlation_id)
        return self.store.hold(correlation_id, reason=reason, actor=actor)

    def release(
        self, correlation_id: str, *, reason: str | None = None, operator: str | None = None
    ) -> BodyInfo:
        actor = self.authorize(operator, "release", correlation_id)
        return self.store.release(correlation_id, reason=reason, actor=actor)

    def purge_expired(self, *, operator: str | None = None) -> PurgeReport:
        actor = self.authorize(operator, "purge")
        return self.store.purge_expired(actor=actor)

    def erase(self, *, subject: str, reason: str | None = None, operator: str | None = None) -> EraseReport:
        actor = self.authorize(operator, "erase")
        return self.store.erase(subject=subject, reason=reason, actor=actor)

    def iter_info(self) -> Iterator[BodyInfo]:
        return self.store.iter_info()

    def close(self) -> None:
        """Seal the outbox's current pack and ship for a moment (what is left ships at the next start)."""
        if self.outbox is not None:
            self.outbox.close()


class TrailLedger:
    """Which bodies the trail says are gone (``"erased"`` or ``"purged"``): a restored body is refused.

    Built once from every stream of the trail (``body.erased`` and ``body.purged`` events list their
    correlation ids).
    """

    __slots__ = ("gone",)

    def __init__(self, trail_dir: str | os.PathLike[str]) -> None:
        self.gone: dict[str, str] = {}
        for _, rec in iter_trail_records(trail_dir):
            kind = rec.get("kind")
            if kind in ("body.erased", "body.purged"):
                state = str(kind).split(".", 1)[1]
                for cid in _ids_of(rec):
                    self.gone[cid] = state

    def __call__(self, correlation_id: str) -> str | None:
        return self.gone.get(correlation_id)


def _ids_of(rec: dict[str, Any]) -> list[str]:
    ids = rec.get("correlation_ids")
    out = [str(c) for c in ids] if isinstance(ids, list) else []
    cid = rec.get("correlation_id")
    if isinstance(cid, str):
        out.append(cid)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    """What :func:`reconcile` found. ``dangling`` lists refs that resolve to nothing (at most 100)."""

    refs: int
    stored: int
    accounted: int
    pending: int
    dangling: int
    restored: int
    by_reason: dict[str, int] = field(default_factory=dict)
    dangling_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "refs": self.refs,
            "stored": self.stored,
            "accounted": self.accounted,
            "pending": self.pending,
            "dangling": self.dangling,
            "restored": self.restored,
            "by_reason": dict(sorted(self.by_reason.items())),
            "dangling_ids": list(self.dangling_ids),
        }


def reconcile(
    trail_dir: str | os.PathLike[str],
    store: EncryptedBodyStore,
    *,
    outboxes: Iterable[str | os.PathLike[str]] = (),
) -> ReconcileReport:
    """Check that every ``body_ref`` in the trail resolves to exactly one of: a stored body, a journaled
    ``body.dropped`` / ``body.lost`` (with its reason), or a journaled ``body.purged`` / ``body.erased``.

    Args:
        trail_dir: the trail (every stream is read).
        store: the body store the refs should be in (its ids are listed once).
        outboxes: outbox directories whose packs still wait to ship: their bodies count as ``pending``,
            not dangling.
    """
    refs: set[str] = set()
    accounted: dict[str, str] = {}
    for _, rec in iter_trail_records(trail_dir):
        ref = rec.get("body_ref")
        if isinstance(ref, dict) and isinstance(ref.get("key"), str):
            refs.add(ref["key"])
        kind = rec.get("kind")
        if kind in ("body.dropped", "body.lost"):
            for cid in _ids_of(rec):
                accounted.setdefault(cid, f"{str(kind)[5:]}:{rec.get('reason')}")
        elif kind in ("body.purged", "body.erased"):
            for cid in _ids_of(rec):
                accounted[cid] = str(kind)[5:]
    stored_ids = set(store.backend.ids())
    pending_ids: set[str] = set()
    for box in outboxes:
        with contextlib.suppress(FileNotFoundError):
            for path in Path(box).iterdir():
                if path.suffix in (".pack", ".open"):
                    pending_ids.update(_pack_ids(path))
    stored = refs & stored_ids
    gone = {c for c, why in accounted.items() if why in ("purged", "erased")}
    restored = stored & gone
    resolved = {c for c in refs if c in accounted}
    pending = (refs - stored - resolved) & pending_ids
    dangling = sorted(refs - stored - resolved - pending)
    by_reason: dict[str, int] = {}
    for c in refs & resolved:
        by_reason[accounted[c]] = by_reason.get(accounted[c], 0) + 1
    return ReconcileReport(
        refs=len(refs),
        stored=len(stored - restored),
        accounted=len(resolved),
        pending=len(pending),
        dangling=len(dangling),
        restored=len(restored),
        by_reason=by_reason,
        dangling_ids=tuple(dangling[:100]),
    )


def _pack_ids(path: Path) -> set[str]:
    from store.bodies.outbox import _cid_of

    out: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for _, payload in read_pack(path):
            with contextlib.suppress(Exception):
                out.add(_cid_of(payload))
    return out


def local_first(sink: Any, handle: AuditHandle) -> Any:
    """What the middleware stores captured bodies through: ``sink`` itself when a ``put`` stays local (a
    memory or ``file://`` store, or an outbox already in front of a remote one), else ``sink``'s store
    behind a new outbox next to the handle's trail. So a remote store is never called on the request
    path, whatever the middleware was handed (a bare ``S3BodyStore`` included).

    Raises:
        ValueError: the store is remote and the handle's journal has no directory for an outbox.
    """
    if isinstance(sink, PolicyBodyStore):
        if sink.outbox is not None or not getattr(sink.store.backend, "remote", False):
            return sink
        store, policy = sink.store, sink.policy
    elif getattr(getattr(sink, "backend", None), "remote", False):
        store, policy = sink, handle.policy
    else:
        return sink
    audit = audit_sink(handle)
    box = BodyOutbox(store, default_outbox(handle), audit=audit)
    atexit.register(box.close)
    return PolicyBodyStore(store, policy, outbox=box, audit=audit)


def default_outbox(handle: AuditHandle) -> Path:
    """The outbox next to the handle's trail: ``<trail>.bodies-outbox``."""
    directory = getattr(handle.journal, "directory", None)
    if directory is None:
        raise ValueError("outbox: pass a directory (the handle's journal has none)")
    return Path(f"{directory}.bodies-outbox")


def open_body_store(
    url: str,
    *,
    handle: AuditHandle,
    policy: Policy | None = None,
    outbox: str | os.PathLike[str] | Literal[False] | None = None,
    outbox_config: OutboxConfig | None = None,
    reader_key: ReaderKey | None = None,
    ledger: bool = False,
    **options: Any,
) -> PolicyBodyStore:
    """Open the body store at ``url`` with the handle's keys, journaling into the handle's journal.

    Args:
        url: ``memory://``, ``file:///abs/path`` or ``s3://bucket/prefix``.
        handle: what :func:`auditlog.configure` returned.
        policy: whose readers and operators may act (default: the handle's policy).
        outbox: for a remote store, the local outbox directory ``put`` appends to (default
            ``<trail>.bodies-outbox``); ``False``: no outbox (readers, the CLI). Its shipper starts now
            and ships what a previous process left.
        outbox_config: see :class:`~store.bodies.OutboxConfig`.
        reader_key: the reader private key, to read bodies sealed for it (never on an app server).
        ledger: refuse bodies the trail says were erased or purged (restored from a backup).
        options: passed to the store (``fsync=``, ``endpoint_url=``, ``reader_public_key=``, ``clock=``...).
    """
    sink = audit_sink(handle)
    store = from_url(url, keys=handle.keys, audit=sink, **options)
    if reader_key is not None:
        store.add_unwrapper(SessionKeyWrapper(ReaderKeySessions(reader_key.public_bytes, reader=reader_key)))
    if ledger:
        directory = getattr(handle.journal, "directory", None)
        if directory is not None:
            store.ledger = TrailLedger(directory)
    box: BodyOutbox | None = None
    if outbox is not False and (outbox is not None or getattr(store.backend, "remote", False)):
        where = default_outbox(handle) if outbox is None else Path(outbox)
        box = BodyOutbox(store, where, audit=sink, config=outbox_config)
        atexit.register(box.close)
    return PolicyBodyStore(store, policy if policy is not None else handle.policy, outbox=box, audit=sink)
