"""auditlog.evidence: signed evidence packs mapped to SOC 2 controls, and verify-pack."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from auditlog.canaries import scan
from auditlog.evidence import PackInvalid, export, signer_public_key, verify_pack
from auditlog.evidence.pack import _signing_key
from auditlog.lake.compact import compact
from store.keys import KeyRing, MasterKey
from tests._support import every_record, query_cli, write_key_file
from tests.auditlog.test_query import POLICY, POLICY_TOML, Incident, write_incident
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[2]

CONTROL_FILES = {
    "controls/CC6.1_access_decisions.csv",
    "controls/CC6.1_body_reads.csv",
    "controls/CC7.2_monitoring_coverage.csv",
    "controls/CC7.3_denials.csv",
    "controls/CC7.3_anomalies.csv",
    "controls/CC7.4_incident_timelines.csv",
}


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    inc = write_incident(tmp_path_factory.mktemp("evidence"))
    compact(inc.journal, keys=inc.ring, max_batch_bytes=20_000)  # part Parquet, part JSONL
    return inc


@pytest.fixture(scope="module")
def pack(incident: Incident) -> Path:
    stages: list[str] = []
    with incident.handle() as handle:
        report = export(
            incident.journal,
            incident.root / "pack.zip",
            since=incident.days[0],
            until="0m",
            audit=handle,
            progress=lambda stage, done, total: stages.append(stage),
        )
    assert ["events", "controls", "chain", "report", "sign", "done"] == stages
    assert report.chain_ok
    return report.path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rewrite(path: Path, target: Path, changed: dict[str, bytes]) -> None:
    content = {**members(path), **changed}
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)


def table(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


class TestPackContents:
    def test_members(self, pack: Path) -> None:
        """The pack holds events, the control tables, chain result, policy, retention, reports, charts."""
        names = set(members(pack))
        assert CONTROL_FILES <= names
        assert {
            "manifest.json", "manifest.sig", "events.parquet", "chain_verification.json", "policy.json",
            "retention.json", "report.html", "report.md", "charts/events_per_day.svg",
            "charts/denials_per_tool.svg", "charts/body_reads_per_reader.svg",
        } <= names  # fmt: skip

    def test_manifest_hashes_every_member_and_holds_the_key(self, pack: Path, incident: Incident) -> None:
        """manifest.json lists the SHA-256 of every other member and the signer's public key."""
        files = members(pack)
        manifest = orjson.loads(files["manifest.json"])
        assert set(files) - {"manifest.json", "manifest.sig"} == set(manifest["files"])
        public, fingerprint = signer_public_key(incident.ring)
        assert (public, fingerprint, "Ed25519") == (
            manifest["signature"]["public_key"], manifest["signature"]["fingerprint"],
            manifest["signature"]["algorithm"],
        )  # fmt: skip

    def test_events_parquet_holds_the_range(self, pack: Path, incident: Incident) -> None:
        """events.parquet has every record of the range, the incident included."""
        with zipfile.ZipFile(pack) as zf, zf.open("events.parquet") as fh:
            rows = pq.read_table(io.BytesIO(fh.read())).to_pylist()
        cids = {r["correlation_id"] for r in rows}
        assert incident.incident_cid in cids and set(incident.denied_cids) <= cids
        assert sum(incident.counts.values()) + 3 <= len(rows)  # + the application log lines

    def test_control_tables(self, pack: Path, incident: Incident) -> None:
        """The CSVs answer each control: decisions, body reads, coverage, denials, anomalies, timelines."""
        files = members(pack)
        decisions = {r["resource"]: r for r in table(files["controls/CC6.1_access_decisions.csv"])}
        assert ("0", "4") == (
            decisions["export_customers"]["allowed"],
            decisions["export_customers"]["denied"],
        )
        reads = table(files["controls/CC6.1_body_reads.csv"])
        assert ["oncall-ann", "intern"] == [r["reader"] for r in reads]
        coverage = table(files["controls/CC7.2_monitoring_coverage.csv"])
        assert set(incident.days) == {r["date"] for r in coverage}
        denials = table(files["controls/CC7.3_denials.csv"])
        assert incident.denied_cids == [r["correlation_id"] for r in denials if r["kind"] == "authz.denied"]
        anomalies = table(files["controls/CC7.3_anomalies.csv"])
        assert {"rate_spike", "denial_burst", "first_seen_tool"} == {r["type"] for r in anomalies}
        timelines = table(files["controls/CC7.4_incident_timelines.csv"])
        steps = [r["kind"] for r in timelines if r["correlation_id"] == incident.incident_cid]
        assert [*incident.incident_steps, "body.read_denied"] == steps

    def test_chain_verification_covers_every_segment_in_range(self, pack: Path, incident: Incident) -> None:
        """Every segment holding rows in range is reported verified, by chain or by manifest."""
        files = members(pack)
        chain = orjson.loads(files["chain_verification.json"])
        with zipfile.ZipFile(pack) as zf, zf.open("events.parquet") as fh:
            segments = set(pq.read_table(io.BytesIO(fh.read()), columns=["segment"]).column(0).to_pylist())
        assert chain["ok"] and not chain["problems"]
        assert segments == {s["segment"] for s in chain["segments"]}
        assert all(s["ok"] for s in chain["segments"])
        assert {"chain"} == {s["checked"] for s in chain["segments"]}
        assert chain["batches"] and all(b["manifest_mac_ok"] and b["files_ok"] for b in chain["batches"])

    def test_policy_snapshot_and_retention(self, pack: Path) -> None:
        """policy.json holds the snapshot and its hash; retention.json the retention settings."""
        files = members(pack)
        policy = orjson.loads(files["policy.json"])
        assert (POLICY.id, POLICY.hash, POLICY.snapshot()) == (
            policy["id"],
            policy["hash"],
            policy["snapshot"],
        )
        assert policy["matches_events"]
        retention = orjson.loads(files["retention.json"])
        assert 400 * 86400 == retention["journal_retention_seconds"]
        assert {"defaults": 7 * 86400, "payments": 3 * 86400} == {
            r["rule"]: r["body_retention_seconds"] for r in retention["rules"]
        }

    def test_reports(self, pack: Path) -> None:
        """report.md and report.html carry every control section and the charts."""
        files = members(pack)
        md, page = files["report.md"].decode(), files["report.html"].decode()
        for heading in ("CC6.1", "CC7.2", "CC7.3", "CC7.4", "Chain verification", "Policy and retention"):
            assert f"## {heading}" in md or f"## {heading}" in md.replace("## ", "## ")
            assert heading in page
        assert "![Events per day](charts/events_per_day.svg)" in md
        assert page.count("<svg") == 3 and "<script" not in page

    def test_no_canary_in_the_pack(self, pack: Path, tmp_path: Path) -> None:
        """The leak scan finds none of the canaries the application logged, in the pack or its members."""
        out = tmp_path / "unpacked"
        with zipfile.ZipFile(pack) as zf:
            zf.extractall(out)
        assert [] == scan(pack, out, canaries=corpus())

    def test_export_is_journaled(self, pack: Path, incident: Incident) -> None:
        """The export writes an evidence.export event (pack hash, signer); its queries write query.run."""
        records = list(every_record(incident.journal))
        (event,) = [r for r in records if r.get("kind") == "evidence.export"]
        assert members(pack) and event["evidence"]["signer"] == signer_public_key(incident.ring)[1]
        assert event["evidence"]["pack_sha256"] and event["evidence"]["chain_ok"] is True
        names = {r["query"]["name"] for r in records if r.get("kind") == "query.run"}
        assert {"sql", "denials", "body_reads", "anomalies", "timeline"} <= names


