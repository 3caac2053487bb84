"""Test-harness compatibility for the upstream suites, loaded in the plain and the injected run alike.

Flask's ``tests/conftest.py`` uses ``_pytest.monkeypatch.notset``, a private name newer pytest releases
spell ``NOTSET``; without the alias every Flask test errors in setup, in both runs, and nothing is
compared. Nothing here touches the frameworks.
"""

from __future__ import annotations

import _pytest.monkeypatch

if not hasattr(_pytest.monkeypatch, "notset") and hasattr(_pytest.monkeypatch, "NOTSET"):
    _pytest.monkeypatch.notset = _pytest.monkeypatch.NOTSET  # type: ignore[attr-defined]
