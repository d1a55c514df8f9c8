"""Sign in and sign out. Failed sign-ins are stored and throttled (engine/auth/users.py)."""

from __future__ import annotations

from flask import redirect, request, session, url_for

from engine.auth.users import MAX_PASSWORD, Throttled, any_user, sign_in
from engine.web.console.base import (
    CSRF,
    console,
    db,
    field,
    now,
    render,
    safe_next,
    signed_in_user,
    start_session,
)

HOME = "console.leads"


@console.get("/")
def home():
    if signed_in_user() is None:
        return redirect(url_for("console.sign_in_form"), 303)
    return redirect(url_for(HOME), 303)


def _form(status: int = 200, **context):
    with db().session() as s:
        first_run = not any_user(session=s)
    return render("console/sign_in.html", status=status, first_run=first_run,
                  next=safe_next(request.values.get("next")), **context)


@console.get("/sign-in")
def sign_in_form():
    if signed_in_user() is not None:
        return redirect(safe_next(request.args.get("next")) or url_for(HOME), 303)
    return _form()


@console.post("/sign-in")
def sign_in_post():
    CSRF.check()
    email, password = field("email", 320), field("password", MAX_PASSWORD)
    at = now()
    try:
        with db().session() as s:
            user = sign_in(session=s, email=email, password=password,
                           ip=request.remote_addr or "unknown", now=at)
    except Throttled as exc:
        wait = max(1, int((exc.retry_at - at).total_seconds() // 60) + 1)
        response = _form(429, email=email, error=f"Too many failed sign-ins. Try again after "
                         f"{exc.retry_at:%H:%M} UTC (in about {wait} minutes).")
        response.headers["Retry-After"] = str(max(1, int((exc.retry_at - at).total_seconds())))
        return response
    if user is None:
        return _form(422, email=email, error="Wrong email or password.")
    start_session(user, at)
    return redirect(safe_next(request.form.get("next")) or url_for(HOME), 303)


@console.post("/sign-out")
def sign_out():
    CSRF.check()
    session.clear()
    return redirect(url_for("console.sign_in_form", signed_out=1), 303)
