"""Errors raised by the body store (``store.bodies``).

    StoreError
    └── BodyStoreError
        ├── BodyNotFound          (FileNotFoundError)  no body under this correlation id
        │   └── BodyExpired                            past its retention: unreadable, purged on sight
        ├── BodyExists            (FileExistsError)    another body already holds this correlation id
        ├── BodyIntegrityError    (ValueError)         ciphertext, wrapped key or header fails to verify
        ├── InvalidCorrelationId  (ValueError)         charset, length or a path trick
        ├── AccessDenied          (PermissionError)    reader lacks scope or tenant, no purpose, or the
        │   │                                          backend refused our credentials
        │   └── AuditUnavailable                       the journal could not take the audit event, so
        │                                              the operation is refused
        └── BodyStoreUnavailable  (ConnectionError)    the backend cannot be reached (writers spool)

Messages name correlation ids, readers, tenants and reasons. They never hold a body, a key, a purpose
or any metadata value beyond those.
"""

from __future__ import annotations

from store.exceptions import StoreError

__all__ = [
    "AccessDenied",
    "AuditUnavailable",
    "BodyExists",
    "BodyExpired",
    "BodyIntegrityError",
    "BodyNotFound",
    "BodyStoreError",
    "BodyStoreUnavailable",
    "InvalidCorrelationId",
]


class BodyStoreError(StoreError):
    """Base class of every error raised by the body store."""


class BodyNotFound(BodyStoreError, FileNotFoundError):
    """No body is stored under this correlation id (never stored, purged or erased)."""


class BodyExpired(BodyNotFound):
    """The body outlived its retention. It is unreadable and was purged when this was raised."""


class BodyExists(BodyStoreError, FileExistsError):
    """Another body is already stored under this correlation id; bodies are never overwritten."""


class BodyIntegrityError(BodyStoreError, ValueError):
    """A ciphertext, wrapped key or header failed to verify: altered, swapped or truncated.

    ``part`` names what failed: ``"header"``, ``"wrapped_key"`` or ``"ciphertext"``.
    """

    def __init__(self, message: str, *, part: str = "ciphertext") -> None:
        super().__init__(message)
        self.part = part


class InvalidCorrelationId(BodyStoreError, ValueError):
    """A correlation id is empty, too long, or holds characters outside ``[A-Za-z0-9._:-]``."""


class AccessDenied(BodyStoreError, PermissionError):
    """The operation is refused: reader scope, tenant or purpose; or the backend denied our credentials."""


class AuditUnavailable(AccessDenied):
    """The audit sink could not record the operation, so the operation is refused."""


class BodyStoreUnavailable(BodyStoreError, ConnectionError):
    """The backend cannot be reached. The background writer spools and replays on this error."""
