"""The catalog of what an investigation source holds: Parquet files from manifests, and live segments.

A source is a trail directory (every stream: its ``parquet/`` layout for what is compacted, the segments of
every stream for the rest, active ones included), a classic journal directory, a layout root, or a shipped
``s3://bucket/prefix`` layout fetched into a local cache as queries need it (only the files a query's time
range and correlation id need, by the manifests' statistics). Rows of all streams form one ``events``
relation; across streams they are ordered by ``ts``, then ``stream``, then ``seq`` (see
:mod:`auditlog.lake.layout` on clocks). The catalog hands the sandbox read-only Arrow data; it never runs
user SQL.
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
    def parts(self) -> tuple[Catalog, ...]:
        """The sources read as one: this catalog alone (a union has several, see :mod:`~.union`)."""
        return (self,)

    @property
    def remote(self) -> bool:
        """True for ``s3://``: files are fetched as queries need them, so a query's time range matters."""
        return self._s3 is not None

    def verify_hint(self) -> str:
        """Where to look further when the source fails verification, for its kind."""
        if self.kind == "journal":
            return f"`auditlog verify {self.label}` reports every problem"
        if self.kind == "parquet":
            return "run `auditlog verify` on the journal it was compacted from"
        return (
            "run `auditlog verify` on the journal it was shipped from (on the writer's host), then ship it "
            "again; files fetched into the cache are re-checked against their manifest"
        )

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

    def parquet_files(self, since: Any, until: Any, *, correlation_id: str | None = None) -> tuple[str, ...]:
        """Local paths of the Parquet files whose rows may fall in ``[since, until]`` (fetched from S3).

        Args:
            since: start of the range, or None.
            until: end of the range, or None.
            correlation_id: keep only files whose Bloom filter may hold this id.
        """
        lo = since.isoformat(sep=" ") if since is not None else None
        hi = until.isoformat(sep=" ") if until is not None else None
        from auditlog.lake.layout import CidBloom

        picked: list[Any] = []
        for manifest in self._manifests:
            for entry in manifest.files:
                if lo is not None and entry.max_ts is not None and entry.max_ts < lo:
                    continue
                if hi is not None and entry.min_ts is not None and entry.min_ts > hi:
                    continue
                if correlation_id is not None and entry.cids:
                    bloom = CidBloom.decode(entry.cids)
                    if bloom is not None and not bloom.may_hold(correlation_id):
                        continue
                picked.append(entry)
        if self._s3 is not None:
            return tuple(str(p) for p in self._s3.fetch_many(picked))
        assert self.root is not None
        return tuple(str(self.root / entry.path) for entry in picked)

    def dataset(self, files: tuple[str, ...]) -> Any:
        """A pyarrow dataset over ``files`` with hive partitions, or an empty table when there are none."""
        pa = require("pyarrow")
        ds = require("pyarrow.dataset")
        schema = arrow_schema()
        if not files:
            return schema.empty_table()
        base = self._s3.cache if self._s3 is not None else self.root
        part = ds.partitioning(pa.schema([schema.field("date"), schema.field("hour")]), flavor="hive")
        dataset = ds.dataset(
            list(files), schema=schema, format="parquet", partitioning=part, partition_base_dir=str(base)
        )
        for fragment in dataset.get_fragments():
            fragment.ensure_complete_metadata()  # footers read once: row-group statistics prune every lookup
        return dataset

    def compacted(self) -> set[tuple[str, str]]:
        """(stream, segment) of every compacted segment."""
        return {(m.stream, s.segment) for m in self._manifests for s in m.segments}

    def streams(self) -> list[Any]:
        """The streams of the trail (or the journal as one stream), as :class:`store.trail.StreamInfo`."""
        if self.journal is None:
            return []
        from auditlog.lake._streams import lake_streams
        from auditlog.lake.layout import LayoutError

        try:
            return lake_streams(self.journal)
        except LayoutError as exc:
            raise EmptyLayout(str(exc)) from None

    def _live_segments(self) -> list[tuple[Path, Any, Any]]:
        """Segments of every stream not covered by a manifest: (path, seal or None, stream info)."""
        from store._segments import list_journal, read_seal
        from store.exceptions import JournalCorrupt, JournalError

        done = self.compacted()
        live: list[tuple[Path, Any, Any]] = []
        for info in self.streams():
            try:
                listing = list_journal(info.path)
            except JournalError as exc:
                raise EmptyLayout(str(exc)) from None
            for number in sorted(listing.segments):
                path = listing.segments[number]
                if (info.stream, path.name) in done:
                    continue
                seal = None
                if number in listing.seals:
                    try:
                        seal = read_seal(listing.seals[number], None)
                    except JournalCorrupt:
                        raise CorruptLayout(
                            f"the seal of segment {path.name} of stream {info.stream} cannot be read; "
                            f"`auditlog verify {self.journal}` reports every problem"
                        ) from None
                live.append((path, seal, info))
        return live

    def live_table(self) -> Any:
        """The rows of every segment not compacted yet (active ones included), as an Arrow table.

        Raises:
            CorruptLayout: a line that is not a record, other than a torn last line (named: segment, line).
        """
        segments = self._live_segments()
        if not segments:
            return arrow_schema().empty_table()
        from auditlog.lake.layout import COLUMNS_SQL, KEYS_SQL, read_lines_sql

        con = loader(memory_limit="1GB")
        try:
            con.execute(
                "CREATE TEMP TABLE segs (file VARCHAR, seg VARCHAR, created TIMESTAMP, last_seq BIGINT, "
                "source VARCHAR, stream VARCHAR, trail_id VARCHAR)"
            )
            con.executemany(
                "INSERT INTO segs VALUES (?, ?, make_timestamp(?::BIGINT), ?, ?, ?, ?)",
                [
                    [
                        str(path),
                        path.name,
                        int((seal.created if seal is not None else path.stat().st_mtime) * 1_000_000),
                        seal.last_seq if seal is not None else None,
                        info.source if info.source is not None else (seal.source if seal else None),
                        info.stream,
                        info.trail_id,
                    ]
                    for path, seal, info in segments
                ],
            )
            con.execute(
                "CREATE TEMP TABLE raw AS SELECT r.line, s.seg AS segment, s.created, s.source, s.stream, "  # noqa: S608
                "s.trail_id, s.file, json_valid(r.line) AS ok "
                f"FROM {read_lines_sql(len(segments))} r JOIN segs s ON r.filename = s.file",
                [str(path) for path, _, _ in segments],
            )
            for (file,) in con.execute("SELECT DISTINCT file FROM raw WHERE NOT ok").fetchall():
                self._check_torn(file, segments)
            keyed = KEYS_SQL.replace(
                "{src}", "(SELECT line, segment, created, source, stream, trail_id FROM raw WHERE ok)"
            )
            table = con.sql(
                "SELECT c.*, c.ts::DATE AS date, hour(c.ts)::INTEGER AS hour FROM ("  # noqa: S608
                + COLUMNS_SQL.replace("{src}", f"({keyed})")
                + ") c JOIN segs s ON c.stream = s.stream AND c.segment = s.seg "
                "WHERE s.last_seq IS NULL OR c.seq <= s.last_seq"
            ).to_arrow_table()
        finally:
            con.close()
        return table.select(arrow_schema().names).cast(arrow_schema())

    def _check_torn(self, file: str, segments: list[tuple[Path, Any, Any]]) -> None:
        """Unparseable lines are allowed only as a torn tail: past the seal, or an unterminated last line."""
        for path, seal, _ in segments:
            if str(path) != file:
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


