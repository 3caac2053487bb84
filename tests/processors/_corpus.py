"""The project's own copies of the leak-test corpora (``auditlog/data``), so a fresh clone tests itself.

``canaries.json`` plants values marked CANARY; ``canaries-forms.json`` plants values without a marker
(detection by form: a card number, a password with special characters, a hex session token, an e-mail on
a reserved TLD, base64 basic auth, a GitHub token). Read as data: ``processors`` never imports ``auditlog``.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "auditlog" / "data"


@dataclass(frozen=True, slots=True)
class Corpus:
    """``values`` to plant, ``needles`` that must never appear in output (raw, JSON- or URL-encoded)."""

    values: dict[str, str]
    needles: tuple[str, ...]

    def leaks(self, text: str) -> list[str]:
        """The needles found in ``text``, in any of find_leaks.py's forms."""
        return [n for n in self.needles if any(f in text for f in _forms(n))]


def _forms(needle: str) -> set[str]:
    return {needle, json.dumps(needle)[1:-1], urllib.parse.quote(needle), urllib.parse.quote_plus(needle)}


def load(name: str) -> Corpus:
    """Read ``auditlog/data/<name>``."""
    raw = json.loads((DATA / name).read_text("utf-8"))
    return Corpus(values=dict(raw["values"]), needles=tuple(raw["needles"]))


CANARIES = load("canaries.json")
FORMS = load("canaries-forms.json")
