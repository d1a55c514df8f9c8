from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime, utcnow
from engine.leads.stages import NOT_ON_PATH

# Columns a lead file may carry besides custom ones, in the order `leads show` prints them.
STANDARD_FIELDS = (
    "email", "first_name", "last_name", "company", "title", "country", "timezone",
    "persona", "stage", "source_channel", "source_offer", "source_partner", "consent",
)


def lead_fields(standard: Mapping[str, object], custom: Mapping[str, object] | None) -> dict:
    """A lead's fields as persona rules, fit rules and templates read them, for the live
    engine, `nurture simulate` and QA scenarios alike: one flat mapping of every standard field
    (None when unset) and every custom field. A custom field never shadows the standard field
    of the same name: the import and the API refuse such names, and one stored before they did
    is ignored. Keys of `standard` that are not standard fields (id, custom...) are left out."""
    fields = dict(custom or {})
    fields.update((name, standard.get(name)) for name in STANDARD_FIELDS)
    return fields


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(300))
    title: Mapped[str | None] = mapped_column(String(300))
    country: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    persona: Mapped[str | None] = mapped_column(String(100))  # explicit; else matched per program
    # The persona its first enrollment matched, kept as enrollments are made and move
    # (engine/journeys/service.py): reports split by persona read the lead's own, else this.
    enrolled_persona: Mapped[str | None] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(20), default="inquiry", index=True)
    source_channel: Mapped[str | None] = mapped_column(String(200))
    source_offer: Mapped[str | None] = mapped_column(String(200))
    source_partner: Mapped[str | None] = mapped_column(String(200))
    consent: Mapped[bool | None] = mapped_column(Boolean)
    custom: Mapped[dict] = mapped_column(JSON, default=dict)
    owner: Mapped[str | None] = mapped_column(String(200))  # the sales rep who holds the lead
    # Its record in the CRM: a lead, or a contact under an account (engine/crm/records.py);
    # crm_updated_at is when the CRM last changed it, as the CRM said (its duplicates rule).
    crm_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    crm_object: Mapped[str | None] = mapped_column(String(10))  # lead, contact
    crm_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the CRM's last event about it was applied: a change here after it (updated_at
    # later) and a different value from the CRM is a conflict, settled by the field map.
    crm_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"),
                                                   index=True)
    # Score = fit + behaviour decayed from behaviour_at (engine/scoring): stored so a lead's
    # score and the sales queue's order cost no replay of its history.
    fit_score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    behaviour_score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    behaviour_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def fields(self) -> dict:
        """Every field personas can match on: standard columns plus custom ones (lead_fields)."""
        return lead_fields({name: getattr(self, name) for name in STANDARD_FIELDS}, self.custom)


class StageChange(Base):
    """Append-only history of a lead's lifecycle stage (a row's left_at is set once, when
    the lead's next change is added)."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_at", "at"),
                      Index("ix_stage_changes_to_at", "to_stage", "at"),
                      # holding the stage entered: a lead's first entry into a stage is
                      # read from the index alone (PostgreSQL)
                      Index("ix_stage_changes_lead_at", "lead_id", "at",
                            postgresql_include=["to_stage"]),
                      # the stays open at an instant: those left after it, and the current
                      # ones (the funnel's balances, from the indexes alone on PostgreSQL)
                      Index("ix_stage_changes_left_at", "left_at",
                            postgresql_include=["at", "to_stage", "lead_id"]),
                      Index("ix_stage_changes_current", "at",
                            sqlite_where=text("left_at IS NULL"),
                            postgresql_where=text("left_at IS NULL"),
                            postgresql_include=["to_stage", "lead_id"]))

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    # Set when the change is recorded (engine/leads/service.py record_stage_change), so that
    # reports read a stay or a path without replaying the lead's history: when the lead
    # entered from_stage (its previous change; None for the first), and its level on the
    # success path after this change (engine/leads/stages.py path_level_after).
    from_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    path_level: Mapped[int] = mapped_column(SmallInteger, server_default=str(NOT_ON_PATH))
    # When the lead left to_stage: its next change's time, set when that change is recorded;
    # None while this is its latest change.
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LeadEvent(Base):
    """Append-only log per lead: what happened (category event) and what the engine did (action)."""

    __tablename__ = "lead_events"
    # by kind: a report reads one kind of event (forms, bounces...), for a lead or for all
    __table_args__ = (Index("ix_lead_events_lead_at", "lead_id", "id"),
                      Index("ix_lead_events_kind_lead", "kind", "lead_id", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    program_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    category: Mapped[str] = mapped_column(String(10))  # "event" or "action"
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    actor: Mapped[str] = mapped_column(String(200), default="system")


class ConsentRecord(Base):
    """Append-only consent history: each answer a lead gave, how (a form's checkbox), the words
    it was shown, when and from where."""

    __tablename__ = "consent_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)  # the wording shown beside the checkbox
    source: Mapped[str] = mapped_column(String(200))  # e.g. "form acme-nurture/demo"
    ip: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
