"""Evidence pack contents (private): SOC 2 control tables, report sections, CSV, Markdown, HTML, SVG charts.

No dependency beyond the standard library: charts are hand-written SVG (readable in any browser and
embedded inline in ``report.html``). Every cell passes through :func:`html.escape` in HTML and through
:func:`_md_cell` in Markdown; cells hold names, counts, times and reasons from the journal, which was
redacted at the source, never values.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditlog.investigate import Investigation
    from auditlog.policy import Policy

__all__ = [
    "Chart",
    "Section",
    "Table",
    "bar_chart_svg",
    "control_tables",
    "policy_document",
    "render_html",
    "render_markdown",
    "retention_settings",
    "sections",
    "table_of",
    "to_csv",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """A titled table: ``columns`` and ``rows`` (already limited by the caller)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""
    total: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """A bar chart: ``file`` is its name inside the pack (``charts/x.svg``)."""

    title: str
    file: str
    labels: tuple[str, ...]
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """A report section: heading, paragraphs, tables, charts."""

    heading: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()


def cell(value: Any) -> str:
    """Render one value as text: times in ISO 8601, lists joined, None empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else ""
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A table as CSV (UTF-8, header row, ``\\n`` line ends), with cells rendered by :func:`cell`.

    A cell that starts with ``= + - @`` is prefixed with ``'`` so spreadsheets do not run it as a formula.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_defuse(cell(v)) for v in row])
    return buf.getvalue().encode("utf-8")


def _defuse(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def bar_chart_svg(chart: Chart, *, width: int = 640, bar_height: int = 18) -> str:
    """A horizontal bar chart as a standalone SVG document."""
    labels = [label[:40] for label in chart.labels] or ["(none)"]
    values = list(chart.values) or [0.0]
    top, left, right = 34, 180, 70
    height = top + len(labels) * (bar_height + 6) + 10
    peak = max(values) or 1.0
    span = width - left - right
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<text x="8" y="20" font-size="14" font-weight="bold">{html.escape(chart.title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * (bar_height + 6)
        w = max(1.0, span * value / peak) if value else 0.0
        parts.append(
            f'<text x="{left - 6}" y="{y + bar_height - 5}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="#4a78b5"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + bar_height - 5}">{html.escape(cell(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _md_cell(value: Any) -> str:
    return cell(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    out = [f"### {table.title}", ""]
    if table.note:
        out += [table.note, ""]
    if not table.rows:
        return [*out, "_No rows._", ""]
    out.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    out.append("|" + "|".join("---" for _ in table.columns) + "|")
    out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    if table.total is not None and table.total > len(table.rows):
        out.append(f"\n_{len(table.rows)} of {table.total} rows shown; all rows are in the CSV._")
    return [*out, ""]


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """The report as Markdown; charts are linked as their SVG files inside the pack."""
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.heading}", ""]
        for para in section.paragraphs:
            out += [para, ""]
        for chart in section.charts:
            out += [f"![{chart.title}]({chart.file})", ""]
        for table in section.tables:
            out += _md_table(table)
    return "\n".join(out).rstrip() + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:72em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}"
    "th{background:#eef2f7}h2{border-bottom:2px solid #4a78b5;padding-bottom:3px}"
    ".ok{color:#2a7a2a;font-weight:bold}.fail{color:#b52a2a;font-weight:bold}"
)


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The report as one self-contained HTML page (charts inline, no scripts, no external resources)."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for section in sections:
        out.append(f"<h2>{esc(section.heading)}</h2>")
        for para in section.paragraphs:
            out.append(f"<p>{esc(para)}</p>")
        for chart in section.charts:
            out.append(f"<figure>{bar_chart_svg(chart)}</figure>")
        for table in section.tables:
            out.append(f"<h3>{esc(table.title)}</h3>")
            if table.note:
                out.append(f"<p>{esc(table.note)}</p>")
            if not table.rows:
                out.append("<p><em>No rows.</em></p>")
                continue
            out.append(
                "<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns) + "</tr></thead>"
            )
            out.append("<tbody>")
            for row in table.rows:
                out.append("<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in row) + "</tr>")
            out.append("</tbody></table>")
            if table.total is not None and table.total > len(table.rows):
                out.append(
                    f"<p><em>{len(table.rows)} of {table.total} rows shown; all rows are in the CSV.</em></p>"
                )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- the SOC 2 control tables and the report's sections ---------------------------------------------

_SHOWN = 200  # rows per table in the reports (the CSVs hold all)


def table_of(title: str, result: Any, note: str = "") -> Table:
    return Table(title=title, columns=result.columns, rows=result.rows, note=note, total=len(result.rows))


def control_tables(
    inv: Investigation, lo: datetime, hi: datetime, incidents: Sequence[str]
) -> tuple[dict[str, Table], list[Chart]]:
    rng = {"lo": lo, "hi": hi}
    decisions = inv.sql(
        "SELECT coalesce(tool, route, action_name) AS resource, action_method AS method, "
        "count(*) FILTER (WHERE decision_allowed) AS allowed, "
        "count(*) FILTER (WHERE decision_allowed = false OR kind = 'authz.denied') AS denied, "
        "string_agg(DISTINCT decision_reason, ', ' ORDER BY decision_reason) AS reasons, "
        "string_agg(DISTINCT array_to_string(decision_required, ' '), '; ') AS required_scopes "
        "FROM events WHERE (decision_allowed IS NOT NULL OR kind = 'authz.denied') "
        "AND ts >= $lo AND ts <= $hi "
        "AND kind NOT LIKE 'body.%' GROUP BY ALL ORDER BY denied DESC, allowed DESC, resource",
        rng,
        since=lo,
        until=hi,
    )
    reads = inv.body_reads(lo, hi)
    coverage = inv.sql(
        "SELECT date, source, count(*) AS records, "
        "count(*) FILTER (WHERE kind <> 'log' AND kind NOT LIKE 'journal.%') AS audit_events, "
        "count(*) FILTER (WHERE kind = 'log') AS log_lines, count(DISTINCT segment) AS segments, "
        "count(DISTINCT date_trunc('hour', ts)) AS active_hours, min(ts) AS first, max(ts) AS last "
        "FROM events WHERE ts >= $lo AND ts <= $hi GROUP BY ALL ORDER BY date, source",
        rng,
        since=lo,
        until=hi,
    )
    denials = inv.denials(lo, hi)
    anomalies = inv.anomalies(lo, hi)
    cids = list(dict.fromkeys(incidents)) or list(
        dict.fromkeys(c for c in denials.column("correlation_id") if c)
    )
    timeline_rows: list[tuple[Any, ...]] = []
    timeline_cols: tuple[str, ...] = ("correlation_id",)
    for cid in cids[:50]:
        try:
            tl = inv.timeline(cid)
        except LookupError:
            continue
        timeline_cols = ("correlation_id", *tl.columns)
        timeline_rows += [(cid, *row) for row in tl.rows]
    timelines = Table(
        title="CC7.4 Incident timelines",
        columns=timeline_cols,
        rows=tuple(timeline_rows),
        note="Every event of each incident correlation id, in order.",
        total=len(timeline_rows),
    )
    tables = {
        "CC6.1_access_decisions": table_of(
            "CC6.1 Access decisions", decisions, "Allowed and denied calls per tool or route, with reasons."
        ),
        "CC6.1_body_reads": table_of(
            "CC6.1 Body reads", reads, "Every read of a stored response body, refused reads included."
        ),
        "CC7.2_monitoring_coverage": table_of(
            "CC7.2 Monitoring coverage", coverage, "Records per day and source; segments and active hours."
        ),
        "CC7.3_denials": table_of("CC7.3 Denials", denials, "Refused calls and reads."),
        "CC7.3_anomalies": table_of(
            "CC7.3 Anomalies", anomalies, "Call-rate spikes, denial bursts and first-seen tools per actor."
        ),
        "CC7.4_incident_timelines": timelines,
    }
    per_day: dict[str, int] = {}
    for row in coverage:
        per_day[str(row["date"])] = per_day.get(str(row["date"]), 0) + int(row["records"])
    per_tool: dict[str, int] = {}
    for row in denials:
        key = str(row["what"] or row["kind"])
        per_tool[key] = per_tool.get(key, 0) + 1
    per_reader: dict[str, int] = {}
    for row in reads:
        key = str(row["reader"] or "(unknown)")
        per_reader[key] = per_reader.get(key, 0) + 1
    charts = [
        Chart(
            title="Events per day",
            file="charts/events_per_day.svg",
            labels=tuple(per_day),
            values=tuple(float(v) for v in per_day.values()),
        ),
        Chart(
            title="Denials per tool or route",
            file="charts/denials_per_tool.svg",
            labels=tuple(per_tool),
            values=tuple(float(v) for v in per_tool.values()),
        ),
        Chart(
            title="Body reads per reader",
            file="charts/body_reads_per_reader.svg",
            labels=tuple(per_reader),
            values=tuple(float(v) for v in per_reader.values()),
        ),
    ]
    return tables, charts


def policy_document(policy: Policy | None, inv: Investigation, lo: datetime, hi: datetime) -> dict[str, Any]:
    seen = inv.sql(
        "SELECT policy_id, policy_hash, count(*) AS events FROM events WHERE policy_id IS NOT NULL "
        "AND ts >= $lo AND ts <= $hi GROUP BY ALL ORDER BY events DESC",
        {"lo": lo, "hi": hi},
        since=lo,
        until=hi,
    )
    doc: dict[str, Any] = {"seen_in_events": seen.as_dicts()}
    if policy is None:
        doc.update({"id": None, "hash": None, "snapshot": None, "note": "no policy given to the export"})
        return doc
    doc.update({"id": policy.id, "hash": policy.hash, "snapshot": policy.snapshot()})
    doc["matches_events"] = any(
        str(r["policy_hash"] or "") and policy.hash.startswith(str(r["policy_hash"])) for r in seen
    )
    return doc


def retention_settings(policy: Policy | None) -> dict[str, Any]:
    if policy is None:
        return {"note": "no policy given to the export"}
    rules = (policy.defaults, *policy.rules)
    return {
        "journal_retention_seconds": policy.defaults.journal_retention,
        "journal_retention_days": round(policy.defaults.journal_retention / 86400, 3),
        "rules": [
            {
                "rule": r.id,
                "body_retention_seconds": r.body_retention,
                "journal_retention_seconds": r.journal_retention,
                "capture_body": r.capture_body,
            }
            for r in rules
        ],
    }


def sections(
    meta: Mapping[str, Any],
    tables: Mapping[str, Table],
    charts: Sequence[Chart],
    chain: Mapping[str, Any],
    policy_doc: Mapping[str, Any],
    retention: Mapping[str, Any],
    controls: str,
) -> list[Section]:
    chain_text = "OK: every segment in range verifies" if chain["ok"] else "FAILED: see the problems below"
    summary = Table(
        title="Pack",
        columns=("field", "value"),
        rows=(
            ("source", meta["source"]),
            ("range", f"{meta['since']} to {meta['until']}"),
            ("generated", meta["generated"]),
            ("by", meta["investigator"]),
            ("records", meta["events"]),
            ("signer (SHA-256 of the Ed25519 public key)", meta["signer"]),
            ("chain verification", chain_text),
            ("policy", f"{policy_doc.get('id')} {str(policy_doc.get('hash') or '')[:16]}"),
        ),
    )
    chain_table = Table(
        title="Segments in range",
        columns=("segment", "ok", "records", "first_seq", "last_seq", "sealed", "checked"),
        rows=tuple(
            tuple(
                s.get(c) for c in ("segment", "ok", "records", "first_seq", "last_seq", "sealed", "checked")
            )
            for s in chain["segments"]
        ),
    )
    problems = Table(title="Problems", columns=("problem",), rows=tuple((p,) for p in chain["problems"]))
    seen = Table(
        title="Policies seen in the events",
        columns=("policy_id", "policy_hash", "events"),
        rows=tuple(
            (r["policy_id"], r["policy_hash"], r["events"]) for r in policy_doc.get("seen_in_events", [])
        ),
    )
    rules = Table(
        title="Retention",
        columns=("rule", "body_retention_seconds", "journal_retention_seconds", "capture_body"),
        rows=tuple(
            tuple(
                r.get(c)
                for c in ("rule", "body_retention_seconds", "journal_retention_seconds", "capture_body")
            )
            for r in retention.get("rules", [])
        ),
    )

    per_stream = Table(
        title="Records per stream",
        columns=("stream", "records"),
        rows=tuple(sorted(meta.get("streams", {}).items())),
    )

    def shown(t: Table) -> Table:
        return Table(title=t.title, columns=t.columns, rows=t.rows[:_SHOWN], note=t.note, total=len(t.rows))

    by_file = {c.file: c for c in charts}
    return [
        Section(heading="Summary", tables=(summary, shown(per_stream))),
        Section(
            heading="CC6.1 Logical access: who may do what, and who read stored bodies",
            tables=(shown(tables["CC6.1_access_decisions"]), shown(tables["CC6.1_body_reads"])),
            charts=(by_file["charts/body_reads_per_reader.svg"],),
        ),
        Section(
            heading="CC7.2 Monitoring: coverage of the audit trail",
            tables=(shown(tables["CC7.2_monitoring_coverage"]),),
            charts=(by_file["charts/events_per_day.svg"],),
        ),
        Section(
            heading="CC7.3 Evaluation of security events: denials and anomalies",
            tables=(shown(tables["CC7.3_denials"]), shown(tables["CC7.3_anomalies"])),
            charts=(by_file["charts/denials_per_tool.svg"],),
        ),
        Section(
            heading="CC7.4 Incident response: timelines", tables=(shown(tables["CC7.4_incident_timelines"]),)
        ),
        Section(heading="Chain verification", paragraphs=(chain_text,), tables=(chain_table, problems)),
        Section(
            heading="Policy and retention",
            paragraphs=(f"Policy snapshot and its SHA-256 are in policy.json (framework: {controls}).",),
            tables=(seen, rules),
        ),
    ]
