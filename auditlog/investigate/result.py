"""The rows a query returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from auditlog.lake.engine import require

__all__ = ["Result"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Rows of one query: ``columns`` and ``rows`` (tuples), in order. Iterating yields dicts.

    ``verified`` is true when the source passed verification before the query ran; an investigation
    opened with ``allow_unverified=True`` over a source that fails it answers with ``verified`` false.
    """

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    verified: bool = False

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
