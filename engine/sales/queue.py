"""What sales sees: the MQL queue with each lead's timeline, and the leads one field short."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.leads.models import Lead, StageChange
from engine.scoring.rules import one_field_short
from engine.scoring.service import NURTURE_STAGES, current_score, scoring_program
from engine.sending.models import OutboxMessage
from engine.tracking.service import timeline


@dataclass(frozen=True)
class QueueEntry:
    lead: Lead
    score: float
    mql_at: datetime | None
    reason: str | None


def mql_queue(*, session: Session, now: datetime, limit: int = 100) -> list[QueueEntry]:
    """MQLs waiting for sales' answer, highest score first."""
    mql_since = (select(StageChange.lead_id, func.max(StageChange.id).label("change_id"))
                 .where(StageChange.to_stage == "mql").group_by(StageChange.lead_id).subquery())
    rows = session.execute(
        select(Lead, StageChange).join(mql_since, mql_since.c.lead_id == Lead.id)
        .join(StageChange, StageChange.id == mql_since.c.change_id)
        .where(Lead.stage == "mql"))
    entries = []
    for lead, change in rows:
        found = scoring_program(session=session, lead_id=lead.id)
        entries.append(QueueEntry(lead=lead, score=current_score(lead, found[1] if found else None,
                                                                 now),
                                  mql_at=change.at, reason=change.reason))
    entries.sort(key=lambda e: (-e.score, e.lead.id))
    return entries[:limit]


@dataclass(frozen=True)
class NearMiss:
    lead: Lead
    score: float
    fields: list[str]  # each of which, filled in alone, could qualify the lead


def one_field_short_leads(*, session: Session, now: datetime, limit: int = 100) -> list[NearMiss]:
    """Nurture leads one field short of qualifying (e.g. a high score, no company size), with
    the field (or the fields, any one of which would do), highest score first."""
    found: list[NearMiss] = []
    query = (select(Lead).where(Lead.stage.in_(NURTURE_STAGES))
             .where((Lead.behaviour_score > 0) | (Lead.fit_score > 0))
             .execution_options(yield_per=500))
    for lead in session.scalars(query):
        program = scoring_program(session=session, lead_id=lead.id)
        if program is None:
            continue
        score = current_score(lead, program[1], now)
        fields = one_field_short(program[1].scoring, score, lead.fields())
        if fields:
            found.append(NearMiss(lead=lead, score=score, fields=fields))
    found.sort(key=lambda n: (-n.score, n.lead.id))
    return found[:limit]


def queue_entry(session, entry) -> dict:
    """An MQL as sales sees it (also the API's shape)."""
    return {
        "id": entry.lead.id, "email": entry.lead.email, "company": entry.lead.company,
        "title": entry.lead.title, "owner": entry.lead.owner, "score": round(entry.score, 1),
        "mql_at": entry.mql_at.isoformat() if entry.mql_at else None, "reason": entry.reason,
        "timeline": timeline_entries(session, entry.lead.id),
    }


def timeline_entries(session, lead_id: int) -> list[dict]:
    steps: dict[int, str] = {}
    entries = []
    for event in timeline(session=session, lead_id=lead_id):
        if event.outbox_id and event.outbox_id not in steps:
            row = session.get(OutboxMessage, event.outbox_id)
            steps[event.outbox_id] = row.step if row else "?"
        email = steps.get(event.outbox_id, "")
        what = {"open": f"opened {email}", "view": f"viewed {email} in the browser",
                "click": f"clicked {shown_url(event.url)} in {email}",
                "page_view": f"visited {event.url}"}[event.kind]
        entries.append({"at": event.at.isoformat(), "kind": event.kind, "what": what})
    return entries


def shown_url(url: str | None) -> str:
    """A URL for people: a landing-page link (ours, under any base path) without the lead's
    personal `t` token; other URLs as they are."""
    parts = urlsplit(url or "")
    if "/p/" not in parts.path:
        return url or ""
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "t"]
    return parts._replace(query=urlencode(query)).geturl()
