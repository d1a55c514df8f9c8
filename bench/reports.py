"""Benchmark the reports on PostgreSQL: 1M leads and 10M tracking events, each report timed for
a quarter against the 1 s goal, with its memory and, on request, its query plans.

    .venv/bin/python bench/reports.py                                  # 1M leads, 10M events
    .venv/bin/python bench/reports.py --leads 20000 --events 200000    # quick run: seconds
    .venv/bin/python bench/reports.py --keep                           # keep the database...
    .venv/bin/python bench/reports.py --reuse --keep --plans           # ...time it again, plans
    .venv/bin/python bench/reports.py --reuse --keep --only funnel,sla # some reports only

1. Data. A private database, nurture_bench_reports on the local server (or --url: a database
   of yours, empty or, with --reuse, loaded by an earlier run), migrated with
   engine.migrate.upgrade. The sample program is loaded through load_program, and a copy of it
   named acme-webinar (so a report scoped to one program leaves some leads out). Then two years
   of a live engine, deterministic (--seed), written with COPY in time order, ids rising with
   time as in a live database: leads (personas, sources, owners, created with growth over two
   years), their stage history (a creation row, then moves along inquiry, engaged, mql, sal,
   opportunity, customer with regressions, recycling and disqualification, as the transition
   table allows), enrollments, the outbox (each track's emails in the send window; bounces,
   skips, what is still due), tracking events (opens, clicks, views and page visits; about 5%
   a machine's, flagged), the event log (lead_events: what the engine logs per send, response
   and stage change; --no-event-log writes only the bounces and unsubscribes reports read),
   form submissions (with UTM fields), sales notifications, SLA breaches, suppressions.
   About 4 rows of other tables per tracking event: 1M leads and 10M events are ~42M rows,
   ~10 GB. Foreign keys and secondary indexes are dropped for the load and rebuilt after it
   from their own definitions, the emails that went out get their sent_emails rows, their
   engagement figures counted from their events (engine/tracking/service.py) and the responses
   logged put on them (engine/sending/responses.py), in the same transaction (the schema stays the migrations',
   and a failed load leaves nothing); then VACUUM ANALYZE, as autovacuum would have done. With
   --reuse a database that holds leads is used as it is.
2. Baseline, in the same run: count(*) of the stage changes (and of the tracking events) in the
   quarter, best of 3: what the cheapest question about that quarter costs on this server.
3. Reports: each of engine.reports.NAMES whose module exists (the others are skipped, saying
   so), built through build_report for the last full quarter of the data, then again by month
   split by persona: best of --repeat against the 1 s goal, its ratio to the baseline, the
   statements it ran, the big tables it scans whole (plain EXPLAIN), the RSS high-water growth
   of its first build and the Python heap peak (tracemalloc, one more build) to show memory
   stays flat with the data; a build slower than --patience is neither repeated nor traced.
   --plans prints EXPLAIN (ANALYZE, BUFFERS) of every statement (which runs each again).

Data generation runs in a child process, so the RSS figures are the reports' own.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import multiprocessing
import queue
import random
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from engine.leads.stages import NOT_ON_PATH, TRANSITIONS, path_level_after
from engine.sending.responses import mark_all_responses, record_out
from engine.tracking.service import count_tracked_sends

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PRIVATE_DB = "nurture_bench_reports"
GOAL_SECONDS = 1.0
SAMPLE = ROOT / "assets" / "acme-nurture"
SECOND_PROGRAM = "acme-webinar"
SENDER_DOMAIN = "acme.example"
SITE = "https://go.acme.example"

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
DAY = 86400.0
HOUR = 3600.0
START = datetime(2024, 11, 1, tzinfo=UTC).timestamp()
END = datetime(2026, 11, 1, tzinfo=UTC).timestamp()  # nothing happens from here on

# -- what the leads look like ----------------------------------------------------------------

FIRST = ["Ada", "Bob", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ingrid", "Jose",
         "Kwame", "Lena", "Marta", "Nils", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Yuki"]
LAST = ["Lovelace", "Martin", "Dubois", "Ivanov", "Garcia", "Haddad", "Hopper", "Tanaka",
        "Larsen", "Pereira", "Mensah", "Schmidt", "Nowak", "Berg", "Petrova", "Sharma", "Moreau"]
COMPANIES = ["Globex", "Initech", "Umbrella Logistics", "Stark Retail", "Wayne Foods",
             "Acme Tools", "Hooli", "Vandelay Imports", "Soylent Health", "Cyberdyne Energy",
             "Tyrell Bank", "Brightwell Retail", "Lumen Logistics"]
# title, the persona the sample program matches it to, fit points (engine/programs: scoring.fit)
TITLES = [("IT Director", "it_manager", 15), ("CIO", "it_manager", 15),
          ("Head of Infrastructure", "it_manager", 15), ("Senior Sysadmin", "it_manager", 0),
          ("DevOps Lead", "it_manager", 0), ("IT Manager", "it_manager", 0),
          ("CFO", "finance", 15), ("Finance Manager", "finance", 0),
          ("Financial Controller", "finance", 0), ("Accountant", "finance", 0),
          ("Marketing Manager", "finance", 0), ("CEO", "finance", 0),
          ("Procurement Officer", "finance", 0)]
# country, time zone, its UTC offset in hours (send windows ignore DST here)
PLACES = [("FR", "Europe/Paris", 1), ("DE", "Europe/Berlin", 1), ("GB", "Europe/London", 0),
          ("US", "America/New_York", -5), ("US", "America/Los_Angeles", -8),
          ("ES", "Europe/Madrid", 1), ("JP", "Asia/Tokyo", 9), ("BR", "America/Sao_Paulo", -3),
          ("IN", "Asia/Kolkata", 5.5), ("NL", None, 1)]
CHANNELS = [("paid_search", 24), ("organic", 18), ("webinar", 16), ("event", 10),
            ("partner", 10), ("content_syndication", 12), ("referral", 6), ("email", 4)]
OFFERS = {"paid_search": ["cloud-cost-guide", "tco-calculator", "free-trial"],
          "organic": ["cloud-cost-guide", "security-checklist", None],
          "webinar": ["migration-webinar", "finops-webinar"],
          "event": ["cloud-expo-2025", "kubecon-booth", "cfo-summit"],
          "partner": ["partner-assessment", "migration-webinar"],
          "content_syndication": ["security-checklist", "benchmark-report"],
          "referral": [None], "email": ["newsletter"]}
PARTNERS = ["cloudreseller", "msp-alliance", "techdata", "northwind-it"]
OWNERS = ["claire.dubois", "tom.becker", "ana.silva", "raj.patel", "emma.jones", "luca.rossi",
          "mia.schultz", "noah.kim", "sara.lind", "omar.haddad", "julie.moreau", "ken.ito"]
INDUSTRIES = ["software", "finance", "retail", "logistics", "manufacturing", "healthcare"]
SIZES = ["1-10", "11-50", "50-200", "200-500", "1,200", "5000+"]
BROWSERS = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0 Safari/537.36"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Mobile/15E148"),
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17425; Pro)"]
SCANNERS = [("Mozilla/5.0 (compatible; Barracuda Sentinel)",
             "scanner or preview user agent (barracuda)"),
            ("Mimecast-URL-Protect/1.0", "scanner or preview user agent (mimecast)"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
             None)]  # a scanner posing as a browser: caught by its timing

# Stage moves a lead makes from each stage: (next, probability, mean days before it); the rest
# stay. "idle" is the sample program's rule: an engaged lead silent for 90 days is recycled.
FLOW = {
    "inquiry": [("engaged", 0.35, 18), ("mql", 0.05, 25), ("recycled", 0.05, 75),
                ("disqualified", 0.04, 12)],
    "engaged": [("mql", 0.38, 20), ("recycled", 0.33, "idle"), ("sal", 0.03, 15),
                ("disqualified", 0.03, 30)],
    "mql": [("sal", 0.70, "response"), ("engaged", 0.08, 10), ("recycled", 0.12, 6),
            ("disqualified", 0.05, 8)],
    "sal": [("opportunity", 0.55, 12), ("recycled", 0.30, 20), ("disqualified", 0.07, 15)],
    "opportunity": [("customer", 0.35, 50), ("recycled", 0.40, 60), ("disqualified", 0.10, 40)],
    "customer": [("opportunity", 0.08, 200), ("recycled", 0.05, 300)],
    "recycled": [("engaged", 0.30, 45), ("mql", 0.10, 60), ("sal", 0.02, 40),
                 ("disqualified", 0.05, 90)],
    "disqualified": [("recycled", 0.05, 180)],
}
for _stage, _moves in FLOW.items():  # the generator moves leads only as the engine may
    assert all(move[0] in TRANSITIONS[_stage] for move in _moves), _stage
WHY = {"engaged": ("clicked an email: engaged", "engine"),
       "mql": ("score reached the MQL threshold (55)", "scoring"),
       "sal": ("accepted by sales", None), "opportunity": ("CRM: opportunity opened", "crm"),
       "customer": ("CRM: closed won", "crm"), "disqualified": ("not a fit", None)}
RECYCLED_WHY = {"engaged": ("idle 90 days", "engine"), "sal": ("rejected by sales", None),
                "mql": ("rejected by sales: no project", None),
                "opportunity": ("CRM: closed lost", "crm"),
                "customer": ("CRM: churned", "crm"), "inquiry": ("no response", "engine"),
                "disqualified": ("re-qualified", None)}
NURTURE = ("inquiry", "engaged", "recycled")  # the stages the sample program's tracks cover
SALES = {"mql", "sal", "opportunity", "customer"}
SLA_DAYS = 14  # the sample program's sla.mql_response and sla.opportunity_stalled
CHECK_HOUR = 6  # the daily SLA check, UTC

LEADS_COLUMNS = ("id", "email", "first_name", "last_name", "company", "title", "country",
                 "timezone", "persona", "stage", "source_channel", "source_offer",
                 "source_partner", "consent", "custom", "owner", "fit_score", "behaviour_score",
                 "behaviour_at", "created_at", "updated_at", "enrolled_persona")
COLUMNS = {
    "leads": LEADS_COLUMNS,
    "enrollments": ("id", "lead_id", "program_id", "program_version", "status", "track",
                    "due_at", "state", "created_at", "updated_at", "persona"),
    "outbox": ("id", "enrollment_id", "lead_id", "program_id", "program_version", "step",
               "status", "due_at", "attempts", "deliveries", "delivery_unknown", "send_started",
               "lease_until", "claimed_by", "message_id", "last_error", "skip_reason",
               "sent_at", "links", "asset_version_id", "created_at", "updated_at", "persona"),
    "stage_changes": ("id", "lead_id", "from_stage", "to_stage", "at", "reason", "actor",
                      "from_at", "path_level", "left_at"),
    "tracking_events": ("id", "event_key", "kind", "lead_id", "outbox_id", "link_index", "url",
                        "at", "user_agent", "ip", "bot", "bot_reason"),
    "lead_events": ("id", "lead_id", "program_id", "at", "category", "kind", "detail", "actor"),
    "form_submissions": ("id", "program_id", "page", "lead_id", "email", "fields",
                         "remote_addr", "digest", "created_at", "source_channel",
                         "source_offer", "source_partner"),
    "sales_notifications": ("id", "lead_id", "at", "kind", "reason", "owner", "status",
                            "recipient", "attempts", "retry_at", "claimed_by", "lease_until",
                            "sent_at", "last_error"),
    "sla_breaches": ("id", "lead_id", "kind", "since", "due_at", "detected_at", "owner",
                     "action", "resolved_at"),
    "suppressions": ("id", "email", "reason", "source", "created_at"),
}
DIRECT = ("leads", "enrollments")  # ids given as generated (lead order is creation order)
BUFFERED = tuple(t for t in COLUMNS if t not in DIRECT)  # outbox first: events refer to it
TRACKING_OUTBOX = COLUMNS["tracking_events"].index("outbox_id")


def ts(seconds: float) -> int:
    """An instant (seconds since the Unix epoch) as binary COPY sends a timestamp column: an
    int64 of microseconds since 2000-01-01 UTC (the Writer sends these columns as int8, the
    same bytes, for a tenth of the cost of making and dumping a datetime)."""
    return int((seconds - PG_EPOCH) * 1_000_000)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def in_window(t: float, offset: float, r: random.Random) -> float:
    """The first moment at or after t inside the send window (Mon-Fri 09:00-17:00 on the lead's
    clock); a send moved to the window's opening goes out within the half hour after it."""
    local = t + offset * HOUR
    day, second = divmod(local, DAY)
    weekday = (int(day) + 3) % 7  # 1970-01-01 was a Thursday
    if weekday < 5 and 9 * HOUR <= second < 17 * HOUR:
        return t
    if weekday >= 5 or second >= 17 * HOUR:
        day += 1
        while (int(day) + 3) % 7 >= 5:
            day += 1
    return day * DAY + 9 * HOUR - offset * HOUR + r.random() * 1800


