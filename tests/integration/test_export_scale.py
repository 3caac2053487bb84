"""An evidence pack over 1.5 million events spanning five days, under a 1 GiB memory limit.

The events are written through a trail writer and compacted, as a server's trail would be; the export runs
as the CLI in a process of its own (``--memory-limit 1GB``), whose peak resident memory is measured. Events
reach the pack's Parquet in streamed batches (``Investigation.write_events``), never as one result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store.journal import JournalConfig
from store.keys import KeyRing, MasterKey
from store.trail import TrailWriter
from tests._support import write_key_file

pytestmark = pytest.mark.slow

EVENTS = 1_500_000
DAYS = 5
GIB = 1 << 30


def write_trail(root: Path, ring: KeyRing) -> None:
    """``EVENTS`` request events spread evenly over the last ``DAYS`` days; one in 50 a denial."""
    config = JournalConfig(fsync="never", source="web-1", max_segment_bytes=64 << 20)
    start = datetime.now(UTC) - timedelta(days=DAYS)
    step = timedelta(seconds=DAYS * 86400 / EVENTS)
    with TrailWriter(root, keys=ring, config=config, checkpoint_interval=None, seal_on_sigterm=False) as w:
        for i in range(EVENTS):
            allowed = i % 50 != 0
            w.append_owned(
                {
                    "v": 1,
                    "ts": (start + i * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "kind": "http.request" if allowed else "authz.denied",
                    "correlation_id": f"{i:032x}",
                    "actor": {"subject": f"user{i % 97}", "tenant": "acme"},
                    "action": {"name": "/orders/{n}", "method": "GET"},
                    "decision": {"allowed": allowed, "reason": "ok" if allowed else "missing_scopes"},
                    "outcome": {"status": "ok" if allowed else "denied", "duration_ms": 1.5},
                }
            )


# The CLI, in a process that prints its own peak resident memory last (a child starts from its parent's
# pages, so this test process does the building in another child and stays small).
EXPORT = """
import resource, sys
from auditlog.cli import main
sys.argv = ["auditlog", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print("peak-rss-kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""
BUILD = """
import sys
from pathlib import Path
from auditlog.lake.compact import compact
from store.keys import KeyRing
from tests.integration.test_export_scale import EVENTS, write_trail
ring = KeyRing.from_file(sys.argv[2])
write_trail(Path(sys.argv[1]), ring)
assert EVENTS <= compact(sys.argv[1], keys=ring).rows
"""


class TestExportAtScale:
    @pytest.mark.timeout(600)
    def test_five_days_of_a_million_and_a_half_events_under_one_gib(self, tmp_path: Path) -> None:
        """The export completes, the pack holds every event, and the exporting process stays under 1 GiB."""
        ring = KeyRing(MasterKey.generate())
        trail = tmp_path / "trail"
        key = write_key_file(ring, tmp_path / "k.key")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        # Written and compacted in a process of their own (see EXPORT).
        build = subprocess.run(
            [sys.executable, "-c", BUILD, str(trail), str(key)],
            capture_output=True,
            text=True,
            timeout=540,
            env=env,
        )
        assert 0 == build.returncode, build.stderr
        pack = tmp_path / "pack.zip"
        proc = subprocess.run(
            [sys.executable, "-c", EXPORT, "export", str(trail), "--since", f"{DAYS + 1}d", "--until", "now",
             "--out", str(pack), "--key-file", str(key), "--memory-limit", "1GB",
             "--journal", str(tmp_path / "investigations"), "--quiet", "--json"],
            capture_output=True, text=True, timeout=540, env=env,
        )  # fmt: skip
        assert 0 == proc.returncode, proc.stderr
        peak = int(proc.stderr.strip().splitlines()[-1].split()[-1]) << 10
        assert peak < GIB, f"peak RSS {peak >> 20} MiB"
        import pyarrow.parquet as pq

        with zipfile.ZipFile(pack) as zf, zf.open("events.parquet") as fh:
            assert EVENTS <= pq.ParquetFile(fh).metadata.num_rows
