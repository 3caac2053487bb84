"""The body store: envelope encryption, access control, retention and audit over any :class:`Backend`.

Backends only move bytes; every decision lives here, so Memory, Local and S3 behave identically:

- ``put`` caps the body (recording the original size), seals it (:mod:`store.bodies._crypto`) and writes
  the envelope; a correlation id that already holds another body is refused (:class:`BodyExists`).
- ``get`` checks the purpose and the reader's scope, loads the header, checks the tenant and the expiry,
  decrypts, and journals ``body.read`` through the audit sink *before* returning. Every refusal journals
  ``body.read_denied`` (or ``body.integrity_failed``); a sink that raises refuses the read.
- ``purge_expired``, ``erase``, ``hold`` and ``release`` journal ``body.purged``, ``body.erased``
  (both with the correlation ids, in chunks), ``body.held`` and ``body.released``. Without an audit sink
  they are refused.

Authenticated state. Tenant, subject, creation and expiry are the body's associated data (an edit fails
to decrypt). A legal hold is MAC'd (``HMAC(master.derive("bodies-state"), cid, nonce, hold)``): a hold
marker added or copied on disk fails the check, is ignored (the body expires and is purged as if unheld)
and journaled as ``body.tamper_detected``. An optional *ledger* (``ledger(cid) -> "erased" | "purged" |
None``, built by :mod:`auditlog.bodies` from the trail) names bodies the trail says are gone: such a body
found in the store was restored from a backup, so reading it is refused and ``body.tamper_detected`` is
journaled.

The audit sink is any ``Callable[[dict], None]`` that raises when it cannot record the event; the
events it receives hold correlation ids, reader names, tenants, purposes, sizes and counts, never a body.

This module holds the write and read paths; the state and the audit journal every operation shares are
:mod:`store.bodies._store_core`'s, holds, purges and erasure :mod:`store.bodies._retention`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

from store.bodies._backend import blob_name
from store.bodies._crypto import LOCAL_SCHEME, Envelope, open_envelope, rewrap, seal, seal_record
from store.bodies._ids import validate_correlation_id
from store.bodies._model import READ_SCOPE, BodyInfo, BodyMeta, Principal, validate_note
from store.bodies._retention import BodyRetention
from store.bodies._store_core import AuditSink, Ledger
from store.bodies.exceptions import (
    AccessDenied,
    BodyExists,
    BodyExpired,
    BodyIntegrityError,
    BodyNotFound,
    BodyStoreError,
    InvalidCorrelationId,
)

__all__ = ["AuditSink", "EncryptedBodyStore", "Ledger"]


class EncryptedBodyStore(BodyRetention):
    """Encrypted, access-controlled, retention-enforcing body storage over a :class:`Backend`.

    Args:
        backend: where envelopes are kept.
        keys: the master key ring; data keys are wrapped under ``active.derive("bodies")`` unless
            ``wrapper`` is given, and data subjects are fingerprinted under ``derive("bodies-subject")``.
        audit: the sink every read, refusal, purge, erasure and hold is journaled to. ``None`` makes the
            store write-only: reads and retention operations are refused.
        wrapper: the key wrapper for new bodies (for example AWS KMS); local wrapping stays available to
            read bodies it wrapped and to seal bodies while the preferred wrapper is unreachable.
        unwrappers: further wrappers, used only to read bodies wrapped by their scheme.
        max_body_bytes: bodies beyond this are truncated to it; ``size`` records the original length.
        clock: seconds since the epoch (tests pass a fake).
        ledger: names bodies the trail says were erased or purged (see the module docstring).
    """

    # -- write path -------------------------------------------------------------------------------

    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Encrypt and store ``body``; see :meth:`seal` and :meth:`put_envelope`."""
        self.put_envelope(self.seal(correlation_id, body, meta=meta))

    def seal(self, correlation_id: str, body: bytes, *, meta: BodyMeta, local: bool = False) -> Envelope:
        """Cap and encrypt a body without storing it (the background writer seals, then stores or spools).

        Args:
            local: wrap the data key with the local master key even when the store prefers another
                wrapper (used while KMS is unreachable; :meth:`put_envelope` re-wraps on delivery).

        Raises:
            InvalidCorrelationId: see :func:`~store.bodies.validate_correlation_id`.
            TypeError: ``body`` is not bytes-like.
        """
        cid = validate_correlation_id(correlation_id)
        data, stored = self._stored(body, meta)
        return seal(cid, data, meta=stored, wrapper=self._local if local else self._wrapper)

    def seal_record(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> bytes:
        """:meth:`seal` to the compact binary form the outbox appends (see :func:`~store.bodies._crypto.
        seal_record`): the JSON header is built later, off the request path.

        Raises:
            InvalidCorrelationId, TypeError: as :meth:`seal`.
            BodyStoreUnavailable: the wrapper has no key to seal with (KMS sessions not ready).
        """
        data, stored = self._stored(body, meta)
        return seal_record(validate_correlation_id(correlation_id), data, meta=stored, wrapper=self._wrapper)

    def _stored(self, body: bytes, meta: BodyMeta) -> tuple[bytes, dict[str, Any]]:
        """The capped body and the metadata stored (and bound as associated data) with it."""
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"body: expected bytes, not {type(body).__name__}")
        if type(meta) is not BodyMeta:
            raise TypeError("meta: expected a BodyMeta")
        data = bytes(body[: self.max_body_bytes])
        size = max(len(body), meta.original_size or 0)
        now = self._clock()
        stored: dict[str, Any] = {
            "tenant": meta.tenant,
            "subject": None
            if meta.subject is None
            else self._fingerprint(meta.subject, self.keys.active.key_id),
            "created": now,
            "expires": now + float(meta.retention),
            "size": size,
            "stored": len(data),
            "truncated": len(data) < size,
            "content_type": meta.content_type,
            "rule": meta.rule,
        }
        return data, stored

    def put_envelope(self, env: Envelope) -> None:
        """Store a sealed envelope, re-wrapping its data key for the preferred wrapper if needed.

        Storing the same envelope twice is a no-op (replays are idempotent).

        Raises:
            BodyExists: another body already holds this correlation id.
            BodyStoreUnavailable, AccessDenied: the backend is unreachable or refuses our credentials.
        """
        cid = validate_correlation_id(env.correlation_id)
        if env.key.scheme == LOCAL_SCHEME:  # spooled under the master key while KMS was away
            env = rewrap(env, wrappers=self._wrappers, to=self._wrapper)
        # Anything else is stored as sealed: a shipper never needs (or holds) the reader key.
        blob = blob_name(cid, env.nonce)
        try:
            self.backend.write(cid, env.header_bytes(), blob, env.ciphertext)
        except BodyExists:
            try:
                existing = self._envelope_header(cid)
            except BodyStoreError:
                existing = None
            if existing is not None and existing.nonce == env.nonce:
                return  # a replay of a delivered envelope
            if existing is None or blob_name(cid, existing.nonce) != blob:
                self.backend.delete_blob(blob)
            raise

    # -- read path --------------------------------------------------------------------------------

    def head(self, correlation_id: str) -> BodyInfo:
        """Metadata of one body (never the body). Raises BodyNotFound, BodyIntegrityError."""
        return self._info(self._envelope_header(validate_correlation_id(correlation_id)))

    def get(self, correlation_id: str, *, reader: Principal, purpose: str) -> bytes:
        """Return a body to ``reader``, journaling the read first.

        Raises:
            InvalidCorrelationId: the id is malformed (journaled as a refused read).
            AccessDenied: no purpose, or no ``bodies:read`` scope.
            AuditUnavailable: the audit sink could not record the read (or the refusal).
            BodyNotFound: nothing is stored under the id, or the body belongs to a tenant the reader may
                not read (the same error, word for word; the journal records which it was).
            BodyExpired: the body is past its retention; it has now been purged.
            BodyIntegrityError: the envelope fails to verify (journaled as ``body.integrity_failed``).
        """
        if not isinstance(reader, Principal):
            raise TypeError("reader: expected a Principal")
        self._require_audit("read bodies")
        try:
            cid = validate_correlation_id(correlation_id)
        except InvalidCorrelationId as exc:
            self._refuse(None, reader, None, "invalid_correlation_id", exc)
        try:
            why = validate_note(purpose, "purpose")
        except ValueError as exc:
            self._refuse(cid, reader, None, "no_purpose", AccessDenied(f"reading body {cid!r}: {exc}"))
        if not reader.can_read_bodies:
            self._refuse(
                cid,
                reader,
                why,
                "missing_scope",
                AccessDenied(f"reader {reader.name!r} lacks scope {READ_SCOPE!r}"),
            )
        try:
            header, ciphertext = self.backend.read_envelope(cid)
            env = Envelope.from_parts(header, b"", correlation_id=cid)
        except BodyNotFound:
            self._refuse(cid, reader, why, "not_found", _not_found(cid))
        except BodyIntegrityError as exc:
            self._integrity_failed(cid, reader, why, exc)
        tenant = env.meta.get("tenant")
        if not reader.reads_tenant(tenant):
            # Told apart in the journal only: to the reader, another tenant's body is a missing one.
            self._refuse(cid, reader, why, "tenant", _not_found(cid))
        gone = self.ledger(cid) if self.ledger is not None else None
        if gone is not None:
            self._record("body.tamper_detected", cid, actor=reader.name, what=f"restored_after_{gone}")
            self._refuse(cid, reader, why, f"restored_after_{gone}", _not_found(cid))
        if self._expired(env):
            self._refuse_expired(cid, reader, why, env)
        # Journaled before anything is decrypted: a read the journal did not take never happens.
        self._record(
            "body.read",
            cid,
            actor=reader.name,
            allowed=True,
            purpose=why,
            tenant=tenant,
            size=int(env.meta.get("size", 0)),
            stored_size=int(env.meta.get("stored", 0)),
            truncated=bool(env.meta.get("truncated", False)),
            key_scheme=env.key.scheme,
        )
        try:
            if ciphertext is None:
                ciphertext = self.backend.read_blob(blob_name(cid, env.nonce))
            body = open_envelope(env, wrappers=self._wrappers, ciphertext=ciphertext)
        except BodyNotFound:
            self._integrity_failed(cid, reader, why, BodyIntegrityError(f"body {cid!r}: ciphertext missing"))
        except BodyIntegrityError as exc:
            self._integrity_failed(cid, reader, why, exc)
        except AccessDenied as exc:  # the key material here cannot open it (no reader key, KMS refused)
            self._record(
                "body.read_denied", cid, actor=reader.name, allowed=False, reason="no_key", purpose=why
            )
            raise exc
        return body

    def iter_info(self) -> Iterator[BodyInfo]:
        """Metadata of every readable header (for the CLI and tests)."""
        for cid in self._ids():
            try:
                yield self.head(cid)
            except (BodyNotFound, BodyIntegrityError):
                continue

    def _expired(self, env: Envelope) -> bool:
        try:
            expires = float(env.meta["expires"])
        except (KeyError, TypeError, ValueError):
            return True  # fail closed; the AEAD check would refuse an edited header anyway
        return self._clock() >= expires and not self._held(env, "retention")

    def _refuse(
        self, cid: str | None, reader: Principal, purpose: str | None, reason: str, error: BaseException
    ) -> NoReturn:
        self._record(
            "body.read_denied", cid, actor=reader.name, allowed=False, reason=reason, purpose=purpose
        )
        raise error

    def _refuse_expired(self, cid: str, reader: Principal, purpose: str, env: Envelope) -> NoReturn:
        self._record(
            "body.read_denied", cid, actor=reader.name, allowed=False, reason="expired", purpose=purpose
        )
        self._delete(cid, env)
        self._record(
            "body.purged", cid, actor="retention", trigger="read", scanned=1, purged=1, held=0, unreadable=0
        )
        raise BodyExpired(f"body {cid!r} is past its retention and was purged")

    def _integrity_failed(
        self, cid: str, reader: Principal, purpose: str, exc: BodyIntegrityError
    ) -> NoReturn:
        self._record(
            "body.integrity_failed",
            cid,
            actor=reader.name,
            allowed=False,
            reason="integrity",
            purpose=purpose,
            part=exc.part,
        )
        raise exc


def _not_found(cid: str) -> BodyNotFound:
    """The one refusal a reader sees for a missing body and for another tenant's."""
    return BodyNotFound(f"body {cid!r}: not found")