def next_check(t: float) -> float:
    """The daily SLA check at or after t."""
    day, second = divmod(t, DAY)
    return day * DAY + CHECK_HOUR * HOUR + (DAY if second > CHECK_HOUR * HOUR else 0)


class ProgramInfo:
    """What the generator needs of a loaded program: ids, tracks, links and asset versions."""

    def __init__(self, program_id: int, slug: str, tracks: dict, versions: dict[str, int],
                 links: dict[str, list[str]]):
        self.id, self.slug = program_id, slug
        self.tracks = tracks  # name -> [(email, wait days before it)]
        self.versions = versions  # email key -> asset_version id
        self.links = links  # email key -> destinations, "{t}" standing for the lead's token
        self.links_json = {key: json.dumps(value) for key, value in links.items()}


def program_info(session, name: str) -> ProgramInfo:
    """A loaded program as the generator sees it."""
    from engine.programs.store import current_program

    record, program = current_program(session=session, name=name)
    versions = dict(session.execute(text(
        "SELECT a.path, v.id FROM assets a JOIN asset_versions v ON v.asset_id = a.id "
        "AND v.version = a.current_version WHERE a.program_id = :p"), {"p": record.id}).all())
    return describe(program, record.id,
                    {key: versions[email.file] for key, email in program.emails.items()})


def describe(program, program_id: int, versions: dict[str, int]) -> ProgramInfo:
    """Its tracks as (email, days to wait before it), and the links of each email (from the
    sample's MJML: the program is the sample or a copy of it)."""
    tracks = {}
    for track, steps in program.tracks.items():
        out, wait = [], 0.0
        for step in steps:
            if step.wait is not None:
                wait += step.wait.days + step.wait.exact.total_seconds() / DAY
            else:
                out.append((step.email, wait))
                wait = 0.0
        tracks[track] = out
    links = {}
    for key, email in program.emails.items():
        source = (SAMPLE / email.file).read_text(encoding="utf-8")
        found = []
        for href in re.findall(r'href="([^"]+)"', source):
            page = re.match(r"\{\{\s*links\.page\('([^']+)'\)\s*\}\}", href)
            if page:
                found.append(f"{SITE}/p/{program.slug}/{page.group(1)}?t={{t}}")
            elif href.startswith("http"):
                found.append(href)
        links[key] = found
    return ProgramInfo(program_id, program.slug, tracks, versions, links)


