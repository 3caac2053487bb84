"""Master keys, key ids and per-purpose subkeys.

One 32-byte master key (``AUDITLOG_KEY``, base64, or ``AUDITLOG_KEY_FILE``) is the root of every secret
this project uses. Each consumer derives its own subkey with HKDF-SHA256, so the journal's chain key, the
fingerprint key and the body-wrapping key are independent even though one secret is managed.

A key id is a short digest that names a master key without revealing it. Journals and seals record it, so
segments written under an older key still verify after rotation: a key file may hold several keys, one per
line, the first being the active one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store.exceptions import KeyError_

__all__ = ["KEY_BYTES", "KeyRing", "MasterKey", "generate_key_file", "key_from_env", "rotate_key_file"]

KEY_BYTES = 32
ENV_KEY = "AUDITLOG_KEY"
ENV_KEY_FILE = "AUDITLOG_KEY_FILE"


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 32-byte master key. ``repr`` never shows the secret."""

    secret: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            raise KeyError_(f"a master key must be exactly {KEY_BYTES} bytes")
        kid = hashlib.blake2b(self.secret, digest_size=6, person=b"auditlog-kid").hexdigest()
        object.__setattr__(self, "key_id", kid)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_b64(cls, text: str, *, where: str = "key") -> MasterKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyError_(f"{where}: not valid base64") from exc
        if len(raw) != KEY_BYTES:
            raise KeyError_(f"{where}: decodes to {len(raw)} bytes, expected {KEY_BYTES}")
        return cls(raw)

    def to_b64(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    def derive(self, purpose: str) -> bytes:
        """Return a 32-byte subkey for ``purpose`` (e.g. ``"journal"``, ``"fingerprint"``, ``"bodies"``)."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"auditlog/v1/" + purpose.encode())
        return hkdf.derive(self.secret)

    def signing_key(self) -> Ed25519PrivateKey:
        """Return the Ed25519 key that signs evidence packs and trail checkpoints.

        Derived as ``Ed25519PrivateKey.from_private_bytes(self.derive("evidence"))``; its public half can be
        published so anyone can check a signature without the master key.

        Returns:
            The private signing key.
        """
        return Ed25519PrivateKey.from_private_bytes(self.derive("evidence"))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The active master key plus older ones kept to verify and decrypt what they wrote."""

    active: MasterKey
    older: tuple[MasterKey, ...] = ()

    @classmethod
    def of(cls, keys: Iterable[MasterKey]) -> KeyRing:
        ks = list(keys)
        if not ks:
            raise KeyError_("a key ring needs at least one key")
        return cls(ks[0], tuple(ks[1:]))

    def by_id(self) -> Mapping[str, MasterKey]:
        return {k.key_id: k for k in (self.active, *self.older)}

    def get(self, key_id: str) -> MasterKey | None:
        return self.by_id().get(key_id)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        p = Path(path)
        try:
            text = p.read_text("ascii")
        except FileNotFoundError as exc:
            raise KeyError_(f"key file {p} does not exist (create one with `auditlog keygen`)") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyError_(f"key file {p} cannot be read: {type(exc).__name__}") from exc
        keys = [
            MasterKey.from_b64(line, where=f"{p}:{n}")
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not keys:
            raise KeyError_(f"key file {p} holds no key")
        return cls.of(keys)


def key_from_env(environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """Read ``AUDITLOG_KEY`` (base64) or ``AUDITLOG_KEY_FILE``; ``None`` when neither is set."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY):
        return KeyRing(MasterKey.from_b64(env[ENV_KEY], where=ENV_KEY))
    if env.get(ENV_KEY_FILE):
        return KeyRing.from_file(env[ENV_KEY_FILE])
    return None


def generate_key_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> MasterKey:
    """Write a new key to ``path`` with mode 0600 and return it.

    With ``overwrite=False`` an existing file is an error. To rotate, prepend a new key to the file yourself
    (``auditlog keygen --rotate`` does this): the old lines stay to verify old segments.
    """
    p = Path(path)
    key = MasterKey.generate()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError as exc:
        raise KeyError_(f"{p} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.to_b64() + "\n")
    os.chmod(p, 0o600)
    return key


def rotate_key_file(path: str | os.PathLike[str]) -> MasterKey:
    """Prepend a new active key to an existing key file, keeping the older keys below it."""
    p = Path(path)
    old = p.read_text("ascii")
    key = MasterKey.generate()
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.to_b64() + "\n" + old)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return key
