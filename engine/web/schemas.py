"""What the API answers, as pydantic models: the OpenAPI document (engine/web/openapi.py) is
generated from these and from the models that validate requests, and the schemathesis test
(tests/test_openapi_fuzz.py) checks every answer against them, so the two cannot drift apart
unnoticed. Shapes that belong to another module (a report's tables, a lead's explanation)
name their top-level keys only; extra keys are allowed everywhere, so adding one is not a
breaking change."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    """One invalid field of a 422."""

    field: str | None = Field(description="the body field path (`custom.plan`, `events.3.email`) "
                                          "or the query parameter; null for the whole body")
    detail: str = Field(description="what is wrong, for a person")
    in_: Literal["body", "query", "path"] = Field(alias="in")
    code: str = Field(description="what is wrong, for a program: pydantic's error type "
                                  "(`missing`, `string_too_long`, `int_parsing`...) or `invalid` "
                                  "for a check of the engine's own")
    value_type: str = Field(description="the JSON type of the value sent (string, integer, "
                                        "number, boolean, null, array, object, file) or "
                                        "`missing`")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details; `field` names the field at fault."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None


class InvalidProblem(Problem):
    """A 422: `field` and `detail` name the first invalid field, `errors` lists every one
    (at most 1,000; `error_count` says how many there were)."""

    errors: list[FieldError]
    error_count: int


# -- leads --------------------------------------------------------------------------------------

class StageChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str
    at: str
    reason: str | None
    actor: str | None


class LeadOut(BaseModel):
    id: int
    email: str
    first_name: str | None
    last_name: str | None
    company: str | None
    title: str | None
    country: str | None
    timezone: str | None
    persona: str | None = Field(description="the persona set on the lead (null: matched per "
                                            "program from its fields)")
    stage: str
    source_channel: str | None
    source_offer: str | None
    source_partner: str | None
    consent: bool | None
    custom: dict[str, Any]
    created_at: str
    updated_at: str


class CrmAccountOut(BaseModel):
    id: int
    crm_id: str | None
    name: str | None
    domain: str | None
    owner: str | None
    matched_by: Literal["crm", "domain"]  # put under it by the CRM, or its email's domain


class CrmOpportunityOut(BaseModel):
    crm_id: str
    name: str | None
    role: str | None  # the lead's contact role
    amount: str | None  # decimal, as text
    currency: str | None
    stage: str | None
    status: Literal["open", "won", "lost"]
    owner: str | None
    close_date: str | None
    updated_at: str


class CrmRecordOut(BaseModel):
    """The lead as the CRM has it (POST /api/v1/crm/events keeps it)."""

    id: str | None
    object: Literal["lead", "contact"] | None
    account: CrmAccountOut | None
    opportunities: list[CrmOpportunityOut]


class LeadDetail(LeadOut):
    stage_history: list[StageChangeOut]
    crm: CrmRecordOut


class OwnedLead(LeadOut):
    owner: str | None


class LeadPage(BaseModel):
    items: list[LeadOut]
    total: int
    limit: int
    offset: int


class EventRecorded(BaseModel):
    kind: str
    detail: str | None
    at: str
    recorded_at: str


class Award(BaseModel):
    kind: str
    points: float
    rule: str | None


class EventResult(BaseModel):
    lead: LeadDetail
    event: EventRecorded
    awards: list[Award]


class EnrollmentOut(BaseModel):
    program: str | None
    version: int
    status: str
    track: str | None
    next_email: str | None
    due_at: str | None
    state: dict[str, Any]


class Enrollments(BaseModel):
    lead_id: int
    items: list[EnrollmentOut]


class Explanation(BaseModel):
    """Why a lead is where it is (engine/leads/explain.py)."""

    lead: dict[str, Any]
    score: dict[str, Any]
    stage_history: list[StageChangeOut]
    next_sends: list[dict[str, Any]]
    suppressed: Any = Field(description="why the lead's address is suppressed, if it is")
    sales: dict[str, Any] | None


# -- sales --------------------------------------------------------------------------------------

class TimelineEntry(BaseModel):
    at: str
    kind: str
    what: str


class QueueEntry(BaseModel):
    id: int
    email: str
    company: str | None
    title: str | None
    owner: str | None
    score: float
    mql_at: str | None
    reason: str | None
    timeline: list[TimelineEntry]


class MqlQueue(BaseModel):
    items: list[QueueEntry]


class OneFieldShortLead(BaseModel):
    id: int
    email: str
    score: float
    missing: list[str]


class OneFieldShort(BaseModel):
    items: list[OneFieldShortLead]


# -- sending, reports, programs, assets, proofs, webhooks ---------------------------------------

class SendRun(BaseModel):
    hour: str
    reasons: dict[str, int]


class SendRuns(BaseModel):
    items: list[SendRun]


class ReportTable(BaseModel):
    key: str
    title: str
    columns: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    notes: list[str]


class Report(BaseModel):
    report: str
    title: str
    query: dict[str, Any]
    generated_at: str
    tables: list[ReportTable]
    notes: list[str]


class ProgramSummary(BaseModel):
    name: str
    version: int | None
    live_version: int | None


class Programs(BaseModel):
    items: list[ProgramSummary]


class PendingChange(BaseModel):
    what: str
    live: Any
    pending: Any
    why: str | None


class ProgramDetail(BaseModel):
    program: str
    name: str
    version: int | None
    live_version: int | None
    pending: list[PendingChange]
    timezone: str | None
    personas: list[str]
    stages: list[str]
    cells: Any
    side_tracks: Any


class StoredVersion(BaseModel):
    path: str
    kind: str
    version: int | None
    status: str
    content_hash: str | None
    outcome: str
    errors: list[Any]


class Upload(BaseModel):
    program: str
    versions: list[StoredVersion]
    skipped: list[str]
    pending_launch: bool


class InvalidUpload(InvalidProblem):
    """A 422 for an upload: the problem and, when files were read, what was stored (as
    invalid) or refused."""

    program: str | None = None
    versions: list[StoredVersion] | None = None
    skipped: list[str] | None = None
    pending_launch: bool | None = None


class ProofOut(BaseModel):
    id: int
    email: str
    persona: str | None
    reviewer: str
    asset_version: int
    message_id: str | None
    sent_at: str


class ProofsSent(BaseModel):
    program: str
    sent: list[ProofOut]
    failed: list[dict[str, Any]]
    skipped: int


class ProofsFailed(Problem, ProofsSent):
    """A 502: the mail server refused some proofs; what was sent is still listed."""


class Approval(BaseModel):
    email: str
    asset: str | None
    version: int | None
    state: str
    approved_by: list[str]
    rejections: list[dict[str, Any]]
    awaiting: list[str]
    problem: str | None


class Approvals(BaseModel):
    program: str
    version: int | None
    approved: bool
    items: list[Approval]


class BouncesRecorded(BaseModel):
    """How many events suppressed an address, counted as soft, or were ignored."""

    suppressed: int
    soft: int
    ignored: int


class CrmEventApplied(BaseModel):
    """What an event from the CRM did: `applied`, or `repeat` (its id was applied before:
    nothing done again). Conflicts are fields both sides held, settled by the field map's
    rule; duplicates, two CRM records for one email; ignored, CRM fields the map does not
    pull."""

    id: str
    type: str
    outcome: Literal["applied", "repeat"]
    changes: list[str]
    conflicts: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    ignored: list[str]
