"""safe_exception and ExceptionShaper: no locals, no source, scanned messages, bounded chains."""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson
import pytest
import structlog

from processors.secret_scanner import SecretScanner
from processors.tracebacks import ExceptionShaper, safe_exception
from tests.conftest import Canaries

SCANNER = SecretScanner()


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def raised(exc: BaseException) -> BaseException:
    """Return ``exc`` after raising and catching it (so it has a traceback)."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def failing_with_locals(secret: str) -> BaseException:
    local_copy = f"LOCALMARKER {secret}"  # a local that must never be logged
    try:
        raise ValueError(f"boom for {secret}")
    except ValueError as exc:
        assert local_copy
        return exc


class TestSafeException:
    def test_structure(self) -> None:
        """Type, message and frames as path:line:function."""
        exc = raised(KeyError("missing"))
        shaped = safe_exception(exc, scanner=SCANNER)
        frame = shaped["frames"][0]
        assert ("KeyError", "'missing'") == (shaped["type"], shaped["message"])
        assert frame.startswith("tests/processors/test_tracebacks.py:") and frame.endswith(":raised")

    def test_qualified_type_name(self) -> None:
        """Non-builtin exception types carry their module."""
        shaped = safe_exception(raised(Unprintable()), scanner=SCANNER)
        assert "tests.processors.test_tracebacks.Unprintable" == shaped["type"]

    def test_no_locals_and_scanned_message(self, canaries: Canaries) -> None:
        """A canary in a local and in the message: neither reaches the output."""
        secret = canaries.values["password"]
        blob = orjson.dumps(safe_exception(failing_with_locals(secret), scanner=SCANNER))
        assert ([], False) == (canaries.leaks(blob), b"LOCALMARKER" in blob)

    def test_chained_causes(self, canaries: Canaries) -> None:
        """raise ... from ...: every link is shaped and scanned."""
        try:
            try:
                raise KeyError(canaries.values["email"])
            except KeyError as inner:
                raise RuntimeError(f"wrapped {canaries.values['iban']}") from inner
        except RuntimeError as outer:
            shaped = safe_exception(outer, scanner=SCANNER)
        assert ("RuntimeError", "KeyError") == (shaped["type"], shaped["cause"]["type"])
        assert [] == canaries.leaks(orjson.dumps(shaped))

    def test_implicit_context(self) -> None:
        """An exception raised while handling another records it as context."""
        try:
            try:
                raise KeyError("first")
            except KeyError:
                raise ValueError("second")  # noqa: B904 (the implicit context is the point)
        except ValueError as exc:
            shaped = safe_exception(exc, scanner=SCANNER)
        assert "KeyError" == shaped["context"]["type"]

    def test_suppressed_context(self) -> None:
        """raise ... from None hides the context, as Python's own traceback does."""
        try:
            try:
                raise KeyError("first")
            except KeyError:
                raise ValueError("second") from None
        except ValueError as exc:
            shaped = safe_exception(exc, scanner=SCANNER)
        assert {"type", "message", "frames"} == set(shaped)

    def test_token_named_exception_class(self, canaries: Canaries) -> None:
        """An exception class named like a secret is reported as ``type``."""
        secret_type = type(canaries.values["api_key"], (Exception,), {})
        shaped = safe_exception(raised(secret_type("x")), scanner=SCANNER)
        assert "tests.processors.test_tracebacks.type" == shaped["type"]

    def test_unprintable(self) -> None:
        """str(exc) raising gives <unprintable>."""
        assert "<unprintable>" == safe_exception(raised(Unprintable()), scanner=SCANNER)["message"]

    def test_cyclic_chain_is_bounded(self) -> None:
        """A cause cycle ends with chain_truncated."""
        first, second = ValueError("a"), KeyError("b")
        first.__cause__, second.__cause__ = second, first
        shaped = safe_exception(first, scanner=SCANNER)
        assert (True, "KeyError") == (shaped["cause"]["chain_truncated"], shaped["cause"]["type"])

    def test_long_chain_is_cut(self) -> None:
        """At most max_chain links are followed."""
        exc: BaseException = ValueError("0")
        for i in range(1, 50):
            nxt = ValueError(str(i))
            nxt.__cause__ = exc
            exc = nxt
        shaped: dict[str, Any] = safe_exception(exc, scanner=SCANNER, max_chain=3)
        depth = 0
        while "cause" in shaped:
            shaped, depth = shaped["cause"], depth + 1
        assert (3, True) == (depth, shaped["chain_truncated"])

    def test_deep_recursion_keeps_innermost_frames(self) -> None:
        """A RecursionError keeps max_frames frames and counts the rest."""

        def recurse(n: int) -> int:
            return recurse(n + 1) + 1

        exc = None
        try:
            recurse(0)
        except RecursionError as caught:
            exc = caught
        assert exc is not None
        shaped = safe_exception(exc, scanner=SCANNER, max_frames=10)
        assert (10, True) == (len(shaped["frames"]), shaped["frames_omitted"] > 100)

    def test_long_message_is_capped(self) -> None:
        """A huge message is scanned, then capped."""
        shaped = safe_exception(ValueError("x " * 100_000), scanner=SCANNER)
        assert (True, True) == (len(shaped["message"]) < 2000, shaped["message"].endswith("<TRUNCATED>"))

    def test_paths_are_relative(self) -> None:
        """No absolute path (and so no home directory) appears in frames."""
        shaped = safe_exception(raised(ValueError("x")), scanner=SCANNER)
        assert [] == [f for f in shaped["frames"] if f.startswith(os.sep) or os.path.expanduser("~") in f]

    def test_site_packages_paths(self) -> None:
        """Frames inside installed packages are shown relative to site-packages."""

        def serializer(*args: Any, **kwargs: Any) -> str:
            raise ZeroDivisionError

        try:
            structlog.processors.JSONRenderer(serializer=serializer)(None, "info", {})
        except ZeroDivisionError as exc:
            frames = safe_exception(exc, scanner=SCANNER)["frames"]
        assert any(f.startswith("structlog/processors.py:") for f in frames)


