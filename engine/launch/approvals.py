"""Reviewers' decisions on proofs: signed review links, recording a decision, and the approval
status of every email of a program for the launch gate.

Approvals belong to an asset version, never to an email in general: uploading a new version of
an email leaves it pending until someone approves that version. The latest decision of each
reviewer on a version counts, so a reviewer may change their mind.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.assets.models import Asset, AssetVersion
from engine.assets.service import current_versions
from engine.errors import Conflict, Invalid, NotFound
from engine.launch.models import Approval, Proof
from engine.leads.fields import BAD_TEXT
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.programs.store import current_program
from engine.tracking.tokens import ids, sign, verify

REVIEW_PURPOSE = "review"  # its own salt: no other token of ours opens a review page
REVIEW_TTL = timedelta(days=30)  # a leaked proof link stops working; send a new proof instead
MAX_COMMENT = 2000
DECISIONS = {"approve": "approved", "reject": "rejected"}
APPROVED, REJECTED, PENDING = "approved", "rejected", "pending"


# -- review links ------------------------------------------------------------------------------

def reviewer_digest(reviewer: str) -> str:
    """Binds a token to the proof's reviewer without putting the address in the link."""
    return hashlib.sha256(reviewer.strip().lower().encode()).hexdigest()[:16]


def review_token(secret_key: str, proof: Proof) -> str:
    """Names one proof (and so its reviewer) and the asset version it shows."""
    return sign(secret_key, REVIEW_PURPOSE, {"p": proof.id, "v": proof.asset_version_id,
                                             "r": reviewer_digest(proof.reviewer)})


def review_url(base_url: str, token: str, decision: str | None = None) -> str:
    suffix = f"?decision={decision}" if decision else ""
    return f"{base_url.rstrip('/')}/review/{token}{suffix}"


def proof_for_token(*, session: Session, secret_key: str, token: str, now: datetime) -> Proof:
    """The proof a review token names. NotFound for a tampered, foreign, over-long or expired
    token, or one whose proof, reviewer or version no longer agree with it."""
    payload = verify(secret_key, REVIEW_PURPOSE, token)
    found = ids(payload, "p", "v")
    digest = payload.get("r") if payload else None
    proof = session.get(Proof, found[0]) if found and found[0] > 0 else None
    if (proof is None or proof.asset_version_id != found[1] or not isinstance(digest, str)
            or not hmac.compare_digest(reviewer_digest(proof.reviewer), digest)
            or now - proof.sent_at > REVIEW_TTL):
        raise NotFound("this review link is not valid", field="token")
    return proof


# -- what a reviewer sees ----------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewSummary:
    """A proof as its review page shows it."""

    proof: Proof
    program: str  # the program's display name
    program_key: str
    email_key: str
    subject: str | None  # the subject template, when the email is still in the program
    asset: str
    version: int
    current: int | None  # the asset's current version
    persona: str  # display name
    reviewer: str
    sent_at: datetime
    decision: Approval | None  # this reviewer's latest decision on this version

    @property
    def superseded(self) -> bool:
        return self.current != self.version


def review_summary(*, session: Session, proof: Proof) -> ReviewSummary:
    version = session.get(AssetVersion, proof.asset_version_id)
    asset = session.get(Asset, version.asset_id)
    record = session.get(ProgramRecord, proof.program_id)
    spec = _current_spec(session, record)
    email = spec.emails.get(proof.email_key) if spec else None
    persona = spec.personas.get(proof.persona) if spec else None
    return ReviewSummary(
        proof=proof, program=spec.name if spec else record.name, program_key=record.name,
        email_key=proof.email_key, subject=email.subject if email else None, asset=asset.path,
        version=version.version, current=asset.current_version,
        persona=persona.name if persona else proof.persona, reviewer=proof.reviewer,
        sent_at=proof.sent_at,
        decision=latest_decision(session=session, asset_version_id=version.id,
                                 reviewer=proof.reviewer))


def _current_spec(session: Session, record: ProgramRecord) -> Program | None:
    try:
        return current_program(session=session, name=record.name)[1]
    except NotFound:
        return None


