"""The settings and the counters of a :class:`~store.bodies.BodyOutbox`.

Re-exported by :mod:`store.bodies` and :mod:`store.bodies.outbox`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["OutboxConfig", "OutboxStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxConfig:
    """Settings of a :class:`BodyOutbox`.

    Args:
        max_outbox_bytes: the disk budget of the outbox; past it, new bodies meet ``on_full``.
        on_full: ``"drop"`` (count and journal ``body.dropped`` at once) or ``"block"`` (wait up to
            ``block_timeout`` for the shipper to free space, then drop). ``"block"`` blocks the calling
            thread: the event loop, in an async server.
        block_timeout: seconds ``put`` may wait when ``on_full="block"``.
        pack_bytes, pack_age: a pack is sealed for shipping at this size or age (seconds).
        ship_interval: seconds between the shipper's looks at the outbox.
        ship_concurrency: envelopes delivered in parallel.
        backoff_initial, backoff_max: the delay after a failed delivery doubles between these.
        fsync: sync each append (survives a power cut; costs one fsync per body).
        journal_stored: journal ``body.stored`` for every confirmed body.
        close_timeout: seconds :meth:`BodyOutbox.close` keeps shipping before it leaves the rest for the
            next start.
        ship: deliver packs from this process. ``False``: this process only appends and seals packs
            (its thread still seals by age and refreshes session keys); a separate shipper over the same
            directory (``auditlog bodies ship``) delivers them, so the app's interpreter never spends
            time on delivery, and the app server needs no credentials for the store.
    """

    max_outbox_bytes: int = 1 << 30
    on_full: Literal["drop", "block"] = "drop"
    block_timeout: float = 0.05
    pack_bytes: int = 4 << 20
    pack_age: float = 1.0
    ship_interval: float = 0.2
    ship_concurrency: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    fsync: bool = False
    journal_stored: bool = True
    close_timeout: float = 2.0
    ship: bool = True

    def __post_init__(self) -> None:
        if self.on_full not in ("drop", "block"):
            raise ValueError("on_full: expected 'drop' or 'block'")
        if min(self.max_outbox_bytes, self.pack_bytes, self.ship_concurrency) < 1:
            raise ValueError("max_outbox_bytes, pack_bytes and ship_concurrency must be positive")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("expected 0 < backoff_initial <= backoff_max")
        if min(self.block_timeout, self.pack_age, self.ship_interval, self.close_timeout) < 0:
            raise ValueError("timeouts and intervals must not be negative")


@dataclass(slots=True)
class OutboxStats:
    """What the outbox did. ``dropped`` and ``lost`` count by reason; ``errors`` by exception type."""

    accepted: int = 0
    stored: int = 0
    packs_shipped: int = 0
    ship_failures: int = 0
    audit_errors: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}
