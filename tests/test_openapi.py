"""The OpenAPI document and the API page, a lead found by its email, the persona filter on the
persona a lead follows, and 422s that list every invalid field."""

from __future__ import annotations

import re

import pytest

from engine.auth.service import ROLES, create_key
from engine.db import utcnow
from engine.flows.leads import upsert_lead
from engine.web.api import LeadIn, LeadQuery, StageIn
from engine.web.app import create_app
from engine.web.openapi import PREFIX


@pytest.fixture
def admin(client, db):
    with db.session() as s:
        _, key = create_key(session=s, role="admin", name="admin bot", now=utcnow())
    headers = {"Authorization": f"Bearer {key}"}

    class Caller:
        def get(self, path, **kwargs):
            return client.get(path, headers=headers, **kwargs)

        def post(self, path, **kwargs):
            return client.post(path, headers=headers, **kwargs)

    return Caller()


def add_lead(db, program: str | None = None, **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields=fields, now=utcnow(), actor="test",
                              program=program)
        return lead.id


def spec(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


# -- the document -------------------------------------------------------------------------------

def test_the_document_is_openapi_3_1_and_needs_no_key(client):
    document = spec(client)
    assert document["openapi"] == "3.1.0"
    assert {"bearerKey", "apiKeyHeader"} <= set(document["components"]["securitySchemes"])


def test_every_api_route_is_in_the_document_and_described(app, client):
    paths = spec(client)["paths"]
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = paths[path][method.lower()]
            assert "default" not in operation["responses"], f"{method} {path} is not described"
            assert "Not described yet." not in operation.get("description", "")


def test_bodies_and_query_parameters_come_from_the_validating_models(client):
    document = spec(client)
    schemas = document["components"]["schemas"]
    leads = document["paths"]["/api/v1/leads"]
    body = leads["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/LeadIn"}
    assert set(schemas["LeadIn"]["properties"]) == set(LeadIn.model_fields)
    assert [p["name"] for p in leads["get"]["parameters"]] == list(LeadQuery.model_fields)
    assert set(schemas["StageIn"]["required"]) == {"stage", "reason"} == set(StageIn.model_fields)
    lead_out = leads["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert lead_out == {"$ref": "#/components/schemas/LeadOut"}


def test_security_and_error_answers_follow_the_views_checks(client):
    paths = spec(client)["paths"]
    upsert = paths["/api/v1/leads"]["post"]
    assert upsert["security"] == [{"bearerKey": []}, {"apiKeyHeader": []}]
    assert "Roles: admin, marketer " in upsert["description"]
    assert {"400", "401", "403", "413", "415", "422"} <= set(upsert["responses"])
    invalid = upsert["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert invalid == {"$ref": "#/components/schemas/InvalidProblem"}
    stage = paths["/api/v1/leads/{lead_id}/stage"]["post"]
    assert {"404", "409"} <= set(stage["responses"])
    assert stage["parameters"][0] == {
        "name": "lead_id", "in": "path", "required": True, "description": stage[
            "parameters"][0]["description"],
        "schema": stage["parameters"][0]["schema"]}
    assert paths["/api/v1/webhooks/bounces"]["post"]["security"] == [{"webhookSignature": []}]
    assert paths["/api/v1/openapi.json"]["get"]["security"] == []
    everyone = paths["/api/v1/leads"]["get"]["description"]
    assert f"Roles: {', '.join(ROLES)} " in everyone


# -- the API page -------------------------------------------------------------------------------

def test_the_api_page_loads_nothing_from_elsewhere(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp
    assert not re.search(r"https?:|\*|'unsafe-", csp)
    html = page.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<script>" not in html  # no inline script: the CSP would block it
    for src in re.findall(r"(?:src|href)=\"(docs/assets/[^\"]+)\"", html):
        asset = client.get(f"/api/v1/{src}")
        assert asset.status_code == 200 and asset.get_data(), src
    setup = client.get("/api/v1/docs/assets/docs.js").get_data(as_text=True)
    assert 'url: "openapi.json"' in setup and "validatorUrl: null" in setup


def test_the_api_page_serves_only_its_own_files(client):
    for name in ("LICENSE", "README.md", "..%2Fopenapi.py", "nope.js"):
        response = client.get(f"/api/v1/docs/assets/{name}")
        assert response.status_code == 404, name


# -- lookup by email, persona filter ------------------------------------------------------------

def test_a_lead_is_found_by_its_email_as_the_engine_normalises_it(admin, db):
    ada = add_lead(db, email="ada@example.com")
    add_lead(db, email="ada@example.org")
    response = admin.get("/api/v1/leads", query_string={"email": "  Ada@Example.COM "})
    assert response.status_code == 200
    body = response.get_json()
    assert [lead["id"] for lead in body["items"]] == [ada] and body["total"] == 1
    none = admin.get("/api/v1/leads?email=bob@example.com").get_json()
    assert none["items"] == [] and none["total"] == 0


def test_a_malformed_email_lookup_is_a_422_naming_the_parameter(admin):
    body = admin.get("/api/v1/leads?email=not-an-address").get_json()
    assert body["status"] == 422 and body["field"] == "email"
    assert body["errors"] == [{"field": "email", "detail": body["detail"], "in": "query",
                               "code": "invalid", "value_type": "string"}]


def test_the_persona_filter_finds_leads_by_the_persona_they_follow(admin, db, cli,
                                                                   sample_program):
    assert cli("program", "load", sample_program).exit_code == 0
    it = add_lead(db, program="acme-nurture", email="ops@example.com", title="Head of DevOps")
    finance = add_lead(db, program="acme-nurture", email="cfo@example.com", title="CFO")
    own = add_lead(db, email="own@example.com", persona="it_manager")  # not enrolled
    found = admin.get("/api/v1/leads?persona=it_manager").get_json()
    assert [lead["id"] for lead in found["items"]] == [it, own] and found["total"] == 2
    assert [lead["persona"] for lead in found["items"]] == [None, "it_manager"]
    found = admin.get("/api/v1/leads?persona=finance").get_json()
    assert [lead["id"] for lead in found["items"]] == [finance]


def test_the_persona_filter_follows_a_lead_whose_persona_moved(admin, db, cli, sample_program):
    assert cli("program", "load", sample_program).exit_code == 0
    lead = add_lead(db, program="acme-nurture", email="ops@example.com", title="CFO")
    add_lead(db, email="ops@example.com", title="Head of DevOps")  # re-matched: it_manager
    assert [x["id"] for x in admin.get("/api/v1/leads?persona=it_manager").get_json()[
        "items"]] == [lead]
    assert admin.get("/api/v1/leads?persona=finance").get_json()["items"] == []


# -- 422s ---------------------------------------------------------------------------------------

def test_a_422_lists_every_invalid_body_field_with_where_what_and_type(admin):
    response = admin.post("/api/v1/leads", json={"first_name": 7, "company": None,
                                                 "title": ["x"], "custom": {"plan": {"a": 1}},
                                                 "consent": 3.5})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    body = response.get_json()
    errors = {e["field"]: e for e in body["errors"]}
    assert set(errors) == {"email", "first_name", "title", "custom.plan", "consent"}
    assert body["error_count"] == 5
    assert errors["email"] == {"field": "email", "detail": "Field required", "in": "body",
                               "code": "missing", "value_type": "missing"}
    assert errors["first_name"]["value_type"] == "integer"
    assert errors["first_name"]["code"] == "string_type"
    assert errors["title"]["value_type"] == "array"
    assert errors["custom.plan"]["value_type"] == "object"
    assert errors["consent"]["value_type"] == "number"
    # what clients read before: the first field at fault, and each error's field and detail
    assert body["field"] == body["errors"][0]["field"]
    assert body["detail"] == f"{body['field']}: {body['errors'][0]['detail']}"


def test_a_422_for_query_parameters_says_they_are_in_the_query(admin):
    body = admin.get("/api/v1/leads?limit=0&offset=x&colour=red").get_json()
    assert body["status"] == 422
    where = {e["field"]: (e["in"], e["code"], e["value_type"]) for e in body["errors"]}
    assert where == {"limit": ("query", "greater_than_equal", "string"),
                     "offset": ("query", "int_parsing", "string"),
                     "colour": ("query", "extra_forbidden", "string")}


def test_a_422_raised_by_the_engine_lists_its_field_too(admin, db):
    lead = add_lead(db, email="ada@example.com")
    body = admin.post(f"/api/v1/leads/{lead}/stage",
                      json={"stage": "no-such-stage", "reason": "x"}).get_json()
    assert body["status"] == 422 and body["field"] == "stage"
    assert body["errors"] == [{"field": "stage", "detail": body["detail"], "in": "body",
                               "code": "invalid", "value_type": "string"}]
    body = admin.post("/api/v1/leads", json=[1]).get_json()
    assert body["errors"][0]["field"] is None and body["errors"][0]["value_type"] == "array"


def test_a_422_from_the_bounce_webhook_lists_each_bad_event(client, monkeypatch):
    import json
    import time

    from engine.signatures import SIGNATURE_HEADER, sign_webhook

    monkeypatch.setenv("NURTURE_WEBHOOK_SECRET", "s3cret")
    app = create_app()
    try:
        body = json.dumps({"events": [{"email": "x", "type": "hard"},
                                      {"email": "a@example.com", "type": "nope"}]}).encode()
        now = int(time.time())
        response = app.test_client().post(
            "/api/v1/webhooks/bounces", data=body, content_type="application/json",
            headers={SIGNATURE_HEADER: sign_webhook("s3cret", body, now)})
        errors = response.get_json()["errors"]
        assert response.status_code == 422
        assert [(e["field"], e["in"]) for e in errors] == [("events.0.email", "body"),
                                                           ("events.1.type", "body")]
    finally:
        app.extensions["nurture.db"].dispose()
