"""The ``auditlog`` command line.

Exit codes: 0 success, 1 a check failed (verify, selftest, policy check), 2 bad usage or input.
Nothing here prints a logged value: verification names files and positions, fingerprints are one-way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from auditlog.cli import evidence, lake, query, trail
from auditlog.cli._options import AlsoOpt, err, fail, key_ring, sources_of, state_exit_codes
from auditlog.cli.bodies import bodies_app
from auditlog.policy import PolicyError, sensitive_allowlist_warnings
from auditlog.policy import load as load_policy
from store.exceptions import KeyError_
from store.keys import generate_key_file, rotate_key_file

__all__ = ["app", "main"]

app = typer.Typer(
    name="auditlog",
    help="Audit logging that redacts at the source: shapes not values, a tamper-evident journal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"auditlog {version('auditlog-pipeline')}")
        raise typer.Exit()


@app.callback()
def _root(
    _: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Audit logging that redacts at the source: shapes not values, a tamper-evident journal."""


policy_app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(bodies_app, name="bodies")

out = Console(highlight=False)

KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Key file (default: AUDITLOG_KEY or AUDITLOG_KEY_FILE)."),
]


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Where the demo writes its journal and key.")] = Path(
        "demo-out"
    ),
) -> None:
    """Run a scripted workload with planted secrets through the real pipeline, then verify and summarise."""
    from auditlog.demo.workload import example_record, follow_up, run_demo, summary_rows

    try:
        result = run_demo(dir)
    except FileExistsError as exc:
        raise fail(str(exc)) from None
    out.print(
        "[bold]auditlog demo[/bold]: application logs with every synthetic secret planted, then a "
        "scripted incident against a FastAPI app and an MCP server on 127.0.0.1\n"
    )
    out.print("One journal record, as written (shapes and fingerprints, no values):")
    out.print(example_record(dir).decode(), markup=False, soft_wrap=True)
    out.print()
    table = Table(title="What the journal shows", show_header=False)
    for label, value in summary_rows(result):
        table.add_row(label, value)
    out.print(table)
    script = Table(title="The incident, as the journal recorded it")
    for col in ("channel", "caller", "call", "outcome"):
        script.add_column(col)
    for step in result.incident.get("script", []):
        script.add_row(step["channel"], step["who"], step["call"], str(step["status"]))
    out.print(script)
    refusals = Table(title="Refusals (authz.denied)")
    for col in ("who", "action", "reason", "missing scopes"):
        refusals.add_column(col)
    for r in result.incident.get("refusals", []):
        refusals.add_row(str(r["who"]), str(r["action"]), str(r["reason"]), ", ".join(r["missing"]))
    out.print(refusals)
    events = Table(title="Journal records by event / kind")
    events.add_column("event")
    events.add_column("records", justify="right")
    for name, count in sorted(result.by_event.items()):
        events.add_row(name, str(count))
    out.print(events)
    out.print(
        "Next steps, with the virtualenv active (`. .venv/bin/activate` after `make demo`); the demo "
        "keeps its key beside the journal, a real deployment keeps it elsewhere:",
        markup=False,
    )
    steps = [
        ("check the chain", f"auditlog verify {dir}/journal --key-file {dir}/demo.key"),
        *follow_up(result),
    ]
    for label, command in steps:
        out.print(f"  # {label.removeprefix('next: ')}", markup=False)
        out.print(f"  {command}", markup=False, soft_wrap=True)  # one line, copyable at any width
    if not result.verified or result.leaks or result.dropped or not result.incident.get("exactly_once"):
        raise typer.Exit(1)


@app.command()
def fingerprint(
    value: Annotated[str, typer.Argument(help="The value to fingerprint, or '-' to read it from stdin.")],
    key_file: KeyFileOpt = None,
) -> None:
    """Print the keyed fingerprint of VALUE, as journaled in fp fields (to ask "did it appear?")."""
    from processors import Fingerprinter

    ring = key_ring(key_file)
    if value == "-":
        value = sys.stdin.readline().rstrip("\n")
    fp = Fingerprinter(key=ring.active.derive("fingerprint"), key_id=ring.active.key_id, fields=())
    out.print(fp.fingerprint(value), markup=False)


@app.command()
def keygen(
    path: Annotated[Path, typer.Argument(help="Key file to write (mode 0600).")] = Path("auditlog.key"),
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Prepend a new active key, keep old ones.")
    ] = False,
) -> None:
    """Write a new 32-byte master key; prints its key id, never the key."""
    try:
        key = rotate_key_file(path) if rotate else generate_key_file(path)
    except KeyError_ as exc:
        raise fail(str(exc)) from None
    except FileNotFoundError:
        raise fail(f"{path} does not exist; run without --rotate first") from None
    out.print(f"wrote {path} (key id {key.key_id}); use it with AUDITLOG_KEY_FILE={path}")


