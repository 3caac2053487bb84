"""Shipping: a trail's compacted layout, seals, checkpoints (and, by choice, segments) to S3; and back.

Layout under ``s3://bucket/prefix`` (the layout root's, plus what verification needs)::

    date=2026-11-22/hour=08/part-<stream>-00000001-00000004.parquet
    _manifest/stream=<stream>/00000001-00000004.json
    _journal/stream=<stream>/00000001.seal.json        every seal of every stream (small; always shipped)
    _journal/stream=<stream>/00000001.jsonl            the segments, only with ``with_segments=True``
    _trail/<trail_id>/trail.json                       the trail's identity
    _trail/<trail_id>/checkpoints/<UTC time>.jsonl     a dated copy of the checkpoint log, never overwritten

Parquet, manifests, seals and checkpoints are enough to verify (:mod:`auditlog.lake.verify`): the segments
are a choice (``--with-segments``), as the rows' ``record`` column holds every line. Engines that read the
table skip ``_``-prefixed folders. A batch's Parquet files go up before its manifest, and a segment before
its seal, so a reader that trusts manifests and seals never sees half a batch.

No collisions. Every key carries the stream identity (many hosts ship to one prefix), and an upload never
replaces an object: each PUT is conditional (``If-None-Match: *``). When the key exists, one HEAD compares
checksums: the same bytes are a no-op (a re-run); different bytes raise :class:`ObjectCollision`, naming
the writer that holds the key (from the object's metadata) and this one. A merged layout's superseded
manifests and files are deleted after the merged ones are up (the only deletions ship makes).

Checksums and requests. Each PUT carries the object's SHA-256 (``ChecksumAlgorithm=SHA256``: S3 checks it
on receipt and returns it, which is compared with the local digest) and ``x-amz-meta-sha256``; a HEAD is
made only when the store does not return the checksum, or the key exists. A ledger (``_ship/<digest of the
URL>.jsonl`` in the layout root, one line per verified object) makes a re-run skip what is done without a
request; ``recheck=True`` HEADs everything again. Downloads are hashed and compared with the manifest.

Errors::

    ShipError (OSError)                   S3 or a local file failed; the message names the object
    ├── ChecksumMismatch (ValueError)     what S3 holds is not what was sent, or a download is not what the
    │                                     manifest says
    └── ObjectCollision (FileExistsError) the key holds other content (another writer's, or a changed one)
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake._streams import is_trail, lake_streams
from auditlog.lake.layout import (
    MANIFEST_DIR,
    LayoutError,
    Manifest,
    default_out,
    load_manifests,
    parse_manifest,
    partition_value,
)
from auditlog.lake.s3 import (
    ChecksumMismatch,
    ShipError,
    aws_error,
    client_or_default,
    file_digests,
    object_key,
    parse_s3_url,
)
from store._s3_lifecycle import aws_code, merge_rules
from store._segments import list_journal, read_seal
from store.exceptions import JournalCorrupt, JournalError

__all__ = ["ObjectCollision", "ShipReport", "ship"]

TRAIL_DIR = "_trail"
JOURNAL_DIR = "_journal"


class ObjectCollision(ShipError, FileExistsError):
    """The key already holds different content: another writer's object, or one changed in the bucket."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipReport:
    """What :func:`ship` did: objects uploaded, skipped (already there and verified), bytes sent, requests.

    ``streams`` counts the objects uploaded per stream (``_trail`` for checkpoints and trail ids).
    """

    url: str
    uploaded: tuple[str, ...]
    skipped: int
    bytes: int
    seconds: float
    expire_after_days: int | None = None
    requests: int = 0
    deleted: tuple[str, ...] = ()
    streams: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Item:
    """One object to ship: its key under the prefix, the local file, and the writer it belongs to."""

    rel: str
    path: Path
    writer: dict[str, str]


