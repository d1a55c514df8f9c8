"""The JSON API under /api/v1. Views parse and validate, call one service, serialise.

Errors are raised, never returned: engine/web/errors.py turns them into problem details.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from flask import Blueprint, current_app, g, request, url_for
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from engine.assets.archive import UploadLimits
from engine.assets.service import upload as upload_asset
from engine.auth.service import Permission
from engine.crm.records import crm_view
from engine.db import Database, utcnow
from engine.errors import Invalid, NotFound
from engine.flows import leads as pipeline
from engine.journeys.models import Enrollment
from engine.journeys.service import lead_enrollments
from engine.launch.service import pending_changes
from engine.leads.fields import BAD_TEXT, MAX_CUSTOM_FIELDS, MAX_FIELD_LENGTH, normalise_email
from engine.leads.models import Lead
from engine.leads.service import (
    change_dict,
    get_lead_by_id,
    lead_dict,
    list_leads,
    stage_history,
)
from engine.leads.stages import STAGES
from engine.programs.loader import SLUG
from engine.programs.service import matrix, side_tracks
from engine.programs.store import current_program, list_programs
from engine.reports import NAMES as REPORT_NAMES
from engine.reports import build_report
from engine.reports.output import to_csv as report_csv
from engine.reports.query import parse_query as parse_report_query
from engine.sending.reports import send_runs
from engine.web import schemas as out
from engine.web.auth import current_principal, require
from engine.web.errors import InvalidRequest, field_error, invalid_problem
from engine.web.openapi import describe

api = Blueprint("api", __name__)

MAX_PAGE = 500
MAX_ID = 2**31 - 1  # the id columns are 32-bit integers on PostgreSQL
MAX_OFFSET = 2**31 - 1
MAX_INT = 2**63 - 1  # JSON integers beyond 64 bits are refused: no column or client keeps them
READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "stage_history"})
_CUSTOM_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


# -- input types ------------------------------------------------------------------------------

def _clean_text(value: str) -> str:
    if BAD_TEXT.search(value):
        raise PydanticCustomError("bad_text",
                                  "must not contain NUL characters or unpaired surrogates")
    return value


def _scalar(value: Any) -> Any:
    """A custom field value: a flat string, number, boolean or null (nothing nested)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_FIELD_LENGTH:
            raise PydanticCustomError("string_too_long", "must be at most {max} characters",
                                      {"max": MAX_FIELD_LENGTH})
        return _clean_text(value)
    raise PydanticCustomError("scalar", "must be a string, number, boolean or null")


def _consent(value: Any) -> Any:
    """true/false, or the words a CSV may hold ("yes", "opt-out"): the leads service reads them."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) <= 40:
        return _clean_text(value)
    raise PydanticCustomError("consent", "must be true, false or a word such as yes or no")


def whole_number(low: int, high: int) -> Any:
    """A query parameter holding digits only (not " 5", "1.5", "1e2"), from low to high."""

    def check(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"[0-9]+", value) \
                and len(value) <= len(str(high)) and low <= int(value) <= high:
            return int(value)
        raise PydanticCustomError("whole_number", "must be a whole number from {low} to {high}",
                                  {"low": low, "high": high})

    return Annotated[int, PlainValidator(check),
                     WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})]


Text = Annotated[str, StringConstraints(max_length=MAX_FIELD_LENGTH), AfterValidator(_clean_text)]
Scalar = Annotated[Any, PlainValidator(_scalar), WithJsonSchema(
    {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_FIELD_LENGTH})]
Consent = Annotated[Any, PlainValidator(_consent), WithJsonSchema(
    {"anyOf": [{"type": ["boolean", "null"]}, {"type": "string", "maxLength": 40}]})]
CustomName = Annotated[str, StringConstraints(pattern=_CUSTOM_NAME)]


class LeadIn(BaseModel):
    """A lead to create or update. Standard fields are type-checked here and validated by the
    leads service; any other top-level key is a custom field, like an extra CSV column."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Scalar] = Field(init=False)

    email: Text
    first_name: Text | None = None
    last_name: Text | None = None
    company: Text | None = None
    title: Text | None = None
    country: Text | None = None
    timezone: Text | None = None
    persona: Text | None = None
    stage: Text | None = None
    source_channel: Text | None = None
    source_offer: Text | None = None
    source_partner: Text | None = None
    consent: Consent = None
    custom: dict[CustomName, Scalar] = Field(default_factory=dict, max_length=MAX_CUSTOM_FIELDS)
    program: Annotated[Text, StringConstraints(max_length=100)] | None = None

    def fields(self) -> dict:
        """The lead's fields for pipeline.upsert_lead; null means "leave unchanged", as a blank CSV cell."""
        for name in self.model_extra or {}:
            if name in READ_ONLY_FIELDS:
                raise Invalid("read-only field: leave it out", field=name)
            if name.lower() in type(self).model_fields:  # "Email" would override "email"
                raise Invalid(f"field names are lower-case: use {name.lower()!r}", field=name)
            if not re.fullmatch(_CUSTOM_NAME, name):
                raise Invalid("unknown field: custom field names hold letters, digits and _",
                              field=name[:64])
        return self.model_dump(exclude={"program"}, exclude_unset=True)


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Annotated[Text, StringConstraints(max_length=40)]
    reason: Text


