"""Several sources read as one: the trails of many hosts (or copies of them), layouts and shipped prefixes.

``Investigation([a, b])`` opens each source as its own :class:`~auditlog.investigate.catalog.Catalog` and
answers from the union of their rows: one ``events`` relation, whose rows keep ``source``, ``stream`` and
``trail_id``, so results stay per stream. Across sources, as across the streams of one trail, timelines
order by ``ts``, then ``stream``, then ``seq``: ``ts`` is each writer's wall clock, so the order between
hosts is only as good as their clock synchronisation (run NTP; a clock step reorders).

- each part is verified by its own :class:`~auditlog.investigate._integrity.Checker` (its chain, manifests,
  Parquet SHA-256 and key ids); a problem is reported with the source it was found in, and a part that
  fails fails every query (or, with ``allow_unverified``, flags each result);
- Parquet files keep their own layout root (partitions are read relative to it) and the datasets of the
  parts are read as one; the segments not compacted yet are concatenated;
- the same source given twice, or two sources holding the same stream (the same ``trail_id`` and
  ``stream``: a trail and its copy, a trail and its compacted layout), is refused with
  :class:`~auditlog.investigate.errors.DuplicateSource` naming both: its rows would count twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditlog.investigate._integrity import Checker, Integrity
from auditlog.investigate.catalog import Catalog, open_catalog
from auditlog.investigate.errors import DuplicateSource
from auditlog.lake.engine import arrow_schema, require

if TYPE_CHECKING:
    from store.keys import KeyRing

__all__ = [
    "AnyCatalog",
    "OneSource",
    "Sources",
    "UnionCatalog",
    "UnionChecker",
    "checker_for",
    "describe_sources",
    "open_sources",
    "source_list",
    "unverified_message",
]

OneSource = str | os.PathLike[str]
#: One source, or several read as one.
Sources = OneSource | Sequence[OneSource]


def source_list(source: Sources) -> tuple[OneSource, ...]:
    """The sources given, as a tuple (one source is a tuple of one).

    Raises:
        ValueError: an empty sequence.
    """
    items: tuple[OneSource, ...] = (source,) if isinstance(source, str | os.PathLike) else tuple(source)
    if not items:
        raise ValueError("no source given: pass a trail directory, a layout root or s3://bucket/prefix")
    return items


def describe_sources(source: Sources) -> str:
    """The sources as given, for messages: one source as is, several joined by commas."""
    return ", ".join(str(s) for s in source_list(source))


class UnionCatalog:
    """Several catalogs read as one (see the module docstring); the interface of a catalog.

    Raises:
        DuplicateSource: two parts are the same source, or hold the same stream of the same trail.
    """

    kind = "union"

    def __init__(self, parts: Sequence[Catalog]) -> None:
        self._parts = tuple(parts)
        self._owner: dict[str, Catalog] = {}  # local Parquet path -> the part it belongs to
        self._check_distinct()

    @property
    def parts(self) -> tuple[Catalog, ...]:
        """The sources, in the order given."""
        return self._parts

    @property
    def label(self) -> str:
        """The sources, joined by commas."""
        return ", ".join(p.label for p in self._parts)

    def describe(self) -> str:
        """The union, for messages."""
        return f"the union of {self.label}"

    @property
    def remote(self) -> bool:
        """True when a part is ``s3://`` (its files are fetched for each query's time range)."""
        return any(p.remote for p in self._parts)

    def refresh(self) -> None:
        """Re-read every part; a stream that now appears in two of them is refused as on opening."""
        for part in self._parts:
            part.refresh()
        self._check_distinct()

    def streams(self) -> list[Any]:
        """The streams of every part."""
        return [info for part in self._parts for info in part.streams()]

    def parquet_files(self, since: Any, until: Any, *, correlation_id: str | None = None) -> tuple[str, ...]:
        """Every part's Parquet files for the range (a local part's all of them: statistics prune)."""
        files: list[str] = []
        for part in self._parts:
            if part.remote:
                mine = part.parquet_files(since, until, correlation_id=correlation_id)
            else:
                mine = part.parquet_files(None, None)
            self._owner.update(dict.fromkeys(mine, part))
            files.extend(mine)
        return tuple(files)

    def dataset(self, files: tuple[str, ...]) -> Any:
        """One pyarrow dataset over ``files``, each part's read relative to its own layout root."""
        by_part: dict[int, tuple[Catalog, list[str]]] = {}
        for f in files:
            part = self._owner[f]
            by_part.setdefault(id(part), (part, []))[1].append(f)
        sets = [part.dataset(tuple(mine)) for part, mine in by_part.values()]
        if not sets:
            return arrow_schema().empty_table()
        return sets[0] if len(sets) == 1 else require("pyarrow.dataset").dataset(sets)

    def live_table(self) -> Any:
        """The segments not compacted yet of every part, as one Arrow table."""
        return require("pyarrow").concat_tables([part.live_table() for part in self._parts])

    def _check_distinct(self) -> None:
        where: dict[str, Catalog] = {}
        held: dict[tuple[str, str], Catalog] = {}
        for part in self._parts:
            place = _location(part)
            if place in where:
                raise DuplicateSource(
                    f"{where[place].label} and {part.label} are the same source: give each source once"
                )
            where[place] = part
            for trail_id, stream in sorted(_streams_held(part)):
                other = held.setdefault((trail_id, stream), part)
                if other is not part:
                    raise DuplicateSource(
                        f"{other.label} and {part.label} both hold stream {stream} of trail {trail_id}: "
                        "its events would count twice; give each trail once (a trail, or its copy, or its "
                        "compacted layout)"
                    )


