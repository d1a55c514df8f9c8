"""Compose what one outbox row sends: the rendered email with signed per-purpose tokens,
tracked links, the open pixel and the unsubscribe headers. The view-in-browser page renders
through the same path, so it shows what the lead was sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy.orm import Session

from engine.assets.models import AssetVersion
from engine.assets.service import sendable_version
from engine.leads.models import Lead
from engine.pages.service import page_token
from engine.programs.spec import Program
from engine.render.message import build_message
from engine.render.personalise import (
    DEFAULT_BASE_URL,
    PLACEHOLDER_TOKEN,
    Links,
    RenderContext,
    Rendered,
    make_context,
    render_email,
)
from engine.sending.models import OutboxMessage
from engine.tracking.links import LINK_MARK, instrument, mark_links, new_mark
from engine.tracking.tokens import click_token, send_token, unsubscribe_token


@dataclass(frozen=True)
class Signing:
    secret_key: str = ""  # empty: placeholder tokens and no link tracking (previews, tests)
    base_url: str = DEFAULT_BASE_URL


@dataclass(frozen=True)
class Composed:
    message: EmailMessage
    links: list[str]  # tracked destinations by index, stored on the row before the send
    asset_version_id: int  # what was rendered, stored with them (view in browser shows it)


@dataclass(frozen=True)
class RowRender:
    rendered: Rendered
    links: Links
    destinations: list[str]
    asset_version_id: int


def render_for_row(*, session: Session, row: OutboxMessage, lead: Lead, program: Program,
                   signing: Signing) -> RowRender:
    """The email as this lead gets it, instrumented for tracking when a secret key is set:
    the asset version the row was sent with, else the launched one. Raises RenderFailed (a
    NurtureError) for content the sandbox refuses, NotFound for an email not launched."""
    email = program.emails[row.step]
    version = (session.get(AssetVersion, row.asset_version_id) if row.asset_version_id
               else sendable_version(session=session, program_id=row.program_id, path=email.file))
    links = _links(row, lead, program, signing)
    context = make_context(lead=lead, program=program, links=links)
    done = tracked(version_id=version.id, html=version.compiled_html,
                   text=version.compiled_text, subject=email.subject, context=context,
                   where=email.file, signing=signing, lead_id=lead.id, outbox_id=row.id)
    return RowRender(done.rendered, links, done.destinations, version.id)


@dataclass(frozen=True)
class Tracked:
    rendered: Rendered
    destinations: list[str]  # tracked destinations by index; none without a secret key


def tracked(*, version_id: int | None, html: str, text: str, subject: str,
            context: RenderContext, where: str, signing: Signing, lead_id: int,
            outbox_id: int) -> Tracked:
    """The compiled email rendered for one lead as it is sent: with a secret key, the links
    the asset wrote go through signed click redirects (lead data never does: see
    engine/tracking/links.py), with the open pixel and the honeypot. QA measures the size of
    what is sent through this too."""
    if not signing.secret_key:
        return Tracked(render_email(version_id=version_id, html=html, text=text,
                                    subject=subject, context=context, where=where), [])
    marked_html, marked_text = mark_links(html=html, text=text)
    mark = new_mark()
    rendered = render_email(version_id=version_id, html=marked_html, text=marked_text,
                            subject=subject, context=context, where=where,
                            engine_variables={LINK_MARK: mark})
    key, base, links = signing.secret_key, signing.base_url, context.links
    done = instrument(
        html=rendered.html, text=rendered.text, mark=mark,
        click_url=lambda n, url: f"{base}/c/" + click_token(key, lead_id=lead_id,
                                                            outbox_id=outbox_id, index=n, url=url),
        open_url=f"{base}/o/{send_token(key, 'open', lead_id=lead_id, outbox_id=outbox_id)}.gif",
        untracked=(links.unsubscribe, links.view_in_browser))
    return Tracked(Rendered(subject=rendered.subject, html=done.html, text=done.text),
                   done.links)


def compose(*, session: Session, row: OutboxMessage, lead: Lead, program: Program,
            now: datetime, signing: Signing) -> Composed:
    done = render_for_row(session=session, row=row, lead=lead, program=program, signing=signing)
    message = build_message(rendered=done.rendered, sender=program.sender, to=lead.email,
                            date=now, message_id=row.message_id,
                            unsubscribe_url=done.links.unsubscribe)
    return Composed(message=message, links=done.destinations,
                    asset_version_id=done.asset_version_id)


def _links(row: OutboxMessage, lead: Lead, program: Program, signing: Signing) -> Links:
    key = signing.secret_key
    if not key:
        return Links(base_url=signing.base_url, program=program.slug, token=PLACEHOLDER_TOKEN)
    return Links(base_url=signing.base_url, program=program.slug,
                 token=unsubscribe_token(key, lead_id=lead.id, outbox_id=row.id),
                 view_token=send_token(key, "view", lead_id=lead.id, outbox_id=row.id),
                 page_token=page_token(secret_key=key, lead_id=lead.id))
