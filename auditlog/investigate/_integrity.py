"""Verify a source before an investigation answers from it (DESIGN invariant 4).

- key ids: the key ring must hold a key that wrote the source (segment headers, manifests), else
  :class:`~auditlog.investigate.errors.KeyMismatch`: a wrong key would otherwise answer "nothing found";
- journal segments: :func:`store.trail.verify_trail` over a trail (every stream's records, chain links
  and seals, and the signed checkpoints of every stream's head; open streams allowed, they are live), or
  :func:`store.journal.verify` over a single journal directory, so the live rows the catalog reads are
  the chained ones;
- Parquet: each manifest's HMAC under its key, and each local file's SHA-256 against its manifest entry
  (re-hashed whenever the file's size or modification time changes; an ``s3://`` source's files are
  checked as they are fetched, by :meth:`auditlog.lake.ship.S3Layout.fetch`).

The lake's layout module has the manifest MAC (``Manifest.verify_mac``) but no per-file check, so the file
hashing lives here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditlog.investigate.catalog import Catalog
    from store.keys import KeyRing

__all__ = ["Checker", "Integrity"]

_SHOWN = 3  # problems quoted in a message


@dataclass(frozen=True, slots=True, kw_only=True)
class Integrity:
    """What verifying a source found: ``verified`` when nothing is wrong; ``problems`` otherwise.

    Over several sources (:mod:`~auditlog.investigate.union`), ``failed`` names those that fail and each
    problem starts with its source.
    """

    verified: bool
    problems: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def summary(self) -> str:
        """The first problems, for a message."""
        more = len(self.problems) - _SHOWN
        return "; ".join(self.problems[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _header_kid(path: Path) -> str | None:
    import orjson

    try:
        with open(path, "rb") as fh:
            header = orjson.loads(fh.readline())
    except (OSError, orjson.JSONDecodeError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


class Checker:
    """Verifies one catalog under one key ring; remembers which local Parquet files it hashed."""

    __slots__ = ("_catalog", "_hashed", "_keys")

    def __init__(self, catalog: Catalog, keys: KeyRing | None) -> None:
        self._catalog = catalog
        self._keys = keys
        self._hashed: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)

    def source_key_ids(self) -> set[str]:
        """The key ids the source was written under: segment headers and manifests."""
        kids = {m.kid for m in self._catalog.manifests}
        if self._catalog.journal is not None:
            from store._segments import list_journal
            from store.exceptions import JournalError

            try:
                listing = list_journal(self._catalog.journal)
            except JournalError:
                return kids
            kids |= {k for p in listing.segments.values() if (k := _header_kid(p)) is not None}
            for p in self._catalog.journal.glob("streams/*/[0-9]*.jsonl"):  # a trail's streams
                if (k := _header_kid(p)) is not None:
                    kids.add(k)
        return kids

    def key_mismatch(self) -> str | None:
        """Why the key ring cannot have written the source, or None when one of its keys did."""
        if self._keys is None:
            return None
        mine = set(self._keys.by_id())
        theirs = self.source_key_ids()
        if not theirs or theirs & mine:
            return None
        return (
            f"the key (key id {', '.join(sorted(mine))}) does not match {self._catalog.describe()}, "
            f"written under key id {', '.join(sorted(theirs))}: pass the key file it was written with"
        )

    def verify(self) -> Integrity:
        """Check the journal, every manifest and every local Parquet file (see the module docstring)."""
        if self._keys is None:
            return Integrity(verified=False, problems=("no key ring to verify the source with",))
        problems: list[str] = []
        journal = self._catalog.journal
        if journal is not None and (journal / "trail.json").is_file():
            from store.trail import verify_trail

            trail = verify_trail(journal, keys=self._keys, allow_open=True)
            problems.extend(
                " ".join(
                    part
                    for part in (
                        f"stream {p.stream}" if p.stream else "trail",
                        f"segment {p.segment}" if p.segment else "",
                        f"seq {p.seq}" if p.seq is not None else "",
                    )
                    if part
                )
                + f": {p.reason}"
                for p in trail.problems
            )
        elif journal is not None and any(journal.glob("[0-9]*.jsonl")):
            from store.exceptions import JournalError
            from store.journal import verify

            try:
                report = verify(journal, keys=self._keys)
            except JournalError as exc:
                problems.append(f"journal {journal}: {exc}")
            else:
                problems.extend(
                    f"journal segment {p.segment}"
                    + (f" seq {p.seq}" if p.seq is not None else "")
                    + f": {p.reason}"
                    for p in report.problems
                )
        for manifest in self._catalog.manifests:
            if not manifest.verify_mac(self._keys):
                name = manifest.path.name if manifest.path is not None else manifest.batch
                problems.append(f"manifest {name} ({manifest.source}): its MAC does not match its content")
        problems.extend(self.check_files(self._local_files()))
        return Integrity(verified=not problems, problems=tuple(problems))

    def _local_files(self) -> list[tuple[str, Any]]:
        root = self._catalog.root
        if self._catalog.kind == "s3" or root is None:
            return []  # fetched on demand, each checked against its SHA-256 as it arrives
        return [(str(root / f.path), f) for m in self._catalog.manifests for f in m.files]

    def check_files(self, files: list[tuple[str, Any]]) -> list[str]:
        """Each ``(path, manifest FileEntry)`` whose bytes are not what its manifest records."""
        problems: list[str] = []
        for path, entry in files:
            try:
                st = Path(path).stat()
            except OSError:
                problems.append(f"Parquet file {entry.path} is missing")
                continue
            seen = self._hashed.get(path)
            if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                seen = (st.st_size, st.st_mtime_ns, _sha256(Path(path)))
                self._hashed[path] = seen
            if st.st_size != entry.bytes or seen[2] != entry.sha256:
                problems.append(f"Parquet file {entry.path} does not match the SHA-256 its manifest records")
        return problems

    def recheck_files(self) -> list[str]:
        """:meth:`check_files` over every local Parquet file (cheap when none changed: a stat each)."""
        return self.check_files(self._local_files())

    def recheck(self, integrity: Integrity) -> Integrity:
        """``integrity``, with the problems :meth:`recheck_files` finds added (itself when none)."""
        changed = self.recheck_files()
        if not changed:
            return integrity
        return Integrity(verified=False, problems=(*integrity.problems, *changed), failed=integrity.failed)
