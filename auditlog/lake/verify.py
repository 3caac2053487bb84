"""Fleet verification: every stream's manifests, seals and checkpoints in a shipped lake (S3 or a mirror).

:func:`verify_lake` reads ``s3://bucket/prefix`` (or a local directory laid out the same way: a mirror, or
a layout root) and checks, for every stream of every host:

- each manifest's HMAC (``changed`` when it fails), and each Parquet file it names: present (``missing``)
  with the SHA-256 the manifest records (``changed``; on S3 the checksum S3 computed on upload, read with
  a HEAD, or the bytes themselves with ``deep=True``);
- each seal's HMAC, and that every compacted segment's seal is shipped and matches the manifest (hash,
  count, last MAC and the seal file's own SHA-256);
- each trail's checkpoint copies: signatures and chain (``changed``), that every newer copy extends the
  older ones (a rollback is ``changed``), and that every stream head the newest copy records is reached
  by the shipped seals (its MAC compared when the head is a segment's end); a stream the log names with
  nothing shipped is ``missing``;
- what cannot be vouched for is ``unverified``: sealed segments not compacted (or not shipped) yet, heads
  past the shipped seals (a live writer's lag, or a cut), streams no checkpoint names.

The report groups streams by ``source`` (host). ``ok`` means nothing missing or changed (``strict``: and
nothing unverified).

Rows for engines. With ``markers=True`` it then writes one marker per partition it verified,
``_verified/date=YYYY-MM-DD/hour=HH.json``: ``{verified_at, files: {path: sha256}, rows}``, MAC'd under
``master.derive("verified")``. An engine user trusts the rows of a partition when its marker exists,
verifies, is recent enough, and lists exactly the files the query read (Athena and Trino: ``"$path"``;
Spark: ``input_file_name()``; DuckDB: ``filename``); rows of a file not in the marker are not vouched for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake.layout import MANIFEST_DIR, LayoutError, Manifest, live_manifests, parse_manifest
from store.keys import KeyRing

__all__ = ["LakeProblem", "LakeReport", "SourceReport", "verify_lake", "verify_marker"]

MARKER_FORMAT = "auditlog.verified/1"
MARKER_DIR = "_verified"


@dataclass(frozen=True, slots=True, kw_only=True)
class LakeProblem:
    """One finding: ``kind`` is ``missing``, ``changed`` or ``unverified``; ``what`` names the object."""

    kind: str
    stream: str | None
    what: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.stream} " if self.stream else ""
        return f"{self.kind}: {where}{self.what}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceReport:
    """One source (host): its streams, rows and files under live manifests, and whether all verified."""

    source: str
    streams: tuple[str, ...]
    rows: int
    files: int
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LakeReport:
    """The result of :func:`verify_lake`."""

    url: str
    ok: bool
    sources: tuple[SourceReport, ...]
    problems: tuple[LakeProblem, ...]
    unverified: tuple[LakeProblem, ...]
    manifests: int
    files: int
    rows: int
    seals: int
    checkpoints: int
    markers: tuple[str, ...] = ()
    seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


class _Store:
    """The few operations verification needs, over S3 or a local directory."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.s3: Any = None
        self.root: Path | None = None
        if url.startswith("s3://"):
            from auditlog.lake.s3 import S3Layout

            self.s3 = S3Layout(url, client=client, cache_dir=tempfile.gettempdir())
        else:
            self.root = Path(url)

    def list(self, rel: str) -> list[str]:
        if self.s3 is not None:
            return sorted(self.s3.rel(o["Key"]) for o in self.s3.list_objects(rel))
        assert self.root is not None
        base = self.root / rel
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def read(self, rel: str) -> bytes:
        if self.s3 is not None:
            return bytes(self.s3.get(rel))
        assert self.root is not None
        return (self.root / rel).read_bytes()

    def sha256(self, rel: str, *, deep: bool) -> str | None:
        """The object's SHA-256, or None when it is absent."""
        if self.s3 is not None:
            head = self.s3.head(rel)
            if head is None:
                return None
            stored = head.get("ChecksumSHA256")
            if stored and "-" not in stored and not deep:
                return base64.b64decode(stored).hex()
            return hashlib.sha256(self.s3.get(rel)).hexdigest()
        assert self.root is not None
        path = self.root / rel
        if not path.is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    def write(self, rel: str, data: bytes) -> None:
        if self.s3 is not None:
            from auditlog.lake.s3 import ShipError

            key = f"{self.s3.prefix}/{rel}" if self.s3.prefix else rel
            try:
                self.s3._s3.put_object(Bucket=self.s3.bucket, Key=key, Body=data)
            except Exception as exc:
                raise ShipError(f"cannot write s3://{self.s3.bucket}/{key}: {type(exc).__name__}") from exc
            return
        assert self.root is not None
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def verify_lake(
    url: str | os.PathLike[str],
    *,
    keys: KeyRing,
    client: Any = None,
    deep: bool = False,
    markers: bool = False,
    strict: bool = False,
) -> LakeReport:
    """Verify a shipped lake across hosts (see the module docstring).

    Args:
        url: ``s3://bucket/prefix``, or a local directory with the same layout.
        keys: the key ring (every key the fleet wrote under: manifests, seals, checkpoints).
        client: a boto3 S3 client for ``s3://`` (default: ``boto3.client("s3")``).
        deep: hash every Parquet file's bytes (downloads them) instead of trusting S3's stored checksum.
        markers: write a ``_verified`` marker for each partition whose files all verified.
        strict: unverified findings fail the report too.

    Returns:
        A :class:`LakeReport`.

    Raises:
        auditlog.lake.ship.ShipError: the bucket cannot be listed or read.
    """
    started = time.monotonic()
    store = _Store(str(url), client)
    problems: list[LakeProblem] = []
    unverified: list[LakeProblem] = []

    def bad(kind: str, stream: str | None, what: str, reason: str) -> None:
        (unverified if kind == "unverified" else problems).append(
            LakeProblem(kind=kind, stream=stream, what=what, reason=reason)
        )

    everything: list[Manifest] = []
    for rel in store.list(f"{MANIFEST_DIR}/"):
        if not rel.endswith(".json"):
            continue
        try:
            m = parse_manifest(store.read(rel))
        except LayoutError as exc:
            bad("changed", None, rel, str(exc))
            continue
        if not m.verify_mac(keys):
            bad("changed", m.stream, rel, "manifest MAC does not verify (edited, or another key)")
            continue
        everything.append(m)
    live = live_manifests(everything)
    file_ok: dict[str, bool] = {}
    for m in live:
        for f in m.files:
            sha = store.sha256(f.path, deep=deep)
            if sha is None:
                bad("missing", m.stream, f.path, f"named by manifest {m.batch}, not in the lake")
            elif sha != f.sha256:
                bad("changed", m.stream, f.path, f"SHA-256 differs from manifest {m.batch}")
            file_ok[f.path] = sha == f.sha256
    seals = _seals(store, keys, bad)
    for m in live:
        for s in m.segments:
            seal = seals.get((m.stream, s.segment))
            if seal is None:
                bad("missing", m.stream, f"seal of {s.segment}", f"compacted in {m.batch}, seal not shipped")
                continue
            obj, sha = seal
            same = (obj["sha256"], obj["last_mac"], obj["count"], sha) == (
                s.sha256,
                s.last_mac,
                s.count,
                s.seal_sha256,
            )
            if not same:
                bad("changed", m.stream, f"seal of {s.segment}", f"does not match manifest {m.batch}")
    compacted = {(m.stream, s.segment) for m in live for s in m.segments}
    for (stream, segment), _ in sorted(seals.items()):
        if (stream, segment) not in compacted:
            bad("unverified", stream, segment, "sealed and shipped, not compacted into the lake yet")
    n_checkpoints, named = _checkpoints(store, keys, seals, live, bad)
    for stream in sorted({m.stream for m in live} - named):
        bad("unverified", stream, "checkpoints", "no shipped checkpoint log names this stream")
    bad_streams = {p.stream for p in problems}
    by_source: dict[str, list[Manifest]] = {}
    for m in live:
        by_source.setdefault(m.source, []).append(m)
    sources = tuple(
        SourceReport(
            source=src,
            streams=tuple(sorted({m.stream for m in ms})),
            rows=sum(m.rows for m in ms),
            files=sum(len(m.files) for m in ms),
            ok=not ({m.stream for m in ms} & bad_streams),
        )
        for src, ms in sorted(by_source.items())
    )
    ok = not problems and not (strict and unverified)
    written: list[str] = []
    if markers:
        written = _write_markers(store, keys, live, file_ok, bad_streams)
    return LakeReport(
        url=str(url),
        ok=ok,
        sources=sources,
        problems=tuple(problems),
        unverified=tuple(unverified),
        manifests=len(live),
        files=sum(len(m.files) for m in live),
        rows=sum(m.rows for m in live),
        seals=len(seals),
        checkpoints=n_checkpoints,
        markers=tuple(written),
        seconds=time.monotonic() - started,
    )


