"""One error handler: errors under /api/ leave as JSON problem details (type, title, detail,
field); anywhere else (public pages) as a plain HTML page, never a stack trace."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, jsonify, make_response, render_template, request
from markupsafe import escape
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from engine.crm.fieldmap import MapInvalid
from engine.errors import NurtureError

# A 422 lists every invalid field; past this many (a megabyte of bad keys would make a reply
# many times its size) the list is cut and `error_count` still says how many there were.
MAX_LISTED_ERRORS = 1000


def problem(status: int, title: str, detail: str, field: str | None = None, **extra):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


class InvalidRequest(Exception):
    """pydantic's errors for one part of a request: `where` is "body", "query" or "path"."""

    def __init__(self, error: ValidationError, where: str):
        super().__init__(str(error))
        self.error, self.where = error, where


def _location(loc: tuple) -> str | None:
    return ".".join(str(part) for part in loc) or None


def json_type(value: Any) -> str:
    """The JSON type of a value, named as JSON Schema names it (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "file" if hasattr(value, "filename") else type(value).__name__


def field_error(field: str | None, detail: str, where: str, code: str, value_type: str) -> dict:
    """One invalid field: `field` and `detail` as 422s always had; `in` (body, query, path),
    `code` (what is wrong, machine-readable) and `value_type` (the JSON type sent, or
    "missing")."""
    return {"field": field, "detail": detail, "in": where, "code": code,
            "value_type": value_type}


def validation_errors(exc: ValidationError, where: str) -> list[dict]:
    errors = []
    for e in exc.errors(include_url=False, include_context=False):
        missing = e["type"] == "missing"
        errors.append(field_error(_location(e["loc"]), e["msg"], where, e["type"],
                                  "missing" if missing else json_type(e.get("input"))))
    return errors


def invalid_problem(errors: list[dict], title: str = "Invalid input",
                    detail: str | None = None, **extra):
    """422 naming the first field at fault at the top (field, detail: what clients read) and
    listing every invalid field in `errors` (never the offending input)."""
    first = errors[0] if errors else {"field": None, "detail": "invalid input"}
    if detail is None:
        detail = f"{first['field']}: {first['detail']}" if first["field"] else first["detail"]
    return problem(422, title, detail, first["field"], errors=errors[:MAX_LISTED_ERRORS],
                   error_count=len(errors), **extra)


def validation_problem(exc: ValidationError, where: str = "body"):
    return invalid_problem(validation_errors(exc, where))


_MISSING = object()


def _sent_value(field: str | None) -> tuple[str, Any]:
    """Where a field named by a domain error came from, and its value (or _MISSING): the JSON
    body json_body() kept, the query string, or the form."""
    body = g.get("json_body", _MISSING)
    if field is None:
        return ("body", body) if body is not _MISSING else ("query", _MISSING)
    if body is not _MISSING:
        value: Any = body
        for part in field.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = _MISSING
                break
        if value is not _MISSING or field not in request.args:
            return "body", value
    if field in request.args:
        return "query", request.args[field]
    if request.mimetype == "multipart/form-data":
        return "body", request.form.get(field, request.files.get(field, _MISSING))
    return ("body" if request.content_length else "query"), _MISSING


def domain_invalid_problem(exc: NurtureError):
    field = exc.field or exc.location
    where, value = _sent_value(exc.field)
    error = field_error(field, exc.detail, where, "invalid",
                        "missing" if value is _MISSING else json_type(value))
    return invalid_problem([error], exc.title, exc.detail)  # the domain's sentence, as before


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
        if exc.status == 422:
            return domain_invalid_problem(exc)
        response = problem(exc.status, exc.title, exc.detail, exc.field or exc.location)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
        return response

    @app.errorhandler(MapInvalid)
    def map_invalid(exc: MapInvalid):
        app.logger.error("the CRM field map has errors:\n%s", exc)
        if _wants_html():
            return html_error(503, "Service unavailable", "Please try again later.")
        return problem(503, "Service unavailable", "the CRM field map has errors: run "
                       "`nurture crm map check` on it")

    @app.errorhandler(ValidationError)
    def invalid_input(exc: ValidationError):
        if _wants_html():
            return html_error(422, "Invalid input", "The request could not be completed.")
        return validation_problem(exc)

    @app.errorhandler(InvalidRequest)
    def invalid_request(exc: InvalidRequest):
        if _wants_html():
            return html_error(422, "Invalid input", "The request could not be completed.")
        return validation_problem(exc.error, exc.where)

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
