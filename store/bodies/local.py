"""``LocalBodyStore``: envelopes as files under one root directory (the embedded default).

Layout (directories 0700, files 0600)::

    ROOT/keys/<shard>/<cid>.json        the header: metadata and the wrapped data key
    ROOT/blobs/<shard>/<cid>.<tag>.bin  the ciphertext

``<shard>`` is two hex digits of a hash of the id, so no directory grows past ~1/256 of the bodies.
A header is published with ``link()`` from a temporary file, which is atomic and exclusive: a reader
never sees half a header and two writers never share an id. Blobs are written before their header.
With ``fsync=True`` every file and directory entry is synced before ``put`` returns; the default relies
on the page cache (a killed process loses nothing, a power cut may lose the last bodies).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from store.bodies._crypto import KeyWrapper
from store.bodies._model import DEFAULT_MAX_BODY_BYTES
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import AccessDenied, BodyExists, BodyNotFound, BodyStoreUnavailable
from store.keys import KeyRing

__all__ = ["LocalBackend", "LocalBodyStore"]

_TMP = ".tmp-"


def _shard(name: str) -> str:
    return hashlib.blake2b(name.encode("ascii"), digest_size=1).hexdigest()


def _translate(exc: OSError, what: str) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return BodyNotFound(f"{what}: not found")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{what}: permission denied")
    return BodyStoreUnavailable(f"{what}: {exc.strerror or type(exc).__name__}")


class LocalBackend:
    """Headers and blobs as files under ``root``."""

    __slots__ = ("_blobs", "_fsync", "_keys", "root")

    kind = "local"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root)
        self._keys = self.root / "keys"
        self._blobs = self.root / "blobs"
        self._fsync = fsync
        try:
            for d in (self.root, self._keys, self._blobs):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, f"body store root {self.root}") from exc

    def _header_path(self, cid: str) -> Path:
        return self._keys / _shard(cid) / f"{cid}.json"

    def _blob_path(self, blob: str) -> Path:
        return self._blobs / _shard(blob.rsplit(".", 1)[0]) / f"{blob}.bin"

    def _write_file(self, path: Path, data: bytes, *, flags: int) -> None:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_dir(self, path: Path) -> None:
        if self._fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        bpath = self._blob_path(blob)
        hpath = self._header_path(correlation_id)
        try:
            # No O_TRUNC: a replay rewrites identical bytes in place, so a concurrent reader never
            # sees a short blob; the blob is unreferenced until its header is linked below.
            self._write_file(bpath, data, flags=os.O_WRONLY | os.O_CREAT)
            self._sync_dir(bpath.parent)
            tmp = hpath.with_name(f"{_TMP}{os.getpid()}-{time.monotonic_ns()}-{hpath.name}")
            self._write_file(tmp, header, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                os.link(tmp, hpath)
            except FileExistsError:
                raise BodyExists(f"body {correlation_id!r} already exists") from None
            finally:
                tmp.unlink(missing_ok=True)
            self._sync_dir(hpath.parent)
        except OSError as exc:
            if isinstance(exc, BodyExists):
                raise
            raise _translate(exc, f"writing body {correlation_id!r}") from exc

    def replace_header(self, correlation_id: str, header: bytes, *, blob: str, held: bool) -> None:
        hpath = self._header_path(correlation_id)
        if not hpath.exists():
            raise BodyNotFound(f"no body {correlation_id!r}")
        tmp = hpath.with_name(f"{_TMP}{os.getpid()}-{time.monotonic_ns()}-{hpath.name}")
        try:
            self._write_file(tmp, header, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.replace(tmp, hpath)
            self._sync_dir(hpath.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _translate(exc, f"updating body {correlation_id!r}") from exc

    def read_header(self, correlation_id: str) -> bytes:
        try:
            return self._header_path(correlation_id).read_bytes()
        except OSError as exc:
            raise _translate(exc, f"body {correlation_id!r}") from exc

    def read_blob(self, blob: str) -> bytes:
        try:
            return self._blob_path(blob).read_bytes()
        except OSError as exc:
            raise _translate(exc, f"blob {blob!r}") from exc

    def delete_header(self, correlation_id: str) -> None:
        self._unlink(self._header_path(correlation_id))

    def delete_blob(self, blob: str) -> None:
        self._unlink(self._blob_path(blob))

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            self._sync_dir(path.parent)
        except OSError as exc:
            raise _translate(exc, f"deleting {path.name}") from exc

    def ids(self) -> Iterator[str]:
        try:
            shards = sorted(self._keys.iterdir())
        except OSError as exc:
            raise _translate(exc, f"listing {self._keys}") from exc
        for shard in shards:
            with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                for entry in os.scandir(shard):
                    name = entry.name
                    if name.endswith(".json") and not name.startswith(_TMP):
                        yield name[: -len(".json")]

    def sweep_temporary(self, *, older_than: float = 3600.0) -> int:
        """Remove temporary header files left by a killed writer; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for tmp in self._keys.glob(f"*/{_TMP}*"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
        return removed


class LocalBodyStore(EncryptedBodyStore):
    """An :class:`EncryptedBodyStore` over files under ``root`` (see the module docstring).

    Args:
        root: the store's directory (created 0700 if missing).
        fsync: sync every file and directory entry before ``put`` returns.
        keys, audit, wrapper, max_body_bytes, clock: see :class:`EncryptedBodyStore`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        keys: KeyRing,
        audit: AuditSink | None = None,
        fsync: bool = False,
        wrapper: KeyWrapper | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            LocalBackend(root, fsync=fsync),
            keys=keys,
            audit=audit,
            wrapper=wrapper,
            max_body_bytes=max_body_bytes,
            clock=clock,
        )
        self.root = Path(root)
