"""Invariant 1 for the processor chain: canaries planted anywhere never reach the rendered output."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import (
    ExceptionShaper,
    FieldPolicy,
    Fingerprinter,
    SecretScanner,
    ShapeRecorder,
    add_correlation_ids,
    bind_correlation_id,
)
from processors.correlation import VALID_CORRELATION_ID
from tests.conftest import Canaries

SCANNER = SecretScanner()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass
class Box:
    payload: Any
    label: str


class Model(pydantic.BaseModel):
    payload: Any
    label: str


def chain(policy: FieldPolicy) -> Callable[[dict[str, Any]], bytes]:
    """The processors in production order, then orjson: returns the rendered line."""
    processors: list[Callable[[Any, str, Any], Any]] = [
        add_correlation_ids,
        ExceptionShaper(SCANNER),
        Fingerprinter(key=b"f" * 32, key_id="k1", fields=["user_id"]),
        ShapeRecorder(policy=policy, scanner=SCANNER),
    ]

    def render(event: dict[str, Any]) -> bytes:
        out: Any = event
        for processor in processors:
            out = processor(None, "info", out)
        return orjson.dumps(out)

    return render


def carriers(secret: str) -> st.SearchStrategy[Any]:
    """Values that hold ``secret`` somewhere: as text, bytes, keys at any depth, in any container."""
    leaves = st.one_of(
        st.sampled_from(
            [secret, f"value {secret} end", secret.encode("utf-8"), bytearray(secret.encode("utf-8"))]
        ),
        st.integers(),
        st.text(max_size=4),
        st.none(),
    )
    keys = st.one_of(st.sampled_from([secret, f"k_{secret}", "name"]), st.text(max_size=4))

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(keys, children, max_size=4),
            st.sets(st.sampled_from([secret, "x", 1]), max_size=3),
            st.frozensets(st.sampled_from([secret, "y", 2]), max_size=3),
            children.map(lambda c: Box(payload=c, label=secret)),
            children.map(lambda c: Model(payload=c, label=secret)),
        )

    return st.recursive(leaves, extend, max_leaves=12)


def chained_exception(secret: str) -> BaseException:
    """An exception whose message and chained cause both carry ``secret``, with it in a local too."""
    local_secret = secret
    try:
        try:
            raise KeyError(local_secret)
        except KeyError as inner:
            raise ValueError(f"failed for {local_secret}") from inner
    except ValueError as exc:
        return exc


LEVELS = [
    FieldPolicy(level="metadata"),
    FieldPolicy(level="shape"),
    FieldPolicy(level="shape", allow=frozenset({"arg"})),
    FieldPolicy(level="values", allow=frozenset({"arg", "note", "nested"})),
]


class TestNoLeaks:
    @SETTINGS
    @given(data=st.data())
    def test_canaries_everywhere(self, canaries: Canaries, data: st.DataObject) -> None:
        """A canary in args, keys, containers, objects, exceptions and the message never leaks."""
        secret = data.draw(st.sampled_from(sorted(canaries.values.values())), label="secret")
        policy = data.draw(st.sampled_from(LEVELS), label="policy")
        event: dict[str, Any] = {
            "event": data.draw(st.sampled_from([secret, f"login failed: {secret}", f"{secret}\n{secret}"])),
            "arg": data.draw(carriers(secret), label="arg"),
            "note": f"see {secret}",
            "nested": {secret: {secret: [secret]}, "inner": {"deeper": {secret: secret}}},
            "user_id": secret,
            secret: "key is the secret",
            "exc_info": chained_exception(secret),
        }
        line = chain(policy)(event)
        assert [] == canaries.leaks(line)

    @SETTINGS
    @given(data=st.data())
    def test_allowlisted_canary_field_is_still_scanned(self, canaries: Canaries, data: st.DataObject) -> None:
        """Level values with the canary field allowlisted: the scanner masks it."""
        secret = data.draw(st.sampled_from(sorted(canaries.values.values())), label="secret")
        arg = data.draw(carriers(secret), label="arg")
        line = chain(FieldPolicy(level="values", allow=frozenset({"arg"})))({"event": "call", "arg": arg})
        assert [] == canaries.leaks(line)

    @pytest.mark.parametrize("policy", LEVELS, ids=[f"{p.level}-{sorted(p.allow)}" for p in LEVELS])
    def test_every_value_at_every_level(self, canaries: Canaries, policy: FieldPolicy) -> None:
        """Each canary value, as message, argument, key and exception, at each level."""
        render = chain(policy)
        for secret in canaries.values.values():
            event = {
                "event": secret,
                "arg": secret,
                "note": [secret, {"x": secret}],
                secret: 1,
                "exc_info": chained_exception(secret),
            }
            assert [] == canaries.leaks(render(event)), secret

    def test_formatted_exception_string(self, canaries: Canaries) -> None:
        """A pre-formatted traceback carrying canaries is replaced, not scanned and passed on."""
        text = "Traceback (most recent call last):\n" + "\n".join(
            f"  x = {v!r}" for v in canaries.values.values()
        )
        assert [] == canaries.leaks(chain(FieldPolicy())({"event": "x", "exception": text}))

    def test_canary_as_correlation_id(self, canaries: Canaries) -> None:
        """A canary bound as correlation id is rejected as invalid, never echoed.

        Except a value in the exact form of a correlation id (32 lowercase hex, as a hex session token
        is): the app that binds it says it is one, and nothing in the value can say otherwise. The
        middleware never takes one from a caller's field (tests/auditlog/test_pipeline.py).
        """
        for secret in canaries.values.values():
            if VALID_CORRELATION_ID.fullmatch(secret):
                continue
            try:
                with bind_correlation_id(secret):
                    pass
            except ValueError:
                pass
            line = chain(FieldPolicy())({"event": "x", "correlation_id": secret})
            assert [] == canaries.leaks(line), secret
