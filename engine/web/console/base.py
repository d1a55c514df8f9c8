"""What every console page shares: the blueprint, the session cookie, the signed-in user and
the role check, the CSRF token, the security headers and rendering.

The session is Flask's signed cookie holding the user's id, their session generation and when
they signed in: HttpOnly, SameSite=Lax, Secure over https (or when NURTURE_BASE_URL is https),
and good for SESSION_LIFETIME from sign-in however active the user is. A password change or a
disabled account raises the user's generation, which ends every session signed in before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import Forbidden

from engine.auth.service import Permission, allowed
from engine.auth.users import SignedIn, current_user
from engine.db import Database
from engine.web.csrf import Csrf

console = Blueprint("console", __name__)
CSRF = Csrf(cookie="nurture_console_csrf", path="/", salt="console-csrf")
SESSION_COOKIE = "nurture_session"
SESSION_LIFETIME = timedelta(hours=12)
MAX_FIELD = 1000  # a form field longer than its own limit, or this, is refused (422)
ROLE_NAMES = {"admin": "Admin", "marketer": "Marketer", "reviewer": "Reviewer",
              "sales": "Sales", "read_only": "Read-only"}
# A page framing an email that its own route serves (a proof, a message in the local inbox)
FRAMING_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# The email's own HTML: inline styles and remote images as a mail client shows them, nothing
# that runs, submits or navigates; `sandbox` keeps it sandboxed when opened outside the frame.
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
             "font-src https: data:; form-action 'none'; base-uri 'none'; sandbox; "
             "frame-ancestors 'self'")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # leads' personal data stays out of shared caches
}


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or request.is_secure)


def framed_email(html: str) -> Response:
    """An email's HTML alone, for the sandboxed frame of a console page (a proof, an inbox
    message): under EMAIL_CSP, framed only by the console itself."""
    response = Response(html, mimetype="text/html")
    response.headers.update({"Content-Security-Policy": EMAIL_CSP,
                             "X-Frame-Options": "SAMEORIGIN"})
    return response


def init_console(app: Flask, *, base_url: str) -> None:
    app.session_interface = ConsoleSessionInterface()
    app.config.update(SESSION_COOKIE_NAME=SESSION_COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=base_url.startswith("https://"),
                      PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
    app.register_blueprint(console)


def db() -> Database:
    return current_app.extensions["nurture.db"]


def now() -> datetime:
    return current_app.extensions["nurture.clock"]()


def start_session(user: SignedIn, at: datetime) -> None:
    session.clear()
    session.permanent = True
    session.update(uid=user.user_id, gen=user.generation, at=at.timestamp())


def signed_in_user() -> SignedIn | None:
    """The user of this request's session cookie, or None (and the cookie cleared) when there
    is none, it has outlived SESSION_LIFETIME, or the user's generation moved on."""
    if "user" in g:
        return g.user
    user = None
    uid, gen, at = session.get("uid"), session.get("gen"), session.get("at")
    if isinstance(uid, int) and isinstance(gen, int) and isinstance(at, int | float):
        fresh = 0 <= now().timestamp() - at < SESSION_LIFETIME.total_seconds()
        if fresh:
            with db().session() as s:
                user = current_user(session=s, user_id=uid, generation=gen)
    if user is None and session:
        session.clear()
    g.user = user
    return user


def safe_next(target: str | None) -> str | None:
    """A path on this site to go back to after signing in; anything else is dropped."""
    if not target or len(target) > 500 or not target.startswith("/"):
        return None
    # browsers drop tabs and newlines in a URL and read a backslash as a slash, so "/\t/x"
    # and "/\\x" would lead off site as "//x" does
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in target) or "\\" in target:
        return None
    parts = urlsplit(target)
    if target.startswith("//") or parts.scheme or parts.netloc:
        return None
    return target


def page(permission: Permission = Permission.LEADS_READ) -> Callable:
    """A console view for a signed-in user whose role has `permission`: a visitor who is not
    signed in goes to the sign-in page (then back here), a role without it gets 403. A POST
    must carry the form's CSRF token (400 otherwise), checked before the role."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = signed_in_user()
            if user is None:
                back = request.full_path if request.method == "GET" else None
                return redirect(url_for("console.sign_in_form",
                                        next=safe_next(back and back.rstrip("?"))), 303)
            if request.method == "POST":
                CSRF.check()
            if not allowed(user.role, permission):
                raise Forbidden(f"Your role ({ROLE_NAMES.get(user.role, user.role)}) "
                                "may not do this.")
            return view(*args, **kwargs)

        wrapper.permission = permission
        return wrapper

    return decorator


def can(permission: str) -> bool:
    user = signed_in_user()
    return user is not None and allowed(user.role, Permission(permission))


def render(template: str, status: int = 200, **context: Any) -> Response:
    body = render_template(template, user=signed_in_user(), can=can,
                           role_name=ROLE_NAMES, csrf_token=CSRF.token(_nonce()), **context)
    return Response(body, status=status, mimetype="text/html")


def _nonce() -> str:
    if "console_nonce" not in g:
        g.console_nonce = CSRF.nonce()
    return g.console_nonce


def field(name: str, limit: int = MAX_FIELD) -> str:
    """A form field as text; Oversized (shown back as 422) past `limit` characters."""
    value = request.form.get(name, "")
    if len(value) > limit:
        raise Oversized(name, limit)
    return value


class Oversized(Exception):
    def __init__(self, name: str, limit: int):
        super().__init__(f"{name} is longer than {limit} characters")
        self.name, self.limit = name, limit


@console.after_request
def _finish(response: Response) -> Response:
    for name, value in _HEADERS.items():  # a view may set its own (the proof's email frame)
        response.headers.setdefault(name, value)
    if "console_nonce" in g:
        CSRF.with_cookie(response, g.console_nonce)
    return response


def error_page(status: int, title: str, detail: str) -> Response:
    return render("console/error.html", status=status, title=title, detail=detail)


@console.errorhandler(Forbidden)
def _forbidden(exc: Forbidden):
    return error_page(403, "Not allowed", exc.description or "Your role may not do this.")


@console.errorhandler(404)
def _not_found(exc):
    return error_page(404, "Not found", "There is nothing here: it may have been removed, or "
                      "the address is mistyped.")


@console.errorhandler(Oversized)
def _oversized(exc: Oversized):
    return error_page(422, "Too long", f"The field {exc.name} is longer than {exc.limit} "
                      "characters; nothing was changed.")
