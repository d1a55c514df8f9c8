"""`nurture qa proof PROGRAM --to a@x,b@y` (send proofs to reviewers) and
`nurture qa approvals PROGRAM` (where each email's current version stands).

Errors are domain exceptions: the `nurture` group maps them to a message and exit code 1.
"""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table

from engine.cli_context import AppContext, console, echo_json, err_console, pass_app, styled
from engine.db import utcnow
from engine.launch.approvals import AssetApproval, approval_status
from engine.launch.proofs import SentProofs, proof_dict, send_proofs
from engine.sending.smtp import transport_from_settings


def split_addresses(value: str) -> list[str]:
    """`a@x, b@y` -> ["a@x", "b@y"]; blanks between commas are dropped (the service checks)."""
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command("proof")
@click.argument("program")
@click.option("--to", "to", required=True, metavar="ADDRESSES",
              help="Reviewers' addresses, separated by commas (at most 20).")
@click.option("--json", "as_json", is_flag=True, help="Print the proofs sent as JSON.")
@pass_app
def proof(app: AppContext, program: str, to: str, as_json: bool) -> None:
    """Send every email of PROGRAM, as a sample lead of each persona would get it, to the
    reviewers, marked [PROOF] with links to approve or reject it (SMTP_URL, or the local
    sink). Exit 1 when some proof was not sent."""
    transport = transport_from_settings(app.settings)
    try:
        with app.db.session() as session:
            sent = send_proofs(session=session, program_name=program,
                               reviewers=split_addresses(to), transport=transport,
                               secret_key=app.settings.secret_key,
                               base_url=app.settings.base_url, now=utcnow())
            rows = [proof_dict(session, item) for item in sent]
    finally:
        transport.close()
    if as_json:
        echo_json({"program": program, "sent": rows,
                   "failed": [asdict(f) for f in sent.failures],
                   "skipped": sent.skipped})
    else:
        _print_sent(program, rows, sent)
    if not sent.complete:
        click.get_current_context().exit(1)


def _print_sent(program: str, rows: list[dict], sent: SentProofs) -> None:
    table = Table(title=f"Proofs of {program} sent", title_justify="left")
    for column in ("email", "version", "persona", "reviewer"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[key])
                        for key in ("email", "asset_version", "persona", "reviewer")))
    console.print(table)
    console.print(f"{len(rows)} proofs sent")
    for failure in sent.failures:
        err_console.print(f"not sent: {failure.email_key} ({failure.persona}) to "
                          f"{failure.reviewer}: {failure.reason}")
    if sent.skipped:
        err_console.print(f"{sent.skipped} proofs not attempted after the failure above")


@click.command("approvals")
@click.argument("program")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def approvals(app: AppContext, program: str, as_json: bool) -> None:
    """Whether each email's current version is approved, rejected (with the comments) or
    pending. Approvals belong to a version: a new upload is pending again."""
    with app.db.session() as session:
        items = approval_status(session=session, program_name=program)
    if as_json:
        echo_json({"program": program,
                   "approved": all(item.approved for item in items),
                   "items": [item.to_dict() for item in items]})
        return
    _print_status(program, items)


_STYLE = {"approved": "green", "rejected": "red", "pending": "yellow"}


def _print_status(program: str, items: list[AssetApproval]) -> None:
    table = Table(title=f"Approvals of {program}", title_justify="left")
    for column in ("email", "version", "state", "by / comments"):
        table.add_column(column)
    for item in items:
        table.add_row(item.email_key, str(item.version or "-"),
                      styled((item.state, _STYLE[item.state])), _detail(item))
    console.print(table)
    done = sum(1 for item in items if item.approved)
    console.print(f"{done} of {len(items)} emails approved")


def _detail(item: AssetApproval) -> str:
    if item.problem:
        return item.problem
    if item.rejections:
        return "; ".join(f"{r.reviewer}: {r.comment or ''}" for r in item.rejections)
    if item.approved_by:
        return ", ".join(item.approved_by)
    if item.awaiting:
        return "awaiting " + ", ".join(item.awaiting)
    return "no proof sent"
