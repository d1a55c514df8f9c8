"""`nurture demo`: the sample program end to end on the embedded defaults."""

from __future__ import annotations

import csv
import os
import random
import shlex
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import click
from rich.table import Table
from sqlalchemy import func, select

from engine.cli_context import AppContext, console, styled
from engine.config import DEMO_IGNORES, demo_settings
from engine.db import utcnow
from engine.sending.sink import free_port

SAMPLE_PROGRAM = Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"
FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Katherine", "Dennis", "Barbara", "Ken",
         "Frances", "Tim", "Radia", "Guido", "Hedy", "John", "Sophie", "Léa", "Jürgen", "Aiko", "Mateo"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Johnson", "Ritchie", "Liskov",
        "Thompson", "Allen", "Berners-Lee", "Perlman", "van Rossum", "Lamarr", "Backus", "Wilson",
        "Martin", "Müller", "Tanaka", "García"]
COMPANIES = ["Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises",
             "Acme Widgets", "Soylent", "Tyrell", "Cyberdyne", "Vandelay", "Wonka"]
TITLES = ["IT Director", "CIO", "Head of Infrastructure", "DevOps Lead", "Senior Sysadmin",
          "CFO", "Finance Manager", "Financial Controller", "Chief Accountant", "Marketing Manager"]
ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", ""]
CHANNELS = ["webinar", "paid-search", "trade-show", "content-syndication", "organic"]
COLUMNS = ["email", "first_name", "last_name", "company", "title", "country", "timezone", "stage",
           "source_channel", "source_offer", "consent", "industry", "company_size"]
SIZES = ["12", "50-200", "200-500", "1,200", "5000+", ""]


def write_sample_leads(path: Path, count: int, seed: int = 42) -> list[str]:
    """A realistic leads CSV with three deliberately bad rows. Returns the good emails."""
    rng = random.Random(seed)
    emails = []
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            company = rng.choice(COMPANIES)
            email = f"{first}.{last}.{i}@{company.replace(' ', '').lower()}.example".lower()
            email = email.replace("é", "e").replace("ü", "u").replace("í", "i").replace(" ", "")
            emails.append(email)
            stage = rng.choices(["inquiry", "engaged", "recycled"], [70, 20, 10])[0]
            writer.writerow([email, first, last, company, rng.choice(TITLES),
                             rng.choice(["FR", "GB", "US", "JP", "DE"]), rng.choice(ZONES), stage,
                             rng.choice(CHANNELS), "cloud-cost-guide", "yes",
                             rng.choice(["software", "retail", "manufacturing", "finance"]),
                             rng.choice(SIZES)])
        writer.writerow(["not-an-email", "Bad", "Row", "X", "CFO", "FR", "", "inquiry", "", "", "yes",
                         "", ""])
        writer.writerow(["stage@bad.example", "Bad", "Stage", "X", "CFO", "FR", "", "hot", "", "", "yes",
                         "", ""])
        writer.writerow(["zone@bad.example", "Bad", "Zone", "X", "CFO", "FR", "Mars/Olympus", "inquiry",
                         "", "", "yes", "", ""])
    return emails


def write_sample_events(path: Path, emails: list[str], seed: int = 7) -> None:
    """Opens, clicks, stage changes and exits that exercise the program's rules."""
    rng = random.Random(seed)
    talkers, leavers = emails[:3], emails[3:5]
    rows = []
    for email in emails[7:]:
        roll = rng.random()
        if roll < 0.45:
            rows.append((rng.randint(1, 6), email, "opened", ""))
        if roll < 0.2:
            rows.append((rng.randint(2, 8), email, "clicked", ""))
        if roll < 0.12:
            rows.append((rng.randint(9, 12), email, "stage", "engaged"))
    rows += [(4, email, "talk_to_sales", "") for email in talkers]
    rows += [(10, email, "unsubscribed", "") for email in leavers]
    rows.append((2, emails[5], "bounced", "hard"))
    rows.append((1, emails[6], "consumed", "guide_it"))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["day", "email", "event", "detail"])
        writer.writerows(sorted(rows))


@click.command()
@click.option("--leads", "lead_count", default=200, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 365))
@click.option("--program-dir", type=click.Path(exists=True, file_okay=False), default=str(SAMPLE_PROGRAM),
              show_default=True)
