"""A person's response through the lead pipeline, named as scoring names it (click, open,
page_view, form_submitted, consumed), for tests about scoring and routing."""

from __future__ import annotations

from datetime import datetime

from engine.flows.leads import RESPONSES, respond

EVENT_OF = {scored_as: kind for kind, scored_as in RESPONSES.items() if scored_as}


def response(session, lead, kind: str, detail: str | None, now: datetime) -> list:
    """The awards stored for it."""
    return respond(session=session, lead=lead, kind=EVENT_OF[kind], detail=detail, now=now,
                   actor="test")
