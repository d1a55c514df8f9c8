"""The SLA compliance report on a fixture whose answers are worked out by hand below.

The data is made through the engine's own functions: the sample program loaded (its SLA cut
to 3 days for an MQL's answer and 7 days for a stalled opportunity), leads created and
enrolled by upsert_lead, MQLs made by set_stage, answered by sales' accept and reject, moved
on by set_stage, and breaches found and resolved by the SLA check (check_slas) run on the
dates below. One stall is added as a row (kit's: the sample gives every stall the same action,
and this one says what a program without sla.stalled_track records).

Timeline (UTC; the report runs in America/New_York, months Jan-Mar 2026, now = Apr 1 12:00):
  fay  mql 2025-12-31 23:00 (18:00 Dec 31 in New York: before the period), accepted Jan 2
  zed  mql Jan 5, in no program: counted when no program is named (the default SLA), never
       in acme-nurture's reports; unanswered, breached Jan 24
  ada  mql Jan 10 12:00, accepted by rita Jan 12 12:00 (2 days: within), opportunity Jan 13
       12:00, stalled (due Jan 20) found Jan 24, customer Feb 2 12:00 (won; resolved Feb 5)
  bob  mql Jan 20 12:00, breach found Jan 24, accepted by sam Jan 25 12:00 (5 days: late;
       breach resolved Feb 5), opportunity Jan 26 12:00, stalled (due Feb 2) found Feb 5
  cy   mql Feb 1 03:00 (22:00 Jan 31 in New York: January), never answered: breach found
       Feb 5, open; overdue since Feb 4 03:00
  dee  mql Feb 10 12:00, rejected Feb 13 12:00 (3 days exactly: within, the due moment)
  hal  mql Feb 15 12:00, rejected Feb 16 12:00 (within); mql again Feb 20 12:00, breach found
       Feb 24, accepted by sam Feb 27 12:00 (7 days: late; breach resolved Mar 1)
  gil  mql Apr 1 03:00 (23:00 Mar 31 in New York: March), unanswered, due Apr 4: not overdue
  ike  mql Apr 1 05:00 (01:00 Apr 1 in New York: after the period)
  kit  mql Dec 16, accepted by rita Dec 17, opportunity Dec 18 12:00 (all before the period);
       its stall (row) found Jan 1 05:00 (midnight in New York: the period's first moment),
       customer Feb 20 12:00 (won; resolved by the check of Feb 24)
Checks (check_slas) at Jan 24, Feb 5, Feb 24 and Mar 1, 12:00.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.leads.models import Lead
from engine.leads.service import set_stage
from engine.programs.service import load_program
from engine.reports.query import parse_query
from engine.reports.sla import build
from engine.sales.models import SlaBreach
from engine.sales.service import accept, reject
from engine.sales.sla import check_slas

IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}  # it_manager persona, fit 15
NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
RITA, SAM = "rita@acme.example", "sam@acme.example"
ENROLLED = "stalled; enrolled in it_manager/engaged for marketing support"
NO_TRACK = "stalled; no marketing track configured (sla.stalled_track)"


def at(month: int, day: int, hour: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


class Timeline:
    def __init__(self, db):
        self.db = db
        self.ids: dict[str, int] = {}

    def create(self, name: str, when: datetime, program: str | None = "acme-nurture") -> None:
        with self.db.session() as s:
            lead, _ = upsert_lead(session=s, fields={"email": f"{name}@globex.example",
                                                     **IT_DIRECTOR},
                                  now=when, actor="test", program=program)
            self.ids[name] = lead.id

    def stage(self, name: str, stage: str, when: datetime) -> None:
        with self.db.session() as s:
            set_stage(session=s, lead=s.get(Lead, self.ids[name]), stage=stage,
                      reason="test", actor="test", now=when)

    def accept(self, name: str, by: str, when: datetime) -> None:
        with self.db.session() as s:
            accept(session=s, lead=s.get(Lead, self.ids[name]), actor=by, now=when)

    def reject(self, name: str, when: datetime) -> None:
        with self.db.session() as s:
            reject(session=s, lead=s.get(Lead, self.ids[name]), reason="not yet",
                   actor=SAM, now=when)

    def check(self, when: datetime) -> None:
        with self.db.session() as s:
            check_slas(session=s, now=when)


@pytest.fixture
def timeline(db, sample_program: Path) -> Timeline:
    spec = sample_program / "program.yaml"
    spec.write_text(spec.read_text().replace("mql_response: 14d", "mql_response: 3d")
                    .replace("opportunity_stalled: 14d", "opportunity_stalled: 7d"))
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=at(12, 1, year=2025))
    t = Timeline(db)
    created = at(12, 15, year=2025)
    for name in ("fay", "ada", "bob", "cy", "dee", "hal", "gil", "ike", "kit"):
        t.create(name, created)
    t.create("zed", created, program=None)
    t.stage("kit", "mql", at(12, 16, year=2025))
    t.accept("kit", RITA, at(12, 17, year=2025))
    t.stage("kit", "opportunity", at(12, 18, year=2025))
    with db.session() as s:
        s.add(SlaBreach(lead_id=t.ids["kit"], kind="opportunity_stalled",
                        since=at(12, 18, year=2025), due_at=at(12, 25, year=2025),
                        detected_at=at(1, 1, 5), owner=RITA, action=NO_TRACK))
    t.stage("fay", "mql", at(12, 31, 23, year=2025))
    t.accept("fay", RITA, at(1, 2))
    t.stage("zed", "mql", at(1, 5))
    t.stage("ada", "mql", at(1, 10))
    t.accept("ada", RITA, at(1, 12))
    t.stage("ada", "opportunity", at(1, 13))
    t.stage("bob", "mql", at(1, 20))
    t.check(at(1, 24))
    t.accept("bob", SAM, at(1, 25))
    t.stage("bob", "opportunity", at(1, 26))
    t.stage("cy", "mql", at(2, 1, 3))
    t.stage("ada", "customer", at(2, 2))
    t.check(at(2, 5))
    t.stage("dee", "mql", at(2, 10))
    t.reject("dee", at(2, 13))
    t.stage("hal", "mql", at(2, 15))
    t.reject("hal", at(2, 16))
    t.stage("kit", "customer", at(2, 20))
    t.stage("hal", "mql", at(2, 20))
    t.check(at(2, 24))
    t.accept("hal", SAM, at(2, 27))
    t.check(at(3, 1))
    t.stage("gil", "mql", at(4, 1, 3))
    t.stage("ike", "mql", at(4, 1, 5))
    return t


def report(db, **options):
    query = parse_query(program=options.pop("program", None), start="2026-01-01",
                        end="2026-03-31", tz="America/New_York", now=NOW, **options)
    with db.session() as s:
        return build(s, query, now=NOW)


def test_the_fixture_is_what_the_timeline_says(db, timeline):
    with db.session() as s:
        found = {(s.get(Lead, b.lead_id).email.split("@")[0], b.kind, b.detected_at,
                  b.resolved_at, b.action if b.kind == "opportunity_stalled" else None)
                 for b in s.scalars(select(SlaBreach))}
    assert found == {
        ("zed", "mql_unanswered", at(1, 24), None, None),
        ("bob", "mql_unanswered", at(1, 24), at(2, 5), None),
        ("ada", "opportunity_stalled", at(1, 24), at(2, 5), ENROLLED),
        ("cy", "mql_unanswered", at(2, 5), None, None),
        ("bob", "opportunity_stalled", at(2, 5), None, ENROLLED),
        ("hal", "mql_unanswered", at(2, 24), at(3, 1), None),
        ("kit", "opportunity_stalled", at(1, 1, 5), at(2, 24), NO_TRACK),
    }


def rows(table, *keys):
    return [tuple(row[key] for key in keys) for row in table.rows]


MQL = ("mqls", "within_sla", "late", "unanswered", "overdue", "within_sla_share")


def test_mqls_answered_within_the_sla_per_month_in_new_york(db, timeline):
    got = report(db, by="month")
    table = got.table("mql_response")
    # January: ada within (2 days), bob late (5), cy unanswered and overdue (entered 22:00 Jan
    #   31 in New York), zed (no program: every lead counts when no program is named)
    #   unanswered and overdue: share 1 / (1 + 1 + 2). fay (Dec 31 in New York) is December's.
    # February: dee within (exactly 3 days), hal within (1 day), hal again late (7 days): 2/3.
    # March: gil (23:00 Mar 31 in New York) unanswered, due Apr 4, so not overdue on Apr 1: no
    #   outcome known yet, no share. ike (01:00 Apr 1 in New York) is April's.
    assert rows(table, "period", *MQL) == [
        ("2026-01", 4, 1, 1, 2, 2, 0.25),
        ("2026-02", 3, 2, 1, 0, 0, pytest.approx(2 / 3)),
        ("2026-03", 1, 0, 0, 1, 0, None),
    ]
    assert table.chart.kind == "bar" and table.chart.x == "period"
    assert table.chart.series == ("within_sla_share",)
    assert [c.key for c in table.columns][:2] == ["period", "mqls"]
    assert "acme-nurture 3 days" in got.notes[0]


def test_per_owner_the_owner_being_the_leads_owner_now(db, timeline):
    table = report(db, by="month").table("mql_response_by_owner")
    # ada: rita's; bob and hal: sam's (they accepted them); cy, zed, dee (rejected), gil:
    # nobody's.
    assert rows(table, "period", "owner", *MQL) == [
        ("2026-01", RITA, 1, 1, 0, 0, 0, 1.0),
        ("2026-01", SAM, 1, 0, 1, 0, 0, 0.0),
        ("2026-01", "(none)", 2, 0, 0, 2, 2, 0.0),
        ("2026-02", SAM, 2, 1, 1, 0, 0, 0.5),
        ("2026-02", "(none)", 1, 1, 0, 0, 0, 1.0),
        ("2026-03", "(none)", 1, 0, 0, 1, 0, None),
    ]


def test_split_by_owner_for_the_quarter(db, timeline):
    got = report(db, by="quarter", split="owner")
    # (none): cy and zed overdue, dee within, gil waiting: 1 / (1 + 2). rita: ada within.
    # sam: bob late, hal within, hal late: 1 / 3.
    assert rows(got.table("mql_response"), "period", "split", *MQL) == [
        ("2026-Q1", "(none)", 4, 1, 0, 3, 2, pytest.approx(1 / 3)),
        ("2026-Q1", RITA, 1, 1, 0, 0, 0, 1.0),
        ("2026-Q1", SAM, 3, 1, 2, 0, 0, pytest.approx(1 / 3)),
    ]
    # Breaches detected Jan 1 - Mar 31 in New York, by the owner of their lead now:
    # (none): cy's and zed's, open. rita: ada's and kit's stalls, resolved. sam: bob's and
    # hal's MQL breaches, resolved; bob's stall, open.
    assert rows(got.table("breaches"), "split", "kind", "detected", "resolved", "open") == [
        ("(none)", "mql_unanswered", 2, 0, 2),
        ("(none)", "opportunity_stalled", 0, 0, 0),
        (RITA, "mql_unanswered", 0, 0, 0),
        (RITA, "opportunity_stalled", 2, 2, 0),
        (SAM, "mql_unanswered", 2, 2, 0),
        (SAM, "opportunity_stalled", 1, 0, 1),
    ]


def test_open_and_resolved_breaches_by_month_of_detection(db, timeline):
    table = report(db, by="month").table("breaches")
    # January: bob's MQL breach (resolved Feb 5) and zed's (open); ada's stall (resolved Feb 5) and kit's (found
    #   at midnight Jan 1 in New York, resolved Feb 24). February: cy's (open) and hal's
    #   (resolved Mar 1) MQL breaches, bob's stall (open). March: none.
    assert rows(table, "period", "kind", "detected", "resolved", "open") == [
        ("2026-01", "mql_unanswered", 2, 1, 1),
        ("2026-01", "opportunity_stalled", 2, 2, 0),
        ("2026-02", "mql_unanswered", 2, 1, 1),
        ("2026-02", "opportunity_stalled", 1, 0, 1),
        ("2026-03", "mql_unanswered", 0, 0, 0),
        ("2026-03", "opportunity_stalled", 0, 0, 0),
    ]


def test_stalled_opportunities_by_what_marketing_did(db, timeline):
    table = report(db, by="month").table("stalled")
    # January: ada (enrolled in the engaged track; won Feb 2) and kit (no track; won Feb 20),
    # both resolved. February: bob (enrolled), still stalled, not won.
    assert rows(table, "period", "action", "stalled", "resolved", "open", "won") == [
        ("2026-01", ENROLLED, 1, 1, 0, 1),
        ("2026-01", NO_TRACK, 1, 1, 0, 1),
        ("2026-02", ENROLLED, 1, 0, 1, 0),
    ]
    whole = report(db).table("stalled")
    assert rows(whole, "action", "stalled", "resolved", "open", "won") == [
        (ENROLLED, 2, 1, 1, 1), (NO_TRACK, 1, 1, 0, 1)]


def test_one_period_without_a_split_has_one_row_and_no_chart(db, timeline):
    got = report(db, program="acme-nurture")
    table = got.table("mql_response")
    # All seven MQL entries of the program (zed is in none): within ada, dee, hal; late bob,
    # hal; unanswered cy (overdue), gil.
    assert rows(table, *MQL) == [(7, 3, 2, 2, 1, pytest.approx(3 / 6))]
    assert table.chart is None and table.columns[0].key == "mqls"
    assert got.to_dict()["tables"][0]["rows"] == table.rows


def test_a_split_by_persona_without_periods_charts_by_split(db, timeline):
    table = report(db, split="persona").table("mql_response")
    assert rows(table, "split", "mqls", "within_sla") == [("(none)", 1, 0), ("it_manager", 7, 3)]
    assert table.chart.x == "split"


def test_the_default_sla_applies_without_a_program_sla(db, sample_program):
    """Leads of a program without an sla: section get 14 days: 5 days is then within."""
    spec = sample_program / "program.yaml"
    text = spec.read_text()
    spec.write_text(text[:text.index("\nsla:")] + text[text.index("\nlaunch:"):])
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=at(12, 1, year=2025))
    t = Timeline(db)
    t.create("bob", at(1, 1))
    t.stage("bob", "mql", at(1, 20))
    t.accept("bob", SAM, at(1, 25))
    got = report(db)
    assert rows(got.table("mql_response"), *MQL) == [(1, 1, 0, 0, 0, 1.0)]
    assert got.notes[0].startswith("MQL response SLA: 14 days")
