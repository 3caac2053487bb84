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

Errors::

    LayoutError                           the audit data layout cannot be used
    └── CompactionError (OSError)         a segment cannot be compacted
        └── SegmentMismatch (ValueError)  a segment does not match its seal or its earlier compaction
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from store._segments import KeyCache, Seal, list_journal, read_seal
from store.exceptions import JournalCorrupt, JournalError
from store.keys import KeyRing

__all__ = [
    "COLUMNS",
    "CompactReport",
    "CompactionError",
    "FileEntry",
    "LayoutError",
    "MANIFEST_FORMAT",
    "Manifest",
    "SegmentEntry",
    "SegmentMismatch",
    "compact",
    "default_out",
    "load_manifests",
]

MANIFEST_FORMAT = "auditlog.compaction/1"
MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"

#: The columns of every Parquet file, in order: (name, DuckDB type, meaning). Partition columns ``date``
#: (``YYYY-MM-DD``, UTC) and ``source`` (the host) come from the path.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("seq", "BIGINT", "journal sequence number (global, consecutive)"),
    ("ts", "TIMESTAMP", "event time, UTC (ts, else timestamp, else the segment's creation)"),
    ("kind", "VARCHAR", "event kind (http.request, authz.denied, ...); 'log' for application log lines"),
    ("event", "VARCHAR", "structlog event name of an application log line"),
    ("level", "VARCHAR", "log level"),
    ("logger", "VARCHAR", "logger name"),
    ("event_id", "VARCHAR", "audit event id"),
    ("correlation_id", "VARCHAR", "correlation id"),
    ("span_id", "VARCHAR", "span id"),
    ("actor_subject", "VARCHAR", "actor.subject (verified)"),
    ("actor_tenant", "VARCHAR", "actor.tenant"),
    ("actor_client_id", "VARCHAR", "actor.client_id"),
    ("actor_scopes", "VARCHAR[]", "actor.scopes"),
    ("action_name", "VARCHAR", "action.name (tool or route)"),
    ("action_method", "VARCHAR", "action.method"),
    ("action_target", "VARCHAR", "action.target"),
    ("decision_allowed", "BOOLEAN", "decision.allowed"),
    ("decision_reason", "VARCHAR", "decision.reason"),
    ("decision_required", "VARCHAR[]", "decision.required (scopes)"),
    ("outcome_status", "VARCHAR", "outcome.status"),
    ("outcome_http_status", "INTEGER", "outcome.http_status"),
    ("outcome_error_type", "VARCHAR", "outcome.error_type"),
    ("outcome_duration_ms", "DOUBLE", "outcome.duration_ms"),
    ("body_ref", "VARCHAR", "body_ref (a string, or JSON text)"),
    ("fp_values", "VARCHAR[]", "every keyed fingerprint ('kid:hex') found under fp"),
    ("policy_id", "VARCHAR", "policy.id"),
    ("policy_hash", "VARCHAR", "policy.hash"),
    ("segment", "VARCHAR", "the journal segment the line came from"),
    ("mac", "VARCHAR", "the line's chain MAC"),
    ("record", "VARCHAR", "the journaled line, byte for byte"),
)

# JSON paths extracted from each line after sorting; indexes are 1-based in SQL.
_PATHS = (
    "$.kind", "$.event", "$.level", "$.logger", "$.event_id", "$.span_id",
    "$.actor.subject", "$.actor.tenant", "$.actor.client_id", "$.action.name", "$.action.method",
    "$.action.target", "$.decision.allowed", "$.decision.reason", "$.outcome.status", "$.outcome.http_status",
    "$.outcome.error_type", "$.outcome.duration_ms", "$.body_ref", "$.policy.id", "$.policy.hash", "$.mac",
    "$.fp", "$.actor.scopes", "$.decision.required",
)  # fmt: skip
_FP_RE = r'"([A-Za-z0-9_.-]{1,64}:[0-9a-f]{16,128})"'

