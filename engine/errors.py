"""Domain exceptions. Services raise these; the web layer and the CLI each map them once."""

from __future__ import annotations


class NurtureError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, location: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.location = location

    def __str__(self) -> str:
        where = self.location or self.field
        return f"{where}: {self.detail}" if where else self.detail


class Invalid(NurtureError):
    status = 422
    title = "Invalid input"


class NotFound(NurtureError):
    status = 404
    title = "Not found"


class Conflict(NurtureError):
    status = 409
    title = "Conflict"


class Forbidden(NurtureError):
    status = 403
    title = "Forbidden"


class Unauthorized(NurtureError):
    status = 401
    title = "Unauthorized"


class IllegalTransition(Conflict):
    title = "Illegal transition"
