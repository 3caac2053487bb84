"""Incident reconstruction: named queries over journal segments and compacted Parquet, in a DuckDB sandbox.

::

    from auditlog.query import Investigation

    with Investigation("journal/", audit=handle) as inv:      # or "s3://bucket/prefix"
        inv.timeline("4bf92f3577b34da6a3ce929d0e0e4736")      # every step of one request, in order
        inv.denials(since="24h")                               # refused calls
        inv.find("token-the-attacker-used")                    # which calls carried that value?
        inv.sql("SELECT tool, count(*) FROM events GROUP BY ALL")

A source is a journal directory (its ``parquet/`` layout is used for compacted segments, the JSONL for the
rest, the active segment included), a compacted layout root, or ``s3://bucket/prefix`` (only the Parquet
files a query's time range needs are fetched into a local cache). Every query sees one view, ``events``
(the columns of :data:`auditlog.compact.COLUMNS`, the partition columns ``date`` and ``source``, and the
derived ``tool`` and ``route``), on one of two locked DuckDB connections (:mod:`auditlog._sandbox`):

- user SQL (:meth:`Investigation.sql`) runs in the sandbox, whose engine has no file access at all
  (``enable_external_access = false``, no allowed directory or path, no temporary directory, settings
  locked) and sees the data only as read-only Arrow scans; it accepts one read-only statement;
- the named queries (library SQL, parameters bound) run on a reader whose engine may read exactly the
  source's Parquet files (``allowed_paths``) with DuckDB's own reader, and nothing else.

Every query is itself journaled as a ``query.run`` event through the audit handle: the query name, the
*shapes* of its parameters (never their values: ``find`` journals ``{"t": "str", "len": 24}``, not the
token), the SHA-256 of user SQL, the row count and the duration. The event is written before rows are
returned; a journal that refuses it refuses the query.

Errors::

    QueryError
    ├── EmptySource           (FileNotFoundError)  no segments and no Parquet files at the source
    ├── UnknownCorrelationId  (LookupError)        timeline() found no event with that id
    ├── BadTimeRange          (ValueError)         unparseable since/until, or since after until
    ├── CorruptSource         (ValueError)         a segment or Parquet file cannot be read (names it)
    ├── NotJournaled          (RuntimeError)       no audit handle, or the journal refused query.run
    └── SandboxViolation      (PermissionError)    user SQL that is not a single read-only query
"""

from __future__ import annotations

import getpass
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from auditlog import _sandbox
from auditlog._sandbox import Catalog, require

if TYPE_CHECKING:
    from store.keys import KeyRing

__all__ = [
    "AuditSink",
    "BadTimeRange",
    "CorruptSource",
    "EmptySource",
    "Investigation",
    "NotJournaled",
    "QueryError",
    "Result",
    "SandboxViolation",
    "UnknownCorrelationId",
    "parse_time",
]

TimeArg = datetime | date | str | None
_T = TypeVar("_T")
TopBy = Literal["tool", "route", "actor"]


class QueryError(Exception):
    """Base class of every error raised by an investigation."""


class EmptySource(QueryError, FileNotFoundError):
    """The source holds no journal segment and no Parquet file."""


class UnknownCorrelationId(QueryError, LookupError):
    """No event carries the correlation id asked for."""


class BadTimeRange(QueryError, ValueError):
    """A time bound cannot be parsed, or ``since`` is after ``until``."""


class CorruptSource(QueryError, ValueError):
    """A segment or Parquet file cannot be read; the message names it (``auditlog verify`` says more)."""


class NotJournaled(QueryError, RuntimeError):
    """The investigation cannot be journaled (no audit handle, or the journal refused the event)."""


class SandboxViolation(QueryError, _sandbox.SandboxViolation):
    """User SQL that is not one read-only query, or that the sandboxed engine refused."""


