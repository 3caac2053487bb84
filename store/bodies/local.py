"""``LocalBodyStore``: envelopes as files under one root directory (the embedded default).

Layout (directories 0700, files 0600)::

    ROOT/bodies/<shard>/<cid>.body    one envelope: magic, header length, header (metadata and the
                                      wrapped data key), ciphertext

``<shard>`` is two hex digits of a hash of the id (256 directories, created up front), so no directory
grows past ~1/256 of the bodies. One file per body means one read per ``get``; deleting the file deletes
the wrapped key with it (crypto-shredding any other copy of the ciphertext).

A body file is created with ``O_EXCL`` (two writers never share an id) and written under an exclusive
``flock``; readers take a shared lock, so a reader never sees half a body: it sees the whole file, or an
empty one, which it reports as not found (still being written, or abandoned by a crash). Legal-hold
updates rewrite the file through a temporary name and ``rename``. With ``fsync=True`` every file and
directory entry is synced before ``put`` returns; the default relies on the page cache (a killed process
loses nothing, a power cut may lose the last bodies).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from hashlib import blake2b
from pathlib import Path

from store.bodies._crypto import PACK_PREFIX, KeyWrapper, header_length, pack, unpack
from store.bodies._model import DEFAULT_MAX_BODY_BYTES
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import AccessDenied, BodyExists, BodyNotFound, BodyStoreUnavailable
from store.keys import KeyRing

__all__ = ["LocalBackend", "LocalBodyStore"]

_TMP = ".tmp-"
_SUFFIX = ".body"
_SHARDS = [f"{i:02x}" for i in range(256)]


def _shard(name: str) -> str:
    return blake2b(name.encode("ascii"), digest_size=1).hexdigest()


def _translate(exc: OSError, what: str) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return BodyNotFound(f"{what}: not found")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{what}: permission denied")
    return BodyStoreUnavailable(f"{what}: {exc.strerror or type(exc).__name__}")


class LocalBackend:
    """Envelopes as files under ``root`` (see the module docstring)."""

    __slots__ = ("_bodies", "_fsync", "_ready", "root")

    kind = "local"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root)
        self._bodies = os.path.join(os.fspath(self.root), "bodies")
        self._fsync = fsync
        self._ready = False  # the shard directories are made by the first write: a read creates nothing

    def _make_dirs(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.path.isdir(os.path.join(self._bodies, _SHARDS[-1])):
                for shard in ("", *_SHARDS):
                    os.makedirs(os.path.join(self._bodies, shard), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, f"body store root {self.root}") from exc
        self._ready = True

    def path(self, correlation_id: str) -> str:
        """The file holding a body (tests tamper with it)."""
        return f"{self._bodies}/{_shard(correlation_id)}/{correlation_id}{_SUFFIX}"

    def _sync_dir(self, path: str) -> None:
        if self._fsync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if self._fsync:
            os.fsync(fd)

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        if not self._ready:
            self._make_dirs()
        path = self.path(correlation_id)
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise BodyExists(f"body {correlation_id!r} already exists") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._write_all(fd, pack(header, data))
            finally:
                os.close(fd)
            self._sync_dir(path)
        except BodyExists:
            raise
        except OSError as exc:
            raise _translate(exc, f"writing body {correlation_id!r}") from exc

    def replace_header(self, correlation_id: str, header: bytes, *, blob: str, held: bool) -> None:
        _, ciphertext = unpack(self._read(correlation_id), correlation_id=correlation_id)
        path = self.path(correlation_id)
        tmp = f"{os.path.dirname(path)}/{_TMP}{os.getpid()}-{time.monotonic_ns()}-{correlation_id}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._write_all(fd, pack(header, ciphertext))
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._sync_dir(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _translate(exc, f"updating body {correlation_id!r}") from exc

    def _read(self, correlation_id: str, *, header_only: bool = False) -> bytes:
        try:
            fd = os.open(self.path(correlation_id), os.O_RDONLY)
        except OSError as exc:
            raise _translate(exc, f"body {correlation_id!r}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if header_only:
                prefix = os.read(fd, PACK_PREFIX)
                if not prefix:
                    raise BodyNotFound(f"body {correlation_id!r} is still being written, or was abandoned")
                return prefix + os.read(fd, header_length(prefix, correlation_id=correlation_id))
            want = os.fstat(fd).st_size + 1  # one byte more: a short read proves end of file
            data = os.read(fd, want)
            if len(data) == want:  # the file grew (an update in flight): read the rest
                chunks = [data]
                while chunks[-1]:
                    chunks.append(os.read(fd, 1 << 20))
                data = b"".join(chunks)
        except OSError as exc:
            if isinstance(exc, BodyNotFound):
                raise
            raise _translate(exc, f"body {correlation_id!r}") from exc
        finally:
            os.close(fd)
        if not data:
            raise BodyNotFound(f"body {correlation_id!r} is still being written, or was abandoned")
        return data

    def read_header(self, correlation_id: str) -> bytes:
        return unpack(self._read(correlation_id, header_only=True), correlation_id=correlation_id)[0]

    def read_envelope(self, correlation_id: str) -> tuple[bytes, bytes | None]:
        return unpack(self._read(correlation_id), correlation_id=correlation_id)

    def read_blob(self, blob: str) -> bytes:
        cid = blob.rsplit(".", 1)[0]
        return unpack(self._read(cid), correlation_id=cid)[1]

    def delete_header(self, correlation_id: str) -> None:
        path = self.path(correlation_id)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._sync_dir(path)
        except OSError as exc:
            raise _translate(exc, f"deleting body {correlation_id!r}") from exc

    def delete_blob(self, blob: str) -> None:
        """Nothing to do: the ciphertext lives in the body file, gone with :meth:`delete_header`."""

    def ids(self) -> Iterator[str]:
        for shard in _SHARDS:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for entry in os.scandir(os.path.join(self._bodies, shard)):
                    name = entry.name
                    if name.endswith(_SUFFIX) and not name.startswith(_TMP):
                        yield name[: -len(_SUFFIX)]

    def sweep_temporary(self, *, older_than: float = 3600.0) -> int:
        """Remove temporary files left by a killed hold/release; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for shard in _SHARDS:
            with contextlib.suppress(OSError):
                for entry in os.scandir(os.path.join(self._bodies, shard)):
                    if entry.name.startswith(_TMP) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
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