# -- the world: one lead's life at a time, rows in time order --------------------------------

class Sink:
    """Rows held per table and day until every row of that day is known (leads are generated
    in creation order and nothing happens to a lead before it exists), then written sorted by
    time with ids rising with it. `write` is None for a dry run that only counts."""

    def __init__(self, write=None):
        self.write = write
        self.days = {table: defaultdict(list) for table in BUFFERED}
        self.direct = {table: [] for table in DIRECT}
        self.next_id = Counter()
        self.counts = Counter()

    def add(self, table: str, t: float, row: list) -> None:
        """`row[0]`, its id, holds its time until it is written."""
        if t < END:
            row[0] = t
            self.days[table][int(t // DAY)].append(row)

    def flush(self, before_day: float) -> None:
        for table in DIRECT:
            rows = self.direct[table]
            self.counts[table] += len(rows)
            if self.write and rows:
                self.write(table, rows)
            self.direct[table] = []
        for table in BUFFERED:
            days = self.days[table]
            ready = sorted(day for day in days if day < before_day)
            if not ready:
                continue
            rows = [row for day in ready for row in days.pop(day)]
            rows.sort(key=itemgetter(0))
            first = self.next_id[table]
            for offset, row in enumerate(rows, start=first + 1):
                row[0] = offset
            self.next_id[table] = first + len(rows)
            self.counts[table] += len(rows)
            if table == "tracking_events":
                for row in rows:
                    ref = row[TRACKING_OUTBOX]
                    if ref is not None:
                        row[TRACKING_OUTBOX] = ref[0]
            if self.write:
                self.write(table, rows)


class World:
    def __init__(self, *, seed: int, leads: int, programs: list[ProgramInfo], sink: Sink,
                 intensity: float, event_log: bool):
        self.r = random.Random(seed)
        self.n = leads
        self.programs = programs
        self.sink = sink
        self.k = intensity  # scales repeat opens and site visits to reach the events asked
        self.event_log = event_log
        self.enrollment_id = 0
        self.names = [(f, la, f"{f.lower()}.{la.lower()}") for f in FIRST for la in LAST]
        self.channels = [c for c, w in CHANNELS for _ in range(w)]
        self.detail = {}

    def created_at(self, index: int) -> float:
        """Lead `index` of n: more leads each month (the density grows linearly to double)."""
        u = (index + 0.5) / self.n
        return START + (END - START) * (math.sqrt(1 + 3 * u) - 1)

    def details(self, value: str | None) -> str:
        found = self.detail.get(value)
        if found is None:
            found = self.detail[value] = json.dumps({"detail": value} if value else {})
        return found

    # -- one lead --------------------------------------------------------------------------

    def lead(self, lead_id: int, created: float) -> None:
        r = self.r
        first, last, local = r.choice(self.names)
        company = r.choice(COMPANIES)
        title, persona, fit = r.choice(TITLES)
        country, zone, offset = r.choice(PLACES)
        channel = r.choice(self.channels)
        offer = r.choice(OFFERS[channel])
        partner = r.choice(PARTNERS) if channel == "partner" or (
            channel == "event" and r.random() < 0.3) else None
        email = f"{local}.{lead_id}@{company.lower().replace(' ', '-')}.example"
        roll = r.random()
        consent = True if roll < 0.76 else (None if roll < 0.96 else False)
        by_form = channel in ("paid_search", "organic", "referral") and r.random() < 0.3
        actor = "form:acme-nurture/demo" if by_form else r.choice(("import", "import", "api"))
        changes = self.stages(created)
        reached = {change[2] for change in changes}
        owner = None
        if reached & SALES or (channel in ("event", "partner") and r.random() < 0.2):
            owner = f"{r.choice(OWNERS)}@{SENDER_DOMAIN}"
        engaged = min(1.0, r.random() ** 1.5 + (0.3 if reached & SALES else 0.0))
        ctx = Lead(lead_id, email, persona, offset, consent, engaged, r.choice(BROWSERS),
                   f"{r.randint(2, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}."
                   f"{r.randint(1, 254)}", owner, channel, offer, title)
        self.stage_rows(ctx, changes, actor)
        breaches = self.slas(ctx, changes)
        # Who stops receiving email, and when: a bad address bounces at the first send, an
        # unsubscribe or complaint comes some weeks in.
        draw = r.random()
        if draw < 0.012:
            ctx.bad_address = True
        elif draw < 0.09:
            ctx.stop_at = created + r.expovariate(1 / 60) * DAY
            ctx.stop_kind = "complaint" if draw < 0.016 else "unsubscribed"
        enrolled = []
        if r.random() < 0.93:
            enrolled.append(self.programs[0])
        if len(self.programs) > 1 and (channel in ("webinar", "event") and r.random() < 0.6
                                       or r.random() < 0.04):
            enrolled.append(self.programs[1])
        ctx.programs = enrolled
        for index, program in enumerate(enrolled):
            self.enroll(ctx, program, created, changes, breaches if index == 0 else [],
                        first_program=index == 0, actor=actor)
        self.visits(ctx, created, by_form)
        self.stopping(ctx)
        stage = changes[-1][2]
        updated = max(changes[-1][0], ctx.last_seen or created)
        custom = (json.dumps({"industry": r.choice(INDUSTRIES), "company_size": r.choice(SIZES)})
                  if r.random() < 0.6 else "{}")
        self.sink.direct["leads"].append([
            lead_id, email, first, last, company, title, country, zone,
            persona if r.random() < 0.1 else None, stage, channel, offer, partner, consent,
            custom, owner, float(fit + r.choice((0, 0, 5, 10))),
            round(ctx.score, 2), ts(ctx.last_seen) if ctx.last_seen else None, ts(created),
            ts(min(updated, END - 1)), persona if enrolled else None])

    def stages(self, created: float) -> list[tuple]:
        r = self.r
        roll = r.random()
        stage = "inquiry" if roll < 0.88 else ("engaged" if roll < 0.96 else "mql")
        changes = [(created, None, stage)]
        t = created
        while len(changes) < 12:
            roll, target = r.random(), None
            for nxt, p, mean in FLOW[stage]:
                if roll < p:
                    target = nxt
                    break
                roll -= p
            if target is None:
                break
            if mean == "idle":
                days = 90 + r.expovariate(1 / 10)
            elif mean == "response":  # sales answer an MQL: median 1.5 days, a long tail
                days = math.exp(r.gauss(math.log(1.5), 1.35))
            else:
                days = r.expovariate(1 / mean)
            t += days * DAY
            if t >= END:
                break
            changes.append((t, stage, target))
            stage = target
        return changes

    def stage_rows(self, ctx: Lead, changes: list[tuple], actor: str) -> None:
        add = self.sink.add
        level, since = NOT_ON_PATH, None
        for index, (t, before, after) in enumerate(changes):
            if before is None:
                reason, by = "created", actor
            else:
                reason, by = (RECYCLED_WHY[before] if after == "recycled" else WHY[after])
                by = by or ctx.owner or "sales"
            level = path_level_after(level, after)
            left = ts(changes[index + 1][0]) if index + 1 < len(changes) else None
            add("stage_changes", t, [None, ctx.id, before, after, ts(t), reason, by,
                                     None if since is None else ts(since), level, left])
            since = t
            if after == "mql" and ctx.owner:
                self.notify(ctx, t + 30, "mql", "score reached the MQL threshold (55)")

    def notify(self, ctx: Lead, t: float, kind: str, reason: str) -> None:
        owner = ctx.owner or f"sales-manager@{SENDER_DOMAIN}"
        self.sink.add("sales_notifications", t, [
            None, ctx.id, ts(t), kind, reason, ctx.owner, "sent", owner, 1, None, None, None,
            ts(t + 20), None])

    def slas(self, ctx: Lead, changes: list[tuple]) -> list[tuple]:
        """Breaches of the MQL response and opportunity SLAs as the daily check finds them;
        returns the stalls, during which marketing sends the engaged track."""
        stalls = []
        for index, (since, _, stage) in enumerate(changes):
            if stage not in ("mql", "opportunity"):
                continue
            left = changes[index + 1][0] if index + 1 < len(changes) else None
            due = since + SLA_DAYS * DAY
            detected = next_check(due)
            if detected >= END or (left is not None and left <= detected):
                continue
            resolved = next_check(left) if left is not None and next_check(left) < END else None
            if stage == "mql":
                kind = "mql_unanswered"
                action = f"escalated to {ctx.owner or 'sales-manager@' + SENDER_DOMAIN}"
                self.notify(ctx, detected, "escalation",
                            f"MQL unanswered for {SLA_DAYS} days (SLA {SLA_DAYS} days)")
            elif self.r.random() < 0.35:  # the others were updated in the CRM in time
                kind = "opportunity_stalled"
                action = f"stalled; enrolled in {ctx.persona}/engaged for marketing support"
                stalls.append((detected, left or END))
            else:
                continue
            self.sink.add("sla_breaches", detected, [
                None, ctx.id, kind, ts(since), ts(due), ts(detected), ctx.owner, action,
                ts(resolved) if resolved else None])
        return stalls

    # -- email ------------------------------------------------------------------------------

    def enroll(self, ctx: Lead, program: ProgramInfo, created: float, changes: list[tuple],
               stalls: list[tuple], *, first_program: bool, actor: str) -> None:
        self.enrollment_id += 1
        enrollment = self.enrollment_id
        state = Journey(program, enrollment)
        if first_program:
            spans = [(t, changes[i + 1][0] if i + 1 < len(changes) else END,
                      f"{ctx.persona}/{stage}")
                     for i, (t, _, stage) in enumerate(changes) if stage in NURTURE]
            spans += [(start, end, f"{ctx.persona}/engaged") for start, end in stalls]
            spans.sort()
        else:  # the webinar follow-up: its inquiry track, once
            ends = [t for t, _, stage in changes[1:] if stage not in NURTURE]
            spans = [(created, ends[0] if ends else END, f"{ctx.persona}/inquiry")]
        self.log(ctx, program.id, created, "event", "enrolled", "{}", actor)
        for start, end, track in spans:
            self.follow(ctx, state, start, end, track)
        exit_reason = ctx.exit_reason
        if exit_reason is None and ctx.stop_at is not None and ctx.stop_at < END:
            exit_reason = "unsubscribed"
        stage = changes[-1][2]
        if exit_reason is None and stage not in NURTURE:
            exit_reason = f"stage {stage}"
        status = ("exited" if exit_reason else "active" if state.pending_at
                  else "completed" if state.track else "idle")
        due = state.pending_at
        self.sink.direct["enrollments"].append([
            enrollment, ctx.id, program.id, 1, status, state.track, ts(due) if due else None,
            json.dumps({
                "persona": ctx.persona, "stage": stage,
                "timezone": "Europe/Paris", "status": status, "track": state.track,
                "position": state.position, "last_email": state.last_email,
                "anchor_at": iso(state.anchor) if state.anchor else None,
                "due_at": iso(due) if due else None,
                "next_email": state.pending_email, "received": sorted(state.received),
                "sends_without_response": state.silent, "exit_reason": exit_reason,
                "version": 1}),
            ts(created), ts(min(max(state.anchor or created, changes[-1][0]), END - 1)),
            ctx.persona])

    def follow(self, ctx: Lead, state: Journey, start: float, end: float, track: str) -> None:
        """The track's emails from `start` until the lead leaves the cell at `end`; after three
        sends without a response, the persona's reengage track (the sample's non_responders)."""
        steps = state.program.tracks.get(track)
        if steps is None:
            return
        if self.stopped(ctx, start):
            return
        state.enter(track, start)
        self.log(ctx, state.program.id, start, "action", "move", self.action(None, track),
                 "engine")
        index, slot = 0, None
        while index < len(steps):
            if self.stopped(ctx, state.anchor):
                return  # the journey ended: nothing more is scheduled
            if state.silent >= 3 and not track.endswith("/reengage"):
                track = f"{ctx.persona}/reengage"
                steps = state.program.tracks[track]
                state.enter(track, state.anchor)
                state.silent = 0
                index, slot = 0, None
                continue
            email, wait = steps[index]
            index += 1
            if email in state.received:  # skipped, and the wait after it: the next email
                slot = wait if slot is None else slot  # takes its slot
                continue
            due = in_window(state.anchor + (wait if slot is None else slot) * DAY, ctx.offset,
                            self.r)
            slot = None
            if due >= end:
                if end >= END and due >= END:
                    self.pending(ctx, state, email, due)
                return
            self.send(ctx, state, track, email, due)

    @staticmethod
    def stopped(ctx: Lead, at: float) -> bool:
        """Has a hard bounce, an unsubscribe or a complaint ended the lead's journeys?"""
        return ctx.bounced or (ctx.stop_at is not None and at >= ctx.stop_at)

    def action(self, email: str | None, track: str) -> str:
        found = self.detail.get((email, track))
        if found is None:
            found = self.detail[(email, track)] = json.dumps(
                {"asset": email, "track": track, "reason": "",
                 "cause": "due" if email else "stage"})
        return found

    def pending(self, ctx: Lead, state: Journey, email: str, due: float) -> None:
        """The next email, scheduled and due after the data ends."""
        program = state.program
        created = state.anchor
        state.pending_at, state.pending_email = due, email
        message_id = f"<{state.enrollment}.{email}.{program.slug}@{SENDER_DOMAIN}>"
        self.sink.add("outbox", created, [
            None, state.enrollment, ctx.id, program.id, 1, email, "pending", ts(due), 0, 0,
            False, False, None, None, message_id, None, None, None, None, None, ts(created),
            ts(created), ctx.persona])

    def send(self, ctx: Lead, state: Journey, track: str, email: str, due: float) -> None:
        r, program, add = self.r, state.program, self.sink.add
        created = state.anchor
        message_id = f"<{state.enrollment}.{email}.{program.slug}@{SENDER_DOMAIN}>"
        state.received.add(email)
        state.position += 1
        self.log(ctx, program.id, due, "event", "due", "{}", "scheduler")
        self.log(ctx, program.id, due, "action", "send", self.action(email, track), "engine")
        stopped = ctx.stop_at is not None and due >= ctx.stop_at
        status, sent_at, attempts, error, skip = "sent", due + r.uniform(2, 90), 1, None, None
        if stopped:  # scheduled before the unsubscribe, skipped at send time
            status, sent_at, attempts, skip = "skipped", None, 0, f"suppressed: {ctx.stop_kind}"
        elif ctx.consent is False:
            status, sent_at, attempts, skip = "skipped", None, 0, "no consent to email"
        elif ctx.bad_address:
            status, sent_at, error = "failed_perm", None, "550 5.1.1 <address>: user unknown"
        elif r.random() < 0.002:
            status, sent_at, attempts = "failed_perm", None, 5
            error = "gave up after 5 attempts: 451 4.7.1 greylisted, try again later"
        updated = sent_at or due + (2 * DAY if attempts == 5 else 60)
        row = [None, state.enrollment, ctx.id, program.id, 1, email, status, ts(due), attempts,
               1 if sent_at else 0, False, False, None,
               f"worker-{r.randint(1, 4)}" if attempts else None, message_id, error, skip,
               ts(sent_at) if sent_at else None,
               program.links_json[email].replace("{t}", f"{ctx.id:x}.{state.enrollment:x}")
               if attempts else None,
               program.versions[email] if attempts else None, ts(created), ts(updated),
               ctx.persona]
        add("outbox", created, row)
        state.last_email, state.anchor = email, due
        if status == "failed_perm" and attempts == 1:  # a bad address: suppressed, journeys end
            ctx.bounced, ctx.exit_reason = True, "hard_bounce"
            for program_ in ctx.programs:
                self.log(ctx, program_.id, updated, "event", "bounced", '{"detail": "hard"}',
                         "smtp", always=True)
            self.suppress(ctx, updated, "bounced", "smtp: 550 5.1.1 user unknown")
            return
        if sent_at is None:
            state.silent += 1
            return
        if r.random() < 0.004:  # a soft bounce reported later, naming the message
            at = sent_at + r.uniform(0.1, 20) * HOUR
            self.log(ctx, None, at, "event", "bounced", json.dumps(
                {"detail": "soft", "reason": "452 4.2.2 mailbox full", "message_id": message_id,
                 "source": "dsn"}), "dsn", always=True)
        responded = self.responses(ctx, program, email, row, sent_at)
        state.silent = 0 if responded else state.silent + 1

    def responses(self, ctx: Lead, program: ProgramInfo, email: str, outbox: list,
                  sent_at: float) -> bool:
        """Opens, clicks, views and the visits they lead to; machines' among them."""
        r, e = self.r, ctx.engaged
        links = program.links[email]
        if r.random() < 0.06:  # Apple's privacy proxy fetches the images at delivery
            self.hit(ctx, "open", outbox, None, None, sent_at + r.uniform(5, 120),
                     "Mozilla/5.0", f"17.58.{r.randint(0, 255)}.{r.randint(1, 254)}",
                     "Apple Mail Privacy Protection prefetch")
        if links and r.random() < 0.02:  # a security scanner follows every link
            agent, reason = r.choice(SCANNERS)
            at = sent_at + r.uniform(1, 4)
            for index, url in enumerate(links):
                why = reason or (f"clicked {int(at - sent_at)} s after delivery" if index == 0
                                 else "several links of one email clicked within seconds")
                self.hit(ctx, "click", outbox, index, self.url(url, ctx, outbox), at, agent,
                         f"40.94.{r.randint(0, 255)}.{r.randint(1, 254)}", why)
                if "/p/" in url:
                    self.hit(ctx, "page_view", None, None, self.path(url), at + 1, agent,
                             "40.94.0.1", f"followed a filtered click ({why})")
                at += r.uniform(0.1, 1)
        if r.random() >= 0.12 + 0.5 * e:
            return False
        at = sent_at + math.exp(r.gauss(math.log(3 * HOUR), 1.5))
        opens = 1 + self.count(0.3 + self.k * 1.5)
        for _ in range(opens):
            if at >= END:
                break
            self.hit(ctx, "open", outbox, None, None, at, ctx.agent, ctx.ip, None)
            self.respond(ctx, at, "opened", email)
            at += r.expovariate(1 / (1.5 * DAY))
        at = sent_at + math.exp(r.gauss(math.log(3 * HOUR), 1.5))
        if r.random() < 0.015:
            self.hit(ctx, "view", outbox, None, None, at + 30, ctx.agent, ctx.ip, None)
        if links and r.random() < 0.1 + 0.4 * e:
            for _ in range(1 + (r.random() < 0.3)):
                index = r.randrange(len(links))
                url = links[index]
                at += r.uniform(10, 180)
                self.hit(ctx, "click", outbox, index, self.url(url, ctx, outbox), at, ctx.agent,
                         ctx.ip, None)
                self.respond(ctx, at, "clicked", email)
                if "/p/" in url:
                    path = self.path(url)
                    self.hit(ctx, "page_view", None, None, path, at + r.uniform(1, 3),
                             ctx.agent, ctx.ip, None)
                    self.respond(ctx, at + 2, "page_viewed", path.rsplit("/", 1)[1])
                    if path.endswith("/demo") and r.random() < 0.25:
                        self.form(ctx, at + r.uniform(60, 600), "email", email)
        return True

    @staticmethod
    def url(template: str, ctx: Lead, outbox: list) -> str:
        return template.replace("{t}", f"{ctx.id:x}.{outbox[1]:x}")

    @staticmethod
    def path(url: str) -> str:
        return url.split(SITE, 1)[1].split("?", 1)[0]

    def hit(self, ctx: Lead, kind: str, outbox: list | None, index: int | None,
            url: str | None, at: float, agent: str, ip: str, bot: str | None) -> None:
        self.sink.add("tracking_events", at, [
            None, f"{self.r.getrandbits(128):032x}", kind, ctx.id, outbox, index, url, ts(at),
            agent, ip, bot is not None, bot])
        if bot is None and at < END:
            ctx.last_seen = max(ctx.last_seen or 0, at)
            ctx.score = ctx.score * 0.9 + (10 if kind == "click" else 1)

    def respond(self, ctx: Lead, at: float, kind: str, detail: str) -> None:
        for program in ctx.programs:
            self.log(ctx, program.id, at, "event", kind, self.details(detail), "tracking")

    def log(self, ctx: Lead, program_id: int | None, at: float, category: str, kind: str,
            detail: str, actor: str, *, always: bool = False) -> None:
        if self.event_log or always:
            self.sink.add("lead_events", at, [None, ctx.id, program_id, ts(at), category, kind,
                                              detail, actor])

    def visits(self, ctx: Lead, created: float, by_form: bool) -> None:
        """Visits to the landing pages outside email: the form that created the lead, and
        the site sessions of a known visitor (their number scaled to the events asked)."""
        r = self.r
        slug = self.programs[0].slug
        if by_form:  # the visit and the form that created the lead
            self.hit(ctx, "page_view", None, None, f"/p/{slug}/demo", created, ctx.agent,
                     ctx.ip, None)
            self.form(ctx, created, ctx.channel, ctx.offer)
        for _ in range(self.count(self.k * (0.2 + ctx.engaged) / 2)):
            at = created + r.expovariate(1 / 90) * DAY
            for _ in range(1 + self.count(1.0)):
                page = "pricing" if r.random() < 0.7 else "demo"
                self.hit(ctx, "page_view", None, None, f"/p/{slug}/{page}", at, ctx.agent,
                         ctx.ip, None)
                self.respond(ctx, at, "page_viewed", page)
                at += r.uniform(20, 300)

    def form(self, ctx: Lead, at: float, medium: str | None, campaign: str | None) -> None:
        r = self.r
        fields = {"job_title": ctx.title, "team_size": r.choice(SIZES)}
        if r.random() < 0.6:
            fields["news"] = "on"
        if medium:
            fields["utm_medium"] = medium
            fields["utm_campaign"] = campaign or r.choice(OFFERS["paid_search"])
            fields["utm_source"] = "acme-nurture" if medium == "email" else "google"
        program = self.programs[0]
        self.sink.add("form_submissions", at, [
            None, program.id, "demo", ctx.id, ctx.email, json.dumps(fields), ctx.ip,
            f"{r.getrandbits(256):064x}", ts(at), fields.get("utm_medium"),
            fields.get("utm_campaign"), fields.get("utm_source")])
        self.respond(ctx, at, "form_submitted", "demo")
        self.notify(ctx, at + 5, "trigger", "form_submitted on page demo: route to sales")

    def stopping(self, ctx: Lead) -> None:
        """The unsubscribe or complaint drawn for this lead: recorded if it came before END."""
        if ctx.stop_at is None or ctx.stop_at >= END or ctx.bounced:
            return
        at = ctx.stop_at
        detail = '{"detail": "complaint"}' if ctx.stop_kind == "complaint" else "{}"
        for program in ctx.programs or [None]:
            self.log(ctx, program.id if program else None, at, "event", "unsubscribed", detail,
                     "fbl" if ctx.stop_kind == "complaint" else "unsubscribe link", always=True)
        self.suppress(ctx, at, "complained" if ctx.stop_kind == "complaint" else "unsubscribed",
                      "abuse report" if ctx.stop_kind == "complaint" else "unsubscribe link")
        ctx.exit_reason = "unsubscribed"

    def suppress(self, ctx: Lead, at: float, reason: str, source: str) -> None:
        self.sink.add("suppressions", at, [None, ctx.email, reason, source, ts(at)])

    def count(self, mean: float) -> int:
        """A count around `mean` (geometric: most small, a few large)."""
        return int(self.r.expovariate(1 / mean) + 0.5) if mean > 0 else 0


class Lead:
    """What one lead's generation carries around."""

    __slots__ = (
        "agent",
        "bad_address",
        "bounced",
        "channel",
        "consent",
        "email",
        "engaged",
        "exit_reason",
        "id",
        "ip",
        "last_seen",
        "offer",
        "offset",
        "owner",
        "persona",
        "programs",
        "score",
        "stop_at",
        "stop_kind",
        "title",
    )

    def __init__(self, lead_id, email, persona, offset, consent, engaged, agent, ip, owner,
                 channel, offer, title):
        self.id, self.email, self.persona, self.offset = lead_id, email, persona, offset
        self.consent, self.engaged, self.agent, self.ip = consent, engaged, agent, ip
        self.owner = owner
        self.bad_address = self.bounced = False
        self.stop_at = self.stop_kind = self.exit_reason = None
        self.programs = []
        self.last_seen = None
        self.score = 0.0
        self.channel, self.offer, self.title = channel, offer, title


class Journey:
    """An enrollment's place: the track, the emails received, sends without a response."""

    def __init__(self, program: ProgramInfo, enrollment: int):
        self.program, self.enrollment = program, enrollment
        self.track = self.last_email = self.pending_at = self.pending_email = None
        self.anchor = None
        self.position = 0
        self.silent = 0
        self.received: set[str] = set()

    def enter(self, track: str, at: float) -> None:
        self.track, self.anchor, self.position = track, at, 0


# -- generation: a child process writing with COPY -------------------------------------------

def psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def calibrate(programs: list[ProgramInfo], leads: int, events: int, seed: int,
              event_log: bool) -> tuple[float, float]:
    """The intensity that makes about `events` tracking events for `leads` leads: a dry run of
    a few thousand leads at two intensities (events grow linearly with it)."""
    sample = min(leads, 4000)
    per_lead = []
    for k in (0.0, 1.0):
        sink = Sink()
        world = World(seed=seed + 1, leads=sample, programs=programs, sink=sink, intensity=k,
                      event_log=event_log)
        for index in range(sample):
            world.lead(index + 1, world.created_at(index))
        sink.flush(math.inf)
        per_lead.append(sink.counts["tracking_events"] / sample)
    base, slope = per_lead[0], per_lead[1] - per_lead[0]
    wanted = events / leads
    return max(0.0, (wanted - base) / slope if slope > 0 else 0.0), base


def bulk_tables() -> list[str]:
    return list(COLUMNS)


def drop_keys(cur, tables: list[str]) -> list[str]:
    """Drop the foreign keys, unique constraints and secondary indexes of `tables` (primary
    keys stay); returns the statements that make them again, in order."""
    cur.execute("""
        SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c WHERE c.contype IN ('f', 'u')
          AND c.conrelid = ANY (SELECT oid FROM pg_class WHERE relname = ANY (%s))
        ORDER BY c.contype, c.conname""", (tables,))
    constraints = cur.fetchall()
    cur.execute("""
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
        WHERE t.relname = ANY (%s) AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1""", (tables,))
    indexes = cur.fetchall()
    for table, name, _, _ in constraints:  # foreign keys first
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f"DROP INDEX {name}")
    rebuild = [definition for _, definition in indexes]
    rebuild += [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
                for table, name, kind, definition in constraints if kind == "u"]
    rebuild += [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
                for table, name, kind, definition in constraints if kind == "f"]
    return rebuild


class Writer:
    """Binary COPY in a thread of its own: while the server takes one batch in, this process
    makes the next (the thread waits on the socket without the GIL)."""

    def __init__(self, cur):
        self.cur = cur
        cur.execute("SELECT attrelid::regclass::text, attname, atttypid::int FROM pg_attribute "
                    "WHERE attrelid = ANY (%s::regclass[]) AND attnum > 0",
                    (list(COLUMNS),))
        # A json column takes its text as is (the generator writes JSON text already), a
        # timestamp column an int8 (ts()): binary COPY sends no types, only the bytes.
        sent_as = {114: 25, 1114: 20}
        types = {(table, column): sent_as.get(oid, oid) for table, column, oid in cur.fetchall()}
        self.types = {table: [types[(table, column)] for column in columns]
                      for table, columns in COLUMNS.items()}
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.seconds: Counter = Counter()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, table: str, rows: list) -> None:
        while self.error is None:
            try:
                self.queue.put((table, rows), timeout=1)
                return
            except queue.Full:
                continue
        raise RuntimeError("COPY failed") from self.error

    def close(self) -> None:
        if self.error is None:
            self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError("COPY failed") from self.error

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                table, rows = item
                started = time.perf_counter()
                columns = ", ".join(COLUMNS[table])
                with self.cur.copy(f"COPY {table} ({columns}) FROM STDIN "
                                   "WITH (FORMAT BINARY, FREEZE)") as out:
                    out.set_types(self.types[table])
                    for row in rows:
                        out.write_row(row)
                self.seconds[table] += time.perf_counter() - started
        except BaseException as error:  # noqa: BLE001 - handed to the generating thread
            self.error = error


