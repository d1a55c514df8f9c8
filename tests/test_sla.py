"""Service levels on a simulated clock: an MQL unanswered for 14 days is escalated once and
resolved by sales' answer; an opportunity without update for 14 days is stalled and gets
marketing support (the sample's sla.stalled_track: each persona's engaged track)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from responses import response
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.leads.service import set_stage
from engine.programs.service import load_program
from engine.sales.models import SalesNotification, SlaBreach
from engine.sales.service import accept, reject
from engine.sales.sla import check_slas, sla_report
from engine.sending.models import OutboxMessage

MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # 11:00 in Paris, inside the send window
DAY = timedelta(days=1)
IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}  # it_manager persona, fit 15
ESCALATE_TO = "sales-manager@acme.example"  # the sample's sla.escalate_to


def load(db, directory: Path, now: datetime = MONDAY) -> None:
    with db.session() as s:
        load_program(session=s, directory=directory, now=now)


def mql(db, email: str, now: datetime = MONDAY) -> int:
    """A lead made an MQL by its score at `now` (two clicks and a pricing visit)."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **IT_DIRECTOR}, now=now,
                              actor="test", program="acme-nurture")
        for kind, detail in (("click", "welcome_it"), ("click", "guide_it"),
                             ("page_view", "pricing")):
            response(s, lead, kind, detail, now)
        assert lead.stage == "mql"
        return lead.id


def opportunity(db, email: str, now: datetime = MONDAY) -> int:
    """A lead taken through mql -> sal -> opportunity, the last at `now`."""
    lead_id = mql(db, email, now - 2 * DAY)
    with db.session() as s:
        lead = s.get(Lead, lead_id)
        accept(session=s, lead=lead, actor="sam@acme.example", now=now - DAY)
        set_stage(session=s, lead=lead, stage="opportunity", reason="deal opened",
                  actor="sam@acme.example", now=now)
    return lead_id


def check(db, now: datetime):
    with db.session() as s:
        result = check_slas(session=s, now=now)
        return [(b.lead_id, b.kind) for b in result.new], result.resolved


def breaches(db, lead_id: int | None = None) -> list[SlaBreach]:
    with db.session() as s:
        query = select(SlaBreach).order_by(SlaBreach.id)
        if lead_id is not None:
            query = query.where(SlaBreach.lead_id == lead_id)
        return list(s.scalars(query))


def notifications(db, lead_id: int, kind: str) -> list[SalesNotification]:
    with db.session() as s:
        return list(s.scalars(select(SalesNotification).where(
            SalesNotification.lead_id == lead_id, SalesNotification.kind == kind)
            .order_by(SalesNotification.id)))


def enrollment(db, lead_id: int) -> Enrollment:
    with db.session() as s:
        return s.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id))


def outbox_steps(db, lead_id: int) -> list[tuple[str, datetime]]:
    with db.session() as s:
        return [(r.step, r.due_at) for r in s.scalars(
            select(OutboxMessage).where(OutboxMessage.lead_id == lead_id)
            .order_by(OutboxMessage.id))]


# -- MQL response -------------------------------------------------------------------------