def _seals(store: _Store, keys: KeyRing, bad: Any) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
    """Every shipped seal that verifies: (stream, segment) -> (fields, SHA-256 of the seal file)."""
    from store._segments import KeyCache, read_seal
    from store.exceptions import JournalCorrupt

    cache = KeyCache(keys)
    found: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    with tempfile.TemporaryDirectory(prefix="auditlog-verify-") as tmp:
        for rel in store.list("_journal/"):
            if not rel.endswith(".seal.json"):
                continue
            stream = rel.split("/")[1].removeprefix("stream=")
            data = store.read(rel)
            path = Path(tmp) / "seal.json"
            path.write_bytes(data)
            try:
                seal = read_seal(path, cache)
            except JournalCorrupt as exc:
                bad("changed", stream, rel, str(exc))
                continue
            fields = {
                "sha256": seal.sha256,
                "last_mac": seal.last_mac.hex(),
                "count": seal.count,
                "first_seq": seal.first_seq,
                "last_seq": seal.last_seq,
            }
            found[(stream, seal.segment)] = (fields, hashlib.sha256(data).hexdigest())
    return found


def _checkpoints(
    store: _Store,
    keys: KeyRing,
    seals: dict[tuple[str, str], tuple[dict[str, Any], str]],
    live: list[Manifest],
    bad: Any,
) -> tuple[int, set[str]]:
    """Check every trail's shipped checkpoint copies; return (checkpoints read, streams they name)."""
    from store._checkpoints import read_checkpoints

    copies: dict[str, list[str]] = {}
    for rel in store.list("_trail/"):
        parts = rel.split("/")
        if len(parts) == 4 and parts[2] == "checkpoints" and rel.endswith(".jsonl"):
            copies.setdefault(parts[1], []).append(rel)
    named: set[str] = set()
    total = 0
    shipped_streams = {s for s, _ in seals} | {m.stream for m in live}
    for trail, rels in sorted(copies.items()):
        previous = b""
        newest = None
        for rel in sorted(rels):
            data = store.read(rel)
            if not data.startswith(previous):
                bad("changed", None, rel, "does not extend the older shipped copy (rolled back or edited)")
            previous = data
            newest = (rel, data)
        if newest is None:
            continue
        rel, data = newest
        log = read_checkpoints(data, keys, trail_id=None)
        for line, reason in log.problems:
            bad("changed", None, f"{rel} line {line}", reason)
        total += len(log.checkpoints)
        heads: dict[str, Any] = {}
        for c in log.checkpoints:
            if c.stream not in heads or c.last_seq >= heads[c.stream].last_seq:
                heads[c.stream] = c
        for stream, head in sorted(heads.items()):
            named.add(stream)
            if stream not in shipped_streams:
                bad(
                    "missing",
                    stream,
                    f"trail {trail}",
                    f"its checkpoint log records seq {head.last_seq}; nothing shipped",
                )
                continue
            mine = [f for (s, _), (f, _) in seals.items() if s == stream]
            reach = max((f["last_seq"] for f in mine), default=0)
            exact = [f for f in mine if f["last_seq"] == head.last_seq]
            if exact and exact[0]["last_mac"] != head.last_mac:
                bad(
                    "changed",
                    stream,
                    f"seq {head.last_seq}",
                    "the checkpointed MAC differs from the shipped seal",
                )
            elif head.last_seq > reach:
                bad(
                    "unverified",
                    stream,
                    f"seq {head.last_seq}",
                    f"checkpointed past the shipped seals (they reach seq {reach}): not shipped yet, or cut",
                )
    return total, named