#: SQL: from a relation with (line, segment, created) compute the sort keys. ``ts`` is ``$.ts`` (audit
#: events: ISO 8601; journal headers: epoch seconds), else ``$.timestamp`` (structlog), else ``created``.
KEYS_SQL = """
SELECT line, segment, TRY_CAST(k[1] AS BIGINT) AS seq, k[4] AS correlation_id,
  coalesce(
    TRY(make_timestamp(TRY_CAST(TRY_CAST(coalesce(k[2], k[3]) AS DOUBLE) * 1000000 AS BIGINT))),
    try_strptime(coalesce(k[2], k[3]), ['%Y-%m-%dT%H:%M:%S.%fZ', '%Y-%m-%dT%H:%M:%SZ']),
    TRY_CAST(TRY_CAST(coalesce(k[2], k[3]) AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP),
    created) AS ts
FROM (SELECT line, segment, created,
        json_extract_string(line, ['$.seq', '$.ts', '$.timestamp', '$.correlation_id']) AS k
      FROM {src})
"""

#: SQL: from a relation with (line, segment, seq, ts, correlation_id) compute every column of COLUMNS.
COLUMNS_SQL = """
SELECT seq, ts, coalesce(v[1], CASE WHEN v[2] IS NOT NULL THEN 'log' END) AS kind, v[2] AS event,
  v[3] AS level, v[4] AS logger, v[5] AS event_id, correlation_id, v[6] AS span_id,
  v[7] AS actor_subject, v[8] AS actor_tenant, v[9] AS actor_client_id,
  json_extract_string(v[24], '$[*]') AS actor_scopes,
  v[10] AS action_name, v[11] AS action_method, v[12] AS action_target,
  TRY_CAST(v[13] AS BOOLEAN) AS decision_allowed, v[14] AS decision_reason,
  json_extract_string(v[25], '$[*]') AS decision_required,
  v[15] AS outcome_status, TRY_CAST(v[16] AS INTEGER) AS outcome_http_status, v[17] AS outcome_error_type,
  TRY_CAST(v[18] AS DOUBLE) AS outcome_duration_ms, v[19] AS body_ref,
  regexp_extract_all(v[23], '@FP_RE@', 1) AS fp_values,
  v[20] AS policy_id, v[21] AS policy_hash, segment, v[22] AS mac, line AS record
FROM (SELECT *, json_extract_string(line, [@PATHS@]) AS v FROM {src})
""".replace("@FP_RE@", _FP_RE).replace("@PATHS@", ", ".join(f"'{p}'" for p in _PATHS))


def read_lines_sql(n_files: int) -> str:
    """The DuckDB relation of raw lines for ``n_files`` segment files bound as parameters ``?``.

    Each file is read as CSV with a delimiter that a journal line cannot contain (orjson escapes control
    characters), so every line arrives whole in the ``line`` column.
    """
    return (
        "read_csv(["
        + ", ".join("?" for _ in range(n_files))
        + "], columns={'line': 'VARCHAR'}, header=false, "
        "delim=E'\\x01', quote='', escape='', auto_detect=false, new_line='\\n', "
        "max_line_size=20000000, filename=true)"
    )


class LayoutError(Exception):
    """Base class of errors about the audit data layout (segments, Parquet files, manifests)."""


class CompactionError(LayoutError, OSError):
    """A segment cannot be compacted (unreadable, unsealed seal MAC, or a write failed)."""


