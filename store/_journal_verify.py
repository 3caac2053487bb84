"""Verifying and reading a journal directory (private; the public names are exported by store.journal).

:func:`verify` walks segments in number order and every line in file order. Each line must parse, carry
the next ``seq``, and have a MAC that follows from the line before it; each segment must open with a header
that names its predecessor and chains from its last MAC; each segment but the last must be sealed, and a
seal must match its segment byte for byte. After a bad line the walk resynchronises on what that line
states, so one edit yields one problem, and the first problem is the first bad record in file order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store._journal_types import Problem, SegmentReport, TornTail, VerifyReport
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
    list_journal,
    mac_matches,
    read_lines,
    read_seal,
    seal_name,
    segment_name,
    split_mac,
    unhex,
    why_unparseable,
)
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

_SEAL_LEVEL = 1 << 62  # sort key of problems about a seal or a whole segment: after its line problems


@dataclass(frozen=True, slots=True)
class _Entry:
    """Where the chain stands before a segment: the previous segment, its last seq and last MAC."""

    name: str | None
    last_seq: int
    mac: bytes | None


@dataclass(frozen=True, slots=True)
class _Deferred:
    """The header of the first present segment, when what it chains from can only come from retention."""

    number: int
    mk: MacKey | None
    body: bytes
    mac_hex: bytes
    header: dict[str, Any]


_GENESIS = _Entry(None, 0, GENESIS_MAC)


class _Verifier:
    __slots__ = ("_anchors", "_deferred", "_dir", "_keys", "_problems", "_segments", "_torn", "_warnings")

    def __init__(self, directory: Path, keys: KeyRing) -> None:
        self._dir = directory
        self._keys = KeyCache(keys)
        self._problems: list[tuple[tuple[int, int, int], Problem]] = []
        self._warnings: list[Problem] = []
        self._torn: list[TornTail] = []
        self._segments: list[SegmentReport] = []
        self._anchors: dict[str, tuple[int, bytes]] = {}
        self._deferred: _Deferred | None = None

    def _problem(
        self, number: int, seq: int | None, line: int | None, reason: str, *, at: int | None = None
    ) -> None:
        key = (number, (line if line is not None else _SEAL_LEVEL) if at is None else at, len(self._problems))
        self._problems.append((key, Problem(segment=segment_name(number), seq=seq, line=line, reason=reason)))

    def run(self) -> VerifyReport:
        listing = list_journal(self._dir)
        for stray in listing.strays:
            self._warnings.append(
                Problem(segment=stray, seq=None, line=None, reason="not a journal file name; ignored")
            )
        numbers = listing.numbers
        if not numbers:
            self._problems.append(
                (
                    (0, 0, 0),
                    Problem(segment=None, seq=None, line=None, reason="no journal segments in the directory"),
                )
            )
            return self._report()
        entry: _Entry | None = _GENESIS if numbers[0] == 1 else None
        leading: list[tuple[int, Seal | None, str | None]] = []
        first_present: int | None = None
        prev = numbers[0] - 1
        for number in numbers:
            if number != prev + 1 and first_present is not None:
                missing = number - prev - 1
                self._problem(
                    prev + 1,
                    entry.last_seq + 1 if entry is not None else None,
                    None,
                    f"segment missing: {missing} segment(s) from {segment_name(prev + 1)} on are gone",
                    at=0,
                )
                entry = None
            elif number != prev + 1:
                entry = None
            prev = number
            seal, seal_reason = self._load_seal(number)
            if number not in listing.segments:
                if first_present is None:
                    leading.append((number, seal, seal_reason))
                else:
                    self._orphan(number, seal, entry)
                entry = _Entry(segment_name(number), seal.last_seq, seal.last_mac) if seal else None
                continue
            first_present = number if first_present is None else first_present
            entry = self._segment(
                number, listing.segments[number], seal, seal_reason, entry, is_last=number == numbers[-1]
            )
        self._resolve_start(first_present, leading)
        return self._report()

    def _orphan(self, number: int, seal: Seal | None, entry: _Entry | None) -> None:
        seq = seal.first_seq if seal is not None else entry.last_seq + 1 if entry is not None else None
        self._problem(number, seq, None, "segment missing (its seal is still present)", at=0)

    def _load_seal(self, number: int) -> tuple[Seal | None, str | None]:
        """Read a seal by path now, not from the listing: a writer seals N before it creates N+1."""
        path = self._dir / seal_name(number)
        if not path.exists():
            return None, None
        try:
            seal = read_seal(path, self._keys)
        except JournalCorrupt as exc:
            return None, str(exc)
        if seal.segment != segment_name(number):
            return None, f"seal {seal_name(number)} names a different segment"
        return seal, None

    def _segment(
        self,
        number: int,
        path: Path,
        seal: Seal | None,
        seal_reason: str | None,
        entry: _Entry | None,
        *,
        is_last: bool,
    ) -> _Entry | None:
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
                            self._deferred = _Deferred(number, mk, parts[0], parts[1], obj)
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
            return _Entry(name, last, prev_mac)
        self._check_seal(number, path, size, seal, kid, sha, (count, first, last, prev_mac), line_no, cut=cut)
        self._add_segment(name, kid, count, first, last, seal, seal.torn_bytes)
        return _Entry(name, seal.last_seq, seal.last_mac)

    def _header(
        self, number: int, obj: dict[str, Any] | None, seal: Seal | None, entry: _Entry | None
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

    def _resolve_start(
        self, first_present: int | None, leading: list[tuple[int, Seal | None, str | None]]
    ) -> None:
        """Decide whether what precedes the first present segment was purged by retention, on the record."""
        for number, seal, reason in leading:
            if reason is None and segment_name(number) in self._anchors:
                self._warnings.append(
                    Problem(
                        segment=segment_name(number),
                        seq=None,
                        line=None,
                        reason="seal left behind by a retention purge",
                    )
                )
            else:
                self._orphan(number, seal, None)
        d = self._deferred
        if first_present is None or first_present == 1 or d is None or d.number != first_present:
            return
        if leading and leading[-1][0] == first_present - 1 and leading[-1][1] is not None:
            return  # chained from that seal in the walk
        prev = segment_name(first_present - 1)
        anchor = self._anchors.get(prev)
        if anchor is None:
            below = sorted((int(n.split(".", 1)[0]), s) for n, (s, _) in self._anchors.items())
            below = [(n, s) for n, s in below if n < first_present]
            start, seq = (below[-1][0] + 1, below[-1][1] + 1) if below else (1, 1)
            self._problem(
                start,
                seq,
                None,
                f"segments {segment_name(start)} to {prev} are missing and no retention record covers them",
                at=0,
            )
            return
        last_seq, mac = anchor
        h = d.header
        if d.mk is None:
            return  # unknown key: reported on the header already
        if not (
            h.get("prev_segment") == prev
            and h.get("prev_last_seq") == last_seq
            and h.get("seq") == last_seq + 1
            and mac_matches(d.mk, mac, d.body, d.mac_hex)
        ):
            self._problem(
                first_present,
                h.get("seq") if type(h.get("seq")) is int else None,
                1,
                "header does not chain from the segment retention purged before it",
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

    def _report(self) -> VerifyReport:
        problems = tuple(p for _, p in sorted(self._problems, key=lambda kp: kp[0]))
        bad = {p.segment for p in problems}
        segments = tuple(
            s
            if s.name not in bad
            else SegmentReport(
                name=s.name,
                kid=s.kid,
                records=s.records,
                first_seq=s.first_seq,
                last_seq=s.last_seq,
                sealed=s.sealed,
                torn_bytes=s.torn_bytes,
                ok=False,
            )
            for s in self._segments
        )
        return VerifyReport(
            ok=not problems,
            records=sum(s.records for s in segments),
            segments=segments,
            problems=problems,
            torn_tails=tuple(self._torn),
            warnings=tuple(self._warnings),
        )


def verify(directory: str | os.PathLike[str], *, keys: KeyRing) -> VerifyReport:
    """Check a journal directory: every record, chain link, header, seal and segment.

    Corrupt input (invalid UTF-8, non-JSON, binary junk, over-long lines, malformed seals) becomes a
    problem entry, never an exception. Segments written under older keys verify when ``keys`` holds them.

    Args:
        directory: the journal directory.
        keys: the key ring holding every key the journal was written under.

    Returns:
        The report; ``report.first_problem`` names the first bad record (segment file and seq).

    Raises:
        JournalError: the directory does not exist or cannot be listed.
    """
    return _Verifier(Path(directory), keys).run()


def iter_records(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every record of a journal in ``seq`` order, segment headers included, without checking MACs.

    A sealed segment is read up to its sealed length; a torn last line (of an unsealed segment, or past
    a seal) is skipped. Run :func:`verify` to know the records are authentic.

    Args:
        directory: the journal directory.

    Yields:
        Each record as a dict (``seq`` and ``mac`` included).

    Raises:
        JournalError: the directory does not exist or a segment cannot be read.
        JournalCorrupt: a line that is not the last one of its segment is not a record.
    """
    listing = list_journal(Path(directory))
    for number in sorted(listing.segments):
        path = listing.segments[number]
        seal = None
        if number in listing.seals:
            try:
                seal = read_seal(listing.seals[number], None)
            except JournalCorrupt:
                seal = None
        try:
            size = path.stat().st_size
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise JournalError(f"journal segment {path} cannot be read: {exc.strerror}") from exc
        limit = min(seal.length, size) if seal is not None else size
        with fh:
            for n, (offset, line, complete) in enumerate(read_lines(fh, limit), 1):
                if line is not None and not complete:
                    break
                try:
                    obj = orjson.loads(line) if line is not None else None
                except orjson.JSONDecodeError:
                    obj = None
                if type(obj) is dict:
                    yield obj
                elif seal is None and line is not None and offset + len(line) + 1 == limit:
                    break  # a torn last line the writer has not recovered yet
                else:
                    raise JournalCorrupt(f"journal segment {path.name} line {n} is not a record; run verify")
