"""Two application processes and a CLI investigator write to one trail at the same time.

The processes journal through ``auditlog.configure`` as the quick start does; meanwhile an investigator
reads a stored body (``auditlog bodies get``) and queries the live trail (``auditlog query``), both
journaling into that same trail as streams of their own. Afterwards the trail verifies, every event is
there once, and an evidence pack built from the trail lists the body read under CC6.1.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

from auditlog.bodies import body_meta
from auditlog.policy import loads
from store.bodies import LocalBodyStore
from store.keys import KeyRing, MasterKey
from store.trail import iter_trail_records, list_streams, verify_trail
from tests._support import write_key_file

BIN = Path(sys.executable).parent
EVENTS = 400
POLICY = """
version = 1
id = "trail-writers"

[readers.oncall]
scopes = ["bodies:read"]
tenants = ["*"]
"""
WRITER = """
import sys, time
import auditlog
trail, key, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
h = auditlog.configure(journal_dir=trail, key=key, stdlib=False, source=name)
for i in range(n):
    h.emit({"kind": "http.request", "correlation_id": f"{name}-{i:06d}", "action": {"name": "/x"}})
    if i % 50 == 0:
        time.sleep(0.01)  # let the other writers in
h.shutdown()
"""


class TestManyWritersOneTrail:
    def test_two_processes_and_an_investigator(self, tmp_path: Path) -> None:
        """Verify passes, every event is there once, and the investigator's body read is in the pack."""
        ring = KeyRing(MasterKey.generate())
        key = write_key_file(ring, tmp_path / "k.key")
        (tmp_path / "policy.toml").write_text(POLICY)
        policy = loads(POLICY)
        trail = tmp_path / "trail"
        LocalBodyStore(tmp_path / "bodies", keys=ring).put(
            "req-1", b"a stored body", meta=body_meta(policy.defaults, tenant="acme", subject="bob")
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(trail), str(key), name, str(EVENTS)], env=env)
            for name in ("app-1", "app-2")
        ]
        cli = [str(BIN / "auditlog")]
        common = ["--key-file", str(key)]
        read = subprocess.run(
            [*cli, "bodies", "get", "req-1", "--reader", "oncall", "--purpose", "INC-7",
             "--store", f"file://{tmp_path / 'bodies'}", "--journal", str(trail),
             "--policy", str(tmp_path / "policy.toml"), *common],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        query = subprocess.run(
            [*cli, "query", str(trail), "top", "--by", "actor", *common],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert [0, 0] == [w.wait(120) for w in writers]
        assert (0, b"a stored body") == (read.returncode, read.stdout), read.stderr
        assert 0 == query.returncode, query.stderr

        report = verify_trail(trail, keys=ring)
        assert report.ok, [str(p) for p in (*report.problems, *report.warnings)]
        sources = Counter(s.source for s in list_streams(trail))
        assert {"app-1": 1, "app-2": 1} == {k: v for k, v in sources.items() if k.startswith("app-")}
        # the investigator's two commands (bodies get, then query) share one stream: theirs for the day
        assert 1 == sum(v for k, v in sources.items() if k.startswith("cli."))
        cids = Counter(
            r["correlation_id"] for _, r in iter_trail_records(trail) if r.get("kind") == "http.request"
        )
        assert 2 * EVENTS == len(cids) and {1} == set(cids.values())

        pack = tmp_path / "pack.zip"
        export = subprocess.run(
            [*cli, "export", str(trail), "--since", "1h", "--until", "now", "--out", str(pack),
             "--policy", str(tmp_path / "policy.toml"), "--quiet", *common],
            capture_output=True, env=env, timeout=300,
        )  # fmt: skip
        assert 0 == export.returncode, export.stderr
        with zipfile.ZipFile(pack) as zf:
            rows = list(csv.DictReader(io.TextIOWrapper(zf.open("controls/CC6.1_body_reads.csv"))))
        assert [("req-1", "INC-7")] == [(r["correlation_id"], r["purpose"]) for r in rows]
