"""Sales handoff over the API: the MQL queue with timelines, leads one field short of
qualifying, accept and reject, and a lead's explanation. Mounted under /api/v1."""

from __future__ import annotations

from flask import Blueprint, current_app, request
from pydantic import BaseModel, ConfigDict, Field

from engine.auth.service import Permission
from engine.db import utcnow
from engine.leads.explain import explain
from engine.leads.service import get_lead_by_id, lead_dict
from engine.sales.queue import mql_queue, one_field_short_leads, queue_entry
from engine.sales.service import accept, reject
from engine.web import schemas as out
from engine.web.api import LeadPath, Text, lead_id_param, parse_json, parse_query, whole_number
from engine.web.auth import current_principal, require
from engine.web.openapi import describe

sales_api = Blueprint("sales_api", __name__)
MAX_LIMIT = 500


class AcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: Text | None = Field(None, max_length=200)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(max_length=1000)


class LimitQuery(BaseModel):
    limit: whole_number(1, MAX_LIMIT) = 50


def _db():
    return current_app.extensions["nurture.db"]


def _limit() -> int:
    return parse_query(LimitQuery).limit


@sales_api.get("/sales/mql")
@describe(query=LimitQuery, responses={200: out.MqlQueue}, tags=("sales",))
@require(Permission.LEADS_READ)
def mql():
    """MQLs waiting for sales, highest score first, each with its behaviour timeline."""
    with _db().session() as session:
        items = [queue_entry(session, entry)
                 for entry in mql_queue(session=session, now=utcnow(), limit=_limit())]
    return {"items": items}


@sales_api.get("/sales/one-field-short")
@describe(query=LimitQuery, responses={200: out.OneFieldShort}, tags=("sales",))
@require(Permission.LEADS_READ)
def one_field_short():
    """Leads one field short of qualifying (a field the scoring rules require is missing)."""
    with _db().session() as session:
        items = [{"id": n.lead.id, "email": n.lead.email, "score": round(n.score, 1),
                  "missing": n.fields}
                 for n in one_field_short_leads(session=session, now=utcnow(), limit=_limit())]
    return {"items": items}


@sales_api.post("/leads/<lead_id>/accept")
@describe(path=LeadPath, body=AcceptIn, body_required=False, responses={200: out.OwnedLead}, errors=(409,),
          tags=("sales",))
@require(Permission.LEADS_STAGE)
def accept_lead(lead_id: str):
    """mql -> sal; the caller (or `owner`) owns the lead. 409 for a lead that is not an MQL."""
    key = lead_id_param(lead_id)
    has_body = request.content_length or request.headers.get("Transfer-Encoding")
    body = parse_json(AcceptIn, None if has_body else {})
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        accept(session=session, lead=lead, actor=current_principal().actor, owner=body.owner,
               now=utcnow())
        return {**lead_dict(lead), "owner": lead.owner}


@sales_api.post("/leads/<lead_id>/reject")
@describe(path=LeadPath, body=RejectIn, responses={200: out.LeadOut}, errors=(409,),
          tags=("sales",))
@require(Permission.LEADS_STAGE)
def reject_lead(lead_id: str):
    """mql -> recycled with a reason; the lead re-enters nurture with its behaviour reset."""
    key = lead_id_param(lead_id)
    body = parse_json(RejectIn)
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        reject(session=session, lead=lead, reason=body.reason, actor=current_principal().actor,
               now=utcnow())
        return lead_dict(lead)


@sales_api.get("/leads/<lead_id>/explain")
@describe(path=LeadPath, responses={200: out.Explanation}, tags=("leads",))
@require(Permission.LEADS_READ)
def explain_lead(lead_id: str):
    """Why a lead is where it is: its score and the rules behind it, stage history, next
    sends, suppression and sales' answer."""
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=lead_id_param(lead_id))
        return explain(session=session, lead=lead, now=utcnow())
