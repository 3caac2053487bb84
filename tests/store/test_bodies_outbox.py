"""BodyOutbox: local first, then remote; every body it takes ends stored, dropped or lost, on the record."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from store.bodies import (
    BodyMeta,
    BodyOutbox,
    BodyStoreUnavailable,
    LocalBodyStore,
    MemoryBodyStore,
    OutboxConfig,
    Principal,
)
from store.bodies.exceptions import BodyIntegrityError
from store.bodies.memory import MemoryBackend
from store.bodies.outbox import read_pack
from tests.store.bodies_fixtures import AuditRecorder, new_ring

META = BodyMeta(tenant="acme", subject="u-1", retention=3600)
READER = Principal(name="oncall", scopes=frozenset({"bodies:read"}), tenants=frozenset({"*"}))
FAST = OutboxConfig(
    pack_age=0.05, ship_interval=0.02, backoff_initial=0.02, backoff_max=0.05, close_timeout=1
)


class FlakyBackend(MemoryBackend):
    """A memory backend that raises ``error`` on write while it is set."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        super().write(correlation_id, header, blob, data)


def flaky_store(audit: AuditRecorder) -> tuple[MemoryBodyStore, FlakyBackend]:
    store = MemoryBodyStore(keys=new_ring(), audit=audit)
    backend = FlakyBackend()
    store.backend = backend
    return store, backend


