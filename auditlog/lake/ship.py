"""Shipping: sealed segments, seals and the Parquet layout to S3, and back into a local cache for queries.

Layout under ``s3://bucket/prefix`` (the same as a local layout root, plus the journal itself)::

    date=2026-11-22/source=web-1/part-00000001-00000004.parquet
    _manifest/source=web-1/00000001-00000004.json
    _journal/source=web-1/00000001.jsonl
    _journal/source=web-1/00000001.seal.json

Engines that read the table (Athena, Trino, Spark, pyarrow) skip ``_``-prefixed folders. A batch's Parquet
files go up before its manifest, and a segment before its seal, so a reader that trusts manifests and
seals never sees half a batch.

Checksums. Each object is uploaded with its SHA-256 (``ChecksumSHA256``, checked by S3 on receipt, and
``x-amz-meta-sha256``), then checked with a HEAD: the stored SHA-256 checksum, or the ETag against the
MD5 of what was sent. Downloads are hashed and compared with the manifest before use.

Idempotent and resumable. A ledger (``_ship/<digest of the URL>.jsonl`` in the layout root, one line per
verified object) makes a re-run skip what is done; an object missing from the ledger is checked with a
HEAD first and uploaded only when absent or different. A crash loses at most the object in flight.

Errors::

    ShipError (OSError)            S3 or a local file failed; the message names the object
    └── ChecksumMismatch (ValueError)  what S3 holds is not what was sent, or a download is not what the
                                       manifest says
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake.layout import (
    FileEntry,
    Manifest,
    default_out,
    load_manifests,
    parse_manifest,
    partition_value,
)
from store._s3_lifecycle import aws_code, merge_rules
from store._segments import list_journal, read_seal
from store.exceptions import JournalCorrupt, JournalError

__all__ = ["ChecksumMismatch", "S3Layout", "ShipError", "ShipReport", "make_client", "parse_s3_url", "ship"]

_URL = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?")
_HINT = "install auditlog-pipeline[s3] to ship to S3 (it needs boto3)"


class ShipError(OSError):
    """An upload or download failed; the message names the object (never its content)."""


class ChecksumMismatch(ShipError, ValueError):
    """Stored or downloaded bytes differ from the local file or the manifest."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipReport:
    """What :func:`ship` did: objects uploaded, skipped (already there and verified), and bytes sent."""

    url: str
    uploaded: tuple[str, ...]
    skipped: int
    bytes: int
    seconds: float
    expire_after_days: int | None = None


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and prefix (no leading or trailing slash).

    Raises:
        ValueError: not an ``s3://`` URL with a valid bucket name.
    """
    m = _URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if m is None:
        raise ValueError("expected s3://bucket/prefix")
    prefix = (m.group(2) or "").strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError("the S3 prefix must not contain empty, '.' or '..' parts")
    return m.group(1), prefix


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client (credentials and region from the usual AWS environment and files).

    Raises:
        ImportError: boto3 is missing (``auditlog-pipeline[s3]``).
    """
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(_HINT) from exc
    return boto3.client("s3", endpoint_url=endpoint_url)