class SegmentMismatch(CompactionError, ValueError):
    """A segment does not match its seal, or its seal changed since it was compacted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentEntry:
    """One compacted segment as its manifest records it (the seal's fields, plus the seal file's hash)."""

    segment: str
    kid: str
    count: int
    first_seq: int | None
    last_seq: int
    last_mac: str
    sha256: str
    bytes: int
    created: float
    sealed: float
    seal_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One Parquet file of a batch: where it is (relative to the layout root), its day and contents."""

    path: str
    date: str
    rows: int
    bytes: int
    sha256: str
    min_ts: str | None
    max_ts: str | None
    segments: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A committed compaction batch. ``path`` is the manifest file (not part of the signed content)."""

    batch: str
    source: str
    created: str
    rows: int
    segments: tuple[SegmentEntry, ...]
    files: tuple[FileEntry, ...]
    kid: str
    mac: str
    path: Path | None = field(default=None, compare=False)

    def content(self) -> dict[str, Any]:
        """The manifest as written, without its ``mac``."""
        return {
            "format": MANIFEST_FORMAT,
            "batch": self.batch,
            "source": self.source,
            "created": self.created,
            "rows": self.rows,
            "kid": self.kid,
            "segments": [_entry_dict(s) for s in self.segments],
            "files": [_entry_dict(f) for f in self.files],
        }

    def verify_mac(self, keys: KeyRing) -> bool:
        """True when the manifest's HMAC checks out under the key named by ``kid``."""
        master = keys.get(self.kid)
        if master is None:
            return False
        return hmac.compare_digest(self.mac, _manifest_mac(master.derive("compaction"), self.content()))


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


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as batches advance (``total`` in bytes of segments)."""

# The boundary to the file system, as module names so a test can interrupt a run.
_replace = os.replace


def default_out(journal_dir: str | os.PathLike[str]) -> Path:
    """The default layout root for a journal: ``JOURNAL/parquet``."""
    return Path(journal_dir) / "parquet"


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


def load_manifests(root: str | os.PathLike[str]) -> list[Manifest]:
    """Read every committed manifest under a layout root, ordered by source and batch.

    Args:
        root: the layout root (a missing directory has no manifests).

    Returns:
        The manifests.

    Raises:
        LayoutError: a manifest cannot be read or parsed (its path is named).
    """
    base = Path(root) / MANIFEST_DIR
    if not base.is_dir():
        return []
    found: list[Manifest] = []
    for path in sorted(base.glob("source=*/*.json")):
        try:
            found.append(parse_manifest(path.read_bytes(), path=path))
        except OSError as exc:
            raise LayoutError(f"manifest {path} cannot be read: {exc.strerror}") from exc
    return found


def parse_manifest(data: bytes, *, path: Path | None = None) -> Manifest:
    """Parse a manifest file's bytes.

    Raises:
        LayoutError: not a manifest of this format.
    """
    where = str(path) if path is not None else "manifest"
    try:
        obj = orjson.loads(data)
        if obj.get("format") != MANIFEST_FORMAT:
            raise LayoutError(f"{where}: not a {MANIFEST_FORMAT} manifest")
        return Manifest(
            batch=obj["batch"],
            source=obj["source"],
            created=obj["created"],
            rows=int(obj["rows"]),
            segments=tuple(SegmentEntry(**s) for s in obj["segments"]),
            files=tuple(FileEntry(**f) for f in obj["files"]),
            kid=obj["kid"],
            mac=obj["mac"],
            path=path,
        )
    except LayoutError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LayoutError(f"{where}: malformed manifest ({type(exc).__name__})") from exc


# -- internals ---------------------------------------------------------------------------------------


def _entry_dict(entry: SegmentEntry | FileEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__slots__}


def _manifest_mac(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, orjson.dumps(content, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


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


def partition_value(source: str) -> str:
    """A source name usable as a path component and a hive partition value (never ``..`` or ``/``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)[:200]
    return cleaned if cleaned.strip(".") else "_"


class _Hasher(threading.Thread):
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


