"""The attribution report on a fixture whose answers are worked out by hand below.

The data is made through the engine's own functions: the sample program loaded and launched,
leads created by upsert_lead (an import's or the API's source fields) or by a form posted to
the sample's demo page (submit_form: the visit's UTM tags become the lead's source fields, a
hidden utm_medium or source_channel field is kept on the submission, and the demo request
hands the lead to sales at once: mql at the moment of the form), stages moved by set_stage,
accept and reject.

Timeline (UTC; the report runs in America/New_York, Jan-Mar 2026). channel: first / last
touch at each stage change.
  frank  channel social; mql 2026-01-01 04:00 (23:00 Dec 31 in New York: before the period)
  gus    channel webinar; mql Jan 5, rejected Jan 6, mql again Feb 10
  ben    form Jan 10 from a social visit (lead: social, offer launch; hidden utm_medium
         social): mql; accepted Jan 12 (sal); form Feb 1 with hidden utm_medium email;
         opportunity Feb 2; customer Mar 10. First touch social; last touch social for mql
         and sal, email for opportunity and customer.
  dan    created without a source; form Jan 15 posting a hidden source_channel events, from
         a visit without UTM tags: mql. First touch (none on the lead) = its form: events.
  cat    a CFO (finance persona) without source or form: mql Jan 20. (none) / (none).
  amy    channel webinar, offer cloud-guide (imported Dec 2025); form Feb 3 with hidden
         utm_medium cpc and utm_campaign brand: mql; accepted Feb 5; opportunity Mar 2. First
         touch webinar (the lead's own, which a form never overwrites); last touch cpc.
  eve    channel cpc; mql Apr 1 03:00 (23:00 Mar 31 in New York: March)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from launching import mark_launched

from engine.flows.forms import submit_form
from engine.flows.leads import upsert_lead
from engine.leads.models import Lead
from engine.leads.service import set_stage
from engine.pages.service import find_page
from engine.programs.service import load_program
from engine.reports import attribution
from engine.reports.attribution import build
from engine.reports.query import parse_query
from engine.sales.service import accept, reject

NOW = datetime(2026, 4, 2, tzinfo=UTC)
IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}


def at(month: int, day: int, hour: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


class Timeline:
    def __init__(self, db):
        self.db = db
        self.ids: dict[str, int] = {}

    def create(self, name: str, when: datetime, **fields) -> None:
        with self.db.session() as s:
            lead, _ = upsert_lead(session=s, fields={"email": f"{name}@globex.example",
                                                     **IT_DIRECTOR, **fields},
                                  now=when, actor="test", program="acme-nurture")
            self.ids[name] = lead.id

    def form(self, name: str, when: datetime, visit: dict, **hidden: str) -> None:
        posted = {"email": [f"{name}@globex.example"], "job_title": ["IT Director"],
                  **{key: [value] for key, value in hidden.items()}}
        with self.db.session() as s:
            found = find_page(session=s, program="acme-nurture", slug="demo")
            submission = submit_form(session=s, found=found, form=posted, visit=visit,
                                     remote_addr=None, now=when)
            self.ids[name] = submission.lead_id

    def stage(self, name: str, stage: str, when: datetime) -> None:
        with self.db.session() as s:
            set_stage(session=s, lead=s.get(Lead, self.ids[name]), stage=stage,
                      reason="test", actor="test", now=when)

    def accept(self, name: str, when: datetime) -> None:
        with self.db.session() as s:
            accept(session=s, lead=s.get(Lead, self.ids[name]), actor="sam@acme.example",
                   now=when)

    def reject(self, name: str, when: datetime) -> None:
        with self.db.session() as s:
            reject(session=s, lead=s.get(Lead, self.ids[name]), reason="not yet",
                   actor="sam@acme.example", now=when)

    def stage_now(self, name: str) -> str:
        with self.db.session() as s:
            return s.get(Lead, self.ids[name]).stage


@pytest.fixture
def timeline(db, sample_program) -> Timeline:
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=at(12, 1, year=2025))
    mark_launched(db)
    t = Timeline(db)
    t.create("frank", at(12, 2, year=2025), source_channel="social")
    t.create("gus", at(12, 2, year=2025), source_channel="webinar")
    t.create("amy", at(12, 2, year=2025), source_channel="webinar", source_offer="cloud-guide")
    t.create("eve", at(12, 2, year=2025), source_channel="cpc")
    t.create("dan", at(12, 2, year=2025))
    t.create("cat", at(12, 2, year=2025), title="CFO")
    t.stage("frank", "mql", at(1, 1, 4))
    t.stage("gus", "mql", at(1, 5))
    t.reject("gus", at(1, 6))
    t.form("ben", at(1, 10), {"utm_medium": "social", "utm_campaign": "launch"},
           utm_medium="social")
    assert t.stage_now("ben") == "mql"  # the demo request handed it to sales
    t.accept("ben", at(1, 12))
    t.form("dan", at(1, 15), {}, source_channel="events")
    assert t.stage_now("dan") == "mql"
    t.stage("cat", "mql", at(1, 20))
    t.form("ben", at(2, 1), {}, utm_medium="email")
    t.stage("ben", "opportunity", at(2, 2))
    t.form("amy", at(2, 3), {"utm_medium": "cpc"}, utm_medium="cpc", utm_campaign="brand")
    assert t.stage_now("amy") == "mql"
    t.accept("amy", at(2, 5))
    t.stage("gus", "mql", at(2, 10))
    t.stage("amy", "opportunity", at(3, 2))
    t.stage("ben", "customer", at(3, 10))
    t.stage("eve", "mql", at(4, 1, 3))
    return t


def report(db, **options):
    query = parse_query(program=options.pop("program", None), start="2026-01-01",
                        end="2026-03-31", tz="America/New_York", now=NOW, **options)
    with db.session() as s:
        return build(s, query, now=NOW)


def rows(table, *keys):
    return [tuple(row[key] for key in keys) for row in table.rows]


TOUCH = ("stage", "source", "leads", "first_touch", "first_touch_share", "last_touch",
         "last_touch_share")


def test_sources_of_each_stage_by_first_and_last_touch_for_the_quarter(db, timeline):
    got = report(db, program="acme-nurture")
    # mql: gus (once, though twice an MQL), ben, dan, cat, amy, eve: 6; frank is December's.
    #   first: webinar 2 (gus, amy), social (ben), events (dan), (none) (cat), cpc (eve).
    #   last: cpc 2 (amy, eve), webinar (gus), social, events, (none) 1 each.
    # sal: ben social/social, amy webinar/cpc. opportunity: ben social/email (its second
    # form came before), amy webinar/cpc. customer: ben social/email.
    # Order: first touch down, then last touch down, then name, (none) last.
    assert rows(got.table("attribution"), *TOUCH) == [
        ("mql", "webinar", 6, 2, 2 / 6, 1, 1 / 6),
        ("mql", "cpc", 6, 1, 1 / 6, 2, 2 / 6),
        ("mql", "events", 6, 1, 1 / 6, 1, 1 / 6),
        ("mql", "social", 6, 1, 1 / 6, 1, 1 / 6),
        ("mql", "(none)", 6, 1, 1 / 6, 1, 1 / 6),
        ("sal", "social", 2, 1, 0.5, 1, 0.5),
        ("sal", "webinar", 2, 1, 0.5, 0, 0.0),
        ("sal", "cpc", 2, 0, 0.0, 1, 0.5),
        ("opportunity", "social", 2, 1, 0.5, 0, 0.0),
        ("opportunity", "webinar", 2, 1, 0.5, 0, 0.0),
        ("opportunity", "cpc", 2, 0, 0.0, 1, 0.5),
        ("opportunity", "email", 2, 0, 0.0, 1, 0.5),
        ("customer", "social", 1, 1, 1.0, 0, 0.0),
        ("customer", "email", 1, 0, 0.0, 1, 1.0),
    ]
    assert "never overwrites" in attribution.__doc__ and got.notes


def test_a_form_without_hidden_source_fields_carries_its_visits_source(db, timeline):
    """hal, a webinar lead, comes back from a partner's newsletter (utm_medium partner, no
    hidden field) and asks for a demo: an MQL first touched by webinar, last by partner."""
    timeline.create("hal", at(12, 2, year=2025), source_channel="webinar")
    timeline.form("hal", at(3, 5), {"utm_medium": "partner", "utm_source": "globex-news"})
    assert timeline.stage_now("hal") == "mql"
    mql = {row["source"]: row for row in report(db).table("attribution").rows
           if row["stage"] == "mql"}
    assert (mql["partner"]["first_touch"], mql["partner"]["last_touch"]) == (0, 1)
    assert (mql["webinar"]["first_touch"], mql["webinar"]["last_touch"]) == (3, 1)
    partners = {row["source"]: row for row in report(db, split="source_partner")
                .table("attribution").rows if row["stage"] == "mql"}
    assert partners["globex-news"]["last_touch"] == 1


def test_the_charts_have_a_column_per_source_and_a_row_per_stage(db, timeline):
    got = report(db)
    first = got.table("first_touch")
    # Across the stages, first touch: social 4 (mql, sal, opportunity, customer), webinar 4
    # (mql 2, sal, opportunity), then cpc, events, (none) 1 each.
    keys = ("source:social", "source:webinar", "source:cpc", "source:events", "source:(none)")
    assert first.chart.kind == "bar" and first.chart.x == "stage"
    assert first.chart.series == keys
    assert rows(first, "stage", *keys, "leads") == [
        ("mql", 1, 2, 1, 1, 1, 6), ("sal", 1, 1, 0, 0, 0, 2),
        ("opportunity", 1, 1, 0, 0, 0, 2), ("customer", 1, 0, 0, 0, 0, 1)]
    last = got.table("last_touch")
    # Last touch: cpc 4 (mql 2, sal, opportunity), email 2, social 2, then events, webinar,
    # (none) 1 each.
    keys = ("source:cpc", "source:email", "source:social", "source:events", "source:webinar",
            "source:(none)")
    assert last.chart.series == keys
    assert rows(last, "stage", *keys, "leads") == [
        ("mql", 2, 0, 1, 1, 1, 1, 6), ("sal", 1, 0, 1, 0, 0, 0, 2),
        ("opportunity", 1, 1, 0, 0, 0, 0, 2), ("customer", 0, 1, 0, 0, 0, 0, 1)]


def test_by_month_in_new_york(db, timeline):
    table = report(db, by="month").table("attribution")
    # January: mql gus, ben, dan, cat (frank is December's in New York); sal ben.
    # February: mql gus (again) and amy; sal amy; opportunity ben.
    # March: mql eve (23:00 Mar 31 in New York); opportunity amy; customer ben.
    assert rows(table, "period", "stage", "source", "first_touch", "last_touch") == [
        ("2026-01", "mql", "events", 1, 1),
        ("2026-01", "mql", "social", 1, 1),
        ("2026-01", "mql", "webinar", 1, 1),
        ("2026-01", "mql", "(none)", 1, 1),
        ("2026-01", "sal", "social", 1, 1),
        ("2026-02", "mql", "webinar", 2, 1),
        ("2026-02", "mql", "cpc", 0, 1),
        ("2026-02", "sal", "webinar", 1, 0),
        ("2026-02", "sal", "cpc", 0, 1),
        ("2026-02", "opportunity", "social", 1, 0),
        ("2026-02", "opportunity", "email", 0, 1),
        ("2026-03", "mql", "cpc", 1, 1),
        ("2026-03", "opportunity", "webinar", 1, 0),
        ("2026-03", "opportunity", "cpc", 0, 1),
        ("2026-03", "customer", "social", 1, 0),
        ("2026-03", "customer", "email", 0, 1),
    ]
    assert [c.key for c in table.columns][:3] == ["period", "stage", "source"]
    chart_rows = report(db, by="month").table("first_touch").rows
    assert [(r["period"], r["stage"], r["leads"]) for r in chart_rows] == [
        ("2026-01", "mql", 4), ("2026-01", "sal", 1), ("2026-01", "opportunity", 0),
        ("2026-01", "customer", 0), ("2026-02", "mql", 2), ("2026-02", "sal", 1),
        ("2026-02", "opportunity", 1), ("2026-02", "customer", 0), ("2026-03", "mql", 1),
        ("2026-03", "sal", 0), ("2026-03", "opportunity", 1), ("2026-03", "customer", 1)]


def test_a_split_by_offer_attributes_by_offer(db, timeline):
    got = report(db, split="source_offer")
    assert got.title == "Attribution by offer"
    # Offers: amy's lead says cloud-guide, her form posted utm_campaign brand; ben's visit
    # said launch (his forms posted no campaign); the others have none. The split is the
    # lead's own offer.
    assert rows(got.table("attribution"), "split", "stage", "source", "first_touch",
                "last_touch") == [
        ("(none)", "mql", "(none)", 4, 4),  # gus, dan, cat, eve
        ("cloud-guide", "mql", "cloud-guide", 1, 0),
        ("cloud-guide", "mql", "brand", 0, 1),
        ("cloud-guide", "sal", "cloud-guide", 1, 0),
        ("cloud-guide", "sal", "brand", 0, 1),
        ("cloud-guide", "opportunity", "cloud-guide", 1, 0),
        ("cloud-guide", "opportunity", "brand", 0, 1),
        ("launch", "mql", "launch", 1, 1),
        ("launch", "sal", "launch", 1, 1),
        ("launch", "opportunity", "launch", 1, 1),
        ("launch", "customer", "launch", 1, 1),
    ]


def test_a_split_by_persona_keeps_the_channel(db, timeline):
    table = report(db, split="persona").table("attribution")
    # cat, the CFO, is the only finance lead.
    finance = [r for r in table.rows if r["split"] == "finance"]
    assert [(r["stage"], r["source"], r["first_touch"]) for r in finance] == [
        ("mql", "(none)", 1)]
    assert sum(r["first_touch"] for r in table.rows
               if r["split"] == "it_manager" and r["stage"] == "mql") == 5


def test_beyond_the_largest_sources_the_rest_is_other(db, timeline, monkeypatch):
    monkeypatch.setattr(attribution, "MAX_SERIES", 3)
    first = report(db).table("first_touch")
    # social 4 and webinar 4 shown; cpc, events and (none) summed.
    assert first.chart.series == ("source:social", "source:webinar", "other")
    assert rows(first, "stage", "source:social", "source:webinar", "other") == [
        ("mql", 1, 2, 3), ("sal", 1, 1, 0), ("opportunity", 1, 1, 0), ("customer", 1, 0, 0)]


def test_won_revenue_by_first_touch_each_opportunity_once_per_currency(db, timeline):
    from engine.crm.records import upsert_opportunity

    def opportunity(crm_id: str, contacts: list[tuple[str, bool]], won_at: datetime | None,
                    amount: str, currency: str = "EUR") -> None:
        with db.session() as s:
            leads = [(s.get(Lead, timeline.ids[name]), None, primary)
                     for name, primary in contacts]
            upsert_opportunity(s, crm_id=crm_id, fields={"amount": amount,
                                                         "currency": currency},
                               account=None, contacts=leads, now=at(1, 2), actor="crm")
            if won_at:
                upsert_opportunity(s, crm_id=crm_id, fields={"status": "won"}, account=None,
                                   contacts=None, now=won_at, actor="crm")

    opportunity("006-ben", [("ben", True)], at(3, 10), "48000.00")  # social
    opportunity("006-both", [("ben", False), ("amy", True)], at(2, 20), "1000.50")  # amy's
    opportunity("006-dan", [("dan", False)], at(2, 1), "700", "USD")  # events, by its form
    opportunity("006-open", [("gus", True)], None, "9999")  # not won: not revenue
    opportunity("006-april", [("eve", True)], at(4, 1, 5), "5000")  # April in New York
    got = report(db, program="acme-nurture")
    assert rows(got.table("revenue"), "source", "currency", "won", "amount") == [
        ("social", "EUR", 1, 48000.0), ("webinar", "EUR", 1, 1000.5),
        ("events", "USD", 1, 700.0)]
