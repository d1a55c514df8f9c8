"""Signed tokens. Each purpose has its own salt, so a token made for one use is refused by
another; unsubscribe tokens never expire (an opt-out link must keep working)."""

from __future__ import annotations

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
