"""S3 for the lake: URLs, clients with timeouts, the error tree, and the read side of a shipped layout.

:class:`S3Layout` is what investigations and fleet verification read: a shipped layout's manifests, and
Parquet files fetched into a local cache as queries need them. Shipping (the write side) is
:mod:`auditlog.lake.ship`.

Errors::

    ShipError (OSError)                      an upload, a listing or a download failed (names the object)
    ├── ChecksumMismatch (ValueError)        stored or downloaded bytes differ from what the manifest says
    └── ObjectCollision (FileExistsError)    (ship) an upload would replace an object of another writer
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake.layout import MANIFEST_DIR, FileEntry, Manifest, live_manifests, parse_manifest
from store._s3_lifecycle import aws_code

__all__ = [
    "ChecksumMismatch",
    "S3Layout",
    "aws_error",
    "ShipError",
    "client_or_default",
    "file_digests",
    "make_client",
    "object_key",
    "parse_s3_url",
]


_URL = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?")
_HINT = "install auditlog-pipeline[s3] to ship to S3 (it needs boto3)"


class ShipError(OSError):
    """An upload or download failed; the message names the object (never its content)."""


class ChecksumMismatch(ShipError, ValueError):
    """Stored or downloaded bytes differ from the local file or the manifest."""


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


def make_client(endpoint_url: str | None = None, service: str = "s3") -> Any:
    """A boto3 client (credentials and region from the usual AWS environment and files).

    Raises:
        ImportError: boto3 is missing (``auditlog-pipeline[s3]``).
    """
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(_HINT) from exc
    return boto3.client(service, endpoint_url=endpoint_url)


def aws_error(exc: Exception) -> str:
    """An AWS error as its code (never its message, which may echo a key or a value)."""
    code = aws_code(exc)
    return f"{type(exc).__name__} {code}".strip()


def client_or_default(client: Any, endpoint_url: str | None) -> Any:
    """``client``, else a new one for ``endpoint_url``."""
    return client if client is not None else make_client(endpoint_url)


def object_key(prefix: str, rel: str) -> str:
    """The object key of ``rel`` under ``prefix``."""
    return f"{prefix}/{rel}" if prefix else rel


def file_digests(path: Path) -> tuple[str, str, int]:
    """SHA-256 and MD5 (hex) and the size of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


