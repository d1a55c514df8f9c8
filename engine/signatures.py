"""The X-Nurture-Signature scheme, one implementation for both directions: the bounce webhook
checks it on what mail providers send us (engine/web/webhooks.py), the CRM webhook signs what
we send (engine/crm/delivery.py) and the reference receiver checks it (engine/crm/receiver.py).

    X-Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
"""

from __future__ import annotations

import hashlib
import hmac
import re

from engine.errors import Unauthorized

SIGNATURE_HEADER = "X-Nurture-Signature"
TOLERANCE_SECONDS = 300
_MAX_HEADER = 1000
_TIMESTAMP = re.compile(r"\d{1,12}")


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
