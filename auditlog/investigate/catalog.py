"""The catalog of what an investigation source holds: Parquet files from manifests, and live segments.

A source is a journal directory (with its ``parquet/`` layout, if compacted), a layout root, or a shipped
``s3://bucket/prefix`` layout fetched into a local cache as queries need it. The catalog hands the sandbox
read-only Arrow data; it never runs user SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlog.lake.engine import arrow_schema, loader, require

__all__ = ["Catalog", "CorruptLayout", "EmptyLayout", "open_catalog"]


class EmptyLayout(FileNotFoundError):
    """The source holds no journal segment and no Parquet file."""


class CorruptLayout(ValueError):
    """A segment cannot be read as records (names the segment and line)."""


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
        from auditlog.lake.layout import load_manifests

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
        from auditlog.lake.layout import COLUMNS_SQL, KEYS_SQL, partition_value, read_lines_sql

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
    from auditlog.lake.layout import MANIFEST_DIR, LayoutError, default_out

    text = str(source)
    try:
        if text.startswith("s3://"):
            from auditlog.lake.ship import S3Layout

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
