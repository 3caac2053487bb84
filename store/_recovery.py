"""Opening a journal: where its chain stands, and recovering a segment a crash left unsealed (private).

Also the choice of segments :meth:`store.journal.JournalWriter.enforce_retention` may purge. Both trust a
seal only after checking its MAC, and never repair anything but the newest segment: an unsealed segment
in the middle of a journal is evidence for :func:`store.journal.verify`, not something to paper over.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store._journal_types import JournalRecovery
from store._segments import (
    FORMAT,
    GENESIS_MAC,
    KIND_OPENED,
    KeyCache,
    MacKey,
    Seal,
    hash_range,
    list_journal,
    mac_matches,
    read_lines,
    read_seal,
    seal_line,
    seal_name,
    split_mac,
    timestamp,
    unhex,
    write_new_file,
)
from store.exceptions import JournalCorrupt, JournalError


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """Where a new writer continues: the chain state, the next segment number, and what it recovered."""

    seq: int
    mac: bytes
    prev_segment: str | None
    next_number: int
    reason: str
    recovery: JournalRecovery | None


def resume(
    directory: Path,
    keys: KeyCache,
    *,
    fallback: tuple[str, MacKey],
    source: str,
    chained: bool,
    durable: bool,
    clock: Callable[[], float],
) -> Resume:
    """Find where a journal's chain stands; seal the newest segment if a crash left it unsealed.

    Args:
        directory: the journal directory.
        keys: journal keys by key id.
        fallback: ``(key id, MAC key)`` to seal a segment whose header is gone (the active key).
        source: the source to record when the header is gone.
        chained: whether lines carry MACs.
        durable: whether to fsync the seal.
        clock: the wall clock.

    Returns:
        The chain state, and the reason for the new segment's header: ``"new"``, ``"reopen"`` or
        ``"recovery"``.

    Raises:
        JournalCorrupt: the newest seal fails its check, or the unsealed segment is under a key the ring
            does not hold, or nothing tells where the chain stands.
        JournalError: the directory or the segment cannot be read, or the seal cannot be written.
    """
    listing = list_journal(directory)
    numbers = listing.numbers
    if not numbers:
        return Resume(seq=0, mac=GENESIS_MAC, prev_segment=None, next_number=1, reason="new", recovery=None)
    last = numbers[-1]
    if last in listing.seals:
        seal = _trusted_seal(listing.seals[last], keys)
        return Resume(
            seq=seal.last_seq,
            mac=seal.last_mac,
            prev_segment=seal.segment,
            next_number=last + 1,
            reason="reopen",
            recovery=None,
        )
    entry = None
    if last - 1 in listing.seals:
        prev = _trusted_seal(listing.seals[last - 1], keys)
        entry = (prev.last_seq, prev.last_mac)
    path = listing.segments[last]
    try:
        scan = scan_segment(path, keys, entry=entry, chained=chained)
    except JournalError:
        raise
    except OSError as exc:
        raise JournalError(f"cannot read journal segment {path} to recover it") from exc
    mk = keys.get(scan.kid)
    kid, mk = (scan.kid, mk) if scan.kid is not None and mk is not None else fallback
    now = clock()
    seal = Seal(
        segment=path.name,
        kid=kid,
        source=scan.source or source,
        count=scan.count,
        first_seq=scan.first_seq,
        last_seq=scan.last_seq,
        last_mac=scan.last_mac,
        sha256=scan.sha256,
        length=scan.length,
        torn_bytes=scan.torn_bytes,
        torn_sha256=scan.torn_sha256,
        created=scan.created if scan.created is not None else now,
        sealed=now,
        reason="recovered",
        recovered=True,
    )
    seal_path = directory / seal_name(last)
    try:
        write_new_file(seal_path, seal_line(mk, seal), durable=durable)
    except OSError as exc:
        raise JournalError(f"cannot write journal seal {seal_path}") from exc
    return Resume(
        seq=scan.last_seq,
        mac=scan.last_mac,
        prev_segment=path.name,
        next_number=last + 1,
        reason="recovery",
        recovery=JournalRecovery(segment=path.name, last_good_seq=scan.last_seq, torn_bytes=scan.torn_bytes),
    )


def _trusted_seal(path: Path, keys: KeyCache) -> Seal:
    try:
        return read_seal(path, keys)
    except JournalCorrupt as exc:
        raise JournalCorrupt(
            f"journal seal {path} cannot be trusted ({exc}); run verify before writing here"
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Scan:
    """The valid prefix of an unsealed segment, found by :func:`scan_segment`."""

    kid: str | None
    source: str | None
    created: float | None
    count: int
    first_seq: int | None
    last_seq: int
    last_mac: bytes
    length: int
    sha256: str
    torn_bytes: int
    torn_sha256: str | None


def scan_segment(path: Path, keys: KeyCache, *, entry: tuple[int, bytes] | None, chained: bool) -> Scan:
    """Find the longest valid prefix of an unsealed segment (the writer's crash recovery).

    A line belongs to the prefix when it is complete, parses, has the next ``seq`` and (chained) its MAC
    follows from the line before; the header's MAC is checked only when ``entry`` gives the chain state
    before the segment. Everything after the prefix is the torn tail.

    Args:
        path: the segment file.
        keys: journal keys by key id.
        entry: ``(last_seq, last_mac)`` before this segment, from the previous seal, if known.
        chained: whether lines carry MACs (``JournalConfig.chain``).

    Returns:
        The prefix and the torn tail's size and hash.

    Raises:
        JournalCorrupt: the segment is under a key the ring does not hold, or neither it nor a sealed
            predecessor tells where the chain stands.
        OSError: the segment cannot be read.
    """
    size = os.stat(path).st_size
    sha = hashlib.sha256()
    valid = count = 0
    first: int | None = None
    header: dict[str, Any] = {}
    last_seq, last_mac = entry if entry is not None else (None, None if chained else GENESIS_MAC)
    mk: MacKey | None = None
    with open(path, "rb") as fh:
        for offset, line, complete in read_lines(fh, size):
            if line is None or not complete:
                break
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                break
            if type(obj) is not dict or type(obj.get("seq")) is not int:
                break
            seq = obj["seq"]
            if count == 0:
                if obj.get("kind") != KIND_OPENED or obj.get("journal") != FORMAT:
                    break
                header = obj
                if chained and (mk := keys.get(obj.get("kid"))) is None:
                    raise JournalCorrupt(
                        f"segment {path.name} was written under key id {str(obj.get('kid'))[:32]!r},"
                        " which the key ring does not hold; add that key to recover and seal it"
                    )
            if last_seq is not None and seq != last_seq + 1:
                break
            if mk is not None:
                parts = split_mac(line)
                stated = unhex(parts[1]) if parts is not None else None
                if parts is None or stated is None:
                    break
                if last_mac is not None and not mac_matches(mk, last_mac, *parts):
                    break
                last_mac = stated
            count += 1
            first = seq if first is None else first
            last_seq = seq
            valid = offset + len(line) + 1
            sha.update(line)
            sha.update(b"\n")
    if last_seq is None or last_mac is None:
        raise JournalCorrupt(
            f"segment {path.name} has no valid header and no sealed predecessor:"
            " its chain cannot be continued"
        )
    torn = size - valid
    created = header.get("ts")
    return Scan(
        kid=header.get("kid") if isinstance(header.get("kid"), str) else None,
        source=header.get("source") if isinstance(header.get("source"), str) else None,
        created=timestamp(created),
        count=count,
        first_seq=first,
        last_seq=last_seq,
        last_mac=last_mac,
        length=valid,
        sha256=sha.hexdigest(),
        torn_bytes=torn,
        torn_sha256=hash_range(path, valid, torn)[0] if torn else None,
    )
