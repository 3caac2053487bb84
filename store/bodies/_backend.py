"""What a storage backend provides to :class:`~store.bodies.EncryptedBodyStore`: bytes in, bytes out.

A backend never sees plaintext. It stores, per body, a *header* (JSON: metadata and the wrapped data key)
under the correlation id, and a *blob* (the ciphertext) under a name unique to that envelope
(``<cid>.<nonce prefix>``), so a put that loses a race for a correlation id never overwrites another
body's ciphertext. A backend may keep both in one object (the local store does, one file per body:
one read per ``get``); deleting the header deletes the only copy of the wrapped key, which crypto-shreds
every copy of the ciphertext.

Backends translate their own errors at this boundary: missing -> :class:`BodyNotFound`, a header that
already exists -> :class:`BodyExists`, refused credentials -> :class:`AccessDenied`, unreachable ->
:class:`BodyStoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["Backend", "blob_name"]


def blob_name(correlation_id: str, nonce: bytes) -> str:
    """The blob name of one envelope: unique per sealing, stable across replays of the same envelope."""
    return f"{correlation_id}.{nonce[:8].hex()}"


class Backend(Protocol):
    """Byte storage for envelopes. Implementations are thread-safe."""

    @property
    def kind(self) -> str:
        """``"memory"``, ``"local"`` or ``"s3"``: recorded in audit events."""
        ...

    def write(self, correlation_id: str, header: bytes, blob: str, data: bytes) -> None:
        """Store ``data`` under ``blob``, then ``header`` under the id unless a header already exists.

        Raises:
            BodyExists: a header is already stored under ``correlation_id`` (the blob stays written).
        """
        ...

    def replace_header(self, correlation_id: str, header: bytes, *, blob: str, held: bool) -> None:
        """Overwrite an existing header (legal hold on / off). Raises BodyNotFound if there is none.

        ``held`` tells backends with their own expiry (S3 lifecycle rules) to exempt the header and
        ``blob`` from it while the hold lasts.
        """
        ...

    def read_header(self, correlation_id: str) -> bytes:
        """Raises BodyNotFound."""
        ...

    def read_envelope(self, correlation_id: str) -> tuple[bytes, bytes | None]:
        """The header and, when the backend keeps them together, the ciphertext (else None: the store
        then calls :meth:`read_blob`). Raises BodyNotFound."""
        ...

    def read_blob(self, blob: str) -> bytes:
        """Raises BodyNotFound."""
        ...

    def delete_header(self, correlation_id: str) -> None:
        """Delete a header (the wrapped key); a missing header is not an error."""
        ...

    def delete_blob(self, blob: str) -> None:
        """Delete a blob; a missing blob is not an error."""
        ...

    def ids(self) -> Iterator[str]:
        """Every correlation id with a header, in no particular order."""
        ...