def generate(url: str, leads: int, events: int, seed: int, event_log: bool) -> None:
    """Load the programs, then write every table in one transaction (a failed load leaves the
    database as it was). Runs in a child process."""
    import psycopg
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from engine.db import Database
    from engine.programs.service import load_program

    began = time.perf_counter()
    database = Database(url)
    loaded_at = datetime.fromtimestamp(START, UTC) - timedelta(days=7)
    with tempfile.TemporaryDirectory() as work, database.session() as session:
        copy = Path(work) / SECOND_PROGRAM
        shutil.copytree(SAMPLE, copy)
        yaml = (copy / "program.yaml").read_text(encoding="utf-8")
        yaml = re.sub(r"^program: .*$", f"program: {SECOND_PROGRAM}", yaml, count=1, flags=re.MULTILINE)
        yaml = re.sub(r"^name: .*$", "name: Acme Cloud webinar follow-up", yaml, count=1,
                      flags=re.MULTILINE)
        (copy / "program.yaml").write_text(yaml, encoding="utf-8")
        for directory in (SAMPLE, copy):
            load_program(session=session, directory=directory, now=loaded_at, actor="bench")
        session.execute(text("UPDATE programs SET live_version = current_version, "
                             "launched_at = :at"), {"at": loaded_at + timedelta(days=6)})
        programs = [program_info(session, name) for name in ("acme-nurture", SECOND_PROGRAM)]
    database.dispose()
    intensity, base = calibrate(programs, leads, events, seed, event_log)
    print(f"programs loaded in {time.perf_counter() - began:.1f} s; calibrated: "
          f"{base:.1f} tracking events per lead from the emails alone, intensity "
          f"{intensity:.2f} for {events / leads:.1f}", flush=True)

    tables = bulk_tables()
    with psycopg.connect(psycopg_conninfo(url)) as conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        rebuild = drop_keys(cur, tables)
        writer = Writer(cur)
        sink = Sink(writer.put)
        world = World(seed=seed, leads=leads, programs=programs, sink=sink,
                      intensity=intensity, event_log=event_log)
        columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                   TimeRemainingColumn())
        started = time.perf_counter()
        with Progress(*columns) as progress:
            task = progress.add_task("leads and their lives", total=leads, rate="")
            switch = sys.getswitchinterval()
            sys.setswitchinterval(0.0005)  # the COPY thread gets the GIL back soon after I/O
            gc.disable()  # millions of rows wait in memory: the cycle collector would walk
            try:  # them again and again (they make no cycles)
                flushed_day = START // DAY
                for index in range(leads):
                    created = world.created_at(index)
                    world.lead(index + 1, created)
                    day = created // DAY
                    if day >= flushed_day + 28:  # four weeks of days are complete: write them
                        sink.flush(day)
                        flushed_day = day
                    if index % 2000 == 1999:
                        rows = sum(sink.counts.values())
                        progress.update(task, completed=index + 1, rate=f"{rows:,} rows "
                                        f"({rows / (time.perf_counter() - started):,.0f}/s)")
                sink.flush(math.inf)
                writer.close()
            finally:
                sys.setswitchinterval(switch)
                gc.enable()
            progress.update(task, completed=leads)
            generated = time.perf_counter() - started
            task = progress.add_task("indexes and keys", total=len(rebuild), rate="")
            rebuilt = time.perf_counter()
            for statement in rebuild:
                name = re.search(r'(INDEX|CONSTRAINT) "?(\w+)', statement).group(2)
                progress.update(task, rate=name)
                cur.execute(statement)
                progress.advance(task)
            cur.execute("ANALYZE")  # statistics for the updates' plans (none yet: a join
            # planned on empty tables runs a subquery per row)
            on_load = _OnCursor(cur)
            record_out(on_load)  # what marking an email sent or refused writes
            count_tracked_sends(on_load)  # what the tracking drain keeps on each sent email
            mark_all_responses(on_load)  # what recording a response keeps on its email
            # Live rows are updated where they were written (fillfactor) and stay in time
            # order; the bulk updates above moved them: put them back, as migration 0024 does.
            cur.execute("CLUSTER sent_emails USING ix_sent_emails_out_at")
            rebuilt = time.perf_counter() - rebuilt
        for table in tables:
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"coalesce(max(id), 0) + 1, false) FROM {table}")
        conn.commit()
    vacuumed = time.perf_counter()
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    vacuumed = time.perf_counter() - vacuumed
    total = sum(sink.counts.values())
    print(f"generated and written {total:,} rows in {generated:.1f} s "
          f"({total / generated:,.0f} rows/s; the COPY thread was busy "
          f"{sum(writer.seconds.values()):.1f} s of it)")
    for table in tables:
        seconds = writer.seconds[table]
        print(f"  {table:<20} {sink.counts[table]:>12,} rows   COPY {seconds:6.1f} s "
              f"({sink.counts[table] / seconds if seconds else 0:>9,.0f} rows/s)")
    print(f"indexes and keys rebuilt in {rebuilt:.1f} s, VACUUM ANALYZE {vacuumed:.1f} s; "
          f"data ready in {time.perf_counter() - began:.1f} s")


