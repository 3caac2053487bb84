"""The compacted audit data layout: Parquet columns, the SQL that extracts them, and batch manifests.

One module says what the lake looks like; compaction (:mod:`auditlog.lake.compact`) writes it, shipping
(:mod:`auditlog.lake.ship`) copies it, and investigations (:mod:`auditlog.investigate.catalog`) read it.

Layout of a compacted directory (``JOURNAL/parquet`` unless told otherwise)::

    date=2026-11-22/source=web-1/part-00000001-00000004.parquet    rows of one day, zstd,
                                                                   sorted by correlation_id, ts, seq
    _manifest/source=web-1/00000001-00000004.json                  the batch's manifest (the commit)
    _staging/source=web-1/00000005-00000009/...                    a batch being written (transient)

Errors::

    LayoutError                           the audit data layout cannot be used
    └── CompactionError (OSError)         a segment cannot be compacted
        └── SegmentMismatch (ValueError)  a segment does not match its seal or its earlier compaction
"""

from __future__ import annotations

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
    "MANIFEST_DIR",
    "MANIFEST_FORMAT",
    "STAGING_DIR",
    "CompactionError",
    "FileEntry",
    "LayoutError",
    "Manifest",
    "SegmentEntry",
    "SegmentMismatch",
    "default_out",
    "load_manifests",
    "manifest_mac",
    "parse_manifest",
    "partition_value",
    "read_lines_sql",
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
        return hmac.compare_digest(self.mac, manifest_mac(master.derive("compaction"), self.content()))


def default_out(journal_dir: str | os.PathLike[str]) -> Path:
    """The default layout root for a journal: ``JOURNAL/parquet``."""
    return Path(journal_dir) / "parquet"


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


def partition_value(source: str) -> str:
    """A source name usable as a path component and a hive partition value (never ``..`` or ``/``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)[:200]
    return cleaned if cleaned.strip(".") else "_"


def _entry_dict(entry: SegmentEntry | FileEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__slots__}


def manifest_mac(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, orjson.dumps(content, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()
