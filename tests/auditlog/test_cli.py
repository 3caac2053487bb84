"""The auditlog command line: demo, verify, fingerprint, keygen, policy check, selftest."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

import auditlog
from auditlog.canaries import load_canaries, scan
from auditlog.cli.app import app
from auditlog.demo.selftest import run_selftest
from auditlog.policy import loads
from processors import Finding
from store.journal import JournalConfig
from store.keys import KeyRing
from store.trail import TrailWriter, iter_trail_records
from tests._support import only_stream, write_hosts
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def write_journal(tmp_path: Path, n: int = 30) -> tuple[Path, Path]:
    key_file = tmp_path / "k.key"
    assert 0 == runner.invoke(app, ["keygen", str(key_file)]).exit_code
    d = tmp_path / "journal"
    h = auditlog.configure(journal_dir=d, key=key_file, stdlib=False)
    for i in range(n):
        structlog.get_logger().info("e", i=i)
    h.shutdown()
    return d, key_file


class TestKeygen:
    def test_writes_0600_and_never_prints_the_key(self, tmp_path: Path) -> None:
        """The key file is private and the output shows only the key id."""
        p = tmp_path / "a.key"
        res = runner.invoke(app, ["keygen", str(p)])
        key = KeyRing.from_file(p).active
        assert (0, 0o600) == (res.exit_code, stat.S_IMODE(p.stat().st_mode))
        assert key.key_id in res.output and key.to_b64() not in res.output

    def test_refuses_to_overwrite_and_rotates(self, tmp_path: Path) -> None:
        """A second keygen fails; --rotate prepends a key and keeps the old one."""
        p = tmp_path / "a.key"
        runner.invoke(app, ["keygen", str(p)])
        old = KeyRing.from_file(p).active
        assert 2 == runner.invoke(app, ["keygen", str(p)]).exit_code
        assert 0 == runner.invoke(app, ["keygen", str(p), "--rotate"]).exit_code
        ring = KeyRing.from_file(p)
        assert ((old.key_id,), True) == (tuple(k.key_id for k in ring.older), ring.active != old)


class TestVerify:
    def test_intact_journal_passes(self, tmp_path: Path) -> None:
        """verify exits 0 on an untouched journal."""
        d, key_file = write_journal(tmp_path)
        res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)])
        assert 0 == res.exit_code, res.output
        assert "OK" in res.output

    def test_flipped_byte_fails_naming_segment_and_seq(self, tmp_path: Path) -> None:
        """A changed record makes verify exit 1 and name where."""
        d, key_file = write_journal(tmp_path)
        seg = sorted(only_stream(d).glob("*.jsonl"))[0]
        lines = seg.read_bytes().splitlines(keepends=True)
        lines[5] = lines[5].replace(b'"e"', b'"f"', 1)
        seg.write_bytes(b"".join(lines))
        res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)])
        assert 1 == res.exit_code
        assert seg.name in res.output and "seq" in res.output

    def test_missing_or_empty_directory_is_an_error(self, tmp_path: Path) -> None:
        """A missing directory, or one that is no trail, exits 2 and never says OK."""
        _, key_file = write_journal(tmp_path)
        (tmp_path / "empty").mkdir()
        for d in (tmp_path / "missing", tmp_path / "empty"):
            res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)])
            assert 2 == res.exit_code and "OK" not in res.output, res.output

    def test_several_writers_are_one_trail(self, tmp_path: Path) -> None:
        """Two processes write to one trail at once, beside an earlier one: verify lists every stream."""
        d, key_file = write_journal(tmp_path)
        code = (
            "import sys, structlog, auditlog\n"
            "h = auditlog.configure(journal_dir=sys.argv[1], key=sys.argv[2], stdlib=False)\n"
            "[structlog.get_logger().info('e', i=i) for i in range(200)]\n"
            "h.shutdown()\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", code, str(d), str(key_file)]) for _ in range(2)]
        assert [0, 0] == [p.wait(60) for p in procs]
        res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file), "--json"])
        doc = json.loads(res.stdout)
        assert (0, True, 3) == (res.exit_code, doc["ok"], len(doc["streams"]))
        assert 30 + 400 == sum(s["records"] - s["segments"] for s in doc["streams"])  # minus headers

    def test_open_stream_warns_and_fails_unless_allowed(self, tmp_path: Path) -> None:
        """A live writer's stream is a warning: exit 1 by default, 0 with --allow-open."""
        d, key_file = write_journal(tmp_path)
        live = auditlog.configure(journal_dir=d, key=key_file, stdlib=False)
        try:
            structlog.get_logger().info("live")
            live.flush()
            res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)])
            assert 1 == res.exit_code and "warning" in res.output
            res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file), "--allow-open"])
            assert 0 == res.exit_code, res.output
        finally:
            live.shutdown()

    def test_repair_seals_a_dead_writers_stream(self, tmp_path: Path) -> None:
        """A writer killed without closing leaves a stale stream; --repair recovers and seals it."""
        d, key_file = write_journal(tmp_path)
        code = (
            "import os, sys, structlog, auditlog\n"
            "h = auditlog.configure(journal_dir=sys.argv[1], key=sys.argv[2], stdlib=False)\n"
            "structlog.get_logger().info('e')\n"
            "h.flush()\n"
            "os._exit(0)\n"
        )
        assert 0 == subprocess.run([sys.executable, "-c", code, str(d), str(key_file)], timeout=60).returncode
        assert 1 == runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)]).exit_code
        res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file), "--repair"])
        assert 0 == res.exit_code and "repaired" in res.output, res.output

    def test_anchor_catches_a_rollback(self, tmp_path: Path) -> None:
        """A trail copied, written to, then restored from the copy verifies alone but not against the
        newer checkpoint log kept elsewhere (--anchor)."""
        d, key_file = write_journal(tmp_path)
        shutil.copytree(d, tmp_path / "backup")
        h = auditlog.configure(journal_dir=d, key=key_file, stdlib=False)
        structlog.get_logger().info("later")
        h.shutdown()
        anchor = tmp_path / "anchor.jsonl"
        shutil.copy(d / "checkpoints.jsonl", anchor)
        shutil.rmtree(d)
        shutil.copytree(tmp_path / "backup", d)
        assert 0 == runner.invoke(app, ["verify", str(d), "--key-file", str(key_file)]).exit_code
        res = runner.invoke(app, ["verify", str(d), "--key-file", str(key_file), "--anchor", str(anchor)])
        assert 1 == res.exit_code and "FAIL" in res.output, res.output

    def test_missing_key_is_usage_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without any key, verify exits 2 with a hint."""
        monkeypatch.delenv("AUDITLOG_KEY", raising=False)
        monkeypatch.delenv("AUDITLOG_KEY_FILE", raising=False)
        res = runner.invoke(app, ["verify", str(tmp_path)])
        assert 2 == res.exit_code
        assert "keygen" in res.output


class TestFingerprint:
    def test_matches_the_pipeline(self, tmp_path: Path) -> None:
        """The CLI fingerprint equals what the pipeline journals for the same value and key."""
        _, key_file = write_journal(tmp_path, n=1)
        h = auditlog.configure(journal_dir=tmp_path / "j2", key=key_file, stdlib=False)
        expected = h.fingerprinter.fingerprint("ann@example.org")
        h.shutdown()
        res = runner.invoke(app, ["fingerprint", "-", "--key-file", str(key_file)], input="ann@example.org\n")
        assert (0, expected) == (res.exit_code, res.output.strip())


class TestPolicyCheck:
    def test_valid_policy_with_warning(self, tmp_path: Path) -> None:
        """A valid policy passes; a sensitive allowlisted field warns; --strict fails on it."""
        p = tmp_path / "p.toml"
        p.write_text("[[rules]]\nmatch = { tool = 'login' }\nlevel = 'values'\nallow = ['password']\n")
        res = runner.invoke(app, ["policy", "check", str(p)])
        assert 0 == res.exit_code
        assert "'password' looks sensitive" in res.output
        assert 1 == runner.invoke(app, ["policy", "check", str(p), "--strict"]).exit_code

    def test_invalid_policy_names_entry(self, tmp_path: Path) -> None:
        """A bad entry fails with its path."""
        p = tmp_path / "p.toml"
        p.write_text("[[rules]]\nmatch = { tool = 3 }\n")
        res = runner.invoke(app, ["policy", "check", str(p)])
        assert 1 == res.exit_code
        assert "rules[0].match.tool: expected a string" in res.output


class NoScanner:
    """A scanner that finds nothing: the self-test must catch what it lets through."""

    def findings(self, text: str) -> list[Finding]:
        return []

    def redact(self, text: str) -> str:
        return text


class TestSelftest:
    def test_default_pipeline_passes(self) -> None:
        """The default policy and scanner let no canary through."""
        res = runner.invoke(app, ["selftest"])
        assert 0 == res.exit_code, res.output

    def test_user_policy_passes(self, tmp_path: Path) -> None:
        """A policy that allowlists fields is exercised on those fields and still passes."""
        p = tmp_path / "p.toml"
        p.write_text("[[rules]]\nmatch = { logger = 'app.pay' }\nlevel = 'values'\nallow = ['note']\n")
        res = runner.invoke(app, ["selftest", "--policy", str(p)])
        assert 0 == res.exit_code, res.output

    def test_fails_when_values_get_through(self) -> None:
        """With a scanner that finds nothing and an allowlisted field, the self-test reports leaks."""
        pol = loads("[[rules]]\nmatch = { logger = 'app.pay' }\nlevel = 'values'\nallow = ['note']\n")
        result = run_selftest(pol, scanner=NoScanner())
        assert not result.ok
        assert {"note"} <= {where for _, _, where in result.leaks}


class TestSelftestScan:
    def test_scans_every_stream_of_several_trails(self, tmp_path: Path) -> None:
        """--scan A --also B: one row per stream of both, then the total; nothing found, exit 0."""
        hosts = write_hosts(tmp_path)
        res = runner.invoke(app, ["selftest", "--scan", str(hosts.a), "--also", str(hosts.b)])
        assert 0 == res.exit_code, res.output
        assert "host-a." in res.output and "host-b." in res.output
        records = sum(1 for _ in iter_trail_records(hosts.a)) + sum(1 for _ in iter_trail_records(hosts.b))
        assert f"2 trail(s), 2 streams, {records} records, 0 leaks" in res.output

    def test_a_value_in_a_stream_is_named_never_printed(self, tmp_path: Path) -> None:
        """A record written past the pipeline (raw) with a canary: exit 1, the canary's name, the field
        and the stream are named; the value is not printed."""
        hosts = write_hosts(tmp_path)
        corpus = load_canaries()
        value = corpus.values["api_key"]
        config = JournalConfig(source="raw-writer", fsync="never")
        with TrailWriter(hosts.b, keys=hosts.ring, config=config) as writer:
            writer.append({"v": 1, "kind": "app.log", "note": value})
        res = runner.invoke(app, ["selftest", "--scan", str(hosts.a), "--also", str(hosts.b)])
        assert 1 == res.exit_code, res.output
        assert "api_key in note" in res.output and "raw-writer." in res.output
        assert [] == corpus.leaks_in(res.output)

    def test_a_directory_that_is_no_trail_is_an_error(self, tmp_path: Path) -> None:
        res = runner.invoke(app, ["selftest", "--scan", str(tmp_path)])
        assert 2 == res.exit_code
        assert "is not an audit trail" in res.output

    def test_also_needs_scan(self, tmp_path: Path) -> None:
        res = runner.invoke(app, ["selftest", "--also", str(tmp_path)])
        assert 2 == res.exit_code
        assert "--also goes with --scan" in res.output


class TestDemo:
    def test_demo_runs_verifies_and_leaks_nothing(self, tmp_path: Path) -> None:
        """`auditlog demo` exits 0; its journal verifies; the leak scan finds nothing in it or its output."""
        d = tmp_path / "demo"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "auditlog", "demo", "--dir", str(d)],
            capture_output=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert 0 == proc.returncode, proc.stdout.decode() + proc.stderr.decode()
        (tmp_path / "out.txt").write_bytes(proc.stdout + proc.stderr)
        res = runner.invoke(app, ["verify", str(d / "journal"), "--key-file", str(d / "demo.key")])
        assert 0 == res.exit_code, res.output
        assert [] == scan(d, tmp_path / "out.txt", canaries=corpus())

    def test_refuses_a_foreign_directory(self, tmp_path: Path) -> None:
        """The demo never deletes a directory it did not create."""
        (tmp_path / "precious.txt").write_text("x")
        res = runner.invoke(app, ["demo", "--dir", str(tmp_path)])
        assert 2 == res.exit_code
        assert (tmp_path / "precious.txt").exists()

    def test_help_everywhere(self) -> None:
        """Every command answers --help."""
        for cmd in (
            ["--help"],
            ["demo", "--help"],
            ["verify", "--help"],
            ["policy", "check", "--help"],
            ["selftest", "--help"],
            ["keygen", "--help"],
            ["fingerprint", "--help"],
        ):
            res = runner.invoke(app, cmd)
            assert 0 == res.exit_code, cmd
