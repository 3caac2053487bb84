"""Write-only sealing: X25519 reader keys and KMS sessions (moto's server over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.bodies import (
    AccessDenied,
    BodyIntegrityError,
    BodyMeta,
    MemoryBodyStore,
    Principal,
    ReaderKey,
    ReaderKeySessions,
    SessionKeyWrapper,
    generate_reader_key,
    load_public_key,
)
from store.bodies.s3 import S3BodyStore
from tests.store.bodies_fixtures import AuditRecorder, MotoEndpoint, fast_config, moto_endpoint, new_ring

__all__ = ["moto_endpoint"]

META = BodyMeta(tenant="acme", retention=3600)
READER = Principal(name="oncall", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))


def sealed_store(public: str, reader: ReaderKey | None = None) -> MemoryBodyStore:
    wrapper = SessionKeyWrapper(ReaderKeySessions(public, reader=reader))
    return MemoryBodyStore(keys=new_ring(), audit=AuditRecorder(), wrapper=wrapper)


class TestReaderKey:
    def test_only_the_reader_key_opens_a_body(self, tmp_path: Path) -> None:
        """Sealed for a public key: no private key -> AccessDenied; the right one -> the body."""
        public = generate_reader_key(tmp_path / "r.pem")
        store = sealed_store(public)
        store.put("c-1", b"payload", meta=META)
        with pytest.raises(AccessDenied):
            store.get("c-1", reader=READER, purpose="INC-1")
        reader = ReaderKey.from_file(tmp_path / "r.pem")
        store.add_unwrapper(SessionKeyWrapper(ReaderKeySessions(public, reader=reader)))
        assert b"payload" == store.get("c-1", reader=READER, purpose="INC-1")

    def test_another_reader_key_is_refused(self, tmp_path: Path) -> None:
        """A private key for another public key does not match and cannot open the body."""
        public = generate_reader_key(tmp_path / "a.pem")
        generate_reader_key(tmp_path / "b.pem")
        other = ReaderKey.from_file(tmp_path / "b.pem")
        with pytest.raises(ValueError):
            ReaderKeySessions(public, reader=other)
        store = sealed_store(public)
        store.put("c-1", b"payload", meta=META)
        store.add_unwrapper(SessionKeyWrapper(ReaderKeySessions(other.public_text, reader=other)))
        with pytest.raises(AccessDenied):
            store.get("c-1", reader=READER, purpose="INC-1")

    def test_a_wrapped_key_moved_to_another_body_fails(self, tmp_path: Path) -> None:
        """The data key is bound to its correlation id: swapping wrapped keys fails to verify."""
        public = generate_reader_key(tmp_path / "r.pem")
        wrapper = SessionKeyWrapper(ReaderKeySessions(public, reader=ReaderKey.from_file(tmp_path / "r.pem")))
        wrapped = wrapper.wrap(b"k" * 32, context={"cid": "a"})
        assert b"k" * 32 == wrapper.unwrap(wrapped, context={"cid": "a"})
        with pytest.raises(BodyIntegrityError):
            wrapper.unwrap(wrapped, context={"cid": "b"})

    def test_sessions_rotate_and_the_old_key_is_forgotten(self, tmp_path: Path) -> None:
        """A forced refresh makes a new ephemeral key; both sessions' bodies stay readable by the reader."""
        public = generate_reader_key(tmp_path / "r.pem")
        reader = ReaderKey.from_file(tmp_path / "r.pem")
        wrapper = SessionKeyWrapper(ReaderKeySessions(public, reader=reader))
        first = wrapper.wrap(b"a" * 32, context={"cid": "x"})
        wrapper.refresh(force=True)
        second = wrapper.wrap(b"b" * 32, context={"cid": "x"})
        assert first.blob[2:34] != second.blob[2:34]
        assert (b"a" * 32, b"b" * 32) == (
            wrapper.unwrap(first, context={"cid": "x"}),
            wrapper.unwrap(second, context={"cid": "x"}),
        )

    @pytest.mark.parametrize("bad", ["", "x25519:", "x25519:!!", "ed25519:AAAA", b"short"])
    def test_malformed_public_keys_are_refused(self, bad: str | bytes) -> None:
        """Anything but x25519:<base64 of 32 bytes> raises ValueError."""
        with pytest.raises(ValueError):
            load_public_key(bad)

    def test_keygen_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """The private key file is 0600 and never overwritten."""
        generate_reader_key(tmp_path / "r.pem")
        assert 0o600 == (tmp_path / "r.pem").stat().st_mode & 0o777
        with pytest.raises(FileExistsError):
            generate_reader_key(tmp_path / "r.pem")


class TestKmsSessions:
    def test_generate_data_key_on_write_decrypt_on_read(self, moto_endpoint: MotoEndpoint) -> None:
        """kms_session_key_id: one GenerateDataKey per session, Decrypt on read; no KMS call per put."""
        key = moto_endpoint.new_kms_key()
        kms = moto_endpoint.kms()
        calls: list[str] = []
        kms.meta.events.register("before-call.kms.*", lambda model, **_: calls.append(model.name))
        store = S3BodyStore(
            moto_endpoint.new_bucket(),
            keys=new_ring(),
            audit=AuditRecorder(),
            client=moto_endpoint.s3(),
            kms_client=kms,
            kms_session_key_id=key,
            client_config=fast_config(),
        )
        assert store.wrapper.refresh()  # type: ignore[attr-defined]
        for i in range(5):
            store.put(f"c-{i}", b"payload %d" % i, meta=META)
        assert ["GenerateDataKey"] == calls
        assert b"payload 3" == store.get("c-3", reader=READER, purpose="INC-1")
        assert ["GenerateDataKey", "Decrypt"] == calls
        assert "kms-session" == store.head("c-3").key_scheme

    def test_no_session_key_means_no_seal(self, moto_endpoint: MotoEndpoint) -> None:
        """Before any session key exists (KMS unreachable), sealing raises BodyStoreUnavailable."""
        from store.bodies import BodyStoreUnavailable

        store = S3BodyStore(
            moto_endpoint.new_bucket(),
            keys=new_ring(),
            client=moto_endpoint.s3(),
            kms_client=moto_endpoint.kms(),
            kms_session_key_id="arn:aws:kms:us-east-1:123456789012:key/none",
        )
        assert not store.wrapper.refresh()  # type: ignore[attr-defined]
        with pytest.raises(BodyStoreUnavailable):
            store.seal("c-1", b"x", meta=META)
