"""The JSON API under /api/v1. Views parse and validate, call one service, serialise.

Errors are raised, never returned: engine/web/errors.py turns them into problem details.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Annotated, Any

from flask import Blueprint, current_app, request, url_for
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from engine.assets.archive import UploadLimits
from engine.assets.service import upload as upload_asset
from engine.auth.service import Permission
from engine.db import Database, utcnow
from engine.errors import Invalid, NotFound
from engine.flows import leads as pipeline
from engine.journeys.models import Enrollment
from engine.journeys.service import lead_enrollments
from engine.launch.service import pending_changes
from engine.leads.fields import BAD_TEXT, MAX_CUSTOM_FIELDS, MAX_FIELD_LENGTH
from engine.leads.models import Lead, StageChange
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
from engine.web.auth import current_principal, require
from engine.web.errors import problem

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


Text = Annotated[str, StringConstraints(max_length=MAX_FIELD_LENGTH), AfterValidator(_clean_text)]
Scalar = Annotated[Any, PlainValidator(_scalar)]
Consent = Annotated[Any, PlainValidator(_consent)]
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

    stage: Annotated[Text, StringConstraints(max_length=40)] | None = None
    persona: Text | None = None
    email_contains: Text | None = None
    limit: int = Field(50, ge=1)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


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
    if not isinstance(data, dict):
        raise Invalid(f"the body must be a JSON object, not {_json_type(data)}")
    return data


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def lead_id_param(raw: str) -> int:
    """Path ids are positive 32-bit integers; anything else names no lead (404, not a 500)."""
    if re.fullmatch(r"[0-9]{1,10}", raw) and 1 <= int(raw) <= MAX_ID:
        return int(raw)
    raise NotFound(f"no lead with id {raw[:40]!r}", field="id")


# -- serialisers ------------------------------------------------------------------------------

def _lead_detail(lead: Lead, history: list[StageChange]) -> dict:
    return {**lead_dict(lead), "stage_history": [change_dict(c) for c in history]}


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
@require(Permission.LEADS_WRITE)
def upsert():
    """Create (201) or update (200) a lead by case-insensitive email; enroll it in `program`."""
    body = LeadIn.model_validate(json_body())
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
@require(Permission.LEADS_READ)
def find_leads():
    query = LeadQuery.model_validate(request.args.to_dict())
    limit = min(query.limit, MAX_PAGE)
    with _db().session() as session:
        leads, total = list_leads(session=session, stage=query.stage, persona=query.persona,
                                  email_contains=query.email_contains, limit=limit,
                                  offset=query.offset)
        items = [lead_dict(lead) for lead in leads]
    return {"items": items, "total": total, "limit": limit, "offset": query.offset}


@api.get("/leads/<lead_id>")
@require(Permission.LEADS_READ)
def get_lead(lead_id: str):
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=lead_id_param(lead_id))
        return _lead_detail(lead, stage_history(session=session, lead_id=lead.id))


@api.post("/leads/<lead_id>/stage")
@require(Permission.LEADS_STAGE)
def change_stage(lead_id: str):
    """Move a lead to another lifecycle stage: 409 when the transition table forbids it."""
    key = lead_id_param(lead_id)
    body = StageIn.model_validate(json_body())
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        pipeline.change_stage(session=session, lead=lead, stage=body.stage, reason=body.reason,
                              actor=current_principal().actor, now=utcnow())
        session.flush()
        return _lead_detail(lead, stage_history(session=session, lead_id=lead.id))


@api.post("/leads/<lead_id>/events")
@require(Permission.LEADS_EVENTS)
def post_event(lead_id: str):
    """Record a response from another channel (consumed, talk_to_sales, opened, clicked,
    page_viewed, form_submitted): the lead's journeys, score and routing follow, as for a
    tracked one. 201 with the lead, the event and the points it earned."""
    key = lead_id_param(lead_id)
    body = EventIn.model_validate(json_body())
    now = utcnow()
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=key)
        awards = pipeline.record_event(session=session, lead=lead, kind=body.kind,
                                       detail=body.detail, at=body.at, now=now,
                                       actor=current_principal().actor)
        session.flush()
        return {"lead": _lead_detail(lead, stage_history(session=session, lead_id=lead.id)),
                "event": {"kind": body.kind, "detail": body.detail or None,
                          "at": (body.at or now).isoformat(), "recorded_at": now.isoformat()},
                "awards": [{"kind": a.kind, "points": a.points, "rule": a.rule} for a in awards]
                }, 201


@api.get("/leads/<lead_id>/enrollments")
@require(Permission.LEADS_READ)
def get_enrollments(lead_id: str):
    with _db().session() as session:
        lead = get_lead_by_id(session=session, lead_id=lead_id_param(lead_id))
        names = {record.id: record.name for record in list_programs(session=session)}
        items = [_enrollment_dict(e, names)
                 for e in lead_enrollments(session=session, lead_id=lead.id)]
    return {"lead_id": lead.id, "items": items}


# -- sending ------------------------------------------------------------------------------------

@api.get("/send-runs")
@require(Permission.PROGRAMS_READ)
def get_send_runs():
    """The send runs of the last `hours` hours (1 to 8,784), as `nurture send-runs --json`:
    due, sent, held, failed, skipped, pending, unknown and duplicates per hour, and reasons."""
    raw = request.args.get("hours", "24")
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= 24 * 366:
        raise Invalid("hours must be a whole number from 1 to 8784", field="hours")
    now = utcnow()
    with _db().session() as session:
        runs = send_runs(session=session, since=now - timedelta(hours=int(raw)), until=now)
    return {"items": [{"hour": r.hour.isoformat(), **r.counts, "reasons": dict(r.reasons)}
                      for r in runs]}


# -- reports ------------------------------------------------------------------------------------

@api.get("/reports/<name>")
@require(Permission.REPORTS_READ)
def get_report(name: str):
    """Report `name` as `nurture report` builds it: `program`, `from`, `to`, `by`, `split`,
    `tz`; `format=csv` gives one table (`table=KEY`, default the first)."""
    if name not in REPORT_NAMES:
        raise NotFound(f"no report named {name!r} (reports: {', '.join(REPORT_NAMES)})")
    args = request.args
    output = args.get("format", "json")
    if output not in ("json", "csv"):
        raise Invalid("format must be json or csv", field="format")
    query = parse_report_query(program=args.get("program"), start=args.get("from"),
                               end=args.get("to"), by=args.get("by"), split=args.get("split"),
                               tz=args.get("tz"), now=utcnow())
    with _db().reading() as session:
        built = build_report(name, session, query)
    if output == "csv":
        return current_app.response_class(
            report_csv(built, args.get("table")), mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return built.to_dict()


# -- programs -----------------------------------------------------------------------------------

@api.get("/programs")
@require(Permission.PROGRAMS_READ)
def get_programs():
    with _db().session() as session:
        items = [{"name": record.name, "version": record.current_version,
                  "live_version": record.live_version}
                 for record in list_programs(session=session)]
    return {"items": items}


@api.get("/programs/<name>")
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
        first = result.invalid[0]
        error = first.errors[0] if first.errors else {"line": 1, "message": "invalid"}
        return problem(422, "Invalid asset",
                       f"{first.path}:{error['line']}: {error['message']}", "file", **body)
    return body, 201 if result.changed else 200