def ship(
    journal_dir: str | os.PathLike[str] | None,
    url: str,
    *,
    layout: str | os.PathLike[str] | None = None,
    client: Any = None,
    endpoint_url: str | None = None,
    recheck: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    expire_after_days: int | None = None,
    with_segments: bool = False,
) -> ShipReport:
    """Upload a trail's compacted layout, seals and checkpoints (and optionally segments) to S3.

    Args:
        journal_dir: the trail (or classic journal) directory: its seals go to ``_journal/``, its
            checkpoint log to ``_trail/``; or None to ship a layout only.
        url: ``s3://bucket/prefix``.
        layout: the layout root (default: ``journal_dir/parquet``).
        client: a boto3 S3 client (default: ``boto3.client("s3", endpoint_url=endpoint_url)``).
        endpoint_url: an S3-compatible endpoint, when no client is given.
        recheck: ignore the ledger and check every object with a HEAD (a changed object is a collision).
        progress: ``progress(stage, done, total)`` in objects.
        expire_after_days: also give the bucket a lifecycle rule expiring every object under the prefix
            this many days after its upload (the bucket's other rules are kept).
        with_segments: also ship the sealed JSONL segments (not needed to verify or query).

    Returns:
        A :class:`ShipReport`.

    Raises:
        ShipError: an upload or a local read failed (re-run to resume).
        ChecksumMismatch: S3 stored different bytes than were sent.
        ObjectCollision: a key holds different content (names both writers).
        ValueError: a malformed URL, or neither a journal nor a layout.
        ImportError: boto3 is missing (``auditlog-pipeline[s3]``).
    """
    started = time.monotonic()
    bucket, prefix = parse_s3_url(url)
    if journal_dir is None and layout is None:
        raise ValueError("ship needs a journal directory or a layout root")
    if expire_after_days is not None and (type(expire_after_days) is not int or expire_after_days < 1):
        raise ValueError("expire_after_days: expected a positive integer")
    root = Path(layout) if layout is not None else default_out(Path(journal_dir))  # type: ignore[arg-type]
    s3 = _Counted(client_or_default(client, endpoint_url))
    jdir = Path(journal_dir) if journal_dir is not None else None
    ledger = _Ledger(root, f"s3://{bucket}/{prefix}")
    plan = list(_plan(jdir, root, with_segments, ledger))
    uploaded: list[str] = []
    per_stream: dict[str, int] = {}
    skipped = sent = 0
    for n, item in enumerate(plan):
        if progress is not None:
            progress("ship", n, len(plan))
        key = object_key(prefix, item.rel)
        try:
            sha, md5, size = file_digests(item.path)
        except OSError as exc:
            raise ShipError(f"cannot read {item.path}: {exc.strerror}") from exc
        if not recheck and ledger.has(key, sha):
            skipped += 1
            continue
        if recheck and _head_matches(s3, bucket, key, sha, md5, size, item.writer):
            ledger.add(key, sha)
            skipped += 1
            continue
        if not _put_new(s3, bucket, key, item, sha, md5, size):
            ledger.add(key, sha)  # already there, same bytes (a re-run without the ledger)
            skipped += 1
            continue
        ledger.add(key, sha)
        uploaded.append(key)
        who = item.writer.get("stream", TRAIL_DIR)
        per_stream[who] = per_stream.get(who, 0) + 1
        sent += size
    deleted = _delete_superseded(s3, bucket, prefix, root, ledger)
    if progress is not None:
        progress("ship", len(plan), len(plan))
    if expire_after_days is not None:
        _expire(s3, bucket, prefix, expire_after_days)
    return ShipReport(
        url=f"s3://{bucket}/{prefix}",
        uploaded=tuple(uploaded),
        skipped=skipped,
        bytes=sent,
        seconds=time.monotonic() - started,
        expire_after_days=expire_after_days,
        requests=s3.requests,
        deleted=tuple(deleted),
        streams=per_stream,
    )


