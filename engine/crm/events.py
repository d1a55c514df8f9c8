"""The webhook's body: one place that turns an outbox item into what the CRM receives.

    {"id": "<event id: the Idempotency-Key>", "type": "stage_change", "sequence": 42,
     "occurred_at": "2026-11-02T08:00:00+00:00",
     "lead": {"id": 7, "email": "ada@globex.example"},
     "payload": {"from": "inquiry", "to": "mql", "reason": "...", "actor": "scoring", ...}}

`sequence` grows with every item: a CRM that sees a lower one after a higher one for the same
lead is looking at a replay. The body of an item is the same on every attempt (the signature's
timestamp, in a header, is what changes). The field map, when there is one, renames fields
here and nowhere else.
"""

from __future__ import annotations

import json

from engine.crm.models import CrmOutboxItem

CONTENT_TYPE = "application/json"


def event_body(item: CrmOutboxItem) -> dict:
    payload = dict(item.payload or {})
    email = payload.pop("email", None)
    payload.pop("at", None)  # occurred_at says it
    return {"id": item.event_id, "type": item.kind, "sequence": item.id,
            "occurred_at": item.created_at.isoformat(),
            "lead": {"id": item.lead_id, "email": email}, "payload": payload}


def encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str).encode("utf-8")
