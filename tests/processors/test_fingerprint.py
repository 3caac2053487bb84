"""Fingerprinter: keyed, stable, identical on the logging and the query path; never the value itself."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from typing import Any

import pytest

from processors.fingerprint import Fingerprinter

KEY = b"k" * 32
FP = re.compile(r"k1:[0-9a-f]{32}")


def make(**kwargs: Any) -> Fingerprinter:
    options: dict[str, Any] = {"key": KEY, "key_id": "k1", "fields": ["user_id", "email"]}
    options.update(kwargs)
    return Fingerprinter(**options)


class Color(enum.IntEnum):
    RED = 1


class TestFingerprint:
    def test_format_has_key_id_prefix(self) -> None:
        """A fingerprint is ``key_id:`` and 32 hex chars."""
        assert FP.fullmatch(make().fingerprint("alice"))

    @pytest.mark.parametrize("key", [b"k" * 16, b"k" * 64, b"k" * 100])
    def test_is_hmac_sha256(self, key: bytes) -> None:
        """The digest is HMAC-SHA256 of the canonical bytes (short, block-sized and long keys)."""
        expected = hmac.new(key, "tøken".encode(), hashlib.sha256).hexdigest()[:32]
        assert f"k1:{expected}" == make(key=key).fingerprint("tøken")

    def test_stable(self) -> None:
        """The same value and key give the same fingerprint, across instances."""
        assert make().fingerprint("alice") == make().fingerprint("alice")

    def test_keyed(self) -> None:
        """Another key gives another fingerprint for the same value."""
        other = make(key=b"x" * 32)
        assert make().fingerprint("alice").split(":")[1] != other.fingerprint("alice").split(":")[1]

    def test_key_id_names_the_key(self) -> None:
        """The key id prefixes the fingerprint and does not change the digest."""
        assert ("k2", make().fingerprint("a")[3:]) == tuple(make(key_id="k2").fingerprint("a").split(":"))

    def test_types_are_tagged(self) -> None:
        """42, "42", 42.0, True and None all differ."""
        fp = make()
        assert 5 == len({fp.fingerprint(v) for v in (42, "42", 42.0, True, None)})

    def test_str_and_utf8_bytes_agree(self) -> None:
        """A str and its UTF-8 bytes are the same token."""
        assert make().fingerprint("tøken") == make().fingerprint("tøken".encode())

    def test_surrogates(self) -> None:
        """Lone surrogates are hashed (kept distinct), never an error."""
        fp = make()
        assert FP.fullmatch(fp.fingerprint("\ud800")) and fp.fingerprint("\ud800") != fp.fingerprint("\ud801")

    def test_huge_int(self) -> None:
        """Ints are hashed via hex: no decimal-conversion limit."""
        assert FP.fullmatch(make().fingerprint(1 << 100_000))

    def test_subclasses_by_base(self) -> None:
        """An IntEnum member is the int it stands for."""
        assert make().fingerprint(1) == make().fingerprint(Color.RED)

    @pytest.mark.parametrize("value", [[1], {"a": 1}, ("t",), {1}, object()])
    def test_containers_are_not_fingerprinted(self, value: object) -> None:
        """Containers and arbitrary objects give a marker naming their type."""
        assert f"<unfingerprintable:{type(value).__name__}>" == make().fingerprint(value)

    def test_normalize_applies_to_both_paths(self) -> None:
        """With normalize=str.lower the processor and the query side agree case-insensitively."""
        fp = make(normalize=str.lower)
        event = fp(None, "info", {"email": "Alice@Example.org"})
        assert event["fp"]["email"] == fp.fingerprint("alice@example.org")

    def test_nothing_is_normalized_silently(self) -> None:
        """Without normalize, case and whitespace matter."""
        fp = make()
        assert 3 == len({fp.fingerprint(v) for v in ("alice", "Alice", " alice")})

    def test_failing_normalize_fails_closed(self) -> None:
        """A normalize that raises makes the value unfingerprintable, not an error."""

        def broken(text: str) -> str:
            raise RuntimeError("no")

        assert "<unfingerprintable:str>" == make(normalize=broken).fingerprint("x")


class TestProcessor:
    def test_field_moves_to_fp(self) -> None:
        """A configured field leaves the event; its fingerprint appears under fp."""
        fp = make()
        event = fp(None, "info", {"event": "login", "user_id": "alice", "other": 1})
        assert {"event": "login", "other": 1, "fp": {"user_id": fp.fingerprint("alice")}} == event

    def test_absent_fields_add_nothing(self) -> None:
        """No configured field, no fp key."""
        assert {"event": "x"} == make()(None, "info", {"event": "x"})

    def test_existing_fp_is_extended_not_mutated(self) -> None:
        """An fp dict from an earlier processor is copied and extended."""
        earlier = {"session": "k0:" + "0" * 32}
        event = make()(None, "info", {"fp": earlier, "email": "a@b.org"})
        assert (["email", "session"], ["session"]) == (sorted(event["fp"]), sorted(earlier))

    def test_foreign_fp_value_is_replaced(self) -> None:
        """A caller's non-dict fp is dropped, never passed on."""
        event = make()(None, "info", {"fp": "hunter2", "user_id": 1})
        assert ["user_id"] == list(event["fp"])

    def test_no_fields_is_a_no_op(self) -> None:
        """An empty field list (the query side's instance) leaves events alone."""
        assert {"user_id": 1} == Fingerprinter(key=KEY, key_id="k1", fields=())(None, "info", {"user_id": 1})


class TestConfiguration:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"key": b"short"},
            {"key": "str-key-of-enough-length"},
            {"key_id": "has space"},
            {"key_id": ""},
            {"fields": [1]},
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any]) -> None:
        """Short or non-bytes keys, malformed key ids and non-str fields are rejected."""
        with pytest.raises(ValueError):
            make(**kwargs)
