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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditlog.lake.engine import duckdb_size, require

__all__ = [
    "READ_ONLY_STATEMENTS",
    "SandboxViolation",
    "check_select",
    "first_line",
    "parquet_scan_sql",
    "reader",
    "sandbox",
]


class SandboxViolation(PermissionError):
    """A statement the investigation sandbox refuses (a write, ATTACH, SET, PRAGMA, INSTALL, ...)."""


def sandbox(*, memory_limit: str = "1GB", threads: int | None = None) -> Any:
    """Open a locked-down DuckDB connection: no file system, no extensions, configuration locked.

    Register data with ``con.register(name, arrow_object)`` (allowed after locking), then query it.

    Args:
        memory_limit: DuckDB's ``memory_limit`` (nothing spills: there is no temporary directory).
        threads: worker threads, or None for DuckDB's default.

    Returns:
        A ``duckdb.DuckDBPyConnection`` whose settings can no longer change.
    """
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
        "SET allowed_directories = []",
        "SET allowed_paths = []",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)
    return con


def reader(files: Sequence[str], *, memory_limit: str = "1GB", threads: int | None = None) -> Any:
    """Open a locked DuckDB connection that can read exactly ``files`` (Parquet) and nothing else.

    For library-authored, parameter-bound queries only (the named investigation queries): its engine can
    read the listed files with DuckDB's own Parquet reader (statistics pruning, metadata cache), cannot
    read any other path, and cannot change its settings. DuckDB would let a ``COPY ... TO`` overwrite a
    listed file, so user SQL never runs here; it runs in :func:`sandbox`.

    Args:
        files: absolute paths of the Parquet files it may read.
        memory_limit: DuckDB's ``memory_limit``.
        threads: worker threads, or None for DuckDB's default.

    Returns:
        A ``duckdb.DuckDBPyConnection``.
    """
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
        "SET parquet_metadata_cache = true",
        "SET allowed_directories = []",
    ):
        con.execute(stmt)
    con.execute("SET allowed_paths = ?", [list(files)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def parquet_scan_sql(files: Sequence[str]) -> str:
    """``read_parquet([...])`` over ``files`` with the hive partition columns as strings."""
    quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return (
        f"read_parquet([{quoted}], hive_partitioning = true, union_by_name = true, "
        "hive_types = {'date': VARCHAR, 'source': VARCHAR})"
    )


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
