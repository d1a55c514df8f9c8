"""Public tracking endpoints. They always answer quickly, and a bad token gets a pixel or a
safe page, never an error and never a redirect to a URL the token did not sign.

/o/<token>.gif  open pixel
/c/<token>      click: a redirect to the destination stored on the outbox row at send time
/v/<token>      the email in the browser
/u/<token>      GET shows a confirm button and changes nothing (mail scanners fetch links);
                POST unsubscribes, from that button or from a mail provider's RFC 8058
                one-click request (body `List-Unsubscribe=One-Click`, no cookies), 200, no redirect;
                a bad token or an unknown lead gets 404 for both (mail providers read any 2xx
                answer to the one-click POST as "unsubscribed"), with the page saying so

Opens, clicks and views are pushed to the event buffer (engine/tracking/buffer.py) and stored
by a worker; the response goes out once Redis has the event.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, current_app, redirect, render_template

from engine.errors import NurtureError
from engine.leads.models import Lead
from engine.programs.store import program_at
from engine.sending.compose import Signing, render_for_row
from engine.sending.models import OutboxMessage
from engine.tracking.links import HONEYPOT
from engine.tracking.tokens import ids, url_digest, verify
from engine.tracking.unsubscribe import email_of_token, lead_for_token, unsubscribe
from engine.web.pages import security_headers
from engine.web.recorder import record, recorder

tracking = Blueprint("tracking", __name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private",
             "Pragma": "no-cache", "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "no-referrer"}


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


def _pixel() -> Response:
    return Response(PIXEL, mimetype="image/gif", headers=_NO_STORE)


def _safe_page(status: int = 404) -> tuple[str, int, dict]:
    return render_template("tracking/invalid.html"), status, _NO_STORE


@tracking.get("/o/<path:token>")
def open_pixel(token: str):
    found = ids(verify(_secret(), "open", token.removesuffix(".gif")), "l", "o")
    if found:
        record("open", lead_id=found[0], outbox_id=found[1])
    return _pixel()


@tracking.get("/c/<path:token>")
def click(token: str):
    payload = verify(_secret(), "click", token)
    found = ids(payload, "l", "o", "n")
    if not found:
        return _safe_page()
    lead_id, outbox_id, index = found
    if index == HONEYPOT:
        record("click", lead_id=lead_id, outbox_id=outbox_id, link_index=index)
        return "", 204, _NO_STORE
    url = recorder().destination(outbox_id=outbox_id, lead_id=lead_id, index=index)
    if url is None or url_digest(url) != payload.get("h"):
        return _safe_page()
    record("click", lead_id=lead_id, outbox_id=outbox_id, link_index=index, url=url)
    response = redirect(url, code=302)
    response.headers.update(_NO_STORE)
    return response


@tracking.get("/v/<path:token>")
def view_in_browser(token: str):
    found = ids(verify(_secret(), "view", token), "l", "o")
    html = _sent_html(*found) if found else None
    if html is None:
        return _safe_page()
    record("view", lead_id=found[0], outbox_id=found[1])
    return security_headers(Response(html, mimetype="text/html"))


def _sent_html(lead_id: int, outbox_id: int) -> str | None:
    settings = current_app.extensions["nurture.settings"]
    with current_app.extensions["nurture.db"].session() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None or row.lead_id != lead_id or row.sent_at is None:
            return None
        lead = session.get(Lead, lead_id)
        program = program_at(session, row.program_id, row.program_version)
        try:
            done = render_for_row(
                session=session, row=row, lead=lead, program=program,
                signing=Signing(secret_key=settings.secret_key, base_url=settings.base_url))
        except NurtureError:
            current_app.logger.warning("view of outbox row %s failed to render", outbox_id,
                                       exc_info=True)
            return None
    return done.rendered.html


def _unsubscribe_page(state: str, email: str | None = None):
    status = 404 if state == "invalid" else 200
    return security_headers(Response(
        render_template("tracking/unsubscribe.html", state=state, email=email), status=status,
        mimetype="text/html"))


@tracking.get("/u/<path:token>")
def unsubscribe_page(token: str):
    with current_app.extensions["nurture.db"].session() as session:
        lead = lead_for_token(session=session, secret_key=_secret(), token=token)
        email = lead.email if lead else None
    return _unsubscribe_page("confirm", email) if email else _unsubscribe_page("invalid")


@tracking.post("/u/<path:token>")
def unsubscribe_post(token: str):
    with current_app.extensions["nurture.db"].session() as session:
        lead = lead_for_token(session=session, secret_key=_secret(), token=token)
        if lead is None:
            return _unsubscribe_page("invalid")
        unsubscribe(session=session, lead=lead, source="unsubscribe link",
                    now=current_app.extensions["nurture.clock"](),
                    answers=email_of_token(_secret(), token))
        email = lead.email
    return _unsubscribe_page("done", email)
