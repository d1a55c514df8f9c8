"""Leads: write one, change its fields or its stage, read them back. What a change sets off (enrollment,
persona, scoring, routing) is engine/flows/leads.py's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from engine.crm.fieldmap import CrmMap, MapInvalid, map_for
from engine.crm.outbox import (
    FIELD_CHANGED,
    LEAD_CREATED,
    STAGE_CHANGE,
    field_changes_told,
    from_crm,
    item_row,
    new_lead_payload,
    tell_crm,
)
from engine.crm.records import account_of
from engine.errors import Invalid, NotFound
from engine.journeys.decide import Event, EventKind
from engine.journeys.service import apply_event
from engine.leads.fields import clean_lead_fields, normalise_email
from engine.leads.models import STANDARD_FIELDS, Lead, LeadEvent, StageChange
from engine.leads.stages import NOT_ON_PATH, check_transition, parse_stage, path_level_after


def get_lead(*, session: Session, email: str) -> Lead:
    lead = session.scalar(select(Lead).where(Lead.email == normalise_email(email)))
    if lead is None:
        raise NotFound(f"no lead with email {email!r}", field="email")
    return lead


def get_lead_by_id(*, session: Session, lead_id: int) -> Lead:
    lead = session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead with id {lead_id}", field="id")
    return lead


@dataclass(frozen=True)
class Written:
    """What write_lead did: the lead, whether it is new, and whether its fields changed."""

    lead: Lead
    created: bool
    changed: bool


def write_lead(*, session: Session, fields: dict, now: datetime, actor: str) -> Written:
    """Create or update a lead by case-insensitive email, and nothing else (engine/flows/leads.py
    does what follows: enrollment, persona, scoring, routing). A stage given for an existing
    lead goes through the transition table. Raises Invalid (nothing written)."""
    clean = clean_lead_fields(fields)
    lead = session.scalar(select(Lead).where(Lead.email == clean["email"]))
    stage = clean.pop("stage", None)
    if lead is None:
        lead = Lead(**clean, stage=stage or "inquiry", created_at=now, updated_at=now)
        session.add(lead)
        session.flush()
        record_stage_change(session, StageChange(lead_id=lead.id, from_stage=None,
                                                 to_stage=lead.stage, at=now, reason="created",
                                                 actor=actor))
        if not from_crm(actor):  # the CRM has it already
            tell_crm(session=session, lead_id=lead.id, email=lead.email, kind=LEAD_CREATED,
                     now=now, actor=actor, **new_lead_payload(lead_dict(lead)))
        return Written(lead, created=True, changed=True)
    changes = change_fields(session=session, lead=lead, values=clean, now=now, actor=actor)
    if stage and stage != lead.stage:
        set_stage(session=session, lead=lead, stage=stage, reason="updated", actor=actor, now=now)
    return Written(lead, created=False, changed=bool(changes))


def change_fields(*, session: Session, lead: Lead, values: Mapping, now: datetime, actor: str,
                  crm_map: CrmMap | None = None,
                  crm_rows: list[dict] | None = None) -> dict[str, tuple]:
    """Write `values` (standard fields; custom ones under "custom", merged into the lead's)
    to an existing lead, the one way every door changes a lead's fields (write_lead, the
    import's updates; the stage has set_stage). Returns what changed, {field or custom.NAME:
    (old, new)}. The CRM is told the changes its field map pushes (`crm_map`, default: the
    one in effect for the session), unless the CRM made them: a field_changed item, added to
    the session, or its row appended to `crm_rows` for the caller to insert in bulk (the
    import, as it does its new leads')."""
    changes: dict[str, tuple] = {}
    for name, value in values.items():
        if name != "custom" and getattr(lead, name) != value:
            changes[name] = (getattr(lead, name), value)
    custom = lead.custom or {}
    added = {name: value for name, value in (values.get("custom") or {}).items()
             if name not in custom or custom[name] != value}
    changes.update((f"custom.{name}", (custom.get(name), value)) for name, value in added.items())
    if not changes:
        return changes
    for name, (_, value) in changes.items():
        if not name.startswith("custom."):
            setattr(lead, name, value)
    if added:
        lead.custom = {**custom, **added}
    lead.updated_at = now
    told = field_changes_told(crm_map or _map_in_effect(session), changes, actor=actor,
                              obj=lead.crm_object or "lead")
    if told and crm_rows is not None:
        crm_rows.append(item_row(lead_id=lead.id, email=lead.email, kind=FIELD_CHANGED,
                                 now=now, **told))
    elif told:
        tell_crm(session=session, lead_id=lead.id, email=lead.email, kind=FIELD_CHANGED,
                 now=now, **told)
    return changes


def _map_in_effect(session: Session) -> CrmMap | None:
    """The field map in effect; None while it has errors: no door stops for them (a form
    would lose its lead), every change is kept, and delivery, which waits for the map to be
    fixed, tells the CRM those it pushes."""
    try:
        return map_for(session)
    except MapInvalid:
        return None


def set_stage(*, session: Session, lead: Lead, stage: str, reason: str, actor: str,
              now: datetime, crm: dict | None = None) -> StageChange:
    """Move a lead to a new lifecycle stage through the one transition table: recorded, told
    to its enrollments and to the CRM (with `crm`'s extra facts, such as an MQL's score)."""
    target = parse_stage(stage)
    if not reason or not reason.strip():
        raise Invalid("a reason is required for a stage change", field="reason")
    check_transition(lead.stage, target)
    change = record_stage_change(session, StageChange(
        lead_id=lead.id, from_stage=lead.stage, to_stage=target, at=now, reason=reason.strip(),
        actor=actor))
    lead.stage = target
    lead.updated_at = now
    apply_event(session=session, lead=lead, event=Event(EventKind.STAGE, detail=target), now=now,
                actor=actor)
    if target == "mql":  # the account it goes under when the map says MQLs are contacts
        account = account_of(session, lead)
        if account is not None:
            crm = {**(crm or {}), "account": {"crm_id": account.crm_id, "name": account.name,
                                              "domain": account.domain}}
    if not from_crm(actor):  # a change the CRM made is not told back to it
        tell_crm(session=session, lead_id=lead.id, email=lead.email, kind=STAGE_CHANGE, now=now,
                 **{"from": change.from_stage, "to": target, "reason": change.reason,
                    "actor": actor, **(crm or {})})
    return change


def record_stage_change(session: Session, change: StageChange) -> StageChange:
    """Add `change` to its lead's history with when the lead entered the stage it leaves and
    its path level after it, both from the latest change before it, which the lead leaves at
    this change (its left_at). Changes are recorded in time order, as they happen."""
    previous = session.execute(
        select(StageChange.id, StageChange.at, StageChange.path_level)
        .where(StageChange.lead_id == change.lead_id)
        .order_by(StageChange.at.desc(), StageChange.id.desc()).limit(1)).first()
    change.from_at = previous.at if previous else None
    change.path_level = path_level_after(previous.path_level if previous else NOT_ON_PATH,
                                         change.to_stage)
    if previous:
        session.execute(update(StageChange).where(StageChange.id == previous.id)
                        .values(left_at=change.at))
    session.add(change)
    return change


def list_leads(*, session: Session, email: str | None = None, stage: str | None = None,
               persona: str | None = None, email_contains: str | None = None,
               text: str | None = None, limit: int = 50,
               offset: int = 0) -> tuple[list[Lead], int]:
    """Leads in id order, and how many match. `email` is compared as stored (normalised by
    the caller); `persona` is the one a lead follows: its enrollment's matched persona (kept
    as `enrolled_persona`), else, before any enrollment, the one set on it. `text` is found,
    whatever its case, in the email, the name (first, last or both) or the company."""
    query = select(Lead)
    if email is not None:
        query = query.where(Lead.email == email)
    if stage:
        query = query.where(Lead.stage == parse_stage(stage))
    if persona:
        query = query.where(func.coalesce(Lead.enrolled_persona, Lead.persona) == persona)
    if email_contains:
        query = query.where(Lead.email.contains(email_contains.lower(), autoescape=True))
    if text and text.strip():
        wanted = text.strip().lower()
        full_name = func.coalesce(Lead.first_name, "") + " " + func.coalesce(Lead.last_name, "")
        query = query.where(or_(*(func.lower(column).contains(wanted, autoescape=True)
                                  for column in (Lead.email, full_name, Lead.company))))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    leads = session.scalars(query.order_by(Lead.id).limit(limit).offset(offset))
    return list(leads), total


def stage_history(*, session: Session, lead_id: int) -> list[StageChange]:
    return list(session.scalars(
        select(StageChange).where(StageChange.lead_id == lead_id).order_by(StageChange.id)))


def event_log(*, session: Session, lead_id: int, limit: int = 200,
              latest: bool = False) -> list[LeadEvent]:
    """The lead's first `limit` events in order, or with `latest` its last `limit`."""
    query = select(LeadEvent).where(LeadEvent.lead_id == lead_id)
    if latest:
        rows = list(session.scalars(query.order_by(LeadEvent.id.desc()).limit(limit)))
        return rows[::-1]
    return list(session.scalars(query.order_by(LeadEvent.id).limit(limit)))


def change_dict(change: StageChange) -> dict:
    return {"from": change.from_stage, "to": change.to_stage, "at": change.at.isoformat(),
            "reason": change.reason, "actor": change.actor}


def lead_dict(lead: Lead) -> dict:
    data = {name: getattr(lead, name) for name in STANDARD_FIELDS}
    return {"id": lead.id, **data, "custom": lead.custom or {},
            "created_at": lead.created_at.isoformat(), "updated_at": lead.updated_at.isoformat()}
