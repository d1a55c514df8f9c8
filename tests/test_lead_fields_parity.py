"""A lead's fields are one thing: for random leads with custom columns (some of which persona
and fit rules read), `nurture simulate`'s engine and the live engine (a lead imported from a
file, or sent to the API's upsert, then enrolled) agree on the persona, the track and the
first send."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime
from itertools import count

import pytest
from conftest import SAMPLE_PROGRAM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launching import mark_launched
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.journeys.service import run_due
from engine.journeys.simulate import simulate
from engine.leads.importer import import_leads, read_lead_rows
from engine.leads.models import STANDARD_FIELDS, Lead, LeadEvent, lead_fields
from engine.programs.loader import load_program_dir
from engine.programs.service import load_program

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday, before Paris's window opens
IT_RULE = "match: {title_contains: [IT, CIO, infrastructure, sysadmin, DevOps]}"
RULE_COLUMNS = ("department", "company_size", "industry")  # read by persona and fit rules
_emails = count()

custom_names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: name not in (*STANDARD_FIELDS, *RULE_COLUMNS, "custom"))
leads = st.fixed_dictionaries({
    "title": st.sampled_from([None, "CFO", "Analyst", "Head of IT", "finance controller"]),
    "stage": st.sampled_from([None, "inquiry", "engaged", "recycled", "mql", "sal"]),
    "timezone": st.sampled_from([None, "Europe/Paris", "America/New_York", "Asia/Tokyo"]),
    "persona": st.sampled_from([None, None, None, "finance", "it_manager"]),
    "department": st.sampled_from([None, "Engineering", " engineering ", "IT", "Sales"]),
    "company_size": st.sampled_from([None, "1,200", "50", "200-500"]),
    "industry": st.sampled_from([None, "software", "Retail"]),
}, optional={"extra": st.dictionaries(custom_names, st.text("abc XYZ-,0123456789", max_size=12),
                                      max_size=3)})


@pytest.fixture
def program_dir(tmp_path, db):
    """The sample, its IT persona matched on a custom column, loaded and launched."""
    directory = tmp_path / "by-department"
    shutil.copytree(SAMPLE_PROGRAM, directory)
    path = directory / "program.yaml"
    assert IT_RULE in path.read_text()
    path.write_text(path.read_text().replace(IT_RULE, "match: {department_in: [engineering, IT]}"))
    with db.session() as session:
        load_program(session=session, directory=directory, now=NOW)
    mark_launched(db, "acme-nurture")
    return directory


def lead_row(lead: dict) -> dict:
    """The lead as the columns of a lead file: email, standard fields, custom columns."""
    row = {"email": f"lead{next(_emails)}@parity.example"}
    row.update({key: value for key, value in lead.items() if key != "extra" and value is not None})
    row.update(lead.get("extra", {}))
    return row


def write_csv(path, row: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def simulated(program, path) -> tuple:
    """As `nurture simulate` reads the file and runs it."""
    [row] = list(read_lead_rows(path))
    assert row.error is None
    [sim] = simulate(program, [row.fields], [], start=NOW, days=2)
    first = next(((e.asset, e.at) for e in sim.path if e.action == "send"), None)
    return sim.state.persona, sim.state.track, str(sim.state.status), first


def live(db, email: str) -> tuple:
    """The enrollment the live engine stored, after its first step fell due."""
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.email == email))
        enrollment = session.scalar(select(Enrollment).where(Enrollment.lead_id == lead.id))
        if enrollment.due_at is not None and not _sends(session, lead.id):
            run_due(session=session, now=enrollment.due_at)
    with db.session() as session:
        enrollment = session.get(Enrollment, enrollment.id)
        sends = _sends(session, lead.id)
        first = (sends[0].detail["asset"], sends[0].at.astimezone(UTC)) if sends else None
        return enrollment.state["persona"], enrollment.track, enrollment.status, first


def _sends(session, lead_id: int) -> list[LeadEvent]:
    return list(session.scalars(select(LeadEvent).where(
        LeadEvent.lead_id == lead_id, LeadEvent.category == "action", LeadEvent.kind == "send")
        .order_by(LeadEvent.id)))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lead=leads, door=st.sampled_from(["import", "api"]))
def test_simulate_and_the_live_engine_agree_on_persona_track_and_first_send(
        db, program_dir, tmp_path, lead, door):
    program = load_program_dir(program_dir).program
    row = lead_row(lead)
    path = tmp_path / "lead.csv"
    write_csv(path, row)
    if door == "import":
        summary = import_leads(db=db, path=path, program="acme-nurture", now=NOW)
        assert summary.created == 1
    else:
        with db.session() as session:
            upsert_lead(session=session, fields=row, now=NOW, actor="test", program="acme-nurture")
    expected = simulated(program, path)
    assert live(db, row["email"]) == expected
    if lead["persona"] is None and lead["department"] is not None:
        engineering = lead["department"].strip().lower() in ("engineering", "it")
        assert (expected[0] == "it_manager") == engineering  # the custom column decided


def test_a_custom_field_never_shadows_a_standard_field_of_the_same_name():
    fields = lead_fields({"title": "CFO", "id": 7, "custom": {}},
                         {"title": "CIO", "department": "IT"})
    assert (fields["title"], fields["department"], fields["stage"]) == ("CFO", "IT", None)
    assert "id" not in fields and "custom" not in fields
    assert lead_fields({}, None)["title"] is None