@click.option("--instance", "instance", default="demo-instance", show_default=True,
              type=click.Path(file_okay=False),
              help="The demo's own instance directory: its database, Redis, sink, secret key "
                   "and files. Never NURTURE_INSTANCE, DATABASE_URL, REDIS_URL or SMTP_URL.")
@click.pass_context
def demo(context: click.Context, lead_count: int, days: int, program_dir: str,
         instance: str) -> None:
    """Load the sample program, import sample leads, simulate DAYS days, then deliver the
    stored journeys for DAYS days (on a simulated clock) through a local SMTP sink, emailing
    the sales notifications too.

    Everything happens in an instance directory of its own (--instance): its simulated weeks
    (sends, clicks, MQLs dated weeks ahead) never reach your database or your instance/. Run
    it again to continue where it stopped; remove the directory to start over."""
    app = AppContext()
    app.settings = demo_settings(instance)
    context.obj = app  # the commands the demo runs (`qa proof`, `launch`) use the same
    console.print(f"demo instance: {app.settings.instance_path} (its own database, Redis, sink "
                  "and files; your own settings and data are not touched)")
    try:
        _run(app, lead_count=lead_count, days=days, program_dir=program_dir)
        email, password = _console_user(app)
    finally:
        app.db.dispose()
    serve = f"`{_on_demo(app)} flask --app wsgi run`"
    if app.settings.instance_path == Path("demo-instance").resolve():
        serve = f"`make console` ({serve})"
    console.print(f"\nopen the console on the demo's data: {serve}, then "
                  f"http://localhost:5000/ and sign in as {email} with the password {password}")
    console.print(f"\nthe demo's data stays in {app.settings.instance_path}: run a command on "
                  f"it as `{_on_demo(app)} nurture ...` (`nurture inbox`, `nurture sales "
                  "queue`); remove the directory to start over")


def _on_demo(app: AppContext) -> str:
    """What runs a command on the demo's instance: the settings it ignores are blanked when
    the environment sets them."""
    blank = "".join(f" {name}=" for name in DEMO_IGNORES if os.environ.get(name))
    return f"NURTURE_INSTANCE={shlex.quote(str(app.settings.instance_path))}{blank}"


DEMO_USER = "demo@acme.example"


def _console_user(app: AppContext) -> tuple[str, str]:
    """The demo's console user (an admin) and its password: made on the first run, kept in
    the demo instance (readable by its owner alone) so that a later run prints it again."""
    import secrets

    from engine.auth.models import User
    from engine.auth.users import change_password, create_user

    path = app.settings.instance_path / "console-password"
    with app.db.session() as session:
        exists = session.scalar(select(User.id).where(User.email == DEMO_USER)) is not None
        if exists and path.exists():
            return DEMO_USER, path.read_text(encoding="utf-8").strip()
        password = f"demo-{secrets.token_urlsafe(12)}"
        if exists:  # its password file was removed: a new password
            change_password(session=session, email=DEMO_USER, password=password, now=utcnow())
        else:
            create_user(session=session, email=DEMO_USER, role="admin", name="Demo Admin",
                        password=password, now=utcnow())
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return DEMO_USER, password


