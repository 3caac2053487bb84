"""The background body writer: queue policy, spool on failure, replay with backoff, restart over a spool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.bodies import (
    AccessDenied,
    BodyMeta,
    BodyStoreUnavailable,
    BodyWriter,
    EncryptedBodyStore,
    Principal,
    PutBody,
    WriterConfig,
)
from store.bodies.memory import MemoryBackend
from store.keys import KeyRing
from tests.store.bodies_fixtures import AuditRecorder, canary_bodies, find_leaks, new_ring

ONCALL = Principal(name="oncall", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
META = BodyMeta(tenant="acme")


class FlakyBackend(MemoryBackend):
    """A memory backend that can be down, refuse credentials, or block writes until released."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.deny = False
        self.gate: threading.Event | None = None
        self.attempts = 0

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        self.attempts += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.down:
            raise BodyStoreUnavailable("test backend is down")
        if self.deny:
            raise AccessDenied("test backend refuses our credentials (AccessDenied)")
        super().write(correlation_id, header, blob, data)


@pytest.fixture
def ring() -> KeyRing:
    return new_ring()


@pytest.fixture
def backend() -> FlakyBackend:
    return FlakyBackend()


@pytest.fixture
def store(backend: FlakyBackend, ring: KeyRing) -> EncryptedBodyStore:
    return EncryptedBodyStore(backend, keys=ring, audit=AuditRecorder())


def writer_for(store: EncryptedBodyStore, spool: Path | None, **kw: object) -> BodyWriter:
    cfg = WriterConfig(spool_dir=spool, backoff_initial=0.02, backoff_max=0.1, **kw)  # type: ignore[arg-type]
    return BodyWriter(store, config=cfg)


@pytest.fixture
def writer(store: EncryptedBodyStore, tmp_path: Path) -> Iterator[BodyWriter]:
    w = writer_for(store, tmp_path / "spool")
    yield w
    w.close()


