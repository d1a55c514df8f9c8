"""Delivery: the send runs of the last 24 hours by hour, the next 24 hours' forecast, the
newest suppressions (searchable by address) and, in development, the local inbox.

Runs and forecast come from engine/sending/reports.py, as `nurture send-runs` and `nurture
forecast` print them. The inbox is the SMTP sink's store read as `nurture inbox` reads it, shown
only when the sink's directory exists; a message's HTML is served by its own route under a CSP
of its own and framed with sandbox="", as a proof's email is on the Reviews page.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

from flask import current_app, request
from markupsafe import escape
from werkzeug.exceptions import NotFound

from engine.auth.service import Permission
from engine.errors import NotFound as NoMessage
from engine.sending.inbox import find_message, html_part, list_messages, read_message, text_part
from engine.sending.reports import forecast, send_runs
from engine.sending.suppression import list_suppressions
from engine.web.console.base import (
    FRAMING_CSP,
    console,
    db,
    framed_email,
    now,
    page,
    render,
)

HOURS = 24
SUPPRESSIONS_LIMIT = 100
INBOX_LIMIT = 100
MAX_SEARCH = 320  # the longest address
RUN_COLUMNS = ("due", "sent", "held", "failed", "skipped", "pending")


def _sink_dir() -> Path | None:
    """The local sink's directory when it exists (development), else None."""
    settings = current_app.extensions["nurture.settings"]
    directory = settings.sink_dir or settings.instance_path / "sink"
    return directory if directory.is_dir() else None


@console.get("/delivery")
@page(Permission.DELIVERY_READ)
def delivery():
    search = request.args.get("q", "")[:MAX_SEARCH]
    at = now()
    with db().session() as s:
        runs = send_runs(session=s, since=at - timedelta(hours=HOURS), until=at)
        lines = forecast(session=s, now=at, hours=HOURS)
        suppressions = list_suppressions(session=s, search=search, limit=SUPPRESSIONS_LIMIT)
    reasons: Counter = Counter()
    for run in runs:
        reasons.update(run.reasons)
    directory = _sink_dir()
    inbox = list_messages(directory, limit=INBOX_LIMIT)[::-1] if directory else None
    return render("console/delivery.html", hours=HOURS, runs=runs, columns=RUN_COLUMNS,
                  reasons=reasons.most_common(10), forecast=lines,
                  would_send=sum(line.sends - line.suppressed for line in lines),
                  suppressions=suppressions, search=search,
                  suppressions_limit=SUPPRESSIONS_LIMIT, inbox=inbox, inbox_limit=INBOX_LIMIT)


def _stored_or_404(seq: int):
    directory = _sink_dir()
    if directory is None:
        raise NotFound()
    try:
        return directory, find_message(directory, seq)
    except NoMessage:
        raise NotFound() from None


@console.get("/delivery/inbox/<int:seq>")
@page(Permission.DELIVERY_READ)
def inbox_message(seq: int):
    directory, stored = _stored_or_404(seq)
    message = read_message(directory, stored)
    headers = [(name, str(message.get(name, ""))) for name in
               ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe")
               if message.get(name) is not None]
    response = render("console/inbox_message.html", stored=stored, headers=headers,
                      has_html=html_part(message) is not None)
    response.headers["Content-Security-Policy"] = FRAMING_CSP
    return response


@console.get("/delivery/inbox/<int:seq>/email")
@page(Permission.DELIVERY_READ)
def inbox_email(seq: int):
    """The message's HTML part alone (its text part, escaped, when it has none), for the
    sandboxed frame of its page."""
    directory, stored = _stored_or_404(seq)
    message = read_message(directory, stored)
    html = html_part(message)
    if html is None:
        html = f"<pre>{escape(text_part(message))}</pre>"
    return framed_email(html)