class EventIn(BaseModel):
    """A response seen by another channel: see engine/flows/leads.py record_event."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[Text, StringConstraints(max_length=40)]
    detail: Text | None = None
    at: AwareDatetime | None = None


class LeadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Text | None = Field(None, description="the lead with this address (compared as "
                                                 "the engine stores it: trimmed, lower-case)")
    stage: Annotated[Text, StringConstraints(max_length=40)] | None = None
    persona: Text | None = Field(None, description="leads following this persona: the one "
                                                   "their enrollment matched, else their own")
    email_contains: Text | None = None
    limit: int = Field(50, ge=1, description=f"at most {MAX_PAGE} are returned")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class LeadPath(BaseModel):
    lead_id: int = Field(ge=1, le=MAX_ID, description="a lead's id (anything else is a 404)")


class ProgramPath(BaseModel):
    name: str = Field(pattern=SLUG.pattern, max_length=100, description="a program's name")


class ReportPath(BaseModel):
    name: str = Field(json_schema_extra={"enum": list(REPORT_NAMES)})


class SendRunsQuery(BaseModel):
    hours: whole_number(1, 24 * 366) = 24


class ReportQueryIn(BaseModel):
    """As `nurture report`: see engine/reports/query.py."""

    program: str | None = None
    from_: str | None = Field(None, alias="from", description="an ISO date or time")
    to: str | None = Field(None, description="an ISO date (included) or time")
    by: str | None = Field(None, description="day, week, month or quarter")
    split: str | None = None
    tz: str | None = Field(None, description="an IANA time zone, default UTC")
    format: Literal["json", "csv"] = "json"
    table: str | None = Field(None, description="the table for format=csv (default the first)")


class AssetForm(BaseModel):
    program: str = Field(pattern=SLUG.pattern, max_length=100)
    file: bytes = Field(description="one asset, or a zip of a program directory",
                        json_schema_extra={"format": "binary", "contentMediaType":
                                           "application/octet-stream"})


# -- request helpers ----------------------------------------------------------------------------

def _db() -> Database:
    return current_app.extensions["nurture.db"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or not -MAX_INT <= int(text) <= MAX_INT:
        raise ValueError(f"integer {text[:40]} is out of range (send long numbers as strings)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def json_body() -> dict:
    """The request body as a JSON object: 415 for another content type, 413 past
    MAX_CONTENT_LENGTH, 400 when it is not UTF-8 JSON, 422 when it is not an object."""
    if not request.is_json:
        got = (request.mimetype or "none")[:100]
        raise UnsupportedMediaType(f"send a JSON object with Content-Type: application/json "
                                   f"(got {got})")
    raw = request.get_data(cache=False)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, and the checks above
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from None
    g.json_body = data  # a 422 names the type of the value at fault (engine/web/errors.py)
    if not isinstance(data, dict):
        raise Invalid(f"the body must be a JSON object, not {_json_type(data)}")
    return data


def parse_json(model: type[BaseModel], data: dict | None = None) -> Any:
    """The JSON body (or `data`) validated by `model`; its 422 lists every invalid field."""
    try:
        return model.model_validate(json_body() if data is None else data)
    except ValidationError as exc:
        raise InvalidRequest(exc, "body") from None


def parse_query(model: type[BaseModel]) -> Any:
    """The query string validated by `model` (a repeated parameter: its first value)."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidRequest(exc, "query") from None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def lead_id_param(raw: str) -> int:
    """Path ids are positive 32-bit integers; anything else names no lead (404, not a 500)."""
    if re.fullmatch(r"[0-9]{1,10}", raw) and 1 <= int(raw) <= MAX_ID:
        return int(raw)
    raise NotFound(f"no lead with id {raw[:40]!r}", field="id")


