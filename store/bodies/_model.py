"""Value objects of the body store: what a caller stores, what a reader is, what ``head`` returns."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RETENTION",
    "READ_SCOPE",
    "BodyInfo",
    "BodyMeta",
    "EraseReport",
    "Principal",
    "PurgeReport",
    "validate_note",
]

READ_SCOPE = "bodies:read"
DEFAULT_RETENTION = 7 * 86_400.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
ALL_TENANTS = "*"
MAX_NOTE = 200
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+@=-]{0,127}", re.ASCII)
_NOTE = re.compile(r"[\x20-\x7e]+", re.ASCII)


def _label(value: str | None, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not _LABEL.fullmatch(value)):
        raise ValueError(
            f"{what}: expected 1-128 characters of [A-Za-z0-9_.:/+@=-], not starting with punctuation"
        )


def validate_note(value: object, what: str) -> str:
    """Validate a purpose (ticket id) or hold reason: non-empty printable ASCII, at most 200 characters.

    Raises:
        ValueError: otherwise. The message names ``what``, never the value.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is required (a ticket id or a short reason)")
    if len(value) > MAX_NOTE or not _NOTE.fullmatch(value):
        raise ValueError(f"{what}: expected printable ASCII, at most {MAX_NOTE} characters")
    return value.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyMeta:
    """What the caller says about a body when it stores it.

    Args:
        tenant: the tenant the body belongs to (from verified auth). A body without a tenant is readable
            only by readers of every tenant (``"*"``).
        subject: the data subject (a user id); stored only as a keyed fingerprint, used by ``erase``.
        retention: seconds to keep the body (the matching rule's ``body_retention``).
        content_type: the body's media type, if known.
        rule: the id of the policy rule that captured the body.
        original_size: the size before the caller capped it, if it did (the store records the larger).
    """

    tenant: str | None = None
    subject: str | None = None
    retention: float = DEFAULT_RETENTION
    content_type: str | None = None
    rule: str | None = None
    original_size: int | None = None

    def __post_init__(self) -> None:
        _label(self.tenant, "tenant")
        _label(self.rule, "rule")
        if self.content_type is not None and (
            not isinstance(self.content_type, str)
            or len(self.content_type) > MAX_NOTE
            or not _NOTE.fullmatch(self.content_type)
        ):
            raise ValueError("content_type: expected printable ASCII, at most 200 characters")
        if self.subject is not None and (not isinstance(self.subject, str) or not self.subject):
            raise ValueError("subject: expected a non-empty string")
        if isinstance(self.retention, bool) or not isinstance(self.retention, int | float):
            raise ValueError("retention: expected a number of seconds")
        if not math.isfinite(self.retention) or self.retention < 0:
            raise ValueError("retention: expected a finite, non-negative number of seconds")
        if self.original_size is not None and (
            isinstance(self.original_size, bool)
            or not isinstance(self.original_size, int)
            or self.original_size < 0
        ):
            raise ValueError("original_size: expected a non-negative integer")


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyInfo:
    """What ``head`` returns: metadata only, never the body or the data subject."""

    correlation_id: str
    tenant: str | None
    created: float
    expires: float
    size: int
    stored_size: int
    truncated: bool
    content_type: str | None
    rule: str | None
    key_id: str
    key_scheme: str
    hold: str | None
    expired: bool

    @classmethod
    def from_header(
        cls,
        cid: str,
        meta: dict[str, Any],
        *,
        key_id: str,
        scheme: str,
        hold: dict[str, Any] | None,
        now: float,
    ) -> BodyInfo:
        held = None if hold is None else str(hold.get("reason", ""))
        return cls(
            correlation_id=cid,
            tenant=meta.get("tenant"),
            created=float(meta["created"]),
            expires=float(meta["expires"]),
            size=int(meta["size"]),
            stored_size=int(meta["stored"]),
            truncated=bool(meta["truncated"]),
            content_type=meta.get("content_type"),
            rule=meta.get("rule"),
            key_id=key_id,
            key_scheme=scheme,
            hold=held,
            expired=now >= float(meta["expires"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who reads: a name, its scopes, the tenants it may read (``"*"`` = every tenant).

    A principal may read a body when it holds ``bodies:read`` and the body's tenant is among its tenants.
    """

    name: str
    scopes: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _label(self.name, "reader name")
        object.__setattr__(self, "scopes", frozenset(self.scopes))
        object.__setattr__(self, "tenants", frozenset(self.tenants))

    @property
    def can_read_bodies(self) -> bool:
        return READ_SCOPE in self.scopes

    def reads_tenant(self, tenant: str | None) -> bool:
        """True when this principal's tenants cover ``tenant`` (a body without tenant needs ``"*"``)."""
        return ALL_TENANTS in self.tenants or (tenant is not None and tenant in self.tenants)


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeReport:
    """What ``purge_expired`` did: bodies scanned, purged, kept by a legal hold, unreadable headers."""

    scanned: int = 0
    purged: int = 0
    held: int = 0
    unreadable: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EraseReport:
    """What ``erase`` did: bodies of the subject crypto-shredded, and those kept by a legal hold."""

    erased: int = 0
    held: int = 0
    held_ids: tuple[str, ...] = ()
