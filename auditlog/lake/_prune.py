"""Retention for the Parquet copies: :func:`prune` deletes the batches compacted from purged segments.

Each stream deletes sealed segments past ``JournalConfig.retention`` on the record; :func:`prune`
(``auditlog compact --prune``) then deletes the batches compacted from them, so the Parquet copies do not
outlive the trail by more than one batch. Both names are public as :mod:`auditlog.lake.compact`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from auditlog.lake._recovery import delete_batch, finish_interrupted, retire, segment_number
from auditlog.lake._streams import lake_streams
from auditlog.lake.layout import CompactionError, default_out, load_manifests
from store._segments import list_journal
from store.exceptions import JournalError
from store.keys import KeyRing

__all__ = ["PruneReport", "prune"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What :func:`prune` did.

    Attributes:
        out: the layout root.
        pruned: the batches deleted (manifest and Parquet files), as ``batch`` (oldest first per stream).
        files: Parquet files deleted.
        rows: rows those files held.
        kept: batches of this trail kept (some segment of theirs is still in its stream).
        recovered: what an interrupted run left, finished now (see
            :class:`~auditlog.lake.compact.CompactReport`).
    """

    out: Path
    pruned: tuple[str, ...]
    files: int
    rows: int
    kept: int
    recovered: tuple[str, ...]


def prune(
    journal_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, keys: KeyRing
) -> PruneReport:
    """Delete the Parquet copies of what the streams' retention has purged.

    A batch goes when every segment it was compacted from lies below its stream's first remaining segment,
    and every stream verifies: ``verify`` then vouches, through the stream's own retention records, that
    everything below that segment was purged on the record. A trail with a stream that does not verify
    prunes nothing, so a segment someone deleted is never taken for an expired one (its copy is the
    evidence). Only batches of this trail's streams are considered; a batch with one segment still in its
    stream stays whole (copies outlive the stream by at most one batch).

    Deleting a batch renames its manifest to ``NAME.json.pruned`` first (queries stop seeing it: that is
    the commit point), then deletes its files, then the renamed manifest; an interrupted run is finished by
    the next :func:`~auditlog.lake.compact.compact` or :func:`prune`.

    Raises:
        CompactionError: the trail cannot be read, does not verify, or a file cannot be deleted.
    """
    from store.journal import verify

    jdir = Path(journal_dir)
    root = Path(out) if out is not None else default_out(jdir)
    recovered = finish_interrupted(root)
    first: dict[str, int | None] = {}
    for info in lake_streams(jdir):
        try:
            report = verify(info.path, keys=keys)
            listing = list_journal(info.path)
        except JournalError as exc:
            raise CompactionError(str(exc)) from exc
        if not report.ok:
            bad = report.first_problem
            where = (
                f" ({info.stream} {bad.segment}: {bad.reason})" if bad is not None else f" ({info.stream})"
            )
            raise CompactionError(
                f"trail {jdir} does not verify{where}: nothing pruned; run `auditlog verify` on it"
            )
        first[info.stream] = min(listing.segments) if listing.segments else None
    pruned: list[str] = []
    files = rows = kept = 0
    for manifest in load_manifests(root):
        if manifest.stream not in first or manifest.path is None:
            continue
        lowest = first[manifest.stream]
        if lowest is None or any(segment_number(s.segment) >= lowest for s in manifest.segments):
            kept += 1
            continue
        marker = retire(manifest.path)
        delete_batch(manifest, root, marker)
        pruned.append(manifest.batch)
        files += len(manifest.files)
        rows += manifest.rows
    return PruneReport(
        out=root, pruned=tuple(pruned), files=files, rows=rows, kept=kept, recovered=tuple(recovered)
    )
