"""Correlation-id validation, envelope encryption and metadata, with property-based tests."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.bodies import (
    MAX_ID_LENGTH,
    BodyIntegrityError,
    BodyMeta,
    InvalidCorrelationId,
    LocalBodyStore,
    LocalKeyWrapper,
    MemoryBodyStore,
    Principal,
    from_url,
    validate_correlation_id,
)
from store.bodies._crypto import Envelope, open_envelope, rewrap, seal
from tests.store.bodies_fixtures import NEEDLES, AuditRecorder, new_ring

SAFE = string.ascii_letters + string.digits + "._-"
ONCALL = Principal(name="oncall", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

valid_ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(alphabet=SAFE, max_size=MAX_ID_LENGTH - 1),
).filter(lambda s: ".." not in s)
labels = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=40).filter(
    lambda s: s[0].isalnum()
)
metas = st.builds(
    BodyMeta,
    tenant=st.none() | labels,
    subject=st.none() | st.text(min_size=1, max_size=60),
    retention=st.floats(min_value=60, max_value=1e9, allow_nan=False),
    content_type=st.none() | st.sampled_from(["application/json", "text/plain; charset=utf-8"]),
    rule=st.none() | labels,
    original_size=st.none() | st.integers(min_value=0, max_value=2**40),
)
bodies = st.binary(max_size=4096) | st.sampled_from([n.encode() for n in NEEDLES])


class TestCorrelationIds:
    @pytest.mark.parametrize(
        "bad",
        [
            "",
            ".",
            "..",
            "../x",
            "a/../../b",
            "a/b",
            "a\\b",
            "/abs",
            "x\x00y",
            "x\n",
            "a" * (MAX_ID_LENGTH + 1),
            "\uff0e\uff0e\uff0fetc",  # full-width ../
            "a\u2215b",  # division slash
            "abc\u202e",  # right-to-left override
            "caf\u00e9",
            "%2e%2e%2f",
            "-leading-dash",
            " space",
            "C:evil",
        ],
    )
    def test_path_tricks_are_refused(self, bad: str) -> None:
        """Separators, traversal, NUL, overlong ids and non-ASCII look-alikes are refused."""
        with pytest.raises(InvalidCorrelationId) as info:
            validate_correlation_id(bad)
        assert len(bad) < 4 or bad not in str(info.value)

    def test_non_strings_are_refused(self) -> None:
        """bytes and None are not ids."""
        for bad in (b"abc", None, 42):
            with pytest.raises(InvalidCorrelationId):
                validate_correlation_id(bad)

    @pytest.mark.parametrize(
        "ok",
        ["4bf92f3577b34da6a3ce929d0e0e4736", "0af76519-16cd-43dd-8448-eb211c80319c", "01J9ZK.req_1", "a"],
    )
    def test_common_id_shapes_are_accepted(self, ok: str) -> None:
        """Trace ids, UUIDs, ULID-like ids pass unchanged."""
        assert ok == validate_correlation_id(ok)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=MAX_ID_LENGTH + 10))
    def test_anything_accepted_stays_inside_the_store(self, text: str) -> None:
        """Whatever is accepted is a single safe path component under any root."""
        try:
            cid = validate_correlation_id(text)
        except InvalidCorrelationId:
            return
        root = Path("/srv/bodies/keys")
        assert root == (root / f"{cid}.json").resolve().parent
        assert set(cid) <= set(SAFE) and len(cid) <= MAX_ID_LENGTH

    @settings(max_examples=100, deadline=None)
    @given(valid_ids)
    def test_generated_valid_ids_are_accepted(self, cid: str) -> None:
        """Every id of the documented form passes."""
        assert cid == validate_correlation_id(cid)


class TestEnvelope:
    @PROPS
    @given(cid=valid_ids, body=bodies, meta=metas)
    def test_round_trip_and_no_plaintext_in_stored_bytes(self, cid: str, body: bytes, meta: BodyMeta) -> None:
        """seal -> bytes -> open returns the body; the stored bytes never contain it (nor the subject)."""
        store = MemoryBodyStore(keys=new_ring(), audit=AuditRecorder(), max_body_bytes=8192)
        store.put(cid, body, meta=meta)
        assert body == store.get(cid, reader=ONCALL, purpose="P-1")
        headers, blobs = store.backend.raw()  # type: ignore[attr-defined]
        stored = b"".join([*headers.values(), *blobs.values()])
        for public in (cid, meta.tenant, meta.rule, meta.content_type):  # stored in clear, by design
            stored = stored.replace(public.encode(), b"") if public else stored
        if len(body) >= 16:
            assert body not in stored
        if meta.subject is not None and len(meta.subject) >= 16:
            assert meta.subject.encode() not in stored
        info = store.head(cid)
        assert (meta.tenant, max(len(body), meta.original_size or 0)) == (info.tenant, info.size)

    @PROPS
    @given(body=st.binary(min_size=1, max_size=512), data=st.data())
    def test_any_flipped_byte_is_detected(self, body: bytes, data: st.DataObject) -> None:
        """Flip any byte of a spooled envelope: it fails to parse or to decrypt, never yields other data."""
        ring = new_ring()
        wrappers = {"local-aesgcm": LocalKeyWrapper(ring)}
        env = seal("req-1", body, meta={"tenant": "acme", "expires": 1.0}, wrapper=wrappers["local-aesgcm"])
        raw = bytearray(env.to_bytes())
        i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[i] ^= data.draw(st.integers(min_value=1, max_value=255))
        try:
            opened = open_envelope(Envelope.from_bytes(bytes(raw), correlation_id="req-1"), wrappers=wrappers)
        except BodyIntegrityError:
            return
        assert body == opened  # a flip in JSON whitespace-equivalent spots may still parse identically

    def test_truncated_spool_envelope_is_an_integrity_error(self) -> None:
        """A short file is reported, not crashed on."""
        ring = new_ring()
        env = seal("req-1", b"body", meta={}, wrapper=LocalKeyWrapper(ring))
        for cut in (0, 5, 12, len(env.to_bytes()) - 1):
            with pytest.raises(BodyIntegrityError):
                open_envelope(
                    Envelope.from_bytes(env.to_bytes()[:cut], correlation_id="req-1"),
                    wrappers={"local-aesgcm": LocalKeyWrapper(ring)},
                )

    def test_rewrap_keeps_the_ciphertext(self) -> None:
        """Re-wrapping under another wrapper changes only the wrapped key."""
        old, new = LocalKeyWrapper(new_ring()), _OtherWrapper(new_ring())
        env = seal("req-1", b"body", meta={"a": 1}, wrapper=old)
        moved = rewrap(env, wrappers={old.scheme: old}, to=new)
        assert (env.ciphertext, "other") == (moved.ciphertext, moved.key.scheme)
        assert b"body" == open_envelope(moved, wrappers={"other": new})

    def test_repr_shows_no_secret(self) -> None:
        """An envelope's repr holds neither ciphertext nor wrapped key."""
        env = seal("req-1", b"body", meta={}, wrapper=LocalKeyWrapper(new_ring()))
        assert "blob" not in repr(env.key) and "ciphertext" not in repr(env)