class AuditSink(Protocol):
    """What an investigation journals through: :class:`auditlog.AuditHandle` or anything with ``emit``."""

    def emit(self, event: dict[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Rows of one query: ``columns`` and ``rows`` (tuples), in order. Iterating yields dicts."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def as_dicts(self) -> list[dict[str, Any]]:
        """Every row as a dict."""
        return list(self)

    def column(self, name: str) -> list[Any]:
        """The values of one column.

        Raises:
            KeyError: no such column.
        """
        i = self.columns.index(name) if name in self.columns else None
        if i is None:
            raise KeyError(name)
        return [r[i] for r in self.rows]

    def to_arrow(self) -> Any:
        """The rows as a ``pyarrow.Table``."""
        pa = require("pyarrow")
        return pa.Table.from_pylist(self.as_dicts()) if self.rows else pa.table({c: [] for c in self.columns})


# -- time ranges -------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,6})\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: TimeArg, *, name: str = "time", now: datetime | None = None) -> datetime | None:
    """Parse a time bound to a naive UTC ``datetime`` (the Parquet ``ts`` convention).

    Accepts a ``datetime`` (naive means UTC), a ``date`` (midnight UTC), an ISO 8601 string
    (``2026-11-22``, ``2026-11-22T10:00``, ``...Z``, ``...+02:00``) or a relative duration meaning "that
    long ago" (``30m``, ``24h``, ``7d``, ``2w``).

    Args:
        value: the bound, or None.
        name: the parameter's name, for the error message.
        now: the current time for relative bounds (default: now).

    Returns:
        The bound as naive UTC, or None.

    Raises:
        BadTimeRange: the value cannot be parsed.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        m = _RELATIVE.fullmatch(text)
        if m:
            ref = now or datetime.now(UTC).replace(tzinfo=None)
            return ref - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parse_time(parsed, name=name)
    raise BadTimeRange(
        f"{name}: expected an ISO 8601 date or time (2026-11-22, 2026-11-22T10:00Z) or a duration like "
        "30m, 24h, 7d"
    )


def _range(since: TimeArg, until: TimeArg) -> tuple[datetime | None, datetime | None]:
    lo = parse_time(since, name="since")
    hi = parse_time(until, name="until")
    if lo is not None and hi is not None and lo > hi:
        raise BadTimeRange("since is after until: the time range is empty")
    return lo, hi


def _shape(value: object) -> dict[str, Any]:
    """The shape of a query parameter, as journaled: its type and size, never its value."""
    if value is None:
        return {"t": "null"}
    if isinstance(value, bool):
        return {"t": "bool"}
    if isinstance(value, int | float):
        return {"t": "num"}
    if isinstance(value, str):
        return {"t": "str", "len": len(value)}
    if isinstance(value, bytes | bytearray):
        return {"t": "bytes", "len": len(value)}
    if isinstance(value, datetime | date):
        return {"t": "time"}
    if isinstance(value, Mapping):
        return {"t": "obj", "len": len(value)}
    if isinstance(value, Sequence):
        return {"t": "arr", "len": len(value)}
    return {"t": "other"}


# -- the investigation -------------------------------------------------------------------------------

_EVENTS_VIEW = (
    "CREATE OR REPLACE VIEW events AS SELECT *, "
    "CASE WHEN action_method = 'tools/call' THEN action_name END AS tool, "
    "CASE WHEN list_contains(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], "
    "upper(action_method)) THEN action_name END AS route "
    "FROM (SELECT * FROM {parquet} UNION ALL BY NAME SELECT * FROM _live)"
)
_CALLS = "(kind LIKE 'http.%' OR kind LIKE 'mcp.%' OR kind = 'authz.denied')"
_DENIED = "(kind = 'authz.denied' OR decision_allowed = false)"
_BODY_KINDS = "('body.read', 'body.read_denied', 'body.integrity_failed')"
_TIMELINE_COLS = (
    "ts, seq, kind, coalesce(tool, route, event) AS what, action_method AS method, actor_subject AS actor, "
    "actor_tenant AS tenant, decision_allowed AS allowed, decision_reason AS reason, "
    "outcome_status AS status, outcome_http_status AS http_status, outcome_error_type AS error_type, "
    "outcome_duration_ms AS duration_ms, source, segment"
)


class Investigation:
    """Named incident queries over one audit data source, each journaled as ``query.run``.

    Args:
        source: a journal directory, a compacted layout root, or ``s3://bucket/prefix``.
        audit: where ``query.run`` events go (an :class:`~auditlog.AuditHandle`); default: the handle of
            the active :func:`auditlog.configure`.
        keys: the key ring for :meth:`find` (default: the audit handle's ``keys``).
        investigator: who runs the queries, recorded as the event's actor (default: the OS user).
        cache_dir: local cache for ``s3://`` sources (default: a per-user cache directory).
        s3_client: a boto3 S3 client for ``s3://`` sources (default: ``boto3.client("s3")``).
        memory_limit: the sandbox's DuckDB memory limit.
        threads: the sandbox's DuckDB worker threads (default: one per core).

    Raises:
        EmptySource: the source holds no segment and no Parquet file.
        CorruptSource: a segment or manifest cannot be read.
        NotJournaled: no audit handle is given or configured.
        ImportError: duckdb or pyarrow is missing (``auditlog-pipeline[query]``).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        audit: AuditSink | None = None,
        keys: KeyRing | None = None,
        investigator: str | None = None,
        cache_dir: str | Path | None = None,
        s3_client: Any = None,
        memory_limit: str = "1GB",
        threads: int | None = None,
    ) -> None:
        if audit is None:
            from auditlog.pipeline import current_handle

            audit = current_handle()
        if audit is None:
            raise NotJournaled(
                "investigations are journaled: pass audit= (the handle auditlog.configure returns) "
                "or call auditlog.configure first"
            )
        self._audit = audit
        self._keys: KeyRing | None = keys if keys is not None else getattr(audit, "keys", None)
        self._investigator = investigator or _os_user()
        self._label = str(source)
        self._memory_limit = memory_limit
        self._threads = threads
        self._closed = True
        self._catalog: Catalog = _translate(
            lambda: _sandbox.open_catalog(source, cache_dir=cache_dir, s3_client=s3_client)
        )
        self._con = _sandbox.sandbox(memory_limit=memory_limit, threads=threads)
        self._fast: Any = None
        self._fast_files: tuple[str, ...] | None = None
        self._sandbox_files: tuple[str, ...] | None = None
        self._closed = False
        try:
            self._live = _translate(self._catalog.live_table)
            self._con.register("_live", self._live)
            self._con.register("_parquet", _sandbox.arrow_schema().empty_table())
            self._con.execute(_EVENTS_VIEW.replace("{parquet}", "_parquet"))
            self._sandbox_files = ()
            if self._catalog.kind != "s3":
                self._reader_for(None, None)  # s3: fetched per query, for its time range only
        except BaseException:
            self.close()
            raise

    # -- named queries -------------------------------------------------------------------------------

    def timeline(self, correlation_id: str) -> Result:
        """Every event of one correlation id (audit events and application log lines), in time order.

        Args:
            correlation_id: the id (from a response's ``x-correlation-id``, a log line, a trace).

        Returns:
            Rows: ts, seq, kind, what (tool, route or log event), method, actor, tenant, allowed, reason,
            status, http_status, error_type, duration_ms, source, segment.

        Raises:
            UnknownCorrelationId: no event carries it.
        """
        if not isinstance(correlation_id, str) or not correlation_id:
            raise UnknownCorrelationId("a correlation id must be a non-empty string")
        result = self._run(
            "timeline",
            {"correlation_id": correlation_id},
            f"SELECT {_TIMELINE_COLS} FROM events WHERE correlation_id = $cid ORDER BY ts, seq",  # noqa: S608
            {"cid": correlation_id},
            since=None,
            until=None,
        )
        if not result.rows:
            raise UnknownCorrelationId(
                f"no event has that correlation id in {self._catalog.describe()}; check the id, or widen the "
                "source (compacted Parquet and journal segments are both searched)"
            )
        return result

    def actor(self, subject: str, since: TimeArg = None, until: TimeArg = None) -> Result:
        """What one actor (``actor.subject``) did in a time range, in time order.

        Returns:
            Rows: ts, correlation_id, kind, what, method, tenant, client_id, allowed, reason, status,
            http_status, duration_ms.
        """
        lo, hi = _range(since, until)
        return self._run(
            "actor",
            {"subject": subject, "since": lo, "until": hi},
            "SELECT ts, correlation_id, kind, coalesce(tool, route, event) AS what, action_method AS method, "  # noqa: S608
            "actor_tenant AS tenant, actor_client_id AS client_id, decision_allowed AS allowed, "
            "decision_reason AS reason, outcome_status AS status, outcome_http_status AS http_status, "
            "outcome_duration_ms AS duration_ms FROM events WHERE actor_subject = $subject AND "
            + _window()
            + " ORDER BY ts, seq",
            {"subject": subject, "lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def denials(self, since: TimeArg = None, until: TimeArg = None) -> Result:
        """Refused calls and reads (``authz.denied``, and any event whose decision is not allowed).

        Returns:
            Rows: ts, correlation_id, kind, actor, tenant, client_id, what, method, reason, required,
            status.
        """
        lo, hi = _range(since, until)
        return self._run(
            "denials",
            {"since": lo, "until": hi},
            "SELECT ts, correlation_id, kind, actor_subject AS actor, actor_tenant AS tenant, "  # noqa: S608
            "actor_client_id AS client_id, coalesce(tool, route, action_name) AS what, "
            "action_method AS method, decision_reason AS reason, decision_required AS required, "
            f"outcome_status AS status FROM events WHERE {_DENIED} AND {_window()} ORDER BY ts, seq",
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def body_reads(self, since: TimeArg = None, until: TimeArg = None) -> Result:
        """Reads of stored bodies, refused ones included: who read which correlation id's body, and why.

        Returns:
            Rows: ts, reader, correlation_id, kind, allowed, reason, purpose, tenant, size.
        """
        lo, hi = _range(since, until)
        return self._run(
            "body_reads",
            {"since": lo, "until": hi},
            "SELECT ts, actor_subject AS reader, correlation_id, kind, decision_allowed AS allowed, "  # noqa: S608
            "decision_reason AS reason, json_extract_string(record, '$.purpose') AS purpose, "
            "coalesce(actor_tenant, json_extract_string(record, '$.tenant')) AS tenant, "
            "TRY_CAST(json_extract_string(record, '$.size') AS BIGINT) AS size "
            f"FROM events WHERE kind IN {_BODY_KINDS} AND {_window()} ORDER BY ts, seq",
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def find(self, value: str | bytes, since: TimeArg = None, until: TimeArg = None) -> Result:
        """Did this value (a token, an e-mail address) appear? Searches the keyed fingerprints (``fp``).

        The value is fingerprinted under every key of the ring (rotated keys included) exactly as the
        pipeline did; neither the value nor its fingerprint is journaled, only its shape.

        Returns:
            Rows: ts, correlation_id, kind, actor, what, fields (the ``fp`` fields that matched), seq.

        Raises:
            NotJournaled: no key ring (pass ``keys=`` or use a handle from ``auditlog.configure``).
        """
        if self._keys is None:
            raise NotJournaled(
                "find needs the key ring: pass keys= or an audit handle from auditlog.configure"
            )
        from processors import Fingerprinter

        fps = sorted(
            {
                Fingerprinter(key=k.derive("fingerprint"), key_id=k.key_id, fields=()).fingerprint(value)
                for k in (self._keys.active, *self._keys.older)
            }
        )
        lo, hi = _range(since, until)
        raw = self._run(
            "find",
            {"value": value, "since": lo, "until": hi},
            "SELECT ts, correlation_id, kind, actor_subject AS actor, coalesce(tool, route, event) AS what, "  # noqa: S608
            "json_extract(record, '$.fp') AS fp, seq FROM events "
            f"WHERE list_has_any(fp_values, $fps::VARCHAR[]) AND {_window()} ORDER BY ts, seq",
            {"fps": fps, "lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )
        wanted = set(fps)
        rows = tuple((*r[:5], tuple(_matching_fields(r[5], wanted)), r[6]) for r in raw.rows)
        return Result(name="find", columns=(*raw.columns[:5], "fields", "seq"), rows=rows)

    def top(
        self, by: TopBy = "tool", since: TimeArg = None, until: TimeArg = None, limit: int = 10
    ) -> Result:
        """The busiest tools, routes or actors: calls, denials, errors, p95 duration, first and last seen.

        Args:
            by: ``"tool"``, ``"route"`` or ``"actor"``.
            since: start of the range (inclusive).
            until: end of the range (inclusive).
            limit: at most this many rows (1 to 10000).

        Raises:
            ValueError: an unknown ``by`` or a bad ``limit``.
        """
        column = {"tool": "tool", "route": "route", "actor": "actor_subject"}.get(by)
        if column is None:
            raise ValueError("top: by must be 'tool', 'route' or 'actor'")
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise ValueError("top: limit must be an integer from 1 to 10000")
        lo, hi = _range(since, until)
        return self._run(
            "top",
            {"by": by, "since": lo, "until": hi, "limit": limit},
            f"SELECT {column} AS {by}, count(*) AS calls, count(*) FILTER (WHERE {_DENIED}) AS denied, "  # noqa: S608
            "count(*) FILTER (WHERE outcome_status = 'error' OR outcome_http_status >= 500) AS errors, "
            "round(quantile_cont(outcome_duration_ms, 0.95), 3) AS p95_ms, count(DISTINCT actor_subject) "
            "AS actors, min(ts) AS first_seen, max(ts) AS last_seen "
            f"FROM events WHERE {_CALLS} AND {column} IS NOT NULL AND {_window()} "
            f"GROUP BY ALL ORDER BY calls DESC, {by} LIMIT {limit}",
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def anomalies(
        self,
        since: TimeArg = None,
        until: TimeArg = None,
        *,
        window: str = "1h",
        spike_factor: float = 5.0,
        min_calls: int = 20,
        burst_window: str = "5m",
        burst_min: int = 5,
        learning: str = "1h",
    ) -> Result:
        """Unusual behaviour, each row explained: call-rate spikes, denial bursts, first-seen tools.

        - ``rate_spike``: an actor's calls in one ``window`` reach ``spike_factor`` times the median of its
          own windows (its baseline) and at least ``min_calls``.
        - ``denial_burst``: at least ``burst_min`` denials of one actor within ``burst_window``.
        - ``first_seen_tool``: an actor calls a tool for the first time more than ``learning`` after its
          own first call (a new capability in use: a stolen token, a new integration).

        Returns:
            Rows: type, actor, ts (window start or first call), what (tool or window), count, baseline.
        """
        lo, hi = _range(since, until)
        win, burst, learn = (
            _seconds(window, "window"),
            _seconds(burst_window, "burst_window"),
            _seconds(learning, "learning"),
        )
        if not spike_factor > 1 or type(min_calls) is not int or type(burst_min) is not int:
            raise ValueError("anomalies: spike_factor must be > 1, min_calls and burst_min integers")
        calls = f"SELECT * FROM events WHERE {_CALLS} AND actor_subject IS NOT NULL AND {_window()}"  # noqa: S608
        sql = f"""
WITH calls AS ({calls}),
per_window AS (
  SELECT actor_subject AS actor, time_bucket(to_seconds({win}), ts) AS w, count(*) AS n
  FROM calls GROUP BY ALL),
base AS (SELECT actor, median(n) AS baseline, count(*) AS windows FROM per_window GROUP BY actor),
spikes AS (
  SELECT 'rate_spike' AS type, p.actor, p.w AS ts, strftime(p.w, '%Y-%m-%dT%H:%M') AS what, p.n AS count,
         b.baseline::DOUBLE AS baseline
  FROM per_window p JOIN base b USING (actor)
  WHERE b.windows >= 3 AND p.n >= {int(min_calls)} AND p.n >= {float(spike_factor)} * b.baseline),
bursts AS (
  SELECT 'denial_burst' AS type, actor_subject AS actor, time_bucket(to_seconds({burst}), ts) AS ts,
         'denials' AS what, count(*) AS count, NULL::DOUBLE AS baseline
  FROM calls WHERE {_DENIED} GROUP BY ALL HAVING count(*) >= {int(burst_min)}),
firsts AS (
  SELECT actor_subject AS actor, tool, min(ts) AS first_ts, count(*) AS n FROM calls
  WHERE tool IS NOT NULL GROUP BY ALL),
starts AS (SELECT actor_subject AS actor, min(ts) AS since FROM calls GROUP BY actor),
new_tools AS (
  SELECT 'first_seen_tool' AS type, f.actor, f.first_ts AS ts, f.tool AS what, f.n AS count,
         NULL::DOUBLE AS baseline
  FROM firsts f JOIN starts s USING (actor) WHERE f.first_ts > s.since + to_seconds({learn}))
SELECT * FROM spikes UNION ALL SELECT * FROM bursts UNION ALL SELECT * FROM new_tools
ORDER BY ts, type, actor, what
"""  # noqa: S608 - constants and validated numbers only
        return self._run(
            "anomalies",
            {"since": lo, "until": hi, "window": window, "burst_window": burst_window, "learning": learning},
            sql,
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def sql(
        self,
        text: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        since: TimeArg = None,
        until: TimeArg = None,
    ) -> Result:
        """Run one read-only query against the ``events`` view, in the sandbox.

        Args:
            text: one ``SELECT`` (or ``WITH``/``FROM``/``VALUES``/``DESCRIBE``/``SUMMARIZE``) statement.
            params: values for ``?`` or ``$name`` placeholders.
            since: limits which Parquet files are loaded (for ``s3://`` sources; rows are not filtered).
            until: see ``since``.

        Raises:
            SandboxViolation: not a single read-only query, or the engine refused it (file access, ...).
        """
        if not isinstance(text, str):
            raise SandboxViolation("sql: the query must be a string")
        try:
            _sandbox.check_select(self._con, text)
        except _sandbox.SandboxViolation as exc:
            self._journal(
                "sql",
                {"params": params},
                rows=0,
                status="refused",
                error=type(exc).__name__,
                started=time.perf_counter(),
                sql=text,
            )
            raise SandboxViolation(str(exc)) from None
        lo, hi = _range(since, until)
        return self._run("sql", {"params": params}, text, params, since=lo, until=hi, user_sql=True)

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The source as given."""
        return self._label

    @property
    def audit(self) -> AuditSink:
        """Where ``query.run`` events go."""
        return self._audit

    @property
    def keys(self) -> KeyRing | None:
        """The key ring used by :meth:`find`, if any."""
        return self._keys

    @property
    def investigator(self) -> str:
        """Who runs the queries (the ``actor.subject`` of ``query.run``)."""
        return self._investigator

    @property
    def catalog(self) -> Catalog:
        """What the source holds (manifests, segments not compacted yet)."""
        return self._catalog

    @property
    def connection(self) -> Any:
        """The user-SQL sandbox connection (for inspection; no file access, configuration locked)."""
        return self._con

    @property
    def reader(self) -> Any:
        """The named-query connection (for inspection; reads only the Parquet files, configuration locked)."""
        return self._reader_for(None, None)

    def refresh(self) -> None:
        """Re-read the source: new manifests, new and grown segments."""
        _translate(self._catalog.refresh)
        self._live = _translate(self._catalog.live_table)
        self._con.register("_live", self._live)
        self._sandbox_files = None
        if self._fast is not None:
            self._fast.close()
            self._fast = None

    def close(self) -> None:
        """Close the connections. Idempotent."""
        if not self._closed:
            self._closed = True
            self._con.close()
            if self._fast is not None:
                self._fast.close()
                self._fast = None

    def __enter__(self) -> Investigation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _files(self, since: datetime | None, until: datetime | None) -> tuple[str, ...]:
        if self._catalog.kind != "s3":  # local files cost nothing to include; row-group statistics prune
            since = until = None
        return _translate(lambda: self._catalog.parquet_files(since, until))

    def _reader_for(self, since: datetime | None, until: datetime | None) -> Any:
        """The named-query connection over the Parquet files the range needs (rebuilt when they change)."""
        files = self._files(since, until)
        if files != self._fast_files or self._fast is None:
            if self._fast is not None:
                self._fast.close()
                self._fast = None
            con = _sandbox.reader(files, memory_limit=self._memory_limit, threads=self._threads)
            con.register("_live", self._live)
            if files:
                con.execute(_EVENTS_VIEW.replace("{parquet}", _sandbox.parquet_scan_sql(files)))
            else:
                con.register("_parquet", _sandbox.arrow_schema().empty_table())
                con.execute(_EVENTS_VIEW.replace("{parquet}", "_parquet"))
            self._fast, self._fast_files = con, files
        return self._fast

    def _sandbox_for(self, since: datetime | None, until: datetime | None) -> Any:
        """The user-SQL sandbox, with the Parquet files the range needs registered as an Arrow dataset."""
        files = self._files(since, until)
        if files != self._sandbox_files:
            self._con.register("_parquet", self._catalog.dataset(files))
            self._sandbox_files = files
        return self._con

    def _run(
        self,
        name: str,
        shown: Mapping[str, Any],
        sql: str,
        params: Any,
        *,
        since: datetime | None,
        until: datetime | None,
        user_sql: bool = False,
    ) -> Result:
        if self._closed:
            raise QueryError("the investigation is closed")
        started = time.perf_counter()
        duckdb = require("duckdb")
        try:
            con = self._sandbox_for(since, until) if user_sql else self._reader_for(since, until)
            cur = con.execute(sql, params) if params is not None else con.execute(sql)
            columns = tuple(d[0] for d in cur.description or ())
            rows = tuple(cur.fetchall())
        except duckdb.PermissionException as exc:
            if not user_sql:
                raise CorruptSource(
                    f"{name} could not read {self._catalog.describe()} (a file outside the catalog?); "
                    "run `auditlog verify` on the journal for details"
                ) from exc
            self._journal(
                name,
                shown,
                rows=0,
                status="refused",
                error=type(exc).__name__,
                started=started,
                sql=sql if user_sql else None,
            )
            raise SandboxViolation(f"the sandbox refused it: {_sandbox.first_line(exc)}") from None
        except duckdb.Error as exc:
            self._journal(
                name,
                shown,
                rows=0,
                status="error",
                error=type(exc).__name__,
                started=started,
                sql=sql if user_sql else None,
            )
            if user_sql:
                raise QueryError(f"the query failed: {_sandbox.first_line(exc)}") from None
            raise CorruptSource(
                f"{name} could not read {self._catalog.describe()} ({type(exc).__name__}); "
                "run `auditlog verify` on the journal for details"
            ) from exc
        except OSError as exc:
            self._journal(
                name,
                shown,
                rows=0,
                status="error",
                error=type(exc).__name__,
                started=started,
                sql=sql if user_sql else None,
            )
            raise CorruptSource(f"{name}: a data file cannot be read ({type(exc).__name__})") from exc
        self._journal(
            name,
            shown,
            rows=len(rows),
            status="ok",
            error=None,
            started=started,
            sql=sql if user_sql else None,
        )
        return Result(name=name, columns=columns, rows=rows)

    def _journal(
        self,
        name: str,
        shown: Mapping[str, Any],
        *,
        rows: int,
        status: str,
        error: str | None,
        started: float,
        sql: str | None,
    ) -> None:
        params: dict[str, Any] = {}
        for key, value in shown.items():
            if key == "params" and isinstance(value, Mapping):
                params[key] = {
                    "t": "obj",
                    "keys": {str(k)[:64]: _shape(v) for k, v in list(value.items())[:64]},
                }
            elif key == "params" and isinstance(value, Sequence) and not isinstance(value, str | bytes):
                params[key] = {"t": "arr", "items": [_shape(v) for v in list(value)[:64]]}
            else:
                params[key] = _shape(value)
        query: dict[str, Any] = {"name": name, "params": params, "rows": rows}
        if sql is not None:
            query["sql_sha256"] = hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()
            query["sql_len"] = len(sql)
        event = {
            "kind": "query.run",
            "actor": {"subject": self._investigator},
            "action": {"name": name, "method": "query", "target": self._catalog.kind},
            "outcome": {
                "status": status,
                "error_type": error,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
            "query": query,
        }
        try:
            ok = self._audit.emit(event)
        except Exception as exc:
            raise NotJournaled(f"the audit journal did not take query.run ({type(exc).__name__})") from None
        if ok is False:
            raise NotJournaled("the audit journal did not take query.run, so the result is withheld")


_WINDOW = (
    "($lo::TIMESTAMP IS NULL OR ts >= $lo::TIMESTAMP) AND ($hi::TIMESTAMP IS NULL OR ts <= $hi::TIMESTAMP)"
)


def _translate(fn: Callable[[], _T]) -> _T:
    """Run a catalog step, translating its errors into this module's at one boundary."""
    from auditlog.compact import LayoutError
    from auditlog.ship import ShipError

    try:
        return fn()
    except _sandbox.EmptyLayout as exc:
        raise EmptySource(str(exc)) from None
    except (_sandbox.CorruptLayout, LayoutError) as exc:
        raise CorruptSource(str(exc)) from None
    except ShipError as exc:
        raise CorruptSource(f"the S3 source cannot be read: {exc}") from exc


def _window() -> str:
    return _WINDOW


def _seconds(text: str, name: str) -> int:
    m = _RELATIVE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"anomalies: {name} must be a duration like 5m, 1h, 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _matching_fields(fp_json: str | None, wanted: set[str]) -> list[str]:
    """The dotted paths under ``fp`` whose fingerprint is one of ``wanted``."""
    if not fp_json:
        return []
    try:
        tree = orjson.loads(fp_json)
    except orjson.JSONDecodeError:
        return []
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{prefix}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, str) and node in wanted:
            found.append(prefix)
    return sorted(found)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
