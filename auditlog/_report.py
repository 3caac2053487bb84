"""Rendering of evidence packs (private): control tables as CSV, Markdown and HTML, and SVG bar charts.

No dependency beyond the standard library: charts are hand-written SVG (readable in any browser and
embedded inline in ``report.html``). Every cell passes through :func:`html.escape` in HTML and through
:func:`_md_cell` in Markdown; cells hold names, counts, times and reasons from the journal, which was
redacted at the source, never values.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

__all__ = ["Chart", "Section", "Table", "bar_chart_svg", "render_html", "render_markdown", "to_csv"]


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
        return value.isoformat(sep=" ", timespec="seconds")
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
