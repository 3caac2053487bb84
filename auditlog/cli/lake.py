"""``auditlog compact``, ``auditlog ship`` and ``auditlog lake ...``: the trail to Parquet, to S3, to engines.

``lake ddl`` prints the CREATE statements for an engine, ``lake register --glue`` creates the Glue table,
``lake merge`` rewrites small files of closed hours, ``lake verify`` checks a shipped lake across hosts.

``compact DIR --also DIR2`` and ``ship DIR s3://... --also DIR2`` take several trails (one per host) in
turn, each into its own layout (``DIR/parquet``) and all to the one prefix, and report per directory, then
in total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from auditlog.cli._options import (
    AlsoOpt,
    EndpointOpt,
    JsonOpt,
    KeyFileOpt,
    QuietOpt,
    fail,
    key_ring,
    print_summary,
    progress_bar,
    report_each,
)

__all__ = ["register"]


def compact_cmd(
    directory: Annotated[Path, typer.Argument(help="Trail directory (every stream is compacted).")],
    also: AlsoOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Layout root (default: DIR/parquet; one directory only).")
    ] = None,
    key_file: KeyFileOpt = None,
    batch_mb: Annotated[int, typer.Option("--batch-mb", min=1, help="Segment MiB per batch.")] = 512,
    prune_purged: Annotated[
        bool,
        typer.Option("--prune", help="Then delete the batches of segments the journal's retention purged."),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compact every stream's sealed segments into Parquet (date=/hour=), with manifests. Idempotent.

    Stale streams (writers that died) are recovered and sealed first, on the record. With --also, each
    directory in turn, into its own layout.
    """
    directories = [directory, *map(Path, also or ())]
    if out_dir is not None and len(directories) > 1:
        raise fail("--out names one layout root: give one directory, or compact each into DIR/parquet")
    ring = key_ring(key_file)
    totals = ("compacted_segments", "rows", "already_compacted", "seconds")
    report_each(
        "compact",
        directories,
        lambda d: _compact_one(d, out_dir, ring, batch_mb=batch_mb, prune_purged=prune_purged, quiet=quiet),
        totals,
        as_json,
    )


def _compact_one(
    directory: Path, out_dir: Path | None, ring: Any, *, batch_mb: int, prune_purged: bool, quiet: bool
) -> dict[str, object]:
    """Compact one trail; its summary (per stream)."""
    from auditlog.lake.compact import compact, prune
    from auditlog.lake.layout import LayoutError

    with progress_bar(quiet=quiet) as bar:
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
    return summary


