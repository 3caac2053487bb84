"""The compiled fast path (processors/_cshape.c) answers exactly what the Python fast path answers.

The test suite needs the extension built (``pip install -e .`` compiles it when a C compiler is present;
CI sets ``AUDITLOG_BUILD_EXT=require``), so a build that silently fell back to Python fails here.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import shapes
from processors._fastshape import fast_shaper
from processors.redact import RESERVED_KEYS, FieldPolicy, ShapeRecorder
from processors.secret_scanner import SecretScanner
from processors.shapes import DEFAULT_LIMITS, ShapeLimits, shape_of
from tests.processors.test_shapes_fastpath import KEYS, LIMITS, json_like

try:
    from processors import _cshape
except ImportError:  # collected all the same: every test here then fails, saying why
    _cshape = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _built() -> None:
    """The extension must be built: a missing one fails each test here (never skips it)."""
    if _cshape is None:
        pytest.fail(
            "processors._cshape is not built: `pip install -e .` compiles it when gcc and the Python "
            "headers are present (AUDITLOG_BUILD_EXT=require makes a failed build an error)"
        )


SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def python_fast(limits: ShapeLimits, general: Any = None) -> Any:
    return fast_shaper(
        limits,
        general=general or shapes._general,
        emittable=shapes.emittable_key,
        tag=shapes._tag,
        scalars=shapes._SCALARS,
        accepted=shapes._ACCEPTED_KEYS,
        cached_key_len=shapes._CACHED_KEY_LEN,
    )


def compiled(limits: ShapeLimits, general: Any = None, emittable: Any = None, fragment: Any = None) -> Any:
    return _cshape.Shaper(
        limits=limits,
        max_depth=limits.max_depth,
        max_keys=limits.max_keys,
        max_items=limits.max_items_sampled,
        max_key_len=limits.max_key_len,
        max_work=limits.max_work,
        check_len=0 if limits.max_key_len >= shapes._CACHED_KEY_LEN else limits.max_key_len,
        general=general or shapes._general,
        emittable=emittable or shapes.emittable_key,
        tag=shapes._tag,
        scalars=shapes._SCALARS,
        accepted=shapes._ACCEPTED_KEYS,
        fragment=fragment,
    )


def handed_over() -> tuple[list[object], Any]:
    handed: list[object] = []

    def general(value: object, limits: ShapeLimits) -> str:
        handed.append(value)
        return "<general>"

    return handed, general


class TestSameAsPython:
    def test_in_use(self) -> None:
        """shape_of runs the compiled shaper (unless AUDITLOG_PURE_PYTHON is set)."""
        assert isinstance(shapes._DEFAULT_SHAPER, _cshape.Shaper)

    @SETTINGS
    @given(value=json_like(KEYS), limits=st.one_of(st.just(DEFAULT_LIMITS), LIMITS))
    def test_same_shapes(self, value: Any, limits: ShapeLimits) -> None:
        """Same shapes, and the same values handed to the general walk, for any limits."""
        py_handed, py_general = handed_over()
        c_handed, c_general = handed_over()
        assert python_fast(limits, py_general)(value) == compiled(limits, c_general)(value)
        assert len(py_handed) == len(c_handed)
        assert all(a is b for a, b in zip(py_handed, c_handed, strict=True))

    @SETTINGS
    @given(value=json_like(KEYS), limits=st.one_of(st.just(DEFAULT_LIMITS), LIMITS))
    def test_same_as_general_walk(self, value: Any, limits: ShapeLimits) -> None:
        """And the end result is the general walk's."""
        assert shapes._general(value, limits) == compiled(limits)(value)

    def test_key_order_and_layout(self) -> None:
        value = {"b": [1, "x"], "a": {"z": None, "y": 1.5}, "c": ("s",), "d": set(), "e": b"ab"}
        shape = compiled(DEFAULT_LIMITS)(value)
        assert shape == python_fast(DEFAULT_LIMITS)(value)
        assert ["t", "n", "keys"] == list(shape)
        assert ["b", "a", "c", "d", "e"] == list(shape["keys"])
        assert ["t", "len", "items"] == list(shape["keys"]["b"])
        assert {"t": "mixed", "types": ["int", "str"]} == shape["keys"]["b"]["items"]


