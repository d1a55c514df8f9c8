"""What the CRM holds, kept here as it tells us (engine/flows/crm.py): accounts, a lead's
record there (a lead, or a contact under an account), and opportunities with their contacts
and every change.

An account is matched by its CRM id, else by its web domain: a lead belongs to the account it
was put under, else to the one whose domain is its email's (never a free-mail domain).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.crm.fieldmap import ACCOUNT_FIELDS, OPPORTUNITY_FIELDS
from engine.crm.models import (
    Account,
    Opportunity,
    OpportunityChange,
    OpportunityContact,
    OpportunityStatus,
)
from engine.errors import Invalid
from engine.leads.models import Lead

FREE_MAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "proton.me",
    "protonmail.com", "gmx.com", "gmx.de", "gmx.net", "web.de", "mail.com", "yandex.ru",
    "qq.com", "163.com", "zoho.com", "fastmail.com", "hey.com", "orange.fr", "free.fr",
})


def web_domain(value: str | None) -> str | None:
    """`https://www.Globex.example/about` -> `globex.example`: how an account's website and a
    lead's email domain compare."""
    if not value or not value.strip():
        return None
    text = value.strip().lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    host = host.removeprefix("www.").strip(".")
    if "." not in host or len(host) > 253:
        raise Invalid(f"not a web domain: {value[:100]!r}", field="domain")
    return host


def email_domain(email: str) -> str | None:
    """The company domain of an email address; None for free mail."""
    domain = email.rpartition("@")[2].lower()
    return None if not domain or domain in FREE_MAIL else domain


# -- accounts ---------------------------------------------------------------------------------

def find_account(session: Session, *, crm_id: str | None = None,
                 domain: str | None = None) -> Account | None:
    if crm_id:
        found = session.scalar(select(Account).where(Account.crm_id == crm_id))
        if found is not None:
            return found
    if domain:
        return session.scalar(select(Account).where(Account.domain == domain))
    return None


def account_of(session: Session, lead: Lead) -> Account | None:
    """The account a lead was put under, else the one of its email's domain."""
    if lead.account_id is not None:
        return session.get(Account, lead.account_id)
    domain = email_domain(lead.email)
    return find_account(session, domain=domain) if domain else None


def upsert_account(session: Session, *, crm_id: str | None, fields: Mapping, now: datetime,
                   crm_updated_at: datetime | None = None) -> tuple[Account, dict]:
    """The account by CRM id, else by domain (created when neither matches), with `fields`
    (ACCOUNT_FIELDS) written. Returns it and what changed ({field: {"from", "to"}})."""
    fields = dict(fields)
    if "domain" in fields:
        fields["domain"] = web_domain(fields["domain"])
    _known(fields, ACCOUNT_FIELDS, "account")
    account = find_account(session, crm_id=crm_id, domain=fields.get("domain"))
    if account is None:
        account = Account(crm_id=crm_id, created_at=now, updated_at=now)
        session.add(account)
    elif crm_id and account.crm_id != crm_id:
        account.crm_id = crm_id  # matched by domain: now linked
    changes = _write(account, fields)
    if changes or account.id is None:
        account.updated_at = now
    if crm_updated_at is not None:
        account.crm_updated_at = crm_updated_at
    session.flush()
    return account, changes


# -- opportunities ----------------------------------------------------------------------------

def find_opportunity(session: Session, crm_id: str) -> Opportunity | None:
    return session.scalar(select(Opportunity).where(Opportunity.crm_id == crm_id))


def upsert_opportunity(session: Session, *, crm_id: str, fields: Mapping,
                       account: Account | None, contacts: list[tuple[Lead, str | None, bool]]
                       | None, now: datetime, actor: str,
                       crm_updated_at: datetime | None = None) -> tuple[Opportunity, str | None]:
    """Create or update the opportunity `crm_id` (OPPORTUNITY_FIELDS), under `account` when
    given, with its contacts (lead, role, primary) replaced when given. Every change is kept
    in its history. Returns it and the kind of change (created, updated, won, lost, reopened;
    None: nothing changed)."""
    _known(fields, OPPORTUNITY_FIELDS, "opportunity")
    opportunity = find_opportunity(session, crm_id)
    created = opportunity is None
    if created:
        opportunity = Opportunity(crm_id=crm_id, status=OpportunityStatus.OPEN, created_at=now,
                                  updated_at=now)
        session.add(opportunity)
    was = opportunity.status
    changes = _write(opportunity, fields)
    if account is not None and opportunity.account_id != account.id:
        changes["account"] = {"from": opportunity.account_id, "to": account.id}
        opportunity.account_id = account.id
    session.flush()
    if contacts is not None:
        changes.update(_set_contacts(session, opportunity, contacts))
    if crm_updated_at is not None:
        opportunity.crm_updated_at = crm_updated_at
    kind = _change_kind(created, was, opportunity.status, changes)
    if kind is None:
        return opportunity, None
    opportunity.updated_at = now
    if kind in ("won", "lost"):
        opportunity.closed_at = now
    elif kind == "reopened":
        opportunity.closed_at = None
    session.add(OpportunityChange(opportunity_id=opportunity.id, at=now, kind=kind,
                                  changes=changes, actor=actor))
    return opportunity, kind


