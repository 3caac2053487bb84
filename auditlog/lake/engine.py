"""DuckDB and Arrow for the lake: the optional import, the privileged loader connection, the row schema.

:func:`loader` reads journal segments and writes Parquet during compaction. Only library code runs SQL on
it, with paths it chose itself. User SQL never runs here: it runs in :mod:`auditlog.investigate.sandbox`.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from auditlog.lake.layout import COLUMNS, PARTITIONS

__all__ = ["arrow_schema", "duckdb_size", "loader", "require"]

_HINT = "install auditlog-pipeline[query] to use {what} (it needs duckdb and pyarrow)"


def require(name: str, what: str = "auditlog.investigate") -> ModuleType:
    """Import an optional dependency of the ``query`` extra, or fail with an install hint.

    Args:
        name: the module (``"duckdb"``, ``"pyarrow"``, ``"pyarrow.parquet"``, ``"pyarrow.dataset"``).
        what: the feature that needs it, for the hint.

    Returns:
        The module.

    Raises:
        ImportError: the module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(_HINT.format(what=what)) from exc


def loader(
    *, memory_limit: str = "1GB", temp_directory: str | None = None, threads: int | None = None
) -> Any:
    """Open the privileged in-memory DuckDB connection used to parse segments and write Parquet.

    Args:
        memory_limit: DuckDB's ``memory_limit`` (it spills to ``temp_directory`` beyond it).
        temp_directory: where DuckDB may spill, or None for no spilling.
        threads: worker threads, or None for DuckDB's default (one per core).

    Returns:
        A ``duckdb.DuckDBPyConnection`` (UTC time zone, no extension auto-loading).
    """
    duckdb = require("duckdb")
    con = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{duckdb_size(memory_limit)}'")
    con.execute("SET temp_directory = ?", [temp_directory or ""])
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


def duckdb_size(value: str) -> str:
    """Validate a DuckDB size literal such as ``"1GB"`` or ``"512MB"`` (it is spliced into SET)."""
    if not isinstance(value, str) or not re.fullmatch(
        r"\d{1,6}(\.\d{1,3})?\s?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value
    ):
        raise ValueError("memory_limit must look like '512MB' or '1GB'")
    return value


def _arrow_type(pa: Any, sql_type: str) -> Any:
    simple = {
        "BIGINT": pa.int64,
        "INTEGER": pa.int32,
        "DOUBLE": pa.float64,
        "BOOLEAN": pa.bool_,
        "VARCHAR": pa.string,
        "DATE": pa.date32,
    }
    if sql_type in simple:
        return simple[sql_type]()
    if sql_type == "TIMESTAMPTZ":
        return pa.timestamp("us", tz="UTC")
    if sql_type == "VARCHAR[]":
        return pa.list_(pa.string())
    if sql_type == "MAP(VARCHAR, VARCHAR)":
        return pa.map_(pa.string(), pa.string())
    raise ValueError(f"no Arrow type for {sql_type}")


def arrow_schema(*, partitions: bool = True) -> Any:
    """The Arrow schema of ``events`` rows: :data:`~.layout.COLUMNS`, then the partitions ``date``, ``hour``.

    Args:
        partitions: include the partition columns (a file's own schema has none).
    """
    pa = require("pyarrow")
    cols = COLUMNS + PARTITIONS if partitions else COLUMNS
    return pa.schema([pa.field(name, _arrow_type(pa, sql_type)) for name, sql_type, _ in cols])