@policy_app.command("reference")
def policy_reference() -> None:
    """Print every key a policy file may hold (type, default, meaning) as a Markdown table."""
    from auditlog.policy_reference import render

    sys.stdout.write(render())


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="Policy TOML file.")],
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
) -> None:
    """Validate a policy file; warn when a sensitive-looking field is allowlisted."""
    try:
        pol = load_policy(file)
    except PolicyError as exc:
        raise fail(str(exc), 1) from None
    out.print(f"{file}: policy {pol.id!r} ok, {len(pol.rules)} rules, hash {pol.hash[:16]}")
    table = Table("rule", "match", "level", "allow", "fingerprint", "scopes", "flags")
    for r in (pol.defaults, *pol.rules):
        flags = ", ".join(
            f
            for f, on in (
                ("capture_body", r.capture_body),
                ("disabled", r.disabled),
                ("fail closed", r.fail_mode == "closed"),
            )
            if on
        )
        table.add_row(
            r.id,
            " ".join(f"{k}={v}" for k, v in r.match.items()) or "*",
            r.level,
            ", ".join(sorted(r.allow)),
            ", ".join(sorted(r.fingerprint)),
            ", ".join(sorted(r.required_scopes)),
            flags,
        )
    out.print(table)
    warnings = sensitive_allowlist_warnings(pol)
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", markup=True, soft_wrap=True)
    if strict and warnings:
        raise typer.Exit(1)


@app.command()
def selftest(
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file to test (default: safe default).")
    ] = None,
    scan: Annotated[
        Path | None,
        typer.Option(
            "--scan",
            metavar="DIR",
            help="Plant nothing: look for the corpus's values in every stream of this trail (and of each "
            "--also), and report per stream and in total.",
        ),
    ] = None,
    also: AlsoOpt = None,
    canaries: Annotated[
        Path | None,
        typer.Option("--canaries", help="Corpus file or folder (default: AUDITLOG_CANARIES, else bundled)."),
    ] = None,
) -> None:
    """Plant every canary through the configured pipeline; fail if any comes out."""
    from auditlog.canaries import load_canaries
    from auditlog.demo.selftest import run_selftest

    try:
        corpus = load_canaries(canaries)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"cannot load the canary corpus: {exc}", 2) from None
    if scan is not None:
        _scan(sources_of(str(scan), also), corpus)
        return
    if also:
        raise fail("--also goes with --scan")
    try:
        pol = load_policy(policy) if policy else None
    except PolicyError as exc:
        raise fail(str(exc), 2) from None
    result = run_selftest(pol, canaries=corpus)
    out.print(f"planted {result.planted} times, {result.records} journal records scanned")
    for canary, logger, where in result.leaks:
        out.print(f"[red]LEAK[/red] canary {canary!r} via logger {logger!r} in field {where!r}", markup=True)
    if not result.ok:
        out.print("[red]selftest failed[/red]")
        raise typer.Exit(1)
    out.print("[green]OK[/green]: no planted value reached the journal or the console")


def _scan(sources: list[str], corpus: Any) -> None:
    """``selftest --scan``: a table of every stream's records and leaks, then the total; exit 1 on a leak."""
    from auditlog.demo.selftest import scan_trails
    from store.exceptions import JournalError

    try:
        scans = scan_trails([Path(s) for s in sources], corpus)
    except (FileNotFoundError, JournalError) as exc:
        raise fail(str(exc), 2) from None
    table = Table(title="canary scan")
    for column in ("trail", "stream", "records", "leaks"):
        table.add_column(column)
    for s in scans:
        found = ", ".join(sorted({f"{name} in {where}" for name, where in s.leaks})) or "none"
        table.add_row(s.trail, s.stream, str(s.records), found)
    out.print(table)
    records = sum(s.records for s in scans)
    leaks = sum(len(s.leaks) for s in scans)
    out.print(
        f"{len(sources)} trail(s), {len(scans)} streams, {records} records, {leaks} leaks", markup=False
    )
    if leaks:
        out.print("[red]canaries found[/red]")
        raise typer.Exit(1)
    if not records:
        raise fail("no records to scan", 2)


trail.register(app)
for group in (lake, query, evidence):  # compact, ship, query, export, verify-pack: after the commands above
    group.register(app)
state_exit_codes(app)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    app()
