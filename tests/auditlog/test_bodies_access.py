"""The body store composed with the policy and the journal: readers, journaled reads, erasure, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from auditlog import AuditHandle, configure
from auditlog.bodies import PolicyBodyStore, body_meta, lifecycle_days, open_body_store, principal_for
from auditlog.canaries import scan
from auditlog.cli.bodies import bodies_app
from auditlog.policy import Policy, loads
from store.bodies import AccessDenied, AuditUnavailable, BodyNotFound, Principal
from store.keys import KeyRing, MasterKey
from store.trail import iter_trail_records, verify_trail
from tests.conftest import corpus

POLICY = """
version = 1
id = "bodies-test"

[defaults]
body_retention = "1d"

[[rules]]
id = "orders"
match = { route = "/orders*" }
capture_body = true
body_retention = "2h"

[[rules]]
id = "exports"
match = { route = "/exports" }
body_retention = "30d"

[readers.oncall]
scopes = ["bodies:read"]
tenants = ["*"]

[readers.acme_support]
scopes = ["bodies:read"]
tenants = ["acme"]

[readers.auditor]
scopes = ["logs:read"]
tenants = ["*"]

[operators.records]
scopes = ["bodies:admin"]

[operators.intern]
scopes = ["bodies:read"]
"""
NEEDLES: list[str] = list(corpus().needles)


@pytest.fixture
def policy() -> Policy:
    return loads(POLICY)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(MasterKey.generate())


@pytest.fixture
def handle(tmp_path: Path, policy: Policy, ring: KeyRing) -> Iterator[AuditHandle]:
    h = configure(journal_dir=tmp_path / "journal", policy=policy, key=ring, stdlib=False)
    yield h
    h.shutdown()


@pytest.fixture
def bodies(tmp_path: Path, handle: AuditHandle) -> PolicyBodyStore:
    return open_body_store(f"file://{tmp_path}/bodies", handle=handle)


def iter_records(path: Path) -> Iterator[dict[str, object]]:
    """Every record of every stream of the trail at ``path``."""
    return (rec for _, rec in iter_trail_records(path))


def journal_events(path: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in iter_records(path) if r.get("kind") == kind]


class TestPolicyReaders:
    def test_declared_reader_reads_and_the_read_is_journaled(
        self, bodies: PolicyBodyStore, policy: Policy, handle: AuditHandle, tmp_path: Path
    ) -> None:
        """A reader from the policy reads; the journal holds body.read with reader, purpose, id and size."""
        bodies.put("req-1", b'{"ok": true}', meta=body_meta(policy.match(route="/orders"), tenant="acme"))
        assert b'{"ok": true}' == bodies.get("req-1", reader="oncall", purpose="INC-42")
        handle.flush()
        (ev,) = journal_events(tmp_path / "journal", "body.read")
        assert ("oncall", "INC-42", "req-1", 12, policy.ref, 1) == (
            ev["actor"]["subject"],  # type: ignore[index]
            ev["purpose"],
            ev["correlation_id"],
            ev["size"],
            ev["policy"],
            ev["v"],
        )

    @pytest.mark.parametrize(
        ("reader", "reason", "error"),
        [
            ("auditor", "missing_scope", AccessDenied),
            ("mallory", "missing_scope", AccessDenied),
            ("acme_support", "tenant", BodyNotFound),  # another tenant's body reads as a missing one
        ],
    )
    def test_refused_readers_are_journaled(
        self,
        bodies: PolicyBodyStore,
        policy: Policy,
        handle: AuditHandle,
        tmp_path: Path,
        reader: str,
        reason: str,
        error: type[Exception],
    ) -> None:
        """No scope, an undeclared name, another tenant: refused, and the refusal is in the journal."""
        bodies.put("req-1", b"x", meta=body_meta(policy.defaults, tenant="beta"))
        with pytest.raises(error):
            bodies.get("req-1", reader=reader, purpose="INC-1")
        handle.flush()
        (ev,) = journal_events(tmp_path / "journal", "body.read_denied")
        assert (reader, reason) == (ev["actor"]["subject"], ev["decision"]["reason"])  # type: ignore[index]

    def test_free_text_is_scanned_before_it_is_journaled(
        self, bodies: PolicyBodyStore, policy: Policy, handle: AuditHandle, tmp_path: Path
    ) -> None:
        """A purpose or hold reason quoting a secret is journaled redacted."""
        bodies.put("req-1", b"x", meta=body_meta(policy.defaults, tenant="acme"))
        bodies.get("req-1", reader="oncall", purpose=f"INC-1 token {NEEDLES[1]}")
        bodies.hold("req-1", reason=f"case for {NEEDLES[1]}", operator="records")
        handle.flush()
        journaled = json.dumps(list(iter_records(tmp_path / "journal")))
        assert (False, True) == (NEEDLES[1] in journaled, "INC-1" in journaled)

    def test_a_journal_that_cannot_take_the_read_refuses_it(
        self, bodies: PolicyBodyStore, policy: Policy, handle: AuditHandle
    ) -> None:
        """emit() returning False (journal closed) makes the read fail closed."""
        bodies.put("req-1", b"x", meta=body_meta(policy.defaults, tenant="acme"))
        handle.journal.close()
        with pytest.raises(AuditUnavailable):
            bodies.get("req-1", reader="oncall", purpose="INC-1")

    def test_retention_comes_from_the_matching_rule(self, bodies: PolicyBodyStore, policy: Policy) -> None:
        """body_meta takes the rule's body_retention; lifecycle_days covers the longest one."""
        bodies.put("req-1", b"x", meta=body_meta(policy.match(route="/orders/7"), tenant="acme"))
        info = bodies.head("req-1")
        assert (7200.0, "orders", 31) == (info.expires - info.created, info.rule, lifecycle_days(policy))

    def test_principal_for(self, policy: Policy) -> None:
        """Declared readers keep their scopes and tenants; unknown names get none."""
        assert Principal(
            name="acme_support", scopes=frozenset({"bodies:read"}), tenants=frozenset({"acme"})
        ) == (principal_for(policy, "acme_support"))
        assert Principal(name="nobody") == principal_for(policy, "nobody")