def _location(part: Catalog) -> str:
    """Where a part's data is: its resolved directory, or its URL."""
    path = part.journal if part.journal is not None else part.root
    return str(path.resolve()) if path is not None else part.label.rstrip("/")


def _streams_held(part: Catalog) -> set[tuple[str, str]]:
    """(trail_id, stream) of every stream a part holds, live or compacted (a classic journal has no id)."""
    held = {(m.trail_id, m.stream) for m in part.manifests if m.trail_id}
    held |= {(info.trail_id, info.stream) for info in part.streams() if info.trail_id}
    return held


AnyCatalog = Catalog | UnionCatalog


def open_sources(
    source: Sources, *, cache_dir: str | Path | None = None, s3_client: Any = None
) -> AnyCatalog:
    """One source's :class:`Catalog`, or the :class:`UnionCatalog` of several.

    Raises:
        ValueError: no source.
        EmptyLayout: a source holds nothing to query (named).
        CorruptLayout: a segment or manifest cannot be read (named).
        DuplicateSource: a source given twice, or a stream held by two sources.
    """
    items = source_list(source)
    if len(items) == 1:
        return open_catalog(_text(items[0]), cache_dir=cache_dir, s3_client=s3_client)
    parts = [open_catalog(_text(s), cache_dir=_cache_of(s, cache_dir), s3_client=s3_client) for s in items]
    return UnionCatalog(parts)


def _text(source: OneSource) -> str:
    return source if isinstance(source, str) else os.fspath(source)


def _cache_of(source: OneSource, cache_dir: str | Path | None) -> Path | None:
    """Each ``s3://`` source of a union caches under its own folder of ``cache_dir`` (bucket/prefix)."""
    text = str(source)
    if cache_dir is None or not text.startswith("s3://"):
        return None if cache_dir is None else Path(cache_dir)
    return Path(cache_dir) / (text.removeprefix("s3://").strip("/") or "_root")


class UnionChecker:
    """Verifies each part of a union with its own :class:`Checker`; problems name the part."""

    __slots__ = ("_checkers",)

    def __init__(self, catalog: UnionCatalog, keys: KeyRing | None) -> None:
        self._checkers = tuple((part, Checker(part, keys)) for part in catalog.parts)

    def key_mismatch(self) -> str | None:
        """The first part the key ring cannot have written (its message names it), or None."""
        for _, checker in self._checkers:
            mismatch = checker.key_mismatch()
            if mismatch is not None:
                return mismatch
        return None

    def verify(self) -> Integrity:
        """Verify every part; ``failed`` names the parts that do not verify."""
        problems: list[str] = []
        failed: list[str] = []
        for part, checker in self._checkers:
            found = checker.verify()
            if not found.verified:
                failed.append(part.label)
                problems.extend(f"{part.label}: {p}" for p in found.problems)
        return Integrity(verified=not failed, problems=tuple(problems), failed=tuple(failed))

    def recheck(self, integrity: Integrity) -> Integrity:
        """``integrity`` with the local Parquet files of every part re-checked (a stat each)."""
        problems, failed = list(integrity.problems), list(integrity.failed)
        for part, checker in self._checkers:
            changed = checker.recheck_files()
            problems.extend(f"{part.label}: {p}" for p in changed)
            if changed and part.label not in failed:
                failed.append(part.label)
        if len(problems) == len(integrity.problems):
            return integrity
        return Integrity(verified=False, problems=tuple(problems), failed=tuple(failed))


def checker_for(catalog: AnyCatalog, keys: KeyRing | None) -> Checker | UnionChecker:
    """The checker of a catalog: one :class:`Checker`, or one per part of a union."""
    if isinstance(catalog, UnionCatalog):
        return UnionChecker(catalog, keys)
    return Checker(catalog, keys)


def unverified_message(catalog: AnyCatalog, integrity: Integrity) -> str:
    """Why no query answers from ``catalog``: what failed, its first problems, where to look further."""
    if not integrity.failed:
        hint = "; ".join(p.verify_hint() for p in catalog.parts)
        summary = integrity.summary()
        return f"{catalog.describe()} fails verification, so no query answers from it: {summary}; {hint}"
    failed = [p for p in catalog.parts if p.label in integrity.failed]
    return (
        f"{', '.join(p.label for p in failed)} {'fails' if len(failed) == 1 else 'fail'} verification, so no "
        f"query answers from {catalog.describe()}: {integrity.summary()}; "
        + "; ".join(p.verify_hint() for p in failed)
    )
