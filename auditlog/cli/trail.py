"""``auditlog verify``: check one or more audit trails, every stream of each, and say what is wrong.

A trail is a directory of streams, one per writer (see :mod:`store.trail`). ``verify`` checks every
stream's chain and seals, the signed checkpoint log, and that each stream still reaches the newest head the
log recorded for it; ``--anchor`` compares with a copy of the checkpoint log kept elsewhere (a shipped
copy), which also catches a directory rolled back, or its newest records cut. A live trail has open
streams: they are warnings, and fail the check unless ``--allow-open``. ``--repair`` first recovers and
seals the streams of writers that died (their lock is free), with the recovery on the record.

Several trails (one per host): ``verify A B`` or ``verify A --also B``, as every command takes several
sources; each is reported per stream, then the total. ``verify s3://bucket/prefix`` checks a shipped lake
across hosts instead (:mod:`auditlog.lake.verify`).

Exit codes: 0 every trail verifies, 1 a check failed (problems, or warnings without ``--allow-open``),
2 bad usage or input (no such directory, no key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from auditlog.cli._options import AlsoOpt, EndpointOpt, KeyFileOpt, fail, key_ring, out, sources_of

__all__ = ["register"]

AnchorOpt = Annotated[
    Path | None,
    typer.Option("--anchor", help="A copy of checkpoints.jsonl kept elsewhere (or that trail's directory)."),
]
AllowOpenOpt = Annotated[
    bool, typer.Option("--allow-open", help="A live trail: open streams are not failures.")
]
RepairOpt = Annotated[
    bool, typer.Option("--repair", help="First recover and seal the streams of writers that died.")
]


def verify_cmd(
    sources: Annotated[
        list[str], typer.Argument(help="Trail directories (one or more), or one s3://bucket/prefix (a lake).")
    ],
    also: AlsoOpt = None,
    key_file: KeyFileOpt = None,
    endpoint_url: EndpointOpt = None,
    anchor: AnchorOpt = None,
    allow_open: AllowOpenOpt = False,
    repair: RepairOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every stream, seal, chain link and checkpoint; name each problem (stream, segment, seq).

    An s3:// source is a shipped lake: verified across hosts as `auditlog lake verify` does.
    """
    from store.trail import recover_stale, verify_trail

    sources = sources_of(sources[0], sources[1:], also)
    if any(s.startswith("s3://") for s in sources):
        if len(sources) > 1:
            raise fail("verify one s3:// lake at a time")
        from auditlog.cli.lake import verify_cmd as verify_lake_cmd

        verify_lake_cmd(
            sources[0], key_file=key_file, endpoint_url=endpoint_url, deep=False, markers=True,
            strict=False, as_json=json_out,
        )  # fmt: skip
        return
    directories = [Path(s) for s in sources]
    ring = key_ring(key_file)
    if anchor is not None and len(directories) > 1:
        raise fail("--anchor compares one trail with its copy: give one directory")
    docs: list[dict[str, Any]] = []
    ok = True
    for directory in directories:
        if not directory.is_dir():
            raise fail(f"{directory} is not a directory")
        if not (directory / "trail.json").exists() and not (directory / "streams").is_dir():
            raise fail(f"{directory} is not an audit trail (no trail.json, no streams/)")
        repaired = [r.stream for r in recover_stale(directory, ring)] if repair else []
        report = verify_trail(directory, keys=ring, anchor=anchor, allow_open=allow_open)
        ok = ok and report.ok
        docs.append(_doc(directory, report, repaired))
    if json_out:
        import orjson

        doc: Any = docs[0] if len(docs) == 1 else {"ok": ok, "trails": docs}
        out.print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode(), markup=False)
    else:
        for d in docs:
            _print(d)
        if len(docs) > 1:
            total = sum(d["records"] for d in docs)
            out.print(f"{len(docs)} trails, {total} records: " + ("OK" if ok else "FAILED"), markup=False)
    if not ok:
        raise typer.Exit(1)


def _doc(directory: Path, report: Any, repaired: list[str]) -> dict[str, Any]:
    streams = []
    for s in report.streams:
        r = s.report
        streams.append(
            {
                "stream": s.stream,
                "state": s.state,
                "records": r.records if r is not None else 0,
                "segments": len(r.segments) if r is not None else 0,
                "checkpointed_seq": s.checkpointed_seq,
                "ok": s.ok,
            }
        )
    return {
        "trail": str(directory),
        "trail_id": report.trail_id,
        "ok": report.ok,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "streams": streams,
        "repaired": repaired,
        "problems": [_problem(p) for p in report.problems],
        "warnings": [_problem(p) for p in report.warnings],
    }


def _problem(p: Any) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("stream", "segment", "seq", "line", "reason")} | {"text": str(p)}


def _print(d: dict[str, Any]) -> None:
    table = Table(title=f"{d['trail']}: {len(d['streams'])} streams, {d['records']} records")
    for col in ("stream", "state", "records", "segments", "checkpointed", "ok"):
        table.add_column(col, overflow="fold")
    for s in d["streams"]:
        seq = "" if s["checkpointed_seq"] is None else str(s["checkpointed_seq"])
        mark = "[green]ok[/green]" if s["ok"] else "[red]FAIL[/red]"
        table.add_row(s["stream"], s["state"], str(s["records"]), str(s["segments"]), seq, mark)
    out.print(table)
    for name in d["repaired"]:
        out.print(f"repaired: stream {name} recovered and sealed (on the record)", markup=False)
    for w in d["warnings"]:
        out.print("[yellow]warning:[/yellow] " + w["text"].replace("[", "\\["), soft_wrap=True)
    for p in d["problems"]:
        out.print("[red]FAIL[/red] " + p["text"].replace("[", "\\["), soft_wrap=True)
    out.print("[green]OK[/green]: every stream intact" if d["ok"] else "[red]verification failed[/red]")


def register(app: typer.Typer) -> None:
    """Add ``verify`` to the root ``auditlog`` app."""
    app.command("verify")(verify_cmd)
