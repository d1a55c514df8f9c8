"""POST /api/v1/crm/events: what the CRM changed (engine/flows/crm.py), HMAC-signed like the
bounce webhook (engine/signatures.py) with NURTURE_CRM_INBOUND_SECRET (else the outbound
webhook's secret; neither: 503). A signature is good for 5 minutes either side of our clock;
an event id is applied once (a replay inside the window answers `repeat`). One event per
request, applied whole or not at all: a refused event changes nothing and is logged.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Union

from flask import Blueprint, Response, current_app, request
from pydantic import Field, RootModel
from werkzeug.exceptions import ServiceUnavailable

from engine.crm.fieldmap import current_map
from engine.db import utcnow
from engine.errors import Invalid
from engine.flows.crm import ENVELOPES, parse_event, receive_crm_event
from engine.signatures import SIGNATURE_HEADER, verify_signature
from engine.web.openapi import describe
from engine.web.schemas import CrmEventApplied

crm_events = Blueprint("crm_events", __name__)


class CrmEventIn(RootModel[Annotated[Union[tuple(ENVELOPES.values())],  # noqa: UP007
                                     Field(discriminator="type")]]):
    """One event from the CRM; `data` as its `type` says."""


@crm_events.post("/events")
@describe(body=CrmEventIn, responses={200: CrmEventApplied}, errors=(404, 409, 503),
          security="webhookSignature", tags=("crm",))
def receive():
    """An event from the CRM: a lead or contact updated or converted, an account updated, an
    opportunity created, updated, won or lost, an owner changed.

    Not an API key: `X-Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<raw body>">` with NURTURE_CRM_INBOUND_SECRET. Fields carry the CRM's names and are
    read through the field map (crm.yaml)."""
    settings = current_app.extensions["nurture.settings"]
    if not settings.crm_inbound_secret:
        raise ServiceUnavailable("CRM events are not configured (NURTURE_CRM_INBOUND_SECRET)")
    body = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    verify_signature(secret=settings.crm_inbound_secret,
                     header=request.headers.get(SIGNATURE_HEADER), body=body,
                     now=int(time.time()))
    event = parse_event(_json(body))
    now = current_app.extensions.get("nurture.clock", utcnow)()
    return receive_crm_event(db=current_app.extensions["nurture.db"], event=event,
                             crm_map=current_map(settings), now=now).as_dict()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Invalid(f"the body is not valid UTF-8 JSON: {str(exc)[:200]}",
                      field="body") from None


@crm_events.after_request
def _challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = f'HMAC-SHA256 header="{SIGNATURE_HEADER}"'
    return response
