"""Crash safety of the layout: the commit points every change goes through, and finishing interrupted runs.

Compaction, merging and pruning change the layout in the same three steps, so a run that dies anywhere
leaves something the next run can finish or discard:

- a batch (compacted or merged) is written to ``_staging``, then :func:`write_manifest` writes its manifest
  atomically (the commit point), then :func:`roll_forward` moves the staged files into place;
- a merge's manifest supersedes earlier ones; :func:`finish_merges` deletes those and the files only they
  named;
- a pruned batch is retired first (:func:`retire` renames its manifest to ``NAME.json.pruned``: queries
  stop seeing it), then :func:`delete_batch` deletes its files and the renamed manifest.

:func:`finish_interrupted` runs first in :func:`~auditlog.lake.compact.compact`,
:func:`~auditlog.lake.compact.prune` and :func:`~auditlog.lake.merge.merge`: it finishes retired batches,
rolls committed staging forward, discards uncommitted staging and finishes merges.

:func:`batch_name`, :func:`delete_files`, :func:`finish_merges`, :func:`roll_forward` and
:func:`write_manifest` stay importable from :mod:`auditlog.lake.compact`, where they were public first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson

from auditlog.lake.layout import (
    MANIFEST_DIR,
    STAGING_DIR,
    CompactionError,
    LayoutError,
    Manifest,
    live_manifests,
    load_manifests,
    manifest_mac,
    parse_manifest,
    partition_value,
)
from store.keys import KeyRing

__all__ = [
    "batch_name",
    "delete_batch",
    "delete_files",
    "finish_interrupted",
    "finish_merges",
    "retire",
    "roll_forward",
    "segment_number",
    "write_manifest",
]

# The boundary to the file system, as a module name so a test can interrupt a run.
_replace = os.replace

_PRUNED = ".pruned"


def segment_number(segment: str) -> int:
    """A segment's number from its file name: ``00000004.jsonl`` is 4."""
    return int(segment.split(".", 1)[0])


def batch_name(first: str, last: str) -> str:
    """A batch's name from its first and last segment: ``00000001-00000004``."""
    return f"{segment_number(first):08d}-{segment_number(last):08d}"


def write_manifest(root: Path, keys: KeyRing, draft: Manifest) -> Manifest:
    """MAC ``draft`` under the active key and write it atomically (the commit point of a batch or merge).

    Raises:
        CompactionError: the manifest cannot be written.
    """
    draft = Manifest(**{**{k: getattr(draft, k) for k in draft.__slots__}, "kid": keys.active.key_id})
    content = draft.content()
    mac = manifest_mac(keys.active.derive("compaction"), content)
    target = root / draft.key
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({**content, "mac": mac}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, target)
    except OSError as exc:
        raise CompactionError(f"cannot write manifest {target}: {exc.strerror}") from exc
    return Manifest(**{**{k: getattr(draft, k) for k in draft.__slots__}, "mac": mac, "path": target})


def roll_forward(manifest: Manifest, root: Path, staging: Path) -> None:
    """Move a committed batch's staged files into place, then drop its staging directory."""
    for entry in manifest.files:
        staged = staging / "files" / entry.path
        if staged.exists():
            final = root / entry.path
            final.parent.mkdir(parents=True, exist_ok=True)
            _replace(staged, final)
    shutil.rmtree(staging, ignore_errors=True)


def retire(manifest: Path) -> Path:
    """Rename a batch's manifest to ``NAME.json.pruned`` (the commit point of pruning it); returns the marker.

    Raises:
        CompactionError: the manifest cannot be renamed.
    """
    marker = manifest.with_name(manifest.name + _PRUNED)
    try:
        _replace(manifest, marker)
    except OSError as exc:
        raise CompactionError(f"cannot retire manifest {manifest}: {exc.strerror}") from exc
    return marker


def delete_files(root: Path, paths: list[str]) -> None:
    """Delete layout files (and the partition folders they leave empty)."""
    for rel in paths:
        path = root / rel
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            if folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def delete_batch(manifest: Manifest, root: Path, marker: Path) -> None:
    """Delete a retired batch's Parquet files (and partition folders left empty), then its manifest."""
    try:
        delete_files(root, [f.path for f in manifest.files])
        marker.unlink(missing_ok=True)
    except OSError as exc:
        raise CompactionError(f"cannot delete batch {manifest.batch}: {exc.strerror}") from exc


def finish_interrupted(root: Path) -> list[str]:
    """Finish or discard what an interrupted run left in ``_staging``; finish interrupted prunes, merges."""
    done_prunes: list[str] = []
    for marker in sorted((root / MANIFEST_DIR).glob(f"stream=*/*.json{_PRUNED}")):
        try:
            retired = parse_manifest(marker.read_bytes(), path=marker)
        except (OSError, LayoutError):
            continue  # unreadable: left for a person to look at (queries do not read it)
        delete_batch(retired, root, marker)
        done_prunes.append(f"{marker.parent.name}/{retired.batch}: pruning finished")
    base = root / STAGING_DIR
    if not base.is_dir():
        return done_prunes + finish_merges(root)
    committed = {(m.path.parent.name, m.batch): m for m in load_manifests(root) if m.path is not None}
    done: list[str] = []
    for staging in sorted(base.glob("stream=*/*")):
        key = (staging.parent.name, staging.name)
        manifest = committed.get(key)
        if manifest is not None:
            roll_forward(manifest, root, staging)
            done.append(f"{key[0]}/{key[1]}: rolled forward")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"{key[0]}/{key[1]}: discarded")
    for tmp in (root / MANIFEST_DIR).glob("stream=*/*.json.tmp"):
        tmp.unlink(missing_ok=True)
    return done_prunes + done + finish_merges(root)


def finish_merges(root: str | os.PathLike[str]) -> list[str]:
    """Delete superseded manifests, and the files only they named, of every committed merge.

    Returns:
        One line per superseded batch deleted.
    """
    base = Path(root)
    everything: list[Manifest] = []
    for path in sorted((base / MANIFEST_DIR).glob("stream=*/*.json")):
        try:
            everything.append(parse_manifest(path.read_bytes(), path=path))
        except (OSError, LayoutError):
            continue
    live = live_manifests(everything)
    keep = {f.path for m in live for f in m.files}
    done: list[str] = []
    live_keys = {(m.stream, m.batch) for m in live}
    for m in everything:
        if (m.stream, m.batch) in live_keys or m.path is None:
            continue
        try:
            delete_files(base, [f.path for f in m.files if f.path not in keep])
            m.path.unlink(missing_ok=True)
        except OSError as exc:
            raise CompactionError(f"cannot delete superseded batch {m.batch}: {exc.strerror}") from exc
        done.append(f"stream={partition_value(m.stream)}/{m.batch}: superseded by a merge, deleted")
    return done
