"""The fast path of :func:`processors.shapes.shape_of`, for trees of exact builtins.

Most logged values are exact builtin JSON-like trees. ``fast_shaper`` shapes those with local lookups,
inlined scalars and one work counter, and gives up (``_Bail``) at anything else: another type, a bound
that would truncate (depth, work), so a cycle, which only ever shows as unbounded depth. Giving up
reruns the value through the general walk, which decides. So where the fast path answers, it answers
exactly what the general walk would: it reads only exact builtins, through their own C methods (no user
code runs), checks the same bounds at the same points, and charges work the same way.

This module never imports :mod:`processors.shapes` (not even for type checking): both take ``Shape`` and
``ShapeLimits`` from :mod:`processors._shape_types`; ``shapes`` imports this module and passes in the
general walk, the key checks and the scalar table, once per ``ShapeLimits``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from processors._shape_types import Shape, ShapeLimits


class _Bail(Exception):
    """The fast path cannot answer; the general walk will."""


def fast_shaper(
    limits: ShapeLimits,
    *,
    general: Callable[[Any, ShapeLimits], Shape],
    emittable: Callable[[object, int], bool],
    tag: Callable[[type], str],
    scalars: Mapping[type, Callable[[Any], Shape]],
    accepted: Mapping[str, None],
    cached_key_len: int,
) -> Callable[[Any], Shape]:
    """Return ``shape_of`` specialised for ``limits``: the fast path first, ``general`` when it gives up.

    Args:
        limits: bounds on depth, width and total work.
        general: the general walk, ``(value, limits) -> shape``; never raises.
        emittable: whether a key may appear in output, ``(key, max_len) -> bool``.
        tag: the one-word type tag for mixed-array summaries.
        scalars: shapers for scalar builtins, by exact type.
        accepted: the cache of keys ``emittable`` accepted (read only, never written here).
        cached_key_len: the longest key ``accepted`` may hold.

    Returns:
        A function ``value -> shape``, never raising.
    """
    max_depth, max_keys, max_items = limits.max_depth, limits.max_keys, limits.max_items_sampled
    max_len, top_work = limits.max_key_len, limits.max_work - 1
    # A cache hit is at most cached_key_len long: with a limit at least that, no length check is needed.
    check_len = 0 if max_len >= cached_key_len else max_len

    def one(v: Any, depth: int, budget: list[int]) -> Shape:
        tp = type(v)
        if tp is str:
            return {"t": "str", "len": len(v)}
        if tp is int:
            return {"t": "int"}
        if tp is dict:
            return obj(v, depth, budget)
        if tp is list or tp is tuple:
            return arr(v, v[:max_items], depth, budget)
        if tp is float:
            return {"t": "float"}
        if tp is bool:
            return {"t": "bool"}
        if v is None:
            return {"t": "null"}
        scalar = scalars.get(tp)  # bytes, bytearray, memoryview
        if scalar is not None:
            return scalar(v)
        if tp is set or tp is frozenset:
            return arr(v, list(islice(v, max_items)), depth, budget)
        raise _Bail

    def obj(v: dict[Any, Any], depth: int, budget: list[int]) -> Shape:
        n = len(v)
        if n == 0:
            return {"t": "obj", "n": 0}
        work = budget[0]
        if depth >= max_depth or work <= 0:
            raise _Bail
        keys: dict[str, Shape] = {}
        hidden = 0
        for key, value in islice(v.items(), max_keys) if n > max_keys else v.items():
            if work <= 0:
                raise _Bail
            work -= 1
            if (
                type(key) is str and key in accepted and (not check_len or len(key) <= check_len)
            ) or emittable(key, max_len):
                tp = type(value)
                if tp is str:
                    keys[key] = {"t": "str", "len": len(value)}
                elif tp is int:
                    keys[key] = {"t": "int"}
                elif tp is dict:
                    budget[0] = work
                    keys[key] = obj(value, depth + 1, budget)
                    work = budget[0]
                else:
                    budget[0] = work
                    keys[key] = one(value, depth + 1, budget)
                    work = budget[0]
            else:
                hidden += 1
        budget[0] = work
        out: dict[str, Any] = {"t": "obj", "n": n}
        if keys:
            out["keys"] = keys
        if hidden:
            out["hidden_keys"] = hidden
        if n > max_keys:
            out["truncated"] = True
        return out

    def arr(v: Any, sample: list[Any] | tuple[Any, ...], depth: int, budget: list[int]) -> Shape:
        n = len(v)
        if n == 0:
            return {"t": "arr", "len": 0}
        work = budget[0]
        if depth >= max_depth or work <= 0:
            raise _Bail
        budget[0] = work - len(sample)
        first = sample[0]
        tp = type(first)
        for item in sample:
            if type(item) is not tp:
                tags = list(dict.fromkeys([tag(type(item)) for item in sample]))
                return {"t": "arr", "len": n, "items": {"t": "mixed", "types": tags}}
        return {"t": "arr", "len": n, "items": one(first, depth + 1, budget)}

    def shape(value: Any) -> Shape:
        tp = type(value)
        if tp is str:
            return {"t": "str", "len": len(value)}
        if tp is int:
            return {"t": "int"}
        if tp is dict or tp is list or tp is tuple:
            try:
                if tp is dict:
                    return obj(value, 0, [top_work])
                return arr(value, value[:max_items], 0, [top_work])
            except Exception:  # _Bail, or anything unexpected: the general walk decides (and fails closed)
                return general(value, limits)
        scalar = scalars.get(tp)
        if scalar is not None:
            return scalar(value)
        return general(value, limits)

    return shape