# -- serialisers ------------------------------------------------------------------------------

def _lead_detail(session: Session, lead: Lead) -> dict:
    history = stage_history(session=session, lead_id=lead.id)
    return {**lead_dict(lead), "stage_history": [change_dict(c) for c in history],
            "crm": crm_view(session, lead)}


def _enrollment_dict(enrollment: Enrollment, program_names: dict[int, str]) -> dict:
    state = enrollment.state or {}
    return {
        "program": program_names.get(enrollment.program_id), "version": enrollment.program_version,
        "status": enrollment.status, "track": enrollment.track,
        "next_email": state.get("next_email"),
        "due_at": enrollment.due_at.isoformat() if enrollment.due_at else None,
        "state": state,
    }


# -- leads --------------------------------------------------------------------------------------

@api.post("/leads")
@describe(body=LeadIn, responses={200: out.LeadOut, 201: out.LeadOut}, tags=("leads",),
          descriptions={200: "Updated", 201: "Created"})
@require(Permission.LEADS_WRITE)
def upsert():
    """Create (201) or update (200) a lead by case-insensitive email; enroll it in `program`."""
    body = parse_json(LeadIn)
    fields, actor = body.fields(), current_principal().actor
    for attempt in (1, 2):
        try:
            with _db().session() as session:
                lead, created = pipeline.upsert_lead(session=session, fields=fields,
                                                     now=utcnow(), actor=actor,
                                                     program=body.program)
                payload = lead_dict(lead)
            break
        except IntegrityError:
            # a concurrent request created the same lead (or enrollment) first: the retry
            # finds it and updates instead
            if attempt == 2:
                raise
        except NotFound as exc:
            if exc.field == "program":  # a bad reference in the body, not a missing resource
                raise Invalid(exc.detail, field="program") from None
            raise
    if not created:
        return payload, 200
    return payload, 201, {"Location": url_for("api.get_lead", lead_id=payload["id"])}


@api.get("/leads")
@describe(query=LeadQuery, responses={200: out.LeadPage}, tags=("leads",))
@require(Permission.LEADS_READ)
def find_leads():
    """Leads by email, stage, persona or part of their address, in id order."""
    query = parse_query(LeadQuery)
    limit = min(query.limit, MAX_PAGE)
    email = None if query.email is None else normalise_email(query.email)  # 422 naming it
    with _db().session() as session:
        leads, total = list_leads(session=session, email=email, stage=query.stage,
                                  persona=query.persona,
                                  email_contains=query.email_contains, limit=limit,
                                  offset=query.offset)
        items = [lead_dict(lead) for lead in leads]
    return {"items": items, "total": total, "limit": limit, "offset": query.offset}


@api.get("/leads/<lead_id>")
@describe(path=LeadPath, responses={200: out.LeadDetail}, tags=("leads",))
@require(Permission.LEADS_READ)
def get_lead(lead_id: str):
    """A lead with its stage history."""
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=lead_id_param(lead_id))
        return _lead_detail(session, lead)


