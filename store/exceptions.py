"""Errors raised by the ``store`` package.

    StoreError
    ├── KeyError_            (ValueError)        a key is missing, malformed or unknown
    ├── JournalError         (OSError)           the journal cannot take or read records
    │   └── JournalCorrupt   (ValueError too)    a segment or seal fails to parse or verify
    └── BodyStoreError                           the body store (see store.bodies)

Messages name files, fields and positions, never logged values or body contents.
"""

from __future__ import annotations

__all__ = ["JournalCorrupt", "JournalError", "KeyError_", "StoreError"]


class StoreError(Exception):
    """Base class of every error raised by ``store``."""


class KeyError_(StoreError, ValueError):
    """A master key is missing, malformed or unknown."""


class JournalError(StoreError, OSError):
    """The journal cannot take or read records."""


class JournalCorrupt(JournalError, ValueError):
    """A segment or seal fails to parse or verify."""
