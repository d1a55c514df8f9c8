"""The engagement report on a fixture whose answers are worked out by hand below.

Leads are created and enrolled through the engine's pipeline (upsert_lead); unsubscribes,
bounces and complaints are recorded through the engine's own functions (unsubscribe,
record_bounce), so they are stored as in production. The program version, the sends (outbox
rows the enrollment made, then set to how the send ended), the asset versions, the tracking
events (with their bot flag) and the form submissions are written as rows: running a mail
server, the tracking drain and the page renderer would only slow the test down; each form
is put on the email it followed as the form door does; each send that went out gets its
sent_emails row as marking it does. Their figures (opened, clicked, bot counts), which the
drain keeps, are then counted from the events (count_tracked_sends).

The report runs in New York time, March and April 2026:
  start  2026-03-01 05:00Z (midnight EST)   March | April 2026-04-01 04:00Z (midnight EDT)
  end    2026-05-01 04:00Z
so an email sent 2026-04-01 03:00Z (23:00 on 31 March in New York) is March's.

Sends of acme-nurture (personas from the title; tracks from the sample program):
  R1  ada  (CIO, it_manager, webinar)  welcome_it v1       sent 03-10 14:00Z
      human open; bot open (Apple proxy); human click link 0; scanner click link 0; a click
      on the hidden link (bot)
  R2  ada                              guide_it            sent 03-13 14:00Z
      bot open; ada unsubscribes 03-14 (the last email she got before: R2)
  R3  cy   (IT manager, it_manager, webinar)  welcome_it v2  sent 03-12 14:00Z
      two human clicks on link 1 (to the demo page), no open (images blocked: a click is an
      open); a form on the demo page 03-12 16:10 (after R3)
  R4  bob  (CFO, finance, ads)         welcome_finance     refused at send 03-20 10:00Z
      (550, one attempt) and recorded as a hard bounce then: hard, once
  R5  dee  (Controller, finance, no source)  welcome_finance sent 2026-04-01 03:00Z (March
      in New York); a soft bounce naming its Message-ID 04-01 05:00
  R6  cy                               guide_it            sent 04-15 13:00Z
      human open; scanner click link 0; cy complains 04-16 (an abuse report)
  R10 fay  (Accountant, finance, ads)  welcome_finance     gave up 04-20 12:00Z after
      temporary failures (soft), then a DSN hard bounce 04-21: hard, not soft
  R7  eve  (sysadmin, it_manager)      welcome_it          sent 02-20: before the period;
      its human open and click (to the pricing page) in March and eve's unsubscribe in March
      belong to February's cohort: not counted
  R9  gus  acme-sales                  welcome_it          sent 03-15 10:00Z (another program)
Not sent, never counted: a skipped row (dee, suppressed), a row the renderer refused (dee),
the pending first emails of hal and ivy (who only posted forms).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from stored_programs import store_program as stored_program

from engine.assets.models import Asset, AssetVersion
from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.pages.models import FormSubmission
from engine.reports import build_report
from engine.reports.engagement import build
from engine.reports.query import parse_query
from engine.sending.bounces import record_bounce
from engine.sending.models import Delivery, OutboxMessage
from engine.sending.responses import email_before_form, record_out
from engine.tracking.models import TrackingEvent
from engine.tracking.service import count_tracked_sends
from engine.tracking.unsubscribe import unsubscribe

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
NY = "America/New_York"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def store_program(session, name: str, goal: dict | None = None) -> int:
    return stored_program(session, name, goal, at=at("2026-01-01T00:00"))


class World:
    def __init__(self, session):
        self.s = session
        self.leads: dict[str, Lead] = {}

    def lead(self, name: str, when: str, program: str = "acme-nurture", **fields) -> Lead:
        lead, _ = upsert_lead(session=self.s, fields={"email": f"{name}@example.com", **fields},
                              now=at(when), actor="test", program=program)
        self.leads[name] = lead
        return lead

    def email(self, name: str, step: str) -> OutboxMessage:
        """The lead's outbox row for `step`: the one its enrollment made (its first email, when
        enrolled inside the send window), else a new pending one."""
        lead = self.leads[name]
        row = self.s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == lead.id,
                                                        OutboxMessage.step == step))
        if row is None:
            enrollment = self.s.scalar(select(Enrollment).where(Enrollment.lead_id == lead.id))
            row = OutboxMessage(
                enrollment_id=enrollment.id, lead_id=lead.id, program_id=enrollment.program_id,
                program_version=enrollment.program_version, step=step,
                persona=enrollment.state["persona"],
                status=Delivery.PENDING, due_at=at("2026-01-01T00:00"),
                message_id=f"<{enrollment.id}.{step}@tests>",
                created_at=at("2026-01-01T00:00"), updated_at=at("2026-01-01T00:00"))
            self.s.add(row)
            self.s.flush()
        return row

    def sent(self, name: str, step: str, when: str,
             version: int | None = None) -> OutboxMessage:
        row = self.email(name, step)
        row.status, row.sent_at, row.attempts, row.deliveries = Delivery.SENT, at(when), 1, 1
        row.updated_at, row.asset_version_id = at(when), version
        self.s.flush()
        record_out(self.s, row.id)  # as marking it sent does
        return row

    def failed(self, name: str, step: str, when: str, error: str, attempts: int = 1) -> None:
        row = self.email(name, step)
        row.status, row.attempts, row.last_error = Delivery.FAILED_PERM, attempts, error
        row.updated_at = at(when)
        self.s.flush()
        record_out(self.s, row.id)  # as marking it refused does

    def event(self, kind: str, row: OutboxMessage, when: str, *, bot: bool = False,
              link: int | None = None, url: str | None = None) -> None:
        self.s.add(TrackingEvent(event_key=uuid.uuid4().hex, kind=kind, lead_id=row.lead_id,
                                 outbox_id=row.id, link_index=link, url=url, at=at(when),
                                 bot=bot, bot_reason="test machine" if bot else None))

    def visit(self, name: str, path: str, when: str, *, bot: bool = False) -> None:
        self.s.add(TrackingEvent(event_key=uuid.uuid4().hex, kind="page_view",
                                 lead_id=self.leads[name].id, url=path, at=at(when), bot=bot))

    def form(self, name: str, program_id: int, page: str, when: str) -> None:
        lead = self.leads[name]
        submission = FormSubmission(program_id=program_id, page=page, lead_id=lead.id,
                                    email=lead.email, fields={}, created_at=at(when))
        self.s.add(submission)
        self.s.flush()
        submission.outbox_id = email_before_form(self.s, submission)  # as the form door does


DEMO_URL = "https://acme.example/p/acme-nurture/demo?t=tok"
PRICING_URL = "https://acme.example/p/acme-nurture/pricing"
GUIDE_URL = "https://acme.example/guide"


@pytest.fixture
def world(db) -> dict:
    with db.session() as s:
        nurture = store_program(s, "acme-nurture")
        store_program(s, "acme-sales")
        asset = Asset(program_id=nurture, path="emails/welcome_it.mjml", kind="email")
        s.add(asset)
        s.flush()
        versions = []
        for number in (1, 2):
            version = AssetVersion(asset_id=asset.id, version=number, content_hash=str(number),
                                   content=b"", size=0, media_type="text/mjml", status="valid")
            s.add(version)
            s.flush()
            versions.append(version.id)
        w = World(s)
        w.lead("ada", "2026-03-09T12:00", title="CIO", source_channel="webinar")
        w.lead("cy", "2026-03-11T12:00", title="IT manager", source_channel="webinar")
        w.lead("bob", "2026-03-19T12:00", title="CFO", source_channel="ads")
        w.lead("dee", "2026-03-30T12:00", title="Controller")
        w.lead("fay", "2026-04-10T12:00", title="Accountant", source_channel="ads")
        w.lead("eve", "2026-02-19T12:00", title="sysadmin", source_channel="webinar")
        w.lead("gus", "2026-03-14T12:00", program="acme-sales", title="CIO",
               source_channel="webinar")
        w.lead("hal", "2026-03-31T12:00")
        w.lead("ivy", "2026-02-27T12:00")

        r1 = w.sent("ada", "welcome_it", "2026-03-10T14:00", versions[0])
        w.event("open", r1, "2026-03-10T14:00:05", bot=True)
        w.event("click", r1, "2026-03-10T14:00:03", bot=True, link=0, url=GUIDE_URL)
        w.event("click", r1, "2026-03-10T14:00:03", bot=True, link=-1)
        w.event("open", r1, "2026-03-10T15:00")
        w.event("click", r1, "2026-03-10T15:01", link=0, url=GUIDE_URL)
        w.visit("ada", "/p/acme-nurture/pricing", "2026-03-10T14:00:04", bot=True)
        r2 = w.sent("ada", "guide_it", "2026-03-13T14:00")
        w.event("open", r2, "2026-03-13T14:00:02", bot=True)
        unsubscribe(session=s, lead=w.leads["ada"], source="unsubscribe link",
                    now=at("2026-03-14T10:00"))

        r3 = w.sent("cy", "welcome_it", "2026-03-12T14:00", versions[1])
        w.event("click", r3, "2026-03-12T16:00", link=1, url=DEMO_URL)
        w.event("click", r3, "2026-03-12T16:05", link=1, url=DEMO_URL)
        w.visit("cy", "/p/acme-nurture/demo", "2026-03-12T16:09")
        w.form("cy", nurture, "demo", "2026-03-12T16:10")
        r6 = w.sent("cy", "guide_it", "2026-04-15T13:00")
        w.event("click", r6, "2026-04-15T13:00:02", bot=True, link=0, url=GUIDE_URL)
        w.event("open", r6, "2026-04-15T14:00")
        record_bounce(session=s, email="cy@example.com", kind="complaint", source="arf",
                      now=at("2026-04-16T09:00"))

        w.failed("bob", "welcome_finance", "2026-03-20T10:00", "550 5.1.1 no such user")
        record_bounce(session=s, email="bob@example.com", kind="hard", source="smtp: 550",
                      now=at("2026-03-20T10:00"), reason="550 5.1.1 no such user")

        r5 = w.sent("dee", "welcome_finance", "2026-04-01T03:00")
        record_bounce(session=s, email="dee@example.com", kind="soft", source="dsn",
                      now=at("2026-04-01T05:00"), message_id=r5.message_id,
                      reason="4.2.2 mailbox full")
        skipped = w.email("dee", "cost_guide_finance")
        skipped.status, skipped.skip_reason = Delivery.SKIPPED, "suppressed"
        refused = w.email("dee", "tco_finance")  # the renderer refused it: no SMTP attempt
        refused.status, refused.last_error = Delivery.FAILED_PERM, "render: undefined field"
        refused.updated_at = at("2026-04-03T10:00")

        w.failed("fay", "welcome_finance", "2026-04-20T12:00",
             "gave up after 6 attempts: 451 try again later", attempts=6)
        record_bounce(session=s, email="fay@example.com", kind="hard", source="dsn",
                      now=at("2026-04-21T08:00"), reason="5.1.1 no such user")

        r7 = w.sent("eve", "welcome_it", "2026-02-20T14:00")
        w.event("open", r7, "2026-03-05T10:00")
        w.event("click", r7, "2026-03-05T10:01", link=2, url=PRICING_URL)
        unsubscribe(session=s, lead=w.leads["eve"], source="unsubscribe link",
                    now=at("2026-03-06T10:00"))

        w.sent("gus", "welcome_it", "2026-03-15T10:00")

        # Forms with no email before them: hal's (31 March 23:30 in New York: March) counts
        # on its page only; ivy's (28 February 23:30 in New York) is before the period.
        w.form("hal", nurture, "demo", "2026-04-01T03:30")
        w.form("ivy", nurture, "demo", "2026-03-01T04:30")
        # The pending first emails of hal and ivy stay pending: never counted.
        s.flush()
        count_tracked_sends(s.connection())  # the events were written as rows, not drained
    return {"versions": versions}


def report(db, *, program: str | None = "acme-nurture", by: str | None = "month",
           split: str | None = None, start: str = "2026-03-01", end: str = "2026-04-30"):
    query = parse_query(program=program, start=start, end=end, by=by, split=split, tz=NY,
                        now=NOW)
    with db.session() as s:
        return build(s, query, now=NOW)


def keyed(table, *names: str) -> dict[tuple, dict]:
    rows = {tuple(row[name] for name in names): row for row in table.rows}
    assert len(rows) == len(table.rows), "each row once"
    return rows


METRICS = ("sent", "delivered", "bounced_hard", "bounced_soft", "opens", "clicks",
           "unsubscribes", "complaints", "forms", "bot_opens", "bot_clicks")


def counts(row: dict) -> tuple:
    return tuple(row[name] for name in METRICS)


def test_per_email_counts_each_send_in_the_month_it_went_out_in_new_york(db, world):
    emails = keyed(report(db).table("emails"), "period", "email", "version")
    #                       sent dlv hard soft opn clk uns cmp frm bo bc
    assert {key: counts(row) for key, row in emails.items()} == {
        # R1: a person's open and click; an Apple-proxy open, a scanner click and a click on
        # the hidden link counted apart.
        ("2026-03", "welcome_it", "v1"): (1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 2),
        # R3: clicked twice without an open (a click is an open); cy's form came after it.
        ("2026-03", "welcome_it", "v2"): (1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0),
        # R2: only a machine opened it; ada's unsubscribe came after it.
        ("2026-03", "guide_it", "-"): (1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0),
        # R4 refused at send (hard once, though a bounce was also recorded); R5 sent at 23:00
        # on 31 March in New York, its soft bounce named by Message-ID.
        ("2026-03", "welcome_finance", "-"): (2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0),
        # R6: a person's open, a scanner's click, then cy's complaint.
        ("2026-04", "guide_it", "-"): (1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1),
        # R10: given up (soft), then reported hard: hard only.
        ("2026-04", "welcome_finance", "-"): (1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
    }
    assert all(row["program"] == "acme-nurture" for row in emails.values())


def test_rates_are_over_delivered_and_opens_and_none_without_a_denominator(db, world):
    emails = keyed(report(db).table("emails"), "period", "email", "version")
    v1 = emails[("2026-03", "welcome_it", "v1")]
    assert (v1["open_rate"], v1["click_rate"], v1["click_to_open"]) == (1.0, 1.0, 1.0)
    guide = emails[("2026-03", "guide_it", "-")]
    assert (guide["open_rate"], guide["click_rate"], guide["click_to_open"]) == (0.0, 0.0, None)
    finance = emails[("2026-03", "welcome_finance", "-")]
    assert (finance["open_rate"], finance["click_to_open"]) == (None, None)


def test_tracks_and_personas_sum_the_emails(db, world):
    built = report(db)
    tracks = keyed(built.table("tracks"), "period", "track")
    # March it_manager/inquiry = R1 + R2 + R3: 3 sent, all delivered, 2 opened (R1, R3),
    # 2 clicked, 1 unsubscribe (R2), 1 form (R3), bot opens R1 + R2, bot clicks 2 (R1).
    assert counts(tracks[("2026-03", "it_manager/inquiry")]) == (3, 3, 0, 0, 2, 2, 1, 0, 1, 2, 2)
    march = tracks[("2026-03", "it_manager/inquiry")]
    assert (march["open_rate"], march["click_to_open"]) == (pytest.approx(2 / 3), 1.0)
    assert counts(tracks[("2026-03", "finance/inquiry")]) == (2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0)
    assert counts(tracks[("2026-04", "it_manager/inquiry")]) == (1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1)
    assert counts(tracks[("2026-04", "finance/inquiry")]) == (1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(tracks) == 4
    personas = keyed(built.table("personas"), "period", "persona")
    assert {key: counts(row) for key, row in personas.items()} == {
        ("2026-03", "it_manager"): (3, 3, 0, 0, 2, 2, 1, 0, 1, 2, 2),
        ("2026-03", "finance"): (2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0),
        ("2026-04", "it_manager"): (1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1),
        ("2026-04", "finance"): (1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
    }


def test_links_count_human_and_bot_clicks_per_link_of_an_email(db, world):
    links = keyed(report(db).table("links"), "period", "email", "link")
    found = {key: (row["url"], row["clicks"], row["unique_clicks"], row["bot_clicks"])
             for key, row in links.items()}
    assert found == {
        # link 0 of welcome_it: R1's person and R1's scanner.
        ("2026-03", "welcome_it", "1"): (GUIDE_URL, 1, 1, 1),
        # link 1 of welcome_it: cy clicked twice (R3): 2 clicks, 1 email.
        # (shown without its query string, which holds cy's page token)
        ("2026-03", "welcome_it", "2"): ("https://acme.example/p/acme-nurture/demo", 2, 1, 0),
        ("2026-03", "welcome_it", "hidden (scanners)"): ("(the hidden link)", 0, 0, 1),
        ("2026-04", "guide_it", "1"): (GUIDE_URL, 0, 0, 1),
        # eve's click on R7 (sent in February) is not listed.
    }


def test_landing_pages_count_visits_clicks_and_forms_of_the_period(db, world):
    pages = keyed(report(db).table("pages"), "period", "page")
    found = {key: tuple(row[name] for name in ("email_clicks", "visits", "visitors",
                                                 "bot_visits", "forms", "forms_after_email"))
             for key, row in pages.items()}
    assert found == {
        # cy's two clicks to the demo page and her visit; her form (after R3) and hal's (31
        # March 23:30 in New York, no email before it). ivy's (28 February there) is out.
        ("2026-03", "demo"): (2, 1, 1, 0, 2, 1),
        # eve's click to pricing (pages count by when things happen, whatever the cohort) and
        # the visit of the scanner that followed R1's link.
        ("2026-03", "pricing"): (1, 0, 0, 1, 0, 0),
    }


def test_split_by_source_channel_over_the_whole_period(db, world):
    built = report(db, by=None, split="source_channel")
    emails = built.table("emails")
    assert [c.key for c in emails.columns[:3]] == ["split", "program", "email"]
    rows = keyed(emails, "split", "email", "version")
    assert {key: counts(row) for key, row in rows.items()} == {
        ("webinar", "welcome_it", "v1"): (1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 2),
        ("webinar", "welcome_it", "v2"): (1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0),
        # R2 and R6
        ("webinar", "guide_it", "-"): (2, 2, 0, 0, 1, 0, 1, 1, 0, 1, 1),
        # R4 (hard) and R10 (hard)
        ("ads", "welcome_finance", "-"): (2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        # R5 (soft): dee has no source
        ("(none)", "welcome_finance", "-"): (1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
    }


def test_all_programs_and_a_quarter(db, world):
    built = report(db, program=None, by="quarter", start="2026-01-01", end="2026-03-31")
    emails = keyed(built.table("emails"), "period", "program", "email", "version")
    # Q1 in New York ends 2026-04-01 04:00Z: R1, R2, R3, R4, R5 (23:00 on 31 March), R9
    # (acme-sales) and R7 (20 February) are in it.
    assert {key: row["sent"] for key, row in emails.items()} == {
        ("2026-Q1", "acme-nurture", "welcome_it", "v1"): 1,
        ("2026-Q1", "acme-nurture", "welcome_it", "v2"): 1,
        ("2026-Q1", "acme-nurture", "welcome_it", "-"): 1,  # R7
        ("2026-Q1", "acme-nurture", "guide_it", "-"): 1,
        ("2026-Q1", "acme-nurture", "welcome_finance", "-"): 2,
        ("2026-Q1", "acme-sales", "welcome_it", "-"): 1,
    }
    # R7 in its own cohort: eve's open, click and unsubscribe count now.
    r7 = emails[("2026-Q1", "acme-nurture", "welcome_it", "-")]
    assert (r7["opens"], r7["clicks"], r7["unsubscribes"]) == (1, 1, 1)


def test_the_report_reads_like_the_others(db, world):
    query = parse_query(program="acme-nurture", start="2026-03-01", end="2026-04-30",
                        by="month", tz=NY, now=NOW)
    with db.session() as s:
        built = build_report("engagement", s, query)
    assert [t.key for t in built.tables] == ["emails", "tracks", "personas", "pages", "links"]
    emails = built.table("emails")
    assert emails.columns[0].key == "period"
    assert emails.chart.x == "email" and emails.chart.series == ("opens", "clicks")
    assert any("counted apart" in note for note in built.notes)
    assert built.to_dict()["tables"][0]["rows"] == emails.rows


def test_an_empty_period_gives_empty_tables(db, world):
    built = report(db, start="2025-01-01", end="2025-01-31")
    assert all(table.rows == [] for table in built.tables)