def open_catalog(
    source: str | Path, *, cache_dir: str | Path | None = None, s3_client: Any = None
) -> Catalog:
    """Resolve a source: ``s3://bucket/prefix``, a trail (or journal) directory, or a compacted layout root.

    Raises:
        EmptyLayout: nothing to query there.
        CorruptLayout: a segment or manifest cannot be read.
    """
    from auditlog.lake.layout import MANIFEST_DIR, LayoutError, default_out

    text = str(source)
    try:
        if text.startswith("s3://"):
            from auditlog.lake.s3 import S3Layout

            s3 = S3Layout(text, cache_dir=cache_dir, client=s3_client)
            return Catalog(kind="s3", label=s3.url, journal=None, root=None, s3=s3)
        path = Path(source)
        if not path.is_dir():
            raise EmptyLayout(f"{path} is not a directory (expected a journal, a Parquet layout or s3://...)")
        trail = (path / "trail.json").is_file() or any(path.glob("*.jsonl"))
        if (path / MANIFEST_DIR).is_dir() and not trail:
            return Catalog(kind="parquet", label=str(path), journal=None, root=path)
        return Catalog(kind="journal", label=str(path), journal=path, root=default_out(path))
    except LayoutError as exc:
        raise CorruptLayout(str(exc)) from None