class TestExceptionShaper:
    def shaper(self) -> ExceptionShaper:
        return ExceptionShaper(SCANNER)

    def test_exc_info_true(self) -> None:
        """exc_info=True shapes the exception being handled."""
        try:
            raise ValueError("x")
        except ValueError:
            event = self.shaper()(None, "error", {"event": "failed", "exc_info": True})
        assert ("ValueError", False) == (event["exception"]["type"], "exc_info" in event)

    def test_exc_info_tuple_and_instance(self) -> None:
        """sys.exc_info() tuples and exception instances are accepted."""
        exc = raised(KeyError("k"))
        from_tuple = self.shaper()(None, "error", {"exc_info": (type(exc), exc, exc.__traceback__)})
        from_instance = self.shaper()(None, "error", {"exc_info": exc})
        assert from_tuple["exception"] == from_instance["exception"]

    def test_exception_instance_under_exception_key(self) -> None:
        """An exception passed as exception=... is shaped too."""
        event = self.shaper()(None, "error", {"exception": raised(KeyError("k"))})
        assert "KeyError" == event["exception"]["type"]

    def test_formatted_traceback_is_replaced(self, canaries: Canaries) -> None:
        """A pre-formatted traceback string (which may hold locals) is dropped."""
        text = f"Traceback (most recent call last):\n  x = {canaries.values['password']!r}\nValueError"
        assert {"exception": "<formatted-exception>"} == self.shaper()(None, "error", {"exception": text})

    def test_foreign_dict_traceback_is_replaced(self) -> None:
        """Another processor's dict traceback (structlog's can carry locals) is dropped."""
        event = {"exception": [{"frames": [{"locals": {"secret": "x"}}]}]}
        assert {"exception": "<formatted-exception>"} == self.shaper()(None, "error", event)

    def test_exc_info_outside_except(self) -> None:
        """exc_info=True with nothing being handled leaves no exception key."""
        assert sys.exc_info() == (None, None, None)
        assert {"event": "x"} == self.shaper()(None, "error", {"event": "x", "exc_info": True})

    def test_events_without_exceptions_pass(self) -> None:
        """Events without exc_info or exception are returned as they are."""
        event = {"event": "x", "a": 1}
        assert event is self.shaper()(None, "info", event)

    def test_invalid_bounds(self) -> None:
        """max_frames must be positive."""
        with pytest.raises(ValueError):
            ExceptionShaper(SCANNER, max_frames=0)
