"""Evidence: signed compliance packs built from investigations, and their verification.

- :mod:`~auditlog.evidence.pack`: build, sign and verify a pack (``auditlog export`` / ``verify-pack``);
- :mod:`~auditlog.evidence.report`: the report renderers (Markdown, CSV cells) a pack carries;
- :mod:`~auditlog.evidence._chain`: the pack's chain verification, for each of the sources.

May import: investigations, the lake, ``store`` and the public face. Never integrations, the CLI or the demo.
"""

from __future__ import annotations

from auditlog.evidence.pack import (
    CONTROLS,
    PACK_FORMAT,
    EvidenceError,
    PackCheck,
    PackInvalid,
    PackProblem,
    PackReport,
    export,
    signer_public_key,
    verify_pack,
)

__all__ = [
    "CONTROLS",
    "PACK_FORMAT",
    "EvidenceError",
    "PackCheck",
    "PackInvalid",
    "PackProblem",
    "PackReport",
    "export",
    "signer_public_key",
    "verify_pack",
]
