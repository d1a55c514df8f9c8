"""One error handler: every error leaves as JSON problem details (type, title, detail, field)."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from engine.errors import NurtureError


def problem(status: int, title: str, detail: str, field: str | None = None):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(NurtureError)
    def domain_error(exc: NurtureError):
        return problem(exc.status, exc.title, exc.detail, exc.field or exc.location)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return problem(500, "Internal server error", "an unexpected error occurred")
