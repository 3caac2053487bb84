"""Hostile values never make a processor raise: lone surrogates, deep nesting, huge ints, raising dunders."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import pytest

from processors.pii import PIIScanner
from processors.redact import FieldPolicy, ShapeRecorder
from processors.scanning import Scanner
from processors.secret_scanner import SecretScanner
from processors.shapes import shape_of
from processors.tracebacks import ExceptionShaper, safe_exception

SCANNERS = ("secret", "pii")
SURROGATES = ["\ud800", "a\udfffb", "password=x\ud800y", "mail a@b.test\udc80 4111111111111111"]


@cache
def scanner(name: str) -> Scanner:
    return SecretScanner() if name == "secret" else PIIScanner()


class Boom:
    """Every way to print it raises."""

    def __str__(self) -> str:
        raise RuntimeError("no")

    def __repr__(self) -> str:
        raise RuntimeError("no")


class BoomError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def deep(n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        out = [out]
    return out


HUGE = 10**5000  # str() of it raises ValueError (Python's int-to-str digit limit)
HOSTILE: dict[str, Any] = {"deep": deep(10_000), "huge_int": HUGE, "boom": Boom(), "surrogate": "x\ud800"}


class TestLoneSurrogates:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize("text", SURROGATES)
    def test_redacted_text_encodes_to_utf8(self, which: str, text: str) -> None:
        """redact() returns text that encodes to UTF-8 (a lone surrogate becomes U+FFFD)."""
        out = scanner(which).redact(text)
        assert out.replace("\ufffd", "") == out.encode("utf-8").decode("utf-8").replace("\ufffd", "")

    @pytest.mark.parametrize("which", SCANNERS)
    def test_message_and_allowlisted_value(self, which: str) -> None:
        """A surrogate in the message or an allowlisted value leaves an event orjson can write."""
        rec = ShapeRecorder(
            policy=FieldPolicy(level="values", allow=frozenset({"note"})), scanner=scanner(which)
        )
        out = rec(None, "info", {"event": "hi \ud800", "note": ["\udfff", {"k": "a\ud800"}]})
        assert out == orjson.loads(orjson.dumps(out))

    @pytest.mark.parametrize("which", SCANNERS)
    def test_exception_message(self, which: str) -> None:
        """A surrogate in an exception message leaves a description orjson can write."""
        out = safe_exception(ValueError("bad \ud800"), scanner=scanner(which))
        assert out == orjson.loads(orjson.dumps(out))


class TestNeverRaises:
    @pytest.mark.parametrize("level", ["shape", "values"])
    @pytest.mark.parametrize("name", sorted(HOSTILE))
    def test_recorder_field(self, level: str, name: str) -> None:
        """A hostile field value, shaped or allowlisted, gives a JSON-writable event."""
        rec = ShapeRecorder(policy=FieldPolicy(level=level, allow=frozenset({"v"})), scanner=SecretScanner())  # type: ignore[arg-type]
        out = rec(None, "info", {"event": "x", "v": HOSTILE[name]})
        assert out == orjson.loads(orjson.dumps(out))

    @pytest.mark.parametrize("name", sorted(HOSTILE))
    def test_recorder_message(self, name: str) -> None:
        """A hostile message (not a str, or a str with a surrogate) gives a JSON-writable event."""
        rec = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner())
        out = rec(None, "info", {"event": HOSTILE[name]})
        assert out == orjson.loads(orjson.dumps(out))

    def test_unprintable_object_is_unshapeable(self) -> None:
        """An object whose __str__ and __repr__ raise is shaped fail-closed, by its type name."""
        assert "<unshapeable:Boom>" == shape_of(Boom())

    def test_huge_int_allowlisted(self) -> None:
        """An int past Python's str() digit limit is shaped, never printed."""
        rec = ShapeRecorder(
            policy=FieldPolicy(level="values", allow=frozenset({"n"})), scanner=SecretScanner()
        )
        assert {"t": "int"} == rec(None, "info", {"event": "x", "n": HUGE})["n"]

    @pytest.mark.parametrize(
        "exc", [BoomError(), ValueError(HUGE), ValueError(Boom()), ValueError(deep(10_000))]
    )
    def test_exception_shaper(self, exc: BaseException) -> None:
        """Exceptions that cannot be printed describe themselves as unprintable, and nothing raises."""
        out = ExceptionShaper(SecretScanner())(None, "error", {"event": "x", "exc_info": exc})
        assert out == orjson.loads(orjson.dumps(out))

    def test_deep_structure_is_cut_at_the_depth_bound(self) -> None:
        """A 10^4-deep list is shaped down to the depth bound, then marked truncated."""
        shape: Any = shape_of(deep(10_000))
        depth = 0
        while "items" in shape:
            shape, depth = shape["items"], depth + 1
        assert (True, 6) == (shape.get("truncated"), depth)