@api.post("/leads/<lead_id>/stage")
@describe(path=LeadPath, body=StageIn, responses={200: out.LeadDetail}, errors=(409,),
          tags=("leads",))
@require(Permission.LEADS_STAGE)
def change_stage(lead_id: str):
    """Move a lead to another lifecycle stage: 409 when the transition table forbids it."""
    key = lead_id_param(lead_id)
    body = parse_json(StageIn)
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        pipeline.change_stage(session=session, lead=lead, stage=body.stage, reason=body.reason,
                              actor=current_principal().actor, now=utcnow())
        session.flush()
        return _lead_detail(session, lead)


@api.post("/leads/<lead_id>/events")
@describe(path=LeadPath, body=EventIn, responses={201: out.EventResult}, tags=("leads",))
@require(Permission.LEADS_EVENTS)
def post_event(lead_id: str):
    """Record a response from another channel (consumed, talk_to_sales, opened, clicked,
    page_viewed, form_submitted): the lead's journeys, score and routing follow, as for a
    tracked one. 201 with the lead, the event and the points it earned."""
    key = lead_id_param(lead_id)
    body = parse_json(EventIn)
    now = utcnow()
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        awards = pipeline.record_event(session=session, lead=lead, kind=body.kind,
                                       detail=body.detail, at=body.at, now=now,
                                       actor=current_principal().actor)
        session.flush()
        return {"lead": _lead_detail(session, lead),
                "event": {"kind": body.kind, "detail": body.detail or None,
                          "at": (body.at or now).isoformat(), "recorded_at": now.isoformat()},
                "awards": [{"kind": a.kind, "points": a.points, "rule": a.rule} for a in awards]
                }, 201


@api.get("/leads/<lead_id>/enrollments")
@describe(path=LeadPath, responses={200: out.Enrollments}, tags=("leads",))
@require(Permission.LEADS_READ)
def get_enrollments(lead_id: str):
    """The programs a lead is enrolled in, with where it is in each."""
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=lead_id_param(lead_id))
        names = {record.id: record.name for record in list_programs(session=session)}
        items = [_enrollment_dict(e, names)
                 for e in lead_enrollments(session=session, lead_id=lead.id)]
    return {"lead_id": lead.id, "items": items}


# -- sending ------------------------------------------------------------------------------------

@api.get("/send-runs")
@describe(query=SendRunsQuery, responses={200: out.SendRuns}, tags=("sending",))
@require(Permission.PROGRAMS_READ)
def get_send_runs():
    """The send runs of the last `hours` hours (1 to 8,784), as `nurture send-runs --json`:
    due, sent, held, failed, skipped, pending, unknown and duplicates per hour, and reasons."""
    hours = parse_query(SendRunsQuery).hours
    now = utcnow()
    with _db().session() as session:
        runs = send_runs(session=session, since=now - timedelta(hours=hours), until=now)
    return {"items": [{"hour": r.hour.isoformat(), **r.counts, "reasons": dict(r.reasons)}
                      for r in runs]}


# -- reports ------------------------------------------------------------------------------------

@api.get("/reports/<name>")
@describe(path=ReportPath, query=ReportQueryIn,
          responses={200: {"application/json": out.Report, "text/csv": {"type": "string"}}},
          tags=("reports",))
