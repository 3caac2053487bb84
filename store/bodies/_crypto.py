"""Envelope encryption of bodies.

Every body gets its own random 256-bit data key. The body is encrypted with AES-256-GCM under that key;
the data key is wrapped (encrypted) by a key-encryption key the store holds (:class:`LocalKeyWrapper`:
AES-256-GCM under ``master.derive("bodies")``; or AWS KMS, see :mod:`store.bodies.s3`). What is stored is
an *envelope*: a small JSON header (correlation id, metadata, the wrapped key and the key id) and the
ciphertext. Deleting the header deletes the only copy of the wrapped key, which crypto-shreds the body.

The associated data of the body encryption is the canonical JSON of ``{"v", "cid", "meta"}``, so a
ciphertext moved to another correlation id, or metadata edited in place (a later expiry, another tenant),
fails to decrypt. The wrapped key is bound to the correlation id the same way (AES-GCM associated data
locally, the encryption context on KMS). The mutable legal-hold marker lives outside the associated data.
"""

from __future__ import annotations

import binascii
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from store.bodies.exceptions import BodyIntegrityError
from store.keys import KeyRing

__all__ = [
    "FORMAT_VERSION",
    "LOCAL_SCHEME",
    "Envelope",
    "KeyWrapper",
    "LocalKeyWrapper",
    "WrappedKey",
    "envelope_from_record",
    "key_context",
    "open_envelope",
    "pack",
    "rewrap",
    "seal",
    "seal_record",
    "unpack",
]

