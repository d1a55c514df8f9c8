"""The OpenAPI 3.1 document of /api/v1, generated from the app's own routes and models, and an
interactive page to try it (Swagger UI, vendored: no CDN).

A view says what it takes and answers with `@describe(...)`, naming the same pydantic models
that validate its input (`parse_json(Model)`, `parse_query(Model)` in engine/web/api.py) and
the models of engine/web/schemas.py for its answers. The document walks the URL map, so a
route cannot be missing from it; its security and its 401/403 come from the view's
`@require(Permission.X)`, its 400/413/415/422 from what it reads. tests/test_openapi.py fails
on a route under /api/v1 without a description; tests/test_openapi_fuzz.py checks every answer
against the document.

    GET /api/v1/openapi.json   the document (no key needed: it holds no data)
    GET /api/v1/docs           Swagger UI; its files under /api/v1/docs/assets/
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, send_from_directory
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from engine.auth.service import ROLES, allowed
from engine.errors import NotFound
from engine.web.schemas import InvalidProblem, Problem

PREFIX = "/api/v1"
SWAGGER_UI_VERSION = "5.35.0"  # swagger-ui-dist, vendored: see its README.md
SWAGGER_UI = Path(__file__).resolve().parent / "static" / "swagger-ui"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js")
PROBLEM_JSON = "application/problem+json"
REF = "#/components/schemas/{model}"

Content = type[BaseModel] | dict[str, type[BaseModel] | dict]  # a JSON model, or per media type


@dataclass(frozen=True)
class Operation:
    responses: dict[int, Content | None]
    body: type[BaseModel] | None = None  # a JSON body
    body_required: bool = True
    form: type[BaseModel] | None = None  # a multipart/form-data body
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # other problem statuses the view raises (404, 409, 502...)
    security: str | None = None  # a scheme other than the API key (the bounce webhook's)
    tags: tuple[str, ...] = ()
    descriptions: dict[int, str] = field(default_factory=dict)


def describe(*, responses: dict[int, Content | None], **options) -> Callable:
    """Attach an Operation to a view (put it under the route decorator, above @require)."""
    operation = Operation(responses=responses, **options)

    def decorator(view: Callable) -> Callable:
        view.openapi = operation
        return view

    return decorator


# -- the document -------------------------------------------------------------------------------

ERROR_TEXT = {
    400: "The body is not UTF-8 JSON", 401: "No API key, or a bad, revoked or expired one",
    403: "The key's role may not do this", 404: "Not found",
    409: "Conflict (e.g. a move the stage transition table forbids)",
    413: "The body is too large", 415: "The body is not of the media type required",
    422: "Invalid input: every invalid field is listed in `errors`",
    502: "The mail server refused some", 503: "Not configured",
}
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer",
                  "description": "An API key (`nurture apikey create --role ROLE`) as "
                                 "`Authorization: Bearer KEY`"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "The same key in `X-API-Key`"},
    "webhookSignature": {"type": "apiKey", "in": "header", "name": "X-Nurture-Signature",
                         "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 of "
                                        "\"<t>.<raw body>\">` keyed with NURTURE_WEBHOOK_SECRET"},
}
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def build_spec(app: Flask) -> dict:
    """The OpenAPI 3.1 document of every route of `app` under /api/v1."""
    routes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule, method.lower(), view, getattr(view, "openapi", None)))
    models = _models(routes)
    mapping, definitions = models_json_schema(models, ref_template=REF)
    schemas = definitions.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict:
        return mapping[(model, mode)]

    def own_schema(model: type[BaseModel], mode: str) -> dict:
        return schemas[ref(model, mode)["$ref"].rsplit("/", 1)[1]]

    paths: dict[str, dict] = {}
    for rule, method, view, operation in routes:
        path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)
        paths.setdefault(path, {})[method] = _operation(rule, method, view, operation, ref,
                                                        own_schema)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nurture API", "version": "1",
                 "description": "Email nurture programs, leads and their journeys, sales "
                                "handoff and reports. Errors are JSON problem details "
                                "(RFC 9457) naming the field at fault."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _models(routes) -> list[tuple[type[BaseModel], str]]:
    models = {(Problem, "serialization"), (InvalidProblem, "serialization")}
    for _, _, _, operation in routes:
        if operation is None:
            continue
        for model in (operation.body, operation.form, operation.query, operation.path):
            if model is not None:
                models.add((model, "validation"))
        for content in operation.responses.values():
            for model in _content_models(content):
                models.add((model, "serialization"))
    return sorted(models, key=lambda pair: (pair[0].__name__, pair[1]))


def _content_models(content: Content | None) -> list[type[BaseModel]]:
    if content is None:
        return []
    if isinstance(content, dict):
        return [value for value in content.values() if isinstance(value, type)]
    return [content]


def _media(content: Content, ref: Callable) -> dict:
    if not isinstance(content, dict):
        content = {"application/json": content}
    return {media: {"schema": ref(value, "serialization") if isinstance(value, type) else value}
            for media, value in content.items()}


def _operation(rule, method: str, view: Callable, operation: Operation | None, ref: Callable,
               own_schema: Callable) -> dict:
    doc = (view.__doc__ or "").strip()
    summary, _, description = doc.partition("\n\n") if doc else (view.__name__, "", "")
    result: dict[str, Any] = {"operationId": rule.endpoint.replace(".", "_") + f"_{method}",
                              "summary": " ".join(summary.split())}
    if operation is None:  # tests/test_openapi.py fails on this
        result["description"] = "Not described yet."
        result["responses"] = {"default": {"description": "undocumented"}}
        return result
    if description:
        result["description"] = " ".join(description.split())
    if operation.tags:
        result["tags"] = list(operation.tags)
    parameters = []
    for where, model in (("path", operation.path), ("query", operation.query)):
        if model is None:
            continue
        schema = own_schema(model, "validation")
        for name, prop in schema.get("properties", {}).items():
            parameter = {"name": name, "in": where,
                         "required": where == "path" or name in schema.get("required", ()),
                         "schema": prop}
            if "description" in prop:
                parameter["description"] = prop["description"]
            parameters.append(parameter)
    if parameters:
        result["parameters"] = parameters
    statuses: set[int] = set(operation.errors)
    if operation.body is not None:
        result["requestBody"] = {"required": operation.body_required, "content": {
            "application/json": {"schema": ref(operation.body, "validation")}}}
        statuses |= {400, 413, 415, 422}
    if operation.form is not None:
        result["requestBody"] = {"required": True, "content": {
            "multipart/form-data": {"schema": ref(operation.form, "validation")}}}
        statuses |= {413, 415, 422}
    if operation.query is not None:
        statuses.add(422)
    if operation.path is not None:
        statuses.add(404)
    permission = getattr(view, "permission", None)
    if permission is not None:
        roles = [role for role in ROLES if allowed(role, permission)]
        result["security"] = [{"bearerKey": []}, {"apiKeyHeader": []}]
        result["description"] = (result.get("description", "") + f"\n\nRoles: {', '.join(roles)} "
                                 f"(permission `{permission}`).").strip()
        statuses |= {401, 403}
    elif operation.security:
        result["security"] = [{operation.security: []}]
        statuses.add(401)
    else:
        result["security"] = []
    responses: dict[str, dict] = {}
    for status, content in sorted(operation.responses.items()):
        answer: dict[str, Any] = {"description": operation.descriptions.get(status, "OK")}
        if content is not None:
            answer["content"] = _media(content, ref)
        responses[str(status)] = answer
    for status in sorted(statuses - set(operation.responses)):
        model = InvalidProblem if status == 422 else Problem
        responses[str(status)] = {"description": ERROR_TEXT.get(status, "Error"),
                                  "content": {PROBLEM_JSON: {
                                      "schema": ref(model, "serialization")}}}
    result["responses"] = responses
    return result


# -- the views ----------------------------------------------------------------------------------

docs = Blueprint("docs", __name__)

# Swagger UI's own files only: no inline script (the page's set-up is docs.js), no CDN, no
# remote font; its stylesheet holds data: images; "Try it out" calls this origin.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class SpecDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


class DocsFile(BaseModel):
    file: str


@docs.get("/openapi.json")
@describe(responses={200: SpecDocument}, tags=("docs",))
def openapi_json():
    """This document."""
    spec = current_app.extensions.get("nurture.openapi")
    if spec is None:  # the URL map is fixed once the app serves: build the document once
        spec = current_app.extensions["nurture.openapi"] = build_spec(current_app)
    return spec


@docs.get("/docs")
@describe(responses={200: {"text/html": {"type": "string"}}}, tags=("docs",))
def docs_page():
    """The interactive API page (Swagger UI)."""
    response = Response(render_template("api/docs.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@docs.get("/docs/assets/<file>")
@describe(path=DocsFile, responses={200: {"text/javascript": {"type": "string"},
                                          "text/css": {"type": "string"}}}, tags=("docs",))
def docs_asset(file: str):
    """A file of the API page."""
    if file not in SWAGGER_FILES:
        raise NotFound(f"no file {file[:100]!r}", field="file")
    response = send_from_directory(SWAGGER_UI, file, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
