"""shape_of's fast path for exact builtin JSON-like values: the general walk's shapes, still bounded."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import shapes
from processors.redact import FieldPolicy, ShapeRecorder
from processors.secret_scanner import SecretScanner
from processors.shapes import DEFAULT_LIMITS, ShapeLimits, shape_of
from tests.conftest import Canaries

TIME_BOUND = 1.0  # seconds: a safety bound for pathological inputs, not a benchmark
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def general(value: object, limits: ShapeLimits = DEFAULT_LIMITS) -> shapes.Shape:
    """The general walk alone, as ``shape_of`` was before the fast path."""
    return shapes._general(value, limits)


def json_like(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Trees of exact builtins: what the fast path answers for (and, nested in them, what it gives up on)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=6),
        st.binary(max_size=4),
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=5),
            st.lists(children, max_size=5).map(tuple),
            st.dictionaries(keys, children, max_size=5),
            st.sets(st.one_of(st.integers(), st.text(max_size=3)), max_size=4),
            st.frozensets(st.integers(), max_size=3),
        )

    return st.recursive(leaves, extend, max_leaves=30)


KEYS = st.one_of(
    st.sampled_from(["name", "id", "content-type", "user.id", "x" * 70, "a1b2c3d4e5f6", ""]),
    st.text(max_size=5),
    st.integers(),
    st.none(),
)
LIMITS = st.builds(
    ShapeLimits,
    max_depth=st.integers(1, 5),
    max_keys=st.integers(1, 4),
    max_items_sampled=st.integers(1, 3),
    max_work=st.integers(1, 24),
    max_key_len=st.sampled_from([3, 8, 64, 100]),
)


class TestSameShapes:
    @SETTINGS
    @given(value=json_like(KEYS))
    def test_default_limits(self, value: Any) -> None:
        """With the default limits, the fast path's shape is the general walk's."""
        assert general(value) == shape_of(value)

    @SETTINGS
    @given(value=json_like(KEYS), limits=LIMITS)
    def test_tight_limits(self, value: Any, limits: ShapeLimits) -> None:
        """With limits that truncate by depth, width and work, the shapes are still the general walk's."""
        assert general(value, limits) == shape_of(value, limits=limits)

    @SETTINGS
    @given(data=st.data())
    def test_canary_keys_and_values(self, canaries: Canaries, data: st.DataObject) -> None:
        """Canaries as keys and values: the same shapes, and none of them in the output."""
        secrets = sorted(canaries.values.values())
        keys = st.one_of(st.sampled_from(secrets), st.sampled_from(["name", "note"]))
        value = data.draw(json_like(keys), label="value")
        limits = data.draw(st.one_of(st.just(DEFAULT_LIMITS), LIMITS), label="limits")
        shape = shape_of(value, limits=limits)
        assert general(value, limits) == shape
        assert [] == canaries.leaks(orjson.dumps(shape))

    def test_shared_references(self) -> None:
        """A container met twice (not inside itself) is shaped twice, as by the general walk."""
        inner = {"a": 1, "b": ["x"]}
        value = {"x": inner, "y": inner, "z": [inner, inner]}
        assert general(value) == shape_of(value)

    def test_recorder_with_custom_limits(self) -> None:
        """ShapeRecorder's bound shaper gives shape_of's shapes for its limits."""
        limits = ShapeLimits(max_depth=2, max_keys=2)
        value = {"a": {"b": {"c": 1}}, "d": [1, "x"], "e": 3}
        recorder = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits)
        assert shape_of(value, limits=limits) == recorder(None, "info", {"event": "e", "arg": value})["arg"]

    def test_fresh_dicts(self) -> None:
        """Every call returns new dicts at every level: callers may mutate them."""
        value = {"a": 1, "b": {"c": None, "d": 1.5}, "e": [True]}
        first, second = shape_of(value), shape_of(value)
        assert isinstance(first, dict) and isinstance(second, dict)
        assert first == second
        assert first is not second
        assert first["keys"]["a"] is not second["keys"]["a"]
        assert first["keys"]["b"]["keys"]["c"] is not second["keys"]["b"]["keys"]["c"]
        assert first["keys"]["e"]["items"] is not second["keys"]["e"]["items"]


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every value the fast path hands to the general walk."""
    handed: list[object] = []

    def record(value: object, limits: ShapeLimits) -> shapes.Shape:
        handed.append(value)
        return "<general>"

    monkeypatch.setattr(shapes, "_general", record)
    return handed


class TestFastPathAnswers:
    def test_event_like_value(self, fast_only: list[object]) -> None:
        """A realistic nested event is answered by the fast path alone."""
        value = {
            "request": {"headers": {"accept": "*/*"}, "params": {"page": 1, "sort": "desc"}},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "A-2", "qty": 1}],
            "meta": ("x", 1, 2.5, None, True, b"raw"),
            "tags": {"a", "b"},
        }
        shape = shapes._fast_shaper(DEFAULT_LIMITS)(value)
        assert [] == fast_only
        assert isinstance(shape, dict) and "obj" == shape["t"]

    @pytest.mark.parametrize(
        "value",
        [
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}},  # deeper than max_depth
            {f"k{i}": {f"k{j}": j for j in range(32)} for i in range(32)},  # truncated by work
            {"obj": object()},
            {"sub": type("Sub", (dict,), {})(a=1)},
            [b"x", bytearray(b"y")],
        ],
        ids=["depth", "work", "object", "dict-subclass", "mixed-unknown"],
    )
    def test_gives_up_at_bounds_and_other_types(self, fast_only: list[object], value: Any) -> None:
        """Past a bound, or at a type it does not know, the fast path hands the whole value over."""
        expected = [value] if not isinstance(value, list) else []
        shapes._fast_shaper(DEFAULT_LIMITS)(value)
        assert expected == fast_only

    def test_cycle_handed_over(self, fast_only: list[object]) -> None:
        """A container inside itself reaches the depth bound, so the general walk decides."""
        value: dict[str, Any] = {"a": 1}
        value["self"] = value
        shapes._fast_shaper(DEFAULT_LIMITS)(value)
        assert [value] == fast_only


class TestStillFailsClosed:
    def test_cycles(self) -> None:
        """Cycles through dicts, lists and tuples are still ``<cycle>``."""
        d: dict[str, Any] = {"a": 1}
        d["self"] = d
        lst: list[Any] = []
        lst.append(lst)
        t: tuple[list[Any]] = ([],)
        t[0].append(t)
        assert {"t": "obj", "n": 2, "keys": {"a": {"t": "int"}, "self": "<cycle>"}} == shape_of(d)
        assert {"t": "arr", "len": 1, "items": "<cycle>"} == shape_of(lst)
        assert general(t) == shape_of(t)

    def test_unknown_type_inside(self) -> None:
        """An object deep in a JSON-like tree is ``<unshapeable:T>``; its dunders never run."""

        class Explosive:
            def __repr__(self) -> str:
                raise AssertionError("repr")

            def __eq__(self, other: object) -> bool:
                raise AssertionError("eq")

            def __hash__(self) -> int:
                raise AssertionError("hash")

        value = {"a": [{"b": Explosive()}]}
        expected = {
            "t": "obj",
            "n": 1,
            "keys": {
                "a": {
                    "t": "arr",
                    "len": 1,
                    "items": {"t": "obj", "n": 1, "keys": {"b": "<unshapeable:Explosive>"}},
                }
            },
        }
        assert expected == shape_of(value)

    def test_key_objects_never_hashed(self) -> None:
        """A non-str key is hidden without its ``__hash__``/``__eq__`` running again."""

        class Key:
            calls = 0

            def __hash__(self) -> int:
                Key.calls += 1
                return 1

        value = {Key(): 1, "name": "x"}
        Key.calls = 0
        shape = shape_of(value)
        assert (0, 1) == (Key.calls, shape["hidden_keys"] if isinstance(shape, dict) else None)

    def test_deep_lists(self) -> None:
        """Exact lists nested 10_000 deep: truncated, quickly."""
        value: list[Any] = []
        for _ in range(10_000):
            value = [value]
        t0 = time.perf_counter()
        shape = shape_of(value)
        assert time.perf_counter() - t0 < TIME_BOUND
        assert general(value) == shape

    def test_wide_dict(self) -> None:
        """A dict of 10^6 keys: only ``max_keys`` are read."""
        value = {f"k{i}": i for i in range(10**6)}
        t0 = time.perf_counter()
        shape = shape_of(value)
        assert time.perf_counter() - t0 < TIME_BOUND
        assert isinstance(shape, dict) and (10**6, True, 32) == (
            shape["n"],
            shape["truncated"],
            len(shape["keys"]),
        )

    def test_wide_and_deep(self) -> None:
        """Wide containers at every level stay within the work budget."""
        value: Any = 1
        for _ in range(6):
            value = {f"k{i}": value for i in range(32)}
        t0 = time.perf_counter()
        shape = shape_of(value)
        assert time.perf_counter() - t0 < TIME_BOUND
        assert general(value) == shape

    def test_never_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unexpected error inside the fast path falls back to the general walk, which fails closed."""

        real = shapes.emittable_key

        def boom(key: object, max_len: int = 64) -> bool:
            if key == "new_key_never_seen":
                raise RuntimeError("boom")
            return real(key, max_len)

        monkeypatch.setattr(shapes, "_ACCEPTED_KEYS", {})
        monkeypatch.setattr(shapes, "emittable_key", boom)
        fast = shapes._fast_shaper(DEFAULT_LIMITS)
        assert "<unshapeable:dict>" == fast({"new_key_never_seen": 1})