def _compact_batch(
    batch: list[tuple[Seal, Path, Path]],
    root: Path,
    keys: KeyRing,
    *,
    memory_limit: str,
    level: int,
    row_group_size: int,
) -> Manifest:
    from auditlog._sandbox import loader

    source = batch[0][0].source
    src_dir = f"source={partition_value(source)}"
    name = _batch_name(batch)
    staging = root / STAGING_DIR / src_dir / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "spill").mkdir(parents=True)
    except OSError as exc:
        raise CompactionError(f"cannot create staging directory {staging}: {exc.strerror}") from exc
    hasher = _Hasher([(s, p) for s, p, _ in batch])
    hasher.start()
    inputs = [_sealed_input(seal, path, staging) for seal, path, _ in batch]
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
        files = _write_days(con, staging, src_dir, name, level=level, row_group_size=row_group_size)
    except Exception as exc:
        hasher.join()
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
        if hasher.mismatch is not None:  # the bytes changed: that explains any parse or count failure
            raise _hash_error(hasher) from exc
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
        raise _hash_error(hasher)
    manifest = _commit(batch, root, src_dir, name, source, files, keys)
    _roll_forward(manifest, root, staging)
    return manifest


def _hash_error(hasher: _Hasher) -> CompactionError:
    if hasher.error is not None:
        return CompactionError(f"segment {hasher.mismatch} cannot be read: {hasher.error.strerror}")
    return SegmentMismatch(
        f"segment {hasher.mismatch} does not match its seal (sha256); run `auditlog verify` on the journal"
    )


def _sealed_input(seal: Seal, path: Path, staging: Path) -> Path:
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


def _write_days(
    con: Any, staging: Path, src_dir: str, name: str, *, level: int, row_group_size: int
) -> list[FileEntry]:
    """Write one Parquet file per day of the sorted batch: DuckDB extracts the columns in order and streams
    Arrow batches, pyarrow writes them (its writer keeps small row groups cheap)."""
    from auditlog._sandbox import arrow_schema, require

    pq = require("pyarrow.parquet", "auditlog.compact")
    schema = arrow_schema()
    schema = schema.remove(schema.get_field_index("source")).remove(schema.get_field_index("date"))
    con.execute("SET preserve_insertion_order = true")
    stats: dict[str, tuple[int, str, str]] = {}
    per_segment: dict[str, dict[str, int]] = {}
    for day, segment, rows, lo, hi in con.execute(
        "SELECT date, segment, count(*), min(ts)::VARCHAR, max(ts)::VARCHAR FROM sorted "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        n, first, last = stats.get(day, (0, lo, hi))
        stats[day] = (n + int(rows), min(first, lo), max(last, hi))
        per_segment.setdefault(day, {})[segment] = int(rows)
    files: list[FileEntry] = []
    for day, (rows, lo, hi) in stats.items():
        rel = f"date={day}/{src_dir}/part-{name}.parquet"
        target = staging / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        query = COLUMNS_SQL.replace("{src}", "(SELECT * FROM sorted WHERE date = $day)")
        reader = con.sql(query, params={"day": day}).to_arrow_reader(batch_size=row_group_size)
        with pq.ParquetWriter(
            target,
            schema,
            compression="zstd",
            compression_level=level,
            use_dictionary=[c for c in schema.names if c not in _UNIQUE_COLUMNS],
        ) as writer:
            for batch in _prefetch(reader):
                writer.write_batch(batch.cast(schema), row_group_size=row_group_size)
        files.append(
            FileEntry(
                path=rel,
                date=day,
                rows=rows,
                bytes=target.stat().st_size,
                sha256=_file_sha256(target),
                min_ts=lo,
                max_ts=hi,
                segments=dict(sorted(per_segment[day].items())),
            )
        )
    return files


# Columns whose values are (nearly) unique: a dictionary only costs time there.
_UNIQUE_COLUMNS = frozenset({"seq", "ts", "event_id", "span_id", "mac", "record"})


def _prefetch(reader: Any, depth: int = 2) -> Iterator[Any]:
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


def _sql_path(path: Path) -> str:
    text = str(path)
    if "'" in text:
        raise CompactionError(f"layout path {text!r} contains a quote")
    return text


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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
            seal_sha256=_file_sha256(seal_path),
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
    mac = _manifest_mac(keys.active.derive("compaction"), content)
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


def _recover(root: Path) -> list[str]:
    """Finish or discard what an interrupted run left in ``_staging``."""
    base = root / STAGING_DIR
    if not base.is_dir():
        return []
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
    return done