def _run(app: AppContext, *, lead_count: int, days: int, program_dir: str) -> None:
    from engine.journeys.simulate import parse_start, read_events, simulate
    from engine.leads.importer import import_leads, read_lead_rows
    from engine.programs.loader import load_program_dir
    from engine.programs.service import load_program

    work = app.settings.instance_path
    work.mkdir(parents=True, exist_ok=True)
    now = utcnow()

    console.rule("1. Load the sample program")
    with app.db.session() as session:
        result = load_program(session=session, directory=program_dir, now=now, actor="demo")
    program = load_program_dir(program_dir).program
    console.print(f"{program.name}: {len(program.personas)} personas, {len(program.emails)} emails, "
                  f"{len(program.pages)} landing pages, {len(program.tracks)} tracks "
                  f"(version {result.version}{'' if result.created else ', unchanged'})")
    _use_crm_map(app, Path(program_dir))

    console.rule("2. Import sample leads")
    leads_csv, events_csv = work / "leads.csv", work / "events.csv"
    emails = write_sample_leads(leads_csv, lead_count)
    write_sample_events(events_csv, emails)
    summary = import_leads(db=app.db, path=leads_csv, program=program.slug, now=now,
                           rejects_path=work / "leads.rejects.csv")
    console.print(f"{leads_csv}: created {summary.created}, updated {summary.updated}, "
                  f"rejected {summary.rejected} (see {work / 'leads.rejects.csv'})")
    _print_enrollments(app, program.slug)

    console.rule(f"3. Simulate {days} days")
    start = parse_start(None, now)
    leads = [row.fields for row in read_lead_rows(leads_csv) if not row.error]
    events = read_events(events_csv, start=start, program=program, emails={lead["email"] for lead in leads})
    sims = simulate(program, leads, events, start=start, days=days)
    _print_summary(sims, days)

    from engine.demo_tracking import TrackingServer
    from engine.sending.sink import Sink
    from engine.web.app import create_app

    with Sink(app.settings.sink_dir) as sink:
        # The public app (tracking links, review pages) listens on a port of its own, on the
        # demo's clock; proofs, the launch notice and every email go to this sink.
        port = free_port()
        app.settings = replace(app.settings, sink_port=sink.port,
                               base_url=f"http://127.0.0.1:{port}")
        clock = _SimulatedClock(now)
        web = create_app(app.settings, clock=clock)
        try:
            with TrackingServer(web, port):
                console.rule("4. Proofs, QA and launch")
                if not _proofs_qa_and_launch(app, program.slug):
                    return
                console.rule("5. Visitors from campaigns ask for a demo")
                _capture(app, program.slug)
                console.rule(f"6. Deliver {days} days through the local SMTP sink; people "
                             "open and click")
                _deliver_through_sink(app, web=web, clock=clock, days=days, emails=emails)
        finally:
            web.extensions["nurture.recorder"].close()
            web.extensions["nurture.db"].dispose()
    console.rule("7. Scores, MQLs and the sales handoff")
    _print_handoff(app, now=now + timedelta(days=days))
    console.rule("8. The CRM hears of it, and answers: signed webhooks both ways")
    _deliver_to_crm(app)
    _crm_answers(app, at=now + timedelta(days=days))
    console.rule("9. The quarterly review")
    _write_review(app, program.slug, end=now + timedelta(days=days / 2))


DEMO_CRM_SECRET = "demo-crm-webhook-secret"


def _use_crm_map(app: AppContext, program_dir: Path) -> None:
    """The program's CRM field map (the sample's names fields as Salesforce does) made the demo
    instance's map, the one in effect: the CRM events of step 8 carry the CRM's names."""
    from engine.crm.fieldmap import MAP_FILE, current_map, map_path

    source, target = program_dir / MAP_FILE, map_path(app.settings)
    if not source.is_file():
        return
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        target.write_bytes(source.read_bytes())
    crm_map = current_map(app.settings)
    console.print(f"CRM field map in effect: {target} (from {source}: "
                  f"{len(crm_map.rules('lead'))} lead fields by the CRM's names, MQLs go as a "
                  f"{crm_map.mql_as}; `nurture crm map show`)")


