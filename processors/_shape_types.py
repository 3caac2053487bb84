"""The types every shaper shares: ``Shape`` (what a shaper returns) and ``ShapeLimits`` (its bounds).

Both :mod:`processors.shapes` (the general walk) and :mod:`processors._fastshape` (its fast path) import
this module, and it imports neither, so the two never import each other. ``processors.shapes`` re-exports
both names: import them from there (or from ``processors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "Shape", "ShapeLimits"]

Shape = dict[str, Any] | str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapeLimits:
    """Bounds on the work ``shape_of`` does for one value.

    Args:
        max_depth: containers nested deeper than this are summarised (``"truncated": true``).
        max_keys: keys examined per mapping; the rest are counted in ``n`` only.
        max_items_sampled: items looked at per array to decide its item shape.
        max_work: values visited in total; past it, containers are summarised.
        max_key_len: longer keys are hidden.

    Raises:
        ValueError: a bound is not a positive int.
    """

    max_depth: int = 6
    max_keys: int = 32
    max_items_sampled: int = 8
    max_work: int = 512
    max_key_len: int = 64

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_keys", "max_items_sampled", "max_work", "max_key_len"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ShapeLimits.{name} must be a positive int")


DEFAULT_LIMITS = ShapeLimits()
