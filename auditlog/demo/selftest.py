"""``auditlog selftest``: plant canaries through *your* configured pipeline and fail if any comes out.

For every rule of the policy that matches by logger (and for the defaults), the self-test logs each canary
value in every place a caller could put it: as a keyword argument (under the rule's allowlisted and
fingerprinted field names too), nested in dicts and lists, as a dict key, as bytes, in the event message,
in an exception message and its chained cause, through stdlib ``logging`` with %-arguments and
``extra=``, and in a uvicorn access line. Then it scans the journal and the console stream for every
needle, in raw, JSON-escaped and URL-encoded form. A hit names the canary, the logger and the field,
never the value.

:func:`scan_trails` runs the same scan over trails that exist (``auditlog selftest --scan DIR --also
DIR2``): every stream of each, reported per stream and in total, so a value planted into a live server
(a probe, a penetration test) can be looked for wherever the server journaled.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from auditlog._configure import configure
from auditlog.canaries import Canaries, load_canaries
from auditlog.policy import DEFAULT_POLICY, Policy, Rule
from processors import Scanner
from store.keys import KeyRing, MasterKey
from store.trail import iter_trail_records

__all__ = ["SelftestResult", "StreamScan", "run_selftest", "scan_trails"]


@dataclass(slots=True)
class SelftestResult:
    """Outcome: how many plantings were made and every leak found (canary name, logger, where)."""

    planted: int = 0
    records: int = 0
    leaks: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.leaks and self.records > 0


def _logger_name(rule: Rule) -> str | None:
    pattern = rule.match.get("logger")
    if pattern is None:
        return None
    return pattern.replace("*", "x").replace("?", "x").replace("[", "").replace("]", "")


def _plant(log: Any, std: logging.Logger, rule: Rule, c: Canaries) -> int:
    n = 0
    fields = sorted(rule.allow | rule.fingerprint) or ["value"]
    for name, value in c.values.items():
        kwargs: dict[str, Any] = {f: value for f in fields}
        kwargs.update(
            arg=value,
            nested={"a": {"b": [value, {"c": value}]}, value: 1},
            items=[value, (value,), {value}],
            raw=value.encode(),
        )
        log.info(f"selftest {name} {value}", **kwargs)
        try:
            try:
                raise ValueError(value)
            except ValueError as exc:
                raise RuntimeError(f"failed with {value}") from exc
        except RuntimeError:
            log.exception("selftest.exception", canary=name)
        std.info("selftest %s", value, extra={f: value for f in fields})
        std.info(value)
        n += 4
    return n


def run_selftest(
    policy: Policy | None = None,
    *,
    canaries: Canaries | None = None,
    scanner: Scanner | None = None,
    workdir: Path | None = None,
) -> SelftestResult:
    """Run the self-test against ``policy`` (default: the safe default policy) and ``scanner``."""
    pol = policy or DEFAULT_POLICY
    c = canaries or load_canaries()
    result = SelftestResult()
    with tempfile.TemporaryDirectory(prefix="auditlog-selftest-", dir=workdir) as tmp:
        journal_dir = Path(tmp) / "journal"
        console = io.StringIO()
        handle = configure(
            journal_dir=journal_dir,
            policy=pol,
            key=KeyRing(MasterKey.generate()),
            console=console,
            scanner=scanner,
        )
        try:
            rules = [pol.defaults, *[r for r in pol.rules if _logger_name(r) is not None]]
            for rule in rules:
                name = _logger_name(rule) or "auditlog.demo.selftest"
                result.planted += _plant(structlog.get_logger(name), logging.getLogger(name), rule, c)
            access = logging.getLogger("uvicorn.access")
            for value in c.values.values():
                access.info(
                    '%s - "%s %s HTTP/%s" %d', (value, 1), "GET", "/x/" + value + "?q=" + value, "1.1", 200
                )
                result.planted += 1
        finally:
            handle.shutdown()
        for _, rec in iter_trail_records(journal_dir):
            result.records += 1
            result.leaks += [(name, _safe(c, rec.get("logger")), where) for name, where in _leaks(rec, c)]
        out = console.getvalue().encode("utf-8", "surrogatepass")
        for needle in c.leaks_in(out):
            result.leaks.append((_canary_name(c, needle), "<console>", "<line>"))
    return result


def _leaks(rec: dict[str, Any], c: Canaries) -> list[tuple[str, str]]:
    """The canaries found in one record: (canary name, the field it is in, or ``<a key>``)."""
    found: list[tuple[str, str]] = []
    for key, val in rec.items():
        blob = orjson.dumps({key: val}, default=str)
        for needle in c.leaks_in(blob):
            where = "<a key>" if c.leaks_in(key.encode("utf-8", "replace")) else key
            found.append((_canary_name(c, needle), where))
    return found


@dataclass(slots=True)
class StreamScan:
    """What :func:`scan_trails` found in one stream: its records and every leak (canary name, field)."""

    trail: str
    stream: str
    records: int = 0
    leaks: list[tuple[str, str]] = field(default_factory=list)


def scan_trails(directories: list[Path], canaries: Canaries | None = None) -> list[StreamScan]:
    """Scan every record of every stream of ``directories`` for the corpus's needles (every form).

    Raises:
        FileNotFoundError: a directory is not an audit trail.
        store.exceptions.JournalError: a segment cannot be read (``auditlog verify`` names it).
    """
    c = canaries or load_canaries()
    scans: list[StreamScan] = []
    for directory in directories:
        if not (directory / "trail.json").is_file() and not (directory / "streams").is_dir():
            raise FileNotFoundError(f"{directory} is not an audit trail (no trail.json, no streams/)")
        by_stream: dict[str, StreamScan] = {}
        for info, rec in iter_trail_records(directory):
            scan = by_stream.get(info.stream)
            if scan is None:
                scan = by_stream[info.stream] = StreamScan(trail=str(directory), stream=info.stream)
                scans.append(scan)
            scan.records += 1
            scan.leaks += _leaks(rec, c)
    return scans


def _safe(c: Canaries, name: object) -> str:
    text = name if isinstance(name, str) else "?"
    return "<a leaked name>" if c.leaks_in(text.encode("utf-8", "replace")) else text


def _canary_name(c: Canaries, needle: str) -> str:
    for name, value in c.values.items():
        if needle in value:
            return name
    return "?"
