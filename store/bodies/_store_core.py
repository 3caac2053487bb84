"""What every operation of the body store shares: its keys and wrappers, header reads and the audit journal.

:class:`StoreCore` is the base of :class:`~store.bodies.EncryptedBodyStore` (the read and write paths, in
:mod:`store.bodies._store`) and of its retention (:mod:`store.bodies._retention`): it holds the backend,
the key ring and the key wrappers, the subkeys of subject fingerprints and of hold MACs, and records every
decision through the audit sink (:meth:`StoreCore._record`, which refuses the operation when the sink
cannot take the event).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from store.bodies._backend import Backend, blob_name
from store.bodies._crypto import LOCAL_SCHEME, Envelope, KeyWrapper, LocalKeyWrapper
from store.bodies._ids import validate_correlation_id
from store.bodies._model import DEFAULT_MAX_BODY_BYTES, READ_SCOPE, BodyInfo
from store.bodies.exceptions import AuditUnavailable, BodyIntegrityError, InvalidCorrelationId
from store.keys import KeyRing

__all__ = ["AuditSink", "Ledger", "StoreCore"]

AuditSink = Callable[[dict[str, Any]], None]
Ledger = Callable[[str], str | None]


class StoreCore:
    """The state of a body store and the helpers its operations share (see the module docstring)."""

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