class _OnCursor:
    """A SQLAlchemy statement run on the load's own cursor (in its transaction)."""

    dialect = postgresql.dialect()

    def __init__(self, cursor) -> None:
        self.cursor = cursor

    def execute(self, statement, parameters: dict | None = None):
        if parameters:
            statement = statement.bindparams(**parameters)
        return self.cursor.execute(str(statement.compile(
            dialect=self.dialect, compile_kwargs={"literal_binds": True})))


# -- the database ----------------------------------------------------------------------------

def prepare(args) -> tuple[str, bool]:
    """The database URL and whether it needs data."""
    from engine.migrate import upgrade

    if args.url:
        url = args.url.replace("postgresql://", "postgresql+psycopg://", 1)
        if not url.startswith("postgresql+psycopg://"):
            raise SystemExit("--url must be a PostgreSQL URL (postgresql+psycopg://...)")
    else:
        url = f"{SERVER}/{PRIVATE_DB}"
        admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                 {"n": PRIVATE_DB})
            if exists and not args.reuse:
                conn.execute(text(f'DROP DATABASE "{PRIVATE_DB}" WITH (FORCE)'))
                exists = False
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{PRIVATE_DB}"'))
        admin.dispose()
    upgrade(url)
    probe = create_engine(url)
    with probe.connect() as conn:
        has_data = conn.scalar(text("SELECT EXISTS (SELECT 1 FROM leads)"))
    probe.dispose()
    if has_data and not args.reuse:
        raise SystemExit(f"{make_url(url).database} holds leads: pass --reuse to time them, "
                         "or give an empty database")
    return url, not has_data