class TestBodyOutbox:
    def test_a_body_is_on_disk_before_put_returns_and_shipped_after(self, tmp_path: Path) -> None:
        """put appends an encrypted record to a pack; the shipper stores it, journals body.stored, deletes."""
        audit = AuditRecorder()
        store = MemoryBodyStore(keys=new_ring(), audit=audit)
        box = BodyOutbox(store, tmp_path / "outbox", audit=audit, config=FAST, start=False)
        box.put("req-1", b"secret body 1", meta=META)
        [pack] = list((tmp_path / "outbox").iterdir())
        assert b"secret body 1" not in pack.read_bytes()
        assert 1 == len(list(read_pack(pack)))
        assert box.flush(5)
        assert b"secret body 1" == store.get("req-1", reader=READER, purpose="INC-1")
        assert [] == list((tmp_path / "outbox").iterdir())
        assert ["req-1"] == [e["correlation_id"] for e in audit.events if e["kind"] == "body.stored"]
        box.close()

    def test_an_outage_keeps_packs_and_a_new_outbox_ships_them(self, tmp_path: Path) -> None:
        """While the store is down, packs stay; a later outbox over the same directory ships them all."""
        audit = AuditRecorder()
        store, backend = flaky_store(audit)
        backend.error = BodyStoreUnavailable("down")
        box = BodyOutbox(store, tmp_path / "outbox", audit=audit, config=FAST)
        for i in range(50):
            box.put(f"req-{i}", b"x" * 100, meta=META)
        time.sleep(0.3)
        box.close(timeout=0.2)
        assert box.pending_packs() >= 1 and 0 == box.stats.stored
        backend.error = None
        again = BodyOutbox(store, tmp_path / "outbox", audit=audit, config=FAST)
        assert again.flush(5)
        again.close()
        assert 50 == len(list(store.backend.ids()))
        assert 50 == len([e for e in audit.events if e["kind"] == "body.stored"])

    def test_a_killed_writer_leaves_a_pack_the_next_outbox_ships(self, tmp_path: Path) -> None:
        """SIGKILL right after put: the open pack (its lock now free) is shipped by the next outbox."""
        script = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from store.bodies import BodyMeta, BodyOutbox, MemoryBodyStore
            from store.keys import KeyRing, MasterKey
            ring = KeyRing(MasterKey.from_b64(sys.argv[1]))
            box = BodyOutbox(MemoryBodyStore(keys=ring), sys.argv[2], start=False)
            for i in range(20):
                box.put(f"k-{{i}}", b"body", meta=BodyMeta(tenant="acme"))
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        ring = new_ring()
        proc = subprocess.run(
            [sys.executable, "-c", script, ring.active.to_b64(), str(tmp_path / "outbox")], timeout=60
        )
        assert -9 == proc.returncode
        [pack] = list((tmp_path / "outbox").iterdir())
        assert pack.name.endswith(".open")
        store = MemoryBodyStore(keys=ring, audit=AuditRecorder())
        box = BodyOutbox(store, tmp_path / "outbox", config=FAST)
        assert box.flush(5)
        box.close()
        assert {f"k-{i}" for i in range(20)} == set(store.backend.ids())

    def test_a_live_writers_open_pack_is_not_taken(self, tmp_path: Path) -> None:
        """Two outboxes over one directory: neither ships the other's open pack."""
        ring = new_ring()
        a = BodyOutbox(
            MemoryBodyStore(keys=ring), tmp_path / "o", config=OutboxConfig(pack_age=60), start=False
        )
        a.put("a-1", b"x", meta=META)
        b_store = MemoryBodyStore(keys=ring)
        b = BodyOutbox(b_store, tmp_path / "o", config=FAST, start=False)
        assert b.ship_once()
        assert [] == list(b_store.backend.ids())
        assert 1 == a.pending_packs()
        a.close()
        assert [] == list((tmp_path / "o").iterdir())

    def test_a_full_outbox_drops_and_journals_each_body(self, tmp_path: Path) -> None:
        """Past the disk budget, on_full='drop' counts and journals body.dropped with reason outbox_full."""
        audit = AuditRecorder()
        store, backend = flaky_store(audit)
        backend.error = BodyStoreUnavailable("down")
        cfg = OutboxConfig(max_outbox_bytes=20_000, pack_age=0.05, ship_interval=0.02)
        box = BodyOutbox(store, tmp_path / "o", audit=audit, config=cfg, start=False)
        for i in range(40):
            box.put(f"r-{i}", b"y" * 1000, meta=META)
        dropped = [e for e in audit.events if e["kind"] == "body.dropped"]
        assert 40 == box.stats.accepted + box.stats.dropped["outbox_full"]
        assert box.stats.dropped["outbox_full"] == len(dropped) > 0
        assert {"outbox_full"} == {e["reason"] for e in dropped}
        box.close(timeout=0)

    def test_block_waits_for_the_shipper_then_keeps_the_body(self, tmp_path: Path) -> None:
        """on_full='block': put waits (bounded) while the shipper frees space, and nothing is dropped."""
        audit = AuditRecorder()
        store = MemoryBodyStore(keys=new_ring(), audit=audit)
        cfg = OutboxConfig(
            max_outbox_bytes=8_000, on_full="block", block_timeout=2.0, pack_bytes=2_000, ship_interval=0.01
        )
        box = BodyOutbox(store, tmp_path / "o", audit=audit, config=cfg)
        for i in range(30):
            box.put(f"r-{i}", b"z" * 1000, meta=META)
        assert box.flush(5)
        box.close()
        assert (30, {}) == (box.stats.stored, box.stats.dropped)

    def test_a_refusing_store_loses_the_body_on_the_record(self, tmp_path: Path) -> None:
        """A non-retryable refusal resolves the body as body.lost (store_refused); the pack goes."""
        audit = AuditRecorder()
        store, backend = flaky_store(audit)
        backend.error = BodyIntegrityError("refused")
        box = BodyOutbox(store, tmp_path / "o", audit=audit, config=FAST, start=False)
        box.put("r-1", b"q", meta=META)
        assert box.flush(5)
        assert [("r-1", "store_refused")] == [
            (e["correlation_id"], e["reason"]) for e in audit.events if e["kind"] == "body.lost"
        ]

    def test_disk_full_drops_on_the_record(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """ENOSPC on append: body.dropped with reason disk_full; put never raises."""
        audit = AuditRecorder()
        box = BodyOutbox(MemoryBodyStore(keys=new_ring()), tmp_path / "o", audit=audit, start=False)
        real = os.write

        def full(fd: int, data: Any) -> int:
            if len(data) > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr(os, "write", full)
        box.put("r-1", b"q" * 200, meta=META)
        monkeypatch.undo()
        assert [("r-1", "disk_full")] == [
            (e["correlation_id"], e["reason"]) for e in audit.events if e["kind"] == "body.dropped"
        ]

    def test_concurrent_puts_all_ship(self, tmp_path: Path) -> None:
        """Eight threads putting at once: every body is stored exactly once."""
        store = LocalBodyStore(tmp_path / "store", keys=new_ring(), audit=AuditRecorder())
        box = BodyOutbox(store, tmp_path / "o", config=FAST)

        def work(t: int) -> None:
            for i in range(50):
                box.put(f"t{t}-{i}", os.urandom(300), meta=META)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert box.flush(10)
        box.close()
        assert 400 == len(set(store.backend.ids())) == box.stats.stored


class TestOutboxConfig:
    @pytest.mark.parametrize(
        "kw", [{"on_full": "wait"}, {"max_outbox_bytes": 0}, {"backoff_initial": 0}, {"pack_age": -1}]
    )
    def test_bad_settings_are_refused(self, kw: dict[str, Any]) -> None:
        """Invalid settings raise ValueError at construction."""
        with pytest.raises(ValueError):
            OutboxConfig(**kw)