class TestGivesUp:
    @pytest.mark.parametrize(
        "value",
        [
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}},
            {f"k{i}": {f"k{j}": j for j in range(32)} for i in range(32)},
            {"obj": object()},
            {"sub": type("Sub", (dict,), {})(a=1)},
            type("L", (list,), {})([1]),
        ],
        ids=["depth", "work", "object", "dict-subclass", "list-subclass"],
    )
    def test_hands_whole_value_over(self, value: Any) -> None:
        handed, general = handed_over()
        assert "<general>" == compiled(DEFAULT_LIMITS, general)(value)
        assert [value] == handed

    def test_cycle(self) -> None:
        value: dict[str, Any] = {"a": 1}
        value["self"] = value
        assert shape_of(value) == {"t": "obj", "n": 2, "keys": {"a": {"t": "int"}, "self": "<cycle>"}}

    def test_deep_nesting_with_huge_limits(self) -> None:
        """Depth far past the recursion limit: RecursionError inside, the general walk fails closed."""
        limits = ShapeLimits(max_depth=10**6, max_work=10**7)
        value: Any = 1
        for _ in range(20_000):
            value = [value]
        shape = compiled(limits)(value)
        assert shape == shapes._general(value, limits)

    def test_dict_changed_by_callback(self) -> None:
        """A dict resized while the shaper is in a callback is handed over, never read stale."""
        value: dict[Any, Any] = {"zz-unlisted-1": 1, "b": 2}
        handed, general = handed_over()

        def emittable(key: object, max_len: int) -> bool:
            value[len(value)] = "new"  # stands for another thread writing to the dict
            return True

        assert "<general>" == compiled(DEFAULT_LIMITS, general, emittable)(value)
        assert [value] == handed

    def test_set_changed_by_other_thread_is_safe(self) -> None:
        """Shaping a set that another thread resizes never crashes: a shape or the fail-closed marker."""
        value = set(range(50))
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                value.add(1000 + i % 100)
                value.discard(1000 + (i + 50) % 100)
                i += 1

        t = threading.Thread(target=churn)
        t.start()
        try:
            for _ in range(2000):
                out = shape_of({"s": value})
                assert isinstance(out, dict)
        finally:
            stop.set()
            t.join()


class TestHygiene:
    def test_no_reference_leaks(self) -> None:
        """Repeated calls, including hand-overs and errors, do not grow memory."""
        value = {
            "request": {"headers": {"accept": "*/*"}, "params": {"page": 1}},
            "items": [{"sku": "A", "qty": 1}] * 3,
            "mixed": [1, "a", None],
            "tags": frozenset({"a"}),
            "raw": b"xyz",
            "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}},
            "obj": object(),
            "token-9f8a7b6c5d4e3f2a1b0c": 1,
        }
        shaper = compiled(DEFAULT_LIMITS)
        for _ in range(200):
            shaper(value)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5000):
                shaper(value)
                shaper([value, value])
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 64 * 1024

    def test_bad_arguments(self) -> None:
        with pytest.raises(TypeError):
            compiled(DEFAULT_LIMITS)()
        with pytest.raises(TypeError):
            compiled(DEFAULT_LIMITS)(1, 2)
        with pytest.raises(ValueError):
            _cshape.Shaper(
                limits=DEFAULT_LIMITS, max_depth=0, max_keys=1, max_items=1, max_key_len=1, max_work=1,
                check_len=0, general=shapes._general, emittable=shapes.emittable_key, tag=shapes._tag,
                scalars={}, accepted={},
            )  # fmt: skip

    def test_pure_python_switch(self) -> None:
        """AUDITLOG_PURE_PYTHON=1 runs the Python fast path, with the same shapes."""
        code = (
            "from processors import shapes; import orjson;"
            "value = {'a': [1, 'x'], 'b': {'c': b'y'}};"
            "print(shapes._cshape is None, orjson.dumps(shapes.shape_of(value)).decode())"
        )
        env = {**os.environ, "AUDITLOG_PURE_PYTHON": "1"}
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        flag, shape = out.stdout.split(" ", 1)
        assert "True" == flag
        import orjson

        assert orjson.loads(shape) == shape_of({"a": [1, "x"], "b": {"c": b"y"}})


