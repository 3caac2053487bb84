"""``auditlog export`` and ``auditlog verify-pack``: signed evidence packs and their check.

``export SOURCE --also SOURCE ...`` builds one pack over several sources (the trails of many hosts): every
stream of all of them, each source's chain verified on its own. Without ``--journal`` the export is
journaled into the first source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from auditlog.cli._options import (
    EXIT_CODES,
    AlsoOpt,
    EndpointOpt,
    JsonOpt,
    KeyFileOpt,
    MemoryLimitOpt,
    QuietOpt,
    TrailOpt,
    audit_handle,
    err,
    fail,
    key_ring,
    out,
    print_summary,
    progress_bar,
    query_errors,
    sources_of,
)

__all__ = ["register"]


def export_cmd(
    source: Annotated[
        str, typer.Argument(help="Journal directory, Parquet layout root, or s3://bucket/prefix.")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="The pack to write (.zip).")],
    since: Annotated[str, typer.Option("--since", help="Start of the range.")],
    until: Annotated[str, typer.Option("--until", help="End of the range (a time, 0m, or now).")],
    also: AlsoOpt = None,
    controls: Annotated[str, typer.Option("--controls", help="Control framework.")] = "soc2",
    incident: Annotated[
        list[str] | None, typer.Option("--incident", help="Correlation id for CC7.4.")
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file to snapshot.")] = None,
    key_file: KeyFileOpt = None,
    journal: TrailOpt = None,
    investigator: Annotated[str | None, typer.Option("--investigator", help="Who exports.")] = None,
    endpoint_url: EndpointOpt = None,
    memory_limit: MemoryLimitOpt = "1GB",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a signed evidence pack (SOC 2 CC6.1, CC7.2, CC7.3, CC7.4) for a time range, over SOURCE and
    every --also SOURCE as one."""
    from auditlog.evidence import EvidenceError, export
    from auditlog.investigate import QueryError
    from auditlog.policy import PolicyError
    from auditlog.policy import load as load_policy

    ring = key_ring(key_file)
    try:
        pol = load_policy(policy) if policy else None
    except PolicyError as exc:
        raise fail(str(exc)) from None
    sources = sources_of(source, also)
    client = None
    if any(s.startswith("s3://") for s in sources):
        from auditlog.lake.s3 import make_client

        client = make_client(endpoint_url)
    with audit_handle(source, journal, ring, pol) as handle, progress_bar(quiet=quiet) as bar:
        task = bar.add_task("exporting", total=5)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"export: {stage}", completed=done, total=total)

        try:
            report = export(
                sources,
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
                memory_limit=memory_limit,
            )
        except (QueryError, ValueError) as exc:
            raise query_errors(*sources)(exc) from None
        except EvidenceError as exc:
            raise fail(str(exc), 1) from None
    summary = {
        "pack": str(report.path),
        "sha256": report.sha256,
        "signer": report.signer,
        "events": report.events,
        "streams": dict(report.streams),
        "members": len(report.members),
        "chain_ok": report.chain_ok,
        "seconds": round(report.seconds, 3),
    }
    if len(sources) > 1:
        summary["sources"] = sources
    print_summary("export", summary, as_json)
    if not report.chain_ok:
        err.print("[red]chain verification failed for segments in range: see chain_verification.json[/red]")
        raise typer.Exit(1)


def verify_pack_cmd(
    pack: Annotated[Path, typer.Argument(help="The evidence pack (.zip).")],
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            envvar="AUDITLOG_EVIDENCE_PUBLIC_KEY",
            help="The signer you trust: base64 public key or SHA-256 fingerprint, as `auditlog export` "
            "prints it. Required: anyone can re-sign a pack with a key of their own.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a pack's Ed25519 signature by the trusted signer and the SHA-256 of every member."""
    from auditlog.evidence import PackInvalid, verify_pack

    if not public_key:
        raise fail(
            "verify-pack needs the signer you trust: pass --public-key (the signer fingerprint "
            "`auditlog export` printed) or set AUDITLOG_EVIDENCE_PUBLIC_KEY"
        )
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


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``verify-pack`` to the root ``auditlog`` app."""
    app.command("export", epilog=EXIT_CODES)(export_cmd)
    app.command("verify-pack", epilog=EXIT_CODES)(verify_pack_cmd)
