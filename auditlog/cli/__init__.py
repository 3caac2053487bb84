"""The ``auditlog`` command line: one module per command group, the options they share defined once.

- :mod:`~auditlog.cli.app`: the root app (``verify``, ``fingerprint``, ``keygen``, ``policy check``,
  ``demo``, ``selftest``) and :func:`main`;
- :mod:`~auditlog.cli.bodies`: ``bodies get|purge|erase|hold|release``;
- :mod:`~auditlog.cli.query`: ``query ...``; :mod:`~auditlog.cli.lake`: ``compact``, ``ship``;
  :mod:`~auditlog.cli.evidence`: ``export``, ``verify-pack``;
- :mod:`~auditlog.cli._options`: the shared options, key loading and error exits.

Sits on top: may import anything in ``auditlog``; nothing in ``auditlog`` imports it.
"""

from __future__ import annotations

from auditlog.cli.app import main

__all__ = ["main"]
