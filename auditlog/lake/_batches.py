"""One compaction batch: sealed segment bytes of one stream in, Parquet files and a committed manifest out.

- :func:`compact_batch` stages the batch, sorts it in DuckDB, checks every segment's line count and
  sealed bytes against its seal, writes the Parquet files, commits the manifest and rolls it forward
  (the commit protocol is :mod:`auditlog.lake._recovery`'s);
- :class:`Hasher` hashes each segment's sealed prefix in a background thread and compares it with the seal;
- :func:`sealed_input` picks the bytes DuckDB reads (the segment, or a copy of its sealed prefix);
- :func:`write_hours` streams the sorted batch out of DuckDB into pyarrow's Parquet writer, one file per hour.

Which segments make up the batches is :func:`auditlog.lake.compact.compact`'s.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditlog.lake._recovery import batch_name, roll_forward, write_manifest
from auditlog.lake.layout import (
    COLUMNS_SQL,
    KEYS_SQL,
    STAGING_DIR,
    CidBloom,
    CompactionError,
    FileEntry,
    LayoutError,
    Manifest,
    SegmentEntry,
    SegmentMismatch,
    partition_value,
    read_lines_sql,
)
from store._segments import Seal
from store._trail_types import StreamInfo
from store.keys import KeyRing

__all__ = [
    "Hasher",
    "SealedSegment",
    "compact_batch",
    "file_sha256",
    "hash_error",
    "prefetch",
    "sealed_input",
    "sql_path",
    "write_hours",
    "write_parquet",
]

SealedSegment = tuple[Seal, Path, Path]
"""A sealed segment to compact: its seal, the segment's path and the seal file's path."""


def compact_batch(
    info: StreamInfo,
    batch: list[SealedSegment],
    root: Path,
    keys: KeyRing,
    *,
    memory_limit: str,
    level: int,
    row_group_size: int,
) -> Manifest:
    """Compact one batch of consecutive sealed segments of a stream and commit it; returns its manifest.

    Raises:
        CompactionError: the staging directory cannot be made, or DuckDB fails on the batch.
        SegmentMismatch: a segment's bytes or line count do not match its seal.
    """
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
    batch: list[SealedSegment],
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


class Hasher(threading.Thread):
    """Hashes each segment's sealed prefix in the background and compares it with the seal."""

    def __init__(self, items: list[tuple[Seal, Path]]) -> None:
        super().__init__(name="auditlog-compact-hash", daemon=True)
        self.items = items
        self.mismatch: str | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        for seal, path in self.items:
            try:
                h = hashlib.sha256()
                with open(path, "rb") as fh:
                    left = seal.length
                    while left > 0:
                        chunk = fh.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        h.update(chunk)
                        left -= len(chunk)
                if left > 0 or h.hexdigest() != seal.sha256:
                    self.mismatch = seal.segment
                    return
            except OSError as exc:
                self.error = exc
                self.mismatch = seal.segment
                return


def hash_error(hasher: Hasher) -> CompactionError:
    if hasher.error is not None:
        return CompactionError(f"segment {hasher.mismatch} cannot be read: {hasher.error.strerror}")
    return SegmentMismatch(
        f"segment {hasher.mismatch} does not match its seal (sha256); run `auditlog verify` on the journal"
    )


def sealed_input(seal: Seal, path: Path, staging: Path) -> Path:
    """The file to read for a segment: itself, or a copy of its sealed prefix when bytes follow it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CompactionError(f"segment {path.name} cannot be read: {exc.strerror}") from exc
    if size == seal.length:
        return path
    copy = staging / "in" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as src, open(copy, "wb") as dst:
        left = seal.length
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    return copy


def write_hours(con: Any, staging: Path, stem: str, *, level: int, row_group_size: int) -> list[FileEntry]:
    """Write one Parquet file per hour of the sorted batch (table ``sorted``): DuckDB extracts the columns
    in order and streams Arrow batches, pyarrow writes them (its writer keeps small row groups cheap).

    Each file goes to ``staging/files/date=D/hour=HH/<stem>.parquet``; its entry carries the row count per
    segment, the time range and a Bloom filter of its correlation ids.
    """
    stats: dict[tuple[str, int], tuple[int, str, str]] = {}
    per_segment: dict[tuple[str, int], dict[str, int]] = {}
    for day, hour, segment, rows, lo, hi in con.execute(
        "SELECT date::VARCHAR, hour, segment, count(*), min(ts)::VARCHAR, max(ts)::VARCHAR FROM sorted "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        key = (day, int(hour))
        n, first, last = stats.get(key, (0, lo, hi))
        stats[key] = (n + int(rows), min(first, lo), max(last, hi))
        per_segment.setdefault(key, {})[segment] = int(rows)
    cids: dict[tuple[str, int], list[str]] = {
        (day, int(hour)): ids
        for day, hour, ids in con.execute(
            "SELECT date::VARCHAR, hour, list(DISTINCT correlation_id) FILTER (correlation_id IS NOT NULL) "
            "FROM sorted GROUP BY ALL"
        ).fetchall()
    }
    files: list[FileEntry] = []
    for (day, hour), (rows, lo, hi) in stats.items():
        rel = f"date={day}/hour={hour:02d}/{stem}.parquet"
        query = COLUMNS_SQL.replace(
            "{src}", "(SELECT * FROM sorted WHERE date = $day::DATE AND hour = $hour)"
        )
        reader = con.sql(query, params={"day": day, "hour": hour}).to_arrow_reader(batch_size=row_group_size)
        target = staging / "files" / rel
        write_parquet(prefetch(reader), target, level=level, row_group_size=row_group_size)
        files.append(
            FileEntry(
                path=rel,
                date=day,
                hour=hour,
                rows=rows,
                bytes=target.stat().st_size,
                sha256=file_sha256(target),
                min_ts=lo,
                max_ts=hi,
                segments=dict(sorted(per_segment[(day, hour)].items())),
                cids=CidBloom.build(cids.get((day, hour)) or []).encode(),
            )
        )
    return files


def write_parquet(batches: Iterator[Any], target: Path, *, level: int, row_group_size: int) -> None:
    """Write Arrow record batches to one Parquet file with the layout's file schema (zstd)."""
    from auditlog.lake.engine import arrow_schema, require

    pq = require("pyarrow.parquet", "auditlog.lake")
    schema = arrow_schema(partitions=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(
        target,
        schema,
        compression="zstd",
        compression_level=level,
        use_dictionary=[c for c in schema.names if c not in _UNIQUE_COLUMNS],
    ) as writer:
        for batch in batches:
            writer.write_batch(batch.cast(schema), row_group_size=row_group_size)


# Columns whose values are (nearly) unique: a dictionary only costs time there.
_UNIQUE_COLUMNS = frozenset({"seq", "ts", "event_id", "span_id", "mac", "record"})


def prefetch(reader: Any, depth: int = 2) -> Iterator[Any]:
    """Yield the batches of an Arrow reader, reading ahead in a thread so DuckDB extracts the next batch
    while pyarrow compresses this one (both release the GIL)."""
    import queue

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            failure.append(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=produce, name="auditlog-compact-extract", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
    if failure:
        raise failure[0]


def sql_path(path: Path) -> str:
    text = str(path)
    if "'" in text:
        raise CompactionError(f"layout path {text!r} contains a quote")
    return text


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
