"""Write-only sealing: data keys wrapped for a *reader* key the app server never holds.

An app server seals bodies with :class:`SessionKeyWrapper`. It holds a short-lived *session key* (a
256-bit AES-GCM key-encryption key) and wraps each body's own data key under it, bound to the body's
correlation id. The session key itself is only ever stored wrapped for the reader:

- :class:`ReaderKeySessions` (scheme ``x25519-session``): ephemeral-static X25519. A session is a fresh
  ephemeral key pair; the session key is ``HKDF-SHA256(ECDH(ephemeral, reader public), info=...)`` and
  the ephemeral *public* key is stored with every body. Only the reader's private key recomputes it.
- :class:`~store.bodies.s3.KmsSessions` (scheme ``kms-session``): AWS KMS ``GenerateDataKey`` (in the
  background, never on the request path); the KMS ciphertext of the session key is stored with every
  body, and reading calls KMS ``Decrypt``, so IAM gates every read and CloudTrail logs it.

Each body's data key is derived: keyed BLAKE2b (key: the session key, salt: 16 fresh random bytes,
personalisation ``auditlog-bkey-v1``) over the canonical context, and the wrapped key stored with the
body is ``u16 len | descriptor (ephemeral public key or KMS blob) | salt``: one PRF call per body instead
of a second AEAD, bound to the correlation id by the context. Deleting the header deletes the only copy
of the salt (crypto-shredding). Data keys made elsewhere (re-wrapping) are stored as ``u16 len |
descriptor | nonce | AES-GCM(session key, data key)``.
Sessions rotate (``rotate_after`` seconds) and the
old session key is forgotten, so a compromised app server can read back at most the bodies sealed in its
current session window, which it was serving in plaintext anyway; everything older needs the reader key.
Unwrapping needs a :class:`ReaderKey` (or KMS ``Decrypt``); without one, :meth:`SessionKeyWrapper.unwrap`
raises :class:`~store.bodies.AccessDenied`.

Key files: :func:`generate_reader_key` writes the private key (PEM, 0600) and returns the public key in the
form app configuration takes (``x25519:<base64>``, see :func:`load_public_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store.bodies._crypto import WrappedKey
from store.bodies.exceptions import AccessDenied, BodyIntegrityError, BodyStoreUnavailable

__all__ = [
    "KMS_SESSION_SCHEME",
    "X25519_SCHEME",
    "ReaderKey",
    "ReaderKeySessions",
    "Session",
    "SessionKeyWrapper",
    "SessionSource",
    "generate_reader_key",
    "load_public_key",
]

X25519_SCHEME = "x25519-session"
KMS_SESSION_SCHEME = "kms-session"
_INFO = b"auditlog/body-session/v1"
_KMS_CONTEXT = {"auditlog": "body-session/v1"}
_LEN = struct.Struct(">H")
_NONCE = 12
_SALT = 16
_DATA_KEY_PERSON = b"auditlog-bkey-v1"
_PUB_PREFIX = "x25519:"


@dataclass(frozen=True, slots=True)
class Session:
    """One session key: its secret, the descriptor stored with each body, the key id, its birth."""

    secret: bytes
    descriptor: bytes
    key_id: str
    born: float


class SessionSource(Protocol):
    """Makes session keys (sealing side) and recovers them from a descriptor (reading side)."""

    @property
    def scheme(self) -> str: ...

    @property
    def local(self) -> bool:
        """True when :meth:`new_session` makes no network call (it may then run on the request path)."""
        ...

    def new_session(self) -> Session: ...

    def open_session(self, descriptor: bytes, key_id: str) -> bytes: ...


def _key_id(public: bytes) -> str:
    return "x25519:" + hashlib.sha256(public).hexdigest()[:16]


def _derive(shared: bytes, eph_pub: bytes, reader_pub: bytes) -> bytes:
    info = _INFO + eph_pub + reader_pub
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def load_public_key(value: str | bytes | X25519PublicKey) -> X25519PublicKey:
    """A reader public key from ``x25519:<base64 raw key>`` (what ``keygen --reader`` prints) or raw bytes.

    Raises:
        ValueError: not an X25519 public key.
    """
    if isinstance(value, X25519PublicKey):
        return value
    raw: bytes
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith(_PUB_PREFIX):
            raise ValueError("reader public key: expected 'x25519:<base64>' (see `auditlog bodies keygen`)")
        try:
            raw = base64.b64decode(text[len(_PUB_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("reader public key: not valid base64") from None
    else:
        raw = bytes(value)
    if len(raw) != 32:
        raise ValueError("reader public key: expected 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def _public_text(key: X25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _PUB_PREFIX + base64.b64encode(raw).decode("ascii")


class ReaderKey:
    """The reader's private key: what ``auditlog bodies get --reader-key`` loads. Never on an app server."""

    __slots__ = ("_cache", "_lock", "_private", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._cache: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReaderKey:
        """Load a PEM private key written by :func:`generate_reader_key`.

        Raises:
            ValueError: the file is not an X25519 private key.
        """
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise ValueError("reader key file: expected an X25519 private key")
        return cls(key)

    @property
    def public_text(self) -> str:
        return _public_text(self._private.public_key())

    @property
    def key_id(self) -> str:
        return _key_id(self.public_bytes)

    def session(self, eph_pub: bytes) -> bytes:
        """The session key of the session whose ephemeral public key is ``eph_pub`` (cached)."""
        aead = self._cache.get(eph_pub)
        if aead is None:
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
            except ValueError as exc:
                raise BodyIntegrityError(
                    "the session descriptor fails to verify", part="wrapped_key"
                ) from exc
            aead = _derive(shared, eph_pub, self.public_bytes)
            with self._lock:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[eph_pub] = aead
        return aead


def generate_reader_key(path: str | os.PathLike[str]) -> str:
    """Write a new reader private key to ``path`` (PEM, 0600, refuses to overwrite); return its public key
    as ``x25519:<base64>``, the only part app servers are configured with.

    Raises:
        FileExistsError: ``path`` exists.
    """
    private = X25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return _public_text(private.public_key())


class ReaderKeySessions:
    """Sessions for an X25519 reader public key (sealing), opened with the :class:`ReaderKey` (reading)."""

    __slots__ = ("_public", "_raw", "reader")

    scheme = X25519_SCHEME
    local = True

    def __init__(self, public: str | bytes | X25519PublicKey, *, reader: ReaderKey | None = None) -> None:
        self._public = load_public_key(public)
        self._raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if reader is not None and reader.public_bytes != self._raw:
            raise ValueError("reader key: the private key does not match the configured public key")
        self.reader = reader

    def new_session(self) -> Session:
        eph = X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        secret = _derive(eph.exchange(self._public), eph_pub, self._raw)
        return Session(secret=secret, descriptor=eph_pub, key_id=_key_id(self._raw), born=time.monotonic())

    def open_session(self, descriptor: bytes, key_id: str) -> bytes:
        if self.reader is None:
            raise AccessDenied(
                "this process holds no reader key: bodies sealed for a reader cannot be read here"
            )
        if key_id != self.reader.key_id:
            raise AccessDenied(f"the body was sealed for reader key {key_id!r}, not the one loaded")
        return self.reader.session(descriptor)


class SessionKeyWrapper:
    """A :class:`~store.bodies.KeyWrapper` that wraps data keys under the current session key.

    Args:
        source: where session keys come from.
        rotate_after: seconds a session key is used for new bodies.
        max_age: seconds a session key may still be used when a new one cannot be made (KMS unreachable);
            past it, :meth:`wrap` raises :class:`BodyStoreUnavailable`.
    """

    __slots__ = ("_lock", "_session", "max_age", "rotate_after", "source")

    def __init__(
        self, source: SessionSource, *, rotate_after: float = 300.0, max_age: float = 3600.0
    ) -> None:
        if not 0 < rotate_after <= max_age:
            raise ValueError("expected 0 < rotate_after <= max_age")
        self.source = source
        self.rotate_after = rotate_after
        self.max_age = max_age
        self._session: Session | None = None
        self._lock = threading.Lock()

    @property
    def scheme(self) -> str:
        return self.source.scheme

    def refresh(self, *, force: bool = False) -> bool:
        """Make a new session key when the current one is due (call off the request path for KMS).

        Returns True when a session key is available. Never raises.
        """
        s = self._session
        if not force and s is not None and time.monotonic() - s.born < self.rotate_after:
            return True
        try:
            new = self.source.new_session()
        except Exception:
            return s is not None and time.monotonic() - s.born < self.max_age
        with self._lock:
            self._session = new  # the old session key is forgotten here
        return True

    def _current(self) -> Session:
        s = self._session
        now = time.monotonic()
        if s is not None and now - s.born < self.rotate_after:
            return s
        if self.source.local:
            self.refresh()
        s = self._session
        if s is None or now - s.born >= self.max_age:
            raise BodyStoreUnavailable("no session key yet (the key service is unreachable)")
        return s

    def new_data_key(self, *, context: Mapping[str, str]) -> tuple[bytes, WrappedKey]:
        """A fresh data key *derived* from the session key and a random salt, and its wrapped form (the
        descriptor and the salt): one keyed BLAKE2b instead of an AEAD per body. Deleting the header
        deletes the only copy of the salt, which shreds the body as deleting a wrapped key would."""
        s = self._current()
        salt = os.urandom(_SALT)
        key = _derive_data_key(s.secret, salt, context)
        blob = b"".join((_LEN.pack(len(s.descriptor)), s.descriptor, salt))
        return key, WrappedKey(scheme=self.scheme, key_id=s.key_id, blob=blob)

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        """Wrap a given data key (re-wrapping another scheme's body): AES-GCM under the session key."""
        s = self._current()
        nonce = os.urandom(_NONCE)
        ct = AESGCM(s.secret).encrypt(nonce, data_key, _canonical(context))
        blob = b"".join((_LEN.pack(len(s.descriptor)), s.descriptor, nonce, ct))
        return WrappedKey(scheme=self.scheme, key_id=s.key_id, blob=blob)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        blob = wrapped.blob
        if len(blob) < _LEN.size:
            raise BodyIntegrityError("the wrapped data key is truncated", part="wrapped_key")
        (n,) = _LEN.unpack_from(blob)
        end = _LEN.size + n
        descriptor, rest = blob[_LEN.size : end], blob[end:]
        if len(descriptor) != n or len(rest) not in (_SALT, _NONCE + 48):
            raise BodyIntegrityError("the wrapped data key is truncated", part="wrapped_key")
        secret = self.source.open_session(descriptor, wrapped.key_id)
        if len(rest) == _SALT:  # a derived key: the AEAD over the body is what verifies it
            return _derive_data_key(secret, rest, context)
        try:
            return AESGCM(secret).decrypt(rest[:_NONCE], rest[_NONCE:], _canonical(context))
        except (InvalidTag, ValueError) as exc:
            raise BodyIntegrityError("the wrapped data key fails to verify", part="wrapped_key") from exc


def _derive_data_key(secret: bytes, salt: bytes, context: Mapping[str, str]) -> bytes:
    """Keyed BLAKE2b (a PRF; CPython's own, no OpenSSL digest lookup per body) over salt and context."""
    return hashlib.blake2b(
        _canonical(context), digest_size=32, key=secret, salt=salt, person=_DATA_KEY_PERSON
    ).digest()


def _canonical(obj: Mapping[str, str]) -> bytes:
    return orjson.dumps(dict(obj), option=orjson.OPT_SORT_KEYS)
