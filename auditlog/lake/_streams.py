"""The streams a lake source holds: every stream of a trail, or a classic journal as one stream (private).

Never parse a stream directory's name: labels come from :func:`store.trail.list_streams` (segment headers).
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from auditlog.lake.layout import CompactionError, partition_value
from store._segments import list_journal, split_mac
from store._streams import lock_held
from store._trail_types import StreamInfo, StreamState
from store.exceptions import JournalError

__all__ = ["is_trail", "lake_streams"]


def is_trail(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a trail directory (``trail.json``), rather than a classic journal."""
    return (Path(path) / "trail.json").is_file()


def lake_streams(directory: str | os.PathLike[str]) -> list[StreamInfo]:
    """The streams of a trail directory (by stream id), or a classic journal directory as one stream.

    A classic journal's stream id is its ``source`` (made path-safe); its instance and trail id are None.

    Raises:
        CompactionError: the directory cannot be listed.
    """
    from store.trail import list_streams

    path = Path(directory)
    try:
        if is_trail(path):
            return list_streams(path)
        listing = list_journal(path)
    except JournalError as exc:
        raise CompactionError(str(exc)) from exc
    if not listing.segments:
        return []
    source = journal_source(listing.segments[min(listing.segments)]) or "unknown"
    numbers = listing.numbers
    state: StreamState = (
        "open" if lock_held(path) else ("sealed" if numbers[-1] in listing.seals else "stale")
    )
    return [
        StreamInfo(
            stream=partition_value(source),
            source=source,
            instance=None,
            trail_id=None,
            path=path,
            state=state,
        )
    ]


def journal_source(first_segment: Path) -> str | None:
    """The ``source`` in a segment's header (its first line), or None when it cannot be read."""
    try:
        with open(first_segment, "rb") as fh:
            line = fh.readline().rstrip(b"\n")
        split = split_mac(line)
        header = orjson.loads(split[0]) if split is not None else None
    except (OSError, orjson.JSONDecodeError):
        return None
    source = header.get("source") if isinstance(header, dict) else None
    return source if isinstance(source, str) else None
