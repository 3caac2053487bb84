"""The journal's on-disk format: file names, line encoding, seals, and bounded reading (private).

Every line of a segment is one record: its JSON (``orjson``, serialized once, ``seq`` included; headers and
seals with sorted keys, records in their own key order, which nothing depends on) with
``,"mac":"<64 hex>"`` spliced in before the closing brace. The MAC is taken over the line minus that field,
so a verifier cuts at the last ``,"mac":"`` and re-appends ``}``; nothing is re-canonicalised. A quote
inside a JSON string is always escaped, so that marker can only be the real field.

A seal is one line of the same form in ``NNNNNNNN.seal.json``, MAC'd under :data:`SEAL_DOMAIN` instead of a
previous MAC, so a seal can never pass for a record of the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from binascii import hexlify
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

FORMAT = 1
LOCK_NAME = "journal.lock"
KIND_OPENED = "journal.segment_opened"
KIND_SEALED = "journal.segment_sealed"
KIND_PURGED = "journal.retention_purged"
GENESIS_MAC = bytes(32)
SEAL_DOMAIN = hashlib.sha256(b"auditlog/journal/seal/v1").digest()
MAC_OPEN = b',"mac":"'
MAC_CLOSE = b'"}\n'
MAC_HEX = 64
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_SEAL_BYTES = 64 * 1024
SORT_KEYS = orjson.OPT_SORT_KEYS

_SEGMENT_RE = re.compile(r"(\d{8,})\.jsonl")
_SEAL_RE = re.compile(r"(\d{8,})\.seal\.json")
_MAC_TAIL = len(MAC_OPEN) + MAC_HEX + 2
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def segment_name(number: int) -> str:
    """Return the file name of segment ``number`` (``00000001.jsonl``)."""
    return f"{number:08d}.jsonl"


def seal_name(number: int) -> str:
    """Return the file name of the seal of segment ``number`` (``00000001.seal.json``)."""
    return f"{number:08d}.seal.json"


class MacKey:
    """HMAC-SHA256 under one key, with both padded key blocks hashed once and ``.copy()``'d per message."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self.inner = hashlib.sha256(block.translate(_IPAD))
        self.outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, prev: bytes, body: bytes) -> bytes:
        """Return ``HMAC(key, prev || body)``.

        Args:
            prev: the previous MAC of the chain (or :data:`SEAL_DOMAIN` for a seal).
            body: the signed bytes of the line.

        Returns:
            The 32-byte MAC.
        """
        h = self.inner.copy()
        h.update(prev)
        h.update(body)
        o = self.outer.copy()
        o.update(h.digest())
        return o.digest()


class KeyCache:
    """Journal MAC keys by key id, derived from a :class:`KeyRing` on first use."""

    __slots__ = ("_keys", "_macs")

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._macs: dict[str, MacKey | None] = {}

    def get(self, kid: object) -> MacKey | None:
        """Return the journal MAC key for key id ``kid``, or ``None`` when the ring does not hold it."""
        if not isinstance(kid, str):
            return None
        if kid not in self._macs:
            master = self._keys.get(kid)
            self._macs[kid] = MacKey(master.derive("journal")) if master is not None else None
        return self._macs[kid]


