"""``MemoryBodyStore``: envelopes in a dict. For tests and single-process demos; gone at exit.

It holds the same envelopes the other backends do (encrypted, metadata bound), so a test against it
exercises the same crypto, access control and retention code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from store.bodies._crypto import KeyWrapper
from store.bodies._model import DEFAULT_MAX_BODY_BYTES
from store.bodies._store import AuditSink, EncryptedBodyStore
from store.bodies.exceptions import BodyExists, BodyNotFound
from store.keys import KeyRing

__all__ = ["MemoryBackend", "MemoryBodyStore"]


class MemoryBackend:
    """Headers and blobs in two dicts, under one lock."""

    __slots__ = ("_blobs", "_headers", "_lock")

    kind = "memory"

    def __init__(self) -> None:
        self._headers: dict[str, bytes] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        with self._lock:
            self._blobs[blob] = data
            if correlation_id in self._headers:
                raise BodyExists(f"body {correlation_id!r} already exists")
            self._headers[correlation_id] = header

    def replace_header(self, correlation_id: str, header: bytes, *, blob: str, held: bool) -> None:
        with self._lock:
            if correlation_id not in self._headers:
                raise BodyNotFound(f"no body {correlation_id!r}")
            self._headers[correlation_id] = header

    def read_header(self, correlation_id: str) -> bytes:
        try:
            return self._headers[correlation_id]
        except KeyError:
            raise BodyNotFound(f"no body {correlation_id!r}") from None

    def read_envelope(self, correlation_id: str) -> tuple[bytes, bytes | None]:
        return self.read_header(correlation_id), None

    def read_blob(self, blob: str) -> bytes:
        try:
            return self._blobs[blob]
        except KeyError:
            raise BodyNotFound(f"no blob {blob!r}") from None

    def delete_header(self, correlation_id: str) -> None:
        with self._lock:
            self._headers.pop(correlation_id, None)

    def delete_blob(self, blob: str) -> None:
        with self._lock:
            self._blobs.pop(blob, None)

    def ids(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._headers))

    def raw(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The stored headers and blobs (tests use this to tamper with and scan them)."""
        return self._headers, self._blobs


class MemoryBodyStore(EncryptedBodyStore):
    """An :class:`EncryptedBodyStore` over :class:`MemoryBackend`. Same arguments, minus the backend."""

    def __init__(
        self,
        *,
        keys: KeyRing,
        audit: AuditSink | None = None,
        wrapper: KeyWrapper | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            MemoryBackend(),
            keys=keys,
            audit=audit,
            wrapper=wrapper,
            max_body_bytes=max_body_bytes,
            clock=clock,
        )
