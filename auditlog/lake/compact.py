"""Compaction: sealed journal segments become hive-partitioned Parquet, tied to their seals by manifests.

Layout of a compacted directory (``JOURNAL/parquet`` unless told otherwise)::

    date=2026-11-22/source=web-1/part-00000001-00000004.parquet    rows of one day, zstd,
                                                                   sorted by correlation_id, ts, seq
    _manifest/source=web-1/00000001-00000004.json                  the batch's manifest (the commit)
    _staging/source=web-1/00000005-00000009/...                    a batch being written (transient)

Every line of a segment becomes one row (headers included), so a batch's rows equal the sum of its seals'
``count``. Columns are listed in :data:`COLUMNS`; ``record`` keeps the journaled line byte for byte (its
``mac`` included), so rows taken in ``seq`` order re-verify against the chain. ``date`` and ``source`` are
hive partition columns (in the path, not in the files), which Athena, Trino, Spark and pyarrow read as is.

A manifest names, for each Parquet file, the segments its rows came from, and for each segment its
seal (``sha256`` of the sealed bytes, ``count``, ``first_seq``/``last_seq``, ``last_mac``, ``kid``) plus the
SHA-256 of the seal file. It carries an HMAC under ``master.derive("compaction")``.

Safety. A batch is written to ``_staging`` (engines skip ``_``-prefixed directories), then its manifest is
written atomically: that is the commit point. Then the staged files are renamed into place. A crash before
the commit leaves staging that the next run deletes; after it, the next run finishes the renames. Segments
are read only when their seal's MAC checks out, and the batch commits only when the SHA-256 of every
segment's sealed bytes and every row count match the seals. Re-running compacts only what is new
(idempotent); a segment whose seal changed after it was compacted is an error.

Retention. The journal deletes sealed segments past ``JournalConfig.retention`` on the record
(``journal.retention_purged``); :func:`prune` (``auditlog compact --prune``) then deletes the batches
compacted from them, so the Parquet copies do not outlive the journal by more than one batch. It prunes
only a journal that verifies. Copies shipped to S3 are not pruned here: ``auditlog ship --expire-after``
gives them a lifecycle rule (set it to the journal's retention).

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

from auditlog.lake._batches import Hasher, file_sha256, hash_error, sealed_input, write_days
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
    load_manifests,
    manifest_mac,
    parse_manifest,
    partition_value,
    read_lines_sql,
)
from store._segments import KeyCache, Seal, list_journal, read_seal, split_mac
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

__all__ = ["CompactReport", "PruneReport", "compact", "prune"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactReport:
    """What :func:`compact` did.

    Attributes:
        out: the layout root.
        manifests: the batches committed by this run.
        compacted: segments compacted by this run.
        rows: rows written by this run.
        skipped: sealed segments already compacted earlier.
        pending: segments not compacted because they are not sealed yet (the active one).
        recovered: staged batches a previous, interrupted run left: ``"rolled forward"`` or ``"discarded"``.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What :func:`prune` did.

    Attributes:
        out: the layout root.
        pruned: the batches deleted (manifest and Parquet files), oldest first.
        files: Parquet files deleted.
        rows: rows those files held.
        kept: batches of this journal kept (some segment of theirs is still in the journal).
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
) -> CompactReport:
    """Compact every sealed, not yet compacted segment of a journal into the Parquet layout.

    Args:
        journal_dir: the journal directory.
        out: the layout root (default: ``journal_dir/parquet``).
        keys: the key ring the journal was written under (seal MACs are checked; the manifest is MAC'd).
        max_batch_bytes: segment bytes per batch; a batch becomes one Parquet file per day.
        memory_limit: DuckDB's memory limit while sorting (it spills to the staging directory beyond it);
            about twice ``max_batch_bytes`` keeps a batch in memory.
        compression_level: zstd level of the Parquet files.
        row_group_size: rows per row group (smaller groups prune point lookups finer but write slower).
        progress: an optional callback, see :data:`Progress`.

    Returns:
        A :class:`CompactReport`.

    Raises:
        CompactionError: the journal or a seal cannot be read or trusted, or a file cannot be written.
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
    recovered = _recover(root)
    done = {(m.source, s.segment): (s.sha256, m.batch) for m in load_manifests(root) for s in m.segments}
    sealed, pending = _sealed_segments(jdir, keys)
    todo: list[tuple[Seal, Path, Path]] = []
    skipped = 0
    for seal, seg_path, seal_path in sealed:
        prior = done.get((seal.source, seal.segment))
        if prior is None:
            todo.append((seal, seg_path, seal_path))
        elif prior[0] != seal.sha256:
            raise SegmentMismatch(
                f"segment {seal.segment} was compacted in batch {prior[1]} with different content: its seal "
                "changed since; run `auditlog verify` on the journal"
            )
        else:
            skipped += 1
    total = sum(s.length for s, _, _ in todo)
    manifests: list[Manifest] = []
    advanced = 0
    for batch in _batches(todo, max_batch_bytes):
        if progress is not None:
            progress("compact", advanced, total)
        manifests.append(
            _compact_batch(
                batch,
                root,
                keys,
                memory_limit=memory_limit,
                level=compression_level,
                row_group_size=row_group_size,
            )
        )
        advanced += sum(s.length for s, _, _ in batch)
    if progress is not None:
        progress("compact", total, total)
    return CompactReport(
        out=root,
        manifests=tuple(manifests),
        compacted=len(todo),
        rows=sum(m.rows for m in manifests),
        skipped=skipped,
        pending=tuple(pending),
        recovered=tuple(recovered),
        seconds=time.monotonic() - started,
    )


def prune(
    journal_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, keys: KeyRing
) -> PruneReport:
    """Delete the Parquet copies of what the journal's retention has purged.

    A batch goes when every segment it was compacted from lies below the journal's first remaining
    segment, and the journal verifies: ``verify`` then vouches, through the journal's own retention
    records, that everything below that segment was purged on the record. A journal that does not verify
    prunes nothing, so a segment someone deleted is never taken for an expired one (its copy is the
    evidence). Only batches of this journal's ``source`` are considered; a batch with one segment still in
    the journal stays whole (copies outlive the journal by at most one batch).

    Deleting a batch renames its manifest to ``NAME.json.pruned`` first (queries stop seeing it: that is
    the commit point), then deletes its files, then the renamed manifest; an interrupted run is finished by
    the next :func:`compact` or :func:`prune`.

    Raises:
        CompactionError: the journal cannot be read, does not verify, or a file cannot be deleted.
    """
    from store.journal import verify

    jdir = Path(journal_dir)
    root = Path(out) if out is not None else default_out(jdir)
    recovered = _recover(root)
    try:
        report = verify(jdir, keys=keys)
        listing = list_journal(jdir)
    except JournalError as exc:
        raise CompactionError(str(exc)) from exc
    if not report.ok:
        first = report.first_problem
        where = f" ({first.segment}: {first.reason})" if first is not None else ""
        raise CompactionError(
            f"journal {jdir} does not verify{where}: nothing pruned; run `auditlog verify` on it"
        )
    present = sorted(listing.segments)
    source = _journal_source(listing.segments[present[0]]) if present else None
    pruned: list[str] = []
    files = rows = kept = 0
    for manifest in load_manifests(root):
        if source is None or manifest.source != source or manifest.path is None:
            continue
        if any(_number(s.segment) >= present[0] for s in manifest.segments):
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


def _sealed_segments(jdir: Path, keys: KeyRing) -> tuple[list[tuple[Seal, Path, Path]], list[str]]:
    try:
        listing = list_journal(jdir)
    except JournalError as exc:
        raise CompactionError(str(exc)) from exc
    cache = KeyCache(keys)
    sealed: list[tuple[Seal, Path, Path]] = []
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
                f"seal of {seg.name} cannot be trusted ({exc}); run `auditlog verify` on the journal"
            ) from exc
        if seal.segment != seg.name:
            raise SegmentMismatch(f"seal {listing.seals[number].name} names another segment ({seal.segment})")
        sealed.append((seal, seg, listing.seals[number]))
    return sealed, pending


def _batches(todo: list[tuple[Seal, Path, Path]], max_bytes: int) -> Iterator[list[tuple[Seal, Path, Path]]]:
    """Consecutive segments of one source, at most ``max_bytes`` (at least one segment) per batch."""
    batch: list[tuple[Seal, Path, Path]] = []
    size = 0
    for item in todo:
        seal = item[0]
        if batch and (batch[0][0].source != seal.source or size + seal.length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += seal.length
    if batch:
        yield batch


def _number(segment: str) -> int:
    return int(segment.split(".", 1)[0])


def _batch_name(batch: list[tuple[Seal, Path, Path]]) -> str:
    return f"{_number(batch[0][0].segment):08d}-{_number(batch[-1][0].segment):08d}"


def _compact_batch(
    batch: list[tuple[Seal, Path, Path]],
    root: Path,
    keys: KeyRing,
    *,
    memory_limit: str,
    level: int,
    row_group_size: int,
) -> Manifest:
    from auditlog.lake.engine import loader

    source = batch[0][0].source
    src_dir = f"source={partition_value(source)}"
    name = _batch_name(batch)
    staging = root / STAGING_DIR / src_dir / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "spill").mkdir(parents=True)
    except OSError as exc:
        raise CompactionError(f"cannot create staging directory {staging}: {exc.strerror}") from exc
    hasher = Hasher([(s, p) for s, p, _ in batch])
    hasher.start()
    inputs = [sealed_input(seal, path, staging) for seal, path, _ in batch]
    con = loader(memory_limit=memory_limit, temp_directory=str(staging / "spill"))
    try:
        created = (
            "(VALUES " + ", ".join("(?, make_timestamp(?::BIGINT))" for _ in batch) + ") AS c(seg, created)"
        )
        params: list[Any] = [str(p) for p in inputs]
        for seal, _, _ in batch:
            params += [seal.segment, int(seal.created * 1_000_000)]
        raw = (
            f"(SELECT r.line, c.seg AS segment, c.created FROM {read_lines_sql(len(inputs))} r "  # noqa: S608
            f"JOIN {created} ON parse_filename(r.filename) = c.seg)"
        )
        con.execute(
            "CREATE TEMP TABLE sorted AS SELECT *, strftime(ts, '%Y-%m-%d') AS date FROM ("  # noqa: S608
            + KEYS_SQL.replace("{src}", raw)
            + ") ORDER BY date, correlation_id, ts, seq",
            params,
        )
        counts = dict(con.execute("SELECT segment, count(*) FROM sorted GROUP BY segment").fetchall())
        for seal, _, _ in batch:
            if counts.get(seal.segment, 0) != seal.count:
                raise SegmentMismatch(
                    f"segment {seal.segment}: {counts.get(seal.segment, 0)} lines read, its seal counts "
                    f"{seal.count}; run `auditlog verify` on the journal"
                )
        files = write_days(con, staging, src_dir, name, level=level, row_group_size=row_group_size)
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
                f"batch {name} of source {source} could not be compacted: {type(exc).__name__}; "
                "run `auditlog verify` on the journal"
            ) from exc
        raise
    con.close()
    hasher.join()
    if hasher.mismatch is not None:
        shutil.rmtree(staging, ignore_errors=True)
        raise hash_error(hasher)
    manifest = _commit(batch, root, src_dir, name, source, files, keys)
    _roll_forward(manifest, root, staging)
    return manifest


def _commit(
    batch: list[tuple[Seal, Path, Path]],
    root: Path,
    src_dir: str,
    name: str,
    source: str,
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
    draft = Manifest(
        batch=name,
        source=source,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        rows=sum(f.rows for f in files),
        segments=segments,
        files=tuple(files),
        kid=keys.active.key_id,
        mac="",
    )
    content = draft.content()
    mac = manifest_mac(keys.active.derive("compaction"), content)
    target = root / MANIFEST_DIR / src_dir / f"{name}.json"
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


def _roll_forward(manifest: Manifest, root: Path, staging: Path) -> None:
    """Move a committed batch's staged files into place, then drop its staging directory."""
    for entry in manifest.files:
        staged = staging / "files" / entry.path
        if staged.exists():
            final = root / entry.path
            final.parent.mkdir(parents=True, exist_ok=True)
            _replace(staged, final)
    shutil.rmtree(staging, ignore_errors=True)