def latest_decision(*, session: Session, asset_version_id: int, reviewer: str) -> Approval | None:
    return session.scalar(select(Approval)
                          .where(Approval.asset_version_id == asset_version_id,
                                 Approval.reviewer == reviewer)
                          .order_by(Approval.at.desc(), Approval.id.desc()).limit(1))


# -- recording a decision ----------------------------------------------------------------------

def clean_comment(comment: str | None, *, required: bool) -> str | None:
    text = (comment or "").strip()
    if required and not text:
        raise Invalid("a comment is required to reject: say what should change",
                      field="comment")
    if len(text) > MAX_COMMENT:
        raise Invalid(f"the comment is {len(text)} characters long; at most {MAX_COMMENT}",
                      field="comment")
    if BAD_TEXT.search(text):
        raise Invalid("the comment contains characters that cannot be stored", field="comment")
    return text or None


def record_decision(*, session: Session, proof: Proof, decision: str, comment: str | None,
                    now: datetime) -> Approval:
    """Record the proof's reviewer approving or rejecting the asset version it shows. Refused
    (Conflict) once that version is no longer the asset's current one: a decision on old
    content must not read as a decision on new content."""
    verdict = DECISIONS.get(decision or "")
    if verdict is None:
        raise Invalid("decision must be approve or reject", field="decision")
    text = clean_comment(comment, required=verdict == REJECTED)
    version = session.get(AssetVersion, proof.asset_version_id)
    asset = session.get(Asset, version.asset_id)
    if asset.current_version != version.version:
        raise Conflict(f"{asset.path} has a newer version ({asset.current_version}) than this "
                       f"proof ({version.version}): review a new proof", field="version")
    approval = Approval(program_id=proof.program_id, asset_version_id=proof.asset_version_id,
                        reviewer=proof.reviewer, decision=verdict, comment=text,
                        proof_id=proof.id, at=now)
    session.add(approval)
    session.flush()
    return approval


# -- status for the launch gate ----------------------------------------------------------------

@dataclass(frozen=True)
class Rejection:
    reviewer: str
    comment: str | None
    at: datetime


