"""Keyed fingerprints: "did this token appear?" without the log holding the token.

``Fingerprinter`` replaces selected fields with ``HMAC-SHA256(key, canonical(value))`` under
``event_dict["fp"][field]`` as ``"<key_id>:<32 hex>"`` (compare Vault's audit hashing). The key id lets a
responder pick the right key after rotation. The same object's :meth:`Fingerprinter.fingerprint` gives the
identical string for a value a responder holds, so the query side never needs the raw values logged.

Canonical bytes: ``str`` as UTF-8 (lone surrogates kept with ``surrogatepass``), ``bytes`` as they are,
other scalars as a NUL-prefixed type tag plus a canonical text (``int`` in hex, ``float.hex()``), so
``42`` and ``"42"`` differ. Containers and other types are not fingerprinted: ``"<unfingerprintable:T>"``.
Nothing is normalised silently; pass ``normalize`` (say ``str.lower`` for e-mail addresses) and it is
applied to strings identically on both paths.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from processors.shapes import safe_type_name

__all__ = ["Fingerprinter"]

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MIN_KEY_BYTES = 16
_BLOCK = 64  # SHA-256's block size


def _tagged(tag: bytes, text: Callable[[Any], str]) -> Callable[[Any], bytes]:
    def canonical(v: Any) -> bytes:
        return tag + text(v).encode("ascii")

    return canonical


_CANONICAL: dict[type, Callable[[Any], bytes]] = {
    bytes: bytes,
    bytearray: bytes,
    memoryview: memoryview.tobytes,
    int: _tagged(b"\x00int\x00", lambda v: format(int.__index__(v), "x")),
    float: _tagged(b"\x00float\x00", float.hex),
    bool: _tagged(b"\x00bool\x00", lambda v: "true" if v else "false"),
    type(None): _tagged(b"\x00null\x00", lambda v: ""),
}
# Subclasses (IntEnum, StrEnum, ...) by their builtin base, read through the base's methods.
_BASES: tuple[type, ...] = (bool, int, float, bytes, bytearray)


class Fingerprinter:
    """structlog processor: move ``fields`` out of the event into keyed fingerprints under ``"fp"``.

    Args:
        key: the HMAC key, at least 16 bytes.
        key_id: a short name for the key (``[A-Za-z0-9_.-]{1,32}``), prefixed to every fingerprint.
        fields: the event keys to fingerprint.
        normalize: applied to ``str`` values before hashing, on both paths (``None``: hash as is).

    Raises:
        ValueError: the key is too short, the key id is malformed, or a field name is not a ``str``.
    """

    __slots__ = ("_fields", "_inner", "_key_id", "_normalize", "_outer")

    def __init__(
        self,
        *,
        key: bytes,
        key_id: str,
        fields: Iterable[str],
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        if type(key) is not bytes or len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"the fingerprint key must be at least {_MIN_KEY_BYTES} bytes")
        if type(key_id) is not str or not _KEY_ID.fullmatch(key_id):
            raise ValueError("the key id must be 1-32 chars of [A-Za-z0-9_.-]")
        names = tuple(dict.fromkeys(fields))
        if not all(type(name) is str for name in names):
            raise ValueError("fingerprint fields must be str")
        self._fields = names
        self._key_id = key_id
        # HMAC-SHA256 (RFC 2104) with both padded-key states hashed once: a fingerprint then costs two
        # hashlib copies, about half of hmac.HMAC.copy().
        block = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._normalize = normalize

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Replace each configured field present in the event by its fingerprint in ``event_dict["fp"]``.

        Args:
            logger: the wrapped logger (unused).
            method_name: the log method name (unused).
            event_dict: the event.

        Returns:
            The event without the fields, with ``"fp"`` extended (a non-dict ``"fp"`` is replaced).
        """
        fp: dict[str, str] | None = None
        for name in self._fields:
            if name in event_dict:
                value = event_dict.pop(name)
                if fp is None:
                    existing = event_dict.get("fp")
                    fp = dict(existing) if type(existing) is dict else {}
                fp[name] = self.fingerprint(value)
        if fp is not None:
            event_dict["fp"] = fp
        return event_dict

    def fingerprint(self, value: object) -> str:
        """Return the fingerprint of one value, as the processor would log it.

        Args:
            value: a str, bytes, int, float, bool or None (or a subclass of one).

        Returns:
            ``"<key_id>:<32 hex>"``, or ``"<unfingerprintable:TypeName>"`` for anything else.
        """
        data = self._canonical(value)
        if data is None:
            return f"<unfingerprintable:{safe_type_name(type(value))}>"
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"{self._key_id}:{outer.hexdigest()[:32]}"

    def _canonical(self, value: object) -> bytes | None:
        tp = type(value)
        try:
            if tp is str or str in tp.__mro__:
                text = str.__str__(value)
                if self._normalize is not None:
                    text = self._normalize(text)
                    if type(text) is not str:
                        return None
                return text.encode("utf-8", "surrogatepass")
            canonical = _CANONICAL.get(tp)
            if canonical is None:
                base = next((b for b in _BASES if b in tp.__mro__), None)
                if base is None:
                    return None
                canonical = _CANONICAL[base]
            return canonical(value)
        except Exception:  # a normalize() or a subclass that fails: not fingerprinted
            return None