class _OtherWrapper(LocalKeyWrapper):
    scheme = "other"


class TestBodyMeta:
    @pytest.mark.parametrize(
        "kw",
        [
            {"retention": -1},
            {"retention": float("nan")},
            {"retention": float("inf")},
            {"retention": True},
            {"tenant": "a b"},
            {"tenant": ""},
            {"rule": "x\n"},
            {"content_type": "text/\x00"},
            {"subject": ""},
            {"original_size": -3},
        ],
    )
    def test_bad_metadata_fails_eagerly(self, kw: dict[str, Any]) -> None:
        """Invalid metadata raises ValueError at construction."""
        with pytest.raises(ValueError):
            BodyMeta(**kw)

    def test_principal_tenants(self) -> None:
        """'*' reads every tenant and tenant-less bodies; a named tenant only itself."""
        star = Principal(name="a", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
        one = Principal(name="b", scopes=frozenset({"bodies:read"}), tenants=frozenset({"acme"}))
        assert (True, True, True, False, False) == (
            star.reads_tenant("acme"),
            star.reads_tenant(None),
            one.reads_tenant("acme"),
            one.reads_tenant("beta"),
            one.reads_tenant(None),
        )


class TestFromUrl:
    def test_memory_and_file(self, tmp_path: Path) -> None:
        """memory:// and file:///abs open the matching store; a file store makes its directories on its
        first write, never on open or read."""
        ring = new_ring()
        assert isinstance(from_url("memory://", keys=ring), MemoryBodyStore)
        local = from_url(f"file://{tmp_path}/bodies", keys=ring)
        assert isinstance(local, LocalBodyStore) and not (tmp_path / "bodies").exists()
        local.put("c-1", b"x", meta=BodyMeta(tenant="t", retention=3600.0))
        assert (tmp_path / "bodies" / "bodies" / "ff").is_dir()

    @pytest.mark.parametrize(
        "url",
        ["ftp://x", "file://relative/path", "file://host/abs", "s3://", "memory://x", "file:///a?b=1", ""],
    )
    def test_bad_urls(self, url: str) -> None:
        """Unsupported schemes and malformed URLs raise ValueError."""
        with pytest.raises(ValueError):
            from_url(url, keys=new_ring())
