"""Fixtures shared by every test package: the canary corpus (synthetic secrets and personal data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditlog.canaries import Canaries, load_corpus

__all__ = ["Canaries", "corpus", "planted"]

# Asserts in the shared helpers fail with pytest's detail too; registered before anything imports them.
pytest.register_assert_rewrite("tests._support")


def _extra(name: str) -> list[Path]:
    """``$AUDITLOG_CANARIES``'s corpus files: the file itself, or the folder's ``name`` (all when ``*``)."""
    configured = os.environ.get("AUDITLOG_CANARIES")
    if not configured:
        return []
    path = Path(configured)
    if not path.is_dir():
        return [path]
    return sorted(path.glob(name))


def corpus() -> Canaries:
    """Every corpus: the project's (``auditlog/data/canaries*.json``) and ``$AUDITLOG_CANARIES``'s.

    What a leak scan looks for (:func:`auditlog.canaries.scan`). ``AUDITLOG_CANARIES`` is a corpus file
    or a folder of them (``canaries.json``, ``canaries-forms.json``); CI points it at the shared corpus
    when there is one beside the repository.
    """
    return load_corpus(*_extra("canaries*.json"))


def planted() -> Canaries:
    """The corpus tests plant: every corpus (:func:`corpus`): ``canaries.json``'s marked values and
    ``canaries-forms.json``'s unmarked ones (a card number, a password with special characters, a hex
    session token, ...), so every redaction path is tried on both."""
    return corpus()


@pytest.fixture(scope="session")
def canaries() -> Canaries:
    """The planted corpus (:func:`planted`)."""
    return planted()
