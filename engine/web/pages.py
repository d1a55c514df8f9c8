"""Public landing pages under /p/<program>/<slug>: no API key, strict CSP, CSRF-checked forms.

A page is uploaded content, so it is served with a Content-Security-Policy that forbids scripts,
frames and foreign form targets. Forms use a double-submit token: a random nonce in an HttpOnly
SameSite=Lax cookie, and the same nonce signed with a timestamp in the form field.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.exceptions import InternalServerError

from engine.db import Database
from engine.errors import Invalid, NotFound
from engine.flows.forms import submit_form
from engine.leads.fields import BAD_TEXT
from engine.pages.forms import visit_params
from engine.pages.service import (
    FoundPage,
    find_page,
    is_preview,
    lead_from_token,
    render_page,
)
from engine.render.personalise import RenderFailed
from engine.tracking.tokens import sign, verify
from engine.web.csrf import Csrf
from engine.web.recorder import record

pages = Blueprint("pages", __name__)

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CSRF = Csrf(cookie="nurture_page_csrf", path="/p/", salt="page-csrf")
VISIT_COOKIE, VISIT_PURPOSE, VISIT_DAYS = "nurture_visit", "visit", 30


def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # the ?t= token must not leak onwards
    response.headers["Cache-Control"] = "no-store"  # personalised, and carries a CSRF token
    return response


pages.after_request(security_headers)


def _db() -> Database:
    return current_app.extensions["nurture.db"]


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


def _check_names(program: str, slug: str) -> None:
    for value in (program, slug):
        if len(value) > 100 or BAD_TEXT.search(value):
            raise NotFound("no such page", field="slug")


# -- views ------------------------------------------------------------------------------------

def _render(found: FoundPage, nonce: str, lead, token: str | None) -> str:
    """The page for the lead; a page that fails for this lead falls back to an empty lead."""
    try:
        return render_page(found=found, lead=lead, csrf_token=CSRF.token(nonce),
                           base_url=current_app.extensions["nurture.settings"].base_url,
                           token=token if lead is not None else None)
    except RenderFailed:
        current_app.logger.warning("page %s failed to render", found.page.file, exc_info=True)
        if lead is None:
            raise InternalServerError() from None
    return _render(found, nonce, None, None)


def _with_message(html: str, message: str) -> str:
    """The rendered page with an escaped message right after <body> (the page template
    cannot name extra variables: QA checks it against a fixed list)."""
    banner = Markup('<p role="alert" style="margin:0;padding:12px 24px;background:#fee2e2;'
                    'color:#991b1b;font-family:sans-serif">{}</p>').format(message)
    match = re.search(r"<body\b[^>]*>", html, re.IGNORECASE)
    at = match.end() if match else 0
    return html[:at] + str(banner) + html[at:]


def _this_visit() -> dict[str, str]:
    return visit_params(request.args, request.referrer, request.host.partition(":")[0])


def _visit() -> dict[str, str]:
    """Where the visitor came from: the first visit remembered in its cookie, else this
    request's own UTM parameters (a form posts to its page's URL, query string included)."""
    remembered = verify(_secret(), VISIT_PURPOSE, request.cookies.get(VISIT_COOKIE, "")[:2000])
    if isinstance(remembered, dict) and all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in remembered.items()):
        return remembered
    return _this_visit()


def _remember_visit(response: Response) -> Response:
    """The first visit with a source (UTM tags, another site) is kept for the page's form."""
    visit = _this_visit()
    if visit and VISIT_COOKIE not in request.cookies:
        response.set_cookie(VISIT_COOKIE, sign(_secret(), VISIT_PURPOSE, visit), path="/p/",
                            max_age=VISIT_DAYS * 86400, httponly=True, samesite="Lax",
                            secure=request.is_secure)
    return response


@pages.route("/p/<program>/<slug>", methods=["GET", "POST"])
def page(program: str, slug: str):
    _check_names(program, slug)
    nonce = CSRF.nonce()
    token = request.args.get("t")
    preview = is_preview(secret_key=_secret(), token=token, program=program)
    with _db().session() as session:
        found = find_page(session=session, program=program, slug=slug, preview=preview)
        lead = lead_from_token(session=session, secret_key=_secret(), token=token)
        if request.method == "GET":
            if request.args.get("submitted") == "1":
                body = render_template("pages/thanks.html",
                                       title=found.page.title or found.program.name,
                                       back_url=url_for("pages.page", program=program, slug=slug))
                return CSRF.with_cookie(Response(body, mimetype="text/html"), nonce)
            body = _render(found, nonce, lead, token)
            if lead is not None:
                record("page_view", lead_id=lead.id, page=found.page.slug, url=request.path)
            return _remember_visit(CSRF.with_cookie(Response(body, mimetype="text/html"),
                                                    nonce))

    CSRF.check()
    if preview:  # a reviewer trying the form of a page not launched: nothing is stored
        body = _with_message(_render(found, nonce, None, None),
                             "Preview: the form works, and nothing was stored.")
        return CSRF.with_cookie(Response(body, mimetype="text/html"), nonce)
    try:
        with _db().session() as session:
            submit_form(session=session, found=found, form=request.form.to_dict(flat=False),
                        visit=_visit(), remote_addr=request.remote_addr,
                        now=current_app.extensions["nurture.clock"]())
    except Invalid as exc:  # "field: detail", the field as the page's form names it
        body = _with_message(_render(found, nonce, lead, token), str(exc))
        return CSRF.with_cookie(Response(body, status=422, mimetype="text/html"), nonce)
    # Built from our own route and values only: never a URL taken from the request.
    target = url_for("pages.page", program=program, slug=slug, submitted=1,
                     **({"t": token} if lead is not None else {}))
    return redirect(target, code=303)