def _deliver_to_crm(app: AppContext) -> None:
    """The CRM outbox delivered, as the scheduler's `crm` job would, to the reference receiver
    on a free port (signatures checked, everything stored in the instance); what arrived."""
    from engine.crm.delivery import CrmWebhook, deliver_all
    from engine.crm.receiver import Receiver

    directory = app.settings.instance_path / "crm-receiver"
    with Receiver(directory, secret=DEMO_CRM_SECRET) as receiver:
        before = len(receiver.received())
        report = deliver_all(db=app.db, webhook=CrmWebhook(url=receiver.url,
                                                           secret=DEMO_CRM_SECRET, timeout=5),
                             worker="demo", clock=utcnow, limit=500)
        arrived = receiver.received()[before:]
    console.print(f"receiver {receiver.url} (signatures checked), storing in {directory}")
    console.print(f"delivered: {report}")
    accepted = [entry for entry in arrived if entry.accepted]
    if not accepted:
        console.print("nothing new to tell the CRM (an earlier demo delivered it)")
        return
    signed = sum(1 for entry in accepted if entry.verified)
    kinds = Counter(entry.event_type for entry in accepted)
    console.print(f"arrived: {len(accepted)} event(s), {signed} with a good signature: "
                  + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
    moves = [entry.body["payload"] for entry in accepted if entry.event_type == "stage_change"]
    console.print(f"stage changes: {len(moves)}, of which MQLs: "
                  f"{sum(1 for move in moves if move.get('to') == 'mql')} ("
                  + ", ".join(f"{n} -> {stage}" for stage, n in
                              Counter(move.get("to") for move in moves).most_common()) + ")")
    for entry in [e for e in accepted if (e.body.get("payload") or {}).get("to") == "mql"][:3]:
        payload = entry.body["payload"]
        crm = ", ".join(f"{name}: {value}" for name, value in (payload.get("crm") or {}).items())
        console.print(f"  {entry.body['occurred_at'][:16]}  {entry.body['lead']['email']:<34} "
                      f"{payload.get('from')} -> mql: {payload.get('reason')} (in the CRM: "
                      f"{crm + ', ' if crm else ''}as a {payload.get('as')})")
    created = next((entry.body["payload"] for entry in accepted
                    if entry.event_type == "lead_created"), None)
    if created:
        console.print("a new lead's fields, as the CRM names them (the field map): "
                      + ", ".join(sorted(created.get("fields") or {})))
    console.print(f"see them with `{_on_demo(app)} nurture crm received`; the sync health "
                  "with `nurture crm status`")


def _crm_answers(app: AppContext, *, at: datetime) -> None:
    """Sales works the first two MQLs in the CRM, which tells the engine over its signed door
    (POST /api/v1/crm/events): one becomes a contact with an opportunity that is won, the
    other's opportunity is lost. Their stages follow through the transition table."""
    import json
    import time

    from engine.leads.models import Lead
    from engine.signatures import sign_webhook
    from engine.web.app import create_app

    with app.db.reading() as session:
        mqls = session.execute(select(Lead.email, Lead.company).where(Lead.stage == "mql")
                               .order_by(Lead.id).limit(2)).all()
    if len(mqls) < 2:
        console.print("fewer than two MQLs: nothing for sales to work in the CRM")
        return
    (won, company), (lost, _) = mqls
    domain = won.rpartition("@")[2]
    events = [
        ("lead.converted", {"email": won, "contact_id": "003DEMO1", "account": {
            "id": "001DEMO1", "fields": {"Name": company or domain, "Website": domain}}}),
        ("owner.changed", {"object": "contact", "id": "003DEMO1", "owner": "kim@acme.example"}),
        ("opportunity.created", {"id": "006DEMO1", "account_id": "001DEMO1", "fields": {
            "Name": f"{company or domain} platform", "Amount": 48000, "CurrencyIsoCode": "EUR",
            "StageName": "Qualification", "CloseDate": f"{at.year + 1}-03-31"},
            "contacts": [{"id": "003DEMO1", "role": "Decision Maker", "primary": True}]}),
        ("opportunity.won", {"id": "006DEMO1", "fields": {"StageName": "Closed Won"}}),
        ("opportunity.created", {"id": "006DEMO2", "fields": {"Name": "Pilot", "Amount": 9000},
                                 "contacts": [{"email": lost, "role": "Evaluator"}]}),
        ("opportunity.lost", {"id": "006DEMO2", "fields": {"StageName": "Closed Lost"}}),
    ]
    web = create_app(replace(app.settings, crm_inbound_secret=DEMO_CRM_SECRET),
                     clock=lambda: at)
    client = web.test_client()
    try:
        for number, (kind, data) in enumerate(events, start=1):
            body = json.dumps({"id": f"demo-crm-{number}", "type": kind,
                               "occurred_at": at.isoformat(), "data": data}).encode()
            answer = client.post("/api/v1/crm/events", data=body,
                                 content_type="application/json", headers={
                                     "X-Nurture-Signature": sign_webhook(
                                         DEMO_CRM_SECRET, body, int(time.time()))})
            result = answer.get_json()
            console.print(f"  {kind:<20} {answer.status_code} {result.get('outcome', '')}: "
                          + ("; ".join(result.get("changes") or []) or "nothing new"))
    finally:
        web.extensions["nurture.db"].dispose()
    with app.db.reading() as session:
        now_in = dict(session.execute(select(Lead.email, Lead.stage)
                                      .where(Lead.email.in_([won, lost]))).all())
    console.print(f"{won} is a {now_in[won]}, {lost} is {now_in[lost]}: see "
                  f"`{_on_demo(app)} nurture leads show {won}` and `nurture crm inbound`")


def _write_review(app: AppContext, slug: str, *, end: datetime) -> None:
    """The review report of the simulated quarter (the one holding `end`, the middle of the
    simulated days) as an HTML page with charts; its headline figures printed here."""
    from engine.reports import build_report
    from engine.reports.output import to_html, to_terminal
    from engine.reports.query import parse_query

    query = parse_query(program=slug, start=None, end=end.isoformat(), now=end)
    with app.db.reading() as session:
        review = build_report("review", session, query)
    path = app.settings.instance_path / "reports" / f"review-{review.title.split()[-1]}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(review), encoding="utf-8")
    headline = replace(review, tables=[review.table("headline")], notes=[])
    to_terminal(headline, console)
    console.print(f"the review, with the funnel, velocity, SLA, engagement, goal and "
                  f"attribution reports and their charts: {path}")
    console.print(f"again for any period: {_on_demo(app)} nurture report review {slug} "
                  f"--to {end:%Y-%m-%d} --html review.html")


def _capture(app: AppContext, slug: str) -> None:
    """Visitors post the demo page's form over HTTP: each becomes a lead, enrolled and scored,
    its source taken from the campaign link and its consent recorded; a demo request goes to
    sales at once (the sample's trigger)."""
    from engine.demo_tracking import fill_demo_forms
    from engine.leads.models import ConsentRecord, Lead

    captured = fill_demo_forms(app.settings.base_url, slug)
    with app.db.session() as session:
        for lead in session.scalars(select(Lead).where(Lead.email.in_(captured))):
            consent = session.scalar(select(ConsentRecord.granted)
                                     .where(ConsentRecord.lead_id == lead.id))
            console.print(f"  {lead.email:<28} {lead.title or '':<24} source "
                          f"{lead.source_channel}/{lead.source_partner}/{lead.source_offer}, "
                          f"consent {'given' if consent else 'not given'}, stage {lead.stage}")


REVIEWER = "review@acme.example"


def _proofs_qa_and_launch(app: AppContext, slug: str) -> bool:
    """`nurture qa proof`, a reviewer approving each proof from its email, then `nurture
    launch`, as people run them (the engine does not import qa/: its commands join `nurture`
    through the `nurture.commands` entry points)."""
    from importlib.metadata import entry_points

    from engine.demo_tracking import Reviewer
    from engine.sending.inbox import list_messages

    if _launched(app, slug):
        console.print(f"{slug} is already launched at its current version")
        return True
    commands = {entry.name: entry.load() for entry in entry_points(group="nurture.commands")}
    if "launch" not in commands:
        console.print("the qa package is not installed: cannot launch")
        return False
    context = click.get_current_context()
    try:
        before = len(list_messages(app.settings.sink_dir))
        context.invoke(commands["qa"].get_command(context, "proof"), program=slug, to=REVIEWER,
                       as_json=False)
        reviewer = Reviewer()
        proofs = list_messages(app.settings.sink_dir)[before:]
        for stored in proofs:
            reviewer.approve(stored, app.settings.sink_dir)
        console.print(f"{REVIEWER} approved {reviewer.approved} of {len(proofs)} proofs from "
                      "their emails (the review page, over HTTP)")
        context.invoke(commands["launch"], program=slug, by="demo", offline=True,
                       no_screenshots=False, out=None)
    except SystemExit as exc:
        if exc.code:
            console.print("the sample program did not pass QA: nothing is sent")
            return False
    return True


def _print_enrollments(app: AppContext, slug: str) -> None:
    from engine.journeys.models import Enrollment
    from engine.programs.models import ProgramRecord

    with app.db.session() as session:
        rows = session.execute(
            select(Enrollment.track, Enrollment.status, func.count())
            .join(ProgramRecord, ProgramRecord.id == Enrollment.program_id)
            .where(ProgramRecord.name == slug)
            .group_by(Enrollment.track, Enrollment.status).order_by(Enrollment.track)
        ).all()
    table = Table("track", "status", "leads", title="Stored enrollments")
    for track, status, count in rows:
        table.add_row(track or "-", status, str(count))
    console.print(table)


def _print_summary(sims, days: int) -> None:
    entries = [entry for sim in sims for entry in sim.path]
    sends = Counter(e.asset for e in entries if e.action == "send")
    table = Table("email", "sends", title=f"Emails sent over {days} days (simulated, nothing delivered)")
    for asset, count in sorted(sends.items()):
        table.add_row(asset, str(count))
    console.print(table)
    exits = Counter(e.reason for e in entries if e.action == "exit")
    moves = Counter(e.track for e in entries if e.action == "move" and e.reason != "enrolled")
    console.print(f"{sum(sends.values())} sends to {len(sims)} leads; "
                  f"{sum(1 for e in entries if e.action == 'notify')} sales notification(s)")
    console.print("exits: " + (", ".join(f"{n} {r}" for r, n in exits.most_common()) or "none"))
    console.print("moves: " + (", ".join(f"{n} to {t}" for t, n in moves.most_common()) or "none"))
    statuses = Counter(str(sim.state.status) for sim in sims)
    console.print("final status: " + ", ".join(f"{n} {s}" for s, n in statuses.most_common()))
    for sim in _examples(sims):
        console.print(styled("\n", (sim.email, "bold"), f" ({sim.state.persona})"))
        for entry in sim.path:
            local = entry.at.astimezone(_zone(sim.state.timezone)).strftime("%a %d %b %H:%M %Z")
            console.print(f"  {local:<20} {entry.action:<7} {entry.asset or entry.track or '':<24} "
                          f"{entry.reason}")


def _examples(sims) -> list:
    """One lead per rule at work: a non-responder, a stage change, a talk-to-sales request."""
    def first(test):
        return next((s for s in sims if any(test(e) for e in s.path)), None)

    picks = [first(lambda e: e.action == "move" and e.reason.startswith("non-responder")),
             first(lambda e: e.action == "move" and e.reason.startswith("stage")),
             first(lambda e: e.action == "notify")]
    return [s for s in picks if s is not None]


def _zone(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class _SimulatedClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def after(self, start: datetime):
        """A setter: offset -> the clock reads start + offset."""
        def at(offset: timedelta) -> None:
            self.now = start + offset

        return at


def _launched(app: AppContext, slug: str) -> bool:
    from engine.launch.service import is_launched
    from engine.programs.store import current_program

    with app.db.session() as session:
        return is_launched(session=session, record=current_program(session=session, name=slug)[0])


def _deliver_through_sink(app: AppContext, *, web, clock: _SimulatedClock, days: int,
                          emails: list[str]) -> None:
    """The stored journeys, advanced step by step on a simulated clock: each due step goes into
    the outbox and is delivered over SMTP to the sink, as the scheduler and workers would. The
    app serves the tracking links on a local port; the demo's audience opens and clicks what
    lands in the sink, and the drainer stores their events after each delivery run."""
    from engine.demo_tracking import Audience
    from engine.flows.tracking import drain_buffer
    from engine.journeys.service import run_due
    from engine.sales.notify import NotifyOptions
    from engine.sales.notify import deliver_due as notify_due
    from engine.sending.compose import Signing
    from engine.sending.delivery import DeliveryOptions, deliver_due
    from engine.sending.inbox import list_messages, read_message
    from engine.sending.smtp import transport_from_settings

    end = clock.now + timedelta(days=days)
    totals: Counter = Counter()
    sink_dir = app.settings.sink_dir
    before = seen = len(list_messages(sink_dir))
    settings = app.settings
    options = DeliveryOptions(signing=Signing(secret_key=settings.secret_key,
                                              base_url=settings.base_url))
    notify = NotifyOptions(sales_email=settings.sales_email, base_url=settings.base_url)
    notified: Counter = Counter()
    audience = Audience(emails)
    buffer = web.extensions["nurture.recorder"].buffer
    transport = transport_from_settings(settings)
    try:
        while (due := _next_due(app)) is not None and due <= end:
            clock.now = max(clock.now, due)
            with app.db.session() as session:
                run_due(session=session, now=clock.now)
            report = deliver_due(db=app.db, transport=transport, worker="demo", clock=clock,
                                 limit=500, options=options)
            totals.update(report.counts)
            sent_at, new = clock.now, list_messages(sink_dir)[seen:]
            seen += len(new)
            for stored in new:
                audience.react(stored, sink_dir, at=clock.after(sent_at))
            clock.now = sent_at
            drain_buffer(db=app.db, buffer=buffer)  # scores: MQLs and triggers notify sales
            notified.update(notify_due(db=app.db, transport=transport, worker="demo",
                                       clock=clock, options=notify))
            seen = len(list_messages(sink_dir))  # the audience reads only its own mail
    finally:
        transport.close()
    console.print(f"tracking: {audience.requests} requests to {settings.base_url} (opens, clicks, "
                  "landing pages), stored through the Redis buffer")
    console.print(f"sales notifications emailed: {notified['sent']} (to {settings.sales_email}, "
                  "the sample's sales team)")
    received = list_messages(sink_dir)[before:]
    console.print(f"outbox: {', '.join(f'{n} {k}' for k, n in sorted(totals.items())) or 'nothing due'}"
                  f" (held sends wait for the lead's send window or the frequency cap)")
    console.print(f"sink: {len(received)} message(s) received in {sink_dir}")
    if not received:
        console.print("nothing was due: these journeys already ran ahead in an earlier demo "
                      f"(remove {app.settings.instance_path} to start over)")
        return
    for stored in received[:5]:
        console.print(f"  {stored.received_at[:19]}  {stored.rcpt_tos[0]:<40} {stored.subject}")
    message = read_message(sink_dir, received[0])
    console.print("\nheaders of the first message:")
    for name in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"):
        console.print(f"  {name}: {message[name]}")
    console.print(f"\nsee them all with `{_on_demo(app)} nurture inbox` (and `inbox show N`)")


def _next_due(app: AppContext) -> datetime | None:
    from engine.journeys.models import Enrollment
    from engine.sending.models import Delivery, OutboxMessage

    with app.db.session() as session:
        steps = session.scalar(select(func.min(Enrollment.due_at)).where(Enrollment.status == "active"))
        sends = session.scalar(select(func.min(OutboxMessage.due_at)).where(
            OutboxMessage.status.in_([Delivery.PENDING, Delivery.FAILED_TEMP])))
    return min((t for t in (steps, sends) if t is not None), default=None)


def _print_handoff(app: AppContext, *, now: datetime) -> None:
    """Scores, the filtered bot hits, the MQLs with their notifications, and one MQL's timeline."""
    from engine.crm.models import CrmOutboxItem
    from engine.leads.models import Lead
    from engine.sales.models import SalesNotification
    from engine.sales.queue import mql_queue, queue_entry
    from engine.scoring.service import current_score, scoring_program
    from engine.tracking.models import TrackingEvent

    with app.db.session() as session:
        kinds = session.execute(select(TrackingEvent.kind, TrackingEvent.bot, func.count())
                                .group_by(TrackingEvent.kind, TrackingEvent.bot)).all()
        reasons = session.execute(select(TrackingEvent.bot_reason, func.count())
                                  .where(TrackingEvent.bot.is_(True))
                                  .group_by(TrackingEvent.bot_reason)).all()
        people = ", ".join(f"{n} {kind}s" for kind, bot, n in sorted(kinds) if not bot)
        console.print(f"tracked by people: {people or 'nothing'}")
        console.print("filtered (stored, never scored): " + (", ".join(
            f"{n} × {reason}" for reason, n in reasons) or "nothing"))
        top = session.scalars(select(Lead).where(Lead.behaviour_score > 0)
                              .order_by((Lead.fit_score + Lead.behaviour_score).desc()).limit(8))
        table = Table("lead", "title", "fit", "behaviour", "score", "stage",
                      title=f"Top scores on {now:%d %b} (behaviour halves every 30 days)")
        for lead in top:
            found = scoring_program(session=session, lead_id=lead.id)
            score = current_score(lead, found[1] if found else None, now)
            table.add_row(lead.email, lead.title or "", f"{lead.fit_score:g}",
                          f"{score - lead.fit_score:.0f}", f"{score:.0f}", lead.stage)
        console.print(table)
        notes = session.scalars(select(SalesNotification).order_by(SalesNotification.at)).all()
        crm = session.scalar(select(func.count()).select_from(CrmOutboxItem))
        console.print(f"{len(notes)} sales notification(s); {crm} CRM outbox item(s) (new "
                      "leads, stage changes, buying signals, unsubscribes, suppressions, forms)")
        for note in notes[:5]:
            email = (f"emailed to {note.recipient}" if note.status == "sent"
                     else f"email {note.status}")
            console.print(f"  {note.at:%a %d %b %H:%M}  {note.kind}: {note.reason} ({email})")
        queue = mql_queue(session=session, now=now, limit=1)
        if queue:
            entry = queue_entry(session, queue[0])
            console.print(styled("\n", (entry["email"], "bold"),
                                        f", score {entry['score']:g}: the timeline sales sees"))
            for event in entry["timeline"]:
                console.print(f"  {event['at'][:16]}  {event['what']}")
            console.print(f"\nnext, on the demo's data (`{_on_demo(app)} nurture ...`): "
                          f"`nurture sales queue`, `nurture leads explain {entry['email']}`, "
                          f"`nurture sales accept {entry['email']} --by you`")