def _change_kind(created: bool, was: str, status: str, changes: dict) -> str | None:
    if created:
        return "created"
    if status != was:
        return {OpportunityStatus.WON: "won", OpportunityStatus.LOST: "lost"}.get(status,
                                                                                  "reopened")
    return "updated" if changes else None


def _set_contacts(session: Session, opportunity: Opportunity,
                  contacts: list[tuple[Lead, str | None, bool]]) -> dict:
    before = {c.lead_id: (c.role, c.is_primary) for c in opportunity_contacts(session,
                                                                               opportunity.id)}
    after = {lead.id: (role, primary) for lead, role, primary in contacts}
    if before == after:
        return {}
    session.execute(delete(OpportunityContact)
                    .where(OpportunityContact.opportunity_id == opportunity.id))
    session.add_all(OpportunityContact(opportunity_id=opportunity.id, lead_id=lead_id,
                                       role=role, is_primary=primary)
                    for lead_id, (role, primary) in after.items())
    session.flush()
    return {"contacts": {"from": _roles(before), "to": _roles(after)}}


def _roles(contacts: dict) -> list[dict]:
    return [{"lead_id": lead_id, "role": role, "primary": primary}
            for lead_id, (role, primary) in sorted(contacts.items())]


def opportunity_contacts(session: Session, opportunity_id: int) -> list[OpportunityContact]:
    return list(session.scalars(select(OpportunityContact)
                                .where(OpportunityContact.opportunity_id == opportunity_id)
                                .order_by(OpportunityContact.lead_id)))


def lead_opportunities(session: Session, lead_id: int) -> list[tuple[Opportunity, str | None]]:
    """The lead's opportunities and its role in each, newest first."""
    rows = session.execute(select(Opportunity, OpportunityContact.role)
                           .join(OpportunityContact,
                                 OpportunityContact.opportunity_id == Opportunity.id)
                           .where(OpportunityContact.lead_id == lead_id)
                           .order_by(Opportunity.created_at.desc(), Opportunity.id.desc()))
    return [(opportunity, role) for opportunity, role in rows]


def opportunity_history(session: Session, opportunity_id: int) -> list[OpportunityChange]:
    return list(session.scalars(select(OpportunityChange)
                                .where(OpportunityChange.opportunity_id == opportunity_id)
                                .order_by(OpportunityChange.id)))


# -- shared -----------------------------------------------------------------------------------

def _known(fields: Mapping, allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise Invalid(f"unknown {what} field {unknown[0]!r} (one of {', '.join(allowed)})",
                      field=unknown[0])


def _write(record, fields: Mapping) -> dict:
    """Set `fields` on `record`; returns {field: {"from", "to"}} of those that changed."""
    changes = {}
    for name, value in fields.items():
        old = getattr(record, name)
        if old != value:
            changes[name] = {"from": as_json(old), "to": as_json(value)}
            setattr(record, name, value)
    return changes


def as_json(value):
    """A value as JSON keeps it (amounts and dates as text)."""
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def crm_view(session: Session, lead: Lead) -> dict:
    """A lead as the CRM has it: its record, its account and its opportunities."""
    account = account_of(session, lead)
    return {
        "id": lead.crm_id, "object": lead.crm_object,
        "account": None if account is None else {
            "id": account.id, "crm_id": account.crm_id, "name": account.name,
            "domain": account.domain, "owner": account.owner,
            "matched_by": "crm" if lead.account_id == account.id else "domain"},
        "opportunities": [{
            "crm_id": o.crm_id, "name": o.name, "role": role,
            "amount": None if o.amount is None else str(o.amount), "currency": o.currency,
            "stage": o.stage, "status": o.status, "owner": o.owner,
            "close_date": o.close_date.isoformat() if o.close_date else None,
            "updated_at": o.updated_at.isoformat()}
            for o, role in lead_opportunities(session, lead.id)],
    }
