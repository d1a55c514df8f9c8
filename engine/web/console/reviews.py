"""Reviews: the signed-in reviewer's queue of proofs to decide, a proof's page with its email
and the QA findings its last refused launch named, approve or reject with a comment (reviewer
and admin), and the decisions history.

A decision goes through engine/launch/approvals.py's record_decision, as the public review
link's does, and is the proof's reviewer's: only the person a proof was sent to decides on it.
The email is served by its own route, framed with sandbox="" and sent with a CSP of its own
(no script, no form, no plugin, sandboxed even when opened alone): its HTML is never part of
a console page.
"""

from __future__ import annotations

from flask import Response, current_app, flash, redirect, url_for
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import Forbidden, NotFound

from engine.auth.service import Permission
from engine.errors import NurtureError
from engine.launch.approvals import (
    MAX_COMMENT,
    decision_history,
    record_decision,
    review_queue,
    review_summary,
)
from engine.launch.models import Proof
from engine.launch.proofs import render_proof
from engine.launch.service import launch_findings
from engine.pages.service import preview_token
from engine.programs.models import ProgramRecord
from engine.web.console.base import (
    FRAMING_CSP,
    console,
    db,
    field,
    framed_email,
    now,
    page,
    render,
    signed_in_user,
)

HISTORY_LIMIT = 100


def _mine(proof: Proof) -> bool:
    user = signed_in_user()
    return user is not None and proof.reviewer == user.email.strip().lower()


def _proof_or_404(session: Session, proof_id: int) -> Proof:
    proof = session.get(Proof, proof_id)
    if proof is None:
        raise NotFound()
    return proof


@console.get("/reviews")
@page(Permission.PROGRAMS_READ)
def reviews():
    user = signed_in_user()
    with db().session() as s:
        queue = review_queue(session=s, reviewer=user.email)
        history = decision_history(session=s, limit=HISTORY_LIMIT)
    return render("console/reviews.html", queue=queue, history=history,
                  history_limit=HISTORY_LIMIT)


def _proof_page(proof_id: int, status: int = 200, **extra) -> Response:
    with db().session() as s:
        proof = _proof_or_404(s, proof_id)
        summary = review_summary(session=s, proof=proof)
        findings = launch_findings(session=s, program_id=proof.program_id, path=summary.asset,
                                   version=summary.version)
        others = s.scalars(select(Proof).where(Proof.asset_version_id == proof.asset_version_id,
                                               Proof.reviewer == proof.reviewer)
                           .order_by(Proof.id)).all()
    personas: dict[str, Proof] = {p.persona: p for p in others}  # the newest per persona
    response = render("console/review.html", status=status, summary=summary,
                      findings=findings, personas=list(personas.values()),
                      mine=_mine(proof), max_comment=MAX_COMMENT, **extra)
    response.headers["Content-Security-Policy"] = FRAMING_CSP
    return response


@console.get("/reviews/<int:proof_id>")
@page(Permission.PROGRAMS_READ)
def review(proof_id: int):
    return _proof_page(proof_id)


@console.get("/reviews/<int:proof_id>/email")
@page(Permission.PROGRAMS_READ)
def review_email(proof_id: int):
    """The proof's email alone, for the sandboxed frame of its page."""
    settings = current_app.extensions["nurture.settings"]
    with db().session() as s:
        proof = _proof_or_404(s, proof_id)
        record = s.get(ProgramRecord, proof.program_id)
        try:
            html = render_proof(session=s, proof=proof, base_url=settings.base_url,
                                page_token=preview_token(
                                    secret_key=current_app.config["SECRET_KEY"],
                                    program=record.name)).html
        except NurtureError as exc:
            html = f"<p>This proof cannot be shown again: {escape(exc.detail)}</p>"
    return framed_email(html)


@console.post("/reviews/<int:proof_id>/decision")
@page(Permission.REVIEWS_DECIDE)
def decide(proof_id: int):
    decision, comment = field("decision", 10), field("comment", MAX_COMMENT)
    try:
        with db().session() as s:
            proof = _proof_or_404(s, proof_id)
            if not _mine(proof):
                raise Forbidden(f"This proof was sent to {proof.reviewer}: only they can "
                                "decide on it.")
            approval = record_decision(session=s, proof=proof, decision=decision,
                                       comment=comment, now=now())
            done = (f"You {approval.decision} {proof.email_key} "
                    f"(version {review_summary(session=s, proof=proof).version}).")
    except NurtureError as exc:
        return _proof_page(proof_id, status=exc.status, error=exc.detail, comment=comment)
    flash(done)
    return redirect(url_for("console.reviews") + "#history", 303)
