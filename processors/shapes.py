"""Shapes: what a value looks like (types, lengths, counts, keys), never what it holds.

``shape_of(value)`` describes any Python value without reading its contents out::

    {"t": "str", "len": 12}            {"t": "int"}   {"t": "float"}   {"t": "bool"}   {"t": "null"}
    {"t": "bytes", "len": 3}           bytes, bytearray, memoryview
    {"t": "obj", "n": 3, "keys": {"a": {...}}, "hidden_keys": 1}       mappings, dataclasses, pydantic models
    {"t": "arr", "len": 3, "items": {...}}                              list, tuple, set, frozenset
    {"t": "arr", "len": 3, "items": {"t": "mixed", "types": ["int", "str"]}}
    "<unshapeable:TypeName>"           anything else, or anything that raised while being read
    "<cycle>"                          a container inside itself

Keys are data too: a key is emitted only if it is a ``str``, identifier-like, short, has no token-looking
segment and the built-in :class:`processors.SecretScanner` finds nothing in it. Every other key is folded
into ``hidden_keys``, a count.

Work is bounded by :class:`ShapeLimits`: depth, keys per mapping, items sampled per array and a total
work budget. Past a bound a container becomes ``{"t": "obj", "n": N, "truncated": true}`` (or ``"arr"``).
Containers are never iterated past the bound (``itertools.islice``), builtin containers are read through
their base class methods (an overridden ``__len__``/``__iter__`` is not called), and user code that does
run (a dataclass property, a ``Mapping.__len__``) fails closed to ``"<unshapeable:TypeName>"``.
``shape_of`` never raises. Each call returns new dicts (callers may mutate them). Trees of exact builtins
take a fast path (``processors._fastshape``) that gives the general walk's shapes and hands anything
else over to it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from itertools import chain, islice
from typing import Any

import orjson

from processors._fastshape import fast_shaper
from processors._shape_types import DEFAULT_LIMITS, Shape, ShapeLimits
from processors.secret_scanner import SecretScanner, base64ish_letters

_cshape: Any
if os.environ.get("AUDITLOG_PURE_PYTHON"):
    _cshape = None
else:
    try:
        from processors import _cshape  # the compiled fast path, when the build had a C compiler
    except ImportError:
        _cshape = None

__all__ = [
    "DEFAULT_LIMITS",
    "Shape",
    "ShapeLimits",
    "emittable_key",
    "rendered_shape",
    "safe_type_name",
    "shape_of",
    "unshapeable",
]


# --- keys -------------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_SEGMENTS = re.compile(r"[._-]")
_HEX8 = re.compile(r"[0-9A-Fa-f]{8,}")
_NUMBERS = re.compile(r"[0-9]+(?:[._-][0-9]+){3}")  # an IP address or a number in groups, glued to a name
_KEY_SCANNER = SecretScanner()
_ACCEPTED_KEYS: dict[str, None] = {}
_ACCEPTED_KEYS_MAX = 8192
_CACHED_KEY_LEN = 64  # longer accepted keys are not cached, so a hit is short enough for the default limit


def _token_segment(segment: str) -> bool:
    """Return whether one ``._-``-separated segment of a key looks like a token, not a name."""
    if len(segment) < 8:
        return False
    if not segment.isalpha() and not segment.isdigit():
        return True  # mixes letters and digits
    if _HEX8.fullmatch(segment):
        return True
    return len(segment) >= 16 and segment.isalpha() and base64ish_letters(segment)


def emittable_key(key: object, max_len: int = DEFAULT_LIMITS.max_key_len) -> bool:
    """Return whether a mapping key may appear in output as it is.

    Args:
        key: the key (any object; only ``str`` can pass).
        max_len: the longest key allowed.

    Returns:
        ``True`` for short, identifier-like, token-free keys the secret scanner finds nothing in.
    """
    if type(key) is not str or len(key) > max_len:
        return False
    if key in _ACCEPTED_KEYS:
        return True
    if not _IDENTIFIER.fullmatch(key) or any(map(_token_segment, _SEGMENTS.split(key))):
        return False
    if sum(map(key.count, "0123456789")) >= 6 or _NUMBERS.search(key):  # names hold few digits
        return False
    if _KEY_SCANNER.findings(key):
        return False
    if len(key) > _CACHED_KEY_LEN:
        return True
    if len(_ACCEPTED_KEYS) >= _ACCEPTED_KEYS_MAX:
        _ACCEPTED_KEYS.clear()
    _ACCEPTED_KEYS[key] = None  # accepted keys only: the cache never holds a hidden key
    return True


# --- type names -------------------------------------------------------------------------------------

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")
_TYPE_NAME = type.__dict__["__name__"]
_NAMES: dict[type, str] = {}
_CACHE_MAX = 1024


def safe_type_name(tp: type) -> str:
    """Return ``tp.__name__`` made safe to print: identifier chars, at most 64, ``"type"`` if token-like.

    Args:
        tp: any class (its name may be attacker-controlled: ``type(secret, (), {})``).

    Returns:
        The sanitized name, read without running the metaclass's code.
    """
    name = _NAMES.get(tp)
    if name is None:
        try:
            raw = _TYPE_NAME.__get__(tp)
            name = _NOT_NAME.sub("", raw if type(raw) is str else "")[:64]
        except Exception:
            name = ""
        if not name or not emittable_key(name):
            name = "type"
        if len(_NAMES) < _CACHE_MAX:
            _NAMES[tp] = name
    return name


def unshapeable(value: object) -> str:
    """Return the fail-closed marker for ``value``: ``"<unshapeable:TypeName>"``, never its repr."""
    return f"<unshapeable:{safe_type_name(type(value))}>"


# --- the walk ---------------------------------------------------------------------------------------

_Handler = Callable[["_Walk", Any, int], Shape]


class _Walk:
    """The state of one ``shape_of`` call: limits, remaining work, the containers being walked."""

    __slots__ = ("limits", "open", "work")

    def __init__(self, limits: ShapeLimits) -> None:
        self.limits = limits
        self.work = limits.max_work
        self.open: set[int] = set()

    def shape(self, value: Any, depth: int) -> Shape:
        """Shape one value; the caller has already charged it to the work budget."""
        tp = type(value)
        scalar = _SCALARS.get(tp)
        if scalar is not None:
            return scalar(value)
        handler = _HANDLERS.get(tp)
        if handler is not None:
            return handler(self, value, depth)
        resolved = _resolve(tp)[0]
        try:
            return resolved(self, value, depth)
        except Exception:  # user code ran (a property, __len__, __iter__) and failed
            return unshapeable(value)

    def mapping(self, obj: object, n: int, items: Iterator[tuple[Any, Any]], depth: int) -> Shape:
        if n == 0:
            return {"t": "obj", "n": 0}
        limits = self.limits
        if depth >= limits.max_depth or self.work <= 0:
            return {"t": "obj", "n": n, "truncated": True}
        ident = id(obj)
        open_ = self.open
        if ident in open_:
            return "<cycle>"
        # No try/finally: if reading fails, the whole container fails closed and stays marked open.
        open_.add(ident)
        keys: dict[str, Shape] = {}
        hidden = seen = 0
        max_len = limits.max_key_len
        scalars = _SCALARS
        accepted = _ACCEPTED_KEYS
        work = self.work
        for key, value in islice(items, limits.max_keys):
            if work <= 0:
                break
            seen += 1
            work -= 1
            if (type(key) is str and key in accepted and len(key) <= max_len) or emittable_key(key, max_len):
                scalar = scalars.get(type(value))
                if scalar is not None:
                    keys[key] = scalar(value)
                else:
                    self.work = work
                    keys[key] = self.shape(value, depth + 1)
                    work = self.work
            else:
                hidden += 1
        self.work = work
        open_.discard(ident)
        out: dict[str, Any] = {"t": "obj", "n": n}
        if keys:
            out["keys"] = keys
        if hidden:
            out["hidden_keys"] = hidden
        if seen < n:
            out["truncated"] = True
        return out

    def array(self, obj: object, n: int, items: Iterator[Any], depth: int) -> Shape:
        if n == 0:
            return {"t": "arr", "len": 0}
        if depth >= self.limits.max_depth or self.work <= 0:
            return {"t": "arr", "len": n, "truncated": True}
        ident = id(obj)
        if ident in self.open:
            return "<cycle>"
        sample = list(islice(items, self.limits.max_items_sampled))
        if not sample:
            return {"t": "arr", "len": n}
        self.work -= len(sample)
        first = type(sample[0])
        if all(type(item) is first for item in sample):
            self.open.add(ident)
            shape = self.shape(sample[0], depth + 1)
            self.open.discard(ident)
            return {"t": "arr", "len": n, "items": shape}
        tags = list(dict.fromkeys(_tag(type(item)) for item in sample))
        return {"t": "arr", "len": n, "items": {"t": "mixed", "types": tags}}


# Scalars: shaped without a walk, through the builtin's own methods (a subclass's overrides never run).
# Each call returns a fresh dict: callers may mutate it.


def _str(v: Any) -> Shape:
    return {"t": "str", "len": str.__len__(v)}


def _int(v: Any) -> Shape:
    return {"t": "int"}


def _float(v: Any) -> Shape:
    return {"t": "float"}


def _bool(v: Any) -> Shape:
    return {"t": "bool"}


def _none(v: Any) -> Shape:
    return {"t": "null"}


def _bytes(v: Any) -> Shape:
    return {"t": "bytes", "len": bytes.__len__(v)}


def _bytearray(v: Any) -> Shape:
    return {"t": "bytes", "len": bytearray.__len__(v)}


def _memoryview(v: Any) -> Shape:
    try:
        return {"t": "bytes", "len": v.nbytes}
    except ValueError:  # released
        return unshapeable(v)


_SCALARS: dict[type, Callable[[Any], Shape]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: _bool,
    type(None): _none,
    bytes: _bytes,
    bytearray: _bytearray,
    memoryview: _memoryview,
}


def _dict(w: _Walk, v: Any, depth: int) -> Shape:
    return w.mapping(v, dict.__len__(v), iter(dict.items(v)), depth)


def _mapping(w: _Walk, v: Any, depth: int) -> Shape:
    return w.mapping(v, len(v), iter(v.items()), depth)


def _dataclass(names: tuple[str, ...]) -> _Handler:
    def handler(w: _Walk, v: Any, depth: int) -> Shape:
        values = ((name, object.__getattribute__(v, name)) for name in names)
        return w.mapping(v, len(names), values, depth)

    return handler


def _pydantic(w: _Walk, v: Any, depth: int) -> Shape:
    fields = object.__getattribute__(v, "__dict__")
    try:
        extra = object.__getattribute__(v, "__pydantic_extra__")
    except AttributeError:
        extra = None
    if type(fields) is not dict:
        return unshapeable(v)
    if type(extra) is dict and extra:
        return w.mapping(v, len(fields) + len(extra), chain(dict.items(fields), dict.items(extra)), depth)
    return w.mapping(v, len(fields), iter(dict.items(fields)), depth)


def _sequence(length: Callable[[Any], int], iterate: Callable[[Any], Iterator[Any]]) -> _Handler:
    def handler(w: _Walk, v: Any, depth: int) -> Shape:
        return w.array(v, length(v), iterate(v), depth)

    return handler


def _fail(w: _Walk, v: Any, depth: int) -> Shape:
    return unshapeable(v)


_HANDLERS: dict[type, _Handler] = {
    dict: _dict,
    list: _sequence(list.__len__, list.__iter__),
    tuple: _sequence(tuple.__len__, tuple.__iter__),
    set: _sequence(set.__len__, set.__iter__),
    frozenset: _sequence(frozenset.__len__, frozenset.__iter__),
}
_TAGS: dict[type, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    type(None): "null",
    dict: "obj",
}
_TAGS.update(dict.fromkeys((bytes, bytearray, memoryview), "bytes"))
_TAGS.update(dict.fromkeys((list, tuple, set, frozenset), "arr"))


def _scalar(shape: Callable[[Any], Shape]) -> _Handler:
    def handler(w: _Walk, v: Any, depth: int) -> Shape:
        return shape(v)

    return handler


# Subclasses of builtins are read through the builtin's methods: their overrides never run.
_BUILTIN_BASES: tuple[type, ...] = (str, int, float, bytes, bytearray, dict, list, tuple, set, frozenset)
_MRO = type.__dict__["__mro__"]
_RESOLVED: dict[type, tuple[_Handler, str]] = {}


def _resolve(tp: type) -> tuple[_Handler, str]:
    """Pick the handler and tag for a type outside the dispatch table; once per type (bounded cache)."""
    found = _RESOLVED.get(tp)
    if found is None:
        try:
            found = _classify(tp)
        except Exception:
            found = (_fail, safe_type_name(tp))
        if len(_RESOLVED) < _CACHE_MAX:
            _RESOLVED[tp] = found
    return found


def _classify(tp: type) -> tuple[_Handler, str]:
    mro = _MRO.__get__(tp)
    for base in _BUILTIN_BASES:
        if base in mro:
            handler = _HANDLERS.get(base) or _scalar(_SCALARS[base])
            return handler, _TAGS[base]
    if any(_is_pydantic_base(cls) for cls in mro):
        return _pydantic, "obj"
    if dataclasses.is_dataclass(tp):
        return _dataclass(tuple(f.name for f in dataclasses.fields(tp))), "obj"
    if issubclass(tp, Mapping):
        return _mapping, "obj"
    if issubclass(tp, (Sequence, Set)):
        return _sequence(len, iter), "arr"
    return _fail, safe_type_name(tp)


def _is_pydantic_base(cls: type) -> bool:
    module = cls.__dict__.get("__module__")
    return cls.__name__ == "BaseModel" and type(module) is str and module.startswith("pydantic")


def _tag(tp: type) -> str:
    """A one-word type tag for mixed-array summaries (``"str"``, ``"obj"``, ...)."""
    return _TAGS.get(tp) or _resolve(tp)[1]


# --- the fast path (processors/_fastshape.py) -------------------------------------------------------


def _fast_shaper(limits: ShapeLimits) -> Callable[[Any], Shape]:
    """Return ``shape_of`` specialised for ``limits``: the fast path first, ``_Walk`` when it gives up.

    The fast path is the compiled one (``processors/_cshape.c``) when it was built, else the same
    algorithm in Python (``processors/_fastshape.py``).
    """
    if _cshape is not None:
        return _cshape.Shaper(  # type: ignore[no-any-return]
            limits=limits,
            max_depth=limits.max_depth,
            max_keys=limits.max_keys,
            max_items=limits.max_items_sampled,
            max_key_len=limits.max_key_len,
            max_work=limits.max_work,
            check_len=0 if limits.max_key_len >= _CACHED_KEY_LEN else limits.max_key_len,
            general=_general,
            emittable=emittable_key,
            tag=_tag,
            scalars=_SCALARS,
            accepted=_ACCEPTED_KEYS,
            fragment=orjson.Fragment,
        )
    return fast_shaper(
        limits,
        general=_general,
        emittable=emittable_key,
        tag=_tag,
        scalars=_SCALARS,
        accepted=_ACCEPTED_KEYS,
        cached_key_len=_CACHED_KEY_LEN,
    )


def _general(value: object, limits: ShapeLimits) -> Shape:
    """``shape_of`` through the general walk: every type, cycles, truncation; never raises."""
    try:
        walk = _Walk(limits)
        walk.work -= 1
        return walk.shape(value, 0)
    except Exception:  # RecursionError, MemoryError, a dict resized by another thread: fail closed
        return unshapeable(value)


_SHAPERS: dict[int, tuple[ShapeLimits, Callable[[Any], Shape]]] = {}


def _shaper(limits: ShapeLimits = DEFAULT_LIMITS) -> Callable[[Any], Shape]:
    """Return ``shape_of`` bound to ``limits``, for callers that shape many values with the same bounds.

    Args:
        limits: bounds on depth, width and total work.

    Returns:
        A function ``value -> shape``, equal to ``lambda value: shape_of(value, limits=limits)``.
    """
    found = _SHAPERS.get(id(limits))
    if found is not None and found[0] is limits:
        return found[1]
    fn = _fast_shaper(limits)
    if len(_SHAPERS) >= _CACHE_MAX:
        _SHAPERS.clear()
    _SHAPERS[id(limits)] = (limits, fn)  # holds limits: its id is not reused while cached
    return fn


_DEFAULT_SHAPER = _shaper(DEFAULT_LIMITS)


def shape_of(value: object, *, limits: ShapeLimits = DEFAULT_LIMITS) -> Shape:
    """Describe ``value`` by its shape, never its contents.

    Every call returns new dicts, never shared with another call: callers may mutate them (some add
    ``"v"`` or ``"pii"`` fields).

    Args:
        value: anything.
        limits: bounds on depth, width and total work.

    Returns:
        A JSON-ready shape (see the module docstring), or ``"<unshapeable:TypeName>"``.
    """
    if limits is DEFAULT_LIMITS:
        return _DEFAULT_SHAPER(value)
    return _shaper(limits)(value)


def rendered_shape(value: object, *, limits: ShapeLimits = DEFAULT_LIMITS) -> Any:
    """:func:`shape_of` for a value that goes straight to an orjson sink (the journal).

    Where the compiled shaper answers, the shape comes as an ``orjson.Fragment`` holding its JSON (the
    text orjson writes for the shape's dict), so no dicts are built only to be serialized; elsewhere, and
    without the compiled shaper, it is the shape itself. Never raises.

    Args:
        value: anything.
        limits: bounds on depth, width and total work.

    Returns:
        An ``orjson.Fragment`` or a shape, either way the same JSON once serialized.
    """
    shaper = _shaper(limits)
    render = getattr(shaper, "render", None)
    if render is None:
        return shaper(value)
    try:
        return render(value)
    except Exception:  # MemoryError while rendering: the dict path fails closed on its own
        return shaper(value)
