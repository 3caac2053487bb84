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
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, NoReturn

import orjson

from store.bodies._backend import Backend, blob_name
from store.bodies._crypto import (
    LOCAL_SCHEME,
    Envelope,
    KeyWrapper,
    LocalKeyWrapper,
    open_envelope,
    rewrap,
    seal,
    seal_record,
)
from store.bodies._ids import validate_correlation_id
from store.bodies._model import (
    DEFAULT_MAX_BODY_BYTES,
    READ_SCOPE,
    BodyInfo,
    BodyMeta,
    EraseReport,
    Principal,
    PurgeReport,
    validate_note,
)
from store.bodies.exceptions import (
    AccessDenied,
    AuditUnavailable,
    BodyExists,
    BodyExpired,
    BodyIntegrityError,
    BodyNotFound,
    BodyStoreError,
    InvalidCorrelationId,
)
from store.keys import KeyRing

__all__ = ["AuditSink", "EncryptedBodyStore", "Ledger"]

AuditSink = Callable[[dict[str, Any]], None]
Ledger = Callable[[str], str | None]
_CHUNK = 500  # correlation ids per body.purged / body.erased event


class EncryptedBodyStore:
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

    def __init__(
        self,
        backend: Backend,
        *,
        keys: KeyRing,
        audit: AuditSink | None = None,
        wrapper: KeyWrapper | None = None,
        unwrappers: Iterable[KeyWrapper] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
    ) -> None:
        if not isinstance(keys, KeyRing):
            raise TypeError("keys: expected a store.keys.KeyRing")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError("max_body_bytes: expected a positive integer")
        self.backend = backend
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self._audit = audit
        self._clock = clock
        self._local = LocalKeyWrapper(keys)
        self._wrapper: KeyWrapper = wrapper if wrapper is not None else self._local
        self._wrappers: dict[str, KeyWrapper] = {w.scheme: w for w in unwrappers}
        self._wrappers.update({LOCAL_SCHEME: self._local, self._wrapper.scheme: self._wrapper})
        self._subject_keys = {k.key_id: k.derive("bodies-subject") for k in (keys.active, *keys.older)}
        self._state_keys = {k.key_id: k.derive("bodies-state") for k in (keys.active, *keys.older)}
        self._fp_cache: dict[tuple[str, str], str] = {}
        self.ledger = ledger

    @property
    def wrapper(self) -> KeyWrapper:
        """The key wrapper new bodies are sealed with."""
        return self._wrapper

    def add_unwrapper(self, wrapper: KeyWrapper) -> None:
        """Read bodies wrapped by ``wrapper``'s scheme with it (a reader key loaded by the CLI)."""
        self._wrappers[wrapper.scheme] = wrapper

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

    # -- retention ----------------------------------------------------------------------------------

    def hold(self, correlation_id: str, *, reason: str, actor: str = "operator") -> BodyInfo:
        """Put a legal hold on a body: expiry is suspended until :meth:`release`. Journals ``body.held``."""
        cid = validate_correlation_id(correlation_id)
        why = validate_note(reason, "reason")
        self._require_audit("hold bodies")
        env = self._envelope_header(cid)
        env = replace(env, hold=self._signed_hold(env, {"reason": why, "at": self._clock(), "by": actor}))
        self.backend.replace_header(cid, env.header_bytes(), blob=blob_name(cid, env.nonce), held=True)
        self._record("body.held", cid, actor=actor, reason=why)
        return self._info(env)

    def release(self, correlation_id: str, *, reason: str | None = None, actor: str = "operator") -> BodyInfo:
        """Lift a legal hold; an already expired body goes at the next purge. Journals ``body.released``,
        with ``reason`` (the case or ticket closing the hold) when given.

        Raises:
            ValueError: ``reason`` is given but empty or not printable ASCII of at most 200 characters.
        """
        cid = validate_correlation_id(correlation_id)
        why = None if reason is None else validate_note(reason, "reason")
        self._require_audit("release bodies")
        env = replace(self._envelope_header(cid), hold=None)
        self.backend.replace_header(cid, env.header_bytes(), blob=blob_name(cid, env.nonce), held=False)
        self._record("body.released", cid, actor=actor, **_reason(why))
        return self._info(env)

    def purge_expired(self, *, actor: str = "retention") -> PurgeReport:
        """Delete every expired body not on hold (wrapped key first). Journals ``body.purged``."""
        self._require_audit("purge bodies")
        scanned = held = unreadable = 0
        gone: list[str] = []
        for cid in self._ids():
            scanned += 1
            try:
                env = self._envelope_header(cid)
            except BodyNotFound:
                continue
            except BodyIntegrityError:
                unreadable += 1
                continue
            if self._clock() >= float(env.meta.get("expires", 0.0)):
                if self._held(env, actor):
                    held += 1
                else:
                    self._delete(cid, env)
                    gone.append(cid)
        purged = len(gone)
        report = PurgeReport(scanned=scanned, purged=purged, held=held, unreadable=unreadable)
        for i, chunk in enumerate(_chunks(gone)):
            counts: dict[str, Any] = {
                "scanned": scanned,
                "purged": purged,
                "held": held,
                "unreadable": unreadable,
            }
            self._record(
                "body.purged", None, actor=actor, trigger="purge", correlation_ids=chunk,
                **(counts if i == 0 else {"purged": len(chunk)}),
            )  # fmt: skip
        return report

    def erase(self, *, subject: str, reason: str | None = None, actor: str = "operator") -> EraseReport:
        """Crypto-shred every body of a data subject (bodies on legal hold are kept and counted).

        Journals ``body.erased`` with the subject's keyed fingerprint and the counts, never the subject,
        and ``reason`` (the erasure request's ticket) when given.

        Raises:
            ValueError: ``subject`` is empty, or ``reason`` is given but empty, not printable ASCII of at
                most 200 characters, or contains the subject (nothing is erased).
        """
        if not isinstance(subject, str) or not subject:
            raise ValueError("subject: expected a non-empty string")
        why = None if reason is None else validate_note(reason, "reason")
        named = subject.strip().lower()
        if why is not None and named and named in why.lower():
            raise ValueError("reason: must not name the subject (the journal keeps only its fingerprint)")
        self._require_audit("erase bodies")
        wanted = {self._fingerprint(subject, kid) for kid in self._subject_keys}
        gone: list[str] = []
        held: list[str] = []
        for cid in self._ids():
            try:
                env = self._envelope_header(cid)
            except (BodyNotFound, BodyIntegrityError):
                continue
            if env.meta.get("subject") in wanted:
                if self._held(env, actor):
                    held.append(cid)
                else:
                    self._delete(cid, env)
                    gone.append(cid)
        erased = len(gone)
        for i, chunk in enumerate(_chunks(gone)):
            self._record(
                "body.erased",
                None,
                actor=actor,
                subject_fp=self._fingerprint(subject, self.keys.active.key_id),
                erased=erased if i == 0 else len(chunk),
                held=len(held) if i == 0 else 0,
                correlation_ids=chunk,
                **_reason(why),
            )
        return EraseReport(erased=erased, held=len(held), held_ids=tuple(sorted(held)))

    def iter_info(self) -> Iterator[BodyInfo]:
        """Metadata of every readable header (for the CLI and tests)."""
        for cid in self._ids():
            try:
                yield self.head(cid)
            except (BodyNotFound, BodyIntegrityError):
                continue

    # -- helpers ----------------------------------------------------------------------------------

    def _ids(self) -> Iterator[str]:
        for cid in self.backend.ids():
            try:
                yield validate_correlation_id(cid)
            except InvalidCorrelationId:
                continue

    def _envelope_header(self, cid: str) -> Envelope:
        return Envelope.from_parts(self.backend.read_header(cid), b"", correlation_id=cid)

    def _info(self, env: Envelope) -> BodyInfo:
        try:
            return BodyInfo.from_header(
                env.correlation_id,
                dict(env.meta),
                key_id=env.key.key_id,
                scheme=env.key.scheme,
                hold=None if env.hold is None else dict(env.hold),
                now=self._clock(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BodyIntegrityError(
                f"the header of body {env.correlation_id!r} lacks metadata", part="header"
            ) from exc

    def _expired(self, env: Envelope) -> bool:
        try:
            expires = float(env.meta["expires"])
        except (KeyError, TypeError, ValueError):
            return True  # fail closed; the AEAD check would refuse an edited header anyway
        return self._clock() >= expires and not self._held(env, "retention")

    def _hold_mac(self, env: Envelope, hold: dict[str, Any], key_id: str) -> str:
        fields = {k: hold.get(k) for k in ("reason", "at", "by")}
        msg = orjson.dumps(
            {"cid": env.correlation_id, "nonce": env.nonce.hex(), "hold": fields}, option=orjson.OPT_SORT_KEYS
        )
        return f"{key_id}:{hmac.new(self._state_keys[key_id], msg, hashlib.sha256).hexdigest()}"

    def _signed_hold(self, env: Envelope, hold: dict[str, Any]) -> dict[str, Any]:
        return {**hold, "mac": self._hold_mac(env, hold, self.keys.active.key_id)}

    def _held(self, env: Envelope, actor: str) -> bool:
        """True when the body carries a legal hold whose MAC verifies; a forged one is journaled."""
        hold = env.hold
        if hold is None:
            return False
        mac = hold.get("mac")
        key_id = mac.split(":", 1)[0] if isinstance(mac, str) else ""
        if (
            isinstance(mac, str)
            and key_id in self._state_keys
            and hmac.compare_digest(mac, self._hold_mac(env, dict(hold), key_id))
        ):
            return True
        if self._audit is not None:
            with contextlib.suppress(AuditUnavailable):
                self._record("body.tamper_detected", env.correlation_id, actor=actor, what="hold")
        return False

    def _delete(self, cid: str, env: Envelope) -> None:
        self.backend.delete_header(cid)  # the wrapped key: from here on, every copy is shredded
        self.backend.delete_blob(blob_name(cid, env.nonce))

    def _fingerprint(self, subject: str, key_id: str) -> str:
        fp = self._fp_cache.get((subject, key_id))
        if fp is None:
            data = subject.encode("utf-8", "surrogatepass")
            fp = f"{key_id}:{hmac.digest(self._subject_keys[key_id], data, 'sha256').hex()[:32]}"
            if len(self._fp_cache) >= 4096:
                self._fp_cache.clear()
            self._fp_cache[(subject, key_id)] = fp
        return fp

    def _require_audit(self, what: str) -> None:
        if self._audit is None:
            raise AuditUnavailable(f"this body store has no audit sink, so it cannot {what}")

    def _record(
        self, kind: str, cid: str | None, *, actor: str, allowed: bool | None = None, **fields: Any
    ) -> None:
        event: dict[str, Any] = {"kind": kind, "actor": {"subject": actor}, "store": self.backend.kind}
        if cid is not None:
            event["correlation_id"] = cid
        if allowed is not None:
            reason = fields.pop("reason", None)
            event["decision"] = {"allowed": allowed, "reason": reason}
            if reason == "missing_scope":
                event["decision"]["required"] = [READ_SCOPE]
        event.update(fields)
        sink = self._audit
        if sink is None:  # pragma: no cover - guarded by _require_audit
            raise AuditUnavailable("no audit sink")
        try:
            sink(event)
        except Exception as exc:
            raise AuditUnavailable(
                f"the audit journal did not take {kind!r}, so the operation is refused"
            ) from exc

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


def _chunks(ids: list[str]) -> list[list[str]]:
    """Correlation ids in event-sized chunks (one empty chunk when there are none: one event)."""
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]


def _reason(why: str | None) -> dict[str, Any]:
    """The ``reason`` field of an operator's event, when one was given."""
    return {} if why is None else {"reason": why}


def _not_found(cid: str) -> BodyNotFound:
    """The one refusal a reader sees for a missing body and for another tenant's."""
    return BodyNotFound(f"body {cid!r}: not found")
