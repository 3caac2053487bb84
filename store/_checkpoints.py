"""The trail's own files: ``trail.json`` (identity) and ``checkpoints.jsonl`` (signed heads) (private).

``trail.json`` is one line, MAC'd like a seal but under :data:`TRAIL_DOMAIN`: ``{"trail": 1, "kind":
"trail.created", "trail_id": <32 hex>, "kid", "created", "mac"}``. It is created once, by the first writer
(a hard link of a finished temporary file, so concurrent first writers agree on one id), and never changes.

``checkpoints.jsonl`` is append-only. Each line is the sorted-key JSON of ``{trail, kind:
"trail.checkpoint", n, prev, trail_id, stream, source, instance, state, last_seq, last_mac, segment,
recovered, ts, kid, pub}`` with ``,"sig":"<128 hex>"`` spliced in before the closing brace: ``n`` counts
lines from 1, ``prev`` is the SHA-256 of the previous line's bytes (newline included; 64 zeros for the
first), ``sig`` the Ed25519 signature of the line without its ``sig`` field under
:meth:`store.keys.MasterKey.signing_key` of the key ``kid``, whose public key's SHA-256 starts with
``pub`` (16 hex). A writer appends with one ``write`` under an exclusive ``flock`` of the log itself,
held only while it reads the last line and appends the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store._segments import SORT_KEYS, KeyCache, MacKey, encode, fsync_dir, mac_matches, split_mac
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing, MasterKey

TRAIL_FORMAT = 1
TRAIL_NAME = "trail.json"
CHECKPOINTS_NAME = "checkpoints.jsonl"
STREAMS_DIR = "streams"
KIND_TRAIL = "trail.created"
KIND_CHECKPOINT = "trail.checkpoint"
TRAIL_DOMAIN = hashlib.sha256(b"auditlog/trail/v1").digest()
STATES = ("opened", "head", "sealed")
ZERO_HASH = "0" * 64
_SIG_OPEN = b',"sig":"'
_SIG_HEX = 128
_MAX_TAIL = 64 * 1024
_MAX_TRAIL_BYTES = 4096


def public_digest(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The short digest (16 hex) of an Ed25519 public key, as checkpoint lines record it in ``pub``."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


# -- trail.json ----------------------------------------------------------------------------------------


def ensure_trail(directory: Path, keys: KeyRing, *, created: float, durable: bool) -> str:
    """Create ``trail.json`` unless it exists; return the trail id.

    Raises:
        JournalError: the file cannot be written.
        JournalCorrupt: an existing ``trail.json`` is malformed, under an unknown key or fails its MAC.
    """
    path = directory / TRAIL_NAME
    if not path.exists():
        trail_id = secrets.token_hex(16)
        fields = {"trail": TRAIL_FORMAT, "kind": KIND_TRAIL, "trail_id": trail_id}
        fields |= {"kid": keys.active.key_id, "created": created}
        line = encode(MacKey(keys.active.derive("journal")), TRAIL_DOMAIN, fields)[0]
        tmp = directory / f".{TRAIL_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, line)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # never replaces: the first writer's id wins
            if durable:
                fsync_dir(directory)
        except OSError as exc:
            raise JournalError(f"cannot create {path}: {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return read_trail_id(directory, KeyCache(keys))


def read_trail_id(directory: Path, keys: KeyCache) -> str:
    """Read and check ``trail.json``.

    Raises:
        JournalCorrupt: it is missing, unreadable, malformed, under an unknown key or fails its MAC.
    """
    path = directory / TRAIL_NAME
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_TRAIL_BYTES + 1)
    except OSError as exc:
        raise JournalCorrupt(f"{TRAIL_NAME} cannot be read: {exc.strerror}") from exc
    line = raw.rstrip(b"\n")
    parts = split_mac(line) if len(raw) <= _MAX_TRAIL_BYTES else None
    try:
        obj = orjson.loads(line) if parts is not None else None
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or obj.get("kind") != KIND_TRAIL or obj.get("trail") != TRAIL_FORMAT:
        raise JournalCorrupt(f"{TRAIL_NAME} is malformed")
    trail_id, mk = obj.get("trail_id"), keys.get(obj.get("kid"))
    if mk is None or parts is None:
        raise JournalCorrupt(f"{TRAIL_NAME} is under a key id the key ring does not hold")
    if not mac_matches(mk, TRAIL_DOMAIN, *parts) or not isinstance(trail_id, str):
        raise JournalCorrupt(f"{TRAIL_NAME} MAC mismatch (altered)")
    return trail_id


# -- writing checkpoints -------------------------------------------------------------------------------


def append_checkpoint(
    directory: Path, signer: tuple[str, Ed25519PrivateKey, str], fields: Mapping[str, Any], *, durable: bool
) -> int:
    """Append one signed checkpoint line to the trail's log, under a brief flock of the log.

    Args:
        directory: the trail directory.
        signer: ``(key id, signing key, public key digest)``.
        fields: the line's content (``trail_id``, ``stream``, ``state``, ``last_seq``, ...).
        durable: whether to fsync the log.

    Returns:
        The line's ``n``.

    Raises:
        JournalError: the log cannot be opened, locked, read or written.
        JournalCorrupt: the log's last line is not a checkpoint (run verify_trail).
    """
    kid, key, pub = signer
    path = directory / CHECKPOINTS_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise JournalError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close below (this process's own descriptor)
        n, prev, torn = _last_line(fd)
        obj = {**fields, "trail": TRAIL_FORMAT, "kind": KIND_CHECKPOINT, "n": n + 1, "prev": prev}
        obj |= {"kid": kid, "pub": pub}
        body = orjson.dumps(obj, option=SORT_KEYS)
        line = b"".join((body[:-1], _SIG_OPEN, key.sign(body).hex().encode(), b'"}\n'))
        data = b"\n" + line if torn else line
        if os.write(fd, data) != len(data):
            raise OSError(28, "short write")
        if durable:
            os.fsync(fd)
    except OSError as exc:
        raise JournalError(f"cannot append to {path}") from exc
    finally:
        os.close(fd)
    return n + 1


def _last_line(fd: int) -> tuple[int, str, bool]:
    """``(n, sha256 hex, torn)`` of the log's last complete line (``torn``: bytes follow it, no newline)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, ZERO_HASH, False
    tail = os.pread(fd, min(size, _MAX_TAIL), max(0, size - _MAX_TAIL))
    torn = not tail.endswith(b"\n")
    end = tail.rfind(b"\n") + 1
    if end == 0:
        if size <= _MAX_TAIL:
            return 0, ZERO_HASH, True  # only a torn first line
        raise JournalCorrupt("the checkpoint log ends in an over-long line; run verify_trail")
    start = tail.rfind(b"\n", 0, end - 1) + 1
    if start == 0 and size > _MAX_TAIL:
        raise JournalCorrupt("the checkpoint log ends in an over-long line; run verify_trail")
    line = tail[start:end]
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or type(obj.get("n")) is not int:
        raise JournalCorrupt("the checkpoint log's last line is not a checkpoint; run verify_trail")
    return obj["n"], hashlib.sha256(line).hexdigest(), torn


