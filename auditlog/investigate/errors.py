"""The errors of an investigation, re-exported by :mod:`auditlog.investigate.investigation`.

Errors::

    QueryError
    ├── EmptySource           (FileNotFoundError)  no segments and no Parquet files at the source
    ├── UnknownCorrelationId  (LookupError)        timeline() found no event with that id
    ├── BadTimeRange          (ValueError)         unparseable since/until, or since after until
    ├── CorruptSource         (ValueError)         a segment or Parquet file cannot be read (names it)
    ├── NotJournaled          (RuntimeError)       no audit handle, or the journal refused query.run
    └── SandboxViolation      (PermissionError)    user SQL that is not a single read-only query
"""

from __future__ import annotations

from auditlog.investigate import sandbox as _sandbox

__all__ = [
    "BadTimeRange",
    "CorruptSource",
    "EmptySource",
    "NotJournaled",
    "QueryError",
    "SandboxViolation",
    "UnknownCorrelationId",
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
