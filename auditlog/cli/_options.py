"""What the ``auditlog`` command groups share, defined once: consoles, options, exits, the key ring.

Exit codes, for every command (:data:`EXIT_CODES`, the epilog of every ``--help``): 0 success, 1 a check
failed or nothing was found, 2 bad usage or input.

Several sources, one way for every command: the first is the positional ``SOURCE`` (or ``DIR``), each
further one an ``--also SOURCE`` (:data:`AlsoOpt`, repeatable). ``query`` and ``export`` read them all as
one; ``verify``, ``compact`` and ``ship`` take each in turn and report per directory, then in total
(:func:`report_each`).
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from store.exceptions import KeyError_
from store.keys import KeyRing, key_from_env

__all__ = [
    "EXIT_CODES",
    "AlsoOpt",
    "CsvOpt",
    "EndpointOpt",
    "JsonOpt",
    "KeyFileOpt",
    "MemoryLimitOpt",
    "MaxRowsOpt",
    "QuietOpt",
    "SinceOpt",
    "TimeoutOpt",
    "TrailOpt",
    "UntilOpt",
    "UnverifiedOpt",
    "audit_handle",
    "cli_session",
    "cli_source",
    "command_with",
    "state_exit_codes",
    "keyword",
    "err",
    "fail",
    "key_ring",
    "out",
    "print_summary",
    "progress_bar",
    "query_errors",
    "report_each",
    "sources_of",
]

EXIT_CODES = "Exit codes: 0 success, 1 a check failed or nothing was found, 2 bad usage or input."


def _flags_without_type() -> None:
    """Typer (0.29) labels every flag ``<bool>`` in rich help, ``--help`` included; a flag takes no value."""
    from typer.core import TyperOption

    labelled = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else labelled(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()

err = Console(stderr=True, highlight=False, soft_wrap=True)
# Tables are wide: when stdout is not a terminal (a pipe, a file), do not fold them to 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)

KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="Key file (default: AUDITLOG_KEY or AUDITLOG_KEY_FILE).")
]
TrailOpt = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        envvar="AUDITLOG_JOURNAL_DIR",
        help="The audit trail this command journals into (default: the source, the first one when there "
        "are several, when it is a trail).",
    ),
]
AlsoOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--also",
        metavar="SOURCE",
        help="One more source (repeat for more): the trails of other hosts, say. query and export read "
        "them all as one (a stream held by two of them is refused); verify, compact and ship take each "
        "in turn and report per directory, then in total.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Start: 2026-11-22, 2026-11-22T10:00Z, or 24h, 7d.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End, same forms as --since, or now.")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint.")]
MemoryLimitOpt = Annotated[
    str, typer.Option("--memory-limit", help="Memory for the engine's queries (512MB, 1GB...).")
]
UnverifiedOpt = Annotated[
    bool,
    typer.Option(
        "--unverified",
        help="Answer even when the source fails verification (a warning says so). By default a query "
        "over a changed, truncated or re-keyed source fails with exit code 1.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.001, metavar="SECONDS", help="Stop a query that runs longer than this."),
]
MaxRowsOpt = Annotated[
    int, typer.Option("--max-rows", min=1, metavar="N", help="Refuse a result of more rows than this.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

NO_KEY = "no key: pass --key-file, or set AUDITLOG_KEY / AUDITLOG_KEY_FILE (see `auditlog keygen`)"


def fail(msg: str, code: int = 2) -> typer.Exit:
    """Print ``error: msg`` on stderr and return the ``typer.Exit`` to raise (2: bad usage or input)."""
    err.print(f"[red]error:[/red] {msg}", markup=True)
    return typer.Exit(code)


def key_ring(key_file: Path | None) -> KeyRing:
    """The key ring from ``--key-file``, else the environment; a clear usage error when neither works.

    Raises:
        typer.Exit: no key anywhere, or a malformed key file.
    """
    try:
        ring = KeyRing.from_file(key_file) if key_file else key_from_env()
    except KeyError_ as exc:
        raise fail(str(exc)) from None
    if ring is None:
        raise fail(NO_KEY)
    _warn_if_readable(key_file or _env_key_file())
    return ring


def _env_key_file() -> Path | None:
    import os

    configured = os.environ.get("AUDITLOG_KEY_FILE") if not os.environ.get("AUDITLOG_KEY") else None
    return Path(configured) if configured else None


def _warn_if_readable(path: Path | None) -> None:
    """Warn when a key file can be read by its group or by others (it should be 0600)."""
    import stat

    if path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        err.print(
            f"[yellow]warning:[/yellow] key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}",
            markup=True,
        )


def is_trail(path: Path) -> bool:
    """Whether ``path`` is an audit trail directory (see :mod:`store.trail`)."""
    return (path / "trail.json").is_file()


def cli_session() -> str:
    """The CLI's stream in a trail is one per OS user and UTC day: an investigator's commands, one after
    another, continue it (a segment each) instead of opening a stream per command."""
    import pwd
    import time

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid-{os.getuid()}"
    return f"{user}-{time.strftime('%Y%m%d', time.gmtime())}"


def cli_source() -> str:
    """The source of the CLI's own stream in a trail: ``cli.<host>``, apart from the servers' streams."""
    import socket

    return f"cli.{socket.gethostname()}"


@contextmanager
def audit_handle(source: str, journal: Path | None, ring: Any, policy: Any = None) -> Iterator[Any]:
    """Journal this command into a trail, as a stream of its own, and seal that stream afterwards.

    The trail is ``journal``, else ``source`` when it is a trail (the servers' own: the CLI's stream sits
    beside theirs, so its reads and investigations are in the same evidence), else a usage error. A command
    over several sources passes the first.
    """
    import auditlog
    from store.exceptions import JournalError

    target = journal
    if target is None:
        if source.startswith("s3://") or not is_trail(Path(source)):
            raise fail("pass --journal DIR (or set AUDITLOG_JOURNAL_DIR): investigations are journaled")
        target = Path(source)
    try:
        handle = auditlog.configure(
            journal_dir=target, key=ring, policy=policy, stdlib=False, source=cli_source(),
            session=cli_session(),
        )  # fmt: skip
    except JournalError as exc:
        raise fail(f"cannot journal this command into {target}: {exc}") from None
    try:
        yield handle
    finally:
        handle.shutdown()


def progress_bar(*, quiet: bool = False) -> Any:
    """A progress bar on stderr; none with ``quiet`` (``--quiet``)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )


