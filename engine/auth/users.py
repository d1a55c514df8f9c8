"""Console users: create, change password, list, disable, and sign in with throttling.

Passwords are hashed with Argon2id (argon2-cffi's PasswordHasher, its default parameters); a
hash made with weaker parameters is upgraded at the next sign-in. Signing in an unknown or
disabled email still verifies a password against a dummy hash, so the time taken does not tell
which emails have accounts, and all three failures read the same.

Throttling: failed sign-ins are stored (SignInAttempt), so that every web worker counts the
same ones. After MAX_FAILURES_PER_EMAIL failures for an email, or MAX_FAILURES_PER_IP from one
address, within THROTTLE_WINDOW, sign-in is refused (Throttled, with when to retry) before the
password is even checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.auth.models import SignInAttempt, User
from engine.auth.service import parse_role
from engine.errors import Conflict, Invalid, NotFound, NurtureError

MAX_EMAIL = 190  # actor columns are 200 characters and hold "user:<email>"
MAX_NAME = 200
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # hashing is slow by design: a megabyte password would be a cheap DoS
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_IP = 20
KEEP_ATTEMPTS = timedelta(days=1)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The passwords every guesser tries first; a long one is still refused if it is one of these
# or only repeats a character or counts up a keyboard row.
_WEAK = frozenset({
    "password1234", "password12345", "password123456", "passwordpassword", "123456789012",
    "1234567890123", "12345678901234", "qwertyuiopas", "qwertyuiop123", "qwerty123456",
    "iloveyou1234", "letmein12345", "welcome12345", "changeme1234", "administrator",
    "adminadmin12", "abcdefghijkl", "abc123abc123", "111111111111", "000000000000",
    "nurturenurture", "correcthorsebatterystaple",
})

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("a password nobody has, for emails without an account")


class Throttled(NurtureError):
    status = 429
    title = "Too many attempts"

    def __init__(self, detail: str, *, retry_at: datetime):
        super().__init__(detail)
        self.retry_at = retry_at


@dataclass(frozen=True)
class SignedIn:
    """Who signed in: plain values, safe after the session closes; `generation` goes in the
    session cookie and must still match the user's for the session to be valid."""

    user_id: int
    email: str
    name: str | None
    role: str
    generation: int


def normalise_email(value: str | None) -> str:
    email = (value or "").strip().lower()
    if not email:
        raise Invalid("email is required", field="email")
    if len(email) > MAX_EMAIL:
        raise Invalid(f"email is longer than {MAX_EMAIL} characters", field="email")
    if not _EMAIL.match(email) or any(ord(ch) < 32 or ord(ch) == 127 for ch in email):
        raise Invalid(f"{value!r} is not an email address", field="email")
    return email


def _clean_name(value: str | None) -> str | None:
    name = (value or "").strip()
    if len(name) > MAX_NAME:
        raise Invalid(f"name is longer than {MAX_NAME} characters", field="name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise Invalid("name contains control characters", field="name")
    return name or None


def check_password(password: str, *, email: str, name: str | None = None) -> None:
    """Invalid(field="password") unless `password` is long enough and not a known-weak one
    (a common password, the email, its local part or the person's name, a repeated
    character)."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password must be at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"password is longer than {MAX_PASSWORD} characters", field="password")
    folded = password.strip().lower()
    local = email.split("@", 1)[0]
    known = {email, local, (name or "").strip().lower()}
    squeezed = re.sub(r"[\s._-]", "", folded)
    if (folded in _WEAK or squeezed in _WEAK or folded in known or squeezed in known
            or len(set(folded)) <= 2 or (len(local) >= 4 and folded.startswith(local)
                                         and len(folded) - len(local) < 6)):
        raise Invalid("password is too easy to guess (a common password, your email or name,"
                      " or a repeated character): choose another", field="password")


def create_user(*, session: Session, email: str, role: str, password: str,
                name: str | None = None, now: datetime) -> User:
    email = normalise_email(email)
    role = parse_role(role)
    name = _clean_name(name)
    check_password(password, email=email, name=name)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user {email} already exists", field="email")
    user = User(email=email, name=name, role=role, password_hash=_hasher.hash(password),
                session_generation=1, created_at=now)
    session.add(user)
    session.flush()
    return user


def get_user(*, session: Session, email: str) -> User:
    wanted = (email or "").strip().lower()
    user = session.scalar(select(User).where(User.email == wanted)) if wanted else None
    if user is None:
        raise NotFound(f"no user {email[:MAX_EMAIL]!r}", field="email")
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def any_user(*, session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def change_password(*, session: Session, email: str, password: str, now: datetime) -> User:
    """A new password; every session signed in with the old one ends."""
    user = get_user(session=session, email=email)
    check_password(password, email=user.email, name=user.name)
    user.password_hash = _hasher.hash(password)
    user.session_generation += 1
    return user


def disable_user(*, session: Session, email: str, now: datetime) -> tuple[User, bool]:
    """Disable the account and end its sessions; (user, False) when it already was."""
    user = get_user(session=session, email=email)
    if user.disabled_at is not None:
        return user, False
    user.disabled_at = now
    user.session_generation += 1
    return user, True


def sign_in(*, session: Session, email: str, password: str, ip: str,
            now: datetime) -> SignedIn | None:
    """The user whose email and password these are, or None (an unknown email, a wrong
    password, a disabled account alike), the failure recorded: the caller commits it, so it
    returns rather than raises. Throttled when too many failed lately."""
    key = (email or "").strip().lower()[:320]
    ip = (ip or "unknown")[:64]
    _check_throttle(session, key, ip, now)
    user = session.scalar(select(User).where(User.email == key)) if key else None
    ok = _verify(user.password_hash if user else _DUMMY_HASH, password or "")
    if not ok or user is None or user.disabled_at is not None:
        session.execute(delete(SignInAttempt).where(SignInAttempt.at < now - KEEP_ATTEMPTS))
        session.add(SignInAttempt(at=now, email=key, ip=ip))
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_sign_in_at = now
    return SignedIn(user_id=user.id, email=user.email, name=user.name, role=user.role,
                    generation=user.session_generation)


def _verify(stored: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        password = password[:MAX_PASSWORD]  # still hashed, so as slow as any other attempt
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_throttle(session: Session, email: str, ip: str, now: datetime) -> None:
    since = now - THROTTLE_WINDOW
    for column, value, limit in ((SignInAttempt.email, email, MAX_FAILURES_PER_EMAIL),
                                 (SignInAttempt.ip, ip, MAX_FAILURES_PER_IP)):
        # the `limit` latest failures; once the oldest of them leaves the window, one more
        # attempt is allowed
        times = list(session.scalars(
            select(SignInAttempt.at).where(column == value, SignInAttempt.at > since)
            .order_by(SignInAttempt.at.desc()).limit(limit)))
        if len(times) >= limit:
            retry_at = times[-1] + THROTTLE_WINDOW
            raise Throttled(f"too many failed sign-ins; try again after "
                            f"{retry_at:%H:%M} UTC", retry_at=retry_at)


def current_user(*, session: Session, user_id: int, generation: int) -> SignedIn | None:
    """The signed-in user of a session cookie, or None when the account is gone, disabled, or
    its password changed since (the generation moved on)."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None or user.session_generation != generation:
        return None
    return SignedIn(user_id=user.id, email=user.email, name=user.name, role=user.role,
                    generation=user.session_generation)
