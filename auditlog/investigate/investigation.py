"""Incident reconstruction: named queries over journal segments and compacted Parquet, in a DuckDB sandbox.

::

    from auditlog.investigate import Investigation

    with Investigation("journal/", audit=handle) as inv:      # or "s3://bucket/prefix"
        inv.timeline("4bf92f3577b34da6a3ce929d0e0e4736")      # every step of one request, in order
        inv.denials(since="24h")                               # refused calls
        inv.find("token-the-attacker-used")                    # which calls carried that value?
        inv.sql("SELECT tool, count(*) FROM events GROUP BY ALL")

A source is a journal directory (its ``parquet/`` layout is used for compacted segments, the JSONL for the
rest, the active segment included), a compacted layout root, or ``s3://bucket/prefix`` (only the Parquet
files a query's time range needs are fetched into a local cache). Several sources (the trails of many
hosts: ``Investigation(["host-a/trail", "host-b/trail"])``) are read as one (:mod:`~.union`): each is
verified on its own, and a stream held by two of them is refused. Every query sees one view, ``events``
(the columns of :data:`auditlog.lake.layout.COLUMNS`, the partition columns ``date`` and ``source``, and the
derived ``tool`` and ``route``), on one of two locked DuckDB connections (:mod:`~.sandbox`):

- user SQL (:meth:`Investigation.sql`) runs in the sandbox, whose engine has no file access at all
  (``enable_external_access = false``, no allowed directory or path, no temporary directory, settings
  locked) and sees the data only as read-only Arrow scans; it accepts one read-only statement;
- the named queries (library SQL, parameters bound) run on a reader whose engine may read exactly the
  source's Parquet files (``allowed_paths``) with DuckDB's own reader, and nothing else.

Nothing is answered from data that fails verification (:mod:`~._integrity`): on opening (and on
:meth:`Investigation.refresh`) the journal's chain, every manifest's MAC and every local Parquet file's
SHA-256 are checked, and the key ring must hold a key the source was written under. A source that fails
raises :class:`UnverifiedSource` (or, with ``allow_unverified=True``, answers with ``Result.verified``
false). Every statement runs within :class:`~.sandbox.Limits`: a timeout, and a cap on the result's
rows and bytes.

Every query is itself journaled as a ``query.run`` event through the audit handle: the query name, the
*shapes* of its parameters (never their values: ``find`` journals ``{"t": "str", "len": 24}``, not the
token), the SHA-256 of user SQL, the row count and the duration. The event is written before rows are
returned; a journal that refuses it refuses the query.

Errors: the tree is drawn in :mod:`auditlog.investigate.errors` (all exported by ``auditlog.investigate``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from auditlog.investigate import sandbox as _sandbox
from auditlog.investigate._audit import AuditSink, QueryJournal, os_user
from auditlog.investigate._connections import Connections, translate
from auditlog.investigate._integrity import Integrity
from auditlog.investigate._queries import (
    ACTOR_SQL,
    BODY_READS_SQL,
    DENIALS_SQL,
    FIND_SQL,
    TIMELINE_SQL,
    anomalies_sql,
    matching_fields,
    top_sql,
    write_events_parquet,
)
from auditlog.investigate.errors import (
    CorruptSource,
    KeyMismatch,
    NotJournaled,
    QueryError,
    QueryTimeout,
    ResultTooLarge,
    SandboxViolation,
    UnknownCorrelationId,
    UnverifiedSource,
)
from auditlog.investigate.result import Result
from auditlog.investigate.timerange import TimeArg, duration_seconds, time_range
from auditlog.investigate.union import (
    AnyCatalog,
    Sources,
    checker_for,
    describe_sources,
    open_sources,
    unverified_message,
)
from auditlog.lake.engine import require

if TYPE_CHECKING:
    from store.keys import KeyRing

__all__ = ["Investigation", "TopBy"]

TopBy = Literal["tool", "route", "actor"]


class Investigation:
    """Named incident queries over an audit data source (or several, as one), each journaled as ``query.run``.

    Args:
        source: a journal directory, a compacted layout root, or ``s3://bucket/prefix``; or a sequence of
            them, read as one (:mod:`~auditlog.investigate.union`).
        audit: where ``query.run`` events go (an :class:`~auditlog.AuditHandle`); default: the handle of
            the active :func:`auditlog.configure`.
        keys: the key ring for :meth:`find` (default: the audit handle's ``keys``).
        investigator: who runs the queries, recorded as the event's actor (default: the OS user).
        cache_dir: local cache for ``s3://`` sources (default: a per-user cache directory).
        s3_client: a boto3 S3 client for ``s3://`` sources (default: ``boto3.client("s3")``).
        memory_limit: the sandbox's DuckDB memory limit.
        threads: the sandbox's DuckDB worker threads (default: one per core).
        timeout: seconds a query may run before it is interrupted (None: no limit).
        max_rows: rows a query may return.
        max_bytes: bytes a query's result may take (as Arrow buffers, before conversion to Python).
        allow_unverified: answer from a source that fails verification (each ``Result.verified`` is then
            false) instead of raising :class:`UnverifiedSource`.

    Raises:
        EmptySource: the source (or one of several, named) holds no segment and no Parquet file.
        CorruptSource: a segment or manifest cannot be read.
        UnverifiedSource: the source (or one of several, named) fails verification (and
            ``allow_unverified`` is false).
        DuplicateSource: two of several sources are the same, or hold the same stream (both named).
        KeyMismatch: the key ring holds none of the keys the source was written under (and
            ``allow_unverified`` is false).
        NotJournaled: no audit handle is given or configured.
        ImportError: duckdb or pyarrow is missing (``auditlog-pipeline[query]``).
    """

    def __init__(
        self,
        source: Sources,
        *,
        audit: AuditSink | None = None,
        keys: KeyRing | None = None,
        investigator: str | None = None,
        cache_dir: str | Path | None = None,
        s3_client: Any = None,
        memory_limit: str = "1GB",
        threads: int | None = None,
        timeout: float | None = _sandbox.TIMEOUT,
        max_rows: int = _sandbox.MAX_ROWS,
        max_bytes: int = _sandbox.MAX_BYTES,
        allow_unverified: bool = False,
    ) -> None:
        if audit is None:
            from auditlog.handle import current_handle

            audit = current_handle()
        if audit is None:
            raise NotJournaled(
                "investigations are journaled: pass audit= (the handle auditlog.configure returns) "
                "or call auditlog.configure first"
            )
        self._audit = audit
        self._keys: KeyRing | None = keys if keys is not None else getattr(audit, "keys", None)
        self._investigator = investigator or os_user()
        self._label = describe_sources(source)
        self._catalog: AnyCatalog = translate(
            lambda: open_sources(source, cache_dir=cache_dir, s3_client=s3_client)
        )
        self._journal = QueryJournal(self._audit, investigator=self._investigator, target=self._catalog.kind)
        self._limits = _sandbox.Limits(timeout=timeout, max_rows=max_rows, max_bytes=max_bytes)
        self._allow_unverified = allow_unverified
        self._checker = checker_for(self._catalog, self._keys)
        self._conns = Connections(self._catalog, memory_limit=memory_limit, threads=threads)
        try:
            self._integrity = self._verify()
        except BaseException:
            self._conns.close()
            raise

    # -- named queries -------------------------------------------------------------------------------

    def timeline(self, correlation_id: str, since: TimeArg = None, until: TimeArg = None) -> Result:
        """Every event of one correlation id (audit events and application log lines), in time order.

        Args:
            correlation_id: the id (from a response's ``x-correlation-id``, a log line, a trace).
            since: start of the time range searched, or None; over ``s3://`` only the files of the range
                (and whose Bloom filter may hold the id) are fetched.
            until: end of the time range, or None.

        Returns:
            Rows: ts, seq, kind, what (tool, route or log event), method, actor, tenant, allowed, reason,
            status, http_status, error_type, duration_ms, source, segment.

        Raises:
            UnknownCorrelationId: no event carries it.
        """
        if not isinstance(correlation_id, str) or not correlation_id:
            raise UnknownCorrelationId("a correlation id must be a non-empty string")
        lo, hi = time_range(since, until)
        result = self._run(
            "timeline",
            {"correlation_id": correlation_id, "since": lo, "until": hi},
            TIMELINE_SQL,
            {"cid": correlation_id, "lo": lo, "hi": hi},
            since=lo,
            until=hi,
            correlation_id=correlation_id,  # over s3://, only the files that may hold it are fetched
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
        lo, hi = time_range(since, until)
        return self._run(
            "actor",
            {"subject": subject, "since": lo, "until": hi},
            ACTOR_SQL,
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
        lo, hi = time_range(since, until)
        return self._run(
            "denials",
            {"since": lo, "until": hi},
            DENIALS_SQL,
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def body_reads(self, since: TimeArg = None, until: TimeArg = None) -> Result:
        """Reads of stored bodies, refused ones included: who read which correlation id's body, and why.

        Returns:
            Rows: ts, reader, correlation_id, kind, allowed, reason, purpose, tenant, size.
        """
        lo, hi = time_range(since, until)
        return self._run(
            "body_reads",
            {"since": lo, "until": hi},
            BODY_READS_SQL,
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
        mismatch = self._checker.key_mismatch()
        if mismatch is not None:  # every fingerprint would differ: "not found" would be a wrong answer
            raise KeyMismatch(f"find: {mismatch}")
        from processors import Fingerprinter

        fps = sorted(
            {
                Fingerprinter(key=k.derive("fingerprint"), key_id=k.key_id, fields=()).fingerprint(value)
                for k in (self._keys.active, *self._keys.older)
            }
        )
        lo, hi = time_range(since, until)
        raw = self._run(
            "find",
            {"value": value, "since": lo, "until": hi},
            FIND_SQL,
            {"fps": fps, "lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )
        wanted = set(fps)
        rows = tuple((*r[:5], tuple(matching_fields(r[5], wanted)), r[6]) for r in raw.rows)
        return Result(
            name="find", columns=(*raw.columns[:5], "fields", "seq"), rows=rows, verified=raw.verified
        )

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
        lo, hi = time_range(since, until)
        return self._run(
            "top",
            {"by": by, "since": lo, "until": hi, "limit": limit},
            top_sql(column, by, limit),
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
        lo, hi = time_range(since, until)
        win, burst, learn = (
            duration_seconds(window, "window"),
            duration_seconds(burst_window, "burst_window"),
            duration_seconds(learning, "learning"),
        )
        if not spike_factor > 1 or type(min_calls) is not int or type(burst_min) is not int:
            raise ValueError("anomalies: spike_factor must be > 1, min_calls and burst_min integers")
        sql = anomalies_sql(
            win=win,
            burst=burst,
            learn=learn,
            min_calls=min_calls,
            spike_factor=spike_factor,
            burst_min=burst_min,
        )
        return self._run(
            "anomalies",
            {"since": lo, "until": hi, "window": window, "burst_window": burst_window, "learning": learning},
            sql,
            {"lo": lo, "hi": hi},
            since=lo,
            until=hi,
        )

    def write_events(
        self, since: TimeArg, until: TimeArg, path: str | Path
    ) -> tuple[int, list[tuple[str, str]]]:
        """Write every event of a time range to a Parquet file, streamed in record batches: memory stays
        bounded whatever the range holds (an evidence pack over millions of events). Library SQL on the
        named-query connection; journaled as ``query.run`` like any query.

        Returns:
            The number of rows written, and the (stream, segment) pairs they came from, sorted.

        Raises:
            QueryError: as the named queries (the source fails verification, the journal refuses...).
        """
        lo, hi = time_range(since, until)
        if self._conns.closed:
            raise QueryError("the investigation is closed")
        started = time.perf_counter()
        self._recheck()
        rows, segments = write_events_parquet(self._conns.reader_for(lo, hi), lo, hi, path)
        self._journal(
            "events",
            {"since": lo, "until": hi},
            rows=rows,
            status="ok",
            error=None,
            started=started,
            sql=None,
        )
        return rows, segments

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
            _sandbox.check_select(self._conns.sandbox, text)
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
        lo, hi = time_range(since, until)
        return self._run("sql", {"params": params}, text, params, since=lo, until=hi, user_sql=True)

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The source as given (several: joined by commas)."""
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
    def catalog(self) -> AnyCatalog:
        """What the source holds (manifests, segments not compacted yet); its ``parts`` for several."""
        return self._catalog

    @property
    def connection(self) -> Any:
        """The user-SQL sandbox connection (for inspection; no file access, configuration locked)."""
        return self._conns.sandbox

    @property
    def reader(self) -> Any:
        """The named-query connection (for inspection; reads only the Parquet files, configuration locked)."""
        return self._conns.reader_for(None, None)

    @property
    def integrity(self) -> Integrity:
        """What verifying the source found (as of opening, the last refresh, or the last query)."""
        return self._integrity

    def refresh(self) -> None:
        """Re-read the source (new manifests, new and grown segments) and verify it again.

        Raises:
            UnverifiedSource: it fails verification (and ``allow_unverified`` is false).
        """
        self._conns.refresh()
        self._integrity = self._verify()

    def _verify(self) -> Integrity:
        """Verify the source; raise unless it passes or unverified answers are allowed."""
        mismatch = self._checker.key_mismatch()
        if mismatch is not None and not self._allow_unverified:
            raise KeyMismatch(mismatch)
        integrity = self._checker.verify()
        self._enforce(integrity)
        return integrity

    def _enforce(self, integrity: Integrity) -> None:
        if not integrity.verified and not self._allow_unverified:
            raise UnverifiedSource(unverified_message(self._catalog, integrity))

    def verify_hint(self) -> str:
        """Where to look further, for this kind of source (for each of several)."""
        return "; ".join(p.verify_hint() for p in self._catalog.parts)

    def close(self) -> None:
        """Close the connections. Idempotent."""
        self._conns.close()

    def __enter__(self) -> Investigation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recheck(self) -> None:
        """Before a query reads Parquet: re-check the files (a stat each; re-hashed only when one changed)."""
        integrity = self._checker.recheck(self._integrity)
        if integrity is not self._integrity:
            self._integrity = integrity
            self._enforce(integrity)

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
        correlation_id: str | None = None,
    ) -> Result:
        if self._conns.closed:
            raise QueryError("the investigation is closed")
        started = time.perf_counter()
        shown_sql = sql if user_sql else None  # only user SQL is journaled (as its hash)
        duckdb = require("duckdb")
        self._recheck()
        try:
            con = (
                self._conns.sandbox_for(since, until)
                if user_sql
                else self._conns.reader_for(since, until, correlation_id=correlation_id)
            )
            columns, rows = _sandbox.run_limited(con, sql, params, self._limits)
        except (_sandbox.StatementTimeout, _sandbox.ResultLimit) as exc:
            self._journal(
                name,
                shown,
                rows=0,
                status="refused",
                error=type(exc).__name__,
                started=started,
                sql=shown_sql,
            )
            if isinstance(exc, _sandbox.StatementTimeout):
                raise QueryTimeout(f"{name}: {exc}; narrow the query or raise the timeout") from None
            raise ResultTooLarge(
                f"{name}: {exc}; narrow the query (a time range, LIMIT) or raise it"
            ) from None
        except duckdb.PermissionException as exc:
            if not user_sql:
                raise CorruptSource(
                    f"{name} could not read {self._catalog.describe()} (a file outside the catalog?); "
                    f"{self.verify_hint()}"
                ) from exc
            self._journal(
                name,
                shown,
                rows=0,
                status="refused",
                error=type(exc).__name__,
                started=started,
                sql=shown_sql,
            )
            raise SandboxViolation(f"the sandbox refused it: {_sandbox.first_line(exc)}") from None
        except duckdb.Error as exc:
            self._journal(
                name, shown, rows=0, status="error", error=type(exc).__name__, started=started, sql=shown_sql
            )
            if user_sql:
                raise QueryError(f"the query failed: {_sandbox.first_line(exc)}") from None
            raise CorruptSource(
                f"{name} could not read {self._catalog.describe()} ({type(exc).__name__}); "
                f"{self.verify_hint()}"
            ) from exc
        except OSError as exc:
            self._journal(
                name, shown, rows=0, status="error", error=type(exc).__name__, started=started, sql=shown_sql
            )
            raise CorruptSource(f"{name}: a data file cannot be read ({type(exc).__name__})") from exc
        self._journal(name, shown, rows=len(rows), status="ok", error=None, started=started, sql=shown_sql)
        return Result(name=name, columns=columns, rows=rows, verified=self._integrity.verified)
