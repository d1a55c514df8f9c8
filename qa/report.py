"""Write a gate report as JSON and as a standalone HTML page (screenshots beside it)."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from qa.gate import QaReport

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def write_report(report: QaReport, out_dir: Path) -> tuple[Path, Path]:
    """qa-report.json and qa-report.html in out_dir (created); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    json_path, html_path = out_dir / "qa-report.json", out_dir / "qa-report.html"
    json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    environment = Environment(loader=FileSystemLoader(TEMPLATES),
                              autoescape=select_autoescape(["html"]))
    html = environment.get_template("qa/report.html").render(report=data)
    html_path.write_text(html, encoding="utf-8")
    return json_path, html_path
