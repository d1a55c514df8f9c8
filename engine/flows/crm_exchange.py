"""CSV exchange for a CRM without an API, through the same field map as the webhooks.

- `export_changes`: the leads (or contacts) that changed since a time, one row each, under the
  CRM's column names (what the map pushes), with NurtureId, CrmId, DoNotContact and UpdatedAt.
- `import_records`: a CSV the CRM exported (leads, contacts, accounts or opportunities, under
  its names), each row applied as that record's update event (engine/flows/crm.py): through
  the map, the one field-change path and the transition table, settled by the map's rules,
  each row whole or not at all. A row's event id is the file's digest and the row's number, so
  importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from engine.crm.fieldmap import CrmMap
from engine.db import Database
from engine.errors import Invalid, NurtureError
from engine.flows.crm import apply_or_refuse, parse_event
from engine.leads.importer import LeadCsv, spreadsheet_safe
from engine.leads.models import Lead
from engine.sending.models import Suppression

OBJECTS = ("lead", "contact", "account", "opportunity")
EXTRA_COLUMNS = ("NurtureId", "CrmId", "DoNotContact", "UpdatedAt")
MAX_ERRORS_LISTED = 50
CHUNK_ROWS = 500  # rows per transaction (each row in a savepoint of its own)


# -- export -----------------------------------------------------------------------------------

def export_changes(*, session: Session, crm_map: CrmMap, since: datetime, out: TextIO,
                   obj: str = "lead", progress: Callable[[int], None] | None = None) -> int:
    """Write the `obj` records (lead: not converted; contact: converted) changed or suppressed
    since `since` as CSV to `out`. Returns the number of rows."""
    if obj not in ("lead", "contact"):
        raise Invalid("export writes leads or contacts", field="object")
    columns = [rule.crm for rule in crm_map.rules(obj) if rule.pushes]
    writer = csv.writer(out)
    writer.writerow([*EXTRA_COLUMNS, *columns])
    suppressed_since = select(Suppression.email).where(Suppression.created_at >= since)
    kind = Lead.crm_object == "contact" if obj == "contact" else or_(
        Lead.crm_object.is_(None), Lead.crm_object == "lead")
    query = (select(Lead, Suppression.id)
             .outerjoin(Suppression, Suppression.email == Lead.email)
             .where(kind, or_(Lead.updated_at >= since, Lead.email.in_(suppressed_since)))
             .order_by(Lead.id).execution_options(yield_per=1000))
    rows = 0
    for lead, suppressed in session.execute(query):
        values = crm_map.to_crm(obj, {**lead.fields(), "owner": lead.owner,
                                      "custom": lead.custom or {}})
        writer.writerow([lead.id, lead.crm_id or "", "true" if suppressed else "false",
                         lead.updated_at.isoformat(),
                         *(_cell(values.get(name)) for name in columns)])
        rows += 1
        if progress and rows % 1000 == 0:
            progress(rows)
    return rows


def _cell(value) -> str:
    return "" if value is None else spreadsheet_safe(str(value))


# -- import -----------------------------------------------------------------------------------

@dataclass
class ImportedRecords:
    applied: int = 0
    repeat: int = 0  # rows of a file imported before: nothing done again
    refused: int = 0
    conflicts: int = 0
    duplicates: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first MAX_ERRORS_LISTED

    @property
    def rows(self) -> int:
        return self.applied + self.repeat + self.refused

    def refuse(self, where: str) -> None:
        self.refused += 1
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append(where)


def import_records(*, db: Database, crm_map: CrmMap, path: str | Path, obj: str,
                   now: datetime, id_column: str = "Id", updated_column: str | None = None,
                   encoding: str = "utf-8",
                   progress: Callable[[int, int], None] | None = None) -> ImportedRecords:
    """Apply every row of the CRM's CSV of `obj` records, each in its own transaction."""
    if obj not in OBJECTS:
        raise Invalid(f"unknown object {obj!r} (one of {', '.join(OBJECTS)})", field="object")
    path = Path(path)
    digest = _digest(path)
    summary = ImportedRecords()
    with LeadCsv(path, encoding, key=id_column.lower(), clean=dict) as source:
        rows, records = _Rows(crm_map, obj, source.header, id_column, updated_column), iter(source)
        while chunk := list(islice(records, CHUNK_ROWS)):
            with db.session() as session:  # one commit per chunk; a savepoint per row
                for row in chunk:
                    _import_row(session, crm_map, rows, row, f"csv-{digest}-{row.number}",
                                f"{path.name}: row {row.number}", now, summary)
            if progress:
                progress(source.bytes_read, source.size)
    return summary


def _import_row(session: Session, crm_map: CrmMap, rows: _Rows, row, event_id: str,
                where: str, now: datetime, summary: ImportedRecords) -> None:
    if row.fields is not None and not "".join(row.fields.values()).strip():
        return  # a blank row carries nothing
    try:
        if row.error:
            raise row.error
        event = parse_event(rows.event(row.fields, event_id, now))
    except ValidationError as exc:
        error = exc.errors()[0]
        summary.refuse(f"{where}, {_loc(error['loc'])}: {error['msg']}")
        return
    except NurtureError as exc:
        summary.refuse(f"{where}{', ' + exc.field if exc.field else ''}: {exc.detail}")
        return
    applied, refused = apply_or_refuse(session=session, event=event, crm_map=crm_map, now=now)
    if refused is not None:
        summary.refuse(f"{where}{', ' + refused.field if refused.field else ''}: "
                       f"{refused.detail}")
        return
    if applied.outcome == "repeat":
        summary.repeat += 1
    else:
        summary.applied += 1
    summary.conflicts += len(applied.conflicts)
    summary.duplicates += [{**d, "row": row.number} for d in applied.duplicates]


class _Rows:
    """A CSV row as the event of its record: the id and email columns apart, the other
    columns its fields under the map's spelling of the CRM's names (matched regardless of
    case, as CSV headers are)."""

    def __init__(self, crm_map: CrmMap, obj: str, header: list[str], id_column: str,
                 updated_column: str | None):
        self.obj = obj
        self.names = {rule.crm.lower(): rule.crm for rule in crm_map.rules(obj)}
        self.names.update({name.strip().lower(): name.strip() for name in header
                           if name.strip().lower() not in self.names})
        email = next((r.crm for r in crm_map.rules(obj) if r.local == "email"), "Email")
        self.id, self.email = id_column.lower(), email.lower()
        self.updated = updated_column.lower() if updated_column else None
        if self.updated and self.updated not in self.names:
            raise Invalid(f"no {updated_column} column in the header", field="updated_column")
        self.account = "accountid"

    def event(self, cells: dict, event_id: str, now: datetime) -> dict:
        cells = {key: value for key, value in cells.items() if value.strip() != ""}
        updated_at = cells.pop(self.updated, None) if self.updated else None
        data: dict = {"id": cells.pop(self.id, "")}
        if self.obj in ("lead", "contact") and self.email in cells:
            data["email"] = cells[self.email]
        if self.obj == "opportunity" and self.account in cells:
            data["account_id"] = cells.pop(self.account)
        if self.obj == "contact" and self.account in cells:
            data["account"] = {"id": cells.pop(self.account)}
        if updated_at:
            data["updated_at"] = updated_at
        data["fields"] = {self.names[key]: value for key, value in cells.items()}
        return {"id": event_id, "type": f"{self.obj}.updated",
                "occurred_at": updated_at or now.isoformat(), "data": data}


def _digest(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    except FileNotFoundError:
        raise Invalid(f"no such file: {path}", field="file") from None


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)

