"""POST /api/v1/webhooks/bounces: bounces and complaints from a mail provider, HMAC-signed.

    X-Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

(engine/signatures.py, which the outbound CRM webhook signs with too.)

The key is NURTURE_WEBHOOK_SECRET (unset: every request is refused with 503). A signature is
good for 5 minutes either side of our clock; a replay inside that window records nothing new,
since recording is idempotent. The body is `{"events": [{"email", "type": "hard"|"soft"|
"complaint", "reason", "message_id"}]}` or a single event object; a request is recorded whole
or not at all, and answers `{"suppressed": n, "soft": n, "ignored": n}`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from flask import Blueprint, Response, current_app, request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StringConstraints
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import ServiceUnavailable

from engine.db import utcnow
from engine.errors import Invalid
from engine.leads.fields import BAD_TEXT, normalise_email
from engine.sending.bounces import BounceKind, BounceReport, record_reports
from engine.signatures import SIGNATURE_HEADER, verify_signature
from engine.web.openapi import describe
from engine.web.schemas import BouncesRecorded

MAX_EVENTS = 1000

webhooks = Blueprint("webhooks", __name__)


# -- the body ---------------------------------------------------------------------------------

def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except Invalid as exc:
        raise PydanticCustomError("email", "{detail}", {"detail": exc.detail}) from None


def _text(value: str) -> str:
    if BAD_TEXT.search(value):
        raise PydanticCustomError("bad_text",
                                  "must not contain NUL characters or unpaired surrogates")
    return value


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    email: Annotated[str, StringConstraints(max_length=254), AfterValidator(_email)]
    type: BounceKind
    reason: Annotated[str, StringConstraints(max_length=1000), AfterValidator(_text)] = ""
    message_id: Annotated[str, StringConstraints(max_length=200),
                          AfterValidator(_text)] | None = None

    def report(self) -> BounceReport:
        return BounceReport(kind=self.type, recipient=self.email, message_id=self.message_id,
                            diagnostic=self.reason)


class WebhookBody(BaseModel):
    events: list[WebhookEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class BouncesIn(RootModel[WebhookBody | WebhookEvent]):
    """What the webhook takes: a list of events, or one event (as the OpenAPI document says;
    parse_body reads it so that a 422 names `events.3.email`, not the union's branch)."""


def parse_body(body: bytes) -> WebhookBody:
    """Raises Invalid (not JSON, not an object) or pydantic's ValidationError, whose 422 names
    the field and the event's index, e.g. `events.3.email`."""
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Invalid(f"the body is not valid UTF-8 JSON: {str(exc)[:200]}", field="body") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", field="body")
    if "events" not in data:
        data = {"events": [data]}  # a single event
    return WebhookBody.model_validate(data)


# -- the view ---------------------------------------------------------------------------------

@webhooks.post("/bounces")
@describe(body=BouncesIn, responses={200: BouncesRecorded}, errors=(503,),
          security="webhookSignature", tags=("webhooks",))
def bounces():
    """Bounces and complaints from a mail provider, HMAC-signed.

    The body is `{"events": [...]}` or a single event object; a request is recorded whole or
    not at all. Not an API key: `X-Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<raw body>">` with NURTURE_WEBHOOK_SECRET, good for 5 minutes either side."""
    secret = current_app.extensions["nurture.settings"].webhook_secret
    if not secret:
        raise ServiceUnavailable("the bounce webhook is not configured (NURTURE_WEBHOOK_SECRET)")
    body = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    verify_signature(secret=secret, header=request.headers.get(SIGNATURE_HEADER), body=body,
                     now=int(time.time()))
    parsed = parse_body(body)
    now = current_app.extensions.get("nurture.clock", utcnow)()  # signatures use wall time
    with current_app.extensions["nurture.db"].session() as session:
        return record_reports(session=session, reports=[e.report() for e in parsed.events],
                              source="webhook", now=now)


@webhooks.after_request
def _challenge(response: Response) -> Response:
    if response.status_code == 401:  # the app's handler names Bearer, which API keys use
        response.headers["WWW-Authenticate"] = f'HMAC-SHA256 header="{SIGNATURE_HEADER}"'
    return response
