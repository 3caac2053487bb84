"""``auditlog compact`` and ``auditlog ship``: the trail to Parquet, and the layout to S3."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditlog.cli._options import (
    EndpointOpt,
    JsonOpt,
    KeyFileOpt,
    fail,
    key_ring,
    print_summary,
    progress_bar,
)

__all__ = ["register"]


def compact_cmd(
    directory: Annotated[Path, typer.Argument(help="Trail directory (every stream is compacted).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Layout root (default: DIR/parquet).")] = None,
    key_file: KeyFileOpt = None,
    batch_mb: Annotated[int, typer.Option("--batch-mb", min=1, help="Segment MiB per batch.")] = 512,
    prune_purged: Annotated[
        bool,
        typer.Option("--prune", help="Then delete the batches of segments the journal's retention purged."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compact every stream's sealed segments into Parquet (date=/hour=), with manifests. Idempotent.

    Stale streams (writers that died) are recovered and sealed first, on the record.
    """
    from auditlog.lake.compact import compact, prune
    from auditlog.lake.layout import LayoutError

    ring = key_ring(key_file)
    with progress_bar() as bar:
        task = bar.add_task("compacting", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        try:
            report = compact(directory, out_dir, keys=ring, max_batch_bytes=batch_mb << 20, progress=progress)
        except LayoutError as exc:
            hint = "" if "verify" in str(exc) else f"; `auditlog verify {directory}` says more"
            raise fail(f"{exc}{hint}", 1) from None
    recovered = list(report.recovered)
    summary: dict[str, object] = {
        "out": str(report.out),
        "compacted_segments": report.compacted,
        "rows": report.rows,
        "already_compacted": report.skipped,
        "pending_unsealed": list(report.pending),
        "recovered": recovered,
        "recovered_stale_streams": [r.stream for r in report.stale_recovered],
        "batches": [f"{m.stream}/{m.batch}" for m in report.manifests],
        "streams": [
            {
                "stream": s.stream,
                "source": s.source,
                "state": s.state,
                "compacted_segments": s.compacted,
                "rows": s.rows,
                "already_compacted": s.skipped,
                "pending_unsealed": list(s.pending),
            }
            for s in report.streams
        ],
        "seconds": round(report.seconds, 3),
    }
    if prune_purged:
        try:
            pruned = prune(directory, out_dir, keys=ring)
        except LayoutError as exc:
            raise fail(str(exc), 1) from None
        summary["pruned_batches"] = list(pruned.pruned)
        summary["pruned_rows"] = pruned.rows
        recovered += pruned.recovered
    print_summary("compact", summary, as_json)


def ship_cmd(
    directory: Annotated[Path, typer.Argument(help="Trail directory.")],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix")],
    layout: Annotated[
        Path | None, typer.Option("--layout", help="Layout root (default: DIR/parquet).")
    ] = None,
    endpoint_url: EndpointOpt = None,
    expire_after: Annotated[
        str | None,
        typer.Option(
            "--expire-after",
            help="Also expire the shipped copies this long after upload (bucket lifecycle rule), e.g. 400d.",
        ),
    ] = None,
    with_segments: Annotated[
        bool,
        typer.Option(
            "--with-segments",
            help="Also ship the JSONL segments (Parquet, manifests, seals and checkpoints suffice to verify).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upload Parquet, manifests, seals and checkpoints to S3: never overwrites, resumable, checksummed."""
    import math

    from auditlog.lake.layout import LayoutError
    from auditlog.lake.ship import ShipError, ship
    from auditlog.policy import PolicyError, parse_duration

    days = None
    if expire_after is not None:
        try:
            days = max(1, math.ceil(parse_duration(expire_after, where="--expire-after") / 86_400))
        except PolicyError as exc:
            raise fail(str(exc)) from None

    with progress_bar() as bar:
        task = bar.add_task("shipping", total=None)
        try:
            report = ship(
                directory,
                url,
                layout=layout,
                endpoint_url=endpoint_url,
                progress=lambda s, d, t: bar.update(task, completed=d, total=t or None),
                expire_after_days=days,
                with_segments=with_segments,
            )
        except (ShipError, LayoutError) as exc:
            raise fail(str(exc), 1) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
    summary: dict[str, object] = {
        "url": report.url,
        "uploaded": len(report.uploaded),
        "skipped_already_there": report.skipped,
        "bytes": report.bytes,
        "requests": report.requests,
        "deleted_superseded": len(report.deleted),
        "uploaded_per_stream": report.streams,
        "seconds": round(report.seconds, 3),
    }
    if report.expire_after_days is not None:
        summary["expire_after_days"] = report.expire_after_days
    print_summary("ship", summary, as_json)


def register(app: typer.Typer) -> None:
    """Add ``compact`` and ``ship`` to the root ``auditlog`` app."""
    app.command("compact")(compact_cmd)
    app.command("ship")(ship_cmd)
