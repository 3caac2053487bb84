"""Time bounds of a query: absolute (ISO 8601, ``datetime``, ``date``) or relative (``24h``), as naive UTC."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from auditlog.investigate.errors import BadTimeRange

__all__ = ["TimeArg", "duration_seconds", "parse_time", "time_range"]

TimeArg = datetime | date | str | None

_RELATIVE = re.compile(r"(\d{1,6})\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: TimeArg, *, name: str = "time", now: datetime | None = None) -> datetime | None:
    """Parse a time bound to a naive UTC ``datetime`` (the Parquet ``ts`` convention).

    Accepts a ``datetime`` (naive means UTC), a ``date`` (midnight UTC), an ISO 8601 string
    (``2026-11-22``, ``2026-11-22T10:00``, ``...Z``, ``...+02:00``), a relative duration meaning "that
    long ago" (``30m``, ``24h``, ``7d``, ``2w``), or ``now``.

    Args:
        value: the bound, or None.
        name: the parameter's name, for the error message.
        now: the current time for relative bounds (default: now).

    Returns:
        The bound as naive UTC, or None.

    Raises:
        BadTimeRange: the value cannot be parsed.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "now":
            return now or datetime.now(UTC).replace(tzinfo=None)
        m = _RELATIVE.fullmatch(text)
        if m:
            ref = now or datetime.now(UTC).replace(tzinfo=None)
            return ref - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parse_time(parsed, name=name)
    raise BadTimeRange(
        f"{name}: expected an ISO 8601 date or time (2026-11-22, 2026-11-22T10:00Z), a duration like "
        "30m, 24h, 7d, or now"
    )


def time_range(since: TimeArg, until: TimeArg) -> tuple[datetime | None, datetime | None]:
    lo = parse_time(since, name="since")
    hi = parse_time(until, name="until")
    if lo is not None and hi is not None and lo > hi:
        raise BadTimeRange("since is after until: the time range is empty")
    return lo, hi


def duration_seconds(text: str, name: str) -> int:
    m = _RELATIVE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"anomalies: {name} must be a duration like 5m, 1h, 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]
