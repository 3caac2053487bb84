"""The errors of an investigation, exported by :mod:`auditlog.investigate`.

Errors::

    QueryError
    ├── EmptySource           (FileNotFoundError)  no segments and no Parquet files at the source
    ├── UnknownCorrelationId  (LookupError)        timeline() found no event with that id
    ├── BadTimeRange          (ValueError)         unparseable since/until, or since after until
    ├── CorruptSource         (ValueError)         a segment or Parquet file cannot be read (names it)
    │   └── UnverifiedSource                       the source fails verification (changed, deleted, re-keyed)
    ├── KeyMismatch           (ValueError)         no key of the ring wrote the source
    ├── DuplicateSource       (ValueError)         two sources of a union hold the same stream (names both)
    ├── NotJournaled          (RuntimeError)       no audit handle, or the journal refused query.run
    ├── SandboxViolation      (PermissionError)    user SQL that is not a single read-only query
    └── QueryLimit                                 a query stopped at a resource limit
        ├── QueryTimeout      (TimeoutError)       it ran longer than ``timeout`` seconds
        └── ResultTooLarge    (ValueError)         its result exceeds ``max_rows`` rows or ``max_bytes`` bytes
"""

from __future__ import annotations

from auditlog.investigate import sandbox as _sandbox

__all__ = [
    "BadTimeRange",
    "CorruptSource",
    "DuplicateSource",
    "EmptySource",
    "KeyMismatch",
    "NotJournaled",
    "QueryError",
    "QueryLimit",
    "QueryTimeout",
    "ResultTooLarge",
    "SandboxViolation",
    "UnknownCorrelationId",
    "UnverifiedSource",
]


class QueryError(Exception):
    """Base class of every error raised by an investigation."""


class EmptySource(QueryError, FileNotFoundError):
    """The source holds no journal segment and no Parquet file."""


class UnknownCorrelationId(QueryError, LookupError):
    """No event carries the correlation id asked for."""


class BadTimeRange(QueryError, ValueError):
    """A time bound cannot be parsed, or ``since`` is after ``until``."""


class CorruptSource(QueryError, ValueError):
    """A segment or Parquet file cannot be read; the message names it (``auditlog verify`` says more)."""


class NotJournaled(QueryError, RuntimeError):
    """The investigation cannot be journaled (no audit handle, or the journal refused the event)."""


class SandboxViolation(QueryError, _sandbox.SandboxViolation):
    """User SQL that is not one read-only query, or that the sandboxed engine refused."""


class UnverifiedSource(CorruptSource):
    """The source fails verification: a record, seal, manifest or Parquet file is not what was written.

    ``Investigation(..., allow_unverified=True)`` answers anyway, with ``Result.verified`` false.
    """


class KeyMismatch(QueryError, ValueError):
    """The key ring holds none of the keys the source was written under (names both key ids)."""


class DuplicateSource(QueryError, ValueError):
    """Two sources of a union are the same, or hold the same stream of the same trail (names both)."""


class QueryLimit(QueryError):
    """A query was stopped at a resource limit (its time, or the size of its result)."""


class QueryTimeout(QueryLimit, TimeoutError):
    """A query ran longer than the investigation's ``timeout`` and was interrupted."""


class ResultTooLarge(QueryLimit, ValueError):
    """A query's result exceeds ``max_rows`` rows or ``max_bytes`` bytes; narrow it or raise the limit."""
