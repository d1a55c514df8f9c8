"""Role checks for the API: `@require(Permission.X)` on a view."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import current_app, g, request

from engine.auth.service import Permission, Principal, allowed, verify_key
from engine.db import utcnow
from engine.errors import Forbidden, Unauthorized


def presented_key() -> str | None:
    """The key from `Authorization: Bearer <key>`, else from `X-API-Key`."""
    header = request.headers.get("Authorization", "").strip()
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("unsupported Authorization scheme: use `Bearer <key>`")
        return value.strip() or None
    return request.headers.get("X-API-Key", "").strip() or None


def current_principal() -> Principal:
    return g.principal


def require(permission: Permission) -> Callable:
    """Verify the request's API key (401 if missing or bad) and its role (403 if not allowed).

    The check runs in its own short transaction (it may record last_used_at), before the view
    reads the body, so an unauthenticated client learns nothing about input validation.
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = presented_key()
            with current_app.extensions["nurture.db"].session() as session:
                principal = verify_key(session=session, key=key, now=utcnow())
            if not allowed(principal.role, permission):
                raise Forbidden(f"role {principal.role} may not do this (needs {permission})")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.permission = permission  # lets a test list every route's permission
        return wrapper

    return decorator
