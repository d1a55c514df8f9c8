"""Items for the CRM, written in the transaction of the change they report, and delivered in
order per lead as signed webhooks (engine/crm/delivery.py).

The kinds, each written where that thing happens to a lead (one place per thing, whatever the
door):

- `lead_created`: engine/leads/service.py write_lead, and the import's bulk insert
  (engine/leads/importer.py, through `item_row`); the lead's fields.
- `stage_change`: engine/leads/service.py set_stage, the one transition table: old and new
  stage, reason, actor, and what the caller adds (an MQL's score, an accepted lead's owner, a
  rejection). MQL, accepted (sal) and rejected (recycled) are stage changes.
- `buying_signal`: engine/sales/service.py, a signal from a lead already with sales or a
  customer; it changes no stage.
- `unsubscribed` and `suppressed`: engine/sending/suppression.py suppress, which every
  unsubscribe, hard bounce, complaint and manual suppression goes through: do-not-contact.
- `form_submitted`: engine/flows/forms.py submit_form, a landing-page form with its fields
  and the lead field each one fills in.
- `field_changed`: engine/leads/service.py change_fields, which writing an existing lead goes
  through (write_lead, and the import's updates): the fields that changed, old and new, of
  those the field map in effect pushes (engine/crm/fieldmap.py); none when the change came
  from the CRM itself (`CRM_ACTOR`: telling it back would echo forever).

What is stored is ours (our field names, our values); engine/crm/events.py renames it through
the field map when it is delivered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from engine.crm.fieldmap import CrmMap
from engine.crm.models import CrmOutboxItem, CrmStatus, new_event_id
from engine.leads.models import STANDARD_FIELDS

LEAD_CREATED = "lead_created"
STAGE_CHANGE = "stage_change"
BUYING_SIGNAL = "buying_signal"
UNSUBSCRIBED = "unsubscribed"
SUPPRESSED = "suppressed"
FORM_SUBMITTED = "form_submitted"
FIELD_CHANGED = "field_changed"
KINDS = (LEAD_CREATED, STAGE_CHANGE, BUYING_SIGNAL, UNSUBSCRIBED, SUPPRESSED, FORM_SUBMITTED,
         FIELD_CHANGED)
# The actor of a change the CRM sent us (inbound events): such a change is not told back.
# "crm:<detail>" counts too (e.g. crm:salesforce).
CRM_ACTOR = "crm"
ITEM_COLUMNS = ("event_id", "lead_id", "kind", "created_at", "status", "attempts",
                "next_attempt_at", "replays", "payload")  # what item_row gives


def tell_crm(*, session: Session, lead_id: int, email: str, kind: str, now: datetime,
             **payload) -> CrmOutboxItem:
    item = CrmOutboxItem(**item_row(lead_id=lead_id, email=email, kind=kind, now=now, **payload))
    session.add(item)
    return item


def item_row(*, lead_id: int, email: str, kind: str, now: datetime, **payload) -> dict:
    """The columns of one item: for tell_crm, and for a bulk insert (the import) alike."""
    if kind not in KINDS:
        raise ValueError(f"unknown CRM item kind {kind!r} (one of {', '.join(KINDS)})")
    return {"event_id": new_event_id(), "lead_id": lead_id, "kind": kind, "created_at": now,
            # due at once, whatever `now` says (a change recorded for a time ahead is no
            # reason to hold it back)
            "status": CrmStatus.PENDING, "attempts": 0, "next_attempt_at": None, "replays": 0,
            "payload": {"email": email, "at": now.isoformat(), **payload}}


def from_crm(actor: str) -> bool:
    """Whether a change was made by the CRM (CRM_ACTOR): it is not told back to it."""
    return actor == CRM_ACTOR or actor.startswith(CRM_ACTOR + ":")


def field_changes_told(crm_map: CrmMap | None, changes: Mapping[str, tuple], *, actor: str,
                       obj: str = "lead") -> dict | None:
    """The payload of a field_changed item: of `changes` (field, or custom.NAME -> (old,
    new)), those the map pushes for `obj` (no map: all of them; delivery chooses); None when
    there is nothing to tell (none pushed, or the change came from the CRM)."""
    if from_crm(actor):
        return None
    told = {name: {"from": old, "to": new} for name, (old, new) in changes.items()
            if crm_map is None or crm_map.pushes(obj, name)}
    return {"changes": told, "actor": actor} if told else None


def new_lead_payload(fields: Mapping) -> dict:
    """A new lead's fields as the CRM is told them (a Lead's or the import's row): the standard
    ones that are set, and the custom ones, by our names: the field map chooses and renames
    them on delivery (engine/crm/events.py)."""
    chosen = {name: fields.get(name) for name in STANDARD_FIELDS
              if name != "email" and fields.get(name) not in (None, "")}
    return {"fields": chosen, "custom": dict(fields.get("custom") or {})}
