"""One error handler: errors under /api/ leave as JSON problem details (type, title, detail,
field); anywhere else (public pages) as a plain HTML page, never a stack trace."""

from __future__ import annotations

from flask import Flask, jsonify, make_response, render_template, request
from markupsafe import escape
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


_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
_PAGE = ('<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>{title}</title>'
         '<style>body{{margin:0 auto;max-width:640px;padding:48px 24px;font-family:Helvetica,'
         'Arial,sans-serif;color:#1f2933}}</style></head>\n'
         '<body><h1>{title}</h1><p>{detail}</p></body>\n</html>\n')


def _wants_html() -> bool:
    return not (request.path == "/api" or request.path.startswith("/api/"))


def html_error(status: int, title: str, detail: str):
    """A plain page for visitors: the title and a safe sentence, nothing internal."""
    body = None
    if status == 404:
        try:
            body = render_template("pages/404.html")
        except Exception:  # noqa: BLE001 - the error page must not fail in turn
            body = None
    if body is None:
        body = _PAGE.format(title=escape(title), detail=escape(detail))
    response = make_response(body, status)
    response.mimetype = "text/html"
    response.headers.update(_HTML_HEADERS)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(NurtureError)
    def domain_error(exc: NurtureError):
        if _wants_html():
            # a domain message may name internals (programs, assets): visitors get the title
            return html_error(exc.status, exc.title, "The request could not be completed.")
        response = problem(exc.status, exc.title, exc.detail, exc.field or exc.location)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
        return response

    @app.errorhandler(ValidationError)
    def invalid_input(exc: ValidationError):
        if _wants_html():
            return html_error(422, "Invalid input", "The request could not be completed.")
        return validation_problem(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _wants_html():
            response = html_error(exc.code or 500, exc.name, exc.description or exc.name)
            if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                response.headers["Allow"] = ", ".join(exc.valid_methods)
            return response
        response = problem(exc.code or 500, exc.name, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        if _wants_html():
            return html_error(500, "Internal server error", "Something went wrong on our side.")
        return problem(500, "Internal server error", "an unexpected error occurred")