class _Counted:
    """A client wrapper that counts requests (what a ship costs)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            self.requests += 1
            return attr(*a, **k)

        return call


def _expire(s3: Any, bucket: str, prefix: str, days: int) -> None:
    """The lifecycle rule that expires the shipped copies (merged into the bucket's other rules)."""
    rule = {
        "ID": f"auditlog-ship-{prefix or 'root'}"[:255],
        "Status": "Enabled",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "Expiration": {"Days": days},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    try:
        merge_rules(s3, bucket, [rule])
    except Exception as exc:  # botocore's and the network's errors, translated at this one boundary
        raise ShipError(f"setting the lifecycle rule of s3://{bucket} failed: {aws_error(exc)}") from exc


def _labels(m: Manifest) -> dict[str, str]:
    found = {"stream": m.stream, "source": m.source, "trail-id": m.trail_id or ""}
    return {k: v for k, v in found.items() if v}


def _plan(journal: Path | None, root: Path, with_segments: bool, ledger: _Ledger) -> Iterator[_Item]:
    """What to upload, in a safe order: Parquet files before their manifest, a segment before its seal."""
    for manifest in load_manifests(root):
        who = _labels(manifest)
        for entry in manifest.files:
            yield _Item(entry.path, root / entry.path, who)
        if manifest.path is not None:
            yield _Item(manifest.key, manifest.path, who)
    if journal is None:
        return
    for info in lake_streams(journal):
        who = {"stream": info.stream, "source": info.source or "", "trail-id": info.trail_id or ""}
        who = {k: v for k, v in who.items() if v}
        try:
            listing = list_journal(info.path)
        except JournalError as exc:
            raise ShipError(str(exc)) from exc
        base = f"{JOURNAL_DIR}/stream={partition_value(info.stream)}"
        for number in sorted(listing.seals):
            seg = listing.segments.get(number)
            try:
                read_seal(listing.seals[number], None)
            except JournalCorrupt as exc:
                raise ShipError(
                    f"seal {listing.seals[number].name} of stream {info.stream} cannot be read ({exc}); "
                    "run `auditlog verify`"
                ) from exc
            if with_segments and seg is not None:
                yield _Item(f"{base}/{seg.name}", seg, who)
            yield _Item(f"{base}/{listing.seals[number].name}", listing.seals[number], who)
    if is_trail(journal):
        yield from _trail_items(journal, ledger)


def _trail_items(journal: Path, ledger: _Ledger) -> Iterator[_Item]:
    """``trail.json`` and a dated copy of the checkpoint log when it changed since the last one shipped."""
    try:
        trail_id = str(orjson.loads((journal / "trail.json").read_bytes())["trail_id"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ShipError(f"the trail id of {journal} cannot be read ({type(exc).__name__})") from exc
    safe = partition_value(trail_id)
    who = {"trail-id": trail_id}
    yield _Item(f"{TRAIL_DIR}/{safe}/trail.json", journal / "trail.json", who)
    log = journal / "checkpoints.jsonl"
    if not log.is_file():
        return
    snapshot = ledger.root / "_ship" / "checkpoints" / safe / "checkpoints.jsonl"
    try:
        data = log.read_bytes()
        if ledger.last_checkpoints.get(safe) == hashlib.sha256(data).hexdigest():
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:] + "Z"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_bytes(data)  # a stable copy: the live log may grow while it uploads
    except OSError as exc:
        raise ShipError(f"cannot read the checkpoint log {log}: {exc.strerror}") from exc
    yield _Item(f"{TRAIL_DIR}/{safe}/checkpoints/{stamp}.jsonl", snapshot, who)


def _put_new(s3: Any, bucket: str, key: str, item: _Item, sha: str, md5: str, size: int) -> bool:
    """Upload an object that must not exist yet. True when uploaded; False when the same bytes were there.

    Raises:
        ObjectCollision: the key holds different bytes.
        ChecksumMismatch: S3 stored different bytes than were sent.
    """
    try:
        fh = open(item.path, "rb")  # noqa: SIM115 - closed below, apart from the upload's own errors
    except OSError as exc:
        raise ShipError(f"cannot read {item.path}: {exc.strerror}") from exc
    with fh:
        try:
            resp = s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=fh,
                ChecksumAlgorithm="SHA256",
                IfNoneMatch="*",
                Metadata={"sha256": sha, **item.writer},
            )
        except Exception as exc:  # botocore's and the network's errors, translated at this one boundary
            if aws_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                if _head_matches(s3, bucket, key, sha, md5, size, item.writer):
                    return False
                raise AssertionError("unreachable") from exc  # _head_matches raises on a collision
            raise ShipError(f"upload of s3://{bucket}/{key} failed: {aws_error(exc)}") from exc
    stored = resp.get("ChecksumSHA256") if isinstance(resp, dict) else None
    if stored and "-" not in stored:
        if base64.b64decode(stored).hex() != sha:
            raise ChecksumMismatch(f"s3://{bucket}/{key}: the stored object does not match what was sent")
        return True
    if not _head_matches(s3, bucket, key, sha, md5, size, item.writer, sent=True):
        raise ChecksumMismatch(f"s3://{bucket}/{key}: the stored object does not match what was sent")
    return True


def _head_matches(
    s3: Any,
    bucket: str,
    key: str,
    sha: str,
    md5: str,
    size: int,
    writer: dict[str, str],
    *,
    sent: bool = False,
) -> bool:
    """True when S3 holds exactly these bytes; False when the key is absent (or, after a PUT, differs).

    Raises:
        ObjectCollision: the key holds other bytes (before an upload of ours).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as exc:
        if aws_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise ShipError(f"cannot check s3://{bucket}/{key}: {aws_error(exc)}") from exc
    same = int(head.get("ContentLength", -1)) == size
    stored = head.get("ChecksumSHA256")
    meta = head.get("Metadata", {}) or {}
    if same and stored and "-" not in stored:
        same = base64.b64decode(stored).hex() == sha
    elif same:
        same = str(head.get("ETag", "")).strip('"') == md5 and meta.get("sha256") == sha
    if same or sent:
        return same
    theirs = ", ".join(f"{k} {meta[k]}" for k in ("stream", "source", "trail-id") if meta.get(k)) or "unknown"
    ours = ", ".join(f"{k} {v}" for k, v in writer.items()) or "unknown"
    raise ObjectCollision(
        f"s3://{bucket}/{key} already holds different content (written by {theirs}); this writer ({ours}) "
        "never replaces an object: check both writers' identities, or `auditlog lake verify` the prefix"
    )


def _delete_superseded(s3: Any, bucket: str, prefix: str, root: Path, ledger: _Ledger) -> list[str]:
    """After merged manifests are up: delete the shipped manifests they supersede, and their files."""
    merged = [m for m in load_manifests(root) if m.supersedes]
    if not merged:
        return []
    keep = {f.path for m in load_manifests(root) for f in m.files}
    deleted: list[str] = []
    for m in merged:
        for batch in m.supersedes:
            rel = f"{MANIFEST_DIR}/stream={partition_value(m.stream)}/{batch}.json"
            key = object_key(prefix, rel)
            try:
                data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as exc:
                if aws_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    continue
                raise ShipError(f"cannot read s3://{bucket}/{key}: {aws_error(exc)}") from exc
            try:
                old = parse_manifest(data)
            except LayoutError:
                continue
            for f in old.files:
                if f.path not in keep:
                    _delete(s3, bucket, object_key(prefix, f.path))
                    deleted.append(object_key(prefix, f.path))
            _delete(s3, bucket, key)
            deleted.append(key)
    ledger.forget(deleted)
    return deleted


def _delete(s3: Any, bucket: str, key: str) -> None:
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise ShipError(f"cannot delete s3://{bucket}/{key}: {aws_error(exc)}") from exc


class _Ledger:
    """Objects already shipped and verified, one JSON line each, per destination URL."""

    def __init__(self, root: Path, url: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.root = root
        self.path = root / "_ship" / f"{digest}.jsonl"
        self.done: dict[str, str] = {}
        self.last_checkpoints: dict[str, str] = {}
        try:
            for line in self.path.read_bytes().splitlines():
                try:
                    obj = orjson.loads(line)
                    key, sha = str(obj["key"]), obj["sha256"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line after a crash
                if sha is None:
                    self.done.pop(key, None)
                    continue
                self.done[key] = str(sha)
                if f"{TRAIL_DIR}/" in key and "/checkpoints/" in key:
                    trail = key.split(f"{TRAIL_DIR}/", 1)[1].split("/", 1)[0]
                    self.last_checkpoints[trail] = str(sha)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ShipError(f"cannot read the ship ledger {self.path}: {exc.strerror}") from exc

    def has(self, key: str, sha: str) -> bool:
        return self.done.get(key) == sha

    def add(self, key: str, sha: str) -> None:
        if self.done.get(key) == sha:
            return
        self.done[key] = sha
        self._write({"key": key, "sha256": sha})

    def forget(self, keys: list[str]) -> None:
        for key in keys:
            if self.done.pop(key, None) is not None:
                self._write({"key": key, "sha256": None})

    def _write(self, obj: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(orjson.dumps(obj) + b"\n")
        except OSError as exc:
            raise ShipError(f"cannot write the ship ledger {self.path}: {exc.strerror}") from exc