class TestJournalAfterErasure:
    def test_erasure_is_journaled_the_chain_verifies_and_no_canary_is_in_it(
        self, bodies: PolicyBodyStore, policy: Policy, handle: AuditHandle, ring: KeyRing, tmp_path: Path
    ) -> None:
        """Canary bodies read, then erased: body.erased is journaled, verify passes, no leak found."""
        for i, needle in enumerate(NEEDLES):
            bodies.put(
                f"c-{i}", needle.encode(), meta=body_meta(policy.defaults, tenant="acme", subject="alice")
            )
            assert needle.encode() == bodies.get(f"c-{i}", reader="oncall", purpose="DSR-7")
        report = bodies.erase(subject="alice", operator="records")
        assert len(NEEDLES) == report.erased
        with pytest.raises(BodyNotFound):
            bodies.get("c-0", reader="oncall", purpose="DSR-7")
        handle.shutdown()
        (ev,) = journal_events(tmp_path / "journal", "body.erased")
        assert len(NEEDLES) == ev["erased"]
        assert verify_trail(tmp_path / "journal", keys=ring).ok
        assert [] == scan(tmp_path, canaries=corpus())


@pytest.fixture
def cli(tmp_path: Path, ring: KeyRing, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A root Typer app with ``bodies`` registered, as ``auditlog.cli.app`` does, and its environment."""
    (tmp_path / "policy.toml").write_text(POLICY)
    monkeypatch.setenv("AUDITLOG_KEY", ring.active.to_b64())
    monkeypatch.setenv("AUDITLOG_BODY_STORE", f"file://{tmp_path}/bodies")
    monkeypatch.setenv("AUDITLOG_JOURNAL_DIR", str(tmp_path / "journal-cli"))
    monkeypatch.setenv("AUDITLOG_POLICY", str(tmp_path / "policy.toml"))
    yield CliRunner()


def root_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(bodies_app, name="bodies")

    @app.callback()
    def _root() -> None:
        """auditlog (test root)."""

    return app


def seed(tmp_path: Path, ring: KeyRing, policy: Policy) -> None:
    """Store two bodies through the library, as a server would."""
    from store.bodies import LocalBodyStore

    store = LocalBodyStore(tmp_path / "bodies", keys=ring)
    store.put("req-1", b"secret body", meta=body_meta(policy.defaults, tenant="acme", subject="bob"))
    store.put("req-2", b"other", meta=body_meta(policy.defaults, tenant="acme", subject="bob"))


class TestCli:
    def test_get_to_a_file_and_to_stdout(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """get --out writes the body 0600; without --out it goes to stdout; both reads are journaled."""
        seed(tmp_path, ring, policy)
        out = tmp_path / "body.out"
        r = cli.invoke(
            root_app(),
            ["bodies", "get", "req-1", "--reader", "oncall", "--purpose", "INC-9", "--out", str(out)],
        )
        assert (0, b"secret body", 0o600) == (r.exit_code, out.read_bytes(), out.stat().st_mode & 0o777)
        r = cli.invoke(root_app(), ["bodies", "get", "req-2", "--reader", "oncall", "--purpose", "INC-9"])
        assert (0, "other") == (r.exit_code, r.stdout)
        reads = journal_events(tmp_path / "journal-cli", "body.read")
        assert ["req-1", "req-2"] == [e["correlation_id"] for e in reads]

    def test_get_by_correlation_id(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """A correlation id finds its request's body (stored as CID.SPAN); with several, the keys are
        listed (exit 2) and one of them reads."""
        from store.bodies import LocalBodyStore

        store = LocalBodyStore(tmp_path / "bodies", keys=ring)
        meta = body_meta(policy.defaults, tenant="acme", subject="bob")
        for key, body in (("c1.s1", b"one"), ("c2.s1", b"two-a"), ("c2.s2", b"two-b")):
            store.put(key, body, meta=meta)
        args = ["--reader", "oncall", "--purpose", "INC-9"]
        r = cli.invoke(root_app(), ["bodies", "get", "c1", *args])
        assert (0, "one") == (r.exit_code, r.stdout)
        r = cli.invoke(root_app(), ["bodies", "get", "c2", *args])
        assert 2 == r.exit_code and "c2.s1" in r.stderr and "c2.s2" in r.stderr
        r = cli.invoke(root_app(), ["bodies", "get", "c2.s2", *args])
        assert (0, "two-b") == (r.exit_code, r.stdout)

    def test_a_read_creates_nothing(
        self, cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`bodies get` on a store that does not exist: not found (exit 1), and no directory appears."""
        missing = tmp_path / "no-such-store"
        monkeypatch.setenv("AUDITLOG_BODY_STORE", f"file://{missing}")
        r = cli.invoke(root_app(), ["bodies", "get", "req-1", "--reader", "oncall", "--purpose", "INC-9"])
        assert (1, False) == (r.exit_code, missing.exists()), r.output

    def test_refused_get_exits_1_and_is_journaled(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """A reader without scope gets exit 1, a clear message, no body; the refusal is journaled."""
        seed(tmp_path, ring, policy)
        r = cli.invoke(root_app(), ["bodies", "get", "req-1", "--reader", "auditor", "--purpose", "INC-9"])
        assert (1, "") == (r.exit_code, r.stdout)
        assert "AccessDenied" in r.stderr and "secret body" not in r.stderr
        assert 1 == len(journal_events(tmp_path / "journal-cli", "body.read_denied"))

    def test_bad_id_is_usage_and_empty_purpose_a_refusal(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """A path trick exits 2 (bad usage); an empty purpose exits 1 (a journaled refusal)."""
        seed(tmp_path, ring, policy)
        r1 = cli.invoke(root_app(), ["bodies", "get", "../x", "--reader", "oncall", "--purpose", "INC-1"])
        r2 = cli.invoke(root_app(), ["bodies", "get", "req-1", "--reader", "oncall", "--purpose", " "])
        assert (2, 1) == (r1.exit_code, r2.exit_code)
        assert 2 == len(journal_events(tmp_path / "journal-cli", "body.read_denied"))

    def test_hold_release_purge_erase(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """Each command runs and journals its event."""
        seed(tmp_path, ring, policy)
        app = root_app()
        op = ["--operator", "records"]
        assert 0 == cli.invoke(app, ["bodies", "hold", "req-1", *op, "--reason", "CASE-3"]).exit_code
        assert 0 == cli.invoke(app, ["bodies", "release", "req-1", *op, "--reason", "CASE-3"]).exit_code
        r = cli.invoke(app, ["bodies", "purge", *op])
        assert (0, "scanned 2, purged 0, kept on hold 0, unreadable 0\n") == (r.exit_code, r.stdout)
        erase = ["bodies", "erase", *op, "--subject", "-", "--reason"]
        r = cli.invoke(app, [*erase, "DSR for bob"], input="bob\n")
        assert 2 == r.exit_code and "must not name the subject" in r.stderr and "bob" not in r.stderr
        r = cli.invoke(app, [*erase, "DSR-4"], input="bob\n")
        assert (0, "erased 2 bodies; kept 0 on legal hold\n") == (r.exit_code, r.stdout)
        records = list(iter_records(tmp_path / "journal-cli"))
        body = [rec for rec in records if str(rec.get("kind", "")).startswith("body.")]
        assert ["body.held", "body.released", "body.purged", "body.erased"] == [rec["kind"] for rec in body]
        assert ["CASE-3", "CASE-3", "DSR-4"] == [rec.get("reason") for rec in body if "reason" in rec]
        assert '"bob"' not in json.dumps(records)

    def test_missing_key_is_bad_usage(self, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
        """No key anywhere: exit 2 with a hint."""
        monkeypatch.delenv("AUDITLOG_KEY")
        r = cli.invoke(root_app(), ["bodies", "purge", "--operator", "records"])
        assert 2 == r.exit_code and "no key" in r.stderr


def trail_events(path: Path, kind: str) -> list[dict[str, object]]:
    return [r for _, r in iter_trail_records(path) if r.get("kind") == kind]


class TestWriteOnlyServers:
    def test_the_app_servers_keys_cannot_read_and_the_reader_key_can(
        self, tmp_path: Path, handle: AuditHandle, policy: Policy
    ) -> None:
        """Sealed for a reader key: the server's master key fails (journaled); the reader key reads
        (journaled as body.read before decryption)."""
        from store.bodies import ReaderKey, generate_reader_key

        public = generate_reader_key(tmp_path / "reader.pem")
        server = open_body_store(f"file://{tmp_path}/bodies", handle=handle, reader_public_key=public)
        server.put("req-1", b"card 4111", meta=body_meta(policy.defaults, tenant="acme"))
        with pytest.raises(AccessDenied):
            server.get("req-1", reader="oncall", purpose="INC-1")
        investigator = open_body_store(
            f"file://{tmp_path}/bodies",
            handle=handle,
            reader_key=ReaderKey.from_file(tmp_path / "reader.pem"),
        )
        assert b"card 4111" == investigator.get("req-1", reader="oncall", purpose="INC-2")
        handle.flush()
        denied = trail_events(tmp_path / "journal", "body.read_denied")
        reads = trail_events(tmp_path / "journal", "body.read")
        assert ["no_key"] == [e["decision"]["reason"] for e in denied]  # type: ignore[index]
        assert ["INC-1", "INC-2"] == [e["purpose"] for e in reads]
        assert {"x25519-session"} == {e["key_scheme"] for e in reads}

    def test_the_cli_reads_with_the_reader_key_only(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """`bodies get` without --reader-key exits 1; with it, the body is printed."""
        from store.bodies import LocalBodyStore, ReaderKeySessions, SessionKeyWrapper

        r = cli.invoke(root_app(), ["bodies", "keygen", "--out", str(tmp_path / "reader.pem")])
        public = r.stdout.strip()
        store = LocalBodyStore(
            tmp_path / "bodies", keys=ring, wrapper=SessionKeyWrapper(ReaderKeySessions(public))
        )
        store.put("req-1", b"secret body", meta=body_meta(policy.defaults, tenant="acme"))
        get = ["bodies", "get", "req-1", "--reader", "oncall", "--purpose", "INC-9"]
        r = cli.invoke(root_app(), get)
        assert (1, "") == (r.exit_code, r.stdout)
        r = cli.invoke(root_app(), [*get, "--reader-key", str(tmp_path / "reader.pem")])
        assert (0, "secret body") == (r.exit_code, r.stdout)


class TestOperators:
    @pytest.mark.parametrize(
        ("operator", "reason"), [("intern", "missing_scope"), ("nobody", "not_an_operator")]
    )
    def test_undeclared_or_unscoped_operators_are_refused_on_the_record(
        self,
        bodies: PolicyBodyStore,
        policy: Policy,
        handle: AuditHandle,
        tmp_path: Path,
        operator: str,
        reason: str,
    ) -> None:
        """hold/release/purge/erase by a non-operator: AccessDenied, body.operation_denied journaled."""
        bodies.put("req-1", b"x", meta=body_meta(policy.defaults, tenant="acme", subject="s"))
        for call in (
            lambda: bodies.hold("req-1", reason="CASE-1", operator=operator),
            lambda: bodies.release("req-1", operator=operator),
            lambda: bodies.purge_expired(operator=operator),
            lambda: bodies.erase(subject="s", operator=operator),
        ):
            with pytest.raises(AccessDenied):
                call()
        handle.flush()
        denied = trail_events(tmp_path / "journal", "body.operation_denied")
        assert ["hold", "release", "purge", "erase"] == [e["operation"] for e in denied]
        assert {reason} == {e["decision"]["reason"] for e in denied}  # type: ignore[index]
        assert [] == trail_events(tmp_path / "journal", "body.held")

    def test_the_cli_refuses_a_non_operator(
        self, cli: CliRunner, tmp_path: Path, ring: KeyRing, policy: Policy
    ) -> None:
        """--operator intern: exit 1 and a journaled refusal."""
        seed(tmp_path, ring, policy)
        r = cli.invoke(root_app(), ["bodies", "hold", "req-1", "--operator", "intern", "--reason", "C-1"])
        assert 1 == r.exit_code
        assert 1 == len(trail_events(tmp_path / "journal-cli", "body.operation_denied"))


class TestAuthenticatedState:
    def test_a_hold_marker_added_on_disk_is_ignored_and_journaled(
        self, tmp_path: Path, handle: AuditHandle, policy: Policy
    ) -> None:
        """A hold written into the header by hand fails its MAC: the body is purged, tampering journaled."""
        import orjson

        from store.bodies import LocalBodyStore
        from store.bodies._crypto import pack, unpack
        from tests.store.bodies_fixtures import FakeClock

        clock = FakeClock()
        bodies = open_body_store(f"file://{tmp_path}/bodies", handle=handle, clock=clock)
        bodies.put("req-1", b"x", meta=body_meta(policy.defaults, tenant="acme"))
        bodies.put("req-2", b"y", meta=body_meta(policy.defaults, tenant="acme"))
        bodies.hold("req-2", reason="CASE-1", operator="records")
        assert isinstance(bodies.store, LocalBodyStore)
        path = Path(bodies.store.backend.path("req-1"))  # type: ignore[attr-defined]
        header, ct = unpack(path.read_bytes(), correlation_id="req-1")
        held = orjson.loads(
            unpack(Path(bodies.store.backend.path("req-2")).read_bytes(), correlation_id="req-2")[0]
        )  # type: ignore[attr-defined]
        forged = {**orjson.loads(header), "hold": held["hold"]}  # a valid hold of another body
        path.write_bytes(pack(orjson.dumps(forged), ct))
        clock.advance(2 * 86_400)
        report = bodies.purge_expired(operator="records")
        assert (1, 1) == (report.purged, report.held)
        handle.flush()
        tampered = trail_events(tmp_path / "journal", "body.tamper_detected")
        assert [("req-1", "hold")] == [(e["correlation_id"], e["what"]) for e in tampered]

    def test_an_erased_body_restored_from_a_backup_is_refused(
        self, tmp_path: Path, handle: AuditHandle, policy: Policy
    ) -> None:
        """Erase, restore the file from a backup: a reader opening the store with the trail's ledger is
        refused, and the attempt is journaled."""
        bodies = open_body_store(f"file://{tmp_path}/bodies", handle=handle)
        bodies.put("req-1", b"secret", meta=body_meta(policy.defaults, tenant="acme", subject="alice"))
        path = Path(bodies.store.backend.path("req-1"))  # type: ignore[attr-defined]
        backup = path.read_bytes()
        assert 1 == bodies.erase(subject="alice", reason="DSR-1", operator="records").erased
        path.write_bytes(backup)
        handle.flush()
        reader = open_body_store(f"file://{tmp_path}/bodies", handle=handle, ledger=True)
        with pytest.raises(BodyNotFound):
            reader.get("req-1", reader="oncall", purpose="INC-3")
        handle.flush()
        (ev,) = trail_events(tmp_path / "journal", "body.tamper_detected")
        assert ("req-1", "restored_after_erased") == (ev["correlation_id"], ev["what"])
        assert [] == trail_events(tmp_path / "journal", "body.read")


class TestReconcile:
    def test_reconcile_counts_and_exits_1_on_a_dangling_ref(
        self, cli: CliRunner, tmp_path: Path, handle: AuditHandle, policy: Policy
    ) -> None:
        """Stored, dropped and dangling refs are told apart; exit 1 while one dangles, 0 once accounted."""
        bodies = open_body_store(f"file://{tmp_path}/bodies", handle=handle)
        bodies.put("req-1", b"a", meta=body_meta(policy.defaults, tenant="acme"))
        for key in ("req-1", "req-2", "req-3"):
            handle.emit({"kind": "http.request", "correlation_id": key, "body_ref": {"key": key, "bytes": 1}})
        handle.emit({"kind": "body.dropped", "correlation_id": "req-2", "reason": "outbox_full"})
        handle.flush()
        cmd = [
            "bodies",
            "reconcile",
            str(tmp_path / "journal"),
            "--store",
            f"file://{tmp_path}/bodies",
            "--json",
        ]
        r = cli.invoke(root_app(), cmd)
        got = json.loads(r.stdout)
        assert (1, 3, 1, 1, 1) == (r.exit_code, got["refs"], got["stored"], got["accounted"], got["dangling"])
        assert ["req-3"] == got["dangling_ids"]
        handle.emit({"kind": "body.lost", "correlation_id": "req-3", "reason": "store_refused"})
        handle.flush()
        r = cli.invoke(root_app(), cmd)
        assert (0, 0) == (r.exit_code, json.loads(r.stdout)["dangling"])


class TestShipSidecar:
    def test_a_sidecar_ships_what_a_write_only_server_appended(
        self, cli: CliRunner, tmp_path: Path, handle: AuditHandle, policy: Policy
    ) -> None:
        """The server appends (ship=False); `bodies ship --once`, holding no reader key, delivers."""
        from store.bodies import OutboxConfig, generate_reader_key

        public = generate_reader_key(tmp_path / "reader.pem")
        server = open_body_store(
            f"file://{tmp_path}/bodies",
            handle=handle,
            outbox=tmp_path / "outbox",
            outbox_config=OutboxConfig(ship=False),
            reader_public_key=public,
        )
        for i in range(3):
            server.put(f"req-{i}", b"body", meta=body_meta(policy.defaults, tenant="acme"))
        server.close()
        assert 1 == len(list((tmp_path / "outbox").iterdir()))
        r = cli.invoke(
            root_app(),
            ["bodies", "ship", str(tmp_path / "outbox"), "--journal", str(tmp_path / "journal"), "--once"],
        )
        assert (0, "stored 3; packs left 0\n") == (r.exit_code, r.stdout)
        assert 3 == len(trail_events(tmp_path / "journal", "body.stored"))