class S3Layout:
    """Read side of a shipped layout: its manifests, and Parquet files fetched into a local cache.

    Manifests are listed on every refresh but downloaded only when new or changed (by ETag); Parquet files
    are downloaded only when a query needs them (in parallel), checked against their manifest's SHA-256,
    and kept. Each listing also drops cached copies of batches the bucket no longer holds.

    Args:
        url: ``s3://bucket/prefix``.
        cache_dir: the local cache root (default: ``$XDG_CACHE_HOME/auditlog/s3/<bucket>/<prefix>``).
        client: a boto3 S3 client (default: ``boto3.client("s3")``).
        workers: parallel downloads.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        client: Any = None,
        workers: int = 8,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "auditlog" / "s3"
        self.cache = (
            Path(cache_dir) if cache_dir is not None else base / self.bucket / (self.prefix or "_root")
        )
        self._s3 = client_or_default(client, None)
        self._verified: set[str] = set()
        self._workers = workers
        self.downloaded = 0

    def list_objects(self, rel_prefix: str) -> list[dict[str, Any]]:
        """Every object under ``prefix/rel_prefix`` (``Key``, ``ETag``, ``Size``...).

        Raises:
            ShipError: listing failed.
        """
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": object_key(self.prefix, rel_prefix)}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self._s3.list_objects_v2(**kwargs)
            except Exception as exc:
                raise ShipError(f"cannot list {self.url}/{rel_prefix}: {aws_error(exc)}") from exc
            found += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return found
            token = page.get("NextContinuationToken")

    def rel(self, key: str) -> str:
        """A key relative to the prefix."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def get(self, rel: str) -> bytes:
        """One object's bytes.

        Raises:
            ShipError: the read failed.
        """
        key = object_key(self.prefix, rel)
        try:
            return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except Exception as exc:
            raise ShipError(f"cannot read s3://{self.bucket}/{key}: {aws_error(exc)}") from exc

    def head(self, rel: str) -> dict[str, Any] | None:
        """An object's metadata with its checksum, or None when it is absent.

        Raises:
            ShipError: the request failed.
        """
        key = object_key(self.prefix, rel)
        try:
            return dict(self._s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"))
        except Exception as exc:
            if aws_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ShipError(f"cannot check s3://{self.bucket}/{key}: {aws_error(exc)}") from exc

    def manifests(self, *, every: bool = False) -> list[Manifest]:
        """List every manifest under the prefix; download the new and changed ones (by ETag).

        Args:
            every: also return manifests another one supersedes (verification looks at them).

        Raises:
            ShipError: listing or reading failed.
            LayoutError: a manifest is malformed.
        """
        etags_path = self.cache / "_etags.json"
        try:
            etags: dict[str, str] = orjson.loads(etags_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            etags = {}
        found: list[Manifest] = []
        fresh: dict[str, str] = {}
        for obj in self.list_objects(f"{MANIFEST_DIR}/"):
            key = obj["Key"]
            if not key.endswith(".json"):
                continue
            rel = self.rel(key)
            local = self.cache / rel
            etag = str(obj.get("ETag", ""))
            data: bytes | None = None
            if etags.get(rel) == etag and local.is_file():
                with contextlib.suppress(OSError):
                    data = local.read_bytes()
            if data is None:
                data = self.get(rel)
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
            fresh[rel] = etag
            found.append(parse_manifest(data, path=local))
        with contextlib.suppress(OSError):
            etags_path.parent.mkdir(parents=True, exist_ok=True)
            etags_path.write_bytes(orjson.dumps(fresh))
        live = live_manifests(found)
        self._prune_cache(live)
        return sorted(found, key=lambda m: (m.stream, m.batch)) if every else live

    def _prune_cache(self, manifests: list[Manifest]) -> None:
        """Drop cached manifests and Parquet files the bucket no longer has (expired by its lifecycle rule,
        pruned or merged), so the cache does not outlive the copies it was fetched from. Only the layout's
        own files are touched (``_manifest/stream=*/*.json``, ``date=*/hour=*/*.parquet``)."""
        keep = {m.path for m in manifests} | {self.cache / f.path for m in manifests for f in m.files}
        stale = [
            *self.cache.glob(f"{MANIFEST_DIR}/stream=*/*.json"),
            *self.cache.glob("date=*/hour=*/*.parquet"),
        ]
        for path in stale:
            if path not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    self._verified.discard(str(path.relative_to(self.cache)))
        for folder in [*self.cache.glob("date=*/hour=*"), *self.cache.glob("date=*")]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def fetch_many(self, entries: list[FileEntry]) -> list[Path]:
        """:meth:`fetch` for several files, downloading in parallel; paths in the order given."""
        if len(entries) <= 1:
            return [self.fetch(e) for e in entries]
        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            return list(pool.map(self.fetch, entries))

    def fetch(self, entry: FileEntry) -> Path:
        """The local path of a manifest's Parquet file, downloaded and checked against its SHA-256.

        Raises:
            ShipError: the download failed.
            ChecksumMismatch: the object's bytes do not match the manifest.
        """
        local = self.cache / entry.path
        if entry.path in self._verified and local.exists():
            return local
        if local.exists() and local.stat().st_size == entry.bytes and file_digests(local)[0] == entry.sha256:
            self._verified.add(entry.path)
            return local
        key = object_key(self.prefix, entry.path)
        tmp = local.with_name(f"{local.name}.{os.getpid()}.part")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._s3.download_file(self.bucket, key, str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ShipError(f"download of s3://{self.bucket}/{key} failed: {aws_error(exc)}") from exc
        if file_digests(tmp)[0] != entry.sha256:
            tmp.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"s3://{self.bucket}/{key} does not match the SHA-256 its manifest records"
            )
        os.replace(tmp, local)
        self._verified.add(entry.path)
        self.downloaded += 1
        return local