FORMAT_VERSION = 1
LOCAL_SCHEME = "local-aesgcm"
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
_MAGIC = b"ALBODY1\n"
_LEN = struct.Struct(">I")
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    """A data key encrypted by a key-encryption key: the scheme, the id of the wrapping key, the blob."""

    scheme: str
    key_id: str
    blob: bytes = field(repr=False)


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps and unwraps per-body data keys. ``context`` binds the wrapped key to one body."""

    @property
    def scheme(self) -> str: ...

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes: ...


class LocalKeyWrapper:
    """Wraps data keys with AES-256-GCM under ``master.derive("bodies")`` of the key ring's active key.

    Unwrapping uses the master key named by the stored key id, so bodies written before a key rotation
    stay readable while the old key remains in the ring.
    """

    __slots__ = ("_keks", "_lock", "_ring")

    scheme = LOCAL_SCHEME

    def __init__(self, keys: KeyRing) -> None:
        self._ring = keys
        self._keks: dict[str, AESGCM] = {}
        self._lock = threading.Lock()

    def _kek(self, key_id: str) -> AESGCM:
        kek = self._keks.get(key_id)
        if kek is None:
            master = self._ring.get(key_id)
            if master is None:
                raise BodyIntegrityError(
                    f"the data key was wrapped with key id {key_id!r}, which is not in the key ring",
                    part="wrapped_key",
                )
            kek = AESGCM(master.derive("bodies"))
            with self._lock:
                self._keks[key_id] = kek
        return kek

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        key_id = self._ring.active.key_id
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._kek(key_id).encrypt(nonce, data_key, _canonical(dict(context)))
        return WrappedKey(scheme=self.scheme, key_id=key_id, blob=blob)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        kek = self._kek(wrapped.key_id)
        nonce, ct = wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:]
        try:
            return kek.decrypt(nonce, ct, _canonical(dict(context)))
        except (InvalidTag, ValueError) as exc:
            raise BodyIntegrityError("the wrapped data key fails to verify", part="wrapped_key") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One encrypted body: the header fields and the ciphertext. Holds no plaintext."""

    correlation_id: str
    meta: Mapping[str, Any]
    nonce: bytes
    key: WrappedKey
    ciphertext: bytes = field(repr=False)
    hold: Mapping[str, Any] | None = None

    def header_bytes(self) -> bytes:
        """The JSON header as stored (wrapped key included, ciphertext excluded)."""
        return orjson.dumps(
            {
                "v": FORMAT_VERSION,
                "cid": self.correlation_id,
                "meta": self.meta,
                "nonce": _b64(self.nonce),
                "key": {"scheme": self.key.scheme, "kid": self.key.key_id, "blob": _b64(self.key.blob)},
                "hold": self.hold,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_parts(cls, header: bytes, ciphertext: bytes, *, correlation_id: str) -> Envelope:
        """Parse a stored header and join it with its ciphertext.

        Raises:
            BodyIntegrityError: the header does not parse, or names another correlation id.
        """
        try:
            h = orjson.loads(header)
            if type(h) is not dict or h.get("v") != FORMAT_VERSION:
                raise ValueError("version")
            k, meta, hold = h["key"], h["meta"], h.get("hold")
            scheme, kid = k["scheme"], k["kid"]
            if type(meta) is not dict or (hold is not None and type(hold) is not dict):
                raise TypeError("expected an object")
            if type(scheme) is not str or type(kid) is not str or type(h["cid"]) is not str:
                raise TypeError("expected a string")
            env = cls(
                correlation_id=h["cid"],
                meta=meta,
                nonce=_unb64(h["nonce"]),
                key=WrappedKey(scheme=scheme, key_id=kid, blob=_unb64(k["blob"])),
                ciphertext=ciphertext,
                hold=hold,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BodyIntegrityError(
                f"the header of body {correlation_id!r} does not parse", part="header"
            ) from exc
        if env.correlation_id != correlation_id:
            raise BodyIntegrityError(
                f"the header stored for body {correlation_id!r} belongs to another body", part="header"
            )
        return env

    def to_bytes(self) -> bytes:
        """One self-contained blob (header and ciphertext), as the spool and the local store write it."""
        return pack(self.header_bytes(), self.ciphertext)

    @classmethod
    def from_bytes(cls, blob: bytes, *, correlation_id: str) -> Envelope:
        """Inverse of :meth:`to_bytes`.

        Raises:
            BodyIntegrityError: truncated, or not an envelope.
        """
        header, ciphertext = unpack(blob, correlation_id=correlation_id)
        return cls.from_parts(header, ciphertext, correlation_id=correlation_id)


PACK_PREFIX = len(_MAGIC) + _LEN.size


def pack(header: bytes, ciphertext: bytes) -> bytes:
    """Frame a header and its ciphertext as one blob: magic, header length, header, ciphertext."""
    return b"".join((_MAGIC, _LEN.pack(len(header)), header, ciphertext))


def header_length(prefix: bytes, *, correlation_id: str) -> int:
    """The header length announced by the first :data:`PACK_PREFIX` bytes of a packed envelope."""
    if len(prefix) < PACK_PREFIX or not prefix.startswith(_MAGIC):
        raise BodyIntegrityError(f"stored body {correlation_id!r} is not an envelope", part="header")
    (n,) = _LEN.unpack_from(prefix, len(_MAGIC))
    if n > _MAX_HEADER:
        raise BodyIntegrityError(
            f"stored body {correlation_id!r} announces an oversized header", part="header"
        )
    return int(n)


def unpack(blob: bytes, *, correlation_id: str) -> tuple[bytes, bytes]:
    """Inverse of :func:`pack`: ``(header, ciphertext)``.

    Raises:
        BodyIntegrityError: truncated, or not an envelope.
    """
    n = header_length(blob[:PACK_PREFIX], correlation_id=correlation_id)
    if len(blob) < PACK_PREFIX + n:
        raise BodyIntegrityError(f"stored body {correlation_id!r} is truncated", part="header")
    return blob[PACK_PREFIX : PACK_PREFIX + n], blob[PACK_PREFIX + n :]


def key_context(correlation_id: str) -> dict[str, str]:
    """The context a data key is wrapped under (KMS encryption context / AES-GCM associated data)."""
    return {"auditlog": "body-key/v1", "cid": correlation_id}


def _aad(correlation_id: str, meta: Mapping[str, Any]) -> bytes:
    return _canonical({"v": FORMAT_VERSION, "cid": correlation_id, "meta": meta})


def seal(correlation_id: str, body: bytes, *, meta: Mapping[str, Any], wrapper: KeyWrapper) -> Envelope:
    """Encrypt ``body`` under a fresh data key wrapped by ``wrapper``; ``meta`` is bound as associated data.

    ``meta`` must be JSON-ready (str keys; str, int, float, bool or None values).
    """
    data_key, wrapped = _data_key(correlation_id, wrapper)
    nonce = os.urandom(NONCE_BYTES)
    meta = dict(meta)
    ciphertext = AESGCM(data_key).encrypt(nonce, body, _aad(correlation_id, meta))
    return Envelope(correlation_id=correlation_id, meta=meta, nonce=nonce, key=wrapped, ciphertext=ciphertext)


def _data_key(correlation_id: str, wrapper: KeyWrapper) -> tuple[bytes, WrappedKey]:
    """A fresh data key and its wrapped form (derived in one step when the wrapper can: sessions)."""
    derive = getattr(wrapper, "new_data_key", None)
    if derive is not None:
        pair: tuple[bytes, WrappedKey] = derive(context=key_context(correlation_id))
        return pair
    data_key = os.urandom(DATA_KEY_BYTES)
    return data_key, wrapper.wrap(data_key, context=key_context(correlation_id))


_RECORD = struct.Struct(">HIHHH")


def seal_record(correlation_id: str, body: bytes, *, meta: Mapping[str, Any], wrapper: KeyWrapper) -> bytes:
    """:func:`seal`, to a compact binary record: what the request path appends to the outbox.

    ``u16 len cid | u32 len aad | u16 len scheme | u16 len key id | u16 len wrapped | cid | aad | scheme |
    key id | wrapped | nonce | ciphertext``, where ``aad`` is the associated data (canonical JSON of
    ``{"v", "cid", "meta"}``). :func:`envelope_from_record` turns it into an :class:`Envelope` later.
    """
    data_key, wrapped = _data_key(correlation_id, wrapper)
    nonce = os.urandom(NONCE_BYTES)
    aad = _aad(correlation_id, meta)
    ciphertext = AESGCM(data_key).encrypt(nonce, body, aad)
    cid = correlation_id.encode("ascii")
    scheme = wrapped.scheme.encode("ascii")
    kid = wrapped.key_id.encode("utf-8")
    head = _RECORD.pack(len(cid), len(aad), len(scheme), len(kid), len(wrapped.blob))
    return b"".join((head, cid, aad, scheme, kid, wrapped.blob, nonce, ciphertext))


def envelope_from_record(record: bytes) -> Envelope:
    """Inverse of :func:`seal_record`.

    Raises:
        BodyIntegrityError: truncated or malformed.
    """
    try:
        n_cid, n_aad, n_scheme, n_kid, n_blob = _RECORD.unpack_from(record)
        pos = _RECORD.size
        fields = []
        for n in (n_cid, n_aad, n_scheme, n_kid, n_blob, NONCE_BYTES):
            fields.append(record[pos : pos + n])
            if len(fields[-1]) != n:
                raise ValueError("truncated")
            pos += n
        cid_b, aad, scheme, kid, blob, nonce = fields
        cid = cid_b.decode("ascii")
        parsed = orjson.loads(aad)
        if type(parsed) is not dict or parsed.get("cid") != cid or type(parsed.get("meta")) is not dict:
            raise ValueError("associated data")
        key = WrappedKey(scheme=scheme.decode("ascii"), key_id=kid.decode("utf-8"), blob=bytes(blob))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise BodyIntegrityError("an outbox record does not parse", part="header") from exc
    return Envelope(
        correlation_id=cid, meta=parsed["meta"], nonce=bytes(nonce), key=key, ciphertext=record[pos:]
    )


def open_envelope(
    env: Envelope, *, wrappers: Mapping[str, KeyWrapper], ciphertext: bytes | None = None
) -> bytes:
    """Unwrap the data key and decrypt the body (``ciphertext``, else the envelope's own).

    Raises:
        BodyIntegrityError: the wrapped key or the ciphertext fails to verify, or its scheme is unknown.
    """
    data_key = _unwrap(env, wrappers)
    ct = env.ciphertext if ciphertext is None else ciphertext
    try:
        return AESGCM(data_key).decrypt(env.nonce, ct, _aad(env.correlation_id, env.meta))
    except (InvalidTag, ValueError) as exc:
        raise BodyIntegrityError(
            f"body {env.correlation_id!r} fails to verify (ciphertext or metadata altered)", part="ciphertext"
        ) from exc


def rewrap(env: Envelope, *, wrappers: Mapping[str, KeyWrapper], to: KeyWrapper) -> Envelope:
    """Re-wrap the data key under ``to`` (e.g. local spool wrapping to KMS); the ciphertext is unchanged."""
    if env.key.scheme == to.scheme:
        return env
    data_key = _unwrap(env, wrappers)
    return replace(env, key=to.wrap(data_key, context=key_context(env.correlation_id)))


def _unwrap(env: Envelope, wrappers: Mapping[str, KeyWrapper]) -> bytes:
    wrapper = wrappers.get(env.key.scheme)
    if wrapper is None:
        raise BodyIntegrityError(
            f"body {env.correlation_id!r} names key scheme {env.key.scheme!r}, which this store lacks",
            part="wrapped_key",
        )
    data_key = wrapper.unwrap(env.key, context=key_context(env.correlation_id))
    if len(data_key) != DATA_KEY_BYTES:
        raise BodyIntegrityError(
            f"body {env.correlation_id!r}: unwrapped key has the wrong size", part="wrapped_key"
        )
    return data_key


def _canonical(obj: object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _b64(b: bytes) -> str:
    return binascii.b2a_base64(b, newline=False).decode("ascii")


def _unb64(v: object) -> bytes:
    if type(v) is not str:
        raise TypeError("expected base64 text")
    return binascii.a2b_base64(v, strict_mode=True)
