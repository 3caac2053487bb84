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

Errors::

    LayoutError                           the audit data layout cannot be used
    └── CompactionError (OSError)         a segment cannot be compacted
        └── SegmentMismatch (ValueError)  a segment does not match its seal or its earlier compaction
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake._batches import Hasher, file_sha256, hash_error, sealed_input, write_hours
from auditlog.lake._streams import is_trail, lake_streams
from auditlog.lake.layout import (
    KEYS_SQL,
    MANIFEST_DIR,
    STAGING_DIR,
    CompactionError,
    FileEntry,
    LayoutError,
    Manifest,
    SegmentEntry,
    SegmentMismatch,
    default_out,
    live_manifests,
    load_manifests,
    manifest_mac,
    parse_manifest,
    partition_value,
    read_lines_sql,
)
from store._segments import KeyCache, Seal, list_journal, read_seal
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What :func:`prune` did.

    Attributes:
        out: the layout root.
        pruned: the batches deleted (manifest and Parquet files), as ``batch`` (oldest first per stream).
        files: Parquet files deleted.
        rows: rows those files held.
        kept: batches of this trail kept (some segment of theirs is still in its stream).
        recovered: what an interrupted run left, finished now (see :class:`CompactReport`).
    """

    out: Path
    pruned: tuple[str, ...]
    files: int
    rows: int
    kept: int
    recovered: tuple[str, ...]


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as batches advance (``total`` in bytes of segments)."""

# The boundary to the file system, as module names so a test can interrupt a run.
_replace = os.replace

