"""The body-store contract, run over every backend: memory, local files, S3 and S3 with KMS (moto server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.store.bodies_fixtures as bf
from store.bodies import (
    AccessDenied,
    AuditUnavailable,
    BodyExists,
    BodyExpired,
    BodyIntegrityError,
    BodyMeta,
    BodyNotFound,
    EncryptedBodyStore,
    InvalidCorrelationId,
    Principal,
)
from store.keys import KeyRing, MasterKey
from tests.store.bodies_fixtures import ONCALL_READ, StoreFactory, canary_bodies, find_leaks, new_ring

factory = bf.factory
moto_endpoint = bf.moto_endpoint
DAY = 86_400.0
ONCALL = Principal(name="oncall", scopes=frozenset(ONCALL_READ), tenants=frozenset({"*"}))
ACME = Principal(name="acme-support", scopes=frozenset(ONCALL_READ), tenants=frozenset({"acme"}))
NOSCOPE = Principal(name="intern", scopes=frozenset({"logs:read"}), tenants=frozenset({"*"}))
BODY = b'{"order": 42, "card": "4111 1111 1111 1111"}'


def meta(**kw: object) -> BodyMeta:
    kw.setdefault("tenant", "acme")
    kw.setdefault("subject", "user-1")
    return BodyMeta(**kw)  # type: ignore[arg-type]


@pytest.fixture
def store(factory: StoreFactory) -> EncryptedBodyStore:
    return factory.open()


class TestPutGet:
    def test_round_trip(self, store: EncryptedBodyStore) -> None:
        """What was put is what an authorised reader gets."""
        for i, body in enumerate([BODY, b"", bytes(range(256)) * 4]):
            store.put(f"req-{i}", body, meta=meta())
            assert body == store.get(f"req-{i}", reader=ONCALL, purpose="INC-1")

    def test_head_returns_metadata_only(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """head reports tenant, sizes, expiry and key, never the body or the subject."""
        store.put("req-1", BODY, meta=meta(retention=DAY, content_type="application/json", rule="orders"))
        info = store.head("req-1")
        assert ("acme", len(BODY), len(BODY), False) == (
            info.tenant,
            info.size,
            info.stored_size,
            info.truncated,
        )
        assert (factory.clock.now + DAY, "application/json", "orders") == (
            info.expires,
            info.content_type,
            info.rule,
        )
        assert "user-1" not in repr(info)
        assert [] == factory.audit.events

    def test_size_cap_truncates_and_records_the_original_size(self, factory: StoreFactory) -> None:
        """A body over the cap is stored truncated; size records its original length."""
        store = factory.open(max_body_bytes=10)
        store.put("big", b"x" * 25, meta=meta())
        info = store.head("big")
        assert (25, 10, True) == (info.size, info.stored_size, info.truncated)
        assert b"x" * 10 == store.get("big", reader=ONCALL, purpose="INC-1")
        assert 25 == factory.audit.last("body.read")["size"]

    def test_caller_capped_size_is_kept(self, store: EncryptedBodyStore) -> None:
        """A caller that capped the body itself passes original_size; the store records it."""
        store.put("tee", b"abc", meta=meta(original_size=9000))
        assert (9000, 3, True) == (
            store.head("tee").size,
            store.head("tee").stored_size,
            store.head("tee").truncated,
        )

    def test_an_id_is_never_overwritten(self, store: EncryptedBodyStore) -> None:
        """A second body under a taken id is refused; the first stays readable."""
        store.put("req-1", BODY, meta=meta())
        with pytest.raises(BodyExists):
            store.put("req-1", b"other tenant's data", meta=meta(tenant="evil"))
        assert BODY == store.get("req-1", reader=ONCALL, purpose="INC-1")

    def test_replaying_the_same_envelope_is_idempotent(self, store: EncryptedBodyStore) -> None:
        """put_envelope twice with one sealed envelope stores it once, without error."""
        env = store.seal("req-1", BODY, meta=meta())
        store.put_envelope(env)
        store.put_envelope(env)
        assert ["req-1"] == [i.correlation_id for i in store.iter_info()]

    def test_key_rotation_keeps_old_bodies_readable(self, factory: StoreFactory) -> None:
        """Bodies wrapped under an older master key read fine once a new key is active."""
        factory.open().put("old", BODY, meta=meta())
        rotated = KeyRing(MasterKey.generate(), older=(factory.keys.active,))
        store = factory.open(keys=rotated)
        store.put("new", b"new", meta=meta())
        assert (BODY, b"new") == (
            store.get("old", reader=ONCALL, purpose="INC-1"),
            store.get("new", reader=ONCALL, purpose="INC-1"),
        )

    def test_a_foreign_key_ring_cannot_read(self, factory: StoreFactory) -> None:
        """Without the key that wrapped it, a body is unreadable (integrity error, journaled).

        Under KMS the wrapping key lives in KMS, so a different local ring still reads: access to the
        KMS key is the control there.
        """
        factory.open().put("req-1", BODY, meta=meta())
        if factory.kms_key_id is not None:
            assert BODY == factory.open(keys=new_ring()).get("req-1", reader=ONCALL, purpose="INC-1")
            return
        with pytest.raises(BodyIntegrityError):
            factory.open(keys=new_ring()).get("req-1", reader=ONCALL, purpose="INC-1")
        assert "body.integrity_failed" == factory.audit.events[-1]["kind"]

    def test_invalid_ids_are_refused_on_put(self, store: EncryptedBodyStore) -> None:
        """Path tricks never reach the backend."""
        for bad in ["../x", "a/b", "x\x00", "", "a" * 129, "\uff41\uff42\uff43", ".hidden"]:
            with pytest.raises(InvalidCorrelationId):
                store.put(bad, BODY, meta=meta())
        assert [] == list(store.iter_info())


class TestAccess:
    def test_read_is_journaled_before_data_is_returned(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """body.read (reader, purpose, id, size) is recorded while the caller still waits for the data."""
        store.put("req-1", BODY, meta=meta())
        returned = False
        seen: list[bool] = []

        def sink(event: dict[str, object]) -> None:
            seen.append(returned)
            factory.audit(event)  # type: ignore[arg-type]

        data = factory.open(audit=sink).get("req-1", reader=ONCALL, purpose="INC-7")
        returned = True
        ev = factory.audit.last("body.read")
        assert ([False], BODY) == (seen, data)
        assert ("oncall", "INC-7", "req-1", len(BODY), "acme", True) == (
            ev["actor"]["subject"],
            ev["purpose"],
            ev["correlation_id"],
            ev["size"],
            ev["tenant"],
            ev["decision"]["allowed"],
        )

    @pytest.mark.parametrize(
        ("reader", "purpose", "reason"),
        [
            (NOSCOPE, "INC-1", "missing_scope"),
            (ONCALL, "", "no_purpose"),
            (ONCALL, "   ", "no_purpose"),
            (ONCALL, "line\nbreak", "no_purpose"),
            (Principal(name="ghost"), "INC-1", "missing_scope"),
        ],
    )
    def test_refusals_are_journaled(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
        reader: Principal,
        purpose: str,
        reason: str,
    ) -> None:
        """No scope, another tenant, no purpose: refused, and the refusal is a journal event."""
        store.put("req-1", BODY, meta=meta())
        with pytest.raises(AccessDenied):
            store.get("req-1", reader=reader, purpose=purpose)
        ev = factory.audit.events[-1]
        assert ("body.read_denied", reason, reader.name, "req-1") == (
            ev["kind"],
            ev["decision"]["reason"],
            ev["actor"]["subject"],
            ev["correlation_id"],
        )
        assert "body.read" not in factory.audit.kinds()

    def test_another_tenants_body_reads_as_missing(
        self, factory: StoreFactory, store: EncryptedBodyStore
    ) -> None:
        """A reader of another tenant gets the missing body's error, word for word; the journal knows."""
        beta = Principal(name="beta-support", scopes=frozenset(ONCALL_READ), tenants=frozenset({"beta"}))
        store.put("req-1", BODY, meta=meta())
        with pytest.raises(BodyNotFound) as other_tenant:
            store.get("req-1", reader=beta, purpose="INC-1")
        with pytest.raises(BodyNotFound) as missing:
            store.get("req-2", reader=beta, purpose="INC-1")
        assert str(missing.value).replace("req-2", "req-1") == str(other_tenant.value)
        assert not isinstance(other_tenant.value, AccessDenied)
        denied = [(e["decision"]["reason"], e["correlation_id"]) for e in factory.audit.events[-2:]]
        assert [("tenant", "req-1"), ("not_found", "req-2")] == denied
        assert "body.read" not in factory.audit.kinds()

    def test_tenant_reader_reads_its_tenant_only(self, store: EncryptedBodyStore) -> None:
        """A reader scoped to one tenant reads that tenant's bodies; a body without tenant needs '*'."""
        store.put("mine", BODY, meta=meta(tenant="acme"))
        store.put("none", BODY, meta=meta(tenant=None))
        assert BODY == store.get("mine", reader=ACME, purpose="INC-1")
        with pytest.raises(BodyNotFound):
            store.get("none", reader=ACME, purpose="INC-1")
        assert BODY == store.get("none", reader=ONCALL, purpose="INC-1")

    def test_a_journal_that_cannot_take_the_event_refuses_the_read(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """If the audit sink raises, no data is returned."""
        store.put("req-1", BODY, meta=meta())
        factory.audit.fail = True
        with pytest.raises(AuditUnavailable) as info:
            store.get("req-1", reader=ONCALL, purpose="INC-1")
        assert isinstance(info.value, AccessDenied)

    def test_a_store_without_audit_sink_is_write_only(self, factory: StoreFactory) -> None:
        """No sink: put works, reads, purges and erasures are refused."""
        store = factory.open(audit=None)
        store.put("req-1", BODY, meta=meta())
        with pytest.raises(AuditUnavailable):
            store.get("req-1", reader=ONCALL, purpose="INC-1")
        with pytest.raises(AuditUnavailable):
            store.purge_expired()
        with pytest.raises(AuditUnavailable):
            store.erase(subject="user-1")

    def test_missing_and_malformed_ids_are_journaled(
        self, factory: StoreFactory, store: EncryptedBodyStore
    ) -> None:
        """A read of nothing, or of a path trick, is a journaled refusal (the bad id is not journaled)."""
        with pytest.raises(BodyNotFound):
            store.get("nope", reader=ONCALL, purpose="INC-1")
        with pytest.raises(InvalidCorrelationId):
            store.get("../../etc/passwd", reader=ONCALL, purpose="INC-1")
        a, b = factory.audit.events
        assert ("not_found", "invalid_correlation_id") == (a["decision"]["reason"], b["decision"]["reason"])
        assert "correlation_id" not in b
        assert "passwd" not in json.dumps(factory.audit.events)


class TestRetention:
    def test_expired_body_is_unreadable_and_purged_on_read(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """get after expiry raises BodyExpired, journals it, and the body is gone."""
        store.put("req-1", BODY, meta=meta(retention=60))
        factory.clock.advance(61)
        with pytest.raises(BodyExpired):
            store.get("req-1", reader=ONCALL, purpose="INC-1")
        assert ["body.read_denied", "body.purged"] == factory.audit.kinds()
        assert "expired" == factory.audit.events[0]["decision"]["reason"]
        with pytest.raises(BodyNotFound):
            store.head("req-1")

    def test_purge_expired_removes_only_expired_bodies(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """purge_expired deletes what expired (keys and blobs), keeps the rest, journals counts."""
        store.put("short-1", BODY, meta=meta(retention=10))
        store.put("short-2", BODY, meta=meta(retention=10))
        store.put("long", BODY, meta=meta(retention=DAY))
        factory.clock.advance(11)
        report = store.purge_expired()
        assert (3, 2, 0) == (report.scanned, report.purged, report.held)
        assert ["long"] == [i.correlation_id for i in store.iter_info()]
        ev = factory.audit.last("body.purged")
        assert (2, 3) == (ev["purged"], ev["scanned"])
        with pytest.raises(BodyNotFound):
            store.get("short-1", reader=ONCALL, purpose="INC-1")

    def test_legal_hold_suspends_expiry_until_released(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """A held body outlives its retention, survives purge, and goes at the purge after release."""
        store.put("req-1", BODY, meta=meta(retention=10))
        info = store.hold("req-1", reason="CASE-9 litigation")
        assert "CASE-9 litigation" == info.hold
        factory.clock.advance(11)
        assert BODY == store.get("req-1", reader=ONCALL, purpose="INC-1")
        assert 1 == store.purge_expired().held
        store.release("req-1")
        assert 1 == store.purge_expired().purged
        assert [
            "body.held",
            "body.read",
            "body.purged",
            "body.released",
            "body.purged",
        ] == factory.audit.kinds()
        with pytest.raises(BodyNotFound):
            store.head("req-1")

    def test_release_journals_its_reason_when_given(
        self, factory: StoreFactory, store: EncryptedBodyStore
    ) -> None:
        """``reason`` closes the hold on record; without one the event has none; a bad one changes nothing."""
        store.put("req-1", BODY, meta=meta())
        store.put("req-2", BODY, meta=meta())
        store.hold("req-1", reason="CASE-9")
        store.hold("req-2", reason="CASE-9")
        with pytest.raises(ValueError, match="reason"):
            store.release("req-1", reason="line\nbreak")
        assert store.head("req-1").hold == "CASE-9"
        assert "body.released" not in factory.audit.kinds()
        store.release("req-1", reason=" CASE-9 closed ", actor="legal")
        ev = factory.audit.last("body.released")
        assert ("CASE-9 closed", {"subject": "legal"}) == (ev["reason"], ev["actor"])
        store.release("req-2")
        assert "reason" not in factory.audit.last("body.released")

    def test_hold_needs_a_reason_and_an_existing_body(self, store: EncryptedBodyStore) -> None:
        """No reason or no body: refused."""
        store.put("req-1", BODY, meta=meta())
        with pytest.raises(ValueError, match="reason"):
            store.hold("req-1", reason=" ")
        with pytest.raises(BodyNotFound):
            store.hold("missing", reason="CASE-1")


class TestErasure:
    def test_erase_shreds_every_body_of_the_subject(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
    ) -> None:
        """All of the subject's bodies become unreadable; others stay; the journal holds a fingerprint."""
        for i in range(3):
            store.put(f"a-{i}", BODY, meta=meta(subject="alice@example.com"))
        store.put("bob-0", BODY, meta=meta(subject="bob"))
        report = store.erase(subject="alice@example.com")
        assert (3, 0) == (report.erased, report.held)
        for i in range(3):
            with pytest.raises(BodyNotFound):
                store.get(f"a-{i}", reader=ONCALL, purpose="DSR-1")
        assert BODY == store.get("bob-0", reader=ONCALL, purpose="DSR-1")
        ev = factory.audit.last("body.erased")
        assert 3 == ev["erased"]
        assert "alice" not in json.dumps(factory.audit.events)
        assert ev["subject_fp"].startswith(factory.keys.active.key_id + ":")

    def test_erase_journals_its_ticket_but_never_the_subject(
        self, factory: StoreFactory, store: EncryptedBodyStore
    ) -> None:
        """The erasure request's ticket is journaled; a reason naming the subject is refused before
        anything is erased (the journal keeps only the subject's fingerprint)."""
        store.put("a-0", BODY, meta=meta(subject="Alice@Example.com"))
        for bad in ("DSR for alice@example.com", "", "tab\there"):
            with pytest.raises(ValueError, match="reason"):
                store.erase(subject="Alice@Example.com", reason=bad)
        assert [] == factory.audit.kinds()
        assert BODY == store.get("a-0", reader=ONCALL, purpose="DSR-7")
        report = store.erase(subject="Alice@Example.com", reason="DSR-7")
        assert 1 == report.erased
        assert "DSR-7" == factory.audit.last("body.erased")["reason"]
        assert "alice" not in json.dumps(factory.audit.events).lower()
        assert 0 == store.erase(subject="  ", reason="DSR-8").erased  # a blank subject names nothing

    def test_erase_deletes_the_wrapped_key(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """After erasure no header (wrapped key) is left: any surviving ciphertext copy is noise."""
        store.put("alice-0", BODY, meta=meta(subject="alice"))
        store.erase(subject="alice")
        with pytest.raises(BodyNotFound):
            store.backend.read_header("alice-0")
        assert [] == list(store.backend.ids())

    def test_legal_hold_wins_over_erasure(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """A held body is kept and reported; the rest of the subject's bodies go."""
        store.put("alice-0", BODY, meta=meta(subject="alice"))
        store.put("alice-1", BODY, meta=meta(subject="alice"))
        store.hold("alice-1", reason="CASE-2")
        report = store.erase(subject="alice")
        assert (1, 1, ("alice-1",)) == (report.erased, report.held, report.held_ids)


class TestIntegrity:
    def _tamper_header(
        self, factory: StoreFactory, store: EncryptedBodyStore, cid: str, edit: object
    ) -> None:
        h = json.loads(factory.raw_header(store, cid))
        edit(h)  # type: ignore[operator]
        factory.set_raw_header(store, cid, json.dumps(h).encode())

    def _assert_journaled(self, factory: StoreFactory, store: EncryptedBodyStore, part: str) -> None:
        with pytest.raises(BodyIntegrityError) as info:
            store.get("req-1", reader=ONCALL, purpose="INC-1")
        ev = factory.audit.events[-1]
        assert (part, "body.integrity_failed", part) == (info.value.part, ev["kind"], ev["part"])

    def test_flipped_ciphertext_byte(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """One flipped ciphertext bit: the read fails and the failure is journaled."""
        store.put("req-1", BODY, meta=meta())
        blob = factory.blob_of(store, "req-1")
        data = bytearray(store.backend.read_blob(blob))
        data[3] ^= 0x01
        factory.set_raw_blob(store, blob, bytes(data))
        self._assert_journaled(factory, store, "ciphertext")

    def test_flipped_wrapped_key_byte(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """One flipped bit in the wrapped data key: the read fails and is journaled."""
        import base64

        store.put("req-1", BODY, meta=meta())

        def edit(h: dict[str, object]) -> None:
            key = h["key"]
            assert isinstance(key, dict)
            raw = bytearray(base64.b64decode(key["blob"]))
            raw[-1] ^= 0x01
            key["blob"] = base64.b64encode(bytes(raw)).decode()

        self._tamper_header(factory, store, "req-1", edit)
        self._assert_journaled(factory, store, "wrapped_key")

    @pytest.mark.parametrize(
        ("field", "value"), [("expires", 4e9), ("tenant", "beta"), ("size", 1), ("subject", None)]
    )
    def test_edited_metadata(
        self,
        factory: StoreFactory,
        store: EncryptedBodyStore,
        field: str,
        value: object,
    ) -> None:
        """A later expiry, another tenant, another size: the metadata is bound, so decryption fails."""
        store.put("req-1", BODY, meta=meta())
        self._tamper_header(factory, store, "req-1", lambda h: h["meta"].__setitem__(field, value))
        self._assert_journaled(factory, store, "ciphertext")

    def test_swapped_header(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """Another body's header copied under this id is detected (it names another correlation id)."""
        store.put("req-1", BODY, meta=meta())
        store.put("req-2", b"two", meta=meta())
        factory.set_raw_header(store, "req-1", factory.raw_header(store, "req-2"))
        self._assert_journaled(factory, store, "header")

    def test_relabelled_header(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """Another body's envelope relabelled with this id fails to decrypt (the id is bound)."""
        store.put("req-1", BODY, meta=meta())
        store.put("req-2", b"two", meta=meta())
        other = json.loads(factory.raw_header(store, "req-2"))
        other["cid"] = "req-1"
        factory.set_raw_header(store, "req-1", json.dumps(other).encode())
        factory.set_raw_blob(
            store, factory.blob_of(store, "req-1"), store.backend.read_blob(factory.blob_of(store, "req-2"))
        )
        with pytest.raises(BodyIntegrityError):
            store.get("req-1", reader=ONCALL, purpose="INC-1")

    def test_garbage_header(self, factory: StoreFactory, store: EncryptedBodyStore) -> None:
        """A header that is not JSON is an integrity failure, not a crash."""
        store.put("req-1", BODY, meta=meta())
        blob = factory.blob_of(store, "req-1")
        store.backend.replace_header("req-1", b"\x00not json", blob=blob, held=False)
        self._assert_journaled(factory, store, "header")


class TestNoPlaintextAtRest:
    def test_no_canary_in_stored_bytes(self, factory: StoreFactory, tmp_path: Path) -> None:
        """Every canary stored as a body: find_leaks.py over the stored bytes finds none."""
        store = factory.open()
        for cid, body in canary_bodies().items():
            store.put(cid, body, meta=meta(subject=body.decode()[:64], content_type="application/json"))
        assert canary_bodies()["canary-all"] == store.get("canary-all", reader=ONCALL, purpose="INC-1")
        proc = find_leaks(factory.dump(tmp_path / "dump"))
        assert (0, "no leaks") == (proc.returncode, proc.stdout.strip().splitlines()[-1])
        assert "hunter2" not in json.dumps(factory.audit.events)
