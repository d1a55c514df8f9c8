"""Signed tokens. Each purpose has its own salt, so a token made for one use is refused by
another; unsubscribe tokens never expire (an opt-out link must keep working)."""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, URLSafeSerializer

MAX_TOKEN_LENGTH = 500


def sign(secret_key: str, purpose: str, payload: dict) -> str:
    return URLSafeSerializer(secret_key, salt=f"nurture.{purpose}").dumps(payload)


def verify(secret_key: str, purpose: str, token: str) -> dict | None:
    """The payload, or None for a tampered, foreign or malformed token (never an exception)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        payload = URLSafeSerializer(secret_key, salt=f"nurture.{purpose}").loads(token)
    except (BadSignature, ValueError, UnicodeError):
        return None
    return payload if isinstance(payload, dict) else None


def unsubscribe_token(secret_key: str, *, lead_id: int, outbox_id: int) -> str:
    return sign(secret_key, "unsubscribe", {"l": lead_id, "o": outbox_id})


def send_token(secret_key: str, purpose: str, *, lead_id: int, outbox_id: int) -> str:
    """A token for one sent email: `open` (the pixel), `view` (view in browser)."""
    return sign(secret_key, purpose, {"l": lead_id, "o": outbox_id})


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def click_token(secret_key: str, *, lead_id: int, outbox_id: int, index: int, url: str) -> str:
    """Names link `index` of a sent email and binds its exact destination by digest: the
    redirect goes to the URL stored at send time, and only if it still has that digest."""
    return sign(secret_key, "click", {"l": lead_id, "o": outbox_id, "n": index,
                                      "h": url_digest(url)})


def ids(payload: dict | None, *keys: str) -> tuple[int, ...] | None:
    """The payload's integer ids under `keys`, or None when any is missing or not an int."""
    if payload is None:
        return None
    values = tuple(payload.get(key) for key in keys)
    if all(isinstance(v, int) and not isinstance(v, bool) and -1 <= v < 2**31 for v in values):
        return values
    return None
