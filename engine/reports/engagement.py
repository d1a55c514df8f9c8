"""Engagement: what the emails of a program did, per email (and the asset version sent), rolled
up per track, per persona and per landing page, and per link.

Definitions:
- Period: a cohort of sends. An email counts in the period (and the bucket) in which it went
  out; its opens, clicks, bounces, unsubscribes, complaints and forms count whenever they came,
  up to the moment the report runs, so the figures of recent sends still grow.
- Sent: the emails that went out (sent_emails, written when they did, engine/sending/
  responses.py): accepted by the mail server (at the first 250), or refused by it for good
  after an SMTP attempt (when it was refused). Rows skipped (suppressed, no consent...), still
  waiting, or failed before any attempt (content the renderer refused) were not sent.
- Bounced hard: refused for good by the mail server at send time, or reported later as a hard
  bounce (a DSN with a 5.x.x status, engine/sending/bounces.py). Bounced soft (and not hard):
  the engine gave up after temporary failures, or a delay or temporary failure was reported
  later. Delivered = sent - bounced hard - bounced soft.
- Unique human opens: emails (one per recipient) with at least one open, view in the browser
  or click not filtered as a machine's (a click counts as an open: images may be blocked).
  Unique human clicks: emails with at least one such click. Click-to-open = unique clicks /
  unique opens; open rate and click rate are over delivered.
- Bot opens and bot clicks: the events filtered as a machine's (scanners, prefetchers, Apple's
  privacy proxy; engine/tracking/bots.py), counted as events, apart from the human figures.
- Unsubscribes and complaints (an abuse report, which unsubscribes), and hard or soft bounces
  reported later are put on an email when they are recorded (engine/sending/responses.py): a
  soft bounce naming its message (Message-ID) on that email, the others on the last email the
  lead was sent before them. A form submission is put on the last email of the form's program
  the lead was sent before it; a form with no email before it counts on its page only. Each
  counts once per email.
- Persona: the persona the email was chosen for (its enrollment's when it was queued). Track:
  the tracks of the program version sent that hold the email (joined when several do).
- Landing pages count what happened in the period itself (visits, forms and clicks of email
  links to the page, by when they happened), not a cohort of sends: human visits and visitors
  (leads), bot visits, email clicks to the page (human), form submissions, and those that
  followed an email of the program.
- Links: clicks per link of an email (its index in the email, and its destination), human and
  bot, for the emails sent in the period. A link nobody clicked is not listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from engine.assets.models import AssetVersion
from engine.db import utcnow
from engine.pages.models import FormSubmission
from engine.programs.models import ProgramRecord
from engine.programs.store import program_at, running_version
from engine.reports.model import (
    Chart,
    Column,
    Report,
    Table,
    dimension_columns,
    dimensions,
    rate,
)
from engine.reports.query import ReportQuery
from engine.reports.scope import UNSET, Scope, bucket_label, program_id
from engine.sending.models import SentEmail
from engine.tracking.links import HONEYPOT
from engine.tracking.models import TrackingEvent

# The counts summed per email, in the order the tables show them.
COUNTS = ("sent", "bounced_hard", "bounced_soft", "opens", "clicks", "unsubscribes",
          "complaints", "forms", "bot_opens", "bot_clicks")


def build(session: Session, query: ReportQuery, *, now: datetime | None = None) -> Report:
    report = Report(name="engagement", title="Engagement", query=query,
                    generated_at=now or utcnow())
    names = _program_names(session)
    per_email = _per_email(session, query, _sends(session, query))
    report.tables += [
        _email_table(session, query, per_email, names),
        _track_table(session, query, per_email, names),
        _persona_table(query, per_email, names),
        _page_table(session, query, names),
        _link_table(session, query, _sends(session, query, clicked=True), names),
    ]
    report.notes += [
        ("Emails count in the period they were sent; their responses count whenever they came, "
        "up to now, so the figures of recent sends still grow."),
        ("Bot-filtered opens and clicks (mail scanners, prefetchers) are counted apart, as "
        "events; unique opens and clicks count emails with a person's open or click."),
    ]
    return report


# -- the cohort of sends ------------------------------------------------------------------------

def _sends(session: Session, query: ReportQuery, *, clicked: bool = False):
    """One row per email that went out in the period and is in scope (`clicked`: that a person
    or a machine clicked, read from their own index), with its bucket, split value, persona,
    and what happened to it (engine/sending/responses.py keeps the responses on it as they
    are recorded; engine/tracking/service.py its opens and clicks)."""
    sent = SentEmail
    soft = and_(not_(sent.hard_bounced), sent.soft_bounced)
    program = program_id(session, query)
    columns = [
        sent.outbox_id.label("id"), sent.program_id.label("program_id"),
        sent.program_version.label("program_version"), sent.step.label("step"),
        sent.asset_version_id.label("asset_version_id"),
        bucket_label(sent.out_at, query.buckets()).label("period"),
        func.coalesce(sent.persona, UNSET).label("persona"),
        _flag(sent.hard_bounced).label("bounced_hard"), _flag(soft).label("bounced_soft"),
        _flag(sent.opened).label("opens"), _flag(sent.clicked).label("clicks"),
        _flag(sent.unsubscribed).label("unsubscribes"),
        _flag(sent.complained).label("complaints"),
        sent.bot_opens.label("bot_opens"), sent.bot_clicks.label("bot_clicks")]
    sends = select(*columns).where(sent.out_at >= query.start, sent.out_at < query.end)
    if clicked:  # as the partial index ix_sent_emails_clicked
        sends = sends.where(or_(sent.clicked, sent.bot_clicks > 0))
    if program is not None:
        sends = sends.where(sent.program_id == program)
    if query.split is None:  # a send's lead is enrolled in its program: no scope to join
        return sends.add_columns(literal(UNSET).label("split")).subquery("sends")
    scope = Scope(session, query)
    return scope.join(sends.add_columns(scope.split.label("split")), sent.lead_id).subquery("sends")


def _flag(condition) -> ColumnElement:
    return case((condition, 1), else_=0)


def _per_email(session: Session, query: ReportQuery, sends) -> dict[tuple, dict[str, int]]:
    """Counts per (period, split, persona, program id, version, email, asset version): the
    finest grain, which every email table sums (each email counts once, so sums are exact).
    A form counts on the email it followed (FormSubmission.outbox_id), once."""
    forms = (select(FormSubmission.outbox_id.label("outbox_id"))
             .where(FormSubmission.outbox_id.is_not(None),
                    FormSubmission.created_at >= query.start)
             .distinct().subquery("forms"))
    keys = (sends.c.period, sends.c.split, sends.c.persona, sends.c.program_id,
            sends.c.program_version, sends.c.step, sends.c.asset_version_id)
    sums = [func.count() if name == "sent"
            else func.count(forms.c.outbox_id) if name == "forms"
            else func.sum(sends.c[name]) for name in COUNTS]
    grouped = (select(*keys, *sums)
               .outerjoin(forms, forms.c.outbox_id == sends.c.id).group_by(*keys))
    return {tuple(row[:len(keys)]): dict(zip(COUNTS, (int(v or 0) for v in row[len(keys):]),
                                             strict=True))
            for row in session.execute(grouped)}


# -- tables -----------------------------------------------------------------------------------

def _metric_columns() -> list[Column]:
    return [Column("sent", "sent"), Column("delivered", "delivered"),
            Column("bounced_hard", "bounced hard"), Column("bounced_soft", "bounced soft"),
            Column("opens", "unique opens"), Column("clicks", "unique clicks"),
            Column("open_rate", "open rate", "rate"), Column("click_rate", "click rate", "rate"),
            Column("click_to_open", "click-to-open", "rate"),
            Column("unsubscribes", "unsubscribes"), Column("complaints", "complaints"),
            Column("forms", "form submissions"), Column("bot_opens", "bot opens"),
            Column("bot_clicks", "bot clicks")]


def _metrics(counts: dict[str, int]) -> dict:
    delivered = counts["sent"] - counts["bounced_hard"] - counts["bounced_soft"]
    return {"sent": counts["sent"], "delivered": delivered,
            "bounced_hard": counts["bounced_hard"], "bounced_soft": counts["bounced_soft"],
            "opens": counts["opens"], "clicks": counts["clicks"],
            "open_rate": rate(counts["opens"], delivered),
            "click_rate": rate(counts["clicks"], delivered),
            "click_to_open": rate(counts["clicks"], counts["opens"]),
            "unsubscribes": counts["unsubscribes"], "complaints": counts["complaints"],
            "forms": counts["forms"], "bot_opens": counts["bot_opens"],
            "bot_clicks": counts["bot_clicks"]}


def _rolled_up(query: ReportQuery, per_email: dict[tuple, dict[str, int]],
               key_of) -> list[tuple[tuple, dict[str, int]]]:
    """Sum the per-email counts under key_of(key) (prefixed by period and split), ordered by
    bucket, then split, then the rest of the key."""
    sums: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for key, counts in per_email.items():
        total = sums[(key[0], key[1], *key_of(key))]
        for name in COUNTS:
            total[name] += counts[name]
    order = {bucket.label: i for i, bucket in enumerate(query.buckets())}
    return sorted(sums.items(), key=lambda item: (order.get(item[0][0], -1),
                                                  tuple(str(v) for v in item[0][1:])))


def _email_table(session: Session, query: ReportQuery, per_email, names: dict[int, str]) -> Table:
    versions = _asset_versions(session, {key[6] for key in per_email if key[6] is not None})
    rows = []
    for key, counts in _rolled_up(query, per_email, lambda k: (names.get(k[3], ""), k[5], k[6])):
        period, split, program, step, version_id = key
        rows.append({**dimensions(query, period, split), "program": program, "email": step,
                     "version": versions.get(version_id, "-"), **_metrics(counts)})
    return Table(
        key="emails", title="Per email",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("email", "email", "text"), Column("version", "version", "text"),
                 *_metric_columns()],
        rows=rows,
        chart=Chart("bar", x="email", series=("opens", "clicks"),
                    title="Unique human opens and clicks per email"),
        notes=["version: the asset version sent (- when the send did not record one).",
               ("Delivered = sent - bounced; open and click rates are over delivered, "
               "click-to-open is unique clicks over unique opens."),
               ("Unsubscribes, complaints, bounces reported later and form submissions count "
               "on the last email the lead was sent before them.")])


def _track_table(session: Session, query: ReportQuery, per_email, names: dict[int, str]) -> Table:
    tracks: dict[tuple[int, int, str], str] = {}
    for key in per_email:
        program, version, step = key[3], key[4], key[5]
        if (program, version, step) not in tracks:
            spec = program_at(session, program, version)
            holding = [name for name, steps in spec.tracks.items()
                       if any(s.email == step for s in steps)]
            tracks[(program, version, step)] = ", ".join(holding) or "(in no track)"
    rows = [{**dimensions(query, period, split), "program": program, "track": track,
             **_metrics(counts)}
            for (period, split, program, track), counts in _rolled_up(
                query, per_email, lambda k: (names.get(k[3], ""), tracks[(k[3], k[4], k[5])]))]
    return Table(
        key="tracks", title="Per track",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("track", "track", "text"), *_metric_columns()],
        rows=rows,
        chart=Chart("bar", x="track", series=("opens", "clicks"),
                    title="Unique human opens and clicks per track"),
        notes=["An email in several tracks counts once, under their names joined."])


def _persona_table(query: ReportQuery, per_email, names: dict[int, str]) -> Table:
    rows = [{**dimensions(query, period, split), "program": program, "persona": persona,
             **_metrics(counts)}
            for (period, split, program, persona), counts in _rolled_up(
                query, per_email, lambda k: (names.get(k[3], ""), k[2]))]
    return Table(
        key="personas", title="Per persona",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("persona", "persona", "text"), *_metric_columns()],
        rows=rows,
        chart=Chart("bar", x="persona", series=("opens", "clicks"),
                    title="Unique human opens and clicks per persona"),
        notes=[(f"persona: the one the email was chosen for (its enrollment's); {UNSET} when "
               "it is not known.")])


def _link_table(session: Session, query: ReportQuery, sends, names: dict[int, str]) -> Table:
    event = TrackingEvent
    human = event.bot.is_(False)
    clicks = (select(sends.c.period, sends.c.split, sends.c.program_id, sends.c.step,
                     event.link_index, event.url, event.outbox_id,
                     case((human, 1), else_=0).label("human"),
                     case((human, event.outbox_id)).label("human_row"),
                     case((human, 0), else_=1).label("bot"))
              .join(sends, sends.c.id == event.outbox_id)
              # a click on an email sent in the period came after the period began
              .where(_kind_is("click"), event.at >= query.start)).subquery("clicks")
    keys = (clicks.c.period, clicks.c.split, clicks.c.program_id, clicks.c.step,
            clicks.c.link_index)
    grouped = (select(*keys, func.min(clicks.c.url), func.sum(clicks.c.human),
                      func.count(func.distinct(clicks.c.human_row)), func.sum(clicks.c.bot))
               .group_by(*keys))
    order = {bucket.label: i for i, bucket in enumerate(query.buckets())}
    found = sorted(session.execute(grouped).all(), key=lambda r: (
        order.get(r[0], -1), str(r[1]), names.get(r[2], ""), r[3],
        -2 if r[4] is None else r[4]))
    rows = [{**dimensions(query, period, split), "program": names.get(program, ""),
             "email": step, "link": _link_label(index), "url": _url_label(index, url),
             "clicks": int(human or 0), "unique_clicks": int(unique or 0),
             "bot_clicks": int(bot or 0)}
            for period, split, program, step, index, url, human, unique, bot in found]
    return Table(
        key="links", title="Per link",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("email", "email", "text"), Column("link", "link", "text"),
                 Column("url", "destination", "text"), Column("clicks", "human clicks"),
                 Column("unique_clicks", "unique human clicks"),
                 Column("bot_clicks", "bot clicks")],
        rows=rows,
        notes=[("link: the link's place in the email (1 is the first tracked link); the hidden "
                "link only scanners follow is listed as such. Links nobody clicked are not "
                "listed."),
               "destination: the URL without its query string (it may hold a lead's token).",
               "unique human clicks: emails with a person's click on the link."])


def _kind_is(kind: str) -> ColumnElement[bool]:
    """Events of one kind, the kind written into the SQL: the database reads a kind's clicks
    or visits from that kind's own index (engine/tracking/models.py), which a plan made for
    any kind (a bound parameter) could not use."""
    return TrackingEvent.kind == bindparam(None, kind, literal_execute=True)


def _link_label(index: int | None) -> str:
    if index is None:
        return "-"
    return "hidden (scanners)" if index == HONEYPOT else str(index + 1)


def _url_label(index: int | None, url: str | None) -> str:
    """The destination without its query string: a link to a landing page carries the
    lead's signed token there (engine/render/personalise.py), which a report must not show."""
    if url:
        return url.split("?", 1)[0].split("#", 1)[0]
    return "(the hidden link)" if index == HONEYPOT else "-"


