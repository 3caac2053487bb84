"""CLI for incident reconstruction: ``compact``, ``ship``, ``query ...``, ``export``, ``verify-pack``.

``register(app)`` adds them to the root ``auditlog`` app. Exit codes follow :mod:`auditlog.cli`: 0 success,
1 a check failed or nothing was found (unknown correlation id, corrupt data, a pack that does not verify),
2 bad usage or input. Output is a rich table, or ``--json`` / ``--csv``. Rows come from the journal, which
holds shapes and fingerprints, never values; ``find`` never echoes the value it was given.

Every query is journaled as ``query.run``: into ``--audit-dir`` (or ``AUDITLOG_AUDIT_DIR``), by default the
source journal itself when it is a local journal directory not held by a running writer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from auditlog.cli._options import err, fail, key_ring

__all__ = ["register"]

# Tables are wide: when stdout is not a terminal (a pipe, a file), do not fold them to 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)

KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="Key file (default: AUDITLOG_KEY or AUDITLOG_KEY_FILE).")
]
AuditDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--audit-dir",
        envvar="AUDITLOG_AUDIT_DIR",
        help="Journal that records this investigation (default: the source journal, when it is one).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Start: 2026-11-22, 2026-11-22T10:00Z, or 24h, 7d.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End, same forms as --since.")]

query_app = typer.Typer(
    help="Reconstruct an incident: timelines, actors, denials, body reads, fingerprints, anomalies, SQL.",
    no_args_is_help=True,
)


def _is_journal(path: Path) -> bool:
    return path.is_dir() and any(path.glob("[0-9]*.jsonl"))


@contextmanager
def _audit_handle(source: str, audit_dir: Path | None, ring: Any, policy: Any = None) -> Iterator[Any]:
    """Configure the journal that records this investigation, and shut it down afterwards."""
    import auditlog
    from store.exceptions import JournalError

    target = audit_dir
    if target is None:
        if source.startswith("s3://") or not _is_journal(Path(source)):
            raise fail("pass --audit-dir DIR (or set AUDITLOG_AUDIT_DIR): investigations are journaled")
        target = Path(source)
    try:
        handle = auditlog.configure(journal_dir=target, key=ring, policy=policy, stdlib=False)
    except JournalError as exc:
        hint = " (a running writer holds it; pass --audit-dir DIR)" if "in use" in str(exc) else ""
        raise fail(f"cannot journal this investigation: {exc}{hint}") from None
    try:
        yield handle
    finally:
        handle.shutdown()


def _query_errors(source: str) -> Callable[[BaseException], typer.Exit]:
    from auditlog.investigate import (
        BadTimeRange,
        CorruptSource,
        EmptySource,
        NotJournaled,
        SandboxViolation,
        UnknownCorrelationId,
    )

    def translate(exc: BaseException) -> typer.Exit:
        if isinstance(exc, UnknownCorrelationId):
            return fail(str(exc), 1)
        if isinstance(exc, CorruptSource):
            hint = "" if "verify" in str(exc) else f"; `auditlog verify {source}` says more"
            return fail(f"{exc}{hint}", 1)
        if isinstance(exc, BadTimeRange | EmptySource | SandboxViolation | NotJournaled | ValueError):
            return fail(str(exc), 2)
        return fail(f"{type(exc).__name__}: {exc}", 1)

    return translate


def _render(result: Any, *, as_json: bool, as_csv: bool, title: str) -> None:
    if as_json and as_csv:
        raise fail("choose one of --json and --csv")
    if as_json:
        import orjson

        sys.stdout.write(
            orjson.dumps(result.as_dicts(), option=orjson.OPT_INDENT_2, default=_jsonable).decode() + "\n"
        )
        return
    if as_csv:
        from auditlog.evidence.report import to_csv

        sys.stdout.write(to_csv(result.columns, result.rows).decode())
        return
    from auditlog.evidence.report import cell

    table = Table(title=f"{title} ({len(result)} rows)")
    for c in result.columns:
        table.add_column(c, overflow="fold")
    for row in result.rows:
        table.add_row(*(cell(v) for v in row))
    out.print(table)


def _jsonable(value: object) -> object:
    from datetime import date, datetime

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


@query_app.callback()
def _query_main(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="Journal directory, Parquet layout root, or s3://bucket/prefix.")
    ],
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
    investigator: Annotated[str | None, typer.Option("--investigator", help="Who investigates.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Local cache for s3:// sources.")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint.")
    ] = None,
) -> None:
    """Query SOURCE; every query is journaled as query.run (parameter shapes, never values)."""
    ctx.obj = {
        "source": source,
        "key_file": key_file,
        "audit_dir": audit_dir,
        "investigator": investigator,
        "cache_dir": cache_dir,
        "endpoint_url": endpoint_url,
    }


def _run(
    ctx: typer.Context,
    title: str,
    fn: Callable[[Any], Any],
    *,
    as_json: bool,
    as_csv: bool,
    key_file: Path | None,
    audit_dir: Path | None,
) -> None:
    from auditlog.investigate import Investigation, QueryError

    o = ctx.obj
    ring = key_ring(key_file or o["key_file"])
    translate = _query_errors(o["source"])
    client = None
    if o["source"].startswith("s3://"):
        from auditlog.lake.ship import make_client

        client = make_client(o["endpoint_url"])
    with _audit_handle(o["source"], audit_dir or o["audit_dir"], ring) as handle:
        try:
            with Investigation(
                o["source"],
                audit=handle,
                keys=ring,
                investigator=o["investigator"],
                cache_dir=o["cache_dir"],
                s3_client=client,
            ) as inv:
                result = fn(inv)
        except (QueryError, ValueError) as exc:
            raise translate(exc) from None
    _render(result, as_json=as_json, as_csv=as_csv, title=title)


@query_app.command("timeline")
def q_timeline(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(help="The correlation id.")],
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Every event of one correlation id, in order."""
    _run(
        ctx,
        "timeline",
        lambda inv: inv.timeline(correlation_id),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("actor")
def q_actor(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="actor.subject")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """What one actor did in a time range."""
    _run(
        ctx,
        f"actor {subject}",
        lambda inv: inv.actor(subject, since, until),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("denials")
def q_denials(
    ctx: typer.Context,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Refused calls and reads."""
    _run(
        ctx,
        "denials",
        lambda inv: inv.denials(since, until),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("reads")
def q_reads(
    ctx: typer.Context,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Reads of stored bodies (refused ones included): reader, purpose, correlation id."""
    _run(
        ctx,
        "body reads",
        lambda inv: inv.body_reads(since, until),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("find")
def q_find(
    ctx: typer.Context,
    value: Annotated[str, typer.Argument(help="The value (token, e-mail), or '-' to read it from stdin.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Which events carried VALUE? Compares keyed fingerprints; the value is never printed or journaled."""
    if value == "-":
        value = sys.stdin.readline().rstrip("\n")
    if not value:
        raise fail("find needs a non-empty value")
    _run(
        ctx,
        "find",
        lambda inv: inv.find(value, since, until),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("top")
def q_top(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by", help="tool, route or actor.")] = "tool",
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 10,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """The busiest tools, routes or actors."""
    if by not in ("tool", "route", "actor"):
        raise fail("--by must be tool, route or actor")
    _run(
        ctx,
        f"top {by}",
        lambda inv: inv.top(by, since, until, limit=limit),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("anomalies")
def q_anomalies(
    ctx: typer.Context,
    since: SinceOpt = None,
    until: UntilOpt = None,
    window: Annotated[str, typer.Option("--window", help="Rate window for spikes.")] = "1h",
    min_calls: Annotated[int, typer.Option("--min-calls", min=1)] = 20,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Call-rate spikes against each actor's baseline, denial bursts, first-seen tools."""
    _run(
        ctx,
        "anomalies",
        lambda inv: inv.anomalies(since, until, window=window, min_calls=min_calls),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


@query_app.command("sql")
def q_sql(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="One read-only query against the `events` view.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
) -> None:
    """Run one SELECT in the sandbox (no file access, no writes, no settings)."""
    _run(
        ctx,
        "sql",
        lambda inv: inv.sql(text, since=since, until=until),
        as_json=as_json,
        as_csv=as_csv,
        key_file=key_file,
        audit_dir=audit_dir,
    )


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def compact_cmd(
    directory: Annotated[Path, typer.Argument(help="Journal directory.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Layout root (default: DIR/parquet).")] = None,
    key_file: KeyFileOpt = None,
    batch_mb: Annotated[int, typer.Option("--batch-mb", min=1, help="Segment MiB per batch.")] = 512,
    prune_purged: Annotated[
        bool,
        typer.Option("--prune", help="Then delete the batches of segments the journal's retention purged."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compact sealed segments into hive-partitioned Parquet (date=/source=), with manifests. Idempotent."""
    from auditlog.lake.compact import compact, prune
    from auditlog.lake.layout import LayoutError

    ring = key_ring(key_file)
    with _progress() as bar:
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
        "batches": [m.batch for m in report.manifests],
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
    _print_summary("compact", summary, as_json)


def ship_cmd(
    directory: Annotated[Path, typer.Argument(help="Journal directory.")],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix")],
    layout: Annotated[
        Path | None, typer.Option("--layout", help="Layout root (default: DIR/parquet).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint.")
    ] = None,
    expire_after: Annotated[
        str | None,
        typer.Option(
            "--expire-after",
            help="Also expire the shipped copies this long after upload (bucket lifecycle rule), e.g. 400d.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload sealed segments, seals and Parquet to S3: idempotent, resumable, checksums verified."""
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

    with _progress() as bar:
        task = bar.add_task("shipping", total=None)
        try:
            report = ship(
                directory,
                url,
                layout=layout,
                endpoint_url=endpoint_url,
                progress=lambda s, d, t: bar.update(task, completed=d, total=t or None),
                expire_after_days=days,
            )
        except (ShipError, LayoutError) as exc:
            raise fail(str(exc), 1) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
    summary = {
        "url": report.url,
        "uploaded": len(report.uploaded),
        "skipped_already_there": report.skipped,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
    }
    if report.expire_after_days is not None:
        summary["expire_after_days"] = report.expire_after_days
    _print_summary("ship", summary, as_json)


def export_cmd(
    source: Annotated[
        str, typer.Argument(help="Journal directory, Parquet layout root, or s3://bucket/prefix.")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="The pack to write (.zip).")],
    since: Annotated[str, typer.Option("--since", help="Start of the range.")],
    until: Annotated[str, typer.Option("--until", help="End of the range.")],
    controls: Annotated[str, typer.Option("--controls", help="Control framework.")] = "soc2",
    incident: Annotated[
        list[str] | None, typer.Option("--incident", help="Correlation id for CC7.4.")
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file to snapshot.")] = None,
    key_file: KeyFileOpt = None,
    audit_dir: AuditDirOpt = None,
    investigator: Annotated[str | None, typer.Option("--investigator", help="Who exports.")] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a signed evidence pack (SOC 2 CC6.1, CC7.2, CC7.3, CC7.4) for a time range."""
    from auditlog.evidence import EvidenceError, export
    from auditlog.investigate import QueryError
    from auditlog.policy import PolicyError
    from auditlog.policy import load as load_policy

    ring = key_ring(key_file)
    try:
        pol = load_policy(policy) if policy else None
    except PolicyError as exc:
        raise fail(str(exc)) from None
    client = None
    if source.startswith("s3://"):
        from auditlog.lake.ship import make_client

        client = make_client(endpoint_url)
    with _audit_handle(source, audit_dir, ring, pol) as handle, _progress() as bar:
        task = bar.add_task("exporting", total=5)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"export: {stage}", completed=done, total=total)

        try:
            report = export(
                source,
                out_file,
                since=since,
                until=until,
                audit=handle,
                keys=ring,
                policy=pol,
                controls=controls,
                incidents=incident or (),
                investigator=investigator,
                progress=progress,
                s3_client=client,
            )
        except (QueryError, ValueError) as exc:
            raise _query_errors(source)(exc) from None
        except EvidenceError as exc:
            raise fail(str(exc), 1) from None
    summary = {
        "pack": str(report.path),
        "sha256": report.sha256,
        "signer": report.signer,
        "events": report.events,
        "members": len(report.members),
        "chain_ok": report.chain_ok,
        "seconds": round(report.seconds, 3),
    }
    _print_summary("export", summary, as_json)
    if not report.chain_ok:
        err.print("[red]chain verification failed for segments in range: see chain_verification.json[/red]")
        raise typer.Exit(1)


def verify_pack_cmd(
    pack: Annotated[Path, typer.Argument(help="The evidence pack (.zip).")],
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Expected signer: base64 key or SHA-256 fingerprint.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a pack's Ed25519 signature and the SHA-256 of every member; name each bad member."""
    from auditlog.evidence import PackInvalid, verify_pack

    try:
        check = verify_pack(pack, public_key=public_key)
    except PackInvalid as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        import orjson

        doc = {
            "ok": check.ok,
            "signer": check.signer,
            "members": list(check.members),
            "problems": [{"member": p.member, "reason": p.reason} for p in check.problems],
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(f"{pack}: {len(check.members)} members, signer {check.signer}")
        for p in check.problems:
            out.print(f"[red]FAIL[/red] {p.member}: {p.reason}", markup=True)
        out.print(
            "[green]OK[/green]: signature and every member verify" if check.ok else "[red]pack invalid[/red]"
        )
    if not check.ok:
        raise typer.Exit(1)


def _print_summary(title: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        table.add_row(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``compact``, ``ship``, ``query``, ``export`` and ``verify-pack`` to the root ``auditlog`` app."""
    app.command("compact")(compact_cmd)
    app.command("ship")(ship_cmd)
    app.add_typer(query_app, name="query")
    app.command("export")(export_cmd)
    app.command("verify-pack")(verify_pack_cmd)
