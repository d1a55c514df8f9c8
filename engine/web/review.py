"""Reviewer pages for proofs, and the proofs API.

/review/<token>   GET shows the proof and the Approve and Reject forms, and records nothing
                  (mail scanners fetch every link in an email); POST records the decision
                  (`decision=approve`, or `decision=reject` with a `comment`)

The token is the proof's signed review token (engine/launch/approvals.py); a bad one gets a
safe 404 page. The forms carry a CSRF token in the same double-submit pattern as the landing
pages (engine/web/pages.py): a random nonce in an HttpOnly SameSite=Lax cookie, scoped to
/review/, and the same nonce signed with a timestamp in the form.

API (mounted under /api/v1): POST /programs/<name>/proofs {"to": [...]} sends proofs
(admin, marketer); GET /programs/<name>/approvals gives the approval state of every email.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from flask import Blueprint, Response, current_app, render_template, request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from engine.auth.service import Permission
from engine.db import Database
from engine.errors import Conflict, Invalid, NotFound
from engine.launch.approvals import (
    DECISIONS,
    MAX_COMMENT,
    approval_status,
    proof_for_token,
    record_decision,
    review_summary,
)
from engine.launch.models import Proof
from engine.launch.proofs import MAX_REVIEWERS, proof_dict, send_proofs
from engine.programs.loader import SLUG
from engine.programs.store import current_program
from engine.sending.smtp import transport_from_settings
from engine.web import schemas as out
from engine.web.api import ProgramPath, parse_json
from engine.web.auth import require
from engine.web.csrf import Csrf
from engine.web.errors import problem
from engine.web.openapi import describe
from engine.web.pages import security_headers

review_pages = Blueprint("pages", __name__)
review_api = Blueprint("api", __name__)
review_pages.after_request(security_headers)  # CSP, nosniff, no-referrer (the token), no-store

CSRF = Csrf(cookie="nurture_review_csrf", path="/review/", salt="review-csrf")


def _db() -> Database:
    return current_app.extensions["nurture.db"]


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


def _now():
    return current_app.extensions["nurture.clock"]()


def _respond(body: str, nonce: str, status: int = 200) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    response.headers["X-Robots-Tag"] = "noindex"
    return CSRF.with_cookie(response, nonce)


# -- reviewer pages -----------------------------------------------------------------------------

def _invalid() -> Response:
    response = Response(render_template("review/invalid.html"), status=404, mimetype="text/html")
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _page(session: Session, proof: Proof, nonce: str, **extra) -> str:
    summary = review_summary(session=session, proof=proof)
    return render_template("review/proof.html", summary=summary, csrf_token=CSRF.token(nonce),
                           max_comment=MAX_COMMENT, **extra)


@review_pages.get("/review/<token>")
def show(token: str):
    """The proof and both forms; never records anything."""
    nonce = CSRF.nonce()
    focus = request.args.get("decision")
    with _db().session() as session:
        try:
            proof = proof_for_token(session=session, secret_key=_secret(), token=token,
                                    now=_now())
        except NotFound:
            return _invalid()
        body = _page(session, proof, nonce, focus=focus if focus in DECISIONS else None)
    return _respond(body, nonce)


@review_pages.post("/review/<token>")
def decide(token: str):
    """Record the reviewer's decision; 422 (the form again) for a reject without comment."""
    now = _now()
    with _db().session() as session:
        try:
            proof_for_token(session=session, secret_key=_secret(), token=token, now=now)
        except NotFound:
            return _invalid()
    nonce = CSRF.check()
    decision, comment = request.form.get("decision", ""), request.form.get("comment", "")
    try:
        with _db().session() as session:
            proof = proof_for_token(session=session, secret_key=_secret(), token=token, now=now)
            approval = record_decision(session=session, proof=proof, decision=decision,
                                       comment=comment, now=now)
            body = _page(session, proof, nonce, recorded=approval)
        return _respond(body, nonce)
    except (Invalid, Conflict) as exc:
        with _db().session() as session:  # the failed transaction recorded nothing
            proof = proof_for_token(session=session, secret_key=_secret(), token=token, now=now)
            body = _page(session, proof, nonce, error=exc.detail, comment=comment[:MAX_COMMENT],
                         focus=decision if decision in DECISIONS else None)
        return _respond(body, nonce, exc.status)


# -- API ----------------------------------------------------------------------------------------

Address = Annotated[str, StringConstraints(max_length=320)]


class ProofsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[Address] = Field(min_length=1, max_length=MAX_REVIEWERS)


def _program_name(name: str) -> str:
    if not SLUG.fullmatch(name):  # never send what cannot be a program name to the database
        raise NotFound(f"no program named {name[:100]!r}", field="program")
    return name


@review_api.post("/programs/<name>/proofs")
@describe(path=ProgramPath, body=ProofsIn, responses={
    201: out.ProofsSent, 502: {"application/problem+json": out.ProofsFailed}},
    descriptions={201: "Sent", 502: "The mail server refused some; what was sent is listed"},
    tags=("programs",))
@require(Permission.ASSETS_WRITE)  # admin, marketer: proofs show content before it ships
def post_proofs(name: str):
    """201 with the proofs sent; 502 (still listing what was sent) when the mail server
    refused some; 422 when nothing could be sent (bad reviewers, an email that fails)."""
    program = _program_name(name)
    body = parse_json(ProofsIn)
    settings = current_app.extensions["nurture.settings"]
    transport = transport_from_settings(settings)
    try:
        with _db().session() as session:
            sent = send_proofs(session=session, program_name=program, reviewers=body.to,
                               transport=transport, secret_key=_secret(),
                               base_url=settings.base_url, now=_now())
            items = [proof_dict(session, proof) for proof in sent]
    finally:
        transport.close()
    result = {"program": program, "sent": items,
              "failed": [asdict(failure) for failure in sent.failures],
              "skipped": sent.skipped}
    if not sent.complete:
        return problem(502, "Bad gateway",
                       f"the mail server refused {len(sent.failures)} proof(s); "
                       f"{sent.skipped} more not attempted", "to", **result)
    return result, 201


@review_api.get("/programs/<name>/approvals")
@describe(path=ProgramPath, responses={200: out.Approvals}, tags=("programs",))
@require(Permission.PROGRAMS_READ)
def get_approvals(name: str):
    """The approval state of every email of the program's newest version."""
    program = _program_name(name)
    with _db().session() as session:
        record, _ = current_program(session=session, name=program)
        items = approval_status(session=session, program_name=program)
    return {"program": program, "version": record.current_version,
            "approved": all(item.approved for item in items),
            "items": [item.to_dict() for item in items]}


# What the app registers: the pages at /review/, the API under /api/v1 (one blueprint, so the
# app factory names this module once).
review = Blueprint("review", __name__)
review.register_blueprint(review_pages)
review.register_blueprint(review_api, url_prefix="/api/v1")