@require(Permission.REPORTS_READ)
def get_report(name: str):
    """Report `name` as `nurture report` builds it: `program`, `from`, `to`, `by`, `split`,
    `tz`; `format=csv` gives one table (`table=KEY`, default the first)."""
    if name not in REPORT_NAMES:
        raise NotFound(f"no report named {name!r} (reports: {', '.join(REPORT_NAMES)})")
    args = parse_query(ReportQueryIn)
    query = parse_report_query(program=args.program, start=args.from_, end=args.to, by=args.by,
                               split=args.split, tz=args.tz, now=utcnow())
    with _db().reading() as session:
        built = build_report(name, session, query)
    if args.format == "csv":
        return current_app.response_class(
            report_csv(built, args.table), mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return built.to_dict()


# -- programs -----------------------------------------------------------------------------------

@api.get("/programs")
@describe(responses={200: out.Programs}, tags=("programs",))
@require(Permission.PROGRAMS_READ)
def get_programs():
    """Every program with its newest and its live (launched) version."""
    with _db().session() as session:
        items = [{"name": record.name, "version": record.current_version,
                  "live_version": record.live_version}
                 for record in list_programs(session=session)]
    return {"items": items}


@api.get("/programs/<name>")
@describe(path=ProgramPath, responses={200: out.ProgramDetail}, tags=("programs",))
@require(Permission.PROGRAMS_READ)
def get_program(name: str):
    """The persona x stage matrix of the newest version, plus side tracks (not in any cell),
    the live (launched) version and what waits for the next launch."""
    if not SLUG.fullmatch(name):  # never send what cannot be a program name to the database
        raise NotFound(f"no program named {name[:100]!r}", field="program")
    with _db().session() as session:
        record, program = current_program(session=session, name=name)
        pending = [change.to_dict() for change in pending_changes(session=session, record=record)]
    return {"program": record.name, "name": program.name, "version": record.current_version,
            "live_version": record.live_version, "pending": pending,
            "timezone": program.timezone, "personas": list(program.personas),
            "stages": list(STAGES), "cells": matrix(program), "side_tracks": side_tracks(program)}


# -- assets -------------------------------------------------------------------------------------

@api.post("/assets")
@describe(form=AssetForm, responses={200: out.Upload, 201: out.Upload, 422: {
    "application/problem+json": out.InvalidUpload}}, tags=("assets",),
    descriptions={200: "Every file unchanged", 201: "Stored",
                  422: "A file refused (nothing stored) or that does not compile (stored as "
                       "invalid); every one is listed in `errors`"})
@require(Permission.ASSETS_WRITE)
def post_asset():
    """Upload one asset or a zip of a program directory (multipart: program, file).

    201 with the stored versions; 200 when every file was unchanged; 422 when a file is refused
    (nothing stored) or does not compile (stored as invalid, listed with its errors)."""
    limits = UploadLimits.from_env()
    request.max_content_length = limits.max_zip_bytes + 64 * 1024  # this route only
    if request.mimetype != "multipart/form-data":
        got = (request.mimetype or "none")[:100]
        raise UnsupportedMediaType(f"send multipart/form-data with fields program and file "
                                   f"(got {got})")
    program = request.form.get("program", "").strip()
    if not program:
        raise Invalid("missing form field 'program'", field="program")
    if not SLUG.fullmatch(program):
        raise Invalid(f"no program named {program[:100]!r}", field="program")
    uploaded = request.files.get("file")
    if uploaded is None or not uploaded.filename:
        raise Invalid("missing file field 'file' (with a file name)", field="file")
    data = uploaded.read(limits.max_zip_bytes + 1)
    try:
        with _db().session() as session:
            result = upload_asset(session=session, program=program, filename=uploaded.filename,
                                  data=data, now=utcnow(), actor=current_principal().actor,
                                  limits=limits)
    except NotFound as exc:
        if exc.field == "program":  # a bad reference in the form, not a missing resource
            raise Invalid(exc.detail, field="program") from None
        raise
    body = {"program": result.program, "versions": [v.to_dict() for v in result.versions],
            "skipped": result.skipped, "pending_launch": result.pending_launch}
    if result.invalid:
        errors = [field_error("file", f"{version.path}:{error['line']}: {error['message']}",
                              "body", "invalid_asset", "file")
                  for version in result.invalid
                  for error in version.errors or [{"line": 1, "message": "invalid"}]]
        return invalid_problem(errors, "Invalid asset", errors[0]["detail"], **body)
    return body, 201 if result.changed else 200
