"""The investigation sandbox: locked-down DuckDB connections for user SQL and the named queries.

Two kinds of connection, never mixed (compaction's privileged loader lives in :mod:`auditlog.lake.engine`):

- :func:`sandbox` runs user SQL. Its engine cannot touch the file system at all:
  ``enable_external_access = false`` with ``allowed_directories = []`` and ``allowed_paths = []``, no
  temporary directory, no extension loading, no Python replacement scans, ``lock_configuration = true``.
  The audit data reaches it only as read-only Arrow scans registered by the library (pyarrow reads the
  Parquet files, the loader parses uncompacted segments). DuckDB's ``allowed_directories`` and
  ``allowed_paths`` grant *write* access as well (``COPY ... TO`` and ``ATTACH`` succeed on an allowed
  path; checked with duckdb 2.0), so the sandbox allows none. On top of the engine, :func:`check_select`
  accepts only single read-only statements.
- :func:`reader` runs the library's named queries (constant SQL, bound parameters): the same lock-down,
  except that ``allowed_paths`` lists exactly the source's Parquet files, so DuckDB's own Parquet reader
  (row-group pruning, metadata cache) does the lookups. User SQL never runs there.

Every statement runs through :func:`run_limited`, under :class:`Limits`: a timer thread interrupts the
connection after ``timeout`` seconds, and the result is streamed as Arrow record batches whose rows and
bytes are counted *before* anything becomes a Python object (DuckDB's ``memory_limit`` bounds the engine,
not the Python objects a result turns into: ``SELECT list(range(...))`` would otherwise take gigabytes).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditlog.lake.engine import duckdb_size, require

__all__ = [
    "READ_ONLY_STATEMENTS",
    "MAX_BYTES",
    "MAX_ROWS",
    "TIMEOUT",
    "Limits",
    "ResultLimit",
    "SandboxViolation",
    "StatementTimeout",
    "check_select",
    "first_line",
    "reader",
    "run_limited",
    "sandbox",
]


class SandboxViolation(PermissionError):
    """A statement the investigation sandbox refuses (a write, ATTACH, SET, PRAGMA, INSTALL, ...)."""


# defaults of :class:`Limits` (and of the CLI's --timeout and --max-rows)
TIMEOUT = 60.0
MAX_ROWS = 100_000
MAX_BYTES = 256 << 20


class StatementTimeout(TimeoutError):
    """A statement ran longer than :attr:`Limits.timeout` and was interrupted."""


class ResultLimit(ValueError):
    """A result has more rows or bytes than :class:`Limits` allow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one statement may use: seconds, result rows, result bytes (Arrow buffers, before conversion).

    Raises:
        ValueError: a limit that is not positive.
    """

    timeout: float | None = TIMEOUT
    max_rows: int = MAX_ROWS
    max_bytes: int = MAX_BYTES

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout must be a positive number of seconds (or None for no timeout)")
        if type(self.max_rows) is not int or self.max_rows < 1:
            raise ValueError("max_rows must be a positive integer")
        if type(self.max_bytes) is not int or self.max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")


_BATCH_ROWS = 2048


def run_limited(
    con: Any, sql: str, params: Sequence[Any] | Mapping[str, Any] | None, limits: Limits
) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """Run ``sql`` on ``con`` within ``limits``; return its column names and rows.

    The result streams as Arrow record batches; rows and bytes are counted per batch, and only a result
    within both limits is converted to Python values (by DuckDB, so the types are its usual ones).

    Raises:
        StatementTimeout: the statement ran longer than ``limits.timeout``.
        ResultLimit: the result has more than ``limits.max_rows`` rows or ``limits.max_bytes`` bytes.
        duckdb.Error: anything else the engine refused.
    """
    duckdb = require("duckdb")
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout, stop) if limits.timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        rel = con.sql(sql, params=params) if params is not None else con.sql(sql)
        if rel is None:  # not a query (the sandbox never lets one through)
            return (), ()
        columns, types = tuple(rel.columns), list(rel.types)
        batches: list[Any] = []
        rows = size = 0
        reader = rel.to_arrow_reader(min(_BATCH_ROWS, limits.max_rows + 1))
        for batch in reader:
            rows += batch.num_rows
            size += batch.get_total_buffer_size()
            if rows > limits.max_rows:
                raise ResultLimit(f"the result has more than {limits.max_rows} rows (the limit)")
            if size > limits.max_bytes:
                raise ResultLimit(f"the result is larger than {limits.max_bytes} bytes (the limit)")
            batches.append(batch)
        table = require("pyarrow").Table.from_batches(batches, schema=reader.schema)
        back = con.from_arrow(table)
        # Arrow has no HUGEINT, UUID or ENUM: cast those columns back to the type the query produced
        exprs = [
            f"CAST({_ident(name)} AS {orig})" if str(orig) != str(now) else _ident(name)
            for name, orig, now in zip(columns, types, back.types, strict=True)
        ]
        if len(set(columns)) == len(columns) and exprs != [_ident(c) for c in columns]:
            back = back.project(", ".join(exprs))
        values = tuple(back.fetchall()) if columns else ()
    except duckdb.InterruptException:
        if fired.is_set():
            raise StatementTimeout(
                f"the query ran longer than {limits.timeout:g} seconds (the limit) and was stopped"
            ) from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
    return columns, values


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sandbox(*, memory_limit: str = "1GB", threads: int | None = None) -> Any:
    """Open a locked-down DuckDB connection: no file system, no extensions, configuration locked.

    Register data with ``con.register(name, arrow_object)`` (allowed after locking), then query it.

    Args:
        memory_limit: DuckDB's ``memory_limit`` (nothing spills: there is no temporary directory).
        threads: worker threads, or None for DuckDB's default.

    Returns:
        A ``duckdb.DuckDBPyConnection`` whose settings can no longer change.
    """
    con = _locked_base(memory_limit, threads)
    for stmt in (
        "SET allowed_directories = []",
        "SET allowed_paths = []",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)
    return con


def _locked_base(memory_limit: str, threads: int | None) -> Any:
    """An in-memory connection with no extension loading, UTC, bounded memory, no spilling, no Python
    replacement scans: what both locked connections start from (each then closes the file system)."""
    duckdb = require("duckdb")
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    for stmt in (
        "SET TimeZone = 'UTC'",
        f"SET memory_limit = '{duckdb_size(memory_limit)}'",
        *([f"SET threads = {int(threads)}"] if threads is not None else []),
        "SET temp_directory = ''",
        "SET python_enable_replacements = false",
    ):
        con.execute(stmt)
    return con


def reader(
    files: Sequence[str],
    *,
    memory_limit: str = "1GB",
    threads: int | None = None,
    spill_directory: str | None = None,
) -> Any:
    """Open a locked DuckDB connection that can read exactly ``files`` (Parquet) and nothing else.

    For library-authored, parameter-bound queries only (the named investigation queries): its engine can
    read the listed files with DuckDB's own Parquet reader (statistics pruning, metadata cache), cannot
    read any other path, and cannot change its settings. DuckDB would let a ``COPY ... TO`` overwrite a
    listed file, so user SQL never runs here; it runs in :func:`sandbox`.

    Args:
        files: absolute paths of the Parquet files it may read.
        memory_limit: DuckDB's ``memory_limit``; beyond it, sorts and joins spill to ``spill_directory``.
        threads: worker threads, or None for DuckDB's default.
        spill_directory: a private directory DuckDB may spill to (the caller removes it), or None.

    Returns:
        A ``duckdb.DuckDBPyConnection``.
    """
    con = _locked_base(memory_limit, threads)
    if spill_directory is not None:  # a private directory: only library SQL runs here, never user SQL
        con.execute("SET temp_directory = ?", [spill_directory])
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET allowed_directories = []")
    con.execute("SET allowed_paths = ?", [list(files)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


READ_ONLY_STATEMENTS = frozenset({"SELECT"})


def check_select(con: Any, text: str) -> None:
    """Accept exactly one read-only statement (``SELECT``, ``WITH ... SELECT``, ``FROM``, ``VALUES``,
    ``DESCRIBE``, ``SUMMARIZE``); refuse everything else before it reaches the engine.

    Args:
        con: the sandbox connection (used to parse, not to run).
        text: the SQL text.

    Raises:
        SandboxViolation: not exactly one statement, or a statement that is not a query.
    """
    duckdb = require("duckdb")
    try:
        statements: Sequence[Any] = con.extract_statements(text)
    except duckdb.Error as exc:
        raise SandboxViolation(f"the SQL does not parse: {first_line(exc)}") from None
    if len(statements) != 1:
        raise SandboxViolation(f"exactly one statement is allowed, got {len(statements)}")
    kind = getattr(statements[0].type, "name", str(statements[0].type))
    if kind not in READ_ONLY_STATEMENTS:
        raise SandboxViolation(f"{kind} statements are not allowed in an investigation; only queries are")


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
