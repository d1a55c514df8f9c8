"""The lead lifecycle through its real doors: a landing-page form (HTTP, CSRF) that captures
and routes, the API and the import filling in a field, stage changes from the CLI and the API,
and responses recorded from other channels. Each door goes through the one pipeline
(engine/flows/leads.py), so each must give the same result."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from responses import response
from sqlalchemy import func, select

from engine.crm.models import CrmOutboxItem
from engine.db import utcnow
from engine.flows.leads import change_stage, upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import ConsentRecord, Lead, LeadEvent, StageChange
from engine.pages.models import FormSubmission
from engine.pages.service import page_token
from engine.sales.models import SalesNotification
from engine.scoring.models import ScoreEvent
from engine.sending.models import OutboxMessage
from engine.sending.responses import record_out
from engine.web.app import create_app

DEMO = "/p/acme-nurture/demo"
CONSENT_TEXT = ("Send me Acme Cloud's product news and guides by email. You can unsubscribe "
                "at any time.")


@pytest.fixture
def app(env, loaded_program):
    app = create_app()
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def api(app, keys):
    """api(role, method, path, json=...): a request with a key of that role."""
    client = app.test_client()

    def call(role: str, method: str, path: str, **kwargs):
        return client.open(path, method=method,
                           headers={"Authorization": f"Bearer {keys[role]}"}, **kwargs)

    return call


def make_lead(db, email: str = "ada@globex.example", **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=utcnow(),
                              actor="test", program="acme-nurture")
        return lead.id


def csrf(client, url: str = DEMO, **kwargs) -> str:
    page = client.get(url, **kwargs)
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def post_form(client, url: str = DEMO, **fields):
    return client.post(url, data={"csrf_token": csrf(client, url), **fields})


def rows(db, model, **where) -> list:
    with db.session() as s:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(s.scalars(query.order_by(model.id)))


def lead_by_email(db, email: str) -> Lead | None:
    found = rows(db, Lead, email=email)
    return found[0] if found else None


def count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


# -- 1. a form submission scores, triggers and counts as a response ----------------------------

def test_a_form_is_put_on_the_email_of_its_program_sent_last_before_it(client, db):
    lead_id = make_lead(db)
    sent_at = utcnow() - timedelta(hours=1)
    with db.session() as s:
        enrollment = s.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id))
        first = OutboxMessage(enrollment_id=enrollment.id, lead_id=lead_id,
                              program_id=enrollment.program_id, program_version=1,
                              step="welcome_it", status="sent", attempts=1, due_at=sent_at,
                              sent_at=sent_at, message_id="<first@tests>")
        s.add(first)
        s.flush()
        record_out(s, first.id)  # as marking it sent does
        first_id = first.id
    token = page_token(secret_key="test-secret", lead_id=lead_id)
    assert post_form(client, f"{DEMO}?t={token}", email="ada@globex.example").status_code == 303
    assert post_form(client, email="bo@initech.example").status_code == 303  # no email before
    assert [f.outbox_id for f in rows(db, FormSubmission)] == [first_id, None]


def test_a_known_leads_demo_request_scores_and_goes_to_sales(client, db):
    lead_id = make_lead(db, first_name="Ada", company="Globex")
    token = page_token(secret_key="test-secret", lead_id=lead_id)
    answer = post_form(client, f"{DEMO}?t={token}", email="ada@globex.example",
                       message="a demo please")
    assert answer.status_code == 303
    lead = rows(db, Lead, id=lead_id)[0]
    assert lead.stage == "mql"
    [note] = rows(db, SalesNotification, lead_id=lead_id)
    assert note.kind == "trigger" and "form_submitted page demo" in note.reason
    awards = [(e.kind, e.points) for e in rows(db, ScoreEvent, lead_id=lead_id,
                                                    category="behaviour")]
    assert awards == [("form_submitted", 20)]
    [event] = rows(db, LeadEvent, lead_id=lead_id, kind="form_submitted")
    assert event.detail == {"detail": "demo"}


# -- 2. a capture form creates the lead ---------------------------------------------------------

def test_a_capture_form_creates_the_lead_with_its_fields_source_and_consent(client, db):
    visit = f"{DEMO}?utm_source=linkedin&utm_medium=social&utm_campaign=q1-demo"
    fields = {"email": "Grace@Initech.example", "first_name": "Grace", "last_name": "Hopper",
              "company": "Initech", "job_title": "Head of IT infrastructure", "team_size": "12",
              "message": "We run 400 VMs", "news": "yes"}
    assert client.post(visit, data={"csrf_token": csrf(client, visit), **fields}) \
        .status_code == 303
    lead = lead_by_email(db, "grace@initech.example")
    assert (lead.first_name, lead.last_name, lead.company, lead.title) == (
        "Grace", "Hopper", "Initech", "Head of IT infrastructure")
    assert lead.custom == {"team_size": "12"}  # the message stays in the submission only
    assert (lead.source_channel, lead.source_offer, lead.source_partner) == (
        "social", "q1-demo", "linkedin")
    assert lead.consent is True
    [consent] = rows(db, ConsentRecord, lead_id=lead.id)
    assert (consent.granted, consent.text, consent.ip, consent.source) == (
        True, CONSENT_TEXT, "127.0.0.1", "form acme-nurture/demo")
    [enrollment] = rows(db, Enrollment, lead_id=lead.id)
    assert enrollment.state["persona"] == "it_manager"  # matched on the title
    assert lead.stage == "mql" and lead.fit_score == 15  # the demo request goes to sales
    assert enrollment.track is None  # nothing to send an MQL: the sample's mql cells are empty
    [submission] = rows(db, FormSubmission)
    assert submission.lead_id == lead.id and submission.fields["message"] == "We run 400 VMs"

    again = client.post(visit, data={"csrf_token": csrf(client, visit), **fields})
    assert again.status_code == 303  # a repeat changes nothing
    assert (count(db, FormSubmission), count(db, ConsentRecord), count(db, SalesNotification),
            count(db, Lead)) == (1, 1, 1, 1)


def test_the_source_is_the_first_visit_and_a_site_without_tags_is_a_referral(app, db):
    browser = app.test_client()
    referred = csrf(browser, DEMO, headers={"Referer": "https://www.g2.com/products/acme"})
    browser.get(f"{DEMO}?utm_source=google&utm_medium=cpc")  # a later visit: not the source
    assert browser.post(DEMO, data={"csrf_token": referred, "email": "ken@hooli.example",
                                    "first_name": "Ken"}).status_code == 303
    lead = lead_by_email(db, "ken@hooli.example")
    assert (lead.source_channel, lead.source_partner) == ("referral", "www.g2.com")

    make_lead(db, "lin@hooli.example", source_channel="event", source_offer="summit")
    assert post_form(app.test_client(), f"{DEMO}?utm_medium=cpc&utm_campaign=brand",
                     email="lin@hooli.example").status_code == 303
    lead = lead_by_email(db, "lin@hooli.example")  # an existing lead keeps its first touch
    assert (lead.source_channel, lead.source_offer) == ("event", "summit")


def test_an_unticked_box_is_recorded_as_no_consent(client, db):
    assert post_form(client, email="bo@initech.example").status_code == 303
    lead = lead_by_email(db, "bo@initech.example")
    [consent] = rows(db, ConsentRecord, lead_id=lead.id)
    assert consent.granted is False and lead.consent is None


@pytest.mark.parametrize("fields, named", [
    ({"first_name": "x" * 300}, "first_name"),
    ({"job_title": "CTO\x1b[2J"}, "title"),
    ({"email": "not-an-email"}, "email"),
    ({"team_size": "1" * 1001}, "team_size"),
])
def test_a_hostile_form_stores_nothing_and_says_what_is_wrong(client, db, fields, named):
    answer = post_form(client, **{"email": "eve@initech.example", **fields})
    assert answer.status_code == 422
    assert named in answer.text or "email" in answer.text
    assert (count(db, Lead), count(db, FormSubmission), count(db, ConsentRecord),
            count(db, LeadEvent)) == (0, 0, 0, 0)


def test_hostile_visit_parameters_are_left_out_not_refused(client, db):
    url = f"{DEMO}?utm_source=%1b%5b2J&utm_medium={'m' * 5000}&utm_campaign=ok"
    assert client.post(url, data={"csrf_token": csrf(client, url),
                                  "email": "mo@initech.example"}).status_code == 303
    lead = lead_by_email(db, "mo@initech.example")
    assert (lead.source_channel, lead.source_offer, lead.source_partner) == (None, "ok", None)


# -- 3. one path for every field change ---------------------------------------------------------

def one_field_short(db, email: str) -> int:
    """A lead scoring 58 (CIO: 15; two clicks: 20; a pricing visit: 23) with no company: an
    engaged lead (the sample advances a lead that clicks)."""
    lead_id = make_lead(db, email, title="CIO")
    now = utcnow()
    with db.session() as s:
        lead = s.get(Lead, lead_id)
        for kind, detail in (("click", "welcome_it"), ("click", "guide_it"),
                             ("page_view", "pricing")):
            response(s, lead, kind, detail, now)
        assert lead.stage == "engaged"
    return lead_id


def test_filling_in_the_required_field_qualifies_the_lead_through_the_api(api, db):
    lead_id = one_field_short(db, "ada@globex.example")
    answer = api("marketer", "POST", "/api/v1/leads",
                 json={"email": "ada@globex.example", "company": "Globex"})
    assert answer.status_code == 200
    assert rows(db, Lead, id=lead_id)[0].stage == "mql"
    [note] = rows(db, SalesNotification, lead_id=lead_id)
    assert note.kind == "mql"


def test_filling_in_the_required_field_qualifies_the_lead_through_the_import(
        cli, db, tmp_path, loaded_program):
    lead_id = one_field_short(db, "ada@globex.example")
    csv = tmp_path / "update.csv"
    csv.write_text("email,company\nada@globex.example,Globex\n")
    result = cli("leads", "import", csv, "--program", "acme-nurture")
    assert result.exit_code == 0, result.output
    assert rows(db, Lead, id=lead_id)[0].stage == "mql"
    [note] = rows(db, SalesNotification, lead_id=lead_id)
    assert note.kind == "mql"


def test_a_new_lead_that_qualifies_on_its_fields_alone_goes_to_sales_at_import(
        cli, db, tmp_path, sample_program):
    program = sample_program / "program.yaml"
    program.write_text(program.read_text().replace("mql: {threshold: 55", "mql: {threshold: 25"))
    assert cli("program", "load", sample_program).exit_code == 0
    csv = tmp_path / "new.csv"
    csv.write_text("email,title,company,company_size\nbig@globex.example,CIO,Globex,5000\n"
                   "small@globex.example,Intern,Globex,5\n")
    assert cli("leads", "import", csv, "--program", "acme-nurture").exit_code == 0
    assert lead_by_email(db, "big@globex.example").stage == "mql"  # fit 25
    assert lead_by_email(db, "small@globex.example").stage == "inquiry"


# -- 4. buying signals of customers and open opportunities --------------------------------------

def walk_to(db, lead_id: int, *stages: str) -> None:
    with db.session() as s:
        lead = s.get(Lead, lead_id)
        for stage in stages:
            change_stage(session=s, lead=lead, stage=stage, reason="deal", actor="rita",
                         now=utcnow())
        lead.owner = "rita@acme.example"


@pytest.mark.parametrize("stage, kind, expansion", [
    ("customer", "expansion", True), ("opportunity", "trigger", False)])
def test_a_buying_signal_tells_the_owner_and_the_crm_and_keeps_the_stage(
        client, db, stage, kind, expansion):
    lead_id = make_lead(db, company="Globex")
    walk_to(db, lead_id, *["mql", "sal", "opportunity", "customer"][:
                           ["mql", "sal", "opportunity", "customer"].index(stage) + 1])
    assert post_form(client, email="ada@globex.example").status_code == 303
    assert rows(db, Lead, id=lead_id)[0].stage == stage
    [note] = rows(db, SalesNotification, lead_id=lead_id)
    assert (note.kind, note.owner) == (kind, "rita@acme.example")
    [signal] = rows(db, CrmOutboxItem, lead_id=lead_id, kind="buying_signal")
    assert (signal.payload["stage"], signal.payload["expansion"]) == (stage, expansion)


# -- 5. every stage change reaches the CRM ------------------------------------------------------

def test_every_stage_change_writes_a_crm_item_whatever_the_door(cli, api, db):
    lead_id = make_lead(db, company="Globex")
    assert cli("leads", "set-stage", "ada@globex.example", "engaged", "--reason",
               "talked at the booth", "--actor", "maria").exit_code == 0
    answer = api("sales", "POST", f"/api/v1/leads/{lead_id}/stage",
                 json={"stage": "disqualified", "reason": "student"})
    assert answer.status_code == 200
    items = rows(db, CrmOutboxItem, lead_id=lead_id, kind="stage_change")
    moves = [(i.kind, i.payload["from"], i.payload["to"], i.payload["reason"],
              i.payload["actor"]) for i in items]
    assert moves == [("stage_change", "inquiry", "engaged", "talked at the booth", "maria"),
                     ("stage_change", "engaged", "disqualified", "student", "api:sales bot")]
    changes = rows(db, StageChange, lead_id=lead_id)
    assert len(changes) == 3  # created, and the two changes: one CRM item each


# -- 8. live doors for responses from other channels --------------------------------------------

def test_content_consumed_elsewhere_is_recorded_scored_and_skipped_in_the_journey(api, db):
    lead_id = make_lead(db, title="CIO")
    answer = api("marketer", "POST", f"/api/v1/leads/{lead_id}/events",
                 json={"kind": "consumed", "detail": "guide_it",
                       "at": (utcnow() - timedelta(days=2)).isoformat()})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["awards"] == [{"kind": "consumed", "points": 10.0, "rule": "consumed: +10"}]
    [event] = rows(db, LeadEvent, lead_id=lead_id, kind="consumed")
    assert event.detail["detail"] == "guide_it" and "occurred_at" in event.detail
    [enrollment] = rows(db, Enrollment, lead_id=lead_id)
    assert "guide_it" in enrollment.state["received"]  # never sent now: it was read elsewhere


def test_a_talk_to_sales_request_hands_the_lead_to_sales_and_ends_its_nurture(
        cli, db, loaded_program):
    lead_id = make_lead(db, company="Globex")
    result = cli("leads", "event", "ada@globex.example", "talk_to_sales", "--detail",
                 "called the sales line")
    assert result.exit_code == 0, result.output
    assert "stage inquiry -> mql" in result.output
    [note] = rows(db, SalesNotification, lead_id=lead_id)
    assert note.kind == "talk_to_sales" and "called the sales line" in note.reason
    [enrollment] = rows(db, Enrollment, lead_id=lead_id)
    assert enrollment.status == "exited"


@pytest.mark.parametrize("body, field", [
    ({"kind": "teleported"}, "kind"),
    ({"kind": "enrolled"}, "kind"),
    ({"kind": "consumed"}, "detail"),
    ({"kind": "consumed", "detail": "no_such_email"}, "detail"),
    ({"kind": "page_viewed", "detail": "nowhere"}, "detail"),
    ({"kind": "clicked", "detail": "x" * 5000}, "detail"),
    ({"kind": "consumed", "detail": "guide\x1b]0;x\x07"}, "detail"),
    ({"kind": "opened", "at": "2026-01-01T10:00:00"}, "at"),
    ({"kind": "opened", "at": "2999-01-01T10:00:00Z"}, "at"),
    ({"kind": "opened", "at": "2001-01-01T10:00:00Z"}, "at"),
    ({"kind": "opened", "extra": 1}, "extra"),
])
def test_a_bad_event_is_refused_naming_its_field_and_changes_nothing(api, db, body, field):
    lead_id = make_lead(db)
    before = count(db, LeadEvent)
    answer = api("marketer", "POST", f"/api/v1/leads/{lead_id}/events", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert answer.get_json().get("field") == field, answer.get_json()
    assert count(db, LeadEvent) == before


def test_events_are_for_marketers_and_sales_not_reviewers(api, db):
    lead_id = make_lead(db)
    assert api("reviewer", "POST", f"/api/v1/leads/{lead_id}/events",
               json={"kind": "opened"}).status_code == 403
    assert api("sales", "POST", f"/api/v1/leads/{lead_id}/events",
               json={"kind": "opened"}).status_code == 201
    assert api("sales", "POST", "/api/v1/leads/99999/events",
               json={"kind": "opened"}).status_code == 404


# -- 9. advance rules, live ---------------------------------------------------------------------

def test_a_click_advances_the_lead_through_the_transition_table_saying_which_rule(api, db):
    lead_id = make_lead(db, title="CIO")
    answer = api("marketer", "POST", f"/api/v1/leads/{lead_id}/events",
                 json={"kind": "clicked", "detail": "welcome_it"})
    assert answer.status_code == 201
    [change] = rows(db, StageChange, lead_id=lead_id, to_stage="engaged")
    assert (change.from_stage, change.reason, change.actor) == (
        "inquiry", "advance inquiry -> engaged on click", "advance")
    [item] = rows(db, CrmOutboxItem, lead_id=lead_id, kind="stage_change")
    assert (item.payload["to"], item.payload["reason"]) == ("engaged", change.reason)
    [enrollment] = rows(db, Enrollment, lead_id=lead_id)
    assert enrollment.track == "it_manager/engaged"
    api("marketer", "POST", f"/api/v1/leads/{lead_id}/events", json={"kind": "opened"})
    assert len(rows(db, StageChange, lead_id=lead_id)) == 2  # an open advances nobody


def test_a_lead_quiet_for_90_days_is_recycled_by_the_idle_rule(cli, db, loaded_program):
    lead_id = make_lead(db, title="CIO")
    with db.session() as s:
        response(s, s.get(Lead, lead_id), "click", "welcome_it", utcnow())  # now engaged
    soon = (utcnow() + timedelta(days=89)).isoformat()
    assert "0 lead(s) moved" in cli("leads", "advance", "--at", soon, "--record").output
    later = (utcnow() + timedelta(days=91)).isoformat()
    preview = cli("leads", "advance", "--at", later)
    assert "ada@globex.example: advance engaged -> recycled after 90d without a response" \
        in preview.output and "a preview: nothing stored" in preview.output
    assert rows(db, Lead, id=lead_id)[0].stage == "engaged"
    assert "1 lead(s) moved" in cli("leads", "advance", "--at", later, "--record").output
    assert rows(db, Lead, id=lead_id)[0].stage == "recycled"
    assert "0 lead(s) moved" in cli("leads", "advance", "--at", later, "--record").output


def test_recording_an_event_works_in_a_fresh_process(cli, db, env, loaded_program):
    """As a user runs it: a new interpreter that imported only what the command needs."""
    import os
    import subprocess
    import sys

    make_lead(db, title="CIO")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "leads", "event",
                           "ada@globex.example", "consumed", "--detail", "guide_it"],
                          capture_output=True, text=True, env=os.environ, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "consumed guide_it recorded, +10 points" in done.stdout
