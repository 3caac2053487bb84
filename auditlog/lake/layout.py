"""The audit lake's data layout (v2): Parquet columns, partitions, the SQL that extracts them, manifests.

One module says what the lake looks like; compaction (:mod:`~auditlog.lake.compact`) writes it, merging
(:mod:`~auditlog.lake.merge`) rewrites it, shipping (:mod:`~auditlog.lake.ship`) copies it, the DDL
(:mod:`~auditlog.lake.ddl`) declares it to engines and investigations (:mod:`auditlog.investigate.catalog`)
read it.

Layout of a layout root (``TRAIL/parquet`` unless told otherwise; the same under ``s3://bucket/prefix``)::

    date=2026-11-22/hour=08/part-<stream>-00000001-00000004.parquet   one stream's rows of one hour, zstd,
                                                                      sorted by correlation_id, ts, seq
    _manifest/stream=<stream>/00000001-00000004.json                  the batch's manifest (the commit)
    _staging/stream=<stream>/00000005-00000009/...                    a batch being written (transient)

Partitions are ``date`` (a DATE, ``YYYY-MM-DD``) and ``hour`` (an INTEGER, ``HH`` in the path), both UTC,
and nothing else: ``source`` (the host), ``stream`` (the writer) and ``trail_id`` are columns of every file,
so one table spans a fleet. ``ts`` is a UTC-adjusted timestamp (Parquet ``isAdjustedToUTC=true``: Spark and
Athena read a ``timestamp``, DuckDB a ``TIMESTAMP WITH TIME ZONE``). ``record`` keeps the journaled line
byte for byte and ``mac`` its chain MAC, in every row, so rows re-verify against the chain.

Typed payload columns: ``args_shape`` and ``result_shape`` (JSON text: ``json_extract`` in Athena/Trino,
``get_json_object`` in Spark, ``->>`` in DuckDB), ``fp`` (a MAP from the dotted field path to its keyed
fingerprint ``kid:hex``) and ``fp_values`` (every fingerprint, for ``contains``/``list_has_any``).

Ordering across streams. Each stream's ``seq`` is its own; across streams rows are ordered by ``ts``, then
``stream``, then ``seq``. ``ts`` is each writer's wall clock, so a cross-host order is only as good as the
hosts' clock synchronisation (NTP keeps it to milliseconds; a step of the clock reorders).

Layout v1 (``date=/source=`` partitions, ``auditlog.compaction/1`` manifests) is not read: there were no
users; re-run ``auditlog compact`` into a fresh root.

Errors::

    LayoutError                           the audit data layout cannot be used
    └── CompactionError (OSError)         a segment cannot be compacted
        └── SegmentMismatch (ValueError)  a segment does not match its seal or its earlier compaction
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from store.keys import KeyRing

__all__ = [
    "COLUMNS",
    "COLUMNS_SQL",
    "KEYS_SQL",
    "LAYOUT_VERSION",
    "MANIFEST_DIR",
    "MANIFEST_FORMAT",
    "PARTITIONS",
    "STAGING_DIR",
    "CidBloom",
    "CompactionError",
    "FileEntry",
    "LayoutError",
    "Manifest",
    "SegmentEntry",
    "SegmentMismatch",
    "default_out",
    "live_manifests",
    "load_manifests",
    "manifest_mac",
    "parse_manifest",
    "partition_value",
    "read_lines_sql",
    "read_parquet_sql",
]

LAYOUT_VERSION = 2
MANIFEST_FORMAT = "auditlog.compaction/2"
MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"

#: The hive partitions, in path order: (name, DuckDB type, meaning).
PARTITIONS: tuple[tuple[str, str, str], ...] = (
    ("date", "DATE", "UTC day of ts (date=YYYY-MM-DD)"),
    ("hour", "INTEGER", "UTC hour of ts, 0-23 (hour=HH)"),
)

#: The columns of every Parquet file, in order: (name, DuckDB type, meaning).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ts", "TIMESTAMPTZ", "event time, UTC-adjusted (ts, else timestamp, else the segment's creation)"),
    ("source", "VARCHAR", "the writer's source (host or pod) from its stream's header"),
    ("stream", "VARCHAR", "the writer's stream id within its trail"),
    ("trail_id", "VARCHAR", "the trail the stream belongs to (one per host directory)"),
    ("seq", "BIGINT", "sequence number within the stream (consecutive from 1)"),
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
    ("args_shape", "VARCHAR", "args_shape, as JSON text"),
    ("result_shape", "VARCHAR", "result_shape, as JSON text"),
    ("body_ref", "VARCHAR", "body_ref (a string, or JSON text)"),
    ("fp", "MAP(VARCHAR, VARCHAR)", "the fp tree: dotted field path -> keyed fingerprint 'kid:hex'"),
    ("fp_values", "VARCHAR[]", "every keyed fingerprint ('kid:hex') found under fp"),
    ("policy_id", "VARCHAR", "policy.id"),
    ("policy_hash", "VARCHAR", "policy.hash"),
    ("segment", "VARCHAR", "the stream's segment the line came from"),
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

#: SQL: from a relation with (line, segment, created, source, stream, trail_id) compute the sort keys.
#: ``ts`` is ``$.ts`` (audit events: ISO 8601; headers: epoch seconds), else ``$.timestamp`` (structlog),
#: else ``created``; a naive TIMESTAMP in UTC (the loader's time zone).
KEYS_SQL = """
SELECT line, segment, source, stream, trail_id, TRY_CAST(k[1] AS BIGINT) AS seq, k[4] AS correlation_id,
  coalesce(
    TRY(make_timestamp(TRY_CAST(TRY_CAST(coalesce(k[2], k[3]) AS DOUBLE) * 1000000 AS BIGINT))),
    try_strptime(coalesce(k[2], k[3]), ['%Y-%m-%dT%H:%M:%S.%fZ', '%Y-%m-%dT%H:%M:%SZ']),
    TRY_CAST(TRY_CAST(coalesce(k[2], k[3]) AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP),
    created) AS ts
FROM (SELECT line, segment, created, source, stream, trail_id,
        json_extract_string(line, ['$.seq', '$.ts', '$.timestamp', '$.correlation_id']) AS k
      FROM {src})
"""

#: SQL: from a relation with the KEYS_SQL columns compute every column of COLUMNS, in order.
COLUMNS_SQL = """
SELECT timezone('UTC', ts) AS ts, source, stream, trail_id, seq,
  coalesce(v[1], CASE WHEN v[2] IS NOT NULL THEN 'log' END) AS kind, v[2] AS event,
  v[3] AS level, v[4] AS logger, v[5] AS event_id, correlation_id, v[6] AS span_id,
  v[7] AS actor_subject, v[8] AS actor_tenant, v[9] AS actor_client_id,
  json_extract_string(v[24], '$[*]') AS actor_scopes,
  v[10] AS action_name, v[11] AS action_method, v[12] AS action_target,
  TRY_CAST(v[13] AS BOOLEAN) AS decision_allowed, v[14] AS decision_reason,
  json_extract_string(v[25], '$[*]') AS decision_required,
  v[15] AS outcome_status, TRY_CAST(v[16] AS INTEGER) AS outcome_http_status, v[17] AS outcome_error_type,
  TRY_CAST(v[18] AS DOUBLE) AS outcome_duration_ms,
  json_extract(line, '$.args_shape')::VARCHAR AS args_shape,
  json_extract(line, '$.result_shape')::VARCHAR AS result_shape, v[19] AS body_ref,
  CASE WHEN v[23] IS NOT NULL AND v[23] LIKE '{%' THEN
    (SELECT map_from_entries(
       list((substr(t.fullkey, 3), json_extract_string(t.atom, '$')) ORDER BY t.fullkey))
     FROM json_tree(v[23]) t WHERE t.type = 'VARCHAR')
  END AS fp,
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


def read_parquet_sql(files: list[str] | tuple[str, ...]) -> str:
    """DuckDB's ``read_parquet`` over ``files`` (paths under a layout root), partitions typed as declared.

    Raises:
        LayoutError: a path holds a quote (it is spliced into SQL).
    """
    if any("'" in f for f in files):
        raise LayoutError("a layout path contains a quote")
    quoted = ", ".join(f"'{f}'" for f in files)
    types = ", ".join(f"'{n}': {t}" for n, t, _ in PARTITIONS)
    return f"read_parquet([{quoted}], hive_partitioning = true, hive_types = {{{types}}})"


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
    """One Parquet file of a batch: where it is (relative to the layout root), its hour and contents.

    ``cids`` is a Bloom filter of the file's correlation ids (:class:`CidBloom`, base64), so a reader fetches
    only the files that may hold one id.
    """

    path: str
    date: str
    hour: int
    rows: int
    bytes: int
    sha256: str
    min_ts: str | None
    max_ts: str | None
    segments: dict[str, int]
    cids: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A committed batch of one stream. ``path`` is the manifest file (not part of the signed content).

    ``supersedes`` names the batches a merge replaced (their manifests and files are deleted after this one
    is committed; a reader ignores a manifest another one supersedes).
    """

    batch: str
    stream: str
    source: str
    instance: str | None
    trail_id: str | None
    created: str
    rows: int
    segments: tuple[SegmentEntry, ...]
    files: tuple[FileEntry, ...]
    kid: str
    mac: str
    supersedes: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    def content(self) -> dict[str, Any]:
        """The manifest as written, without its ``mac``."""
        return {
            "format": MANIFEST_FORMAT,
            "batch": self.batch,
            "stream": self.stream,
            "source": self.source,
            "instance": self.instance,
            "trail_id": self.trail_id,
            "created": self.created,
            "rows": self.rows,
            "kid": self.kid,
            "supersedes": list(self.supersedes),
            "segments": [_entry_dict(s) for s in self.segments],
            "files": [_entry_dict(f) for f in self.files],
        }

    def verify_mac(self, keys: KeyRing) -> bool:
        """True when the manifest's HMAC checks out under the key named by ``kid``."""
        master = keys.get(self.kid)
        if master is None:
            return False
        return hmac.compare_digest(self.mac, manifest_mac(master.derive("compaction"), self.content()))

    @property
    def key(self) -> str:
        """The manifest's path under the layout root: ``_manifest/stream=<stream>/<batch>.json``."""
        return f"{MANIFEST_DIR}/stream={partition_value(self.stream)}/{self.batch}.json"


class CidBloom:
    """A Bloom filter of correlation ids (4 probes from SHA-256, ~10 bits per id: ~1% false positives)."""

    __slots__ = ("bits", "m")

    PROBES = 4

    def __init__(self, bits: bytes) -> None:
        self.bits = bits
        self.m = len(bits) * 8

    @classmethod
    def build(cls, ids: list[str]) -> CidBloom:
        m = max(64, ((len(ids) * 10 + 7) // 8) * 8)
        arr = bytearray(m // 8)
        for cid in ids:
            for p in cls._probes(cid, m):
                arr[p >> 3] |= 1 << (p & 7)
        return cls(bytes(arr))

    @classmethod
    def _probes(cls, cid: str, m: int) -> list[int]:
        d = hashlib.sha256(cid.encode("utf-8", "surrogatepass")).digest()
        return [int.from_bytes(d[i * 8 : i * 8 + 8], "little") % m for i in range(cls.PROBES)]

    def may_hold(self, cid: str) -> bool:
        return all(self.bits[p >> 3] & (1 << (p & 7)) for p in self._probes(cid, self.m))

    def encode(self) -> str:
        return base64.b64encode(self.bits).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> CidBloom | None:
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            return None
        return cls(raw) if raw else None


def default_out(journal_dir: str | os.PathLike[str]) -> Path:
    """The default layout root of a trail (or journal): ``DIR/parquet``."""
    return Path(journal_dir) / "parquet"


def load_manifests(root: str | os.PathLike[str]) -> list[Manifest]:
    """Read every committed manifest under a layout root, ordered by stream and batch.

    Manifests that another one supersedes (a merge that was interrupted before it deleted them) are left
    out: see :func:`live_manifests`.

    Raises:
        LayoutError: a manifest cannot be read or parsed (its path is named).
    """
    base = Path(root) / MANIFEST_DIR
    if not base.is_dir():
        return []
    found: list[Manifest] = []
    for path in sorted(base.glob("stream=*/*.json")):
        try:
            found.append(parse_manifest(path.read_bytes(), path=path))
        except OSError as exc:
            raise LayoutError(f"manifest {path} cannot be read: {exc.strerror}") from exc
    if not found and any(base.glob("source=*/*.json")):
        raise LayoutError(
            f"{root} is a v1 layout (date=/source=), which is no longer read; compact into a fresh root"
        )
    return live_manifests(found)


def live_manifests(manifests: list[Manifest]) -> list[Manifest]:
    """Drop the manifests another one (of the same stream) supersedes; order by stream and batch."""
    gone = {(m.stream, b) for m in manifests for b in m.supersedes}
    return sorted(
        (m for m in manifests if (m.stream, m.batch) not in gone), key=lambda m: (m.stream, m.batch)
    )


def parse_manifest(data: bytes, *, path: Path | None = None) -> Manifest:
    """Parse a manifest file's bytes.

    Raises:
        LayoutError: not a manifest of this format.
    """
    where = str(path) if path is not None else "manifest"
    try:
        obj = orjson.loads(data)
        if obj.get("format") != MANIFEST_FORMAT:
            raise LayoutError(f"{where}: not a {MANIFEST_FORMAT} manifest (layout v1 is no longer read)")
        return Manifest(
            batch=obj["batch"],
            stream=obj["stream"],
            source=obj["source"],
            instance=obj.get("instance"),
            trail_id=obj.get("trail_id"),
            created=obj["created"],
            rows=int(obj["rows"]),
            segments=tuple(SegmentEntry(**s) for s in obj["segments"]),
            files=tuple(FileEntry(**f) for f in obj["files"]),
            kid=obj["kid"],
            mac=obj["mac"],
            supersedes=tuple(str(b) for b in obj.get("supersedes", ())),
            path=path,
        )
    except LayoutError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LayoutError(f"{where}: malformed manifest ({type(exc).__name__})") from exc


def partition_value(name: str) -> str:
    """A name usable as a path component and a hive partition value (never ``..`` or ``/``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200]
    return cleaned if cleaned.strip(".") else "_"


def _entry_dict(entry: SegmentEntry | FileEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__slots__}


def manifest_mac(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, orjson.dumps(content, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()
