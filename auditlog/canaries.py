"""Synthetic secrets for leak tests, the demo and ``auditlog selftest``.

Every value is fake. The bundled corpus mirrors the project's shared leak-test corpus; set
``AUDITLOG_CANARIES`` to a JSON file with the same form (``values`` and ``needles``) to use another.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["Canaries", "load_canaries"]


@dataclass(frozen=True, slots=True)
class Canaries:
    """Named planted values and the needles a leak scan looks for."""

    values: dict[str, str]
    needles: tuple[str, ...]

    def forms(self) -> dict[str, tuple[bytes, ...]]:
        """Each needle with its JSON-escaped and URL-encoded forms, as bytes."""
        out: dict[str, tuple[bytes, ...]] = {}
        for n in self.needles:
            fs = {n, json.dumps(n)[1:-1], urllib.parse.quote(n), urllib.parse.quote_plus(n)}
            out[n] = tuple(sorted(f.encode() for f in fs if f))
        return out

    def leaks_in(self, blob: bytes) -> list[str]:
        """The needles found in ``blob`` (in any of their forms)."""
        return [n for n, fs in self.forms().items() if any(f in blob for f in fs)]


def load_canaries(path: str | os.PathLike[str] | None = None) -> Canaries:
    """Load a canary corpus: ``path``, else ``AUDITLOG_CANARIES``, else the bundled one."""
    src = path or os.environ.get("AUDITLOG_CANARIES")
    if src:
        data = json.loads(Path(src).read_text("utf-8"))
    else:
        data = json.loads(resources.files("auditlog").joinpath("data/canaries.json").read_text("utf-8"))
    return Canaries(values=dict(data["values"]), needles=tuple(data["needles"]))
