"""`nurture assets upload|list`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from engine.assets.archive import UploadRefused
from engine.assets.service import UploadResult, list_assets, upload
from engine.cli_context import AppContext, console, err_console, pass_app
from engine.db import utcnow


@click.group()
def assets() -> None:
    """Program assets: MJML emails, HTML pages and images, as immutable versions."""


@assets.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--program", "program_name", required=True, help="The program the files belong to.")
@pass_app
def upload_command(app: AppContext, path: str, program_name: str) -> None:
    """Upload PATH (an .mjml email, an .html page, a PNG/JPEG/GIF/WebP image, or a .zip of a
    program directory) as new versions of PROGRAM's assets, compiled once here.

    Identical content stores nothing. All or nothing: when any file is refused, nothing is
    stored. Emails and pages that do not compile are stored as invalid versions (exit 1)."""
    file = Path(path)
    data = file.read_bytes()
    try:
        with app.db.session() as session:
            result = upload(session=session, program=program_name, filename=file.name, data=data,
                            now=utcnow(), actor="cli")
    except UploadRefused as exc:
        err_console.print(f"error: upload refused, nothing stored ({len(exc.problems)} problem(s))")
        for problem in exc.problems:
            err_console.print(f"  {problem}")
        raise SystemExit(1) from None
    _print_result(result)
    if result.invalid:
        raise SystemExit(1)


def _print_result(result: UploadResult) -> None:
    for v in result.versions:
        if v.outcome == "unchanged":
            console.print(f"{v.path}: unchanged (identical to version {v.version}), nothing stored")
        elif v.outcome == "restored":
            console.print(f"{v.path}: identical to version {v.version}, which is current again")
        elif v.status == "invalid":
            console.print(f"{v.path}: version {v.version} stored as INVALID (not current)")
            for error in v.errors:
                err_console.print(f"{v.path}:{error['line']}: {error['message']}")
        else:
            console.print(f"{v.path}: version {v.version} stored ({v.kind}, sha256 "
                          f"{v.content_hash[:12]})")
    for name in result.skipped:
        console.print(f"{name}: skipped (load it with `nurture program load DIR`)")
    created = sum(v.outcome == "created" for v in result.versions)
    console.print(f"{result.program}: {created} new version(s), "
                  f"{len(result.versions) - created} unchanged, {len(result.invalid)} invalid")
    if result.pending_launch:
        console.print(f"pending launch: leads keep the launched versions until `nurture launch "
                      f"{result.program}` passes the QA gate (proofs: `nurture qa proof`)")


@assets.command("list")
@click.option("--program", "program_name", required=True)
@pass_app
def list_command(app: AppContext, program_name: str) -> None:
    """List PROGRAM's assets with their current and newest versions."""
    with app.db.session() as session:
        rows = list_assets(session=session, program=program_name)
        table = Table("path", "kind", "current", "newest", "status", "size")
        for asset, newest in rows:
            table.add_row(asset.path, asset.kind, str(asset.current_version or "-"),
                          str(newest.version if newest else "-"),
                          newest.status if newest else "-", str(newest.size if newest else 0))
    console.print(table)
