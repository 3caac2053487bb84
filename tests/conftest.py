"""Fixtures shared by every test package: the canary corpus (synthetic secrets and personal data)."""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

# Asserts in the shared helpers fail with pytest's detail too; registered before anything imports them.
pytest.register_assert_rewrite("tests._support")

# ../shared/canaries next to the repository; AUDITLOG_CANARIES (the json file or its folder) otherwise.
_SHARED_CANARIES = Path(__file__).resolve().parents[1].parent / "shared" / "canaries"


@dataclass(frozen=True, slots=True, kw_only=True)
class Canaries:
    """The corpus: ``values`` to plant, ``needles`` that must never appear in any output."""

    values: dict[str, str]
    needles: tuple[str, ...]

    @staticmethod
    def forms(needle: str) -> set[bytes]:
        """The needle as it could appear in output: raw, JSON-escaped, URL-encoded (as find_leaks.py)."""
        out = {needle, json.dumps(needle)[1:-1], urllib.parse.quote(needle), urllib.parse.quote_plus(needle)}
        return {f.encode() for f in out if f}

    def leaks(self, blob: bytes | str) -> list[str]:
        """Return the needles found in ``blob`` in any of their forms."""
        data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
        return [n for n in self.needles if any(form in data for form in self.forms(n))]


def _canaries_file() -> Path:
    if _SHARED_CANARIES.is_dir():
        return _SHARED_CANARIES / "canaries.json"
    configured = os.environ.get("AUDITLOG_CANARIES")
    if not configured:
        pytest.fail(f"canary corpus not found at {_SHARED_CANARIES} and AUDITLOG_CANARIES is not set")
    path = Path(configured)
    return path / "canaries.json" if path.is_dir() else path


@pytest.fixture(scope="session")
def canaries() -> Canaries:
    """The canary corpus from ../shared/canaries/canaries.json (or ``$AUDITLOG_CANARIES``)."""
    raw = json.loads(_canaries_file().read_text("utf-8"))
    return Canaries(values=dict(raw["values"]), needles=tuple(raw["needles"]))