def wait_until(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


class TestBodyWriter:
    def test_is_a_put_body(self, writer: BodyWriter) -> None:
        """The middleware can take a writer wherever it takes a store."""
        assert isinstance(writer, PutBody)

    def test_stores_in_the_background(self, writer: BodyWriter, store: EncryptedBodyStore) -> None:
        """Bodies put on the writer are stored and readable after flush."""
        for i in range(20):
            writer.put(f"req-{i}", b"body %d" % i, meta=META)
        assert writer.flush(5)
        assert (20, 20, 0) == (writer.stats.accepted, writer.stats.stored, writer.stats.spooled)
        assert b"body 7" == store.get("req-7", reader=ONCALL, purpose="INC-1")

    def test_never_raises_into_the_caller(self, writer: BodyWriter) -> None:
        """Bad ids and bad bodies are counted, not raised."""
        writer.put("../etc/passwd", b"x", meta=META)
        writer.put("ok-id", "not bytes", meta=META)  # type: ignore[arg-type]
        writer.put("ok-id", b"x", meta={"tenant": "a"})  # type: ignore[arg-type]
        assert writer.flush(5)
        assert (3, 0) == (writer.stats.dropped_invalid, writer.stats.accepted)

    def test_outage_spools_then_replays_everything(
        self, writer: BodyWriter, backend: FlakyBackend, store: EncryptedBodyStore, tmp_path: Path
    ) -> None:
        """While the store is down bodies spool (encrypted); when it is back, every one is delivered."""
        backend.down = True
        bodies = canary_bodies()
        for cid, body in bodies.items():
            writer.put(cid, body, meta=META)
        assert writer.flush(5)
        assert len(bodies) == writer.stats.spooled == writer.pending_spool()
        proc = find_leaks(tmp_path / "spool")
        assert 0 == proc.returncode, proc.stdout
        backend.down = False
        assert wait_until(lambda: writer.pending_spool() == 0)
        assert len(bodies) == writer.stats.replayed
        for cid, body in bodies.items():
            assert body == store.get(cid, reader=ONCALL, purpose="INC-1")

    def test_refused_credentials_spool_too(
        self, writer: BodyWriter, backend: FlakyBackend, store: EncryptedBodyStore
    ) -> None:
        """AccessDenied from the backend is reported in stats and nothing is lost."""
        backend.deny = True
        writer.put("req-1", b"one", meta=META)
        assert writer.flush(5)
        assert 1 == writer.stats.errors["AccessDenied"]
        assert "AccessDenied: test backend refuses our credentials (AccessDenied)" == writer.stats.last_error
        backend.deny = False
        assert wait_until(lambda: writer.pending_spool() == 0)
        assert b"one" == store.get("req-1", reader=ONCALL, purpose="INC-1")

    def test_new_bodies_spool_directly_during_an_outage(
        self, store: EncryptedBodyStore, backend: FlakyBackend, tmp_path: Path
    ) -> None:
        """After the first failure the writer stops calling the backend until the next replay is due."""
        backend.down = True
        w = BodyWriter(store, config=WriterConfig(spool_dir=tmp_path / "spool", backoff_initial=30))
        try:
            for i in range(10):
                w.put(f"req-{i}", b"n", meta=META)
            assert w.flush(5)
            assert (1, 10) == (backend.attempts, w.stats.spooled)
        finally:
            w.close()

    def test_restart_replays_an_existing_spool(
        self, backend: FlakyBackend, store: EncryptedBodyStore, tmp_path: Path
    ) -> None:
        """A writer started over a spool left by another delivers it; half-written files are discarded."""
        spool = tmp_path / "spool"
        backend.down = True
        first = writer_for(store, spool)
        for i in range(5):
            first.put(f"req-{i}", b"body", meta=META)
        assert first.flush(5)
        first.close()
        (spool / ".tmp-123-999-req-x.env").write_bytes(b"half")
        backend.down = False
        second = writer_for(store, spool)
        try:
            second.replay()
            assert wait_until(lambda: second.pending_spool() == 0)
            assert (5, []) == (second.stats.replayed, list(spool.glob(".tmp-*")))
            assert 5 == len(list(store.iter_info()))
        finally:
            second.close()

    def test_corrupt_spool_file_is_quarantined(self, store: EncryptedBodyStore, tmp_path: Path) -> None:
        """An unreadable spool file is moved aside (kept, counted) and does not block the rest."""
        spool = tmp_path / "spool"
        spool.mkdir()
        (spool / "00000000000000000001-1-bad.env").write_bytes(b"not an envelope")
        w = writer_for(store, spool)
        try:
            assert wait_until(lambda: w.stats.quarantined == 1)
            assert 1 == len(list((spool / "quarantine").iterdir()))
        finally:
            w.close()

    def test_full_queue_drops_and_counts(self, store: EncryptedBodyStore, backend: FlakyBackend) -> None:
        """on_full='drop': beyond max_queue bodies are dropped at once and counted."""
        backend.gate = threading.Event()
        w = writer_for(store, None, max_queue=2)
        try:
            for i in range(10):
                w.put(f"req-{i}", b"x", meta=META)
            assert 7 <= w.stats.dropped_full <= 8
        finally:
            backend.gate.set()
            w.close()

    def test_queued_bytes_are_bounded(self, store: EncryptedBodyStore, backend: FlakyBackend) -> None:
        """Beyond max_queue_bytes a body is dropped and counted, however short the queue."""
        backend.gate = threading.Event()
        w = writer_for(store, None, max_queue_bytes=2500)
        try:
            for i in range(5):
                w.put(f"req-{i}", b"x" * 1000, meta=META)
            assert 2 <= w.stats.dropped_full <= 3
        finally:
            backend.gate.set()
            w.close()
        assert w.flush(5)

    def test_full_queue_applies_back_pressure(self, store: EncryptedBodyStore, backend: FlakyBackend) -> None:
        """on_full='block': put waits up to block_timeout, then drops and counts."""
        backend.gate = threading.Event()
        w = writer_for(store, None, max_queue=1, on_full="block", block_timeout=0.05)
        try:
            for i in range(3):
                w.put(f"req-{i}", b"x", meta=META)
            started = time.monotonic()
            w.put("late", b"x", meta=META)
            assert time.monotonic() - started >= 0.04
            assert w.stats.dropped_full >= 1
        finally:
            backend.gate.set()
            w.close()

    def test_without_spool_failures_are_dropped_and_counted(
        self, store: EncryptedBodyStore, backend: FlakyBackend
    ) -> None:
        """No spool directory: an outage drops bodies, counted in stats."""
        backend.down = True
        w = writer_for(store, None)
        try:
            w.put("req-1", b"x", meta=META)
            assert w.flush(5)
            assert 1 == w.stats.dropped_error
        finally:
            w.close()

    def test_close_is_idempotent_and_refuses_later_bodies(self, writer: BodyWriter) -> None:
        """After close, put counts a drop instead of raising."""
        writer.close()
        writer.close()
        writer.put("req-1", b"x", meta=META)
        assert 1 == writer.stats.dropped_full

    def test_the_worker_purges_expired_bodies_itself(
        self, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With purge_interval, bodies past their retention go without a cron job, on the record."""
        import store.bodies.writer as writer_mod
        from tests.store.bodies_fixtures import FakeClock

        monkeypatch.setattr(writer_mod, "_FIRST_PURGE_DELAY", 0.05)
        clock, audit = FakeClock(), AuditRecorder()
        store = EncryptedBodyStore(MemoryBackend(), keys=ring, audit=audit, clock=clock)
        with BodyWriter(store, config=WriterConfig(purge_interval=0.05)) as w:
            w.put("short-1", b"a", meta=BodyMeta(tenant="acme", retention=10))
            w.put("short-2", b"b", meta=BodyMeta(tenant="acme", retention=10))
            w.put("long", b"c", meta=BodyMeta(tenant="acme", retention=10_000))
            assert w.flush(5)
            clock.advance(60)
            assert wait_until(lambda: w.stats.purged >= 2)
            assert (2, 0) == (w.stats.purged, w.stats.purge_errors)
        assert ["long"] == sorted(store.backend.ids())
        purges = [e for e in audit.events if e["kind"] == "body.purged"]
        assert purges and 2 == sum(e["purged"] for e in purges)
        assert all(e["actor"]["subject"] == "retention" for e in purges)

    def test_purges_of_a_store_without_audit_are_counted_not_raised(
        self, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A store that cannot journal a purge cannot purge: the worker counts it and keeps writing."""
        import store.bodies.writer as writer_mod

        monkeypatch.setattr(writer_mod, "_FIRST_PURGE_DELAY", 0.05)
        store = EncryptedBodyStore(MemoryBackend(), keys=ring)
        with BodyWriter(store, config=WriterConfig(purge_interval=0.05)) as w:
            assert wait_until(lambda: w.stats.purge_errors >= 1)
            w.put("after", b"x", meta=META)
            assert w.flush(5) and 1 == w.stats.stored
        assert "purge:AuditUnavailable" in w.stats.errors

    def test_config_is_validated(self) -> None:
        """Nonsense settings fail at construction."""
        for bad in (
            {"on_full": "explode"},
            {"max_queue": 0},
            {"backoff_initial": 0},
            {"purge_interval": 0},
            {"purge_interval": float("nan")},
        ):
            with pytest.raises(ValueError):
                WriterConfig(**bad)  # type: ignore[arg-type]