def _client(client: Any, endpoint_url: str | None) -> Any:
    return client if client is not None else make_client(endpoint_url)


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _digests(path: Path) -> tuple[str, str, int]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


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
) -> ShipReport:
    """Upload sealed segments, seals and the compacted layout to ``s3://bucket/prefix``.

    Args:
        journal_dir: the journal directory (its sealed segments and seals go to ``_journal/``), or None
            to ship a layout only.
        url: ``s3://bucket/prefix``.
        layout: the layout root (default: ``journal_dir/parquet``).
        client: a boto3 S3 client (default: ``boto3.client("s3", endpoint_url=endpoint_url)``).
        endpoint_url: an S3-compatible endpoint, when no client is given.
        recheck: ignore the ledger and check every object with a HEAD (uploads what differs).
        progress: ``progress(stage, done, total)`` in objects.
        expire_after_days: also give the bucket a lifecycle rule expiring every object under the prefix
            this many days after its upload, so the shipped copies follow the journal's retention (set it
            to ``journal_retention``). The bucket's other lifecycle rules are kept.

    Returns:
        A :class:`ShipReport`.

    Raises:
        ShipError: an upload or a local read failed (re-run to resume).
        ChecksumMismatch: S3 stored different bytes than were sent.
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
    s3 = _client(client, endpoint_url)
    plan = list(_plan(Path(journal_dir) if journal_dir is not None else None, root))
    ledger = _Ledger(root, f"s3://{bucket}/{prefix}")
    uploaded: list[str] = []
    skipped = sent = 0
    for n, (rel, path) in enumerate(plan):
        if progress is not None:
            progress("ship", n, len(plan))
        key = _key(prefix, rel)
        try:
            sha, md5, size = _digests(path)
        except OSError as exc:
            raise ShipError(f"cannot read {path}: {exc.strerror}") from exc
        if (not recheck and ledger.has(key, sha)) or _matches(s3, bucket, key, sha, md5, size):
            ledger.add(key, sha)
            skipped += 1
            continue
        _upload(s3, bucket, key, path, sha)
        if not _matches(s3, bucket, key, sha, md5, size):
            raise ChecksumMismatch(f"s3://{bucket}/{key}: the stored object does not match what was sent")
        ledger.add(key, sha)
        uploaded.append(key)
        sent += size
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
    )


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
        raise ShipError(f"setting the lifecycle rule of s3://{bucket} failed: {_aws_error(exc)}") from exc


def _plan(journal: Path | None, root: Path) -> Iterator[tuple[str, Path]]:
    """What to upload, in a safe order: Parquet files before their manifest, a segment before its seal."""
    for manifest in load_manifests(root):
        src = f"source={partition_value(manifest.source)}"
        for entry in manifest.files:
            yield entry.path, root / entry.path
        if manifest.path is not None:
            yield f"_manifest/{src}/{manifest.path.name}", manifest.path
    if journal is None:
        return
    try:
        listing = list_journal(journal)
    except JournalError as exc:
        raise ShipError(str(exc)) from exc
    for number in sorted(listing.seals):
        seg = listing.segments.get(number)
        if seg is None:
            continue
        try:
            seal = read_seal(listing.seals[number], None)
        except JournalCorrupt as exc:
            raise ShipError(f"seal of {seg.name} cannot be read ({exc}); run `auditlog verify`") from exc
        src = f"source={partition_value(seal.source)}"
        yield f"_journal/{src}/{seg.name}", seg
        yield f"_journal/{src}/{listing.seals[number].name}", listing.seals[number]


def _upload(s3: Any, bucket: str, key: str, path: Path, sha: str) -> None:
    checksum = base64.b64encode(bytes.fromhex(sha)).decode("ascii")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, apart from the upload's own errors
    except OSError as exc:
        raise ShipError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=fh, ChecksumSHA256=checksum, Metadata={"sha256": sha})
        except Exception as exc:  # botocore's and the network's errors, translated at this one boundary
            raise ShipError(f"upload of s3://{bucket}/{key} failed: {_aws_error(exc)}") from exc


def _matches(s3: Any, bucket: str, key: str, sha: str, md5: str, size: int) -> bool:
    """True when S3 holds exactly these bytes (by SHA-256 checksum, else by single-part ETag)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as exc:
        if aws_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise ShipError(f"cannot check s3://{bucket}/{key}: {_aws_error(exc)}") from exc
    if int(head.get("ContentLength", -1)) != size:
        return False
    stored = head.get("ChecksumSHA256")
    if stored and "-" not in stored:
        return bool(base64.b64decode(stored).hex() == sha)
    return bool(str(head.get("ETag", "")).strip('"') == md5 and head.get("Metadata", {}).get("sha256") == sha)


def _aws_error(exc: Exception) -> str:
    code = aws_code(exc)
    return f"{type(exc).__name__} {code}".strip()