def drop_private() -> None:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{PRIVATE_DB}" WITH (FORCE)'))
    admin.dispose()


# -- timing the reports ----------------------------------------------------------------------

class Recorder:
    """The statements a build runs (before_cursor_execute) and how long each took."""

    def __init__(self, engine):
        self.on = False
        self.statements: list[list] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if self.on:
            self.statements.append([statement, parameters, time.perf_counter()])

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        if self.on and self.statements:
            self.statements[-1][2] = time.perf_counter() - self.statements[-1][2]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def best_of(repeat: int, run) -> tuple[float | None, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return (min(times) if times else None), times  # --repeat 1: no more runs


def last_full_quarter(engine, zone: ZoneInfo) -> tuple[datetime, datetime]:
    from engine.reports.query import quarter_of

    with engine.connect() as conn:
        last = conn.scalar(text("SELECT max(at) FROM stage_changes")).replace(tzinfo=UTC)
    start, end = quarter_of(last, zone)
    if end - last > timedelta(days=1):  # the data stops inside this quarter: the one before
        start, end = quarter_of(start - timedelta(seconds=1), zone)
    return start, end


def big_tables(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname, reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
            "ORDER BY reltuples DESC")).all()
    return {name: (count, size) for name, count, size in rows}


def seq_scans(conn, statements: list, sizes: dict) -> list[str]:
    """Big tables (over 100,000 rows) some statement reads whole (plain EXPLAIN)."""
    found = []
    for statement, parameters, _ in statements:
        if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(
            "EXPLAIN " + statement, parameters or {}))
        for table in re.findall(r"Seq Scan on (\w+)", plan):
            if sizes.get(table, (0, 0))[0] > 100_000 and table not in found:
                found.append(table)
    return found


