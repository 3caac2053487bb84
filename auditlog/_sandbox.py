"""DuckDB connections for the audit data (private), and the catalog of what a source holds.

Three kinds of connection, never mixed:

- :func:`loader` reads journal segments and writes Parquet during compaction. Only library code runs SQL on
  it, with paths it chose itself.
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
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "Catalog",
    "CorruptLayout",
    "EmptyLayout",
    "READ_ONLY_STATEMENTS",
    "SandboxViolation",
    "arrow_schema",
    "check_select",
    "first_line",
    "loader",
    "open_catalog",
    "parquet_scan_sql",
    "reader",
    "require",
    "sandbox",
]

_HINT = "install auditlog-pipeline[query] to use {what} (it needs duckdb and pyarrow)"


class SandboxViolation(PermissionError):
    """A statement the investigation sandbox refuses (a write, ATTACH, SET, PRAGMA, INSTALL, ...)."""


def require(name: str, what: str = "auditlog.query") -> ModuleType:
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
    con.execute(f"SET memory_limit = '{_size(memory_limit)}'")
    con.execute("SET temp_directory = ?", [temp_directory or ""])
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


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
        f"SET memory_limit = '{_size(memory_limit)}'",
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
        f"SET memory_limit = '{_size(memory_limit)}'",
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


def _size(value: str) -> str:
    """Validate a DuckDB size literal such as ``"1GB"`` or ``"512MB"`` (it is spliced into SET)."""
    import re

    if not isinstance(value, str) or not re.fullmatch(
        r"\d{1,6}(\.\d{1,3})?\s?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value
    ):
        raise ValueError("memory_limit must look like '512MB' or '1GB'")
    return value


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


# -- what enters the sandbox: the catalog of a source ------------------------------------------------


class EmptyLayout(FileNotFoundError):
    """The source holds no journal segment and no Parquet file."""


class CorruptLayout(ValueError):
    """A segment cannot be read as records (names the segment and line)."""


_ARROW_TYPES = {
    "BIGINT": "int64",
    "INTEGER": "int32",
    "DOUBLE": "float64",
    "BOOLEAN": "bool_",
    "VARCHAR": "string",
    "TIMESTAMP": "timestamp",
    "VARCHAR[]": "list",
}


def arrow_schema() -> Any:
    """The Arrow schema of ``events`` rows: :data:`auditlog.compact.COLUMNS`, then ``date``, ``source``."""
    pa = require("pyarrow")
    from auditlog.compact import COLUMNS

    fields = []
    for name, sql_type, _ in COLUMNS:
        kind = _ARROW_TYPES[sql_type]
        if kind == "timestamp":
            typ = pa.timestamp("us")
        elif kind == "list":
            typ = pa.list_(pa.string())
        else:
            typ = getattr(pa, kind)()
        fields.append(pa.field(name, typ))
    fields += [pa.field("date", pa.string()), pa.field("source", pa.string())]
    return pa.schema(fields)


class Catalog:
    """The audit data of one source: Parquet files from manifests, and the segments not compacted yet.

    ``kind`` is ``"journal"`` (a journal directory, with its ``parquet/`` layout if any), ``"parquet"`` (a
    layout root) or ``"s3"`` (a shipped layout, fetched into a local cache as queries need it).
    """

    def __init__(
        self, *, kind: str, label: str, journal: Path | None, root: Path | None, s3: Any = None
    ) -> None:
        self.kind = kind
        self.label = label
        self.journal = journal
        self.root = root
        self._s3 = s3
        self._manifests: list[Any] = []
        self.refresh()

    def describe(self) -> str:
        """The source, for messages (a path or URL)."""
        return self.label

    @property
    def manifests(self) -> list[Any]:
        """The committed compaction manifests of the source (as of the last refresh)."""
        return list(self._manifests)

    @property
    def files_root(self) -> Path | None:
        """Where the manifests' relative Parquet paths resolve: the layout root, or the S3 cache."""
        return Path(self._s3.cache) if self._s3 is not None else self.root

    def refresh(self) -> None:
        """Re-read the manifests (and, for S3, re-list them)."""
        from auditlog.compact import load_manifests

        if self._s3 is not None:
            self._manifests = self._s3.manifests()
        elif self.root is not None:
            self._manifests = load_manifests(self.root)
        if not self._manifests and not self._live_segments():
            raise EmptyLayout(f"no journal segments and no Parquet files under {self.label}")

    def parquet_files(self, since: Any, until: Any) -> tuple[str, ...]:
        """Local paths of the Parquet files whose rows may fall in ``[since, until]`` (fetched from S3)."""
        lo = since.isoformat(sep=" ") if since is not None else None
        hi = until.isoformat(sep=" ") if until is not None else None
        picked: list[str] = []
        for manifest in self._manifests:
            for entry in manifest.files:
                if lo is not None and entry.max_ts is not None and entry.max_ts < lo:
                    continue
                if hi is not None and entry.min_ts is not None and entry.min_ts > hi:
                    continue
                if self._s3 is not None:
                    picked.append(str(self._s3.fetch(entry)))
                else:
                    assert self.root is not None
                    picked.append(str(self.root / entry.path))
        return tuple(picked)

    def dataset(self, files: tuple[str, ...]) -> Any:
        """A pyarrow dataset over ``files`` with hive partitions, or an empty table when there are none."""
        pa = require("pyarrow")
        ds = require("pyarrow.dataset")
        schema = arrow_schema()
        if not files:
            return schema.empty_table()
        base = self._s3.cache if self._s3 is not None else self.root
        part = ds.partitioning(pa.schema([schema.field("date"), schema.field("source")]), flavor="hive")
        dataset = ds.dataset(
            list(files), schema=schema, format="parquet", partitioning=part, partition_base_dir=str(base)
        )
        for fragment in dataset.get_fragments():
            fragment.ensure_complete_metadata()  # footers read once: row-group statistics prune every lookup
        return dataset

    def compacted(self) -> set[tuple[str, str]]:
        """(source, segment) of every compacted segment."""
        return {(m.source, s.segment) for m in self._manifests for s in m.segments}

    def _live_segments(self) -> list[tuple[Path, Any, str]]:
        """Segments of the journal not covered by a manifest: (path, seal or None, source)."""
        if self.journal is None:
            return []
        from store._segments import list_journal, read_seal
        from store.exceptions import JournalCorrupt, JournalError

        try:
            listing = list_journal(self.journal)
        except JournalError as exc:
            raise EmptyLayout(str(exc)) from None
        done = self.compacted()
        live: list[tuple[Path, Any, str]] = []
        for number in sorted(listing.segments):
            path = listing.segments[number]
            seal = None
            if number in listing.seals:
                try:
                    seal = read_seal(listing.seals[number], None)
                except JournalCorrupt:
                    raise CorruptLayout(
                        f"the seal of journal segment {path.name} cannot be read; `auditlog verify "
                        f"{self.journal}` reports every problem"
                    ) from None
            source = seal.source if seal is not None else _header_source(path)
            if (source, path.name) not in done:
                live.append((path, seal, source))
        return live

    def live_table(self) -> Any:
        """The rows of every segment not compacted yet (the active one included), as an Arrow table.

        Raises:
            CorruptLayout: a line that is not a record, other than a torn last line (named: segment, line).
        """
        segments = self._live_segments()
        if not segments:
            return arrow_schema().empty_table()
        from auditlog.compact import COLUMNS_SQL, KEYS_SQL, partition_value, read_lines_sql

        con = loader(memory_limit="1GB")
        try:
            con.execute(
                "CREATE TEMP TABLE segs (seg VARCHAR, created TIMESTAMP, last_seq BIGINT, source VARCHAR)"
            )
            con.executemany(
                "INSERT INTO segs VALUES (?, make_timestamp(?::BIGINT), ?, ?)",
                [
                    [
                        path.name,
                        int((seal.created if seal is not None else path.stat().st_mtime) * 1_000_000),
                        seal.last_seq if seal is not None else None,
                        partition_value(source),
                    ]
                    for path, seal, source in segments
                ],
            )
            con.execute(
                "CREATE TEMP TABLE raw AS SELECT r.line, s.seg AS segment, s.created, "  # noqa: S608
                "json_valid(r.line) AS ok "
                f"FROM {read_lines_sql(len(segments))} r JOIN segs s ON parse_filename(r.filename) = s.seg",
                [str(path) for path, _, _ in segments],
            )
            for (name,) in con.execute("SELECT DISTINCT segment FROM raw WHERE NOT ok").fetchall():
                self._check_torn(name, segments)
            keyed = KEYS_SQL.replace("{src}", "(SELECT line, segment, created FROM raw WHERE ok)")
            table = con.sql(
                "SELECT c.*, strftime(c.ts, '%Y-%m-%d') AS date, s.source FROM ("  # noqa: S608
                + COLUMNS_SQL.replace("{src}", f"({keyed})")
                + ") c JOIN segs s ON c.segment = s.seg WHERE s.last_seq IS NULL OR c.seq <= s.last_seq"
            ).to_arrow_table()
        finally:
            con.close()
        return table.select(arrow_schema().names).cast(arrow_schema())

    def _check_torn(self, name: str, segments: list[tuple[Path, Any, str]]) -> None:
        """Unparseable lines are allowed only as a torn tail: past the seal, or an unterminated last line."""
        for path, seal, _ in segments:
            if path.name != name:
                continue
            limit = seal.length if seal is not None else None
            import orjson

            offset = 0
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, 1):
                    start, offset = offset, offset + len(line)
                    if limit is not None and start >= limit:
                        return
                    try:
                        ok = type(orjson.loads(line)) is dict
                    except orjson.JSONDecodeError:
                        ok = False
                    if not ok and not (limit is None and not line.endswith(b"\n")):
                        raise CorruptLayout(
                            f"journal segment {path.name} line {n} is not a valid record; "
                            f"`auditlog verify {path.parent}` reports every problem"
                        )