class _Ledger:
    """Objects already shipped and verified, one JSON line each, per destination URL."""

    def __init__(self, root: Path, url: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = root / "_ship" / f"{digest}.jsonl"
        self.done: dict[str, str] = {}
        try:
            for line in self.path.read_bytes().splitlines():
                try:
                    obj = orjson.loads(line)
                    self.done[str(obj["key"])] = str(obj["sha256"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line after a crash
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(orjson.dumps({"key": key, "sha256": sha}) + b"\n")
        except OSError as exc:
            raise ShipError(f"cannot write the ship ledger {self.path}: {exc.strerror}") from exc


class S3Layout:
    """Read side of a shipped layout: its manifests, and Parquet files fetched into a local cache.

    Each listing of the manifests also drops cached copies of batches the bucket no longer holds.

    Args:
        url: ``s3://bucket/prefix``.
        cache_dir: the local cache root (default: ``$XDG_CACHE_HOME/auditlog/s3/<bucket>/<prefix>``).
        client: a boto3 S3 client (default: ``boto3.client("s3")``).
    """

    def __init__(
        self, url: str, *, cache_dir: str | os.PathLike[str] | None = None, client: Any = None
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "auditlog" / "s3"
        self.cache = (
            Path(cache_dir) if cache_dir is not None else base / self.bucket / (self.prefix or "_root")
        )
        self._s3 = _client(client, None)
        self._verified: set[str] = set()

    def manifests(self) -> list[Manifest]:
        """List and read every manifest under the prefix (each is small; always re-read).

        Raises:
            ShipError: listing or reading failed.
            LayoutError: a manifest is malformed.
        """
        found: list[Manifest] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": _key(self.prefix, "_manifest/")}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self._s3.list_objects_v2(**kwargs)
            except Exception as exc:
                raise ShipError(f"cannot list {self.url}/_manifest/: {_aws_error(exc)}") from exc
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not key.endswith(".json"):
                    continue
                try:
                    data = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                except Exception as exc:
                    raise ShipError(f"cannot read s3://{self.bucket}/{key}: {_aws_error(exc)}") from exc
                rel = key[len(self.prefix) + 1 :] if self.prefix else key
                local = self.cache / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                found.append(parse_manifest(data, path=local))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        self._prune_cache(found)
        return sorted(found, key=lambda m: (m.source, m.batch))

    def _prune_cache(self, manifests: list[Manifest]) -> None:
        """Drop cached manifests and Parquet files the bucket no longer has (expired by its lifecycle rule,
        or pruned), so the cache does not outlive the copies it was fetched from. Only the layout's own
        files are touched (``_manifest/source=*/*.json``, ``date=*/source=*/*.parquet``)."""
        keep = {m.path for m in manifests} | {self.cache / f.path for m in manifests for f in m.files}
        stale = [
            *self.cache.glob("_manifest/source=*/*.json"),
            *self.cache.glob("date=*/source=*/*.parquet"),
        ]
        for path in stale:
            if path not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    self._verified.discard(str(path.relative_to(self.cache)))
        for folder in [*self.cache.glob("date=*/source=*"), *self.cache.glob("date=*")]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def fetch(self, entry: FileEntry) -> Path:
        """The local path of a manifest's Parquet file, downloaded and checked against its SHA-256.

        Raises:
            ShipError: the download failed.
            ChecksumMismatch: the object's bytes do not match the manifest.
        """
        local = self.cache / entry.path
        if entry.path in self._verified and local.exists():
            return local
        if local.exists() and local.stat().st_size == entry.bytes and _digests(local)[0] == entry.sha256:
            self._verified.add(entry.path)
            return local
        key = _key(self.prefix, entry.path)
        tmp = local.with_name(local.name + ".part")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._s3.download_file(self.bucket, key, str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ShipError(f"download of s3://{self.bucket}/{key} failed: {_aws_error(exc)}") from exc
        if _digests(tmp)[0] != entry.sha256:
            tmp.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"s3://{self.bucket}/{key} does not match the SHA-256 its manifest records"
            )
        os.replace(tmp, local)
        self._verified.add(entry.path)
        return local