def print_plans(conn, statements: list) -> None:
    for number, (statement, parameters, seconds) in enumerate(statements, start=1):
        print(f"\n    -- statement {number} of {len(statements)}, {seconds * 1000:.0f} ms:")
        print("    " + statement.strip().replace("\n", "\n    "))
        if parameters:
            print(f"    -- parameters: {parameters}")
        if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        for (line,) in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                            parameters or {}):
            print("    | " + line)
    print()


def time_reports(url: str, args) -> None:
    from engine.reports import NAMES, build_report
    from engine.reports.query import parse_query

    engine = create_engine(url)
    zone = ZoneInfo(args.tz)
    start, end = last_full_quarter(engine, zone)
    first_day = start.astimezone(zone).date()
    last_day = (end.astimezone(zone) - timedelta(days=1)).date()
    sizes = big_tables(engine)
    with engine.connect() as conn:
        settings = {name: conn.scalar(text(f"SHOW {name}")) for name in
                    ("server_version", "shared_buffers", "work_mem", "effective_cache_size",
                     "max_parallel_workers_per_gather", "jit")}
    print("\ndatabase: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    print("largest tables: " + ", ".join(
        f"{name} {count:,} rows ({size / 2**20:,.0f} MB)"
        for name, (count, size) in list(sizes.items())[:8]))
    print(f"quarter: {first_day} to {last_day} ({args.tz}), program "
          f"{args.program or 'all'}; goal {GOAL_SECONDS:.0f} s per report; best of "
          f"{args.repeat}")

    bounds = {"s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)}
    baselines = {}
    with engine.connect() as conn:
        for table in ("stage_changes", "tracking_events"):
            sql = text(f"SELECT count(*) FROM {table} WHERE at >= :s AND at < :e")
            found = conn.scalar(sql, bounds)
            baselines[table] = (best_of(3, lambda sql=sql: conn.scalar(sql, bounds))[0], found)
    base = baselines["stage_changes"][0]
    for table, (seconds, found) in baselines.items():
        print(f"baseline: count(*) of {table} in the quarter ({found:,} rows): "
              f"{seconds * 1000:.1f} ms")

    recorder = Recorder(engine)
    variants = [("quarter", None, None), ("by month, split persona", "month", "persona")]
    print(f"\n{'report':<12} {'variant':<24} {'best':>8}  {'runs (s)':<18} {'goal':<5} "
          f"{'x base':>8} {'SQL':>4} {'heap peak':>10} {'RSS +':>7}  big tables read whole")
    passed, timed, skipped, failed = 0, 0, [], []
    for name in args.only or NAMES:
        if name not in NAMES:
            raise SystemExit(f"unknown report {name!r} (expected one of {', '.join(NAMES)})")
        if importlib.util.find_spec(f"engine.reports.{name}") is None:
            skipped.append(name)
            print(f"{name:<12} skipped: engine/reports/{name}.py does not exist yet")
            continue
        for label, by, split in variants:
            query = parse_query(program=args.program, start=first_day.isoformat(),
                                end=last_day.isoformat(), by=by, split=split, tz=args.tz,
                                now=datetime.now(UTC))
            rows = []

            def run(name=name, query=query, rows=rows):
                with Session(engine) as session:
                    report = build_report(name, session, query)
                rows.append(sum(len(table.rows) for table in report.tables))

            rss_before = rss_mb()
            recorder.statements, recorder.on = [], True
            heap = None
            try:
                started = time.perf_counter()
                run()
                first = time.perf_counter() - started
                captured, recorder.on = recorder.statements, False
                rss_growth = rss_mb() - rss_before
                times = [first]
                if first < args.patience:  # a slow build is not repeated, nor traced
                    times += best_of(args.repeat - 1, run)[1]
                    tracemalloc.start()
                    run()
                    heap = tracemalloc.get_traced_memory()[1] / 2**20
                    tracemalloc.stop()
            except Exception as error:  # noqa: BLE001 - a failing report is a finding
                recorder.on = False
                if tracemalloc.is_tracing():
                    tracemalloc.stop()
                failed.append(name)
                print(f"{name:<12} {label:<24} failed: {type(error).__name__}: {error}")
                break
            best = min(times)
            with engine.connect() as conn:
                whole = seq_scans(conn, captured, sizes)
            timed += 1
            ok = best < GOAL_SECONDS
            passed += ok
            print(f"{name:<12} {label:<24} {best:>6.3f} s  "
                  f"{' '.join(f'{t:.2f}' for t in times):<18} {'pass' if ok else 'FAIL':<5} "
                  f"{best / base:>7.1f}x {len(captured):>4} "
                  f"{f'{heap:7.1f} MB' if heap is not None else '      -   '} {rss_growth:>+5.0f}"
                  f" MB  {', '.join(whole) or '-'}   ({rows[-1]:,} rows out)")
            if args.plans:
                with engine.connect() as conn:
                    print_plans(conn, captured)
    print(f"\n{passed} of {timed} timed builds under {GOAL_SECONDS:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; skipped (no module yet): {', '.join(skipped)}" if skipped else ""))
    print(f"peak RSS of this process: {rss_mb():.0f} MB (generation ran in a child process)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL database of yours (default: a private "
                        f"database {PRIVATE_DB} on {SERVER}, dropped at the end)")
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000,
                        help="tracking events to generate (about)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--reuse", action="store_true",
                        help="skip generation when the database already holds leads")
    parser.add_argument("--keep", action="store_true", help="keep the private database")
    parser.add_argument("--no-event-log", dest="event_log", action="store_false",
                        help="write only the lead_events rows reports read (bounces, "
                        "unsubscribes), not the whole log: a faster load, a smaller table")
    parser.add_argument("--plans", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of every statement of every build")
    parser.add_argument("--repeat", type=int, default=3, help="builds per report and variant")
    parser.add_argument("--patience", type=float, default=10.0,
                        help="a build slower than this many seconds is not repeated, nor "
                        "traced for its heap peak")
    parser.add_argument("--only", type=lambda text: text.split(","),
                        help="time these reports only (comma-separated names)")
    parser.add_argument("--program", help="scope the reports to this program (default: all)")
    parser.add_argument("--tz", default="Europe/Paris", help="the reports' time zone")
    args = parser.parse_args()

    url, empty = prepare(args)
    try:
        if empty:
            print(f"generating {args.leads:,} leads and about {args.events:,} tracking events "
                  f"into {make_url(url).database}")
            child = multiprocessing.get_context("spawn").Process(
                target=generate, args=(url, args.leads, args.events, args.seed, args.event_log))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"generation failed (exit code {child.exitcode})")
        else:
            print(f"reusing the data in {make_url(url).database}")
        time_reports(url, args)
    finally:
        if not args.url and not args.keep:
            drop_private()
            print(f"dropped {PRIVATE_DB}")
        elif not args.url:
            print(f"kept {PRIVATE_DB}: {url} (--reuse times it again)")


if __name__ == "__main__":
    main()
