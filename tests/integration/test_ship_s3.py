"""auditlog.lake.ship against moto's S3 server over HTTP: layout, idempotence, resume, checksums, queries on s3://."""

from __future__ import annotations

import hashlib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from typer.testing import CliRunner

from auditlog.evidence import export, verify_pack
from auditlog.investigate import CorruptSource, DuplicateSource, Investigation
from auditlog.lake.compact import compact
from auditlog.lake.layout import load_manifests
from auditlog.lake.s3 import ChecksumMismatch, ShipError
from auditlog.lake.ship import ObjectCollision, ship
from store.trail import list_streams
from tests._support import moto_s3, query_cli, write_hosts, write_key_file
from tests.auditlog.test_query import Incident, Sink, write_incident


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    inc = write_incident(tmp_path_factory.mktemp("ship"), per_day=12, days=2, segment_bytes=8 * 1024)
    compact(inc.journal, keys=inc.ring, max_batch_bytes=24 * 1024)
    return inc


def keys_in(s3: Any, bucket: str, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj
    return found


class FailingClient:
    """Delegates to a real client; the Nth put_object raises (a network failure mid-run)."""

    def __init__(self, real: Any, fail_at: int) -> None:
        self._real = real
        self._fail_at = fail_at
        self.puts = 0

    def put_object(self, **kw: Any) -> Any:
        self.puts += 1
        if self.puts == self._fail_at:
            raise ConnectionError("connection reset")
        return self._real.put_object(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class CorruptingClient(FailingClient):
    """Stores different bytes than it was given (what the checksum check must catch)."""

    def put_object(self, **kw: Any) -> Any:
        kw["Body"] = b"garbage" + kw["Body"].read()[7:]
        return self._real.put_object(**kw)


class CountingClient(FailingClient):
    """Counts requests by operation."""

    def __init__(self, real: Any) -> None:
        super().__init__(real, fail_at=0)
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)

        def call(*a: Any, **k: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*a, **k)

        return call

    def put_object(self, **kw: Any) -> Any:
        self.calls["put_object"] = self.calls.get("put_object", 0) + 1
        return self._real.put_object(**kw)


def stream_of(incident: Incident) -> Any:
    (info,) = [i for i in list_streams(incident.journal) if i.source == "web-1"]
    return info


class TestShip:
    def test_layout_on_s3(self, incident: Incident, s3: Any, bucket: str) -> None:
        """Parquet under date=/hour=, manifests per stream, every seal, the trail's id and a dated copy of its
        checkpoint log; no segments unless asked for."""
        report = ship(incident.journal, f"s3://{bucket}/audit", client=s3)
        objects = keys_in(s3, bucket)
        assert set(report.uploaded) == set(objects)
        info = stream_of(incident)
        manifests = load_manifests(incident.journal / "parquet")
        for m in manifests:
            for f in m.files:
                assert f"audit/{f.path}" in objects
                head = s3.head_object(Bucket=bucket, Key=f"audit/{f.path}")
                assert (f.sha256, m.stream) == (head["Metadata"]["sha256"], head["Metadata"]["stream"])
            assert f"audit/_manifest/stream={m.stream}/{m.batch}.json" in objects
        sealed = sorted(p.name for p in info.path.glob("*.seal.json"))
        assert {f"audit/_journal/stream={info.stream}/{n}" for n in sealed} <= set(objects)
        assert not [k for k in objects if k.endswith(".jsonl") and "/_journal/" in k]
        trail = [k for k in objects if "/_trail/" in k]
        assert 2 == len(trail) and any(k.endswith("/trail.json") for k in trail)
        (log,) = [k for k in trail if "/checkpoints/" in k]
        log_bytes = s3.get_object(Bucket=bucket, Key=log)["Body"].read()
        assert (incident.journal / "checkpoints.jsonl").read_bytes().startswith(log_bytes)

    def test_with_segments(self, incident: Incident, s3: Any, bucket: str) -> None:
        """with_segments=True also ships each sealed segment, byte for byte, before its seal."""
        ship(incident.journal, f"s3://{bucket}/seg", client=s3, with_segments=True)
        info = stream_of(incident)
        for seal in sorted(info.path.glob("*.seal.json")):
            seg = seal.name.replace(".seal.json", ".jsonl")
            body = s3.get_object(Bucket=bucket, Key=f"seg/_journal/stream={info.stream}/{seg}")["Body"].read()
            assert (info.path / seg).read_bytes() == body

    def test_one_request_per_new_object(self, incident: Incident, s3: Any, bucket: str) -> None:
        """A first run makes one conditional PUT per object and no HEAD; a re-run makes no request at all."""
        counting = CountingClient(s3)
        report = ship(incident.journal, f"s3://{bucket}/cost", client=counting)
        assert {"put_object": len(report.uploaded)} == counting.calls
        again = CountingClient(s3)
        ship(incident.journal, f"s3://{bucket}/cost", client=again)
        assert {} == again.calls

    def test_a_collision_is_an_error_naming_both_writers(
        self, incident: Incident, s3: Any, bucket: str
    ) -> None:
        """An object another writer put under one of our keys is never replaced: the error names both."""
        m = load_manifests(incident.journal / "parquet")[0]
        key = f"col/{m.files[0].path}"
        s3.put_object(
            Bucket=bucket, Key=key, Body=b"theirs", Metadata={"stream": "web-1.other", "source": "web-1"}
        )
        with pytest.raises(
            ObjectCollision, match=r"written by stream web-1\.other.*this writer \(stream web-1\.\d"
        ):
            ship(incident.journal, f"s3://{bucket}/col", client=s3)
        assert b"theirs" == s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def test_checkpoints_are_dated_copies(self, incident: Incident, s3: Any, bucket: str) -> None:
        """A changed checkpoint log ships as a new dated copy; the older copies stay as they were."""
        ship(incident.journal, f"s3://{bucket}/cp", client=s3)
        first = [k for k in keys_in(s3, bucket, "cp/_trail/") if "/checkpoints/" in k]
        with incident.handle() as handle:
            handle.emit({"kind": "http.request", "correlation_id": "c-cp"})
        ship(incident.journal, f"s3://{bucket}/cp", client=s3)
        second = [k for k in keys_in(s3, bucket, "cp/_trail/") if "/checkpoints/" in k]
        assert 1 == len(first) and 2 == len(second) and set(first) < set(second)

    def test_expire_after_sets_a_lifecycle_rule_and_keeps_others(
        self, incident: Incident, s3: Any, bucket: str
    ) -> None:
        """--expire-after puts one rule expiring the prefix; the bucket's other rules stay; a re-run
        replaces the rule, never duplicates it."""
        foreign = {"ID": "other-team", "Status": "Enabled", "Filter": {"Prefix": "logs/"}}
        foreign["Expiration"] = {"Days": 3}
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
        report = ship(incident.journal, f"s3://{bucket}/audit", client=s3, expire_after_days=30)
        assert 30 == report.expire_after_days
        argv = ["ship", str(incident.journal), f"s3://{bucket}/audit", "--expire-after", "400d", "--json"]
        out = CliRunner().invoke(query_cli(), [*argv, "--endpoint-url", s3.meta.endpoint_url])
        assert 0 == out.exit_code, out.output
        assert 400 == orjson.loads(out.stdout)["expire_after_days"]
        rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
        assert {"other-team", "auditlog-ship-audit"} == set(rules)
        assert 3 == rules["other-team"]["Expiration"]["Days"]
        ours = rules["auditlog-ship-audit"]
        assert (400, "audit/") == (ours["Expiration"]["Days"], ours["Filter"]["Prefix"])
        with pytest.raises(ValueError, match="positive integer"):
            ship(incident.journal, f"s3://{bucket}/audit", client=s3, expire_after_days=0)
        bad = CliRunner().invoke(
            query_cli(), ["ship", str(incident.journal), f"s3://{bucket}/audit", "--expire-after", "soon"]
        )
        assert 0 != bad.exit_code and "--expire-after" in bad.output

    def test_idempotent(self, incident: Incident, s3: Any, bucket: str) -> None:
        """A second run uploads nothing; so does a run without the local ledger (conditional PUTs find every
        object there, with the same bytes), apart from a fresh dated copy of the checkpoint log."""
        url = f"s3://{bucket}/p"
        first = ship(incident.journal, url, client=s3)
        again = ship(incident.journal, url, client=s3)
        settled = [k for k in first.uploaded if "/checkpoints/" not in k]  # an unchanged log is not re-sent
        assert ((), len(settled)) == (again.uploaded, again.skipped)
        for ledger in (incident.journal / "parquet" / "_ship").glob("*.jsonl"):
            ledger.unlink()
        third = ship(incident.journal, url, client=s3)
        assert all("/checkpoints/" in k for k in third.uploaded)
        assert len(settled) == third.skipped

    def test_resumes_after_a_failure(self, incident: Incident, s3: Any, bucket: str) -> None:
        """A run that fails mid-way resumes where it stopped; nothing is uploaded twice."""
        url = f"s3://{bucket}/resume"
        flaky = FailingClient(s3, fail_at=5)
        with pytest.raises(ShipError, match="upload of s3://"):
            ship(incident.journal, url, client=flaky)
        done = len(keys_in(s3, bucket, "resume/"))
        assert 4 == done
        rest = ship(incident.journal, url, client=s3)
        assert 4 == rest.skipped
        assert done + len(rest.uploaded) == len(keys_in(s3, bucket, "resume/"))

    def test_checksum_mismatch_detected(self, incident: Incident, s3: Any, bucket: str) -> None:
        """Bytes that arrive different from what was sent are detected."""
        with pytest.raises(ChecksumMismatch, match="does not match what was sent"):
            ship(incident.journal, f"s3://{bucket}/bad", client=CorruptingClient(s3, fail_at=0))

    def test_recheck_reports_a_changed_object(self, incident: Incident, s3: Any, bucket: str) -> None:
        """recheck=True ignores the ledger, finds an object changed in S3, and reports it (never replaces)."""
        url = f"s3://{bucket}/repair"
        ship(incident.journal, url, client=s3)
        key = next(k for k in keys_in(s3, bucket, "repair/") if k.endswith(".parquet"))
        s3.put_object(Bucket=bucket, Key=key, Body=b"tampered")
        assert () == ship(incident.journal, url, client=s3).uploaded
        with pytest.raises(ObjectCollision, match="already holds different content"):
            ship(incident.journal, url, client=s3, recheck=True)
        assert b"tampered" == s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def test_bad_url(self, incident: Incident, s3: Any) -> None:
        """A malformed URL is a ValueError."""
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            ship(incident.journal, "https://example.com/x", client=s3)


class TestQueryS3:
    def test_same_answers_as_local(self, incident: Incident, s3: Any, bucket: str, tmp_path: Path) -> None:
        """Queries on s3:// answer like the local layout."""
        ship(incident.journal, f"s3://{bucket}/q", client=s3)
        sink = Sink(incident.ring)
        with (
            Investigation(
                f"s3://{bucket}/q", audit=sink, s3_client=s3, cache_dir=tmp_path / "cache"
            ) as remote,
            Investigation(incident.journal / "parquet", audit=sink) as local,
        ):
            assert local.denials() == remote.denials()
            assert local.timeline(incident.incident_cid) == remote.timeline(incident.incident_cid)
            assert local.find(incident.token) == remote.find(incident.token)
        assert "s3" == sink.events[-1]["action"]["target"]

    def test_fetches_only_the_partitions_in_range(
        self, incident: Incident, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """A query limited to the last day downloads only that day's Parquet files."""
        ship(incident.journal, f"s3://{bucket}/r", client=s3)
        cache = tmp_path / "cache"
        with Investigation(
            f"s3://{bucket}/r", audit=Sink(incident.ring), s3_client=s3, cache_dir=cache
        ) as inv:
            assert 0 == len(list(cache.rglob("*.parquet")))
            inv.denials(since=incident.days[-1])
            days = {p.parent.parent.name for p in cache.rglob("*.parquet")}
            assert {f"date={incident.days[-1]}"} == days
            inv.denials()
            assert {f"date={d}" for d in incident.days} == {
                p.parent.parent.name for p in cache.rglob("*.parquet")
            }

    def test_timeline_fetches_only_files_that_may_hold_the_id(
        self, incident: Incident, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """A timeline over s3:// fetches the files whose manifest Bloom filter may hold the id, not all."""
        from auditlog.investigate._connections import Connections
        from auditlog.investigate.catalog import open_catalog

        ship(incident.journal, f"s3://{bucket}/t", client=s3)
        cache = tmp_path / "cache"
        catalog = open_catalog(f"s3://{bucket}/t", cache_dir=cache, s3_client=s3)
        conns = Connections(catalog, memory_limit="256MB", threads=1)
        try:
            con = conns.reader_for(None, None, correlation_id=incident.incident_cid)
            steps = con.execute(
                "SELECT kind FROM events WHERE correlation_id = $c ORDER BY ts, stream, seq",
                {"c": incident.incident_cid},
            ).fetchall()
        finally:
            conns.close()
        assert [*incident.incident_steps, "body.read_denied"][: len(steps)] == [k for (k,) in steps]
        fetched = len(list(cache.rglob("*.parquet")))
        total = sum(len(m.files) for m in catalog.manifests)
        assert 0 < fetched < total

    def test_investigation_timeline_fetches_only_what_it_needs(
        self, incident: Incident, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """Investigation.timeline over s3:// fetches only the files that may hold the id, and caches them."""
        ship(incident.journal, f"s3://{bucket}/it", client=s3)
        cache = tmp_path / "cache"
        with Investigation(
            f"s3://{bucket}/it", audit=Sink(incident.ring), s3_client=s3, cache_dir=cache
        ) as inv:
            total = sum(len(m.files) for m in inv._catalog.manifests)
            kinds = inv.timeline(incident.incident_cid).column("kind")
            fetched = sorted(cache.rglob("*.parquet"))
            assert incident.incident_steps[0] == kinds[0]
            assert 0 < len(fetched) < total
            inv.timeline(incident.incident_cid)
            assert fetched == sorted(cache.rglob("*.parquet"))  # cached: nothing fetched again

    def test_corrupt_download_refused(self, incident: Incident, s3: Any, bucket: str, tmp_path: Path) -> None:
        """A Parquet object that does not match its manifest's SHA-256 is refused, not queried."""
        ship(incident.journal, f"s3://{bucket}/c", client=s3)
        key = next(k for k in keys_in(s3, bucket, "c/") if k.endswith(".parquet"))
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=body[:-9] + b"XXXXXXXXX")
        with (
            Investigation(
                f"s3://{bucket}/c", audit=Sink(incident.ring), s3_client=s3, cache_dir=tmp_path / "x"
            ) as inv,
            pytest.raises(CorruptSource, match="does not match the SHA-256"),
        ):
            inv.denials()

    def test_cache_files_are_checked(self, incident: Incident, s3: Any, bucket: str, tmp_path: Path) -> None:
        """A cached file that was altered locally is fetched again."""
        ship(incident.journal, f"s3://{bucket}/k", client=s3)
        cache = tmp_path / "cache"
        with Investigation(
            f"s3://{bucket}/k", audit=Sink(incident.ring), s3_client=s3, cache_dir=cache
        ) as inv:
            expected = inv.denials()
        victim = next(cache.rglob("*.parquet"))
        good = hashlib.sha256(victim.read_bytes()).hexdigest()
        victim.write_bytes(b"PAR1 not really")
        with Investigation(
            f"s3://{bucket}/k", audit=Sink(incident.ring), s3_client=s3, cache_dir=cache
        ) as inv:
            assert expected == inv.denials()
        assert good == hashlib.sha256(victim.read_bytes()).hexdigest()

    def test_cache_drops_batches_the_bucket_no_longer_has(
        self, incident: Incident, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """When a batch expires from the bucket, the next listing drops its cached copies too."""
        from auditlog.lake.s3 import S3Layout

        ship(incident.journal, f"s3://{bucket}/e", client=s3)
        cache = tmp_path / "cache"
        layout = S3Layout(f"s3://{bucket}/e", cache_dir=cache, client=s3)
        manifests = layout.manifests()
        for m in manifests:
            for f in m.files:
                layout.fetch(f)
        (cache / "notes.txt").write_text("the analyst's own file")
        gone = manifests[0]
        for f in gone.files:
            s3.delete_object(Bucket=bucket, Key=f"e/{f.path}")
        s3.delete_object(Bucket=bucket, Key=f"e/{gone.key}")
        left = S3Layout(f"s3://{bucket}/e", cache_dir=cache, client=s3).manifests()
        assert [m.batch for m in manifests[1:]] == [m.batch for m in left]
        cached = {str(p.relative_to(cache)) for p in cache.rglob("*.parquet")}
        assert cached == {f.path for m in left for f in m.files}
        assert not (cache / gone.key).exists()
        assert (cache / "notes.txt").exists()
        with Investigation(
            f"s3://{bucket}/e", audit=Sink(incident.ring), s3_client=s3, cache_dir=cache
        ) as inv:
            [(rows,)] = inv.sql("SELECT count(*) FROM events").rows
        assert sum(m.rows for m in left) == rows  # queries read exactly what is left


class TestEvidenceFromS3:
    def test_pack_from_a_shipped_layout(
        self, incident: Incident, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """An evidence pack built from s3:// verifies; each segment is vouched for by its batch's manifest."""
        ship(incident.journal, f"s3://{bucket}/ev", client=s3)
        sink = Sink(incident.ring)
        report = export(
            f"s3://{bucket}/ev", tmp_path / "pack.zip", since=incident.days[0], until="0m", audit=sink,
            s3_client=s3, cache_dir=tmp_path / "cache",
        )  # fmt: skip
        assert report.chain_ok and verify_pack(report.path, public_key=report.signer).ok
        with zipfile.ZipFile(report.path) as zf:
            chain = orjson.loads(zf.read("chain_verification.json"))
        assert chain["segments"] and {s["checked"].split(" ")[0] for s in chain["segments"]} == {"manifest"}
        assert "evidence.export" == sink.events[-1]["kind"]


class TestCLI:
    def test_ship_and_query(
        self, incident: Incident, endpoint: str, s3: Any, bucket: str, tmp_path: Path
    ) -> None:
        """`auditlog ship` then `auditlog query s3://...` through the CLI."""
        app = query_cli()
        runner = CliRunner()
        args = ["ship", str(incident.journal), f"s3://{bucket}/cli", "--endpoint-url", endpoint, "--json"]
        res = runner.invoke(app, args)
        assert 0 == res.exit_code, res.output
        assert orjson.loads(res.stdout)["uploaded"] > 0
        key = write_key_file(incident.ring, tmp_path / "k.key")
        res = runner.invoke(
            app,
            ["query", "--endpoint-url", endpoint, "--cache-dir", str(tmp_path / "c"), f"s3://{bucket}/cli",
             "denials", "--json", "--key-file", str(key), "--journal", str(tmp_path / "audit")],
        )  # fmt: skip
        assert 0 == res.exit_code, res.output
        rows = orjson.loads(res.stdout)
        assert incident.denied_cids == [r["correlation_id"] for r in rows if r["kind"] == "authz.denied"]
        after = runner.invoke(  # the group's options, given after the command, work the same
            app,
            ["query", f"s3://{bucket}/cli", "denials", "--json", "--key-file", str(key),
             "--journal", str(tmp_path / "audit"), "--endpoint-url", endpoint,
             "--cache-dir", str(tmp_path / "d")],
        )  # fmt: skip
        assert (0, rows) == (after.exit_code, orjson.loads(after.stdout)), after.output


class TestSeveralTrails:
    def test_ship_two_trails_to_one_prefix(self, endpoint: str, s3: Any, bucket: str, tmp_path: Path) -> None:
        """`ship A s3://... --also B`: each trail in turn to the one prefix, reported per directory and in
        total; the shipped lake answers for both hosts, in one timeline."""
        hosts = write_hosts(tmp_path / "hosts")
        for directory in (hosts.a, hosts.b):
            compact(directory, keys=hosts.ring)
        url = f"s3://{bucket}/fleet"
        args = ["ship", str(hosts.a), url, "--also", str(hosts.b), "--endpoint-url", endpoint, "--json", "-q"]
        res = CliRunner().invoke(query_cli(), args)
        assert 0 == res.exit_code, res.output
        doc = orjson.loads(res.stdout)
        assert [str(hosts.a), str(hosts.b)] == [d["directory"] for d in doc["directories"]]
        assert all(d["uploaded"] > 0 for d in doc["directories"])
        uploaded = sum(d["uploaded"] for d in doc["directories"])
        assert len(keys_in(s3, bucket)) == uploaded == doc["total"]["uploaded"]
        with Investigation(url, audit=Sink(hosts.ring), s3_client=s3, cache_dir=tmp_path / "c") as inv:
            assert hosts.order == [r["what"] for r in inv.timeline(hosts.cid)]
            [(sources,)] = inv.sql("SELECT list(DISTINCT source ORDER BY source) FROM events").rows
        assert ["host-a", "host-b"] == sources

    def test_a_trail_with_its_shipped_copy_is_refused(self, s3: Any, bucket: str, tmp_path: Path) -> None:
        """A trail read together with the prefix it was shipped to would count its rows twice: refused."""
        hosts = write_hosts(tmp_path / "hosts")
        compact(hosts.a, keys=hosts.ring)
        ship(hosts.a, f"s3://{bucket}/a", client=s3)
        with pytest.raises(DuplicateSource, match=f"^{hosts.a} and s3://{bucket}/a both hold stream"):
            Investigation([hosts.a, f"s3://{bucket}/a"], audit=Sink(hosts.ring), s3_client=s3,
                          cache_dir=tmp_path / "c")  # fmt: skip
        with Investigation([hosts.b, f"s3://{bucket}/a"], audit=Sink(hosts.ring), s3_client=s3,
                           cache_dir=tmp_path / "c") as inv:  # fmt: skip
            assert hosts.order == [r["what"] for r in inv.timeline(hosts.cid)]
