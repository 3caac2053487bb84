"""``auditlog query SOURCE ...``: incident reconstruction.

``register(app)`` adds the group to the root ``auditlog`` app. Exit codes follow :mod:`auditlog.cli`: 0
success, 1 a check failed or nothing was found (unknown correlation id, corrupt data, a pack that does not
verify), 2 bad usage or input. Output is a rich table, or ``--json`` / ``--csv``. Rows come from the journal,
which holds shapes and fingerprints, never values; ``find`` never echoes the value it was given.

Every query is journaled as ``query.run``: into ``--journal`` (or ``AUDITLOG_JOURNAL_DIR``), by default
the source trail itself, as a stream of its own beside the servers' streams.

Several sources (the trails of many hosts, or copies of them) are queried as one: ``auditlog query
host-a/trail timeline CID --also host-b/trail`` (``--also`` after the query's name, or before SOURCE as
every option of the group; repeated for more). Each is verified on its own; rows keep their ``source`` and
``stream``; across hosts they order by ``ts``, then ``stream``, then ``seq``, as good as the hosts' clock
sync. Without ``--journal``, the queries are journaled into the first source.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from auditlog.cli._options import (
    EXIT_CODES,
    AlsoOpt,
    CsvOpt,
    EndpointOpt,
    JsonOpt,
    KeyFileOpt,
    MaxRowsOpt,
    MemoryLimitOpt,
    SinceOpt,
    TimeoutOpt,
    TrailOpt,
    UntilOpt,
    UnverifiedOpt,
    audit_handle,
    command_with,
    err,
    fail,
    key_ring,
    keyword,
    out,
    query_errors,
    sources_of,
)
from auditlog.investigate.sandbox import MAX_ROWS, TIMEOUT

__all__ = ["register"]

InvestigatorOpt = Annotated[str | None, typer.Option("--investigator", help="Who investigates.")]
CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Local cache for s3:// sources.")]

Query = tuple[str, Callable[[Any, Any, Any], Any]]  # a title, what to run on (Investigation, since, until)

query_app = typer.Typer(
    help="Reconstruct an incident: timelines, actors, denials, body reads, fingerprints, anomalies, SQL.",
    no_args_is_help=True,
    epilog=EXIT_CODES,
)


def _render(result: Any, *, as_json: bool, as_csv: bool, title: str) -> None:
    if as_json and as_csv:
        raise fail("choose one of --json and --csv")
    rows = [tuple(_zoned(v) for v in row) for row in result.rows]
    if as_json:
        import orjson

        doc = [dict(zip(result.columns, row, strict=True)) for row in rows]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=_jsonable).decode() + "\n")
        return
    if as_csv:
        from auditlog.evidence.report import to_csv

        sys.stdout.write(to_csv(result.columns, rows).decode())
        return
    from auditlog.evidence.report import cell

    texts = [[cell(v) for v in row] for row in rows]
    caption = f"{title} ({len(result)} rows)"
    widths = [max([len(c), *(len(t[i]) for t in texts)]) for i, c in enumerate(result.columns)]
    if sum(widths) + 3 * len(widths) + 1 <= out.width:
        table = Table(title=caption)
        for c in result.columns:
            table.add_column(c, overflow="fold")
        for row_text in texts:
            table.add_row(*row_text)
        out.print(table)
        return
    # Too wide for the terminal: one block per row (column, value), as `psql -x` does
    out.print(caption, markup=False)
    for n, row_text in enumerate(texts, 1):
        block = Table(title=f"row {n}", show_header=False, title_justify="left")
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for c, t in zip(result.columns, row_text, strict=True):
            block.add_row(c, t)
        out.print(block)


def _zoned(value: object) -> object:
    """A time as ISO 8601 with its zone (naive times are UTC, the journal's convention): ``...Z``."""
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value
        return utc.replace(tzinfo=None).isoformat() + "Z"
    return value


def _jsonable(value: object) -> object:
    from datetime import date, datetime

    if isinstance(value, datetime):
        return _zoned(value)
    if isinstance(value, date):
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
    also: AlsoOpt = None,
    key_file: KeyFileOpt = None,
    journal: TrailOpt = None,
    investigator: InvestigatorOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Query SOURCE (and every --also SOURCE, as one); every query is journaled as query.run (parameter
    shapes, never values)."""
    ctx.obj = {
        "source": source,
        "also": also,
        "key_file": key_file,
        "journal": journal,
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
    journal: Path | None,
    unverified: bool,
    timeout: float,
    max_rows: int,
    endpoint_url: str | None = None,
    investigator: str | None = None,
    cache_dir: Path | None = None,
    memory_limit: str = "1GB",
    also: list[str] | None = None,
) -> None:
    from auditlog.investigate import Investigation, QueryError

    # Options given after the command win over the same options given before it (on the group).
    o = {
        **ctx.obj,
        **{
            k: v
            for k, v in (
                ("endpoint_url", endpoint_url),
                ("investigator", investigator),
                ("cache_dir", cache_dir),
            )
            if v is not None
        },
    }
    ring = key_ring(key_file or o["key_file"])
    sources = sources_of(o["source"], o["also"], also)
    translate = query_errors(*sources)
    client = None
    if any(s.startswith("s3://") for s in sources):
        from auditlog.lake.s3 import make_client

        client = make_client(o["endpoint_url"])
    with audit_handle(sources[0], journal or o["journal"], ring) as handle:
        try:
            with Investigation(
                sources,
                audit=handle,
                keys=ring,
                investigator=o["investigator"],
                cache_dir=o["cache_dir"],
                s3_client=client,
                timeout=timeout,
                max_rows=max_rows,
                memory_limit=memory_limit,
                allow_unverified=unverified,
            ) as inv:
                result = fn(inv)
                integrity = inv.integrity
        except (QueryError, ValueError) as exc:
            raise translate(exc) from None
    _render(result, as_json=as_json, as_csv=as_csv, title=title)
    if not result.verified:
        err.print(
            f"[yellow]warning:[/yellow] answered from data that fails verification (--unverified): "
            f"{integrity.summary()}",
            markup=True,
        )


# The options every query takes after its own, declared once.
_SHARED = (
    keyword("as_json", JsonOpt, False),
    keyword("as_csv", CsvOpt, False),
    keyword("key_file", KeyFileOpt, None),
    keyword("journal", TrailOpt, None),
    keyword("unverified", UnverifiedOpt, False),
    keyword("timeout", TimeoutOpt, TIMEOUT),
    keyword("max_rows", MaxRowsOpt, MAX_ROWS),
    keyword("endpoint_url", EndpointOpt, None),
    keyword("investigator", InvestigatorOpt, None),
    keyword("cache_dir", CacheDirOpt, None),
    keyword("memory_limit", MemoryLimitOpt, "1GB"),
    keyword("also", AlsoOpt, None),
)


_RANGE = (keyword("since", SinceOpt, None), keyword("until", UntilOpt, None))


def _ranged(ctx: typer.Context, shared: dict[str, Any], call: Callable[[], Any]) -> None:
    since, until = shared.pop("since"), shared.pop("until")
    title, query = call()
    _run(ctx, title, lambda inv: query(inv, since, until), **shared)


def query_command(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``auditlog query SOURCE [--also SOURCE]... <name>``.

    The function takes the command's own parameters and returns ``(title, query)``; ``query(inv, since,
    until)`` runs it. ``--since``, ``--until`` and the options every query shares are declared once, here.
    """
    return command_with(query_app, name, (*_RANGE, *_SHARED), _ranged)


@query_command("timeline")
def _timeline(
    correlation_id: Annotated[str, typer.Argument(help="The correlation id.")],
) -> Query:
    """Every event of one correlation id, in order."""
    return "timeline", lambda inv, since, until: inv.timeline(correlation_id, since, until)


@query_command("actor")
def _actor(
    subject: Annotated[str, typer.Argument(help="actor.subject")],
) -> Query:
    """What one actor did in a time range."""
    return f"actor {subject}", lambda inv, since, until: inv.actor(subject, since, until)


@query_command("denials")
def _denials() -> Query:
    """Refused calls and reads."""
    return "denials", lambda inv, since, until: inv.denials(since, until)


@query_command("reads")
def _reads() -> Query:
    """Reads of stored bodies (refused ones included): reader, purpose, correlation id."""
    return "body reads", lambda inv, since, until: inv.body_reads(since, until)


@query_command("find")
def _find(
    value: Annotated[str, typer.Argument(help="The value (token, e-mail), or '-' to read it from stdin.")],
) -> Query:
    """Which events carried VALUE? Compares keyed fingerprints; the value is never printed or journaled."""
    if value == "-":
        value = sys.stdin.readline().rstrip("\n")
    if not value:
        raise fail("find needs a non-empty value")
    return "find", lambda inv, since, until: inv.find(value, since, until)


@query_command("top")
def _top(
    by: Annotated[str, typer.Option("--by", help="tool, route or actor.")] = "tool",
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 10,
) -> Query:
    """The busiest tools, routes or actors."""
    if by not in ("tool", "route", "actor"):
        raise fail("--by must be tool, route or actor")
    return f"top {by}", lambda inv, since, until: inv.top(by, since, until, limit=limit)


@query_command("anomalies")
def _anomalies(
    window: Annotated[str, typer.Option("--window", help="Rate window for spikes.")] = "1h",
    min_calls: Annotated[int, typer.Option("--min-calls", min=1)] = 20,
) -> Query:
    """Call-rate spikes against each actor's baseline, denial bursts, first-seen tools."""
    return "anomalies", lambda inv, since, until: inv.anomalies(
        since, until, window=window, min_calls=min_calls
    )


@query_command("sql")
def _sql(
    text: Annotated[str, typer.Argument(help="One read-only query against the `events` view.")],
) -> Query:
    """Run one SELECT in the sandbox (no file access, no writes, no settings)."""
    return "sql", lambda inv, since, until: inv.sql(text, since=since, until=until)


def register(app: typer.Typer) -> None:
    """Add the ``query`` group to the root ``auditlog`` app."""
    app.add_typer(query_app, name="query")
