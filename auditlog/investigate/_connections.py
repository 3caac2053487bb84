"""The two DuckDB connections of an investigation, over its catalog, both showing the ``events`` view.

- the *sandbox* runs user SQL: its engine has no file access at all, and sees the Parquet files a query's
  time range needs as a registered Arrow dataset (re-registered when those files change);
- the *reader* runs the named queries: its engine may read exactly those Parquet files (``allowed_paths``)
  with DuckDB's own reader, and is rebuilt when they change.

Both also see the segments not compacted yet (``_live``, an Arrow table). :func:`translate` is the one
boundary where catalog errors become :mod:`auditlog.investigate.investigation` errors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from auditlog.investigate import sandbox as _sandbox
from auditlog.investigate._queries import EVENTS_VIEW
from auditlog.investigate.catalog import CorruptLayout, EmptyLayout
from auditlog.investigate.errors import CorruptSource, EmptySource
from auditlog.investigate.union import AnyCatalog
from auditlog.lake.engine import arrow_schema
from auditlog.lake.layout import read_parquet_sql

__all__ = ["Connections", "translate"]

_T = TypeVar("_T")


class Connections:
    """The sandbox and the reader over ``catalog`` (see the module docstring).

    Raises:
        EmptySource: the catalog holds no segment and no Parquet file.
        CorruptSource: a segment or manifest cannot be read.
    """

    def __init__(self, catalog: AnyCatalog, *, memory_limit: str, threads: int | None) -> None:
        self._catalog = catalog
        self._memory_limit = memory_limit
        self._threads = threads
        self._con = _sandbox.sandbox(memory_limit=memory_limit, threads=threads)
        self._fast: Any = None
        self._fast_files: tuple[str, ...] | None = None
        self._sandbox_files: tuple[str, ...] | None = None
        self._closed = False
        # Where the named-query connection may spill (a sort over more rows than memory_limit holds):
        # private to this investigation, removed on close. The user-SQL sandbox never spills.
        self._spill = tempfile.mkdtemp(prefix="auditlog-spill-")
        try:
            self._live = translate(self._catalog.live_table)
            self._con.register("_live", self._live)
            self._con.register("_parquet", arrow_schema().empty_table())
            self._con.execute(EVENTS_VIEW.replace("{parquet}", "_parquet"))
            self._sandbox_files = ()
            if not self._catalog.remote:
                self.reader_for(None, None)  # s3: fetched per query, for its time range only
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def sandbox(self) -> Any:
        """The user-SQL sandbox connection, as is (no file access, configuration locked)."""
        return self._con

    def refresh(self) -> None:
        """Re-read the catalog: new manifests, new and grown segments."""
        translate(self._catalog.refresh)
        self._live = translate(self._catalog.live_table)
        self._con.register("_live", self._live)
        self._sandbox_files = None
        if self._fast is not None:
            self._fast.close()
            self._fast = None

    def close(self) -> None:
        """Close both connections. Idempotent."""
        if not self._closed:
            self._closed = True
            self._con.close()
            if self._fast is not None:
                self._fast.close()
                self._fast = None
            shutil.rmtree(self._spill, ignore_errors=True)

    def files(
        self, since: datetime | None, until: datetime | None, *, correlation_id: str | None = None
    ) -> tuple[str, ...]:
        """The Parquet files a time range (and correlation id) needs (all of them for a local catalog)."""
        if not self._catalog.remote:  # local files cost nothing to include; row-group statistics prune
            since = until = None
            correlation_id = None
        return translate(lambda: self._catalog.parquet_files(since, until, correlation_id=correlation_id))

    def reader_for(
        self, since: datetime | None, until: datetime | None, *, correlation_id: str | None = None
    ) -> Any:
        """The named-query connection over the Parquet files the range needs (rebuilt when they change).

        Args:
            since: start of the query's time range, or None.
            until: end of the query's time range, or None.
            correlation_id: the one correlation id the query looks for (``timeline``): over ``s3://``, only
                files whose manifest Bloom filter may hold it are fetched.
        """
        files = self.files(since, until, correlation_id=correlation_id)
        if files != self._fast_files or self._fast is None:
            if self._fast is not None:
                self._fast.close()
                self._fast = None
            con = _sandbox.reader(
                files, memory_limit=self._memory_limit, threads=self._threads, spill_directory=self._spill
            )
            con.register("_live", self._live)
            if files:
                con.execute(EVENTS_VIEW.replace("{parquet}", read_parquet_sql(files)))
            else:
                con.register("_parquet", arrow_schema().empty_table())
                con.execute(EVENTS_VIEW.replace("{parquet}", "_parquet"))
            self._fast, self._fast_files = con, files
        return self._fast

    def sandbox_for(self, since: datetime | None, until: datetime | None) -> Any:
        """The user-SQL sandbox, with the Parquet files the range needs registered as an Arrow dataset."""
        files = self.files(since, until)
        if files != self._sandbox_files:
            self._con.register("_parquet", self._catalog.dataset(files))
            self._sandbox_files = files
        return self._con


def translate(fn: Callable[[], _T]) -> _T:
    """Run a catalog step, translating its errors into the investigation's at one boundary."""
    from auditlog.lake.layout import LayoutError
    from auditlog.lake.s3 import ShipError

    try:
        return fn()
    except EmptyLayout as exc:
        raise EmptySource(str(exc)) from None
    except (CorruptLayout, LayoutError) as exc:
        raise CorruptSource(str(exc)) from None
    except ShipError as exc:
        raise CorruptSource(f"the S3 source cannot be read: {exc}") from exc
