"""Retention of bodies: legal holds, the purge of expired bodies and the erasure of a data subject's.

:class:`BodyRetention` adds to the body store ``hold`` and ``release`` (journaling ``body.held`` and
``body.released``), ``purge_expired`` and ``erase`` (journaling ``body.purged`` and ``body.erased`` with the
correlation ids, in chunks). Without an audit sink they are refused. A legal hold is MAC'd
(``HMAC(master.derive("bodies-state"), cid, nonce, hold)``): a hold marker added or copied on disk fails
the check, is ignored (the body expires and is purged as if unheld) and is journaled as
``body.tamper_detected``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import replace
from typing import Any

import orjson

from store.bodies._backend import blob_name
from store.bodies._crypto import Envelope
from store.bodies._ids import validate_correlation_id
from store.bodies._model import BodyInfo, EraseReport, PurgeReport, validate_note
from store.bodies._store_core import StoreCore
from store.bodies.exceptions import AuditUnavailable, BodyIntegrityError, BodyNotFound

__all__ = ["BodyRetention"]

_CHUNK = 500  # correlation ids per body.purged / body.erased event


class BodyRetention(StoreCore):
    """Holds, purges and erasure over a body store's state (see the module docstring)."""

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


def _chunks(ids: list[str]) -> list[list[str]]:
    """Correlation ids in event-sized chunks (one empty chunk when there are none: one event)."""
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]


def _reason(why: str | None) -> dict[str, Any]:
    """The ``reason`` field of an operator's event, when one was given."""
    return {} if why is None else {"reason": why}
