"""What the CRM tells us (POST /api/v1/crm/events, `nurture crm import`): one event at a time,
applied whole or not at all, once per event id.

    {"id": "evt-981", "type": "opportunity.won", "occurred_at": "2026-11-02T08:00:00Z",
     "data": {"id": "006A1", "account_id": "001B7", "fields": {"Amount": 48000},
              "contacts": [{"email": "ada@globex.example", "role": "Decision Maker",
                            "primary": true}]}}

Fields come under the CRM's names and are read through the field map (engine/crm/fieldmap.py):
only what it pulls is taken, values are translated back, and a field both sides hold with
different values is settled by the map's rule and noted in the event's log. A lead's fields
and stage then go through the one path every door uses (engine/flows/leads.py), so the
transition table holds; an opportunity moves its contacts along the table's shortest legal
path (to `opportunity`, `customer` when won, `recycled` when lost and none other is open).

Two CRM records for one email (part of a duplicate in the CRM): the record updated most
recently wins, and the case is kept in the event's log (`nurture crm duplicates`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.crm.fieldmap import NEVER_SYNC, CrmMap, is_blank
from engine.crm.models import Account, CrmInboundEvent, OpportunityStatus
from engine.crm.outbox import CRM_ACTOR
from engine.crm.records import (
    account_of,
    as_json,
    find_opportunity,
    lead_opportunities,
    opportunity_contacts,
    upsert_account,
    upsert_opportunity,
)
from engine.db import Database
from engine.errors import Invalid, NotFound, NurtureError
from engine.flows.leads import change_stage, upsert_lead
from engine.leads.fields import BAD_TEXT, normalise_email
from engine.leads.models import Lead
from engine.leads.stages import TRANSITIONS
from engine.sales.service import assign_owner

MAX_FIELDS = 200
MAX_CONTACTS = 500


# -- the event --------------------------------------------------------------------------------

def _text(value: str) -> str:
    if BAD_TEXT.search(value):
        raise PydanticCustomError("bad_text",
                                  "must not contain NUL characters or unpaired surrogates")
    return value


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except Invalid as exc:
        raise PydanticCustomError("email", "{detail}", {"detail": exc.detail}) from None


CrmId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
                  AfterValidator(_text)]
Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(_email)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 AfterValidator(_text)]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_text)]
FieldValue = (Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_text)]
              | int | float | bool | None)
Fields = Annotated[dict[FieldName, FieldValue], Field(max_length=MAX_FIELDS)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountRef(_Data):
    id: CrmId
    fields: Fields = {}


class RecordData(_Data):
    """A lead or a contact: found by its CRM id, else its email."""

    id: CrmId
    email: Email | None = None
    updated_at: AwareDatetime | None = None  # when the CRM last changed it (else occurred_at)
    fields: Fields = {}
    account: AccountRef | None = None  # a contact's account


class ConvertedData(_Data):
    """A lead converted into a contact under an account."""

    email: Email
    contact_id: CrmId
    lead_id: CrmId | None = None
    updated_at: AwareDatetime | None = None
    account: AccountRef | None = None


class AccountData(_Data):
    id: CrmId
    updated_at: AwareDatetime | None = None
    fields: Fields = {}


class ContactRole(_Data):
    id: CrmId | None = None  # the contact's CRM id, or its email
    email: Email | None = None
    role: Name | None = None
    primary: bool = False


class OpportunityData(_Data):
    id: CrmId
    updated_at: AwareDatetime | None = None
    account_id: CrmId | None = None
    fields: Fields = {}
    contacts: Annotated[list[ContactRole], Field(max_length=MAX_CONTACTS)] | None = None


class OwnerData(_Data):
    object: Literal["lead", "contact", "account", "opportunity"]
    id: CrmId | None = None
    email: Email | None = None
    owner: Name


DATA: dict[str, type[BaseModel]] = {
    "lead.updated": RecordData, "contact.updated": RecordData, "lead.converted": ConvertedData,
    "account.updated": AccountData, "opportunity.created": OpportunityData,
    "opportunity.updated": OpportunityData, "opportunity.won": OpportunityData,
    "opportunity.lost": OpportunityData, "owner.changed": OwnerData,
}
TYPES = tuple(DATA)
EventId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                    AfterValidator(_text)]


class CrmEventHead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EventId
    type: Literal[TYPES]  # type: ignore[valid-type]
    occurred_at: AwareDatetime
    data: dict[str, Any]


def _envelope(kind: str, data: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"CrmEvent_{kind.replace('.', '_')}", __base__=CrmEventHead,
                        type=(Literal[kind], ...), data=(data, ...))


ENVELOPES = {kind: _envelope(kind, data) for kind, data in DATA.items()}


def parse_event(raw: Any) -> CrmEventHead:
    """One event, validated as its type says; raises Invalid or ValidationError (whose 422
    names every invalid field, e.g. `data.contacts.0.email`)."""
    if not isinstance(raw, dict):
        raise Invalid("an event must be a JSON object", field="body")
    head = CrmEventHead.model_validate(raw)
    return ENVELOPES[head.type].model_validate(raw)


# -- applying it ------------------------------------------------------------------------------

@dataclass
class Applied:
    """What one event did: `outcome` applied, repeat (seen before: nothing done) or refused."""

    event_id: str
    type: str
    outcome: str
    changes: list[str] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # CRM fields the map does not pull

    def detail(self) -> dict:
        return {"changes": self.changes, "conflicts": self.conflicts,
                "duplicates": self.duplicates, "ignored": self.ignored}

    def as_dict(self) -> dict:
        return {"id": self.event_id, "type": self.type, "outcome": self.outcome,
                **self.detail()}


def receive_crm_event(*, db: Database, event: CrmEventHead, crm_map: CrmMap,
                      now: datetime) -> Applied:
    """Apply one event in its own transaction (the API's door); a refused one changes nothing,
    is logged with why, and raised."""
    with db.session() as session:
        applied, refused = apply_or_refuse(session=session, event=event, crm_map=crm_map,
                                           now=now)
    if refused is not None:
        raise refused
    return applied


def apply_or_refuse(*, session: Session, event: CrmEventHead, crm_map: CrmMap,
                    now: datetime) -> tuple[Applied | None, NurtureError | None]:
    """Apply one event in a savepoint of `session`, whichever door it came in by (the API, a
    CSV import's rows, many to a transaction): whole, or, refused, not at all and logged with
    why. Returns what it did, or why it was refused."""
    try:
        with session.begin_nested():
            return apply_crm_event(session=session, event=event, crm_map=crm_map,
                                   now=now), None
    except NurtureError as exc:
        record_refusal(session=session, event_id=event.id, kind=event.type, now=now,
                       error=str(exc))
        return None, exc


def apply_crm_event(*, session: Session, event: CrmEventHead, crm_map: CrmMap,
                    now: datetime) -> Applied:
    """Apply one parsed event in `session` (the caller commits, or rolls back on an error:
    nothing is half-applied). A repeat of an event id applied before does nothing."""
    seen = session.scalar(select(CrmInboundEvent).where(CrmInboundEvent.event_id == event.id))
    if seen is not None and seen.outcome == "applied":
        return Applied(event.id, event.type, "repeat", **seen.detail)
    applied = Applied(event.id, event.type, "applied")
    try:
        _Apply(session, crm_map, now, event, applied).run()
    except _Stale:
        pass  # the older of two records for one email: kept in the log, nothing applied
    if seen is None:
        seen = CrmInboundEvent(event_id=event.id, type=event.type)
        session.add(seen)
    seen.received_at, seen.occurred_at = now, event.occurred_at
    seen.outcome, seen.detail = "applied", applied.detail()
    session.flush()
    return applied


def record_refusal(*, session: Session, event_id: str, kind: str, now: datetime,
                   error: str) -> None:
    """Log a refused event (after its changes were rolled back); a later good one with the
    same id is still applied."""
    seen = session.scalar(select(CrmInboundEvent).where(CrmInboundEvent.event_id == event_id))
    if seen is None:
        seen = CrmInboundEvent(event_id=event_id, type=kind[:40])
        session.add(seen)
    elif seen.outcome == "applied":
        return
    seen.received_at, seen.occurred_at = now, None
    seen.outcome, seen.detail = "refused", {"error": error[:2000]}


class _Apply:
    """One event's changes, in its session."""

    def __init__(self, session: Session, crm_map: CrmMap, now: datetime, event, applied):
        self.session, self.map, self.now = session, crm_map, now
        self.event, self.data, self.applied = event, event.data, applied
        self.at = getattr(event.data, "updated_at", None) or event.occurred_at
        self.changed_here: dict[int, bool] = {}  # per lead touched, before this event

    def run(self) -> None:
        self.apply()
        for lead_id in self.changed_here:  # what the CRM just set is in sync
            self.session.get(Lead, lead_id).crm_synced_at = self.now

    def touch(self, lead: Lead) -> bool:
        """Whether the lead changed here since the CRM's last event about it (first touch:
        before this event changes anything)."""
        if lead.id not in self.changed_here:
            synced = lead.crm_synced_at
            self.changed_here[lead.id] = synced is None or lead.updated_at > synced
        return self.changed_here[lead.id]

    def apply(self) -> None:
        kind = self.event.type
        if kind in ("lead.updated", "contact.updated"):
            self.record(kind.partition(".")[0])
        elif kind == "lead.converted":
            self.converted()
        elif kind == "account.updated":
            self.account(self.data.id, self.data.fields, "data.fields")
        elif kind.startswith("opportunity."):
            self.opportunity(kind.partition(".")[2])
        else:
            self.owner()

    # leads and contacts

    def record(self, obj: str) -> None:
        data = self.data
        lead = self.lead_for(data.id, data.email, obj)
        account = (self.account(data.account.id, data.account.fields, "data.account.fields")
                   if data.account else None)
        if lead is None:
            if data.email is None:
                raise NotFound(f"no lead with CRM id {data.id!r}, and no email to create it "
                               "by", field="data.email")
            fields, owner = self.pulled(None, obj, data.fields)
            lead, _ = upsert_lead(session=self.session, fields={**fields, "email": data.email},
                                  now=self.now, actor=CRM_ACTOR)
            self.applied.changes.append(f"lead {lead.email} created")
            self.touch(lead)
            self.link(lead, data.id, obj, account)
        else:
            self.touch(lead)
            self.link(lead, data.id, obj, account)
            fields, owner = self.pulled(lead, obj, data.fields)
            if fields:
                upsert_lead(session=self.session, fields={**fields, "email": lead.email},
                            now=self.now, actor=CRM_ACTOR)
                self.applied.changes.append(f"lead {lead.email}: {', '.join(sorted(fields))}")
        if owner is not None:
            self.set_owner(lead, owner)

    def lead_for(self, crm_id: str, email: str | None, obj: str) -> Lead | None:
        """The lead a CRM record is, by CRM id, else by email; two records for one email are a
        duplicate, settled for the record updated last."""
        by_id = self.session.scalar(select(Lead).where(Lead.crm_id == crm_id))
        if by_id is not None:
            return by_id
        if email is None:
            return None
        lead = self.session.scalar(select(Lead).where(Lead.email == email))
        if lead is not None and lead.crm_id and lead.crm_id != crm_id:
            newer = lead.crm_updated_at is None or self.at > lead.crm_updated_at
            kept = crm_id if newer else lead.crm_id
            self.applied.duplicates.append({
                "email": email, "records": [lead.crm_id, crm_id], "kept": kept,
                "rule": "the record updated most recently wins"})
            if not newer:
                raise _Stale(kept)
        return lead

    def link(self, lead: Lead, crm_id: str, obj: str, account: Account | None) -> None:
        if lead.crm_id != crm_id or obj == "contact":  # another record, or converted
            lead.crm_object = obj
        lead.crm_id, lead.crm_updated_at = crm_id, self.at
        if account is not None:
            lead.account_id = account.id

    def pulled(self, lead: Lead | None, obj: str, crm_fields: dict) -> tuple[dict, str | None]:
        """The fields (and the owner) the CRM's values are taken for, by the map: all it
        pulls for a new lead; for a known one, those `taken` says."""
        self.applied.ignored += self.map.unmapped(obj, crm_fields)
        pulled = self.map.from_crm(obj, crm_fields)
        owner = pulled.pop("owner", None)
        local = lead.fields() if lead else {}
        both = self.touch(lead) if lead else False
        fields = {}
        for name, value in pulled.items():
            if name == "custom":
                custom = {k: v for k, v in value.items()
                          if self.taken(obj, f"custom.{k}", local.get(k), v, both, lead)}
                if custom:
                    fields["custom"] = custom
            elif self.taken(obj, name, local.get(name), value, both, lead):
                fields[name] = value
        if owner is not None and not self.taken(obj, "owner", lead.owner if lead else None,
                                                owner, both, lead):
            owner = None
        return fields, owner

    def taken(self, obj: str, name: str, local, crm, both_changed: bool,
              record=None) -> bool:
        """Whether the CRM's value is taken. A blank never erases ours, a never_sync field
        never syncs; when both sides changed (the record changed here since the CRM's last
        event about it) and hold different values, the map's rule settles it, logged."""
        rule = self.map.rule(obj, name)
        if local == crm or is_blank(crm) or (rule and rule.conflict == NEVER_SYNC):
            return False
        if is_blank(local) or not both_changed:
            return True
        result = self.map.settle(obj, name, local=local, crm=crm,
                                 local_at=record.updated_at if record else None, crm_at=self.at)
        self.applied.conflicts.append({
            "object": obj, "field": name, "local": as_json(local), "crm": as_json(crm),
            "kept": result.winner, "rule": result.rule})
        return result.winner == "crm"

    def converted(self) -> None:
        data = self.data
        lead = self.session.scalar(select(Lead).where(Lead.email == data.email))
        if lead is None:
            raise NotFound(f"no lead with email {data.email}", field="data.email")
        account = (self.account(data.account.id, data.account.fields, "data.account.fields")
                   if data.account else account_of(self.session, lead))
        self.touch(lead)
        self.link(lead, data.contact_id, "contact", account)
        self.applied.changes.append(f"lead {lead.email} converted to contact {data.contact_id}")

    def set_owner(self, lead: Lead, owner: str) -> None:
        self.touch(lead)
        assign_owner(session=self.session, lead=lead, owner=owner, actor=CRM_ACTOR,
                     now=self.now)
        self.applied.changes.append(f"lead {lead.email}: owner {owner}")

    # accounts

    def account(self, crm_id: str, crm_fields: dict, where: str) -> Account:
        self.applied.ignored += self.map.unmapped("account", crm_fields)
        pulled = _checked(AccountFields, self.map.from_crm("account", crm_fields),
                          self.map, "account", where)
        existing = self.session.scalar(select(Account).where(Account.crm_id == crm_id))
        if existing is not None:  # only the CRM changes an account: no conflict
            pulled = {name: value for name, value in pulled.items()
                      if self.taken("account", name, getattr(existing, name), value, False)}
        account, changes = upsert_account(self.session, crm_id=crm_id, fields=pulled,
                                          now=self.now, crm_updated_at=self.at)
        if changes:
            self.applied.changes.append(f"account {crm_id}: {', '.join(sorted(changes))}")
        return account

    # opportunities

    def opportunity(self, verb: str) -> None:
        data = self.data
        pulled = _checked(OpportunityFields, self.map.from_crm("opportunity", data.fields),
                          self.map, "opportunity", "data.fields")
        self.applied.ignored += self.map.unmapped("opportunity", data.fields)
        if verb in ("won", "lost"):
            pulled["status"] = verb
        elif verb == "created":
            pulled.setdefault("status", OpportunityStatus.OPEN)
        existing = find_opportunity(self.session, data.id)
        if existing is not None:
            pulled = {name: value for name, value in pulled.items()  # only the CRM's
                      if name == "status" or self.taken("opportunity", name,
                                                        getattr(existing, name), value, False)}
        account = (self.account(data.account_id, {}, "data.account_id")
                   if data.account_id else None)
        contacts = ([self.contact(i, c) for i, c in enumerate(data.contacts)]
                    if data.contacts is not None else None)
        opportunity, kind = upsert_opportunity(
            self.session, crm_id=data.id, fields=pulled, account=account, contacts=contacts,
            now=self.now, actor=CRM_ACTOR, crm_updated_at=self.at)
        if kind is None:
            return
        self.applied.changes.append(f"opportunity {data.id} {kind}")
        target = {"won": "customer", "lost": "recycled"}.get(kind, "opportunity")
        for lead, _, _ in contacts or self.contacts_of(opportunity.id):
            self.move(lead, target, f"opportunity {data.id} {kind} in the CRM",
                      only_from=("opportunity",) if kind == "lost" else None)

    def contact(self, index: int, role: ContactRole) -> tuple[Lead, str | None, bool]:
        where = f"data.contacts.{index}"
        lead = None
        if role.id:
            lead = self.session.scalar(select(Lead).where(Lead.crm_id == role.id))
        if lead is None and role.email:
            lead = self.session.scalar(select(Lead).where(Lead.email == role.email))
        if lead is None:
            named = role.id or role.email
            raise NotFound(f"no lead or contact {named!r}" if named else
                           "a contact needs its CRM id or its email", field=where)
        return lead, role.role, role.primary

    def contacts_of(self, opportunity_id: int) -> list[tuple[Lead, str | None, bool]]:
        return [(self.session.get(Lead, c.lead_id), c.role, c.is_primary)
                for c in opportunity_contacts(self.session, opportunity_id)]

    def move(self, lead: Lead, target: str, reason: str,
             only_from: tuple[str, ...] | None = None) -> None:
        """Along the shortest legal path of the transition table, each step recorded."""
        if lead.stage == target or (only_from and lead.stage not in only_from):
            return
        if target == "recycled" and self.other_open(lead):
            return
        self.touch(lead)
        for stage in shortest_path(lead.stage, target):
            change_stage(session=self.session, lead=lead, stage=stage, reason=reason,
                         actor=CRM_ACTOR, now=self.now)
            self.applied.changes.append(f"lead {lead.email}: stage {stage}")

    def other_open(self, lead: Lead) -> bool:
        return any(o.status == OpportunityStatus.OPEN and o.crm_id != self.data.id
                   for o, _ in lead_opportunities(self.session, lead.id))

    # owners

    def owner(self) -> None:
        data = self.data
        if data.object in ("lead", "contact"):
            lead = self.lead_for(data.id, data.email, data.object) if data.id else None
            if lead is None and data.email:
                lead = self.session.scalar(select(Lead).where(Lead.email == data.email))
            if lead is None:
                raise NotFound(f"no lead {data.id or data.email!r}", field="data.id")
            self.set_owner(lead, data.owner)
            return
        if not data.id:
            raise Invalid(f"the {data.object}'s CRM id is required", field="data.id")
        record = (self.session.scalar(select(Account).where(Account.crm_id == data.id))
                  if data.object == "account" else find_opportunity(self.session, data.id))
        if record is None:
            raise NotFound(f"no {data.object} with CRM id {data.id!r}", field="data.id")
        if data.object == "account":
            upsert_account(self.session, crm_id=data.id, fields={"owner": data.owner},
                           now=self.now, crm_updated_at=self.at)
        else:
            upsert_opportunity(self.session, crm_id=data.id, fields={"owner": data.owner},
                               account=None, contacts=None, now=self.now, actor=CRM_ACTOR,
                               crm_updated_at=self.at)
        self.applied.changes.append(f"{data.object} {data.id}: owner {data.owner}")


class _Stale(Exception):
    """An event about the older of two CRM records for one email: nothing to apply."""


def shortest_path(current: str, target: str) -> list[str]:
    """The stages after `current` on the shortest legal path to `target` (empty: none)."""
    came_from: dict[str, str] = {current: current}
    queue = deque([current])
    while queue:
        stage = queue.popleft()
        if stage == target:
            path = []
            while stage != current:
                path.append(stage)
                stage = came_from[stage]
            return path[::-1]
        for following in sorted(TRANSITIONS[stage]):
            if following not in came_from:
                came_from[following] = stage
                queue.append(following)
    return []


# -- the fields of accounts and opportunities, once the map named them ------------------------

class AccountFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, StringConstraints(max_length=300)] | None = None
    domain: Annotated[str, StringConstraints(max_length=2000)] | None = None
    industry: Annotated[str, StringConstraints(max_length=200)] | None = None
    employees: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    country: Annotated[str, StringConstraints(max_length=100)] | None = None
    owner: Annotated[str, StringConstraints(max_length=200)] | None = None


class OpportunityFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, StringConstraints(max_length=300)] | None = None
    amount: Annotated[Decimal, Field(ge=0, le=Decimal("1e15"), decimal_places=2)] | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    stage: Annotated[str, StringConstraints(max_length=100)] | None = None
    close_date: date | None = None
    owner: Annotated[str, StringConstraints(max_length=200)] | None = None
    status: OpportunityStatus | None = None


def _checked(model: type[BaseModel], local: dict, crm_map: CrmMap, obj: str,
             where: str) -> dict:
    """`local` (fields the map pulled) checked by `model`; an error names the CRM's field."""
    try:
        checked = model.model_validate(local)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        crm_name = next((r.crm for r in crm_map.rules(obj) if r.local == name), name)
        raise Invalid(f"{error['msg']} (got {str(error.get('input'))[:100]!r})",
                      field=f"{where}.{crm_name}") from None
    return {name: getattr(checked, name) for name in local}