RESERVED_VALUES = st.one_of(
    st.sampled_from(["info", "app.orders", "x" * 80, "4111 1111 1111 1111", "2026-11-22T07:00:00.000001Z"]),
    st.sampled_from(
        ["2026-11-22T07:00:00.00000Z1", "\u0662026-11-22T07:00:00.000001Z", "2026-11-22 07:00:00Z"]
    ),
    st.integers(),
    st.none(),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)


# an event: fields of any JSON-like values, reserved keys of valid and invalid forms, and the limits
EVENT_PARTS = {
    "fields": st.dictionaries(KEYS, json_like(KEYS), max_size=6),
    "reserved": st.dictionaries(st.sampled_from(sorted(RESERVED_KEYS)), RESERVED_VALUES, max_size=5),
    "limits": st.one_of(st.just(DEFAULT_LIMITS), LIMITS),
}


class TestRecorderSameAsPython:
    @SETTINGS
    @given(**EVENT_PARTS)
    def test_same_event(self, fields: dict[Any, Any], reserved: dict[str, Any], limits: ShapeLimits) -> None:
        """ShapeRecorder's one compiled call gives the Python loop's event, reserved keys included."""
        event = {**fields, **reserved}
        fast = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits)
        slow = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits)
        slow._fields = None
        assert fast._fields is not None
        assert slow(None, "info", dict(event)) == fast(None, "info", dict(event))

    @pytest.mark.parametrize(
        ("stamp", "kept"),
        [
            ("2026-11-22T07:00:00.000001Z", True),
            ("2026-11-22T07:00:00Z", True),  # not the pipeline's format: vetted in Python, still a timestamp
            ("\u0662026-11-22T07:00:00.000001Z", False),  # a non-ASCII digit
            ("2026-11-22T07:00:00.00000Z1", False),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", False),
        ],
    )
    def test_timestamps(self, stamp: str, kept: bool) -> None:
        fast = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner())
        slow = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner())
        slow._fields = None
        out = fast(None, "info", {"event": "e", "timestamp": stamp})
        assert slow(None, "info", {"event": "e", "timestamp": stamp}) == out
        assert (stamp == out["timestamp"]) is kept


def rendering(limits: ShapeLimits, emittable: Any = None) -> tuple[Any, Any]:
    """A rendering shaper and the plain one, for the same limits."""
    import orjson

    plain = compiled(limits, emittable=emittable)
    return compiled(limits, emittable=emittable, fragment=orjson.Fragment), plain


