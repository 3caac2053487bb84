"""Compaction: sealed segments of every stream of a trail become Parquet, tied to their seals by manifests.

The layout is :mod:`auditlog.lake.layout`'s (v2)::

    date=2026-11-22/hour=08/part-<stream>-00000001-00000004.parquet   one stream's rows of one hour
    _manifest/stream=<stream>/00000001-00000004.json                  the batch's manifest (the commit)
    _staging/stream=<stream>/00000005-00000009/...                    a batch being written (transient)

A trail directory is the union of its streams (a classic journal directory is one stream): each stream is
compacted on its own, in batches of consecutive sealed segments, and reported on its own and in total.
:func:`compact` first calls :func:`store.trail.recover_stale`, so the streams of writers that died are
sealed, on the record, and compacted like the others; a stream whose writer is alive keeps its active
segment ``pending``.

Every line of a segment becomes one row (headers included), so a batch's rows equal the sum of its seals'
``count``. ``record`` keeps the journaled line byte for byte (its ``mac`` included), so rows taken in
``seq`` order re-verify against the stream's chain.

A manifest names, for each Parquet file, the segments its rows came from, and for each segment its
seal (``sha256`` of the sealed bytes, ``count``, ``first_seq``/``last_seq``, ``last_mac``, ``kid``) plus the
SHA-256 of the seal file, and the stream's labels (``stream``, ``source``, ``instance``, ``trail_id``). It
carries an HMAC under ``master.derive("compaction")``.

Safety. A batch is written to ``_staging`` (engines skip ``_``-prefixed directories), then its manifest is
written atomically: that is the commit point. Then the staged files are renamed into place. A crash before
the commit leaves staging that the next run deletes; after it, the next run finishes the renames. Segments
are read only when their seal's MAC checks out, and the batch commits only when the SHA-256 of every
segment's sealed bytes and every row count match the seals. Re-running compacts only what is new
(idempotent); a segment whose seal changed after it was compacted is an error.

Retention. Each stream deletes sealed segments past ``JournalConfig.retention`` on the record;
:func:`prune` (``auditlog compact --prune``) then deletes the batches compacted from them, so the Parquet
copies do not outlive the trail by more than one batch. It prunes only when every stream verifies. Copies
shipped to S3 are not pruned here: ``auditlog ship --expire-after`` gives them a lifecycle rule.

This module plans the work (which segments are sealed and new, in which batches) and reports it. One batch
is written and committed by :mod:`auditlog.lake._batches`, the commit points and the recovery of an
interrupted run are :mod:`auditlog.lake._recovery`'s, and :func:`prune` lives in :mod:`auditlog.lake._prune`
(public here).

Errors::

    LayoutError                           the audit data layout cannot be used
    └── CompactionError (OSError)         a segment cannot be compacted
        └── SegmentMismatch (ValueError)  a segment does not match its seal or its earlier compaction
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from auditlog.lake._batches import SealedSegment, compact_batch
from auditlog.lake._prune import PruneReport, prune
from auditlog.lake._recovery import finish_interrupted
from auditlog.lake._streams import is_trail, lake_streams
from auditlog.lake.layout import CompactionError, Manifest, SegmentMismatch, default_out, load_manifests
from store._segments import KeyCache, list_journal, read_seal
from store._trail_types import StaleRecovery, StreamInfo
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

__all__ = ["CompactReport", "PruneReport", "StreamCompaction", "compact", "prune"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamCompaction:
    """What :func:`compact` did to one stream.

    Attributes:
        stream: the stream id.
        source: the stream's source (host).
        state: the stream's state before the run (``open``, ``sealed``, ``stale``).
        compacted: segments compacted by this run.
        rows: rows written by this run.
        skipped: sealed segments compacted earlier.
        pending: segments not sealed yet (the active one of a live writer).
    """

    stream: str
    source: str | None
    state: str
    compacted: int
    rows: int
    skipped: int
    pending: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactReport:
    """What :func:`compact` did, per stream (:attr:`streams`) and in total.

    Attributes:
        out: the layout root.
        manifests: the batches committed by this run.
        compacted: segments compacted by this run.
        rows: rows written by this run.
        skipped: sealed segments already compacted earlier.
        pending: ``stream/segment`` of segments not sealed yet.
        recovered: staged batches a previous, interrupted run left: ``"rolled forward"`` or ``"discarded"``.
        streams: one :class:`StreamCompaction` per stream.
        stale_recovered: the stale streams sealed first (:func:`store.trail.recover_stale`).
        seconds: wall time.
    """

    out: Path
    manifests: tuple[Manifest, ...]
    compacted: int
    rows: int
    skipped: int
    pending: tuple[str, ...]
    recovered: tuple[str, ...]
    seconds: float
    streams: tuple[StreamCompaction, ...] = ()
    stale_recovered: tuple[StaleRecovery, ...] = ()


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as batches advance (``total`` in bytes of segments)."""