def _marker_mac(keys: KeyRing, content: dict[str, Any]) -> str:
    key = keys.active.derive("verified")
    return hmac.new(key, orjson.dumps(content, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def _write_markers(
    store: _Store, keys: KeyRing, live: list[Manifest], file_ok: dict[str, bool], bad_streams: set[str | None]
) -> list[str]:
    parts: dict[tuple[str, int], list[tuple[str, str, int, str]]] = {}
    for m in live:
        for f in m.files:
            parts.setdefault((f.date, f.hour), []).append((f.path, f.sha256, f.rows, m.stream))
    written: list[str] = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for (day, hour), files in sorted(parts.items()):
        if not all(file_ok.get(p) for p, _, _, _ in files) or any(s in bad_streams for *_, s in files):
            continue
        content = {
            "format": MARKER_FORMAT,
            "date": day,
            "hour": hour,
            "verified_at": stamp,
            "files": {p: sha for p, sha, _, _ in sorted(files)},
            "rows": sum(n for _, _, n, _ in files),
            "kid": keys.active.key_id,
        }
        rel = f"{MARKER_DIR}/date={day}/hour={hour:02d}.json"
        body = {**content, "mac": _marker_mac(keys, content)}
        store.write(rel, orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(rel)
    return written


def verify_marker(data: bytes, keys: KeyRing) -> dict[str, Any] | None:
    """A partition marker's content when its MAC verifies, else None."""
    try:
        obj = orjson.loads(data)
        mac = obj.pop("mac")
    except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
        return None
    master = keys.get(str(obj.get("kid")))
    if master is None or obj.get("format") != MARKER_FORMAT:
        return None
    expected = hmac.new(
        master.derive("verified"), orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), hashlib.sha256
    ).hexdigest()
    return dict(obj) if hmac.compare_digest(expected, str(mac)) else None
