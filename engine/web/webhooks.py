"""POST /api/v1/webhooks/bounces: bounces and complaints from a mail provider, HMAC-signed.

    X-Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

The key is NURTURE_WEBHOOK_SECRET (unset: every request is refused with 503). A signature is
good for 5 minutes either side of our clock; a replay inside that window records nothing new,
since recording is idempotent. The body is `{"events": [{"email", "type": "hard"|"soft"|
"complaint", "reason", "message_id"}]}` or a single event object; a request is recorded whole
or not at all, and answers `{"suppressed": n, "soft": n, "ignored": n}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Annotated, Any

from flask import Blueprint, Response, current_app, request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import ServiceUnavailable

from engine.db import utcnow
from engine.errors import Invalid, Unauthorized
from engine.leads.fields import BAD_TEXT, normalise_email
from engine.sending.bounces import BounceKind, BounceReport, record_reports

SIGNATURE_HEADER = "X-Nurture-Signature"
TOLERANCE_SECONDS = 300
MAX_EVENTS = 1000
_MAX_HEADER = 1000
_TIMESTAMP = re.compile(r"\d{1,12}")

webhooks = Blueprint("webhooks", __name__)


def sign_webhook(secret: str, body: bytes, t: int) -> str:
    """The X-Nurture-Signature value for `body` sent at unix time `t`."""
    return f"t={t},v1={_mac(secret, body, str(t))}"


def verify_signature(*, secret: str, header: str | None, body: bytes, now: int) -> None:
    """Raises Unauthorized unless `header` signs `body` with `secret` within the tolerance."""
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header", field=SIGNATURE_HEADER)
    t, signatures = _parse_header(header)
    if abs(now - int(t)) > TOLERANCE_SECONDS:
        raise Unauthorized("signature timestamp is more than 5 minutes from our clock",
                           field=SIGNATURE_HEADER)
    expected = _mac(secret, body, t).encode()
    # Several v1 values are allowed (a sender rotating secrets); each compared in constant time.
    if not any(hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in signatures):
        raise Unauthorized("signature does not match the body", field=SIGNATURE_HEADER)


def _mac(secret: str, body: bytes, t: str) -> str:
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def _parse_header(header: str) -> tuple[str, list[str]]:
    t, signatures = None, []
    for item in header[:_MAX_HEADER].split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and t is None:
            t = value.strip()
        elif name == "v1":
            signatures.append(value.strip())
    if t is None or not _TIMESTAMP.fullmatch(t) or not signatures:
        raise Unauthorized(f"malformed {SIGNATURE_HEADER} header: expected t=<unix seconds>,"
                           "v1=<hex>", field=SIGNATURE_HEADER)
    return t, signatures


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
def bounces():
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