def encode(mk: MacKey | None, prev: bytes, obj: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Serialize ``obj`` as one journal line chained from ``prev``.

    Args:
        mk: the MAC key, or ``None`` for an unchained (plain) line.
        prev: the previous MAC.
        obj: the record, ``seq`` included.

    Returns:
        ``(line, mac)``: the line with its newline, and its MAC (``prev`` again when unchained).

    Raises:
        TypeError: ``obj`` is not JSON-serializable.
    """
    body = orjson.dumps(obj, option=SORT_KEYS)
    if mk is None:
        return body + b"\n", prev
    mac = mk.digest(prev, body)
    return b"".join((body[:-1], MAC_OPEN, hexlify(mac), MAC_CLOSE)), mac


def split_mac(line: bytes) -> tuple[bytes, bytes] | None:
    """Cut a line (without its newline) into its signed body and its stated MAC (hex, as written).

    Returns:
        ``(body, mac_hex)``, or ``None`` when the line does not end with a well-formed ``mac`` field.
    """
    i = line.rfind(MAC_OPEN)
    if i < 1 or len(line) != i + _MAC_TAIL or not line.endswith(b'"}'):
        return None
    return line[:i] + b"}", line[i + len(MAC_OPEN) : i + len(MAC_OPEN) + MAC_HEX]


def mac_matches(mk: MacKey, prev: bytes, body: bytes, mac_hex: bytes) -> bool:
    """Whether ``mac_hex`` is exactly the lowercase hex MAC of ``body`` chained from ``prev``."""
    return hmac.compare_digest(hexlify(mk.digest(prev, body)), mac_hex)


def unhex(mac_hex: bytes) -> bytes | None:
    """Decode a stated MAC, or ``None`` when it is not 64 hex digits."""
    try:
        raw = bytes.fromhex(mac_hex.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return raw if len(raw) == MAC_HEX // 2 else None


def timestamp(value: object) -> float | None:
    """``value`` as seconds since the epoch, or ``None`` when it is not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def why_unparseable(line: bytes) -> str:
    """A value-free reason why ``line`` did not parse as JSON."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "line is not valid UTF-8"
    return "line is not valid JSON"


# -- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """What a journal directory holds: segments and seals by number, and stray journal-like names."""

    segments: dict[int, Path]
    seals: dict[int, Path]
    strays: tuple[str, ...]

    @property
    def numbers(self) -> list[int]:
        """Every segment number that has a segment file or a seal, ascending."""
        return sorted(self.segments.keys() | self.seals.keys())


def list_journal(directory: Path) -> Listing:
    """List a journal directory.

    Raises:
        JournalError: the directory does not exist, is not a directory or cannot be read.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError as exc:
        raise JournalError(f"journal directory {directory} does not exist") from exc
    except NotADirectoryError as exc:
        raise JournalError(f"journal path {directory} is not a directory") from exc
    except OSError as exc:
        raise JournalError(f"journal directory {directory} cannot be read: {exc.strerror}") from exc
    segments: dict[int, Path] = {}
    seals: dict[int, Path] = {}
    strays: list[str] = []
    for name in names:
        if m := _SEGMENT_RE.fullmatch(name):
            segments[int(m.group(1))] = directory / name
        elif m := _SEAL_RE.fullmatch(name):
            seals[int(m.group(1))] = directory / name
        elif name.endswith((".jsonl", ".seal.json")):
            strays.append(name)
    return Listing(segments, seals, tuple(sorted(strays)))


def read_lines(fh: BinaryIO, end: int, sha: Any = None) -> Iterator[tuple[int, bytes | None, bool]]:
    """Read the lines of ``fh`` up to byte ``end``, never holding more than one bounded line in memory.

    Args:
        fh: a binary file positioned at 0.
        end: where the region to read stops (a seal's length, or the file size).
        sha: an optional hash object fed every byte read (the region's SHA-256).

    Yields:
        ``(offset, line, complete)``: ``line`` excludes the newline and is ``None`` when it is longer than
        :data:`MAX_LINE_BYTES`; ``complete`` is False for a last line without a newline.
    """
    pos = 0
    while pos < end:
        chunk = fh.readline(min(end - pos, MAX_LINE_BYTES + 1))
        if not chunk:
            return
        if sha is not None:
            sha.update(chunk)
        start = pos
        pos += len(chunk)
        if chunk[-1:] == b"\n":
            yield start, chunk[:-1], True
        elif len(chunk) <= MAX_LINE_BYTES:
            yield start, chunk, False
            return
        else:
            while pos < end and chunk[-1:] != b"\n":
                chunk = fh.readline(min(end - pos, 1 << 20))
                if not chunk:
                    break
                if sha is not None:
                    sha.update(chunk)
                pos += len(chunk)
            yield start, None, chunk[-1:] == b"\n"


def hash_range(path: Path, start: int, length: int) -> tuple[str, int, bool]:
    """SHA-256 of ``length`` bytes of ``path`` from ``start``.

    Returns:
        ``(hex digest, bytes hashed, whether a newline occurs before the region's last byte)``.
    """
    sha = hashlib.sha256()
    done = 0
    inner_newline = False
    with open(path, "rb") as fh:
        fh.seek(start)
        while done < length:
            chunk = fh.read(min(length - done, 1 << 20))
            if not chunk:
                break
            nl = chunk.find(b"\n")
            if nl >= 0 and done + nl < length - 1:
                inner_newline = True
            sha.update(chunk)
            done += len(chunk)
    return sha.hexdigest(), done, inner_newline


# -- seals ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """A parsed seal: what a segment held when it was closed (``length`` is the JSON ``bytes`` field)."""

    segment: str
    kid: str
    source: str
    count: int
    first_seq: int | None
    last_seq: int
    last_mac: bytes
    sha256: str
    length: int
    torn_bytes: int
    torn_sha256: str | None
    created: float
    sealed: float
    reason: str
    recovered: bool


_SEAL_INTS = ("count", "last_seq", "bytes", "torn_bytes")
_SEAL_STRS = ("segment", "kid", "source", "sha256", "reason")


def seal_line(mk: MacKey, seal: Seal) -> bytes:
    """Serialize and MAC ``seal`` as the content of its seal file."""
    fields = {
        "journal": FORMAT,
        "kind": KIND_SEALED,
        "segment": seal.segment,
        "kid": seal.kid,
        "source": seal.source,
        "count": seal.count,
        "first_seq": seal.first_seq,
        "last_seq": seal.last_seq,
        "last_mac": seal.last_mac.hex(),
        "sha256": seal.sha256,
        "bytes": seal.length,
        "torn_bytes": seal.torn_bytes,
        "torn_sha256": seal.torn_sha256,
        "created": seal.created,
        "sealed": seal.sealed,
        "reason": seal.reason,
        "recovered": seal.recovered,
    }
    return encode(mk, SEAL_DOMAIN, fields)[0]


def read_seal(path: Path, keys: KeyCache | None) -> Seal:
    """Read and check a seal file.

    Args:
        path: the seal file.
        keys: journal keys to check the seal's MAC with; ``None`` parses without checking (readers).

    Returns:
        The seal.

    Raises:
        JournalCorrupt: the seal is unreadable, malformed, under an unknown key or fails its MAC.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SEAL_BYTES + 1)
    except OSError as exc:
        raise JournalCorrupt(f"seal cannot be read: {exc.strerror}") from exc
    line = raw[:-1] if raw.endswith(b"\n") else raw
    parts = split_mac(line) if len(raw) <= MAX_SEAL_BYTES else None
    if parts is None:
        raise JournalCorrupt("seal is malformed (no MAC field)")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise JournalCorrupt(f"seal is malformed ({why_unparseable(line)})") from None
    if not isinstance(obj, dict) or obj.get("kind") != KIND_SEALED or obj.get("journal") != FORMAT:
        raise JournalCorrupt("seal is malformed (not a journal seal)")
    if keys is not None:
        mk = keys.get(obj.get("kid"))
        if mk is None:
            raise JournalCorrupt(f"seal is under unknown key id {str(obj.get('kid'))[:32]!r}")
        if not mac_matches(mk, SEAL_DOMAIN, *parts):
            raise JournalCorrupt("seal MAC mismatch (seal altered)")
    return _seal_from(obj)


def _seal_from(obj: dict[str, Any]) -> Seal:
    for k in _SEAL_INTS:
        if type(obj.get(k)) is not int or obj[k] < 0:
            raise JournalCorrupt(f"seal field {k!r} is missing or not a non-negative integer")
    for k in _SEAL_STRS:
        if type(obj.get(k)) is not str:
            raise JournalCorrupt(f"seal field {k!r} is missing or not a string")
    first, torn_sha = obj.get("first_seq"), obj.get("torn_sha256")
    created, sealed = timestamp(obj.get("created")), timestamp(obj.get("sealed"))
    last_mac = unhex(str(obj.get("last_mac", "")).encode())
    if first is not None and type(first) is not int:
        raise JournalCorrupt("seal field 'first_seq' is not an integer")
    if torn_sha is not None and type(torn_sha) is not str:
        raise JournalCorrupt("seal field 'torn_sha256' is not a string")
    if created is None or sealed is None:
        raise JournalCorrupt("seal fields 'created' and 'sealed' must be timestamps")
    if last_mac is None:
        raise JournalCorrupt("seal field 'last_mac' is not 64 hex digits")
    return Seal(
        segment=obj["segment"],
        kid=obj["kid"],
        source=obj["source"],
        count=obj["count"],
        first_seq=first,
        last_seq=obj["last_seq"],
        last_mac=last_mac,
        sha256=obj["sha256"],
        length=obj["bytes"],
        torn_bytes=obj["torn_bytes"],
        torn_sha256=torn_sha,
        created=created,
        sealed=sealed,
        reason=obj["reason"],
        recovered=obj.get("recovered") is True,
    )


# -- writing -------------------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    """Make a directory entry change (create, rename, unlink) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, *, durable: bool) -> None:
    """Write ``data`` to a new file ``path`` atomically (temp file, fsync, rename); never overwrite.

    Raises:
        OSError: the file exists (``FileExistsError``) or cannot be written.
    """
    if path.exists():
        raise FileExistsError(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
