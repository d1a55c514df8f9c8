"""What reaches the CRM outbox, each from the one place where it happens to a lead, whatever
the door: a lead created (one at a time or by the import), its stage changes, an unsubscribe
or suppression (do-not-contact), a landing-page form with its fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.crm.events import event_body
from engine.crm.fieldmap import INFO_KEY, MapInvalid, load_map
from engine.crm.models import CrmOutboxItem
from engine.crm.outbox import CRM_ACTOR
from engine.db import Database
from engine.flows.leads import upsert_lead
from engine.leads.importer import import_leads
from engine.leads.models import Lead
from engine.leads.service import write_lead
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
                                           {"id": lead_id, "email": "ada@globex.example",
                                            "object": "lead", "crm_id": None})
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


# -- field changes, through the field map in effect ------------------------------------------------

FIELD_MAP = """\
objects:
  lead:
    - {local: email, crm: Email}
    - {local: title, crm: Title, direction: push}
    - {local: company, crm: Company, direction: pull}
    - {local: custom.employees, crm: NumberOfEmployees}
"""


def instance_map(env, text: str = FIELD_MAP) -> Path:
    """The instance's field map (what NURTURE_CRM_MAP defaults to)."""
    instance = Path(env["NURTURE_INSTANCE"])
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "crm.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def changes(db) -> list[tuple[str, dict]]:
    return [(item.payload["actor"], item.payload["changes"])
            for item in items(db, kind="field_changed")]


def test_a_change_through_the_api_tells_the_crm_the_fields_its_map_pushes(env, db, client,
                                                                          keys):
    instance_map(env)
    headers = {"Authorization": f"Bearer {keys['admin']}"}

    def post(**fields):
        return client.post("/api/v1/leads", json={"email": "ada@globex.example", **fields},
                           headers=headers).status_code

    assert post(title="CTO", company="Globex") == 201  # new: lead_created, no change
    assert post(title="CIO", company="Initech", country="FR",
                custom={"employees": 200, "team": "ops"}) == 200
    assert post(company="Hooli", country="DE", custom={"team": "infra"}) == 200  # none pushed
    assert post(title="CIO") == 200  # nothing changes
    assert changes(db) == [("api:admin bot", {"title": {"from": "CTO", "to": "CIO"},
                                              "custom.employees": {"from": None, "to": 200}})]
    with db.session() as s:
        lead = s.scalar(select(Lead))
        assert (lead.company, lead.country, lead.custom) == ("Hooli", "DE", {
            "employees": 200, "team": "infra"})  # written all the same


def test_without_a_map_file_every_field_change_is_told_by_our_names(db, loaded_program):
    add_lead(db, title="CTO", department="IT")
    add_lead(db, title="CIO", department="Ops", country="FR")
    assert changes(db) == [("api:test", {"title": {"from": "CTO", "to": "CIO"},
                                         "country": {"from": None, "to": "FR"},
                                         "custom.department": {"from": "IT", "to": "Ops"}})]


def test_a_change_the_crm_made_is_not_told_back_to_it(db):
    with db.session() as s:
        write_lead(session=s, fields={"email": "ada@globex.example", "title": "CTO"},
                   now=MONDAY, actor="api:test")
        for actor in (CRM_ACTOR, "crm:salesforce"):
            written = write_lead(session=s, fields={"email": "ada@globex.example",
                                                    "title": f"CIO ({actor})"},
                                 now=MONDAY, actor=actor)
            assert written.changed and written.lead.title == f"CIO ({actor})"
        write_lead(session=s, fields={"email": "ada@globex.example", "title": "CEO"},
                   now=MONDAY, actor="crmbot")  # another actor, whose name starts alike
    assert changes(db) == [("crmbot", {"title": {"from": "CIO (crm:salesforce)",
                                                 "to": "CEO"}})]


def test_the_import_tells_the_crm_of_field_changes_as_the_api_does(env, db, loaded_program,
                                                                   tmp_path):
    path = instance_map(env)
    add_lead(db, "known@globex.example", title="CTO", company="Globex")
    add_lead(db, "same@initech.example", title="CFO")
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title,company,employees,team,stage\n"
                     "known@globex.example,CIO,Initech,200,ops,engaged\n"
                     "same@initech.example,CFO,Initech,,,\n"  # a pulled field only
                     "new@hooli.example,CEO,Hooli,10,,\n", encoding="utf-8")
    instance = Database(db.url, info={INFO_KEY: path})  # as open_database makes it
    try:
        summary = import_leads(db=instance, path=leads, program="acme-nurture", now=MONDAY)
    finally:
        instance.dispose()
    assert (summary.created, summary.updated) == (1, 2)
    assert changes(db) == [("import", {"title": {"from": "CTO", "to": "CIO"},
                                       "custom.employees": {"from": None, "to": "200"}})]
    [item] = items(db, kind="field_changed")
    assert item.payload["email"] == "known@globex.example"
    # in the order it happened to the lead: its fields, then its stage
    assert [i.kind for i in items(db, lead_id=item.lead_id)] == [
        "lead_created", "field_changed", "stage_change"]
    assert event_body(item, load_map(path))["payload"]["changes"] == {
        "Title": {"from": "CTO", "to": "CIO", "local": "title"},
        "NumberOfEmployees": {"from": None, "to": "200", "local": "custom.employees"}}
    with db.session() as s:  # the pulled and unmapped fields were written, only not told
        known = s.scalar(select(Lead).where(Lead.email == "known@globex.example"))
        assert (known.company, known.custom) == ("Initech", {"employees": "200", "team": "ops"})


def test_an_invalid_map_in_effect_stops_the_import_before_it_writes(env, db, loaded_program,
                                                                    tmp_path):
    path = instance_map(env, "objects:\n  lead:\n    - {local: title, crm: Title, "
                             "direction: sideways}\n")
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title\nnew@hooli.example,CEO\n", encoding="utf-8")
    instance = Database(db.url, info={INFO_KEY: path})
    try:
        with pytest.raises(MapInvalid, match=r"crm\.yaml:3: objects\.lead title: unknown "
                                             "direction 'sideways'"):
            import_leads(db=instance, path=leads, program="acme-nurture", now=MONDAY)
    finally:
        instance.dispose()
    with db.session() as s:
        assert s.scalar(select(Lead)) is None


def test_a_form_traces_each_posted_field_to_where_it_lands_in_the_crm(env, db, loaded_program):
    path = instance_map(env, FIELD_MAP + "    - {local: first_name, crm: FirstName}\n"
                                         "    - {local: consent, crm: Email_Consent__c}\n")
    app = create_app()
    client = app.test_client()
    try:
        page = client.get(DEMO)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        fields = {"email": "grace@initech.example", "first_name": "Grace",
                  "company": "Initech", "job_title": "CIO", "team_size": "12",
                  "news": "yes", "message": "a demo please"}
        assert client.post(DEMO, data={"csrf_token": token, **fields}).status_code == 303
    finally:
        app.extensions["nurture.db"].dispose()
    [form] = items(db, kind="form_submitted")
    payload = event_body(form, load_map(path))["payload"]
    assert payload["lands"] == {"email": "Email", "first_name": "FirstName", "company": None,
                                "job_title": "Title", "team_size": None, "news":
                                "Email_Consent__c", "message": None}  # company: pulled only
    assert payload["crm"] == {"Email": "grace@initech.example", "FirstName": "Grace",
                              "Title": "CIO", "Email_Consent__c": True}
    assert payload["fields"]["message"] == "a demo please"  # as posted, as before