@pytest.fixture(scope="module")
def signer(incident: Incident) -> str:
    """The fingerprint of the pack's legitimate signer."""
    return signer_public_key(incident.ring)[1]


class TestVerifyPack:
    def test_passes(self, pack: Path, incident: Incident) -> None:
        """An untouched pack verifies against its signer (fingerprint or key); no signer is no pass."""
        public, fingerprint = signer_public_key(incident.ring)
        check = verify_pack(pack, public_key=fingerprint)
        assert check.ok and not check.problems
        assert verify_pack(pack, public_key=public).ok
        assert ["manifest.sig"] == [p.member for p in verify_pack(pack).problems]
        assert verify_pack(pack, trust_embedded_key=True).ok

    def test_one_byte_changed_in_any_member_names_it(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """Flip one byte in any member: verification fails and names exactly that member."""
        for name, data in members(pack).items():
            target = tmp_path / "bad.zip"
            i = len(data) // 2
            rewrite(pack, target, {name: data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]})
            check = verify_pack(target, public_key=signer)
            assert not check.ok, name
            expected = "manifest.json" if name in ("manifest.json", "manifest.sig") else name
            assert [expected] == [p.member for p in check.problems], name

    def test_corrupted_archive_bytes_name_the_member(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """A byte flipped inside the archive's compressed data is reported against its member (bad CRC)."""
        raw = bytearray(pack.read_bytes())
        with zipfile.ZipFile(pack) as zf:
            info = zf.getinfo("report.md")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10
        raw[start] ^= 0xFF
        target = tmp_path / "crc.zip"
        target.write_bytes(bytes(raw))
        check = verify_pack(target, public_key=signer)
        assert "report.md" in {p.member for p in check.problems}

    def test_added_and_removed_members(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """A member added or removed is named."""
        target = tmp_path / "added.zip"
        rewrite(pack, target, {"extra.txt": b"hello"})
        assert ["extra.txt"] == [p.member for p in verify_pack(target, public_key=signer).problems]
        content = members(pack)
        del content["policy.json"]
        with zipfile.ZipFile(target, "w") as zf:
            for name, data in content.items():
                zf.writestr(name, data)
        assert ["policy.json"] == [p.member for p in verify_pack(target, public_key=signer).problems]

    def test_another_signer(self, pack: Path) -> None:
        """A pack re-signed by someone else fails against the expected signer."""
        other = signer_public_key(KeyRing(MasterKey.generate()))[1]
        check = verify_pack(pack, public_key=other)
        assert ["manifest.sig"] == [p.member for p in check.problems]

    def test_not_a_zip(self, tmp_path: Path) -> None:
        """A file that is not an archive is a PackInvalid."""
        bogus = tmp_path / "x.zip"
        bogus.write_bytes(b"nope")
        with pytest.raises(PackInvalid, match="not a readable zip"):
            verify_pack(bogus)


class TestCLI:
    @pytest.fixture
    def cli(self) -> typer.Typer:
        return query_cli()

    def test_export_and_verify_pack(self, cli: typer.Typer, incident: Incident, tmp_path: Path) -> None:
        """`auditlog export` writes a pack that `auditlog verify-pack` accepts; one changed byte fails it."""
        key = write_key_file(incident.ring, tmp_path / "k.key")
        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY_TOML)
        out = tmp_path / "cli-pack.zip"
        args: list[Any] = [
            "export", incident.journal, "--since", incident.days[1], "--until", "0m", "--out", out,
            "--key-file", key, "--journal", tmp_path / "audit", "--policy", policy, "--json",
            "--incident", incident.incident_cid,
        ]  # fmt: skip
        res = CliRunner().invoke(cli, [str(a) for a in args])
        assert 0 == res.exit_code, res.output
        summary = orjson.loads(res.stdout)
        assert summary["chain_ok"] and summary["events"] > 0
        res = CliRunner().invoke(cli, ["verify-pack", str(out), "--public-key", summary["signer"]])
        assert 0 == res.exit_code, res.output
        assert "OK" in res.stdout
        bad = tmp_path / "bad.zip"
        data = members(out)["controls/CC7.3_denials.csv"]
        rewrite(out, bad, {"controls/CC7.3_denials.csv": data.replace(b"alice", b"alicf", 1)})
        res = CliRunner().invoke(cli, ["verify-pack", str(bad), "--public-key", summary["signer"]])
        assert 1 == res.exit_code
        assert "controls/CC7.3_denials.csv: SHA-256 does not match" in " ".join(res.stdout.split())

    def test_export_needs_a_range(self, cli: typer.Typer, incident: Incident, tmp_path: Path) -> None:
        """A bad range is a clear usage error."""
        key = write_key_file(incident.ring, tmp_path / "k.key")
        res = CliRunner().invoke(
            cli,
            ["export", str(incident.journal), "--since", "2026-11-22", "--until", "nonsense", "--out",
             str(tmp_path / "p.zip"), "--key-file", str(key), "--journal", str(tmp_path / "a")],
        )  # fmt: skip
        assert 2 == res.exit_code
        assert "until: expected an ISO 8601" in " ".join(res.stderr.split())


def resign(source: Path, target: Path, ring: KeyRing, changed: dict[str, bytes] | None = None) -> str:
    """Rebuild ``source`` with ``changed`` members and a manifest signed by ``ring``; return the signer."""
    content = {k: v for k, v in members(source).items() if k not in ("manifest.json", "manifest.sig")}
    content.update(changed or {})
    manifest = orjson.loads(members(source)["manifest.json"])
    public, fingerprint = signer_public_key(ring)
    manifest["signature"].update(public_key=public, fingerprint=fingerprint)
    manifest["files"] = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in content.items()
    }
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", data)
        zf.writestr("manifest.sig", base64.b64encode(_signing_key(ring).sign(data)) + b"\n")
        for name, blob in content.items():
            zf.writestr(name, blob)
    return fingerprint