def ship_cmd(
    directory: Annotated[Path, typer.Argument(help="Trail directory.")],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix")],
    also: AlsoOpt = None,
    layout: Annotated[
        Path | None, typer.Option("--layout", help="Layout root (default: DIR/parquet; one directory only).")
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
            help="Also ship JSONL segments (Parquet, manifests, seals and checkpoints suffice to verify).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Upload Parquet, manifests, seals and checkpoints to S3: never overwrites, resumable, checksummed.

    With --also, each trail directory in turn, all to the one prefix (a fleet shares it).
    """
    import math

    from auditlog.policy import PolicyError, parse_duration

    directories = [directory, *map(Path, also or ())]
    if layout is not None and len(directories) > 1:
        raise fail("--layout names one layout root: give one directory, or ship each from DIR/parquet")
    days = None
    if expire_after is not None:
        try:
            days = max(1, math.ceil(parse_duration(expire_after, where="--expire-after") / 86_400))
        except PolicyError as exc:
            raise fail(str(exc)) from None
    totals = ("uploaded", "skipped_already_there", "bytes", "requests", "deleted_superseded", "seconds")

    def run(d: Path) -> dict[str, object]:
        return _ship_one(
            d, url, layout=layout, endpoint_url=endpoint_url, days=days, with_segments=with_segments,
            quiet=quiet,
        )  # fmt: skip

    report_each("ship", directories, run, totals, as_json)


def _ship_one(
    directory: Path,
    url: str,
    *,
    layout: Path | None,
    endpoint_url: str | None,
    days: int | None,
    with_segments: bool,
    quiet: bool,
) -> dict[str, object]:
    """Ship one trail; its summary (per stream)."""
    from auditlog.lake.layout import LayoutError
    from auditlog.lake.s3 import ShipError
    from auditlog.lake.ship import ship

    with progress_bar(quiet=quiet) as bar:
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
    return summary


lake_app = typer.Typer(
    help="The audit lake for engines: DDL, Glue, merge, fleet verification.", no_args_is_help=True
)


@lake_app.command("ddl")
def ddl_cmd(
    url: Annotated[str, typer.Argument(help="Where the layout is: s3://bucket/prefix (or a local path).")],
    engine: Annotated[str, typer.Option("--engine", help="athena, trino, spark or duckdb.")] = "athena",
    table: Annotated[str, typer.Option("--table", help="Table name.")] = "audit_events",
    database: Annotated[str | None, typer.Option("--database", help="Database (schema).")] = None,
) -> None:
    """Print the CREATE statements that declare the layout as a table (Athena: partition projection)."""
    from auditlog.lake.ddl import ddl

    try:
        text = ddl(engine, url, table=table, database=database)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(text)


@lake_app.command("register")
def register_cmd(
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix of the shipped layout.")],
    glue: Annotated[bool, typer.Option("--glue", help="Create or update the table in AWS Glue.")] = False,
    database: Annotated[
        str, typer.Option("--database", help="Glue database (created if missing).")
    ] = "audit",
    table: Annotated[str, typer.Option("--table", help="Table name.")] = "audit_events",
    endpoint_url: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the lake's table in a catalog (today: AWS Glue, with Athena projection)."""
    from auditlog.lake.ddl import register_glue
    from auditlog.lake.s3 import ShipError

    if not glue:
        raise fail("choose a catalog: --glue")
    try:
        result = register_glue(url, database=database, table=table, endpoint_url=endpoint_url)
    except ShipError as exc:
        raise fail(str(exc), 1) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    summary: dict[str, object] = {
        "database": result.database,
        "table": result.table,
        "action": result.action,
        "database_created": result.database_created,
    }
    print_summary("register", summary, as_json)


@lake_app.command("merge")
def merge_cmd(
    layout: Annotated[Path, typer.Argument(help="Layout root (e.g. TRAIL/parquet).")],
    key_file: KeyFileOpt = None,
    target_mb: Annotated[int, typer.Option("--target-mb", min=1, help="Size merged files aim at.")] = 128,
    grace: Annotated[
        int, typer.Option("--grace", min=0, help="Seconds after an hour ends before merging.")
    ] = 600,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite the small files of closed hours into larger ones, under new manifests (stays verifiable)."""
    from auditlog.lake.layout import LayoutError
    from auditlog.lake.merge import merge

    ring = key_ring(key_file)
    try:
        report = merge(layout, keys=ring, target_bytes=target_mb << 20, grace=float(grace))
    except LayoutError as exc:
        raise fail(str(exc), 1) from None
    summary: dict[str, object] = {
        "out": str(report.out),
        "merged_batches": report.merged_batches,
        "files_in": report.files_in,
        "files_out": report.files_out,
        "rows": report.rows,
        "manifests": [f"{m.stream}/{m.batch}" for m in report.manifests],
        "seconds": round(report.seconds, 3),
    }
    print_summary("merge", summary, as_json)


@lake_app.command("verify")
def verify_cmd(
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix, or a local mirror of it.")],
    key_file: KeyFileOpt = None,
    endpoint_url: EndpointOpt = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Hash every Parquet file's bytes (downloads).")
    ] = False,
    markers: Annotated[
        bool, typer.Option("--markers/--no-markers", help="Write a _verified marker per verified partition.")
    ] = True,
    strict: Annotated[bool, typer.Option("--strict", help="Unverified findings fail too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify a shipped lake across hosts: manifests, files, seals and checkpoints; per source."""
    from auditlog.lake.s3 import ShipError, make_client
    from auditlog.lake.verify import verify_lake

    ring = key_ring(key_file)
    client = make_client(endpoint_url) if url.startswith("s3://") else None
    try:
        report = verify_lake(url, keys=ring, client=client, deep=deep, markers=markers, strict=strict)
    except ShipError as exc:
        raise fail(str(exc), 1) from None
    summary: dict[str, object] = {
        "url": report.url,
        "ok": report.ok,
        "sources": [
            {"source": s.source, "ok": s.ok, "streams": len(s.streams), "rows": s.rows, "files": s.files}
            for s in report.sources
        ],
        "manifests": report.manifests,
        "files": report.files,
        "rows": report.rows,
        "seals": report.seals,
        "checkpoints": report.checkpoints,
        "problems": [str(p) for p in report.problems],
        "unverified": [str(p) for p in report.unverified],
        "markers": len(report.markers),
        "seconds": round(report.seconds, 3),
    }
    print_summary("lake verify", summary, as_json)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``compact``, ``ship`` and the ``lake`` group to the root ``auditlog`` app."""
    app.command("compact")(compact_cmd)
    app.command("ship")(ship_cmd)
    app.add_typer(lake_app, name="lake")
