"""Merge: the small files of closed hours become larger ones, under one new manifest; still verifiable.

Compacting often (every few minutes) leaves one small file per stream, batch and hour; engines pay per
object. :func:`merge` takes, per stream, each run of consecutive batches whose hours are all closed (ended
at least ``grace`` seconds ago), checks their manifests (MAC) and files (SHA-256), and rewrites the files of
each hour into as few files as ``target_bytes`` allows, sorted as compaction sorts them. The new manifest
covers the union of the batches' segments (``first-last`` of the run, the same seal entries) and lists the
batches it ``supersedes``; files alone in their hour are kept as they are. Rows are copied, never parsed
again, so ``record`` and ``mac`` stay byte for byte and the layout verifies exactly as before.

Commit protocol (the same as compaction's, in :mod:`auditlog.lake._recovery`): merged files are staged,
the new manifest is written (the commit point: readers ignore a superseded manifest from then on), files
are moved into place, then the superseded manifests and the files only they named are deleted. An
interrupted run is finished by the next :func:`merge`, :func:`~auditlog.lake.compact.compact` or
:func:`~auditlog.lake.compact.prune`. Shipping a merged layout uploads the new files and manifest, then
deletes the superseded objects.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditlog.lake._recovery import (
    batch_name,
    finish_interrupted,
    finish_merges,
    roll_forward,
    write_manifest,
)
from auditlog.lake.layout import (
    STAGING_DIR,
    CidBloom,
    CompactionError,
    FileEntry,
    Manifest,
    partition_value,
)
from store.keys import KeyRing

__all__ = ["MergeReport", "merge"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeReport:
    """What :func:`merge` did.

    Attributes:
        out: the layout root.
        manifests: the merged manifests written.
        merged_batches: batches superseded.
        files_in: files rewritten.
        files_out: files written.
        rows: rows rewritten.
        bytes_in: bytes of the files rewritten.
        seconds: wall time.
    """

    out: Path
    manifests: tuple[Manifest, ...]
    merged_batches: int
    files_in: int
    files_out: int
    rows: int
    bytes_in: int
    seconds: float


def merge(
    root: str | os.PathLike[str],
    *,
    keys: KeyRing,
    target_bytes: int = 128 * 1024 * 1024,
    grace: float = 600.0,
    now: float | None = None,
    compression_level: int = 3,
    row_group_size: int = 65_536,
) -> MergeReport:
    """Merge the small files of closed hours of a layout root (see the module docstring).

    Args:
        root: the layout root.
        keys: the key ring (input manifests are checked, the new one is MAC'd under the active key).
        target_bytes: the size merged files aim at (an hour's rows are split into that many files).
        grace: seconds after an hour ends before it counts as closed (late segments of live writers).
        now: the current time (epoch seconds); default the clock.
        compression_level: zstd level of the merged files.
        row_group_size: rows per row group of the merged files.

    Returns:
        A :class:`MergeReport`.

    Raises:
        CompactionError: an input manifest or file does not verify, or a file cannot be written.
    """
    if type(target_bytes) is not int or target_bytes <= 0:
        raise ValueError("target_bytes must be a positive integer")
    started = time.monotonic()
    base = Path(root)
    finish_interrupted(base)
    from auditlog.lake.layout import load_manifests

    cutoff = datetime.fromtimestamp((time.time() if now is None else now) - grace, UTC).replace(tzinfo=None)
    by_stream: dict[str, list[Manifest]] = {}
    for m in load_manifests(base):
        by_stream.setdefault(m.stream, []).append(m)
    written: list[Manifest] = []
    merged = files_in = files_out = rows = bytes_in = 0
    for manifests in by_stream.values():
        for run in _runs(manifests, cutoff):
            done, stats = _merge_run(base, keys, run, target_bytes, compression_level, row_group_size)
            if done is None:
                continue
            written.append(done)
            merged += len(run)
            files_in += stats[0]
            files_out += stats[1]
            rows += stats[2]
            bytes_in += stats[3]
    return MergeReport(
        out=base,
        manifests=tuple(written),
        merged_batches=merged,
        files_in=files_in,
        files_out=files_out,
        rows=rows,
        bytes_in=bytes_in,
        seconds=time.monotonic() - started,
    )


def _closed(m: Manifest, cutoff: datetime) -> bool:
    for f in m.files:
        end = datetime.strptime(f.date, "%Y-%m-%d") + timedelta(hours=f.hour + 1)
        if end > cutoff:
            return False
    return True


def _runs(manifests: list[Manifest], cutoff: datetime) -> list[list[Manifest]]:
    """Maximal runs of consecutive closed batches of one stream that share at least one hour."""
    runs: list[list[Manifest]] = []
    current: list[Manifest] = []
    for m in manifests:
        if _closed(m, cutoff):
            current.append(m)
            continue
        if len(current) > 1:
            runs.append(current)
        current = []
    if len(current) > 1:
        runs.append(current)
    worth: list[list[Manifest]] = []
    for run in runs:
        hours = [(f.date, f.hour) for m in run for f in m.files]
        if len(hours) != len(set(hours)):
            worth.append(run)
    return worth


def _merge_run(
    root: Path, keys: KeyRing, run: list[Manifest], target: int, level: int, row_group_size: int
) -> tuple[Manifest | None, tuple[int, int, int, int]]:
    from auditlog.lake._batches import file_sha256, write_parquet
    from auditlog.lake.engine import arrow_schema, require

    pq = require("pyarrow.parquet", "auditlog.lake.merge")
    pa = require("pyarrow", "auditlog.lake.merge")
    pc = require("pyarrow.compute", "auditlog.lake.merge")
    for m in run:
        if not m.verify_mac(keys):
            raise CompactionError(f"manifest {m.key} does not verify (MAC); nothing merged")
    stream = run[0].stream
    name = batch_name(run[0].segments[0].segment, run[-1].segments[-1].segment)
    staging = root / STAGING_DIR / f"stream={partition_value(stream)}" / name
    shutil.rmtree(staging, ignore_errors=True)
    hours: dict[tuple[str, int], list[FileEntry]] = {}
    for m in run:
        for f in m.files:
            hours.setdefault((f.date, f.hour), []).append(f)
    schema = arrow_schema(partitions=False)
    out: list[FileEntry] = []
    n_in = n_out = n_rows = b_in = 0
    for (day, hour), entries in sorted(hours.items()):
        if len(entries) == 1:
            out.append(entries[0])
            continue
        tables = []
        for f in entries:
            path = root / f.path
            if not path.is_file() or file_sha256(path) != f.sha256:
                shutil.rmtree(staging, ignore_errors=True)
                raise CompactionError(f"{f.path} is missing or does not match its manifest; nothing merged")
            tables.append(pq.read_table(path, schema=schema))
        table = pa.concat_tables(tables).sort_by(
            [("correlation_id", "ascending"), ("ts", "ascending"), ("seq", "ascending")]
        )
        size = sum(f.bytes for f in entries)
        parts = max(1, math.ceil(size / target))
        step = math.ceil(table.num_rows / parts)
        segs: dict[str, int] = {}
        for f in entries:
            for s, c in f.segments.items():
                segs[s] = segs.get(s, 0) + c
        for k in range(parts):
            chunk = table.slice(k * step, step)
            if chunk.num_rows == 0:
                continue
            suffix = f"-{k + 1}" if parts > 1 else ""
            rel = f"date={day}/hour={hour:02d}/part-{partition_value(stream)}-{name}{suffix}.parquet"
            target_path = staging / "files" / rel
            write_parquet(
                iter(chunk.to_batches(row_group_size)),
                target_path,
                level=level,
                row_group_size=row_group_size,
            )
            ids = pc.unique(chunk.column("correlation_id").drop_null()).to_pylist()
            seg_counts = segs if parts == 1 else _segment_counts(chunk)
            ts = chunk.column("ts")
            lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
            out.append(
                FileEntry(
                    path=rel,
                    date=day,
                    hour=hour,
                    rows=chunk.num_rows,
                    bytes=target_path.stat().st_size,
                    sha256=file_sha256(target_path),
                    min_ts=_ts_text(lo),
                    max_ts=_ts_text(hi),
                    segments=dict(sorted(seg_counts.items())),
                    cids=CidBloom.build(ids).encode(),
                )
            )
            n_out += 1
        if sum(e.rows for e in entries) != table.num_rows:
            shutil.rmtree(staging, ignore_errors=True)
            raise CompactionError(f"hour {day} {hour:02d} of stream {stream}: row counts do not add up")
        n_in += len(entries)
        n_rows += table.num_rows
        b_in += size
    draft = Manifest(
        batch=name,
        stream=stream,
        source=run[0].source,
        instance=run[0].instance,
        trail_id=run[0].trail_id,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        rows=sum(m.rows for m in run),
        segments=tuple(s for m in run for s in m.segments),
        files=tuple(sorted(out, key=lambda f: f.path)),
        kid=keys.active.key_id,
        mac="",
        supersedes=tuple(m.batch for m in run),
    )
    manifest = write_manifest(root, keys, draft)
    roll_forward(manifest, root, staging)
    finish_merges(root)
    return manifest, (n_in, n_out, n_rows, b_in)


def _segment_counts(chunk: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in chunk.column("segment").to_pylist():
        counts[s] = counts.get(s, 0) + 1
    return counts


def _ts_text(value: Any) -> str | None:
    """A timestamp as compaction writes ``min_ts``/``max_ts`` (naive UTC, DuckDB's VARCHAR form)."""
    if value is None:
        return None
    return str(value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "))
