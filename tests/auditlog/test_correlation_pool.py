"""The buffered CSPRNG behind new correlation, span and event ids: never the same bytes twice, in this
process, across threads, or in a forked child."""

from __future__ import annotations

import os
import threading

import pytest

from auditlog import correlation


class TestRandomBytes24:
    def test_slots_are_unique_across_refills(self) -> None:
        """Three buffers' worth of draws are all distinct 24-byte values."""
        drawn = [correlation.random_bytes24() for _ in range(3 * correlation._SLOTS)]
        assert {24} == {len(b) for b in drawn}
        assert len(drawn) == len(set(drawn))

    def test_threads_never_share_a_slot(self) -> None:
        """Eight threads drawing at once across refills never get the same bytes."""
        out: list[list[bytes]] = [[] for _ in range(8)]

        def draw(k: int) -> None:
            out[k].extend(correlation.random_bytes24() for _ in range(2000))

        threads = [threading.Thread(target=draw, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        allbytes = [b for part in out for b in part]
        assert len(allbytes) == len(set(allbytes))

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_a_forked_child_draws_fresh_bytes(self) -> None:
        """The child discards the inherited buffer: its next draw is not the parent's next draw."""
        correlation.random_bytes24()  # a buffer with slots left
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.write(w, correlation.random_bytes24())
            os._exit(0)
        os.close(w)
        child = os.read(r, 24)
        os.close(r)
        os.waitpid(pid, 0)
        assert correlation.random_bytes24() != child

    def test_new_ids_have_their_shapes(self) -> None:
        """Correlation ids are 32 hex characters, span ids 16, as before."""
        cid, span = correlation.new_correlation_id(), correlation.new_span_id()
        assert (32, 16) == (len(cid), len(span))
        int(cid, 16), int(span, 16)