def compact(
    journal_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    keys: KeyRing,
    max_batch_bytes: int = 512 * 1024 * 1024,
    memory_limit: str = "2GB",
    compression_level: int = 1,
    row_group_size: int = 32_768,
    progress: Progress | None = None,
    recover: bool = True,
) -> CompactReport:
    """Compact every sealed, not yet compacted segment of every stream of a trail into the Parquet layout.

    Args:
        journal_dir: the trail directory (or a classic journal directory).
        out: the layout root (default: ``journal_dir/parquet``).
        keys: the key ring the trail was written under (seal MACs are checked; the manifest is MAC'd).
        max_batch_bytes: segment bytes per batch; a batch becomes one Parquet file per hour.
        memory_limit: DuckDB's memory limit while sorting (it spills to the staging directory beyond it);
            about twice ``max_batch_bytes`` keeps a batch in memory.
        compression_level: zstd level of the Parquet files.
        row_group_size: rows per row group (smaller groups prune point lookups finer but write slower).
        progress: an optional callback, see :data:`Progress`.
        recover: first seal the streams of dead writers (:func:`store.trail.recover_stale`).

    Returns:
        A :class:`CompactReport`.

    Raises:
        CompactionError: the trail or a seal cannot be read or trusted, or a file cannot be written.
        SegmentMismatch: a segment's bytes or lines do not match its seal, or a compacted segment's seal
            changed.
        ImportError: duckdb is not installed (``auditlog-pipeline[query]``).
    """
    if type(max_batch_bytes) is not int or max_batch_bytes <= 0:
        raise ValueError("max_batch_bytes must be a positive integer")
    if type(row_group_size) is not int or row_group_size <= 0:
        raise ValueError("row_group_size must be a positive integer")
    started = time.monotonic()
    jdir = Path(journal_dir)
    root = Path(out) if out is not None else default_out(jdir)
    stale: list[StaleRecovery] = []
    trail = is_trail(jdir)
    before = {info.stream: info.state for info in lake_streams(jdir)}
    if recover and trail:
        from store.trail import recover_stale

        try:
            stale = recover_stale(jdir, keys)
        except (JournalError, JournalCorrupt) as exc:
            raise CompactionError(f"stale streams of {jdir} cannot be recovered: {exc}") from exc
    recovered = finish_interrupted(root)
    done = {(m.stream, s.segment): (s.sha256, m.batch) for m in load_manifests(root) for s in m.segments}
    plans: list[tuple[StreamInfo, list[SealedSegment], list[str], int]] = []
    for info in lake_streams(jdir):
        sealed, pending = _sealed_segments(info, keys)
        todo: list[SealedSegment] = []
        skipped = 0
        for seal, seg_path, seal_path in sealed:
            prior = done.get((info.stream, seal.segment))
            if prior is None:
                todo.append((seal, seg_path, seal_path))
            elif prior[0] != seal.sha256:
                raise SegmentMismatch(
                    f"stream {info.stream} segment {seal.segment} was compacted in batch {prior[1]} with "
                    "different content: its seal changed since; run `auditlog verify` on the trail"
                )
            else:
                skipped += 1
        plans.append((info, todo, pending, skipped))
    total = sum(s.length for _, todo, _, _ in plans for s, _, _ in todo)
    manifests: list[Manifest] = []
    per_stream: list[StreamCompaction] = []
    advanced = 0
    for info, todo, pending, skipped in plans:
        mine: list[Manifest] = []
        for batch in _batches(todo, max_batch_bytes):
            if progress is not None:
                progress("compact", advanced, total)
            mine.append(
                compact_batch(
                    info,
                    batch,
                    root,
                    keys,
                    memory_limit=memory_limit,
                    level=compression_level,
                    row_group_size=row_group_size,
                )
            )
            advanced += sum(s.length for s, _, _ in batch)
        manifests += mine
        per_stream.append(
            StreamCompaction(
                stream=info.stream,
                source=info.source,
                state=before.get(info.stream, info.state),
                compacted=len(todo),
                rows=sum(m.rows for m in mine),
                skipped=skipped,
                pending=tuple(pending),
            )
        )
    if progress is not None:
        progress("compact", total, total)
    return CompactReport(
        out=root,
        manifests=tuple(manifests),
        compacted=sum(s.compacted for s in per_stream),
        rows=sum(m.rows for m in manifests),
        skipped=sum(s.skipped for s in per_stream),
        pending=tuple(f"{s.stream}/{p}" if trail else p for s in per_stream for p in s.pending),
        recovered=tuple(recovered),
        seconds=time.monotonic() - started,
        streams=tuple(per_stream),
        stale_recovered=tuple(stale),
    )


# -- internals ---------------------------------------------------------------------------------------


def _sealed_segments(info: StreamInfo, keys: KeyRing) -> tuple[list[SealedSegment], list[str]]:
    try:
        listing = list_journal(info.path)
    except JournalError as exc:
        raise CompactionError(str(exc)) from exc
    cache = KeyCache(keys)
    sealed: list[SealedSegment] = []
    pending: list[str] = []
    for number in listing.numbers:
        seg = listing.segments.get(number)
        if seg is None:
            continue  # a seal without its segment: retention, or a deletion verify will name
        if number not in listing.seals:
            pending.append(seg.name)
            continue
        try:
            seal = read_seal(listing.seals[number], cache)
        except JournalCorrupt as exc:
            raise CompactionError(
                f"seal of {info.stream}/{seg.name} cannot be trusted ({exc}); run `auditlog verify` on the "
                "trail"
            ) from exc
        if seal.segment != seg.name:
            raise SegmentMismatch(f"seal {listing.seals[number].name} names another segment ({seal.segment})")
        sealed.append((seal, seg, listing.seals[number]))
    return sealed, pending


def _batches(todo: list[SealedSegment], max_bytes: int) -> Iterator[list[SealedSegment]]:
    """Consecutive segments of one stream, at most ``max_bytes`` (at least one segment) per batch."""
    batch: list[SealedSegment] = []
    size = 0
    for item in todo:
        seal = item[0]
        if batch and size + seal.length > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += seal.length
    if batch:
        yield batch
