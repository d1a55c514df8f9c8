"""One error handler: every error leaves as JSON problem details (type, title, detail, field)."""

from __future__ import annotations

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from engine.errors import NurtureError

MAX_LISTED_ERRORS = 20


def problem(status: int, title: str, detail: str, field: str | None = None, **extra):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def _location(loc: tuple) -> str | None:
    return ".".join(str(part) for part in loc) or None


def validation_problem(exc: ValidationError):
    """422 naming the first field at fault; every error listed (never the offending input)."""
    errors = [{"field": _location(e["loc"]), "detail": e["msg"]}
              for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    first = errors[0] if errors else {"field": None, "detail": "invalid input"}
    detail = f"{first['field']}: {first['detail']}" if first["field"] else first["detail"]
    return problem(422, "Invalid input", detail, first["field"], errors=errors[:MAX_LISTED_ERRORS])


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(NurtureError)
    def domain_error(exc: NurtureError):
        response = problem(exc.status, exc.title, exc.detail, exc.field or exc.location)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
        return response

    @app.errorhandler(ValidationError)
    def invalid_input(exc: ValidationError):
        return validation_problem(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = problem(exc.code or 500, exc.name, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return problem(500, "Internal server error", "an unexpected error occurred")