# -- reading checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """One valid checkpoint line."""

    n: int
    line: int
    trail_id: str
    stream: str
    state: str
    last_seq: int
    last_mac: str
    segment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointLog:
    """A parsed checkpoint log: its raw lines, the valid checkpoints, and what is wrong (line, reason)."""

    lines: tuple[bytes, ...]
    checkpoints: tuple[Checkpoint, ...]
    problems: tuple[tuple[int | None, str], ...]
    warnings: tuple[tuple[int | None, str], ...]

    @property
    def trail_ids(self) -> set[str]:
        return {c.trail_id for c in self.checkpoints}


def read_checkpoints(data: bytes, keys: KeyRing, *, trail_id: str | None) -> CheckpointLog:
    """Check a checkpoint log's bytes: chain, numbering, signatures, fields and trail id.

    Args:
        data: the log's content.
        keys: the key ring (each line's ``kid`` must be in it).
        trail_id: the trail id every line must carry, or ``None`` to accept the first line's.

    Returns:
        The parsed log; corrupt content becomes problems, never an exception.
    """
    raw = data.split(b"\n")
    tail = raw.pop()  # b"" when the log ends with a newline
    lines = tuple(line + b"\n" for line in raw)
    problems: list[tuple[int | None, str]] = []
    warnings: list[tuple[int | None, str]] = []
    good: list[Checkpoint] = []
    verifiers: dict[str, tuple[Ed25519PublicKey, str] | None] = {}
    prev: str | None = ZERO_HASH
    expected_n = 1
    for no, line in enumerate(lines, 1):
        body, sig = _split_sig(line[:-1])
        try:
            obj = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            obj = None
        if (
            not isinstance(obj, dict)
            or obj.get("kind") != KIND_CHECKPOINT
            or obj.get("trail") != TRAIL_FORMAT
        ):
            problems.append((no, "line is not a signed checkpoint"))
            continue
        kid = obj.get("kid")
        if isinstance(kid, str) and kid not in verifiers:
            master = keys.get(kid)
            verifiers[kid] = _verifier(master) if master is not None else None
        verifier = verifiers.get(kid) if isinstance(kid, str) else None
        reason = None
        if verifier is None:
            reason = "signed under a key id the key ring does not hold"
        elif obj.get("pub") != verifier[1]:
            reason = "public key digest does not match its key id"
        else:
            try:
                verifier[0].verify(bytes.fromhex(sig or ""), body or b"")
            except (InvalidSignature, ValueError):
                reason = "signature does not verify (line altered)"
        if reason is None and obj.get("n") != expected_n:
            reason = f"expected checkpoint n {expected_n}, found another (lines removed, moved or duplicated)"
        elif reason is None and prev is not None and obj.get("prev") != prev:
            reason = "does not chain from the line before (lines removed, moved or replaced)"
        fields = _fields(obj) if reason is None else None
        if reason is None and fields is None:
            reason = "checkpoint fields are missing or malformed"
        if reason is None and fields is not None:
            trail_id = fields.trail_id if trail_id is None else trail_id
            if fields.trail_id != trail_id:
                reason = "belongs to another trail (trail_id differs)"
        if reason is not None:
            problems.append((no, reason))
        elif fields is not None:
            good.append(Checkpoint(**{**_asdict(fields), "line": no}))
        prev = hashlib.sha256(line).hexdigest() if reason is None else None  # resynchronise after a bad line
        expected_n = obj["n"] + 1 if type(obj.get("n")) is int else expected_n + 1
    if tail:
        warnings.append((len(lines) + 1, "torn last line (a writer died while appending)"))
    return CheckpointLog(
        lines=lines, checkpoints=tuple(good), problems=tuple(problems), warnings=tuple(warnings)
    )


