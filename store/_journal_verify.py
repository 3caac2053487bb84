"""Verifying and reading a journal directory (private; the public names are exported by store.journal).

:func:`verify` walks segments in number order and every line in file order. Each line must parse, carry
the next ``seq``, and have a MAC that follows from the line before it; each segment must open with a header
that names its predecessor and chains from its last MAC; each segment but the last must be sealed, and a
seal must match its segment byte for byte. After a bad line the walk resynchronises on what that line
states, so one edit yields one problem, and the first problem is the first bad record in file order.

This module walks the directory (missing, orphaned and retention-purged segments, the report); the checks
of each segment file are :mod:`store._journal_checks`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from store._journal_checks import GENESIS, Entry, SegmentChecks
from store._journal_types import Problem, SegmentReport, VerifyReport
from store._segments import Seal, list_journal, mac_matches, read_lines, read_seal, seal_name, segment_name
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing


class _Verifier(SegmentChecks):
    """The walk over a journal directory, segment by segment, into a :class:`VerifyReport`."""

    __slots__ = ()

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
        entry: Entry | None = GENESIS if numbers[0] == 1 else None
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
                entry = Entry(segment_name(number), seal.last_seq, seal.last_mac) if seal else None
                continue
            first_present = number if first_present is None else first_present
            entry = self._segment(
                number, listing.segments[number], seal, seal_reason, entry, is_last=number == numbers[-1]
            )
        self._resolve_start(first_present, leading)
        return self._report()

    def _orphan(self, number: int, seal: Seal | None, entry: Entry | None) -> None:
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