# -- landing pages ----------------------------------------------------------------------------

PAGE_COUNTS = ("email_clicks", "visits", "visitors", "bot_visits", "forms", "forms_after_email")


def _page_table(session: Session, query: ReportQuery, names: dict[int, str]) -> Table:
    counts: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PAGE_COUNTS, 0))
    for key, found in _page_events(session, query, names):
        for name, value in found.items():
            counts[key][name] += int(value or 0)
    order = {bucket.label: i for i, bucket in enumerate(query.buckets())}
    rows = [{**dimensions(query, period, split), "program": program, "page": page, **found}
            for (period, split, program, page), found in sorted(
                counts.items(), key=lambda item: (order.get(item[0][0], -1), item[0][1:]))]
    return Table(
        key="pages", title="Per landing page",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("page", "page", "text"), Column("email_clicks", "email clicks"),
                 Column("visits", "human visits"), Column("visitors", "human visitors"),
                 Column("bot_visits", "bot visits"), Column("forms", "form submissions"),
                 Column("forms_after_email", "forms after an email")],
        rows=rows,
        chart=Chart("bar", x="page", series=("visits", "forms"),
                    title="Human visits and form submissions per landing page"),
        notes=[("Landing pages count what happened in the period (not a cohort of sends): "
               "visits known by the lead's link, clicks of email links to the page, forms."),
               "forms after an email: submissions by a lead the program had emailed before."])


