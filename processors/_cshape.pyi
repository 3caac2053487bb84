from collections.abc import Callable, Mapping
from typing import Any

class Shaper:
    """``shape_of``'s fast path for one set of limits, compiled (see ``processors/_cshape.c``)."""

    def __init__(
        self,
        *,
        limits: Any,
        max_depth: int,
        max_keys: int,
        max_items: int,
        max_key_len: int,
        max_work: int,
        check_len: int,
        general: Callable[[Any, Any], Any],
        emittable: Callable[[object, int], bool],
        tag: Callable[[type], str],
        scalars: Mapping[type, Callable[[Any], Any]],
        accepted: Mapping[str, None],
        fragment: Callable[[bytes], Any] | None = None,
    ) -> None: ...
    def __call__(self, value: Any, /) -> dict[str, Any] | str: ...
    def fields(
        self, event: dict[Any, Any], reserved: frozenset[str], names: frozenset[str], /
    ) -> tuple[dict[str, dict[str, Any] | str], int, list[str]]: ...
    def render(self, value: Any, /) -> Any: ...
    def render_fields(
        self, event: dict[Any, Any], reserved: frozenset[str], names: frozenset[str], /
    ) -> tuple[dict[str, Any], int, list[str]]: ...

def utc_timestamp() -> str:
    """The current UTC time, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always microseconds), from one clock read."""
