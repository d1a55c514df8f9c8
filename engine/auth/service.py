"""API keys: create (shown once), list, revoke, verify; roles and what each role may do.

One role model serves API keys and console users (engine/auth/users.py): a role names a set of
permissions, and every door (an API view, a console page or form) asks `allowed(role, X)`.

A key reads `nur_<prefix>_<secret>`. Only its SHA-256 hash is stored: the secret carries 256 bits
of entropy, so a fast hash is enough (no salt or slow KDF needed). The prefix is not secret; it
finds the row and names the key in listings and in the `revoke` command.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.auth.models import ApiKey
from engine.errors import Invalid, NotFound, Unauthorized

KEY_SCHEME = "nur"
PREFIX_BYTES = 4  # 8 hex characters
SECRET_BYTES = 32
MAX_KEY_LENGTH = 200
MAX_NAME_LENGTH = 100  # the name goes into 200-character actor columns as api:<name>
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most once a minute per key
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    REVIEWER = "reviewer"
    SALES = "sales"
    READ_ONLY = "read_only"  # sees what the others see, changes nothing


ROLES: tuple[str, ...] = tuple(role.value for role in Role)


class Permission(StrEnum):
    PROGRAMS_READ = "programs:read"
    LEADS_READ = "leads:read"
    LEADS_WRITE = "leads:write"
    LEADS_STAGE = "leads:stage"
    LEADS_EVENTS = "leads:events"  # responses seen by another channel
    ASSETS_WRITE = "assets:write"
    REPORTS_READ = "reports:read"
    SALES_ANSWER = "sales:answer"  # accept or reject an MQL in the console
    REVIEWS_DECIDE = "reviews:decide"  # approve or reject a proof sent to you, in the console
    DELIVERY_READ = "delivery:read"  # send runs, forecast, suppressions, the local inbox


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MARKETER: frozenset({Permission.PROGRAMS_READ, Permission.LEADS_READ,
                              Permission.LEADS_WRITE, Permission.LEADS_STAGE,
                              Permission.LEADS_EVENTS, Permission.ASSETS_WRITE,
                              Permission.REPORTS_READ, Permission.DELIVERY_READ}),
    Role.SALES: frozenset({Permission.LEADS_READ, Permission.LEADS_STAGE,
                           Permission.LEADS_EVENTS, Permission.REPORTS_READ,
                           Permission.SALES_ANSWER}),
    Role.REVIEWER: frozenset({Permission.PROGRAMS_READ, Permission.LEADS_READ,
                              Permission.REPORTS_READ, Permission.REVIEWS_DECIDE,
                              Permission.DELIVERY_READ}),
    Role.READ_ONLY: frozenset({Permission.PROGRAMS_READ, Permission.LEADS_READ,
                               Permission.REPORTS_READ, Permission.DELIVERY_READ}),
}


def allowed(role: str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


@dataclass(frozen=True)
class Principal:
    """Who a verified key belongs to; plain values, safe to use after the session closes."""

    key_id: int
    name: str
    role: str
    prefix: str

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_role(value: str) -> str:
    role = (value or "").strip().lower().replace("-", "_")  # read-only is read_only
    if role not in ROLES:
        raise Invalid(f"unknown role {value!r} (expected one of {', '.join(ROLES)})", field="role")
    return role


def _clean_name(name: str | None, default: str) -> str:
    text = (name or "").strip() or default
    if len(text) > MAX_NAME_LENGTH:
        raise Invalid(f"name longer than {MAX_NAME_LENGTH} characters", field="name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise Invalid("name contains control characters", field="name")
    return text


def create_key(*, session: Session, role: str, name: str | None = None,
               now: datetime) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is never stored or shown again."""
    role = parse_role(role)
    prefix = secrets.token_hex(PREFIX_BYTES)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = secrets.token_hex(PREFIX_BYTES)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiKey(name=_clean_name(name, f"{role}-{prefix}"), role=role, prefix=prefix,
                 key_hash=hash_key(key), created_at=now)
    session.add(row)
    session.flush()
    return row, key


def list_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(*, session: Session, prefix: str, now: datetime) -> tuple[ApiKey, bool]:
    """Revoke the key with `prefix` (`nur_<prefix>` is accepted too).

    Idempotent: returns (key, False) when it was already revoked.
    """
    wanted = prefix.strip()
    if wanted.startswith(f"{KEY_SCHEME}_"):
        wanted = wanted[len(KEY_SCHEME) + 1:]
    wanted = wanted.split("_", 1)[0].lower()
    rows = list(session.scalars(select(ApiKey).where(ApiKey.prefix == wanted))) if wanted else []
    if not rows:
        raise NotFound(f"no API key with prefix {prefix[:40]!r}", field="prefix")
    if len(rows) > 1:  # create_key avoids it; refuse rather than guess
        raise Invalid(f"{len(rows)} keys share prefix {wanted!r}", field="prefix")
    row = rows[0]
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = now
    return row, True


def verify_key(*, session: Session, key: str | None, now: datetime) -> Principal:
    """The principal of a presented key; Unauthorized when missing, malformed, unknown or revoked.

    The prefix finds the candidate row; the secret is checked by comparing SHA-256 hashes with
    hmac.compare_digest, and a missing row is compared against a dummy hash, so the time taken
    does not depend on how much of the key was right.
    """
    if not key:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>` or `X-API-Key`")
    parts = key.split("_", 2)
    if (len(key) > MAX_KEY_LENGTH or len(parts) != 3 or parts[0] != KEY_SCHEME
            or len(parts[1]) != 2 * PREFIX_BYTES or not parts[2]):
        raise Unauthorized("malformed API key (expected nur_<prefix>_<secret>)")
    digest = hash_key(key)
    candidates = list(session.scalars(select(ApiKey).where(ApiKey.prefix == parts[1])))
    match = None
    for row in candidates or [None]:
        stored = row.key_hash if row is not None else _DUMMY_HASH
        if hmac.compare_digest(stored, digest) and row is not None:
            match = row
    if match is None:
        raise Unauthorized("invalid API key")
    if match.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    if match.last_used_at is None or now - match.last_used_at >= LAST_USED_RESOLUTION:
        match.last_used_at = now
    return Principal(key_id=match.id, name=match.name, role=match.role, prefix=match.prefix)