@dataclass(frozen=True)
class AssetApproval:
    """Where one email of the program's current version stands."""

    email_key: str
    asset: str
    version: int | None  # the current asset version; None when the asset has no valid one
    state: str  # approved, rejected, pending
    approved_by: tuple[str, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    awaiting: tuple[str, ...] = ()  # reviewers sent a proof of this version, no decision yet
    problem: str | None = None  # why there is no version to approve
    asset_version_id: int | None = field(default=None, repr=False)

    @property
    def approved(self) -> bool:
        return self.state == APPROVED

    def to_dict(self) -> dict:
        return {"email": self.email_key, "asset": self.asset, "version": self.version,
                "state": self.state, "approved_by": list(self.approved_by),
                "rejections": [{"reviewer": r.reviewer, "comment": r.comment,
                                "at": r.at.isoformat()} for r in self.rejections],
                "awaiting": list(self.awaiting), "problem": self.problem}


def approval_status(*, session: Session, program_name: str,
                    versions: dict[str, AssetVersion | str] | None = None) -> list[AssetApproval]:
    """Every email of the program's current version, in program order, with the approval state
    of its current asset version (or of `versions`, path -> version or why there is none: the
    ones the QA gate checked). Raises NotFound for an unknown program."""
    record, spec = current_program(session=session, name=program_name)
    if versions is None:
        versions = current_versions(session=session, program_id=record.id,
                                    paths=[e.file for e in spec.emails.values()])
    version_ids = [v.id for v in versions.values() if isinstance(v, AssetVersion)]
    decisions = _latest_decisions(session, version_ids)
    proofed = _proofed_reviewers(session, version_ids)
    return [_status(email.key, email.file, versions[email.file], decisions, proofed)
            for email in spec.emails.values()]


def _latest_decisions(session: Session,
                      version_ids: list[int]) -> dict[int, dict[str, Approval]]:
    """version id -> reviewer -> that reviewer's latest decision (rows in time order, so a
    later row replaces an earlier one)."""
    latest: dict[int, dict[str, Approval]] = {}
    if version_ids:
        rows = session.scalars(select(Approval).where(Approval.asset_version_id.in_(version_ids))
                               .order_by(Approval.at, Approval.id))
        for row in rows:
            latest.setdefault(row.asset_version_id, {})[row.reviewer] = row
    return latest


def _proofed_reviewers(session: Session, version_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if version_ids:
        rows = session.execute(select(Proof.asset_version_id, Proof.reviewer)
                               .where(Proof.asset_version_id.in_(version_ids))
                               .order_by(Proof.id)).all()
        for version_id, reviewer in rows:
            listed = found.setdefault(version_id, [])
            if reviewer not in listed:
                listed.append(reviewer)
    return found


def _status(email_key: str, path: str, version: AssetVersion | str,
            decisions: dict[int, dict[str, Approval]],
            proofed: dict[int, list[str]]) -> AssetApproval:
    if isinstance(version, str):
        return AssetApproval(email_key, path, None, PENDING, problem=version)
    latest = decisions.get(version.id, {})
    approved = tuple(sorted(r for r, a in latest.items() if a.decision == APPROVED))
    rejections = tuple(Rejection(r, a.comment, a.at) for r, a in sorted(latest.items())
                       if a.decision == REJECTED)
    awaiting = tuple(r for r in proofed.get(version.id, []) if r not in latest)
    state = REJECTED if rejections else APPROVED if approved else PENDING
    return AssetApproval(email_key, path, version.version, state, approved, rejections,
                         awaiting, asset_version_id=version.id)


# -- the console's review queue and decisions history ------------------------------------------

@dataclass(frozen=True)
class PendingReview:
    """An email version a reviewer was sent proofs of and has not decided on yet."""

    summary: ReviewSummary  # of the newest proof: a decision goes through it
    proofs: tuple[Proof, ...]  # the newest proof per persona, in persona order of sending


def review_queue(*, session: Session, reviewer: str) -> list[PendingReview]:
    """What `reviewer` still has to decide: every asset version still current that they were
    sent a proof of, with no decision of theirs yet, oldest proof first. A decision is the
    reviewer's on a version (not per persona), so each version is one entry."""
    address = reviewer.strip().lower()
    undecided = ~select(Approval.id).where(
        Approval.asset_version_id == Proof.asset_version_id,
        Approval.reviewer == Proof.reviewer).exists()
    rows = session.scalars(
        select(Proof).join(AssetVersion, AssetVersion.id == Proof.asset_version_id)
        .join(Asset, Asset.id == AssetVersion.asset_id)
        .where(Proof.reviewer == address, Asset.current_version == AssetVersion.version,
               undecided)
        .order_by(Proof.sent_at, Proof.id))
    by_version: dict[int, dict[str, Proof]] = {}
    for proof in rows:  # in time order: a newer proof of a persona replaces the older one
        by_version.setdefault(proof.asset_version_id, {})[proof.persona] = proof
    queue = []
    for proofs in by_version.values():
        newest = max(proofs.values(), key=lambda p: (p.sent_at, p.id))
        queue.append(PendingReview(review_summary(session=session, proof=newest),
                                   tuple(proofs.values())))
    return queue


@dataclass(frozen=True)
class PastDecision:
    """One recorded decision as the decisions history lists it."""

    approval: Approval
    program: str
    email_key: str | None  # None when the decision's proof was deleted
    asset: str
    version: int


def decision_history(*, session: Session, limit: int = 100) -> list[PastDecision]:
    """The latest `limit` decisions of every reviewer on every program, newest first."""
    rows = session.execute(
        select(Approval, ProgramRecord.name, Proof.email_key, Asset.path, AssetVersion.version)
        .join(ProgramRecord, ProgramRecord.id == Approval.program_id)
        .join(AssetVersion, AssetVersion.id == Approval.asset_version_id)
        .join(Asset, Asset.id == AssetVersion.asset_id)
        .outerjoin(Proof, Proof.id == Approval.proof_id)
        .order_by(Approval.at.desc(), Approval.id.desc()).limit(limit)).all()
    return [PastDecision(*row) for row in rows]
