"""Segment-level checks of a journal (private; :mod:`store._journal_verify` walks the directory with them).

:class:`SegmentChecks` checks one segment file: every line must parse, carry the next ``seq``, and have a
MAC that follows from the line before it; the segment must open with a header that names its predecessor
and chains from its last MAC; a seal must match its segment byte for byte. After a bad line the walk
resynchronises on what that line states, so one edit yields one problem. It collects the problems,
warnings, torn tails and per-segment reports the directory walk turns into a
:class:`~store._journal_types.VerifyReport`, and the anchors of authentic retention purges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store._journal_types import Problem, SegmentReport, TornTail
from store._segments import (
    FORMAT,
    GENESIS_MAC,
    KIND_OPENED,
    KIND_PURGED,
    MAX_LINE_BYTES,
    KeyCache,
    MacKey,
    Seal,
    hash_range,
    mac_matches,
    read_lines,
    segment_name,
    split_mac,
    unhex,
    why_unparseable,
)
from store.keys import KeyRing

__all__ = ["GENESIS", "Deferred", "Entry", "SegmentChecks"]

_SEAL_LEVEL = 1 << 62  # sort key of problems about a seal or a whole segment: after its line problems


@dataclass(frozen=True, slots=True)
class Entry:
    """Where the chain stands before a segment: the previous segment, its last seq and last MAC."""

    name: str | None
    last_seq: int
    mac: bytes | None


@dataclass(frozen=True, slots=True)
class Deferred:
    """The header of the first present segment, when what it chains from can only come from retention."""

    number: int
    mk: MacKey | None
    body: bytes
    mac_hex: bytes
    header: dict[str, Any]


GENESIS = Entry(None, 0, GENESIS_MAC)


class SegmentChecks:
    """The checks of one segment file, and what they found (the state of a directory walk)."""

    __slots__ = ("_anchors", "_deferred", "_dir", "_keys", "_problems", "_segments", "_torn", "_warnings")

    def __init__(self, directory: Path, keys: KeyRing) -> None:
        self._dir = directory
        self._keys = KeyCache(keys)
        self._problems: list[tuple[tuple[int, int, int], Problem]] = []
        self._warnings: list[Problem] = []
        self._torn: list[TornTail] = []
        self._segments: list[SegmentReport] = []
        self._anchors: dict[str, tuple[int, bytes]] = {}
        self._deferred: Deferred | None = None

    def _problem(
        self, number: int, seq: int | None, line: int | None, reason: str, *, at: int | None = None
    ) -> None:
        key = (number, (line if line is not None else _SEAL_LEVEL) if at is None else at, len(self._problems))
        self._problems.append((key, Problem(segment=segment_name(number), seq=seq, line=line, reason=reason)))

    def _segment(
        self,
        number: int,
        path: Path,
        seal: Seal | None,
        seal_reason: str | None,
        entry: Entry | None,
        *,
        is_last: bool,
    ) -> Entry | None:
        """Check one segment file; return where the chain stands after it."""
        name = path.name
        if seal_reason is not None:
            self._problem(number, None, None, seal_reason)
        elif seal is None and not is_last:
            self._problem(number, None, None, "seal missing (every segment but the last must be sealed)")
        elif seal is None:
            self._warnings.append(
                Problem(
                    segment=name,
                    seq=None,
                    line=None,
                    reason="not sealed: the writer is active or stopped without closing",
                )
            )
        try:
            size = path.stat().st_size
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            self._problem(number, None, None, f"segment cannot be read: {exc.strerror}")
            return None
        limit = seal.length if seal is not None else size
        sha = hashlib.sha256() if seal is not None else None
        mk: MacKey | None = None
        kid: str | None = None
        expected = entry.last_seq + 1 if entry is not None else None
        prev_mac = entry.mac if entry is not None else None
        count = line_no = 0
        first: int | None = None
        last: int | None = None
        cut = False
        header: dict[str, Any] = {}
        with fh:
            for _offset, line, complete in read_lines(fh, limit, sha):
                line_no += 1
                if line is None:
                    self._problem(number, expected, line_no, f"line is longer than {MAX_LINE_BYTES} bytes")
                    expected = expected + 1 if expected is not None else None
                    prev_mac = None
                    continue
                if not complete:
                    cut = True
                    if seal is None and is_last:
                        self._torn.append(
                            TornTail(segment=name, last_good_seq=last, torn_bytes=len(line), sealed=False)
                        )
                    elif seal is not None and size < seal.length:
                        self._problem(
                            number, expected, line_no, "record cut short: the sealed segment was truncated"
                        )
                    else:
                        self._problem(number, expected, line_no, "record is incomplete (no newline)")
                    break
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                parts = split_mac(line)
                reason: str | None = None
                seq: int | None = None
                if obj is None:
                    reason = why_unparseable(line)
                elif type(obj) is not dict or type(obj.get("seq")) is not int:
                    reason = "line is not a journal record (no integer seq)"
                else:
                    seq = obj["seq"]
                if line_no == 1:
                    mk, kid, header_reason = self._header(
                        number, obj if seq is not None else None, seal, entry
                    )
                    reason = reason or header_reason
                    if entry is None and seq is not None:
                        expected = seq
                        if self._deferred is None and parts is not None and not self._segments:
                            self._deferred = Deferred(number, mk, parts[0], parts[1], obj)
                if reason is None and expected is not None and seq is not None and seq != expected:
                    what = "record(s) missing" if seq > expected else "out of order or duplicated"
                    reason = f"expected seq {expected}, found seq {seq} ({what})"
                if reason is None and parts is None:
                    reason = "line has no MAC field"
                elif (
                    reason is None
                    and parts
                    and mk
                    and prev_mac is not None
                    and not mac_matches(mk, prev_mac, *parts)
                ):
                    reason = (
                        "MAC mismatch: the record was altered, or records before it were removed or moved"
                    )
                if line_no == 1 and reason is None and obj is not None:
                    header = obj
                if reason is not None:
                    self._problem(number, expected, line_no, reason)
                elif (
                    line_no == 2
                    and header.get("reason") == "retention"
                    and mk is not None
                    and prev_mac is not None
                ):
                    self._collect_anchors(obj)
                expected = seq + 1 if seq is not None else expected + 1 if expected is not None else None
                prev_mac = unhex(parts[1]) if parts is not None else None
                count += 1
                if seq is not None:
                    first = seq if first is None else first
                    last = seq
        if seal is None:
            self._add_segment(name, kid, count, first, last, seal, 0)
            if last is None:
                return entry
            return Entry(name, last, prev_mac)
        self._check_seal(number, path, size, seal, kid, sha, (count, first, last, prev_mac), line_no, cut=cut)
        self._add_segment(name, kid, count, first, last, seal, seal.torn_bytes)
        return Entry(name, seal.last_seq, seal.last_mac)

    def _header(
        self, number: int, obj: dict[str, Any] | None, seal: Seal | None, entry: Entry | None
    ) -> tuple[MacKey | None, str | None, str | None]:
        """Check a segment's first line as its header. Returns ``(mac key, key id, problem or None)``."""
        if obj is None or obj.get("kind") != KIND_OPENED or obj.get("journal") != FORMAT:
            # fall back on the seal's key (its MAC checked out) to keep checking the lines
            return (self._keys.get(seal.kid) if seal else None), None, "first line is not a segment header"
        kid = obj.get("kid")
        mk = self._keys.get(kid)
        if mk is None:
            return (
                None,
                str(kid),
                f"written under unknown key id {str(kid)[:32]!r}; its records cannot be verified",
            )
        if obj.get("segment") != segment_name(number):
            return mk, kid, "header names a different segment (segment renamed or moved)"
        if entry is not None and (
            obj.get("prev_segment") != entry.name or obj.get("prev_last_seq") != entry.last_seq
        ):
            return mk, kid, "header does not follow the previous segment"
        return mk, str(kid), None

    def _collect_anchors(self, obj: Any) -> None:
        """Keep the anchors of an authentic purge record (line 2 of a retention segment, MAC checked)."""
        anchors = obj.get("anchors")
        if obj.get("kind") != KIND_PURGED or obj.get("journal") != FORMAT or not isinstance(anchors, list):
            return
        for a in anchors:
            if not isinstance(a, dict):
                continue
            name, last_seq, mac = a.get("segment"), a.get("last_seq"), a.get("last_mac")
            raw = unhex(mac.encode()) if isinstance(mac, str) else None
            if isinstance(name, str) and type(last_seq) is int and raw is not None:
                self._anchors[name] = (last_seq, raw)

    def _check_seal(
        self,
        number: int,
        path: Path,
        size: int,
        seal: Seal,
        kid: str | None,
        sha: Any,
        found: tuple[int, int | None, int | None, bytes | None],
        line_no: int,
        *,
        cut: bool,
    ) -> None:
        last = found[2]
        next_seq = last + 1 if last is not None else None
        if kid is not None and seal.kid != kid:
            self._problem(number, None, None, "seal and header name different key ids")
        if size < seal.length:
            if not cut:
                self._problem(
                    number,
                    next_seq,
                    line_no + 1,
                    f"sealed segment truncated: {seal.length - size} bytes missing",
                )
            return
        if found != (seal.count, seal.first_seq, seal.last_seq, seal.last_mac):
            self._problem(
                number, None, None, "seal does not match the segment's records (count, seq or last MAC)"
            )
        if sha.hexdigest() != seal.sha256:
            self._problem(number, None, None, "segment SHA-256 differs from its seal")
        extra = size - seal.length - seal.torn_bytes
        if extra > 0:
            self._problem(
                number, next_seq, line_no + 1, f"{extra} bytes follow the sealed end of the segment"
            )
        elif extra < 0:
            self._problem(number, None, None, "the torn tail recorded by the seal is cut short")
            return
        if seal.torn_bytes:
            digest, _, several_lines = hash_range(path, seal.length, seal.torn_bytes)
            if digest != seal.torn_sha256:
                self._problem(number, next_seq, line_no + 1, "torn tail differs from what the seal recorded")
            elif several_lines:
                self._problem(
                    number,
                    next_seq,
                    line_no + 1,
                    "bytes after the sealed prefix span several lines: not a torn write",
                )
            else:
                self._torn.append(
                    TornTail(
                        segment=path.name,
                        last_good_seq=seal.last_seq,
                        torn_bytes=seal.torn_bytes,
                        sealed=True,
                    )
                )

    def _add_segment(
        self,
        name: str,
        kid: str | None,
        count: int,
        first: int | None,
        last: int | None,
        seal: Seal | None,
        torn: int,
    ) -> None:
        self._segments.append(
            SegmentReport(
                name=name,
                kid=kid,
                records=count,
                first_seq=first,
                last_seq=last,
                sealed=seal is not None,
                torn_bytes=torn,
                ok=True,
            )
        )
