"""The webhook's body: one place that turns an outbox item into what the CRM receives.

    {"id": "<event id: the Idempotency-Key>", "type": "stage_change", "sequence": 42,
     "occurred_at": "2026-11-02T08:00:00+00:00",
     "lead": {"id": 7, "email": "ada@globex.example", "object": "lead", "crm_id": "00Q5e0"},
     "payload": {"from": "inquiry", "to": "mql", "reason": "...", "actor": "scoring", ...}}

`sequence` grows with every item: a CRM that sees a lower one after a higher one for the same
lead is looking at a replay. The body of an item is the same on every attempt (the signature's
timestamp, in a header, is what changes) as long as the field map and the lead's record in
the CRM (`lead.object`, `lead.crm_id`: null until the CRM told us) stay the same.

The field map (engine/crm/fieldmap.py) is applied here and nowhere else, when the item is
delivered: items are stored by our names.

- lead_created: `fields` by the CRM's names, values mapped (the fields the map pushes, the
  email among them); `custom`, the custom fields the CRM hears as they are. Without a map
  file: the standard fields set but the email (it is `lead.email`) and every custom field,
  by our names, as before there were maps.
- stage_change: `from` and `to` stay our stage names; with a map file, `crm` holds the stage
  (and an accepted lead's owner) as the CRM's fields and values, e.g. {"Status": "Marketing
  Qualified"}, and `crm_from` the stage left. An MQL says `as`: lead or contact (mql_as).
- form_submitted: `fields` as posted; `lands` says where each posted field lands in the CRM
  (its CRM field, or null: it stays with us); `crm` holds those values as the CRM's fields.
- field_changed: `changes` by the CRM's names, {"Title": {"from": .., "to": .., "local":
  "title"}}, of the fields the map pushes now.

Every renaming is for one CRM object, `obj`: "lead", or "contact" for a lead the CRM converted
(engine/flows/crm.py), whose fields the map's `contact` rules name.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from engine.crm.fieldmap import DEFAULT_MAP, CrmMap
from engine.crm.models import CrmOutboxItem
from engine.crm.outbox import FIELD_CHANGED, FORM_SUBMITTED, LEAD_CREATED, STAGE_CHANGE
from engine.leads.stages import Stage
from engine.pages.forms import FORM_FIELDS

CONTENT_TYPE = "application/json"
LEAD = "lead"  # the CRM object a lead's events are about


def event_body(item: CrmOutboxItem, crm_map: CrmMap | None = None, obj: str = LEAD,
               crm_id: str | None = None) -> dict:
    """The body delivered for `item`, its fields renamed through `crm_map` (None: the
    default map) for CRM object `obj` (lead, or contact once the CRM converted it), whose
    record there is `crm_id` (None: not linked yet)."""
    payload = dict(item.payload or {})
    email = payload.pop("email", None)
    payload.pop("at", None)  # occurred_at says it
    shape = _SHAPES.get(item.kind)
    if shape is not None:
        payload = shape(payload, crm_map or DEFAULT_MAP, obj, email)
    return {"id": item.event_id, "type": item.kind, "sequence": item.id,
            "occurred_at": item.created_at.isoformat(),
            "lead": {"id": item.lead_id, "email": email, "object": obj, "crm_id": crm_id},
            "payload": payload}


def crm_fields(crm_map: CrmMap, obj: str, fields: dict) -> dict:
    """A lead's fields as the CRM names them (`fields` holds standard ones, and custom ones
    under "custom"): the pushed ones renamed and mapped, then `custom`, the custom fields it
    hears as they are."""
    custom = fields.get("custom") or {}
    return {"fields": crm_map.to_crm(obj, fields), "custom": crm_map.as_is(obj, custom)}


def _lead_created(payload: dict, crm_map: CrmMap, obj: str, email: str | None) -> dict:
    local = {**(payload.get("fields") or {}), "custom": payload.get("custom") or {}}
    if email is not None and crm_map.source is not None:  # no map file: the body as it was
        local["email"] = email
    return {**payload, **crm_fields(crm_map, obj, local)}


def _stage_change(payload: dict, crm_map: CrmMap, obj: str, email: str | None) -> dict:
    if payload.get("to") == Stage.MQL:
        payload["as"] = crm_map.mql_as
    if crm_map.source is None:  # no map file: our names are the CRM's
        return payload
    now = {"stage": payload.get("to")}
    if payload.get("owner") is not None:
        now["owner"] = payload["owner"]
    crm = crm_map.to_crm(obj, now)
    if crm:
        payload["crm"] = crm
    if payload.get("from") is not None:
        before = crm_map.to_crm(obj, {"stage": payload["from"]})
        if before:
            payload["crm_from"] = before
    return payload


def _form_submitted(payload: dict, crm_map: CrmMap, obj: str, email: str | None) -> dict:
    posted = payload.get("fields") or {}
    # the lead field each posted field fills in (items stored before it was kept: the form
    # fields a form without a map fills in by their own names)
    targets = payload.pop("lead_fields", None)
    if targets is None:
        targets = {name: name for name in FORM_FIELDS if name in posted}
    lands, crm = {}, {}
    for name, value in ({"email": email, **posted} if email is not None else posted).items():
        target = "email" if name == "email" else targets.get(name)
        where = crm_map.crm_field(obj, target) if target else None
        lands[name] = where
        if where is not None:
            if target == "consent":  # a ticked box: consent given
                value = True
            rule = crm_map.rule(obj, target)
            crm[where] = crm_map.crm_value(rule, value) if rule else value
    return {**payload, "lands": lands, "crm": crm}


def _field_changed(payload: dict, crm_map: CrmMap, obj: str, email: str | None) -> dict:
    changes = {}
    for name, change in (payload.get("changes") or {}).items():
        where = crm_map.crm_field(obj, name)
        if where is None:  # the map no longer pushes it
            continue
        rule = crm_map.rule(obj, name)
        mapped = ({key: crm_map.crm_value(rule, change.get(key)) for key in ("from", "to")}
                  if rule else {"from": change.get("from"), "to": change.get("to")})
        changes[where] = {**mapped, "local": name}
    return {**payload, "changes": changes}


_SHAPES: dict[str, Callable[[dict, CrmMap, str, str | None], dict]] = {
    LEAD_CREATED: _lead_created, STAGE_CHANGE: _stage_change,
    FORM_SUBMITTED: _form_submitted, FIELD_CHANGED: _field_changed,
}


def encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str).encode("utf-8")
