"""`nurture render ASSET --lead EMAIL`: what that lead would receive."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli_context import AppContext, console, pass_app
from engine.db import utcnow
from engine.errors import Invalid


@click.command()
@click.argument("asset")
@click.option("--lead", "lead_email", required=True, help="The lead's email address.")
@click.option("--program", "program_name", help="Default: the lead's program, or the only one.")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Write FILE.html (the HTML part) or FILE.eml (the full message).")
@click.option("--strict", is_flag=True, help="Fail on undefined variables (QA mode).")
@click.option("--pending", is_flag=True, help="Render the newest loaded and uploaded versions, "
              "which leads get only after the next `nurture launch`.")
@pass_app
def render(app: AppContext, asset: str, lead_email: str, program_name: str | None,
           out: str | None, strict: bool, pending: bool) -> None:
    """Render email ASSET (its key in program.yaml, e.g. welcome_it) for one lead, as it
    would be sent: the launched versions (before the first launch, the current ones).

    Prints the subject and text part; --out writes the HTML or an RFC 5322 .eml message."""
    from engine.render.service import preview_message, render_for_lead

    if out and Path(out).suffix.lower() not in (".html", ".htm", ".eml"):
        raise Invalid("--out must end in .html or .eml", field="out")
    with app.db.session() as session:
        preview = render_for_lead(session=session, email_key=asset, lead_email=lead_email,
                                  base_url=app.settings.base_url,
                                  program=program_name, strict=strict, pending=pending)
    if out and Path(out).suffix.lower() == ".eml":
        message = preview_message(preview, now=utcnow())
        Path(out).write_bytes(bytes(message))
        console.print(f"wrote {out} ({message['Message-ID']})")
        return
    if out:
        Path(out).write_text(preview.rendered.html, encoding="utf-8")
        console.print(f"wrote {out}")
        return
    console.print(f"To: {preview.lead.email}")
    console.print(f"Subject: {preview.rendered.subject}")
    console.print(f"{preview.program.slug} {asset} version {preview.version}", style="dim")
    console.print()
    console.print(preview.rendered.text)