def _split_sig(line: bytes) -> tuple[bytes | None, str | None]:
    i = line.rfind(_SIG_OPEN)
    if i < 1 or len(line) != i + len(_SIG_OPEN) + _SIG_HEX + 2 or not line.endswith(b'"}'):
        return None, None
    return line[:i] + b"}", line[i + len(_SIG_OPEN) : -2].decode("ascii", "replace")


def _verifier(master: MasterKey) -> tuple[Ed25519PublicKey, str]:
    pub = master.signing_key().public_key()
    return pub, public_digest(pub)


def _fields(obj: dict[str, Any]) -> Checkpoint | None:
    strs = ("trail_id", "stream", "state", "last_mac", "segment")
    if any(type(obj.get(k)) is not str for k in strs) or type(obj.get("last_seq")) is not int:
        return None
    if obj["state"] not in STATES:
        return None
    return Checkpoint(
        n=obj["n"],
        line=0,
        trail_id=obj["trail_id"],
        stream=obj["stream"],
        state=obj["state"],
        last_seq=obj["last_seq"],
        last_mac=obj["last_mac"],
        segment=obj["segment"],
    )


def _asdict(c: Checkpoint) -> dict[str, Any]:
    return {k: getattr(c, k) for k in Checkpoint.__slots__ if k != "line"}
