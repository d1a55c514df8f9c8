"""Every model, imported in one place so metadata (and Alembic) sees all tables."""

from engine.assets.models import Asset, AssetVersion
from engine.auth.models import ApiKey
from engine.db import Base
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.pages.models import FormSubmission
from engine.programs.models import ProgramRecord, ProgramVersion
from engine.sending.models import OutboxMessage, Suppression

__all__ = [
    "ApiKey",
    "Asset",
    "AssetVersion",
    "Base",
    "Enrollment",
    "FormSubmission",
    "Lead",
    "LeadEvent",
    "OutboxMessage",
    "ProgramRecord",
    "ProgramVersion",
    "StageChange",
    "Suppression",
]
