"""The streams of a trail: naming, listing, reading, and recovering the ones whose writer died (private).

The public names are exported by :mod:`store.trail`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from store._checkpoints import STREAMS_DIR, append_checkpoint, public_digest, read_trail_id
from store._journal_types import JournalConfig
from store._journal_verify import iter_records
from store._segments import KIND_OPENED, LOCK_NAME, MAX_LINE_BYTES, KeyCache, list_journal
from store._trail_types import StaleRecovery, StreamInfo, StreamState
from store.exceptions import JournalError
from store.journal import JournalWriter
from store.keys import KeyRing

MAX_SOURCE_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
LABELS = ("trail_id", "stream", "source", "instance")


def safe_source(source: str) -> str:
    """``source`` as a directory-name part: ``[A-Za-z0-9._-]`` only, at most 64 characters, no leading dot."""
    return _UNSAFE.sub("-", source).lstrip(".-")[:MAX_SOURCE_CHARS] or "source"


def new_instance(clock: Callable[[], float] = time.time) -> str:
    """An instance id unique for a writer's life: pid, start time in ms, and 6 random hex digits."""
    return f"{os.getpid()}-{int(clock() * 1000)}-{secrets.token_hex(3)}"


def lock_held(stream_dir: Path) -> bool:
    """Whether a writer holds the stream's lock (a non-blocking flock attempt on a fresh descriptor).

    The attempt never touches another descriptor's lock: closing this process's own new descriptor
    releases only what it took.
    """
    try:
        fd = os.open(stream_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _first_header(stream_dir: Path, numbers: list[int], segments: dict[int, Path]) -> dict[str, Any]:
    """The first segment header found (oldest segment first), unchecked; ``{}`` when there is none."""
    for number in numbers:
        path = segments.get(number)
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                line = fh.readline(MAX_LINE_BYTES)
            obj = orjson.loads(line)
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(obj, dict) and obj.get("kind") == KIND_OPENED:
            return obj
    return {}


def stream_info(path: Path) -> StreamInfo:
    """Describe one stream directory (labels from its first header; state from its lock and last seal).

    Raises:
        JournalError: the directory cannot be listed.
    """
    listing = list_journal(path)
    numbers = listing.numbers
    header = _first_header(path, numbers, listing.segments)
    state: StreamState
    if lock_held(path):
        state = "open"
    elif numbers and numbers[-1] in listing.seals:
        state = "sealed"
    else:
        state = "stale"
    labels = {k: header.get(k) if isinstance(header.get(k), str) else None for k in LABELS}
    return StreamInfo(
        stream=path.name,
        source=labels["source"],
        instance=labels["instance"],
        trail_id=labels["trail_id"],
        path=path,
        state=state,
    )


def list_streams(directory: str | os.PathLike[str]) -> list[StreamInfo]:
    """List the streams of a trail, by stream id.

    Args:
        directory: the trail directory.

    Returns:
        One :class:`StreamInfo` per directory under ``streams/`` (empty when there is none yet).

    Raises:
        JournalError: the trail directory or a stream directory cannot be listed.
    """
    root = Path(directory) / STREAMS_DIR
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        if not Path(directory).is_dir():
            raise JournalError(f"trail directory {directory} does not exist") from None
        return []
    except OSError as exc:
        raise JournalError(f"trail directory {directory} cannot be read: {exc.strerror}") from exc
    return [stream_info(root / name) for name in names if (root / name).is_dir()]


def iter_trail_records(directory: str | os.PathLike[str]) -> Iterator[tuple[StreamInfo, dict[str, Any]]]:
    """Yield every stream's records, stream by stream (by stream id), each in ``seq`` order.

    Headers included, MACs unchecked, as :func:`store.journal.iter_records` (run :func:`verify_trail` to
    know they are authentic).

    Args:
        directory: the trail directory.

    Yields:
        ``(stream, record)``.

    Raises:
        JournalError: a directory or segment cannot be read.
        JournalCorrupt: a line that is not the last one of its segment is not a record.
    """
    for info in list_streams(directory):
        if list_journal(info.path).segments:
            for record in iter_records(info.path):
                yield info, record


def recover_stale(
    directory: str | os.PathLike[str],
    keys: KeyRing,
    *,
    config: JournalConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> list[StaleRecovery]:
    """Seal every stale stream of a trail: no writer holds its lock and its last segment is unsealed.

    Each is opened as a journal (its lock taken, which fails harmlessly if its writer came back), which
    seals the unsealed segment over its valid prefix (``recovered``), writes a new segment whose header
    records the recovery (with the stream's own ``trail_id``, ``stream``, ``source`` and ``instance``),
    and seals that at once; then a ``sealed`` checkpoint (``recovered: true``) goes to the log. A stream
    whose lock is held, that has no segment yet, or whose header names another trail is left untouched.

    Args:
        directory: the trail directory.
        keys: the key ring (the active key signs checkpoints).
        config: fsync settings for the recovery (rotation and retention are ignored).
        clock: the wall clock.

    Returns:
        One entry per stale stream found (an ``error`` says why it could not be recovered).

    Raises:
        JournalError: the trail cannot be listed.
        JournalCorrupt: ``trail.json`` is missing or cannot be trusted.
    """
    root = Path(directory)
    trail_id = read_trail_id(root, KeyCache(keys))
    base = config if config is not None else JournalConfig()
    signing = keys.active.signing_key()
    signer = (keys.active.key_id, signing, public_digest(signing))
    done: list[StaleRecovery] = []
    for info in list_streams(root):
        listing = list_journal(info.path)
        if info.state != "stale" or not listing.segments or info.trail_id != trail_id:
            continue
        cfg = replace(base, source=info.source or base.source, retention=None, max_segment_age=float("inf"))
        labels = {
            k: v for k, v in (("trail_id", trail_id), ("stream", info.stream), ("instance", info.instance))
        }
        try:
            writer = JournalWriter(
                info.path, keys=keys, config=cfg, clock=clock, labels={k: v for k, v in labels.items() if v}
            )
        except JournalError as exc:
            if not lock_held(info.path):
                done.append(StaleRecovery(stream=info.stream, path=info.path, recovery=None, error=str(exc)))
            continue
        recovery = writer.recovery
        writer.close()
        segment, seq, mac = writer._head()
        fields: dict[str, Any] = {**labels, "source": cfg.source, "state": "sealed", "recovered": True}
        fields |= {"last_seq": seq, "last_mac": mac.hex(), "segment": segment, "ts": clock()}
        with contextlib.suppress(JournalError):  # the seal stands; verify_trail names a missing checkpoint
            append_checkpoint(root, signer, fields, durable=cfg.fsync != "never")
        done.append(StaleRecovery(stream=info.stream, path=info.path, recovery=recovery))
    return done
