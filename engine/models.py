"""Every model, imported in one place so metadata (and Alembic) sees all tables."""

from engine.assets.models import Asset, AssetVersion
from engine.auth.models import ApiKey, SignInAttempt, User
from engine.crm.models import (
    Account,
    CrmInboundEvent,
    CrmOutboxItem,
    Opportunity,
    OpportunityChange,
    OpportunityContact,
)
from engine.db import Base
from engine.journeys.models import Enrollment
from engine.launch.models import Approval, Launch, Proof, Waiver
from engine.leads.models import ConsentRecord, Lead, LeadEvent, StageChange
from engine.pages.models import FormSubmission
from engine.programs.models import ProgramRecord, ProgramVersion
from engine.sales.models import SalesNotification, SlaBreach
from engine.scoring.models import ScoreEvent
from engine.sending.models import OutboxMessage, SentEmail, Suppression
from engine.tracking.models import TrackingEvent

__all__ = [
    "Account",
    "ApiKey",
    "Approval",
    "Asset",
    "AssetVersion",
    "Base",
    "ConsentRecord",
    "CrmInboundEvent",
    "CrmOutboxItem",
    "Enrollment",
    "FormSubmission",
    "Launch",
    "Lead",
    "LeadEvent",
    "Opportunity",
    "OpportunityChange",
    "OpportunityContact",
    "OutboxMessage",
    "ProgramRecord",
    "ProgramVersion",
    "Proof",
    "SalesNotification",
    "ScoreEvent",
    "SentEmail",
    "SignInAttempt",
    "SlaBreach",
    "StageChange",
    "Suppression",
    "TrackingEvent",
    "User",
    "Waiver",
]
