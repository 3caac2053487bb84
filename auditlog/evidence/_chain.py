"""A pack's ``chain_verification.json``: the chain result of every segment holding rows in range.

Each source of the investigation (one, or each of several read as one) is checked on its own: a trail as a
whole (every stream, the signed checkpoint log; open streams, such as the exporter's own, are accepted), a
classic journal directory as one chain, and each compacted batch in range by its manifest MAC and the
SHA-256 of its Parquet files.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditlog.investigate import Investigation
    from auditlog.investigate.catalog import Catalog
    from store.keys import KeyRing

__all__ = ["chain_document", "digest"]


def digest(path: Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


class _Found:
    """What the checks found so far, over every source."""

    __slots__ = ("batches", "journal_ok", "problems", "seen", "segments", "wanted")

    def __init__(self, wanted: set[tuple[str, str]]) -> None:
        self.wanted = wanted
        self.seen: set[tuple[str, str]] = set()
        self.segments: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.journal_ok = True

    def segment(self, stream: str, name: str, entry: dict[str, Any]) -> None:
        """Record one segment in range, once (a journal's own check wins over a manifest's)."""
        if (stream, name) in self.wanted and (stream, name) not in self.seen:
            self.seen.add((stream, name))
            self.segments.append({"stream": stream, "segment": name, **entry})


def chain_document(
    inv: Investigation,
    keys: KeyRing,
    journal: str | Path | None,
    segments: list[tuple[str, str]],
    lo: datetime,
    hi: datetime,
) -> dict[str, Any]:
    """The chain result for every (stream, segment) holding rows in range, and each compacted batch's checks.

    Args:
        inv: the investigation the pack is built from (its sources).
        keys: the key ring.
        journal: the journal directory to verify instead of the source's own (one source only).
        segments: the (stream, segment) pairs that hold rows in range.
        lo: start of the range.
        hi: end of the range.

    Raises:
        ValueError: ``journal`` given with several sources.
    """
    parts = inv.catalog.parts
    if journal is not None and len(parts) > 1:
        raise ValueError("journal= names the journal of one source; several sources each verify their own")
    found = _Found(set(segments))
    journals: list[str | None] = []
    for part in parts:
        jdir = Path(journal) if journal is not None else part.journal
        journals.append(str(jdir) if jdir is not None else None)
        if jdir is not None and jdir.is_dir():
            _check_journal(jdir, keys, found)
        _check_batches(part, keys, lo, hi, found)
    for stream, name in sorted(found.wanted - found.seen):
        missing = {"ok": False, "checked": "not found in the trail or a manifest"}
        found.segments.append({"stream": stream, "segment": name, **missing})
        found.problems.append(
            f"{stream} {name}: holds rows in range but is neither in the trail nor in a manifest"
        )
    ok = found.journal_ok and not found.problems and all(s["ok"] for s in found.segments)
    doc: dict[str, Any] = {
        "ok": ok,
        "journal": journals[0] if len(journals) == 1 else None,
        "segments": sorted(found.segments, key=lambda s: (str(s["stream"]), str(s["segment"]))),
        "batches": found.batches,
        "problems": found.problems,
    }
    if len(journals) > 1:
        doc["journals"] = journals
    return doc


def _check_journal(jdir: Path, keys: KeyRing, found: _Found) -> None:
    from auditlog.lake._streams import is_trail, lake_streams
    from store.journal import verify

    per_stream: list[tuple[str, Any]]
    if is_trail(jdir):
        from store.trail import verify_trail

        trail = verify_trail(jdir, keys=keys, allow_open=True)
        found.journal_ok = found.journal_ok and trail.ok
        found.problems += [str(p) for p in trail.problems]
        per_stream = [(s.stream, s.report) for s in trail.streams if s.report is not None]
    else:
        report = verify(jdir, keys=keys)
        found.journal_ok = found.journal_ok and report.ok
        found.problems += [str(p) for p in report.problems]
        per_stream = [(info.stream, report) for info in lake_streams(jdir)[:1]]
    for stream, report in per_stream:
        for seg in report.segments:
            found.segment(
                stream,
                seg.name,
                {
                    "ok": seg.ok,
                    "records": seg.records,
                    "first_seq": seg.first_seq,
                    "last_seq": seg.last_seq,
                    "sealed": seg.sealed,
                    "kid": seg.kid,
                    "checked": "chain",
                },
            )


def _check_batches(part: Catalog, keys: KeyRing, lo: datetime, hi: datetime, found: _Found) -> None:
    from auditlog.lake.layout import load_manifests

    manifests = part.manifests if part.root is None else load_manifests(part.root)
    base = part.files_root
    for m in manifests:
        files = [
            f
            for f in m.files
            if not (f.max_ts and f.max_ts < lo.isoformat(sep=" "))
            and not (f.min_ts and f.min_ts > hi.isoformat(sep=" "))
        ]
        if not files:
            continue
        mac_ok = m.verify_mac(keys)
        file_ok = True
        for f in files:
            local = (base / f.path) if base is not None else None
            if local is None or not local.exists() or digest(local)["sha256"] != f.sha256:
                file_ok = False
                found.problems.append(f"{f.path}: missing or its SHA-256 does not match manifest {m.batch}")
        if not mac_ok:
            found.problems.append(f"manifest {m.key}: MAC does not verify")
        found.batches.append(
            {
                "batch": m.batch,
                "stream": m.stream,
                "source": m.source,
                "manifest_mac_ok": mac_ok,
                "files_ok": file_ok,
                "segments": [s.segment for s in m.segments],
            }
        )
        for s in m.segments:
            found.segment(
                m.stream,
                s.segment,
                {
                    "ok": mac_ok and file_ok,
                    "records": s.count,
                    "first_seq": s.first_seq,
                    "last_seq": s.last_seq,
                    "sealed": True,
                    "kid": s.kid,
                    "checked": "manifest (seal sha256 and last_mac recorded at compaction)",
                },
            )