class TestRender:
    """render_fields writes the JSON text orjson writes for the dicts fields() builds."""

    @SETTINGS
    @given(**EVENT_PARTS)
    def test_same_json_as_the_dicts(
        self, fields: dict[Any, Any], reserved: dict[str, Any], limits: ShapeLimits
    ) -> None:
        """Byte for byte the dicts' JSON; the Python loop's event (its key order may differ)."""
        import orjson

        event = {**fields, **reserved}
        rendered = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits, render=True)
        dicts = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits)
        slow = ShapeRecorder(policy=FieldPolicy(), scanner=SecretScanner(), limits=limits)
        slow._fields = None
        assert rendered._fields is not None and rendered._fields.__name__ == "render_fields"
        expected = orjson.dumps(dicts(None, "info", dict(event)))
        assert expected == orjson.dumps(rendered(None, "info", dict(event)))
        assert slow(None, "info", dict(event)) == orjson.loads(expected)

    @SETTINGS
    @given(value=json_like(KEYS), limits=st.one_of(st.just(DEFAULT_LIMITS), LIMITS))
    def test_rendered_shape_is_shape_of_as_json(self, value: Any, limits: ShapeLimits) -> None:
        """processors.rendered_shape serializes to shape_of's JSON, byte for byte, for any value."""
        import orjson

        from processors import rendered_shape

        expected = orjson.dumps(shape_of(value, limits=limits))
        assert expected == orjson.dumps(rendered_shape(value, limits=limits))

    @pytest.mark.parametrize(
        "key", ['quo"te', "back\\slash", "tab\there", "nl\n", "\x01ctl\x1f", "é-ü", "\u2028", "😀", ""]
    )
    def test_key_escaping(self, key: str) -> None:
        """Any key the emittable check lets through is written as orjson writes it."""
        import orjson

        render, shaper = rendering(DEFAULT_LIMITS, emittable=lambda k, n: isinstance(k, str))
        event = {"f": {key: [{key: 1}, {key: "x"}], "n": {key: None}}}
        out, _, _ = render.render_fields(event, frozenset(), frozenset())
        assert "Fragment" == type(out["f"]).__name__
        assert orjson.dumps(shaper(event["f"])) == orjson.dumps(out["f"])

    def test_lone_surrogate_key_falls_back_to_the_dict(self) -> None:
        """A key that is not valid UTF-8 text is shaped by the dict path (which the caller's check sees)."""
        render, shaper = rendering(DEFAULT_LIMITS, emittable=lambda k, n: isinstance(k, str))
        out, _, _ = render.render_fields({"f": {"\ud800": 1}}, frozenset(), frozenset())
        assert shaper({"\ud800": 1}) == out["f"]

    def test_scalar_shapes_are_shared(self) -> None:
        """Scalar fields share one Fragment per shape; long strings get their own."""
        render, _ = rendering(DEFAULT_LIMITS)
        event = {"a": 1, "b": 2, "c": "xy", "d": "zw", "e": "q" * 300, "f": "r" * 300}
        out, _, _ = render.render_fields(event, frozenset(), frozenset())
        assert (True, True, False) == (out["a"] is out["b"], out["c"] is out["d"], out["e"] is out["f"])

    def test_gives_up_like_the_dicts(self) -> None:
        """Sets, bytes, subclasses and bounds: the field's shape is the dict path's dict."""
        render, shaper = rendering(ShapeLimits(max_depth=2))
        sub = type("L", (list,), {})()
        event = {"s": {1, 2}, "b": {"raw": b"x"}, "deep": {"a": {"b": {"c": 1}}}, "sub": [sub]}
        out, _, _ = render.render_fields(event, frozenset(), frozenset())
        assert {k: shaper(v) for k, v in event.items()} == out

    def test_needs_a_fragment_type(self) -> None:
        with pytest.raises(TypeError):
            compiled(DEFAULT_LIMITS).render_fields({"a": {}}, frozenset(), frozenset())
        with pytest.raises(TypeError):
            _cshape.Shaper(limits=DEFAULT_LIMITS)  # the other arguments are required

    def test_no_reference_leaks(self) -> None:
        render, _ = rendering(DEFAULT_LIMITS)
        event = {
            "request": {"headers": {"accept": "*/*"}, "params": {"page": 1}},
            "items": [{"sku": "A", "qty": 1}] * 3,
            "mixed": [1, "a", None],
            "raw": b"xyz",
            "n": 1,
            "s": "x" * 300,
            "token-9f8a7b6c5d4e3f2a1b0c": 1,
        }
        for _ in range(200):
            render.render_fields(event, frozenset(), frozenset())
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5000):
                render.render_fields(event, frozenset(), frozenset())
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 64 * 1024


class TestTimestamp:
    def test_format_and_clock(self) -> None:
        """utc_timestamp is the pipeline's format, from the wall clock, and agrees with the Python one."""
        import re
        import time

        from auditlog.handle import now_iso as _now_iso
        from auditlog.handle import py_now_iso as _py_now_iso

        assert _cshape.utc_timestamp is _now_iso
        before = time.time()
        stamp = _cshape.utc_timestamp()
        after = time.time()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
        parsed = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert int(before) <= parsed + float("0." + stamp[20:26]) <= after + 1e-6
        assert _py_now_iso()[:17] == stamp[:17]