def test_an_mql_unanswered_for_14_days_is_escalated_once(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    assert check(db, MONDAY + 13 * DAY) == ([], 0)
    assert check(db, MONDAY + 14 * DAY - timedelta(seconds=1)) == ([], 0)
    assert breaches(db) == [] and notifications(db, lead_id, "escalation") == []
    at = MONDAY + 14 * DAY
    assert check(db, at) == ([(lead_id, "mql_unanswered")], 0)
    [breach] = breaches(db)
    assert (breach.since, breach.due_at, breach.detected_at) == (MONDAY, at, at)
    assert breach.owner is None and breach.resolved_at is None
    assert ESCALATE_TO in breach.action
    [escalation] = notifications(db, lead_id, "escalation")
    assert (escalation.owner, escalation.at) == (ESCALATE_TO, at)
    assert "14 days" in escalation.reason
    assert check(db, at) == ([], 0)
    assert check(db, at + 3 * DAY) == ([], 0)
    assert len(breaches(db)) == 1 and len(notifications(db, lead_id, "escalation")) == 1


def test_the_escalation_goes_to_the_owner_when_the_lead_has_one(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    with db.session() as s:  # rita took it, sent it back, and it qualified again
        lead = s.get(Lead, lead_id)
        accept(session=s, lead=lead, actor="rita@acme.example", now=MONDAY + DAY)
        set_stage(session=s, lead=lead, stage="recycled", reason="rejected by sales: later",
                  actor="rita@acme.example", now=MONDAY + 2 * DAY)
    with db.session() as s:
        lead = s.get(Lead, lead_id)
        for kind, detail in (("click", "product_update"), ("click", "benchmark_it"),
                             ("page_view", "pricing")):
            response(s, lead, kind, detail, MONDAY + 3 * DAY)
        assert lead.stage == "mql" and lead.owner == "rita@acme.example"
    assert check(db, MONDAY + 16 * DAY) == ([], 0)  # 13 days since it became an MQL again
    assert check(db, MONDAY + 17 * DAY) == ([(lead_id, "mql_unanswered")], 0)
    [breach] = breaches(db)
    assert (breach.owner, breach.since) == ("rita@acme.example", MONDAY + 3 * DAY)
    [escalation] = notifications(db, lead_id, "escalation")
    assert escalation.owner == "rita@acme.example"


def test_sales_answer_resolves_the_breach_at_the_next_check(db, sample_program):
    load(db, sample_program)
    accepted = mql(db, "ada@globex.example")
    rejected = mql(db, "bob@globex.example")
    check(db, MONDAY + 14 * DAY)
    answered = MONDAY + 15 * DAY
    with db.session() as s:
        accept(session=s, lead=s.get(Lead, accepted), actor="sam@acme.example", now=answered)
        reject(session=s, lead=s.get(Lead, rejected), reason="student", actor="sam@acme.example",
               now=answered)
    assert all(b.resolved_at is None for b in breaches(db))
    later = answered + timedelta(hours=1)
    assert check(db, later) == ([], 2)
    assert [b.resolved_at for b in breaches(db)] == [later, later]
    assert check(db, later + DAY) == ([], 0)
    with db.session() as s:
        assert sla_report(session=s) == {}
        report = sla_report(session=s, include_resolved=True)
        assert [b.lead_id for b in report["unassigned"]] == [accepted, rejected]


# -- stalled opportunities ------------------------------------------------------------------

def test_a_stalled_opportunity_gets_marketing_support(db, sample_program):
    load(db, sample_program)
    lead_id = opportunity(db, "ada@globex.example")
    assert enrollment(db, lead_id).status == "exited"
    before = outbox_steps(db, lead_id)
    assert "case_study_it" not in [step for step, _ in before]
    assert check(db, MONDAY + 13 * DAY) == ([], 0)
    at = MONDAY + 14 * DAY  # a Monday, 11:00 in Paris: inside the send window
    assert check(db, at) == ([(lead_id, "opportunity_stalled")], 0)
    [breach] = breaches(db)
    assert (breach.since, breach.due_at, breach.detected_at) == (MONDAY, at, at)
    assert breach.owner == "sam@acme.example" and "engaged" in breach.action
    row = enrollment(db, lead_id)
    assert (row.status, row.track) == ("active", "it_manager/engaged")
    assert outbox_steps(db, lead_id) == before + [("case_study_it", at)]
    with db.session() as s:
        assert s.get(Lead, lead_id).stage == "opportunity"  # still sales' deal
    assert check(db, at + DAY) == ([], 0)
    assert len(outbox_steps(db, lead_id)) == len(before) + 1


def test_a_field_update_restarts_the_stall_clock(db, sample_program):
    load(db, sample_program)
    lead_id = opportunity(db, "ada@globex.example")
    updated = MONDAY + 10 * DAY
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@globex.example", "country": "FR"},
                    now=updated, actor="crm")
    assert check(db, MONDAY + 14 * DAY) == ([], 0)
    assert check(db, updated + 14 * DAY - timedelta(minutes=1)) == ([], 0)
    assert enrollment(db, lead_id).status == "exited"
    assert check(db, updated + 14 * DAY) == ([(lead_id, "opportunity_stalled")], 0)
    [breach] = breaches(db)
    assert (breach.since, breach.due_at) == (updated, updated + 14 * DAY)


def test_sla_report_groups_open_breaches_by_owner(db, sample_program):
    load(db, sample_program)
    unanswered = mql(db, "ada@globex.example")
    stalled = opportunity(db, "bob@globex.example")
    later = mql(db, "cy@globex.example", MONDAY + 5 * DAY)  # breaches after the check
    check(db, MONDAY + 14 * DAY)
    with db.session() as s:
        report = sla_report(session=s)
        got = {owner: [(b.lead_id, b.kind) for b in found] for owner, found in report.items()}
    assert got == {"sam@acme.example": [(stalled, "opportunity_stalled")],
                   "unassigned": [(unanswered, "mql_unanswered")]}
    assert list(report) == sorted(report)
    assert later not in {b.lead_id for b in breaches(db)}


def test_the_sla_section_applies_to_a_program_without_scoring(db, sample_program):
    path = sample_program / "program.yaml"
    text = path.read_text()
    scoring, sla = text.index("# Lead scoring."), text.index("\nsla:")
    path.write_text(text[:scoring] + text[sla:].replace("mql_response: 14d", "mql_response: 7d"))
    load(db, sample_program)
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": "ada@globex.example", **IT_DIRECTOR},
                              now=MONDAY, actor="test", program="acme-nurture")
        set_stage(session=s, lead=lead, stage="mql", reason="hand-raiser at a trade show",
                  actor="events@acme.example", now=MONDAY)
        lead_id = lead.id
    assert check(db, MONDAY + 7 * DAY) == ([(lead_id, "mql_unanswered")], 0)
    [escalation] = notifications(db, lead_id, "escalation")
    assert escalation.owner == ESCALATE_TO
