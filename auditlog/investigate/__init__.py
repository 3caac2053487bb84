"""Investigations: incident reconstruction over a trail, a compacted layout or a shipped s3:// layout.

- :mod:`~auditlog.investigate.investigation`: :class:`Investigation`, the named queries, journaled;
- :mod:`~auditlog.investigate.catalog`: what a source holds (manifests, live segments, the S3 cache);
- :mod:`~auditlog.investigate.union`: several sources (the trails of many hosts) read as one;
- :mod:`~auditlog.investigate.sandbox`: the locked DuckDB connections user SQL and named queries run on;
- :mod:`~auditlog.investigate.timerange`, :mod:`~auditlog.investigate.result`,
  :mod:`~auditlog.investigate.errors`: time ranges, results and the error tree.

May import: the lake, ``store``, ``processors`` and the public face. Never integrations, evidence, the CLI
or the demo. ``from auditlog.investigate import Investigation`` is the import path users rely on.
"""

from __future__ import annotations

from auditlog.investigate._audit import AuditSink
from auditlog.investigate.errors import (
    BadTimeRange,
    CorruptSource,
    DuplicateSource,
    EmptySource,
    KeyMismatch,
    NotJournaled,
    QueryError,
    QueryLimit,
    QueryTimeout,
    ResultTooLarge,
    SandboxViolation,
    UnknownCorrelationId,
    UnverifiedSource,
)
from auditlog.investigate.investigation import Investigation, TopBy
from auditlog.investigate.result import Result
from auditlog.investigate.timerange import TimeArg, parse_time
from auditlog.investigate.union import Sources

__all__ = [
    "AuditSink",
    "BadTimeRange",
    "CorruptSource",
    "DuplicateSource",
    "EmptySource",
    "Investigation",
    "KeyMismatch",
    "NotJournaled",
    "QueryError",
    "QueryLimit",
    "QueryTimeout",
    "Result",
    "ResultTooLarge",
    "SandboxViolation",
    "Sources",
    "TimeArg",
    "TopBy",
    "UnknownCorrelationId",
    "UnverifiedSource",
    "parse_time",
]