class TestTrustedSigner:
    def test_a_pack_re_signed_with_another_key_fails_by_default(self, pack: Path, tmp_path: Path) -> None:
        """Changed content, re-signed by someone else: self-consistent, but no default trust passes it."""
        forged = tmp_path / "forged.zip"
        resign(pack, forged, KeyRing(MasterKey.generate()), {"report.md": b"# all good\n"})
        assert not verify_pack(forged).ok
        assert verify_pack(forged, trust_embedded_key=True).ok  # integrity only: it *is* self-consistent

    def test_the_expected_signer_rejects_a_forgery(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """Against the real signer, the forgery names manifest.sig."""
        forged = tmp_path / "forged.zip"
        resign(pack, forged, KeyRing(MasterKey.generate()))
        check = verify_pack(forged, public_key=signer)
        assert ["manifest.sig"] == [p.member for p in check.problems]

    def test_cli_requires_a_trusted_key(
        self, pack: Path, signer: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`verify-pack` without --public-key is a usage error; AUDITLOG_EVIDENCE_PUBLIC_KEY pins one."""
        monkeypatch.delenv("AUDITLOG_EVIDENCE_PUBLIC_KEY", raising=False)
        res = CliRunner().invoke(query_cli(), ["verify-pack", str(pack)])
        assert 2 == res.exit_code, res.output
        assert "needs the signer you trust" in " ".join(res.stderr.split())
        monkeypatch.setenv("AUDITLOG_EVIDENCE_PUBLIC_KEY", signer)
        res = CliRunner().invoke(query_cli(), ["verify-pack", str(pack)])
        assert 0 == res.exit_code, res.output


class TestMembers:
    def test_duplicate_member_names_are_refused(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """Two members with one name: refused before anything is read."""
        target = tmp_path / "dup.zip"
        content = members(pack)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate we write
            with zipfile.ZipFile(target, "w") as zf:
                for name, data in content.items():
                    zf.writestr(name, data)
                zf.writestr("report.md", b"# the other report\n")
        check = verify_pack(target, public_key=signer)
        assert (False, ["report.md"]) == (check.ok, [p.member for p in check.problems])
        assert "more than once" in check.problems[0].reason

    def test_a_member_of_another_size_is_not_read(self, pack: Path, tmp_path: Path, signer: str) -> None:
        """A member whose size differs from the manifest's is reported from the archive's directory."""
        target = tmp_path / "big.zip"
        content = {**members(pack), "report.md": bytes(64 << 20)}
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in content.items():
                zf.writestr(name, data)
        check = verify_pack(target, public_key=signer)
        assert [("report.md", "its size is not the one the manifest records (changed)")] == [
            (p.member, p.reason) for p in check.problems
        ]

    def test_members_past_the_cap_are_not_read(self, pack: Path, signer: str) -> None:
        """max_member_bytes: larger members are named, unread."""
        check = verify_pack(pack, public_key=signer, max_member_bytes=64)
        assert check.problems and all("not read" in p.reason for p in check.problems)

    def test_memory_stays_bounded_for_a_large_signed_member(self, tmp_path: Path) -> None:
        """A 1 MB pack holding a 256 MiB member: verify-pack streams it (RSS grows far less than 256 MiB)."""
        code = f"""
import base64, hashlib, resource, zipfile, orjson
from pathlib import Path
from auditlog.evidence import signer_public_key, verify_pack
from auditlog.evidence.pack import PACK_FORMAT, _signing_key
from store.keys import KeyRing, MasterKey
ring = KeyRing(MasterKey.generate())
size, chunk = 256 << 20, bytes(1 << 20)
sha = hashlib.sha256()
for _ in range(size // len(chunk)):
    sha.update(chunk)
public, fp = signer_public_key(ring)
manifest = orjson.dumps({{"format": PACK_FORMAT, "signature": {{"public_key": public}},
                         "files": {{"zeros.bin": {{"sha256": sha.hexdigest(), "bytes": size}}}}}})
path = Path({str(tmp_path / "zeros.zip")!r})
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("manifest.json", manifest)
    zf.writestr("manifest.sig", base64.b64encode(_signing_key(ring).sign(manifest)))
    with zf.open("zeros.bin", "w", force_zip64=True) as fh:
        for _ in range(size // len(chunk)):
            fh.write(chunk)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
check = verify_pack(path, public_key=fp)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(check.ok, path.stat().st_size < (2 << 20), grown < 64 * 1024)
"""
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        assert "True True True" == res.stdout.strip(), res.stderr
