"""The outbox's pack files: how records are framed and read back, and which packs a dead writer left.

Each record is ``b"ALPK" | u32 length | sealed record`` (:func:`store.bodies._crypto.seal_record`: the
ciphertext, wrapped key and associated data; the JSON header is built by the shipper); a torn tail (shorter
than announced, or no magic) ends the pack's readable records. No checksum: the envelope is AEAD-sealed,
so a corrupted record fails to verify on delivery and resolves as ``body.lost`` (``unreadable``).

A pack is ``<pid>-<ns>-<rand>.open`` while its writer appends to it (holding an exclusive ``flock``), and
``.pack`` once sealed for the shipper; an ``.open`` pack whose lock is free was left by a dead process.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from store.bodies._crypto import envelope_from_record
from store.bodies._ids import validate_correlation_id

__all__ = ["OPEN", "SEALED", "cid_of", "frame", "orphaned", "read_pack"]

_MAGIC = b"ALPK"
_REC = struct.Struct(">4sI")
OPEN = ".open"
SEALED = ".pack"


def frame(payload: bytes) -> bytes:
    """One record of a pack: the magic, the payload's length, the payload."""
    return _REC.pack(_MAGIC, len(payload)) + payload


def read_pack(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, envelope bytes)`` for every intact record of a pack; stops at a torn tail."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + _REC.size <= len(data):
        magic, n = _REC.unpack_from(data, pos)
        start = pos + _REC.size
        payload = data[start : start + n]
        if magic != _MAGIC or len(payload) != n:
            return
        yield pos, payload
        pos = start + n


def cid_of(payload: bytes) -> str:
    """The correlation id a pack record was sealed for (validated)."""
    return validate_correlation_id(envelope_from_record(payload).correlation_id)


def orphaned(path: str) -> bool:
    """True when no live process holds the pack's lock (its writer died)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
