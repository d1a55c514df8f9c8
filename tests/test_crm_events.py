"""What reaches the CRM outbox, each from the one place where it happens to a lead, whatever
the door: a lead created (one at a time or by the import), its stage changes, an unsubscribe
or suppression (do-not-contact), a landing-page form with its fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from engine.crm.events import event_body
from engine.crm.models import CrmOutboxItem
from engine.flows.leads import upsert_lead
from engine.leads.importer import import_leads
from engine.leads.models import Lead
from engine.sending.bounces import record_bounce
from engine.sending.suppression import suppress
from engine.tracking.unsubscribe import unsubscribe
from engine.web.app import create_app

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
DEMO = "/p/acme-nurture/demo"


def items(db, **where) -> list[CrmOutboxItem]:
    with db.session() as s:
        query = select(CrmOutboxItem).order_by(CrmOutboxItem.id)
        for name, value in where.items():
            query = query.where(getattr(CrmOutboxItem, name) == value)
        return list(s.scalars(query))


def add_lead(db, email: str = "ada@globex.example", **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=MONDAY,
                              actor="api:test", program="acme-nurture")
        return lead.id


def test_a_new_lead_tells_the_crm_its_fields_and_an_update_does_not(db, loaded_program):
    lead_id = add_lead(db, first_name="Ada", company="Globex", department="IT")
    add_lead(db, title="CTO")  # an update: no new lead_created item
    [item] = items(db, kind="lead_created")
    body = event_body(item)
    assert (body["type"], body["lead"]) == ("lead_created",
                                           {"id": lead_id, "email": "ada@globex.example"})
    assert body["payload"] == {"actor": "api:test", "custom": {"department": "IT"},
                               "fields": {"first_name": "Ada", "company": "Globex",
                                          "stage": "inquiry"}}


def test_the_import_tells_the_crm_of_each_new_lead_as_the_api_does(db, loaded_program,
                                                                      tmp_path):
    add_lead(db, "known@globex.example")
    path = tmp_path / "leads.csv"
    path.write_text("email,first_name,company,department\n"
                    "grace@initech.example,Grace,Initech,IT\n"
                    "known@globex.example,Known,Globex,\n", encoding="utf-8")
    summary = import_leads(db=db, path=path, program="acme-nurture", now=MONDAY)
    assert (summary.created, summary.updated) == (1, 1)
    created = items(db, kind="lead_created")
    assert [(i.payload["email"], i.status, i.created_at) for i in created] == [
        ("known@globex.example", "pending", MONDAY), ("grace@initech.example", "pending", MONDAY)]
    assert event_body(created[1])["payload"] == {
        "actor": "import", "custom": {"department": "IT"},
        "fields": {"first_name": "Grace", "company": "Initech", "stage": "inquiry"}}
    assert len({i.event_id for i in created}) == 2


def test_an_unsubscribe_is_a_do_not_contact_the_crm_hears_once(db, loaded_program):
    lead_id = add_lead(db)
    for _ in range(2):
        with db.session() as s:
            unsubscribe(session=s, lead=s.get(Lead, lead_id), source="unsubscribe link",
                        now=MONDAY)
    [item] = items(db, kind="unsubscribed")
    assert event_body(item)["payload"] == {"reason": "unsubscribed",
                                           "source": "unsubscribe link", "do_not_contact": True}
    assert items(db, kind="suppressed") == []


@pytest.mark.parametrize("kind, reason", [("hard", "bounced"), ("complaint", "complained")])
def test_a_hard_bounce_or_complaint_is_a_suppression_the_crm_hears(db, loaded_program, kind,
                                                                   reason):
    add_lead(db)
    with db.session() as s:
        record_bounce(session=s, email="ada@globex.example", kind=kind, source="webhook",
                      now=MONDAY, reason="550 5.1.1 no such user")
    [item] = items(db, kind="suppressed")
    assert item.payload["reason"] == reason and item.payload["do_not_contact"] is True
    assert item.payload["source"] == "webhook: 550 5.1.1 no such user"


def test_a_soft_bounce_or_an_address_no_lead_has_tells_the_crm_nothing(db, loaded_program):
    add_lead(db)
    with db.session() as s:
        record_bounce(session=s, email="ada@globex.example", kind="soft", source="dsn",
                      now=MONDAY)
        suppress(session=s, email="stranger@elsewhere.example", reason="manual",
                 source="by hand", now=MONDAY)
    assert [i.kind for i in items(db)] == ["lead_created"]


def test_a_form_submission_reaches_the_crm_with_its_fields(env, db, loaded_program):
    app = create_app()
    client = app.test_client()
    try:
        visit = f"{DEMO}?utm_source=linkedin&utm_medium=social&utm_campaign=q1-demo"
        page = client.get(visit)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        fields = {"email": "grace@initech.example", "first_name": "Grace",
                  "company": "Initech", "job_title": "CIO", "message": "a demo please"}
        assert client.post(visit, data={"csrf_token": token, **fields}).status_code == 303
    finally:
        app.extensions["nurture.db"].dispose()
    kinds = [i.kind for i in items(db)]
    assert kinds[:1] == ["lead_created"] and "form_submitted" in kinds
    [form] = items(db, kind="form_submitted")
    payload = event_body(form)["payload"]
    assert (payload["program"], payload["page"]) == ("acme-nurture", "demo")
    assert payload["fields"]["message"] == "a demo please"
    assert payload["fields"]["first_name"] == "Grace"
    assert payload["source"] == {"source_channel": "social", "source_offer": "q1-demo",
                                 "source_partner": "linkedin"}
    # the demo request makes an MQL, after the form in the lead's order
    assert kinds.index("form_submitted") < max(i for i, k in enumerate(kinds)
                                               if k == "stage_change")
