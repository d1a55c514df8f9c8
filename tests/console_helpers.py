"""Helpers for the console's tests: a settable clock, users, and a client that signs in and
posts forms with their CSRF token as a browser would."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from engine.auth.users import create_user
from engine.flows.leads import upsert_lead
from engine.leads.service import set_stage

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday morning
PASSWORD = "a long secret for tests"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """The app's clock: `clock.now` is what it reads; `clock.advance(minutes=5)` moves it."""

    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def add_user(db, email: str, role: str, password: str = PASSWORD, name: str | None = None):
    with db.session() as s:
        return create_user(session=s, email=email, role=role, password=password, name=name,
                           now=START).id


def add_lead(db, email: str, stage: str | None = None, **fields) -> int:
    """A lead written through the lead pipeline, moved to `stage` (e.g. mql) if given."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=START,
                              actor="test")
        s.flush()
        if stage:
            set_stage(session=s, lead=lead, stage=stage, reason="test setup", actor="test",
                      now=START)
        return lead.id


class Browser:
    """A Flask test client used like a browser: it keeps cookies, reads each form's CSRF token
    from the page it came from, and posts it back."""

    def __init__(self, client):
        self.client = client

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def token(self, path: str) -> str:
        page = self.client.get(path)
        found = _TOKEN.search(page.get_data(as_text=True))
        assert found, f"no CSRF token on {path} ({page.status_code})"
        return found.group(1)

    def post(self, path: str, data: dict | None = None, *, page: str = "/leads", **kwargs):
        """POST `data` with the token of the form on `page`."""
        return self.client.post(path, data={"csrf_token": self.token(page), **(data or {})},
                                **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD):
        return self.post("/sign-in", {"email": email, "password": password}, page="/sign-in")

    def sign_out(self):
        return self.post("/sign-out")
