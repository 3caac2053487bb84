"""FieldPolicy and ShapeRecorder: levels, allowlists, keys as data, reserved keys checked by form."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
import structlog

from processors.redact import RESERVED_KEYS, FieldPolicy, ShapeRecorder
from processors.secret_scanner import SecretScanner
from processors.shapes import ShapeLimits
from processors.tracebacks import safe_exception
from tests.conftest import Canaries

SCANNER = SecretScanner()


def record(event: dict[Any, Any], **policy: Any) -> dict[str, Any]:
    return ShapeRecorder(policy=FieldPolicy(**policy), scanner=SCANNER)(None, "info", event)


class TestFieldPolicy:
    def test_defaults(self) -> None:
        """Shape level, nothing allowed, fingerprinted or annotated, no rule."""
        assert ("shape", frozenset(), frozenset(), None, frozenset()) == dataclasses.astuple(FieldPolicy())

    def test_iterables_become_frozensets(self) -> None:
        """allow and fingerprint accept any iterable of names and store frozensets."""
        policy = FieldPolicy(allow=["a", "b"], fingerprint=("c",))  # type: ignore[arg-type]
        assert (frozenset({"a", "b"}), frozenset({"c"})) == (policy.allow, policy.fingerprint)

    @pytest.mark.parametrize(
        "kwargs",
        [{"level": "all"}, {"allow": frozenset({1})}, {"fingerprint": frozenset({None})}, {"rule_id": 3}],
    )
    def test_invalid(self, kwargs: dict[str, Any]) -> None:
        """Unknown levels and non-str names are rejected."""
        with pytest.raises(ValueError):
            FieldPolicy(**kwargs)

    def test_hashable_value_object(self) -> None:
        """Equal policies are equal and hash alike (so resolvers can cache them)."""
        assert hash(FieldPolicy(allow=frozenset({"a"}))) == hash(FieldPolicy(allow=frozenset({"a"})))


class TestLevels:
    def test_none_drops_the_event(self) -> None:
        """Level none raises DropEvent."""
        with pytest.raises(structlog.DropEvent):
            record({"event": "x"}, level="none")

    def test_metadata_counts_dropped_fields(self) -> None:
        """Level metadata keeps reserved keys and counts the rest."""
        event = {"event": "login", "level": "info", "user": "alice", "token": "t", 1: 2}
        assert {"event": "login", "level": "info", "dropped_fields": 3} == record(event, level="metadata")

    def test_shape_replaces_values(self) -> None:
        """Level shape replaces every non-reserved value by its shape."""
        event = {"event": "login", "user": "alice", "attempts": 3, "args": {"q": "x"}}
        expected = {
            "event": "login",
            "user": {"t": "str", "len": 5},
            "attempts": {"t": "int"},
            "args": {"t": "obj", "n": 1, "keys": {"q": {"t": "str", "len": 1}}},
        }
        assert expected == record(event)

    def test_allow_is_ignored_at_shape_level(self) -> None:
        """allow only applies at level values."""
        assert {"user": {"t": "str", "len": 5}} == record({"user": "alice"}, allow=frozenset({"user"}))

    def test_values_keeps_allowed_values_after_scanning(self) -> None:
        """At level values an allowlisted str is scanned; other fields are still shaped."""
        event = {"note": "mail a@example.org", "status": 200, "other": "secret"}
        expected = {"note": "mail <EMAIL_ADDRESS>", "status": 200, "other": {"t": "str", "len": 6}}
        assert expected == record(event, level="values", allow=frozenset({"note", "status"}))

    def test_values_scans_numbers(self) -> None:
        """An allowlisted number that is a card number is masked; ordinary numbers pass."""
        event = {"card": 4111111111111111, "n": 7, "ratio": 0.5, "flag": True, "none": None}
        expected = {"card": "<CREDIT_CARD>", "n": 7, "ratio": 0.5, "flag": True, "none": None}
        assert expected == record(event, level="values", allow=frozenset(event))

    def test_values_containers(self) -> None:
        """Allowlisted containers are scanned recursively, keys filtered, bytes shaped."""
        event = {"body": {"q": "a@example.org", "items": [1, "x"], "raw": b"\x00", "a@b.org": 1}}
        expected = {
            "body": {
                "q": "<EMAIL_ADDRESS>",
                "items": [1, "x"],
                "raw": {"t": "bytes", "len": 1},
                "<hidden_keys>": 1,
            }
        }
        assert expected == record(event, level="values", allow=frozenset({"body"}))

    def test_values_containers_are_bounded(self) -> None:
        """Long allowlisted lists and dicts are cut at max_keys items."""
        recorder = ShapeRecorder(
            policy=FieldPolicy(level="values", allow=frozenset({"v", "d"})),
            scanner=SCANNER,
            limits=ShapeLimits(max_keys=2),
        )
        event = recorder(None, "info", {"v": list(range(5)), "d": {"a": 1, "b": 2, "c": 3}})
        assert {"v": [0, 1, "<3 more>"], "d": {"a": 1, "b": 2, "<more_keys>": 1}} == event

    def test_values_huge_int_is_shaped(self) -> None:
        """An allowlisted int too large for any identifier is shaped, not printed."""
        assert {"n": {"t": "int"}} == record({"n": 1 << 4096}, level="values", allow=frozenset({"n"}))

    def test_callable_policy(self) -> None:
        """A callable picks the policy per event."""

        def by_logger(event: Mapping[str, Any]) -> FieldPolicy:
            return FieldPolicy(level="metadata") if event.get("logger") == "quiet" else FieldPolicy()

        recorder = ShapeRecorder(policy=by_logger, scanner=SCANNER)
        quiet = recorder(None, "info", {"logger": "quiet", "a": 1})
        loud = recorder(None, "info", {"logger": "loud", "a": 1})
        assert ({"logger": "quiet", "dropped_fields": 1}, {"logger": "loud", "a": {"t": "int"}}) == (
            quiet,
            loud,
        )

    def test_rejects_non_policy(self) -> None:
        """policy must be a FieldPolicy or a callable."""
        with pytest.raises(TypeError):
            ShapeRecorder(policy="shape", scanner=SCANNER)  # type: ignore[arg-type]


class TestMessageAndKeys:
    def test_message_is_scanned(self) -> None:
        """The event message always goes through the scanner."""
        assert {"event": "reset for <EMAIL_ADDRESS>"} == record({"event": "reset for a@example.org"})

    def test_non_str_message_is_shaped(self) -> None:
        """A non-str message is replaced by its shape."""
        assert {"event": {"t": "obj", "n": 1, "keys": {"a": {"t": "int"}}}} == record({"event": {"a": 1}})

    @pytest.mark.parametrize(
        "key", ["canary.user@example.org", "sk_live_CANARY9a8b7c6d5e4f3a2b1c0d", "a b", "Zoë"]
    )
    def test_data_keys_are_hidden(self, key: str) -> None:
        """Top-level keys that look like data are counted, never emitted."""
        assert {"event": "x", "hidden_keys": 1} == record({"event": "x", key: 1})

    def test_returns_a_new_dict(self) -> None:
        """The input event is not modified."""
        event = {"event": "x", "a": 1}
        record(event)
        assert {"event": "x", "a": 1} == event


class TestReservedKeys:
    def test_reserved_set(self) -> None:
        """The documented reserved keys."""
        expected = {
            "event", "level", "logger", "timestamp", "correlation_id", "trace_id", "span_id",
            "exception", "fp", "kind", "hidden_keys", "dropped_fields", "policy",
        }  # fmt: skip
        assert expected == set(RESERVED_KEYS)

    def test_well_formed_values_pass(self) -> None:
        """Values our processors and structlog's set pass unchanged."""
        try:
            raise ValueError("x")
        except ValueError as exc:
            shaped = safe_exception(exc, scanner=SCANNER)
        event = {
            "event": "x",
            "level": "info",
            "logger": "uvicorn.access",
            "timestamp": "2024-01-15T10:30:00.123456Z",
            "correlation_id": "0af7651916cd43dd8448eb211c80319c",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "exception": shaped,
            "fp": {"user_id": "k1:" + "0" * 32},
            "kind": "http.request",
            "policy": {"id": "default", "hash": "9f2c4e1a0b3d5c7e"},
        }
        assert event == record(dict(event))

    def test_exception_with_masked_message_passes(self, canaries: Canaries) -> None:
        """A safe_exception dict whose messages were masked passes as it is."""
        try:
            raise ValueError(f"token {canaries.values['jwt']} password {canaries.values['password']}")
        except ValueError as exc:
            shaped = safe_exception(exc, scanner=SCANNER)
        assert shaped == record({"exception": shaped})["exception"]

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("logger", "canary.user@example.org"),
            ("level", "info; password=x"),
            ("kind", "a b"),
            ("timestamp", "yesterday at noon"),
            ("trace_id", "not-hex"),
            ("span_id", 12),
            ("span_id", "5555555555554444"),
            ("correlation_id", "sk_live_CANARY9a8b7c6d5e4f3a2b1c0d"),
            ("timestamp", "536-22-8726"),
            ("timestamp", 5555555555554444),
            ("correlation_id", "has space"),
            ("fp", {"user_id": "hunter2"}),
            ("fp", "hunter2"),
            ("exception", "Traceback: x = 'hunter2'"),
            ("exception", {"type": "E", "message": "m", "frames": [], "locals": {"x": 1}}),
            ("hidden_keys", "many"),
            ("policy", {"id": "a b"}),
        ],
    )
    def test_malformed_values_are_shaped(self, key: str, value: object) -> None:
        """A reserved key with a value of the wrong form (a caller's, not ours) is shaped."""
        out = record({key: value})
        assert isinstance(out[key], (dict, str)) and out[key] != value

    def test_custom_reserved_keys_are_trusted(self) -> None:
        """Keys added to the reserved set without a known form pass as they are."""
        recorder = ShapeRecorder(policy=FieldPolicy(), scanner=SCANNER, reserved=RESERVED_KEYS | {"route"})
        assert {"route": "/users/{id}"} == recorder(None, "info", {"route": "/users/{id}"})


class TestPathologicalValues:
    @pytest.mark.parametrize("level", ["shape", "values"])
    def test_hostile_values_are_bounded(self, level: str) -> None:
        """Huge, deep, cyclic and huge-int values, allowlisted or not: bounded time, serialisable output."""
        loop: list[Any] = []
        loop.append(loop)
        deep: list[Any] = []
        for _ in range(10_000):
            deep = [deep]
        event = {
            "event": "x" * (4 << 20),
            "big_list": [0] * 10_000_000,
            "big_dict": {f"k{i}": i for i in range(1_000_000)},
            "big_set": set(range(100_000)),
            "deep": deep,
            "loop": loop,
            "huge_int": 1 << 1_000_000,
            "text": "a@example.org " * 100_000,
        }
        recorder = ShapeRecorder(policy=FieldPolicy(level=level, allow=frozenset(event)), scanner=SCANNER)  # type: ignore[arg-type]
        start = time.perf_counter()
        out = recorder(None, "info", event)
        elapsed = time.perf_counter() - start
        assert elapsed < 5.0, f"took {elapsed:.2f}s"
        assert len(orjson.dumps(out)) < 4 << 20
