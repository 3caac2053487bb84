"""``from_url``: one string names a body store (compare obstore's ``from_url``)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from store.bodies._store import AuditSink, EncryptedBodyStore
from store.keys import KeyRing

__all__ = ["from_url"]


def from_url(
    url: str, *, keys: KeyRing, audit: AuditSink | None = None, **options: Any
) -> EncryptedBodyStore:
    """Open the body store named by ``url``.

    - ``memory://``: :class:`~store.bodies.MemoryBodyStore`
    - ``file:///abs/path``: :class:`~store.bodies.LocalBodyStore` rooted there
    - ``s3://bucket/prefix``: :class:`~store.bodies.S3BodyStore` (needs the ``s3`` extra)

    Args:
        url: the store URL.
        keys: the master key ring.
        audit: the audit sink reads, purges and erasures are journaled to (None: write-only).
        options: passed to the store's constructor (``fsync=``, ``endpoint_url=``, ``kms_key_id=``...).
            ``reader_public_key="x25519:..."`` seals every body for that reader key (write-only: this
            store cannot read them back; see :mod:`store.bodies.readerkey`).

    Raises:
        ValueError: an unsupported scheme or a malformed URL (the message names the problem).
    """
    if not isinstance(url, str):
        raise ValueError("body store URL: expected a string")
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError("body store URL: query strings and fragments are not supported; pass options")
    scheme = parts.scheme.lower()
    reader_public = options.pop("reader_public_key", None)
    if reader_public is not None:
        from store.bodies.readerkey import ReaderKeySessions, SessionKeyWrapper

        options["wrapper"] = SessionKeyWrapper(ReaderKeySessions(reader_public))
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ValueError("body store URL: memory:// takes no path")
        from store.bodies.memory import MemoryBodyStore

        return MemoryBodyStore(keys=keys, audit=audit, **options)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("body store URL: file:// URLs name a local path (file:///abs/path)")
        path = urllib.parse.unquote(parts.path)
        if not path or not Path(path).is_absolute():
            raise ValueError("body store URL: file:// needs an absolute path (file:///abs/path)")
        from store.bodies.local import LocalBodyStore

        return LocalBodyStore(Path(path), keys=keys, audit=audit, **options)
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError("body store URL: s3:// needs a bucket (s3://bucket/prefix)")
        from store.bodies.s3 import S3BodyStore

        return S3BodyStore(parts.netloc, prefix=parts.path.strip("/"), keys=keys, audit=audit, **options)
    raise ValueError("body store URL: expected memory://, file:///path or s3://bucket/prefix")
