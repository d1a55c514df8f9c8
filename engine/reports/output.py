"""Reports as people and scripts read them: tables in the terminal, JSON, CSV (one table), and
a self-contained HTML page whose charts are SVG drawn here (pygal), each beside its table.
Nothing in the page is fetched when it is viewed."""

from __future__ import annotations

import csv
import io
import json
import re

from jinja2 import Environment
from markupsafe import Markup
from rich.console import Console
from rich.table import Table as RichTable

from engine.cli_context import styled
from engine.errors import Invalid
from engine.reports.model import DIMENSIONS, Chart, Column, Report, Table

MAX_CHART_POINTS = 60  # x labels in one chart; a longer table is charted in its first rows


def formatted(value, column: Column) -> str:
    if value is None:
        return "-"
    if column.kind == "count":
        return f"{value:,}"
    if column.kind == "rate":
        return f"{value:.1%}"
    if column.kind in ("hours", "days"):
        return f"{value:,.1f}"
    if column.kind == "amount":
        return f"{value:,.2f}"
    return str(value)


def to_terminal(report: Report, console: Console) -> None:
    """Each table at its natural width (wider than the terminal if it must: a report piped to
    a file or a pager stays one row per line)."""
    console.print(styled((report.title, "bold"), f"  {subtitle(report)}"))
    for table in report.tables:
        if not table.rows:
            console.print(f"{table.title}: nothing in this period")
        else:
            shown = RichTable(title=table.title, title_justify="left")
            for column in table.columns:
                unit = f" ({column.kind})" if column.kind in ("hours", "days") else ""
                shown.add_column(column.label + unit, no_wrap=True,
                                 justify="left" if column.kind == "text" else "right")
            for row in table.rows:
                shown.add_row(*(formatted(row.get(c.key), c) for c in table.columns))
            _print_wide(console, shown)
        for note in table.notes:
            console.print(f"  {note}", style="dim")
    for note in report.notes:
        console.print(note, style="dim")


def _print_wide(console: Console, table: RichTable) -> None:
    natural = console.measure(table, options=console.options.update(width=10_000)).maximum
    fixed = console._width  # None: rich measures the terminal; put back exactly as it was
    console.width = max(console.width, natural)  # rich never prints wider than the console
    try:
        console.print(table, crop=False)
    finally:
        console._width = fixed


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=True)


def to_csv(report: Report, table_key: str | None = None) -> str:
    """One table (the first unless `table_key` names another) with a header row of keys.
    Text cells that a spreadsheet would read as a formula are neutralised."""
    table = _pick(report, table_key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.key for column in table.columns])
    for row in table.rows:
        writer.writerow([_csv_cell(row.get(column.key)) for column in table.columns])
    return out.getvalue()


def _pick(report: Report, table_key: str | None) -> Table:
    if table_key is None:
        return report.tables[0]
    for table in report.tables:
        if table.key == table_key:
            return table
    known = ", ".join(table.key for table in report.tables)
    raise Invalid(f"report {report.name} has no table {table_key!r} (tables: {known})",
                  field="table")


def _csv_cell(value) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_html(report: Report) -> str:
    return _PAGE.render(report=report, subtitle=subtitle(report), sections=sections(report))


def sections(report: Report) -> list[dict]:
    """Each table with its chart (inline SVG, or None) and its rows as formatted text: what the
    HTML page and the console's report page show."""
    return [{"table": table, "svg": chart_svg(table) if table.chart and table.rows else None,
             "rows": [[formatted(row.get(c.key), c) for c in table.columns]
                      for row in table.rows]}
            for table in report.tables]


def chart_svg(table: Table) -> Markup:
    """The table's chart as inline SVG, without pygal's script (nothing runs in the page)."""
    import pygal

    chart: Chart = table.chart
    style = pygal.style.Style(background="white", plot_background="white",
                              font_family="system-ui, sans-serif")
    kind = pygal.Line if chart.kind == "line" else pygal.Bar
    drawn = kind(js=[], disable_xml_declaration=True, width=720, height=360, style=style,
                 x_label_rotation=30, legend_at_bottom=True, print_values=False,
                 explicit_size=True)
    drawn.title = chart.title
    rows = table.rows[:MAX_CHART_POINTS]
    drawn.x_labels = [_x_label(row, chart.x) for row in rows]
    labels = {column.key: column.label for column in table.columns}
    for key in chart.series:
        drawn.add(labels.get(key, key), [row.get(key) for row in rows])
    svg = drawn.render(is_unicode=True)
    return Markup(re.sub(r"<script\b.*?</script>", "", svg, flags=re.DOTALL))


def _x_label(row: dict, x: str) -> str:
    """The row's value of `x`, after its period and split when the table has them (a stage
    repeats once per month and persona: each bar says which it is)."""
    parts = [row[key] for key in DIMENSIONS if key in row and key != x]
    parts.append(row.get(x))
    return " · ".join("" if part is None else str(part) for part in parts)


def subtitle(report: Report) -> str:
    query = report.query
    parts = [query.program or "all programs", query.describe(), f"time zone {query.tz}"]
    if query.by:
        parts.append(f"by {query.by}")
    if query.split:
        parts.append(f"split by {query.split.replace('_', ' ')}")
    return " · ".join(parts)


_PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ report.title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
.sub { color: #5a6372; margin-top: 0; }
section { margin: 2rem 0; }
.chart { max-width: 720px; margin: 0 0 1rem; }
.chart svg { width: 100%; height: auto; }
.data { overflow-x: auto; }
table { border-collapse: collapse; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e6eb; text-align: right;
         white-space: nowrap; }
th { background: #f4f6f8; }
td.text, th.text { text-align: left; }
.note { color: #5a6372; font-size: .9rem; margin: .3rem 0; }
</style></head>
<body>
<h1>{{ report.title }}</h1>
<p class="sub">{{ subtitle }} · generated {{ report.generated_at.strftime("%Y-%m-%d %H:%M UTC") }}</p>
{% for note in report.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% for section in sections %}{% set table = section.table %}
<section id="{{ table.key }}">
<h2>{{ table.title }}</h2>
{% if section.svg %}<figure class="chart" aria-label="{{ table.chart.title }}">{{ section.svg }}</figure>{% endif %}
<div class="data">
{% if section.rows %}
<table><thead><tr>{% for column in table.columns %}<th scope="col" class="{{ column.kind }}">{{ column.label }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in section.rows %}<tr>{% for cell in row %}<td class="{{ table.columns[loop.index0].kind }}">{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% else %}<p class="note">Nothing in this period.</p>{% endif %}
{% for note in table.notes %}<p class="note">{{ note }}</p>{% endfor %}
</div></section>
{% endfor %}
</body></html>
""")
