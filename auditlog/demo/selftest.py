"""``auditlog selftest``: plant canaries through *your* configured pipeline and fail if any comes out.

For every rule of the policy that matches by logger (and for the defaults), the self-test logs each canary
value in every place a caller could put it: as a keyword argument (under the rule's allowlisted and
fingerprinted field names too), nested in dicts and lists, as a dict key, as bytes, in the event message,
in an exception message and its chained cause, through stdlib ``logging`` with %-arguments and
``extra=``, and in a uvicorn access line. Then it scans the journal and the console stream for every
needle, in raw, JSON-escaped and URL-encoded form. A hit names the canary, the logger and the field,
never the value.
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

__all__ = ["SelftestResult", "run_selftest"]


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
        forms = c.forms()
        for _, rec in iter_trail_records(journal_dir):
            result.records += 1
            for key, val in rec.items():
                blob = orjson.dumps({key: val}, default=str)
                for needle, fs in forms.items():
                    if any(f in blob for f in fs):
                        where = "<a key>" if c.leaks_in(key.encode("utf-8", "replace")) else key
                        result.leaks.append((_canary_name(c, needle), _safe(c, rec.get("logger")), where))
        out = console.getvalue().encode("utf-8", "surrogatepass")
        for needle in c.leaks_in(out):
            result.leaks.append((_canary_name(c, needle), "<console>", "<line>"))
    return result


def _safe(c: Canaries, name: object) -> str:
    text = name if isinstance(name, str) else "?"
    return "<a leaked name>" if c.leaks_in(text.encode("utf-8", "replace")) else text


def _canary_name(c: Canaries, needle: str) -> str:
    for name, value in c.values.items():
        if needle in value:
            return name
    return "?"