def _page_events(session: Session, query: ReportQuery,
                 names: dict[int, str]) -> Iterable[tuple[tuple, dict[str, int]]]:
    """((period, split, program name, page slug), counts) from visits, clicks and forms."""
    scope = Scope(session, query)
    buckets, program = query.buckets(), program_id(session, query)
    prefix = f"/p/{query.program}/" if query.program else "/p/"
    event = TrackingEvent
    in_period = and_(event.at >= query.start, event.at < query.end)
    human = event.bot.is_(False)
    visits = (scope.join(select(bucket_label(event.at, buckets).label("period"),
                                scope.split.label("split"), event.url,
                                case((human, 1), else_=0).label("human"),
                                case((human, event.lead_id)).label("visitor"),
                                case((human, 0), else_=1).label("bot")), event.lead_id)
              .where(_kind_is("page_view"), in_period,
                     event.url.startswith(prefix, autoescape=True))).subquery("visits")
    grouped = (select(visits.c.period, visits.c.split, visits.c.url, func.sum(visits.c.human),
                      func.count(func.distinct(visits.c.visitor)), func.sum(visits.c.bot))
               .group_by(visits.c.period, visits.c.split, visits.c.url))
    for period, split, url, human_visits, visitors, bots in session.execute(grouped):
        parts = (url or "").split("?", 1)[0].strip("/").split("/")
        if len(parts) == 3:
            yield ((period, split, parts[1], parts[2]),
                   {"visits": human_visits, "visitors": visitors, "bot_visits": bots})

    pages = _pages_in_scope(session, program)
    if pages:
        clicks = (scope.join(select(bucket_label(event.at, buckets).label("period"),
                                    scope.split.label("split"),
                                    _page_of(event.url, pages).label("page")), event.lead_id)
                  .where(_kind_is("click"), human, in_period)).subquery("page_clicks")
        grouped = (select(clicks.c.period, clicks.c.split, clicks.c.page, func.count())
                   .where(clicks.c.page.is_not(None))
                   .group_by(clicks.c.period, clicks.c.split, clicks.c.page))
        for period, split, page, count in session.execute(grouped):
            name, _, slug = page.partition("/")
            yield (period, split, name, slug), {"email_clicks": count}

    submitted = FormSubmission
    after_email = case((submitted.outbox_id.is_not(None), 1), else_=0)
    forms = (scope.join(select(bucket_label(submitted.created_at, buckets).label("period"),
                               scope.split.label("split"), submitted.program_id,
                               submitted.page, after_email.label("after_email")),
                        submitted.lead_id)
             .where(submitted.created_at >= query.start, submitted.created_at < query.end))
    if program is not None:
        forms = forms.where(submitted.program_id == program)
    forms = forms.subquery("forms")
    keys = (forms.c.period, forms.c.split, forms.c.program_id, forms.c.page)
    grouped = select(*keys, func.count(), func.sum(forms.c.after_email)).group_by(*keys)
    for period, split, form_program, page, count, after in session.execute(grouped):
        yield ((period, split, names.get(form_program, ""), page),
               {"forms": count, "forms_after_email": after})


def _pages_in_scope(session: Session, program: int | None) -> list[str]:
    """'program/slug' of the pages of the programs in scope (their running versions)."""
    records = session.scalars(select(ProgramRecord).where(
        ProgramRecord.current_version.is_not(None),
        ProgramRecord.id == program if program is not None else true()))
    pages = []
    for record in records:
        spec = program_at(session, record.id, running_version(record))
        pages += [f"{record.name}/{page.slug}" for page in spec.pages.values()]
    return pages


def _page_of(url, pages: list[str]) -> ColumnElement:
    """The page ('program/slug') a clicked URL leads to, or NULL."""
    conditions = []
    for page in pages:
        path = f"/p/{page}"
        matches = or_(url.endswith(path, autoescape=True),
                      *(url.contains(path + tail, autoescape=True) for tail in ("?", "#", "/")))
        conditions.append((matches, page))
    return case(*conditions, else_=None) if conditions else literal(None)


# -- names ------------------------------------------------------------------------------------

def _program_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(ProgramRecord.id, ProgramRecord.name)).all())


def _asset_versions(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    found = session.execute(select(AssetVersion.id, AssetVersion.version)
                            .where(AssetVersion.id.in_(sorted(ids))))
    return {version_id: f"v{number}" for version_id, number in found}

