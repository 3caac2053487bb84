"""``ShapeRecorder``: the last processor before rendering; every argument becomes its shape.

What an event looks like after it, by the policy's level:

- ``none``: the event is dropped (``structlog.DropEvent``).
- ``metadata``: only the reserved keys stay; the others are counted in ``dropped_fields``.
- ``shape`` (the default): every other key's value is replaced by :func:`processors.shape_of`.
- ``values``: keys in ``allow`` keep their value after the scanner has masked it; the rest are shaped.

Always: the message (``event``) goes through ``scanner.redact``; a key that is not identifier-like or looks
like a token (``**{"canary.user@example.org": 1}``) is never emitted but counted in ``hidden_keys``.
Reserved keys (:data:`RESERVED_KEYS`) are set by our processors and structlog's and pass through when their
values have the expected form (a 32-hex ``trace_id``, an identifier-like ``logger``...); a value of any
other form, for instance one a caller passed as ``log.info("x", kind=secret)``, is shaped instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import structlog

from processors.correlation import VALID_CORRELATION_ID
from processors.scanning import Scanner, utf8_safe
from processors.shapes import _ACCEPTED_KEYS, DEFAULT_LIMITS, ShapeLimits, _shaper, emittable_key, shape_of

__all__ = ["RESERVED_KEYS", "FieldPolicy", "Level", "ShapeRecorder"]

Level = Literal["none", "metadata", "shape", "values"]
_LEVELS = frozenset({"none", "metadata", "shape", "values"})

RESERVED_KEYS: frozenset[str] = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "correlation_id",
        "trace_id",
        "span_id",
        "exception",
        "fp",
        "kind",
        "hidden_keys",
        "dropped_fields",
        "policy",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldPolicy:
    """What the recorder may emit for the fields of an event.

    Args:
        level: ``"none"``, ``"metadata"``, ``"shape"`` or ``"values"``.
        allow: fields whose (scanned) values are emitted at level ``values``; ignored at other levels.
        fingerprint: fields the composition layer fingerprints (see :class:`processors.Fingerprinter`).
        rule_id: the policy rule this came from, for the record.

    Raises:
        ValueError: an unknown level, or a field name that is not a ``str``.
    """

    level: Level = "shape"
    allow: frozenset[str] = frozenset()
    fingerprint: frozenset[str] = frozenset()
    rule_id: str | None = None
    pii: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ValueError(f"level must be one of {sorted(_LEVELS)}")
        for name in ("allow", "fingerprint", "pii"):
            fields = frozenset(getattr(self, name))
            if not all(type(f) is str for f in fields):
                raise ValueError(f"FieldPolicy.{name} must hold str field names")
            object.__setattr__(self, name, fields)
        if self.rule_id is not None and type(self.rule_id) is not str:
            raise ValueError("FieldPolicy.rule_id must be a str or None")


# --- reserved keys: the form each value must have to pass through -----------------------------------
#
# Reserved keys are meant to be set by processors, but a caller can pass them too
# (``log.info("x", kind=secret)``, an ``X-Request-Id`` header bound as correlation id). So each value must
# have the form our processors give it, and free-form names must look like names, not tokens.

_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_MAX_EPOCH = 10**11  # seconds: year 5138; larger numbers could be card or phone numbers
_HEX_ID = re.compile(
    r"[0-9a-f]{16,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_FINGERPRINT = re.compile(r"[A-Za-z0-9_.-]{1,32}:[0-9a-f]{32}|<unfingerprintable:[A-Za-z0-9_]{1,64}>")
_DIGEST = re.compile(r"(?:[a-z0-9]{1,16}:)?[0-9a-f]{16,128}")
_FRAME = re.compile(r"[A-Za-z0-9_./<>-]{1,200}:-?[0-9]{1,9}:[A-Za-z0-9_.<>-]{1,128}")
_EXCEPTION_KEYS = frozenset(
    {"type", "message", "frames", "frames_omitted", "chain_truncated", "cause", "context"}
)
_EXCEPTION_COUNTS = ("frames_omitted", "chain_truncated")
_FORMATTED = "<formatted-exception>"


def _name(value: Any) -> bool:
    return type(value) is str and emittable_key(value)


_NAMES = frozenset({"level", "logger", "kind"})  # the reserved keys whose validator is `_name`
_Fields = tuple[dict[str, Any], int, list[str]]


def _json_int(value: Any) -> bool:
    """An int a journal line can carry: orjson writes 64-bit ints only (past them, the event is lost)."""
    return type(value) is int and -(1 << 63) <= value < 1 << 64


def _count(value: Any) -> bool:
    return _json_int(value) and value >= 0


def _timestamp(value: Any) -> bool:
    if type(value) is str:
        return _ISO_TIMESTAMP.fullmatch(value) is not None
    return type(value) in (int, float) and 0 <= value < _MAX_EPOCH


def _fingerprints(value: Any) -> bool:
    return type(value) is dict and all(
        _name(k) and type(v) is str and _FINGERPRINT.fullmatch(v) for k, v in value.items()
    )


def _policy(value: Any) -> bool:
    if type(value) is str:
        return _name(value)
    return type(value) is dict and all(
        _name(k) and (_json_int(v) or _name(v) or (type(v) is str and _DIGEST.fullmatch(v)))
        for k, v in value.items()
    )


def _reserved_forms(scanner: Scanner) -> dict[str, Callable[[Any], bool]]:
    """The validator of each reserved key; the scanner vets correlation ids and exception messages."""

    def hex_id(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
        def valid(value: Any) -> bool:
            if type(value) is not str or not pattern.fullmatch(value):
                return False
            return not value.isdigit() or not scanner.findings(value)  # 16 digits can be a card number

        return valid

    def correlation_id(value: Any) -> bool:
        if type(value) is not str or not VALID_CORRELATION_ID.fullmatch(value):
            return type(value) is str and value == "<invalid>"
        if _HEX_ID.fullmatch(value) and not value.replace("-", "").isdigit():
            return True
        return not scanner.findings(value)

    def exception(value: Any, depth: int = 0) -> bool:
        """Whether ``value`` is what :func:`processors.safe_exception` builds: no locals, clean text."""
        if type(value) is str:
            return value == _FORMATTED
        if type(value) is not dict or depth > 16 or not _EXCEPTION_KEYS.issuperset(value):
            return False
        kind, message, frames = value.get("type"), value.get("message"), value.get("frames")
        if type(kind) is not str or not all(map(emittable_key, kind.split("."))):
            return False
        if type(message) is not str or scanner.findings(message):
            return False
        if type(frames) is not list or not all(type(f) is str and _FRAME.fullmatch(f) for f in frames):
            return False
        if not all(type(value.get(k, 0)) is bool or _count(value.get(k, 0)) for k in _EXCEPTION_COUNTS):
            return False
        nested = value.get("cause", value.get("context"))
        return nested is None or exception(nested, depth + 1)

    return {
        "level": _name,
        "logger": _name,
        "kind": _name,
        "timestamp": _timestamp,
        "correlation_id": correlation_id,
        "trace_id": hex_id(_TRACE_ID),
        "span_id": hex_id(_SPAN_ID),
        "exception": exception,
        "fp": _fingerprints,
        "hidden_keys": _count,
        "dropped_fields": _count,
        "policy": _policy,
    }


class _ValueScan:
    """One allowlisted value at level ``values``: scanned leaves, filtered keys, bounded like shapes."""

    __slots__ = ("limits", "scanner", "work")

    def __init__(self, scanner: Scanner, limits: ShapeLimits) -> None:
        self.scanner = scanner
        self.limits = limits
        self.work = limits.max_work

    def value(self, v: Any, depth: int) -> Any:
        self.work -= 1
        tp = type(v)
        if tp is str:
            return utf8_safe(self.scanner.redact(v))
        if v is None or tp is bool:
            return v
        if tp is int or tp is float:
            if tp is int and v.bit_length() > 64:
                return {"t": "int"}
            text = str(v)
            return v if not self.scanner.findings(text) else self.scanner.redact(text)
        if tp is dict or tp is list or tp is tuple or tp is set or tp is frozenset:
            if depth >= self.limits.max_depth or self.work <= 0:
                return shape_of(v, limits=self.limits)
            return self.mapping(v, depth) if tp is dict else self.array(v, depth)
        return shape_of(v, limits=self.limits)  # bytes, objects: never as values

    def mapping(self, v: dict[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        hidden = 0
        max_len = self.limits.max_key_len
        for key, item in islice(dict.items(v), self.limits.max_keys):
            if emittable_key(key, max_len):
                out[key] = self.value(item, depth + 1)
            else:
                hidden += 1
        if hidden:
            out["<hidden_keys>"] = hidden
        if len(v) > self.limits.max_keys:
            out["<more_keys>"] = len(v) - self.limits.max_keys
        return out

    def array(self, v: Any, depth: int) -> list[Any]:
        n = len(v)
        limit = self.limits.max_keys
        out = [self.value(item, depth + 1) for item in islice(iter(v), limit)]
        if n > limit:
            out.append(f"<{n - limit} more>")
        return out


class ShapeRecorder:
    """structlog processor: replace event values with their shapes, as the field policy says.

    Args:
        policy: a :class:`FieldPolicy`, or a callable that picks one per event (say, by ``logger``); it
            should return the same objects for the same rules (cache them), it runs for every event.
        scanner: masks the message and allowlisted values.
        reserved: keys that pass through when their values have the expected form.
        limits: bounds for each shape.
        render: for a sink that serializes with orjson (the journal): where the compiled shaper runs, a
            field's shape comes as an ``orjson.Fragment`` holding its JSON (the text orjson writes for the
            shape's dict) instead of the dict; scalar fields share one Fragment per shape. Off by default:
            the event then holds plain dicts only.

    Raises:
        TypeError: ``policy`` is neither a ``FieldPolicy`` nor callable.
    """

    __slots__ = (
        "_fields", "_limits", "_names", "_policy", "_reserved", "_resolve", "_scanner", "_shape",
        "_validators",
    )  # fmt: skip

    def __init__(
        self,
        *,
        policy: FieldPolicy | Callable[[Mapping[str, Any]], FieldPolicy],
        scanner: Scanner,
        reserved: Iterable[str] = RESERVED_KEYS,
        limits: ShapeLimits = DEFAULT_LIMITS,
        render: bool = False,
    ) -> None:
        if isinstance(policy, FieldPolicy):
            self._policy: FieldPolicy | None = policy
            self._resolve: Callable[[Mapping[str, Any]], FieldPolicy] | None = None
        elif callable(policy):
            self._policy, self._resolve = None, policy
        else:
            raise TypeError("policy must be a FieldPolicy or a callable returning one")
        self._scanner = scanner
        self._reserved = frozenset(reserved)
        self._limits = limits
        self._shape = _shaper(limits)  # shape_of with these limits, bound once
        # The compiled shaper also shapes a whole event's fields in one call (plain ``shape`` level).
        self._fields: Callable[[dict[Any, Any], frozenset[str], frozenset[str]], _Fields] | None
        self._fields = getattr(self._shape, "render_fields" if render else "fields", None)
        # Reserved names whose values the compiled call vets itself: as `_name` does, with its key length.
        self._names = (
            self._reserved & _NAMES if limits.max_key_len == DEFAULT_LIMITS.max_key_len else frozenset()
        )
        self._validators = {k: v for k, v in _reserved_forms(scanner).items() if k in self._reserved}

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        """Return the redacted event (a new dict).

        Args:
            logger: the wrapped logger (unused).
            method_name: the log method name (unused).
            event_dict: the event.

        Returns:
            The event with the message scanned, reserved keys checked, and every other value shaped (or,
            at level ``values`` and allowlisted, scanned); ``hidden_keys`` / ``dropped_fields`` counts.

        Raises:
            structlog.DropEvent: the policy's level is ``none``.
        """
        policy = self._policy if self._resolve is None else self._resolve(event_dict)
        if policy is None or policy.level == "none":
            raise structlog.DropEvent
        metadata = policy.level == "metadata"
        allow = policy.allow if policy.level == "values" else None
        pii = policy.pii
        reserved, shape = self._reserved, self._shape
        fields = self._fields
        if fields is not None and not metadata and allow is None and not pii and type(event_dict) is dict:
            # One call shapes every field; the reserved keys present come back to be vetted here.
            out, hidden, present = fields(event_dict, reserved, self._names)
            for key in present:
                out[key] = self._vet(key, event_dict[key])
            if hidden:
                out["hidden_keys"] = hidden
            return out
        max_len = self._limits.max_key_len
        accepted = _ACCEPTED_KEYS
        out = {}
        hidden = dropped = 0
        for key, value in event_dict.items():
            if type(key) is str and key in reserved:
                out[key] = self._vet(key, value)
            elif metadata:
                dropped += 1
            elif not (  # emittable_key's cache hit, inlined: this loop runs for every key of every event
                type(key) is str and key in accepted and len(key) <= max_len
            ) and not emittable_key(key, max_len):
                hidden += 1
            elif allow is not None and key in allow:
                out[key] = self._allowed(value)
            else:
                out[key] = shape(value) if not pii or key not in pii else self._annotated(shape(value), value)
        if hidden:
            out["hidden_keys"] = hidden
        if dropped:
            out["dropped_fields"] = dropped
        return out

    def _vet(self, key: str, value: Any) -> Any:
        """A reserved key's value: the message scanned; others kept if they have their form, else shaped."""
        if key == "event":
            if type(value) is not str:
                return self._shape(value)
            try:
                return utf8_safe(self._scanner.redact(value))  # a custom scanner may keep surrogates
            except Exception:  # a scanner must not raise; if one does, nothing of the message goes out
                return "<unscannable>"
        valid = self._validators.get(key)
        return value if valid is None or valid(value) else self._shape(value)

    def _annotated(self, shape: Any, value: Any) -> Any:
        """Mark which entity types the shaped strings carried (``"pii": [...]``); never their values."""
        from processors.pii import annotate  # presidio is not imported by this

        try:
            return annotate(shape, value, self._scanner)
        except Exception:  # a user Mapping that fails on access: the plain shape stands
            return shape

    def _allowed(self, value: Any) -> Any:
        try:
            return _ValueScan(self._scanner, self._limits).value(value, 0)
        except Exception:  # a container changed under us, a scanner failed: fail closed
            return shape_of(value, limits=self._limits)