def sources_of(first: str, *also: list[str] | None) -> list[str]:
    """The sources of a command, in order: its positional one, then every ``--also``."""
    return [first, *(s for more in also for s in more or ())]


def report_each(
    title: str,
    directories: list[Path],
    run: Callable[[Path], dict[str, Any]],
    totals: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run a command on each directory in turn and print its summary; with several, then their totals.

    One directory prints as the command always did. Several print one summary each (JSON: ``{"directories":
    [...], "total": {...}}``), then the sum of each ``totals`` key. A directory that fails stops the run
    (``run`` raises); those before it are done.
    """
    if len(directories) == 1:
        print_summary(title, run(directories[0]), as_json)
        return
    summaries: list[dict[str, Any]] = []
    for d in directories:
        try:
            summaries.append({"directory": str(d), **run(d)})
        except typer.Exit:
            done = ", ".join(s["directory"] for s in summaries) or "none"
            err.print(f"{title} stopped at {d} (done before it: {done})", markup=False)
            raise
    total: dict[str, Any] = {"directories": len(directories)}
    total |= {k: round(sum(s[k] for s in summaries), 3) for k in totals}
    if as_json:
        print_summary(title, {"directories": summaries, "total": total}, True)
        return
    for summary in summaries:
        print_summary(f"{title} {summary['directory']}", summary, False)
    print_summary(f"{title}: total", total, False)


def print_summary(title: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        if isinstance(v, dict):
            v = [f"{name}: {n}" for name, n in v.items()]
        table.add_row(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    out.print(table)


def query_errors(*sources: str) -> Callable[[BaseException], typer.Exit]:
    """Translate an investigation's errors for ``sources`` into CLI exits (1: failed check, 2: input)."""
    from auditlog.investigate import (
        BadTimeRange,
        CorruptSource,
        EmptySource,
        KeyMismatch,
        NotJournaled,
        QueryLimit,
        SandboxViolation,
        UnknownCorrelationId,
    )

    def translate(exc: BaseException) -> typer.Exit:
        if isinstance(exc, UnknownCorrelationId):
            return fail(str(exc), 1)
        if isinstance(exc, CorruptSource):
            return fail(f"{exc}{'' if 'verify' in str(exc) else verify_hint(*sources)}", 1)
        if isinstance(exc, QueryLimit):
            return fail(f"{exc} (--timeout, --max-rows)", 2)
        if isinstance(
            exc, BadTimeRange | EmptySource | SandboxViolation | NotJournaled | KeyMismatch | ValueError
        ):
            return fail(str(exc), 2)
        return fail(f"{type(exc).__name__}: {exc}", 1)

    return translate


def verify_hint(*sources: str) -> str:
    """Where to look further when ``sources`` cannot be read: ``auditlog verify`` needs a local journal."""
    if len(sources) > 1:
        if all(not s.startswith("s3://") and is_trail(Path(s)) for s in sources):
            return f"; `auditlog verify {' '.join(sources)}` says more"
        return "".join(dict.fromkeys(verify_hint(s) for s in sources))
    (source,) = sources
    if source.startswith("s3://"):
        return (
            "; the shipped copy is checked against its manifests as it is fetched: run `auditlog verify` on "
            "the journal it was shipped from (on the writer's host) and ship it again"
        )
    if is_trail(Path(source)):
        return f"; `auditlog verify {source}` says more"
    return "; run `auditlog verify` on the journal it was compacted from"


def keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A keyword-only parameter, to declare an option once for :func:`command_with`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def command_with(
    app: typer.Typer,
    name: str,
    shared: tuple[inspect.Parameter, ...],
    run: Callable[[typer.Context, dict[str, Any], Callable[[], Any]], None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as ``app``'s command ``name``, with the group's ``shared`` options.

    The command's own parameters come from the function; ``shared`` are appended after them (so every
    command of a group accepts them after its name). ``run(ctx, shared_values, call)`` does the group's
    work around ``call()``, which calls the function with its own parameters.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(fn).parameters.values()
        ]

        def command(ctx: typer.Context, **kw: Any) -> None:
            values = {p.name: kw.pop(p.name) for p in shared}
            run(ctx, values, lambda: fn(**kw))

        ctx_param = inspect.Parameter(
            "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
        )
        params = [ctx_param, *own, *shared]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = fn.__doc__
        command.__name__ = f"{name.replace('-', '_')}_cmd"
        app.command(name, epilog=EXIT_CODES)(command)
        return fn

    return register


def state_exit_codes(app: typer.Typer) -> None:
    """Give every command and group under ``app`` (and ``app`` itself) the exit-code epilog, unless it has
    one: the scheme is stated once here, and a command added later states it too."""
    if not app.info.epilog:
        app.info.epilog = EXIT_CODES
    for command in app.registered_commands:
        if not command.epilog:
            command.epilog = EXIT_CODES
    for group in app.registered_groups:
        if group.typer_instance is not None:
            state_exit_codes(group.typer_instance)
        if not group.epilog:
            group.epilog = EXIT_CODES