_Item = tuple[Seal, Path, Path]


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
    recovered = _recover(root)
    done = {(m.stream, s.segment): (s.sha256, m.batch) for m in load_manifests(root) for s in m.segments}
    plans: list[tuple[StreamInfo, list[_Item], list[str], int]] = []
    for info in lake_streams(jdir):
        sealed, pending = _sealed_segments(info, keys)
        todo: list[_Item] = []
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
                _compact_batch(
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


def prune(
    journal_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, keys: KeyRing
) -> PruneReport:
    """Delete the Parquet copies of what the streams' retention has purged.

    A batch goes when every segment it was compacted from lies below its stream's first remaining segment,
    and every stream verifies: ``verify`` then vouches, through the stream's own retention records, that
    everything below that segment was purged on the record. A trail with a stream that does not verify
    prunes nothing, so a segment someone deleted is never taken for an expired one (its copy is the
    evidence). Only batches of this trail's streams are considered; a batch with one segment still in its
    stream stays whole (copies outlive the stream by at most one batch).

    Deleting a batch renames its manifest to ``NAME.json.pruned`` first (queries stop seeing it: that is
    the commit point), then deletes its files, then the renamed manifest; an interrupted run is finished by
    the next :func:`compact` or :func:`prune`.

    Raises:
        CompactionError: the trail cannot be read, does not verify, or a file cannot be deleted.
    """
    from store.journal import verify

    jdir = Path(journal_dir)
    root = Path(out) if out is not None else default_out(jdir)
    recovered = _recover(root)
    first: dict[str, int | None] = {}
    for info in lake_streams(jdir):
        try:
            report = verify(info.path, keys=keys)
            listing = list_journal(info.path)
        except JournalError as exc:
            raise CompactionError(str(exc)) from exc
        if not report.ok:
            bad = report.first_problem
            where = (
                f" ({info.stream} {bad.segment}: {bad.reason})" if bad is not None else f" ({info.stream})"
            )
            raise CompactionError(
                f"trail {jdir} does not verify{where}: nothing pruned; run `auditlog verify` on it"
            )
        first[info.stream] = min(listing.segments) if listing.segments else None
    pruned: list[str] = []
    files = rows = kept = 0
    for manifest in load_manifests(root):
        if manifest.stream not in first or manifest.path is None:
            continue
        lowest = first[manifest.stream]
        if lowest is None or any(_number(s.segment) >= lowest for s in manifest.segments):
            kept += 1
            continue
        marker = manifest.path.with_name(manifest.path.name + _PRUNED)
        try:
            _replace(manifest.path, marker)
        except OSError as exc:
            raise CompactionError(f"cannot retire manifest {manifest.path}: {exc.strerror}") from exc
        _delete_batch(manifest, root, marker)
        pruned.append(manifest.batch)
        files += len(manifest.files)
        rows += manifest.rows
    return PruneReport(
        out=root, pruned=tuple(pruned), files=files, rows=rows, kept=kept, recovered=tuple(recovered)
    )


# -- internals ---------------------------------------------------------------------------------------


def _sealed_segments(info: StreamInfo, keys: KeyRing) -> tuple[list[_Item], list[str]]:
    try:
        listing = list_journal(info.path)
    except JournalError as exc:
        raise CompactionError(str(exc)) from exc
    cache = KeyCache(keys)
    sealed: list[_Item] = []
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


def _batches(todo: list[_Item], max_bytes: int) -> Iterator[list[_Item]]:
    """Consecutive segments of one stream, at most ``max_bytes`` (at least one segment) per batch."""
    batch: list[_Item] = []
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


def _number(segment: str) -> int:
    return int(segment.split(".", 1)[0])


def batch_name(first: str, last: str) -> str:
    """A batch's name from its first and last segment: ``00000001-00000004``."""
    return f"{_number(first):08d}-{_number(last):08d}"


def _compact_batch(
    info: StreamInfo,
    batch: list[_Item],
    root: Path,
    keys: KeyRing,
    *,
    memory_limit: str,
    level: int,
    row_group_size: int,
) -> Manifest:
    from auditlog.lake.engine import loader

    stream_dir = f"stream={partition_value(info.stream)}"
    name = batch_name(batch[0][0].segment, batch[-1][0].segment)
    staging = root / STAGING_DIR / stream_dir / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "spill").mkdir(parents=True)
    except OSError as exc:
        raise CompactionError(f"cannot create staging directory {staging}: {exc.strerror}") from exc
    hasher = Hasher([(s, p) for s, p, _ in batch])
    hasher.start()
    inputs = [sealed_input(seal, path, staging) for seal, path, _ in batch]
    source = info.source if info.source is not None else batch[0][0].source
    con = loader(memory_limit=memory_limit, temp_directory=str(staging / "spill"))
    try:
        created = (
            "(VALUES " + ", ".join("(?, make_timestamp(?::BIGINT))" for _ in batch) + ") AS c(seg, created)"
        )
        params: list[Any] = [source, info.stream, info.trail_id, *(str(p) for p in inputs)]
        for seal, _, _ in batch:
            params += [seal.segment, int(seal.created * 1_000_000)]
        raw = (
            "(SELECT r.line, c.seg AS segment, c.created, ?::VARCHAR AS source, ?::VARCHAR AS stream, "  # noqa: S608
            f"?::VARCHAR AS trail_id FROM {read_lines_sql(len(inputs))} r "
            f"JOIN {created} ON parse_filename(r.filename) = c.seg)"
        )
        con.execute(
            "CREATE TEMP TABLE sorted AS SELECT *, ts::DATE AS date, hour(ts)::INTEGER AS hour FROM ("  # noqa: S608
            + KEYS_SQL.replace("{src}", raw)
            + ") ORDER BY date, hour, correlation_id, ts, seq",
            params,
        )
        counts = dict(con.execute("SELECT segment, count(*) FROM sorted GROUP BY segment").fetchall())
        for seal, _, _ in batch:
            if counts.get(seal.segment, 0) != seal.count:
                raise SegmentMismatch(
                    f"segment {seal.segment}: {counts.get(seal.segment, 0)} lines read, its seal counts "
                    f"{seal.count}; run `auditlog verify` on the trail"
                )
        files = write_hours(
            con,
            staging,
            f"part-{partition_value(info.stream)}-{name}",
            level=level,
            row_group_size=row_group_size,
        )
    except Exception as exc:
        hasher.join()
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
        if hasher.mismatch is not None:  # the bytes changed: that explains any parse or count failure
            raise hash_error(hasher) from exc
        if isinstance(exc, LayoutError):
            raise
        if type(exc).__module__.startswith(("duckdb", "_duckdb")):
            raise CompactionError(
                f"batch {name} of stream {info.stream} could not be compacted: {type(exc).__name__}; "
                "run `auditlog verify` on the trail"
            ) from exc
        raise
    con.close()
    hasher.join()
    if hasher.mismatch is not None:
        shutil.rmtree(staging, ignore_errors=True)
        raise hash_error(hasher)
    manifest = _commit(info, source, batch, root, name, files, keys)
    roll_forward(manifest, root, staging)
    return manifest


def _commit(
    info: StreamInfo,
    source: str,
    batch: list[_Item],
    root: Path,
    name: str,
    files: list[FileEntry],
    keys: KeyRing,
) -> Manifest:
    segments = tuple(
        SegmentEntry(
            segment=seal.segment,
            kid=seal.kid,
            count=seal.count,
            first_seq=seal.first_seq,
            last_seq=seal.last_seq,
            last_mac=seal.last_mac.hex(),
            sha256=seal.sha256,
            bytes=seal.length,
            created=seal.created,
            sealed=seal.sealed,
            seal_sha256=file_sha256(seal_path),
        )
        for seal, _, seal_path in batch
    )
    return write_manifest(
        root,
        keys,
        Manifest(
            batch=name,
            stream=info.stream,
            source=source,
            instance=info.instance,
            trail_id=info.trail_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            rows=sum(f.rows for f in files),
            segments=segments,
            files=tuple(files),
            kid=keys.active.key_id,
            mac="",
        ),
    )


