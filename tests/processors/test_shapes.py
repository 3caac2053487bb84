"""shape_of: the shapes themselves, keys as data, fail-closed markers, and bounded work on hostile input."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import orjson
import pydantic
import pytest

from processors.shapes import ShapeLimits, emittable_key, shape_of
from tests.conftest import Canaries

TIME_BOUND = 1.0  # seconds: a safety bound for pathological inputs, not a benchmark


@dataclasses.dataclass
class Point:
    x: int
    label: str


@dataclasses.dataclass(slots=True)
class Slotted:
    token: str


class User(pydantic.BaseModel):
    name: str
    age: int


class Explosive:
    """Every dunder a careless shaper might call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("iter")


class LyingDict(dict[str, Any]):
    """A dict subclass whose overrides raise: the shaper reads it through dict's own methods."""

    def __len__(self) -> int:
        raise RuntimeError("len")

    def items(self) -> Any:
        raise RuntimeError("items")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter")


class BrokenMapping(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise RuntimeError("getitem")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter")


@dataclasses.dataclass
class GuardedField:
    value: int

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("getattribute")


@dataclasses.dataclass
class UnsetField:
    value: int = dataclasses.field(init=False)


def bounded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, assert it took less than TIME_BOUND, return its result."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND, f"took {elapsed:.3f}s"
    return result


class TestShapeLimits:
    def test_defaults(self) -> None:
        """The documented defaults."""
        assert (6, 32, 8, 512, 64) == dataclasses.astuple(ShapeLimits())

    @pytest.mark.parametrize(
        "field", ["max_depth", "max_keys", "max_items_sampled", "max_work", "max_key_len"]
    )
    def test_rejects_non_positive_bounds(self, field: str) -> None:
        """Zero or negative bounds are configuration errors."""
        with pytest.raises(ValueError, match=field):
            ShapeLimits(**{field: 0})

    def test_is_frozen(self) -> None:
        """Limits are immutable value objects."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            ShapeLimits().max_depth = 1  # type: ignore[misc]


class TestScalars:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("hunter2!", {"t": "str", "len": 8}),
            (42, {"t": "int"}),
            (1.5, {"t": "float"}),
            (True, {"t": "bool"}),
            (None, {"t": "null"}),
            (b"\xff\xfe\x00", {"t": "bytes", "len": 3}),
            (bytearray(b"abcd"), {"t": "bytes", "len": 4}),
            (memoryview(b"abcde"), {"t": "bytes", "len": 5}),
        ],
    )
    def test_scalar_shapes(self, value: object, expected: dict[str, Any]) -> None:
        """Scalars shape by type (and length for text and bytes)."""
        assert expected == shape_of(value)

    def test_str_subclass_shapes_as_str_without_calling_overrides(self) -> None:
        """A str subclass is measured with str's own length, not an override."""

        class Sneaky(str):
            def __len__(self) -> int:
                raise RuntimeError("len")

        assert {"t": "str", "len": 3} == shape_of(Sneaky("abc"))

    def test_huge_int(self) -> None:
        """A ten-million-bit int is an int; it is never converted to text."""
        assert {"t": "int"} == bounded(lambda: shape_of(1 << 10_000_000))

    def test_surrogates_and_invalid_utf8(self) -> None:
        """Lone surrogates and invalid UTF-8 only contribute a length."""
        assert [{"t": "str", "len": 2}, {"t": "bytes", "len": 2}] == [
            shape_of("\ud800x"),
            shape_of(b"\xc3\x28"),
        ]

    def test_shapes_are_fresh_objects(self) -> None:
        """Mutating one returned shape never changes another."""
        first = shape_of(1)
        assert isinstance(first, dict)
        first["t"] = "mutated"
        assert {"t": "int"} == shape_of(1)


class TestContainers:
    def test_mapping(self) -> None:
        """A dict lists its emittable keys with their shapes and counts its entries."""
        expected = {"t": "obj", "n": 2, "keys": {"user_id": {"t": "int"}, "query": {"t": "str", "len": 5}}}
        assert expected == shape_of({"user_id": 7, "query": "hello"})

    def test_empty_containers(self) -> None:
        """Empty containers have a size and nothing else."""
        assert [{"t": "obj", "n": 0}, {"t": "arr", "len": 0}] == [shape_of({}), shape_of([])]

    @pytest.mark.parametrize("factory", [list, tuple, set, frozenset, deque])
    def test_homogeneous_array(self, factory: Callable[[list[int]], Any]) -> None:
        """Sequences and sets shape as arrays with the shape of their items."""
        assert {"t": "arr", "len": 3, "items": {"t": "int"}} == shape_of(factory([1, 2, 3]))

    def test_mixed_array_lists_distinct_item_types(self) -> None:
        """Items of different types give a ``mixed`` summary in first-seen order."""
        expected = {"t": "arr", "len": 5, "items": {"t": "mixed", "types": ["int", "str", "null", "obj"]}}
        assert expected == shape_of([1, "a", None, {}, 2])

    def test_mixed_sample_is_bounded(self) -> None:
        """Only ``max_items_sampled`` items decide the item shape."""
        value = [1] * 8 + ["late"]
        assert {"t": "arr", "len": 9, "items": {"t": "int"}} == shape_of(value)

    def test_ordered_and_proxy_mappings(self) -> None:
        """dict subclasses and read-only mapping proxies shape as objects."""
        expected = {"t": "obj", "n": 1, "keys": {"a": {"t": "int"}}}
        assert [expected, expected] == [shape_of(OrderedDict(a=1)), shape_of(MappingProxyType({"a": 1}))]

    def test_dataclass_fields(self) -> None:
        """A dataclass shapes as an object over its fields."""
        expected = {"t": "obj", "n": 2, "keys": {"x": {"t": "int"}, "label": {"t": "str", "len": 2}}}
        assert expected == shape_of(Point(x=1, label="hi"))

    def test_slotted_dataclass(self) -> None:
        """Slotted dataclasses are read through their slots."""
        assert {"t": "obj", "n": 1, "keys": {"token": {"t": "str", "len": 3}}} == shape_of(
            Slotted(token="abc")
        )

    def test_pydantic_model(self) -> None:
        """A pydantic model shapes as an object over its fields, without calling __repr__."""
        expected = {"t": "obj", "n": 2, "keys": {"name": {"t": "str", "len": 3}, "age": {"t": "int"}}}
        assert expected == shape_of(User(name="Ann", age=3))

    def test_depth_limit_truncates(self) -> None:
        """Containers past max_depth are summarised with their size."""
        shape = shape_of({"a": {"b": [1, 2]}}, limits=ShapeLimits(max_depth=2))
        assert {
            "t": "obj",
            "n": 1,
            "keys": {"a": {"t": "obj", "n": 1, "keys": {"b": {"t": "arr", "len": 2, "truncated": True}}}},
        } == shape

    def test_key_limit_truncates(self) -> None:
        """Only max_keys keys are examined; ``n`` still counts them all."""
        shape = shape_of({f"k{i}": i for i in range(5)}, limits=ShapeLimits(max_keys=2))
        assert {
            "t": "obj",
            "n": 5,
            "keys": {"k0": {"t": "int"}, "k1": {"t": "int"}},
            "truncated": True,
        } == shape

    def test_work_budget_truncates(self) -> None:
        """Past the work budget, containers become size-only summaries."""
        value = {f"k{i}": {"inner": [i]} for i in range(20)}
        shape = shape_of(value, limits=ShapeLimits(max_work=6))
        assert isinstance(shape, dict)
        assert shape["truncated"] is True
        assert len(orjson.dumps(shape)) < 400


class TestKeys:
    @pytest.mark.parametrize("key", ["user_id", "X-Request-Id", "a.b.c", "_private", "password", "api_key"])
    def test_identifier_keys_are_emitted(self, key: str) -> None:
        """Short identifier-like names are kept (a field called password is a name, not a password)."""
        assert emittable_key(key)

    @pytest.mark.parametrize(
        "key",
        [
            "canary.user@example.org",
            "has space",
            "9starts_with_digit",
            "session_a8f3k2m9x7",
            "deadbeefcafe",
            "sk_live_CANARY9a8b7c6d5e4f3a2b1c0d",
            "hunter2-CANARY-p4ss-7731",
            "canary-url-token-55",
            "QWxhZGRpbjpvcGVuc2VzYW1l",
            "Zoë",
            "x" * 65,
            "bad\ud800",
            "k_203.0.113.77",
            "k203.0.113.77",
            "id_5555555555554444",
        ],
    )
    def test_data_looking_keys_are_hidden(self, key: str) -> None:
        """Keys that are not names, or that look like tokens or personal data, are never emitted."""
        assert not emittable_key(key)
        assert {"t": "obj", "n": 1, "hidden_keys": 1} == shape_of({key: 1})

    def test_non_str_keys_are_hidden(self) -> None:
        """int, tuple and object keys are counted, never rendered."""
        assert {"t": "obj", "n": 3, "hidden_keys": 3} == shape_of({1: "a", (2, 3): "b", Explosive: "c"})

    def test_str_subclass_keys_are_hidden(self) -> None:
        """A str subclass key could override __eq__/__hash__; it is hidden."""

        class Key(str):
            pass

        assert {"t": "obj", "n": 1, "hidden_keys": 1} == shape_of({Key("name"): 1})

    def test_max_key_len(self) -> None:
        """Keys longer than max_key_len are hidden."""
        assert {"t": "obj", "n": 1, "hidden_keys": 1} == shape_of(
            {"abcdef": 1}, limits=ShapeLimits(max_key_len=5)
        )

    def test_canary_keys_at_every_depth(self, canaries: Canaries) -> None:
        """No canary value survives as a key, at any depth."""
        value: dict[str, Any] = {}
        for secret in canaries.values.values():
            value = {secret: value, "ok": 1}
        assert [] == canaries.leaks(
            orjson.dumps(shape_of(value, limits=ShapeLimits(max_depth=32, max_work=10_000)))
        )


class TestFailClosed:
    def test_unknown_type(self) -> None:
        """Anything without a shape is marked by its type name only."""
        assert "<unshapeable:complex>" == shape_of(1j)

    def test_exploding_object(self) -> None:
        """An object whose dunders all raise is marked, never called."""
        assert "<unshapeable:Explosive>" == shape_of(Explosive())

    def test_exploding_items(self) -> None:
        """Exploding elements inside containers are marked in place."""
        expected = {"t": "arr", "len": 1, "items": "<unshapeable:Explosive>"}
        assert expected == shape_of([Explosive()])

    def test_lying_dict_subclass(self) -> None:
        """A dict subclass with raising overrides is read through dict's own methods."""
        value = LyingDict(a=1)
        assert {"t": "obj", "n": 1, "keys": {"a": {"t": "int"}}} == shape_of(value)

    def test_broken_mapping(self) -> None:
        """A user Mapping whose __len__ raises fails closed."""
        assert "<unshapeable:BrokenMapping>" == shape_of(BrokenMapping())

    def test_dataclass_that_cannot_be_read(self) -> None:
        """A dataclass whose field cannot be read fails closed."""
        assert "<unshapeable:UnsetField>" == shape_of(UnsetField())

    def test_dataclass_getattribute_override_is_not_called(self) -> None:
        """Fields are read with object.__getattribute__: a raising override never runs."""
        shape = shape_of(GuardedField(1))
        assert {"t": "obj", "n": 1, "keys": {"value": {"t": "int"}}} == shape

    def test_generators_are_not_consumed(self) -> None:
        """Iterators are unshapeable: shaping never consumes them."""
        gen = (i for i in range(3))
        assert ("<unshapeable:generator>", [0, 1, 2]) == (shape_of(gen), list(gen))

    def test_type_name_is_sanitized(self) -> None:
        """A class name is data too: punctuation is dropped, length capped."""
        odd = type("evil <name> & co" + "x" * 100, (), {})
        assert f"<unshapeable:evilnameco{'x' * 54}>" == shape_of(odd())

    def test_token_looking_type_name_is_hidden(self, canaries: Canaries) -> None:
        """A class named like a secret is not named."""
        secret = type(canaries.values["api_key"], (), {})
        assert "<unshapeable:type>" == shape_of(secret())

    def test_released_memoryview(self) -> None:
        """A released memoryview fails closed."""
        view = memoryview(b"abc")
        view.release()
        assert "<unshapeable:memoryview>" == shape_of(view)

    def test_cycles(self) -> None:
        """Self-containing lists and dicts end in a cycle marker."""
        loop: list[Any] = []
        loop.append(loop)
        node: dict[str, Any] = {}
        node["self"] = node
        expected = [
            {"t": "arr", "len": 1, "items": "<cycle>"},
            {"t": "obj", "n": 1, "keys": {"self": "<cycle>"}},
        ]
        assert expected == [shape_of(loop), shape_of(node)]


class TestPathologicalInputs:
    def test_deeply_nested_lists(self) -> None:
        """10,000 nested lists shape quickly, truncated at max_depth."""
        value: list[Any] = []
        for _ in range(10_000):
            value = [value]
        shape = bounded(lambda: shape_of(value))
        assert orjson.dumps(shape).count(b'"truncated":true') == 1

    def test_deeply_nested_dicts(self) -> None:
        """10,000 nested dicts shape quickly, truncated at max_depth."""
        value: dict[str, Any] = {}
        for _ in range(10_000):
            value = {"child": value}
        shape = bounded(lambda: shape_of(value))
        assert orjson.dumps(shape).count(b'"truncated":true') == 1

    def test_million_key_dict_is_bounded_in_time_and_memory(self) -> None:
        """A 10^6-key dict: bounded time, and under 50 MiB allocated beyond the input."""
        value = {f"key_{i}": i for i in range(1_000_000)}
        tracemalloc.start()
        try:
            shape = bounded(lambda: shape_of(value))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 50 * 2**20
        assert isinstance(shape, dict)
        assert (1_000_000, True, 32) == (shape["n"], shape["truncated"], len(shape["keys"]))

    def test_ten_million_element_list(self) -> None:
        """A 10^7-element list is sampled, never walked."""
        value = [0] * 10_000_000
        assert {"t": "arr", "len": 10_000_000, "items": {"t": "int"}} == bounded(lambda: shape_of(value))

    def test_huge_set(self) -> None:
        """A large set is sampled in iteration order, never sorted."""
        value = set(range(1_000_000))
        assert {"t": "arr", "len": 1_000_000, "items": {"t": "int"}} == bounded(lambda: shape_of(value))

    def test_wide_and_deep(self) -> None:
        """A wide tree of wide dicts stays within the work budget."""
        value = {f"k{i}": {f"j{j}": [{"x": j}] * 100 for j in range(100)} for i in range(100)}
        shape = bounded(lambda: shape_of(value))
        assert len(orjson.dumps(shape)) < 64 * 1024

    def test_hostile_values_in_one_event(self) -> None:
        """Every hostile value at once: no exception, bounded time, JSON-serialisable."""
        loop: list[Any] = []
        loop.append(loop)
        value = {
            "cycle": loop,
            "bytes": b"\xff\xfe\xfd",
            "surrogate": "\udcff\ud800",
            "explosive": Explosive(),
            "huge_int": 1 << 1_000_000,
            "lying": LyingDict(a=1),
            "broken": BrokenMapping(),
            "unset": UnsetField(),
            "guarded": GuardedField(1),
        }
        assert orjson.dumps(bounded(lambda: shape_of(value)))
