"""schemathesis over every route of the OpenAPI document: valid and malformed parameters and
bodies (both of schemathesis's modes: data the document allows, and data it forbids), sent
to the Flask app with an admin key and a seeded database (the sample program
loaded, a lead enrolled in it). No answer may be a server error, and every answer (status,
media type, body) must be one the document describes."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.auth.service import create_key
from engine.db import utcnow
from engine.flows.leads import upsert_lead
from engine.web.app import create_app

EXAMPLES = 25  # per operation: the whole run stays well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def seeded_app(env, db, cli, sample_program, monkeypatch):
    monkeypatch.setenv("NURTURE_WEBHOOK_SECRET", "fuzz-secret")  # unset, every call is a 503
    monkeypatch.setenv("NURTURE_CRM_INBOUND_SECRET", "fuzz-secret")
    assert cli("program", "load", sample_program).exit_code == 0
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@example.com", "company": "Acme"},
                    now=utcnow(), actor="test", program="acme-nurture")
        _, key = create_key(session=s, role="admin", name="fuzz", now=utcnow())
    app = create_app()
    app.config["FUZZ_KEY"] = key
    yield app
    app.extensions["nurture.db"].dispose()


def operations(app) -> list:
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    return [result.ok() for result in loaded.get_all_operations()]


# schemathesis's own pytest loader (schemathesis.pytest.from_fixture) sets a pytest internal
# that pytest 9.2 no longer has, so each operation's strategy is run here with hypothesis.
def test_every_route_answers_as_documented(seeded_app):
    headers = {"Authorization": f"Bearer {seeded_app.config['FUZZ_KEY']}"}
    found = operations(seeded_app)
    assert len(found) >= 20
    failures = []
    for operation, mode in itertools.product(found, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit,
                                                                   Phase.generate])
        def run(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (the docs page takes no input)
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:  # noqa: BLE001 - every operation's failure is listed
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                            f"{exc}"[:3000])
    assert not failures, "\n\n".join(failures)
