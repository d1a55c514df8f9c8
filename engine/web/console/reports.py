"""Reports: the list of reports with one GET form (program, from, to, by, split), a report
drawn inside the console with its tables and charts, and its first table as CSV.

The parameters go through engine/reports/query.parse_query and the report through
build_report, as `nurture report` and GET /api/v1/reports/<name> do, so all three refuse the
same input with the same message. Tables and charts come from engine/reports/output.sections,
as `nurture report --html` draws them: pygal SVG with its script removed. The SVG's own
<style> block and style attributes are allowed by their hashes in this page's CSP; no
script is, and nothing else inline.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

from flask import Response, redirect, request, url_for
from werkzeug.exceptions import NotFound

from engine.auth.service import Permission
from engine.errors import Invalid
from engine.programs.store import list_programs
from engine.reports import NAMES, build_report
from engine.reports.output import sections, subtitle, to_csv
from engine.reports.query import GROUPINGS, SPLITS, parse_query
from engine.web.console.base import console, db, now, page, render

PARAMETERS = ("program", "from", "to", "by", "split")
TITLES = {"funnel": "Funnel", "velocity": "Velocity", "sla": "SLA compliance",
          "engagement": "Engagement", "goal": "Program goals", "attribution": "Attribution",
          "review": "Quarterly review"}
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL)
_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


def _args() -> dict[str, str | None]:
    """The form's values as typed, an empty field as unset; over-long values are refused by
    parse_query's own checks or by its date parser."""
    return {key: (request.args.get(key) or "").strip()[:200] or None for key in PARAMETERS}


def _program_names() -> list[str]:
    with db().reading() as s:
        return [record.name for record in list_programs(session=s)]


def _form(args: dict, **context) -> dict:
    return {"names": NAMES, "titles": TITLES, "programs": _program_names(), "args": args,
            "groupings": GROUPINGS, "splits": SPLITS, **context}


def _query(args: dict):
    return parse_query(program=args["program"], start=args["from"], end=args["to"],
                       by=args["by"], split=args["split"], now=now())


@console.get("/reports")
@page(Permission.REPORTS_READ)
def reports():
    chosen = request.args.get("report")
    if chosen in NAMES:  # the form's report select: on to the report, with the other fields
        return redirect(url_for("console.report", name=chosen, **{
            key: value for key, value in _args().items() if value}), 303)
    return render("console/reports.html", **_form(_args(), name=None))


@console.get("/reports/<name>")
@page(Permission.REPORTS_READ)
def report(name: str):
    if name not in NAMES:
        raise NotFound()
    args = _args()
    try:
        query = _query(args)
    except Invalid as exc:
        return render("console/reports.html", status=422,
                      **_form(args, name=name, error=str(exc), error_field=exc.field))
    with db().reading() as s:
        built = build_report(name, s, query)
    shown = sections(built)
    response = render("console/reports.html", **_form(args, name=name, report=built,
                                                    subtitle=subtitle(built), sections=shown))
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'self'{_chart_styles(shown)}; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return response


def _chart_styles(shown: list[dict]) -> str:
    """CSP sources for the charts' own styles: each <style> block and style attribute by its
    hash ('unsafe-hashes' covers attributes, by hash only), never 'unsafe-inline'."""
    svgs = [str(section["svg"]) for section in shown if section["svg"]]
    blocks = {style for svg in svgs for style in _STYLE.findall(svg)}
    attributes = {style for svg in svgs for style in _STYLE_ATTRIBUTE.findall(svg)}
    if not blocks and not attributes:
        return ""
    hashes = " ".join(f"'sha256-{_digest(text)}'" for text in sorted(blocks | attributes))
    return f" 'unsafe-hashes' {hashes}" if attributes else f" {hashes}"


@console.get("/reports/<name>/csv")
@page(Permission.REPORTS_READ)
def report_csv(name: str):
    """The report's first table as CSV, as the API's format=csv gives it."""
    if name not in NAMES:
        raise NotFound()
    try:
        query = _query(_args())
    except Invalid as exc:
        return Response(f"{exc}\n", status=422, mimetype="text/plain")
    with db().reading() as s:
        built = build_report(name, s, query)
    return Response(to_csv(built), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _digest(text: str) -> str:
    """The hash of `text` as the browser reads it: SVG in HTML is foreign content, whose <style>
    text has its character references decoded, like an attribute value."""
    return base64.b64encode(hashlib.sha256(html.unescape(text).encode()).digest()).decode()