def write_manifest(root: Path, keys: KeyRing, draft: Manifest) -> Manifest:
    """MAC ``draft`` under the active key and write it atomically (the commit point of a batch or merge).

    Raises:
        CompactionError: the manifest cannot be written.
    """
    draft = Manifest(**{**{k: getattr(draft, k) for k in draft.__slots__}, "kid": keys.active.key_id})
    content = draft.content()
    mac = manifest_mac(keys.active.derive("compaction"), content)
    target = root / draft.key
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({**content, "mac": mac}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, target)
    except OSError as exc:
        raise CompactionError(f"cannot write manifest {target}: {exc.strerror}") from exc
    return Manifest(**{**{k: getattr(draft, k) for k in draft.__slots__}, "mac": mac, "path": target})


def roll_forward(manifest: Manifest, root: Path, staging: Path) -> None:
    """Move a committed batch's staged files into place, then drop its staging directory."""
    for entry in manifest.files:
        staged = staging / "files" / entry.path
        if staged.exists():
            final = root / entry.path
            final.parent.mkdir(parents=True, exist_ok=True)
            _replace(staged, final)
    shutil.rmtree(staging, ignore_errors=True)


_PRUNED = ".pruned"


def delete_files(root: Path, paths: list[str]) -> None:
    """Delete layout files (and the partition folders they leave empty)."""
    for rel in paths:
        path = root / rel
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            if folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _delete_batch(manifest: Manifest, root: Path, marker: Path) -> None:
    """Delete a retired batch's Parquet files (and partition folders left empty), then its manifest."""
    try:
        delete_files(root, [f.path for f in manifest.files])
        marker.unlink(missing_ok=True)
    except OSError as exc:
        raise CompactionError(f"cannot delete batch {manifest.batch}: {exc.strerror}") from exc


def _recover(root: Path) -> list[str]:
    """Finish or discard what an interrupted run left in ``_staging``; finish interrupted prunes, merges."""
    done_prunes: list[str] = []
    for marker in sorted((root / MANIFEST_DIR).glob(f"stream=*/*.json{_PRUNED}")):
        try:
            retired = parse_manifest(marker.read_bytes(), path=marker)
        except (OSError, LayoutError):
            continue  # unreadable: left for a person to look at (queries do not read it)
        _delete_batch(retired, root, marker)
        done_prunes.append(f"{marker.parent.name}/{retired.batch}: pruning finished")
    base = root / STAGING_DIR
    if not base.is_dir():
        return done_prunes + finish_merges(root)
    committed = {(m.path.parent.name, m.batch): m for m in load_manifests(root) if m.path is not None}
    done: list[str] = []
    for staging in sorted(base.glob("stream=*/*")):
        key = (staging.parent.name, staging.name)
        manifest = committed.get(key)
        if manifest is not None:
            roll_forward(manifest, root, staging)
            done.append(f"{key[0]}/{key[1]}: rolled forward")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"{key[0]}/{key[1]}: discarded")
    for tmp in (root / MANIFEST_DIR).glob("stream=*/*.json.tmp"):
        tmp.unlink(missing_ok=True)
    return done_prunes + done + finish_merges(root)


def finish_merges(root: str | os.PathLike[str]) -> list[str]:
    """Delete superseded manifests, and the files only they named, of every committed merge.

    Returns:
        One line per superseded batch deleted.
    """
    base = Path(root)
    everything: list[Manifest] = []
    for path in sorted((base / MANIFEST_DIR).glob("stream=*/*.json")):
        try:
            everything.append(parse_manifest(path.read_bytes(), path=path))
        except (OSError, LayoutError):
            continue
    live = live_manifests(everything)
    keep = {f.path for m in live for f in m.files}
    done: list[str] = []
    live_keys = {(m.stream, m.batch) for m in live}
    for m in everything:
        if (m.stream, m.batch) in live_keys or m.path is None:
            continue
        try:
            delete_files(base, [f.path for f in m.files if f.path not in keep])
            m.path.unlink(missing_ok=True)
        except OSError as exc:
            raise CompactionError(f"cannot delete superseded batch {m.batch}: {exc.strerror}") from exc
        done.append(f"stream={partition_value(m.stream)}/{m.batch}: superseded by a merge, deleted")
    return done
