"""One small protocol per body-store capability (compare obspec's ``Get``, ``Put``, ``Delete``).

The middleware needs only :class:`PutBody` (a store, or the background :class:`~store.bodies.BodyWriter`);
incident tooling needs :class:`GetBody` and :class:`HeadBody`; retention jobs :class:`PurgeBodies`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from store.bodies._model import BodyInfo, BodyMeta, EraseReport, Principal, PurgeReport

__all__ = ["BodyStore", "EraseBodies", "GetBody", "HeadBody", "HoldBody", "PurgeBodies", "PutBody"]


@runtime_checkable
class PutBody(Protocol):
    def put(self, correlation_id: str, body: bytes, *, meta: BodyMeta) -> None:
        """Store ``body`` (encrypted) under ``correlation_id``."""
        ...


@runtime_checkable
class GetBody(Protocol):
    def get(self, correlation_id: str, *, reader: Principal, purpose: str) -> bytes:
        """Return the body if ``reader`` may read it, after journaling the read."""
        ...


@runtime_checkable
class HeadBody(Protocol):
    def head(self, correlation_id: str) -> BodyInfo:
        """Return the body's metadata (never the body)."""
        ...


@runtime_checkable
class HoldBody(Protocol):
    def hold(self, correlation_id: str, *, reason: str, actor: str = ...) -> BodyInfo:
        """Put a legal hold on a body: it outlives its retention until released."""
        ...

    def release(self, correlation_id: str, *, reason: str | None = ..., actor: str = ...) -> BodyInfo:
        """Lift a legal hold."""
        ...


@runtime_checkable
class PurgeBodies(Protocol):
    def purge_expired(self, *, actor: str = ...) -> PurgeReport:
        """Delete every expired body that is not on hold."""
        ...


@runtime_checkable
class EraseBodies(Protocol):
    def erase(self, *, subject: str, reason: str | None = ..., actor: str = ...) -> EraseReport:
        """Crypto-shred every body of a data subject."""
        ...


@runtime_checkable
class BodyStore(PutBody, GetBody, HeadBody, HoldBody, PurgeBodies, EraseBodies, Protocol):
    """Every capability: what :func:`~store.bodies.from_url` returns."""
