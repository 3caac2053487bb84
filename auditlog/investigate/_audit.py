"""Journaling an investigation's queries: each becomes one ``query.run`` event, written before rows return.

The event records the query's name, the *shapes* of its parameters (never their values), the SHA-256 and
length of user SQL, the row count, the outcome and the duration. A journal that refuses the event refuses
the query (:class:`~auditlog.investigate.investigation.NotJournaled`).
"""

from __future__ import annotations

import getpass
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from auditlog.investigate.errors import NotJournaled

__all__ = ["AuditSink", "QueryJournal", "os_user", "shape"]


class AuditSink(Protocol):
    """What an investigation journals through: :class:`auditlog.AuditHandle` or anything with ``emit``."""

    def emit(self, event: dict[str, Any]) -> bool: ...


def shape(value: object) -> dict[str, Any]:
    """The shape of a query parameter, as journaled: its type and size, never its value."""
    if value is None:
        return {"t": "null"}
    if isinstance(value, bool):
        return {"t": "bool"}
    if isinstance(value, int | float):
        return {"t": "num"}
    if isinstance(value, str):
        return {"t": "str", "len": len(value)}
    if isinstance(value, bytes | bytearray):
        return {"t": "bytes", "len": len(value)}
    if isinstance(value, datetime | date):
        return {"t": "time"}
    if isinstance(value, Mapping):
        return {"t": "obj", "len": len(value)}
    if isinstance(value, Sequence):
        return {"t": "arr", "len": len(value)}
    return {"t": "other"}


class QueryJournal:
    """Journals one investigation's queries as ``query.run`` events through ``audit``.

    Args:
        audit: where the events go.
        investigator: the events' ``actor.subject``.
        target: the source's kind (the events' ``action.target``).
    """

    __slots__ = ("_audit", "_investigator", "_target")

    def __init__(self, audit: AuditSink, *, investigator: str, target: str) -> None:
        self._audit = audit
        self._investigator = investigator
        self._target = target

    def __call__(
        self,
        name: str,
        shown: Mapping[str, Any],
        *,
        rows: int,
        status: str,
        error: str | None,
        started: float,
        sql: str | None,
    ) -> None:
        """Emit one ``query.run`` event.

        Args:
            name: the query's name.
            shown: the parameters to journal, by name (only their shapes are written).
            rows: the row count.
            status: ``"ok"``, ``"error"`` or ``"refused"``.
            error: the error's type name, if any.
            started: ``time.perf_counter()`` when the query started.
            sql: user SQL (journaled as its SHA-256 and length), or None for a named query.

        Raises:
            NotJournaled: the journal raised, or refused the event.
        """
        params: dict[str, Any] = {}
        for key, value in shown.items():
            if key == "params" and isinstance(value, Mapping):
                params[key] = {
                    "t": "obj",
                    "keys": {str(k)[:64]: shape(v) for k, v in list(value.items())[:64]},
                }
            elif key == "params" and isinstance(value, Sequence) and not isinstance(value, str | bytes):
                params[key] = {"t": "arr", "items": [shape(v) for v in list(value)[:64]]}
            else:
                params[key] = shape(value)
        query: dict[str, Any] = {"name": name, "params": params, "rows": rows}
        if sql is not None:
            query["sql_sha256"] = hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()
            query["sql_len"] = len(sql)
        event = {
            "kind": "query.run",
            "actor": {"subject": self._investigator},
            "action": {"name": name, "method": "query", "target": self._target},
            "outcome": {
                "status": status,
                "error_type": error,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
            "query": query,
        }
        try:
            ok = self._audit.emit(event)
        except Exception as exc:
            raise NotJournaled(f"the audit journal did not take query.run ({type(exc).__name__})") from None
        if ok is False:
            raise NotJournaled("the audit journal did not take query.run, so the result is withheld")


def os_user() -> str:
    """The OS user running the process (the default investigator), or ``"unknown"``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