def _header_source(path: Path) -> str:
    import orjson

    try:
        with open(path, "rb") as fh:
            header = orjson.loads(fh.readline())
        source = header.get("source") if isinstance(header, dict) else None
    except (OSError, orjson.JSONDecodeError):
        source = None
    return source if isinstance(source, str) else "unknown"


def open_catalog(
    source: str | Path, *, cache_dir: str | Path | None = None, s3_client: Any = None
) -> Catalog:
    """Resolve a source: ``s3://bucket/prefix``, a journal directory, or a compacted layout root.

    Raises:
        EmptyLayout: nothing to query there.
        CorruptLayout: a segment or manifest cannot be read.
    """
    from auditlog.compact import MANIFEST_DIR, LayoutError, default_out

    text = str(source)
    try:
        if text.startswith("s3://"):
            from auditlog.ship import S3Layout

            s3 = S3Layout(text, cache_dir=cache_dir, client=s3_client)
            return Catalog(kind="s3", label=s3.url, journal=None, root=None, s3=s3)
        path = Path(source)
        if not path.is_dir():
            raise EmptyLayout(f"{path} is not a directory (expected a journal, a Parquet layout or s3://...)")
        if (path / MANIFEST_DIR).is_dir() and not any(path.glob("*.jsonl")):
            return Catalog(kind="parquet", label=str(path), journal=None, root=path)
        return Catalog(kind="journal", label=str(path), journal=path, root=default_out(path))
    except LayoutError as exc:
        raise CorruptLayout(str(exc)) from None