_PRUNED = ".pruned"


def _journal_source(first_segment: Path) -> str | None:
    """The ``source`` in a segment's header (its first line), or None when it cannot be read."""
    try:
        with open(first_segment, "rb") as fh:
            line = fh.readline().rstrip(b"\n")
        split = split_mac(line)
        header = orjson.loads(split[0]) if split is not None else None
    except (OSError, orjson.JSONDecodeError):
        return None
    source = header.get("source") if isinstance(header, dict) else None
    return source if isinstance(source, str) else None


def _delete_batch(manifest: Manifest, root: Path, marker: Path) -> None:
    """Delete a retired batch's Parquet files (and partition folders left empty), then its manifest."""
    try:
        for entry in manifest.files:
            path = root / entry.path
            path.unlink(missing_ok=True)
            for folder in (path.parent, path.parent.parent):
                if folder != root and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        marker.unlink(missing_ok=True)
    except OSError as exc:
        raise CompactionError(f"cannot delete batch {manifest.batch}: {exc.strerror}") from exc


def _recover(root: Path) -> list[str]:
    """Finish or discard what an interrupted run left in ``_staging``; finish interrupted prunes."""
    done_prunes: list[str] = []
    for marker in sorted((root / MANIFEST_DIR).glob(f"source=*/*.json{_PRUNED}")):
        try:
            retired = parse_manifest(marker.read_bytes(), path=marker)
        except (OSError, LayoutError):
            continue  # unreadable: left for a person to look at (queries do not read it)
        _delete_batch(retired, root, marker)
        done_prunes.append(f"{marker.parent.name}/{retired.batch}: pruning finished")
    base = root / STAGING_DIR
    if not base.is_dir():
        return done_prunes
    committed = {(m.path.parent.name, m.batch): m for m in load_manifests(root) if m.path is not None}
    done: list[str] = []
    for staging in sorted(base.glob("source=*/*")):
        key = (staging.parent.name, staging.name)
        manifest = committed.get(key)
        if manifest is not None:
            _roll_forward(manifest, root, staging)
            done.append(f"{key[0]}/{key[1]}: rolled forward")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"{key[0]}/{key[1]}: discarded")
    for tmp in (root / MANIFEST_DIR).glob("source=*/*.json.tmp"):
        tmp.unlink(missing_ok=True)
    return done_prunes + done
