"""Public tracking endpoints. They always answer: a bad token gets a safe page, never an error.

/u/<token>: GET shows a confirm button and changes nothing (mail scanners fetch links); POST
unsubscribes, from that button or from a mail provider's RFC 8058 one-click request
(body `List-Unsubscribe=One-Click`, no cookies), and answers 200 without a redirect.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from engine.db import utcnow
from engine.tracking.unsubscribe import lead_for_token, unsubscribe
from engine.web.pages import security_headers

tracking = Blueprint("tracking", __name__)
tracking.after_request(security_headers)


def _page(state: str, email: str | None = None, status: int = 200):
    return render_template("tracking/unsubscribe.html", state=state, email=email), status


@tracking.get("/u/<path:token>")
def unsubscribe_page(token: str):
    with current_app.extensions["nurture.db"].session() as session:
        lead = lead_for_token(session=session, secret_key=current_app.config["SECRET_KEY"],
                              token=token)
        email = lead.email if lead else None
    return _page("confirm", email) if email else _page("invalid")


@tracking.post("/u/<path:token>")
def unsubscribe_post(token: str):
    with current_app.extensions["nurture.db"].session() as session:
        lead = lead_for_token(session=session, secret_key=current_app.config["SECRET_KEY"],
                              token=token)
        if lead is None:
            return _page("invalid")
        unsubscribe(session=session, lead=lead, source="unsubscribe link", now=utcnow())
        email = lead.email
    return _page("done", email)
