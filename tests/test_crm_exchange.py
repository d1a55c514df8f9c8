"""`nurture crm export` and `nurture crm import`: CSV for a CRM without an API, through the
same field map as the webhooks; and the logs of what the CRM sent (`crm inbound`,
`crm duplicates`)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from launching import launch_all
from sqlalchemy import func, select
from test_crm_inbound import CRM_MAP

from engine.crm.models import Account, CrmInboundEvent, Opportunity
from engine.flows.leads import upsert_lead
from engine.leads.models import Lead
from engine.programs.service import load_program
from engine.sending.suppression import suppress

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def instance(env, tmp_path):
    path = tmp_path / "instance"
    path.mkdir(exist_ok=True)
    (path / "crm.yaml").write_text(CRM_MAP.replace("direction: pull", "direction: both"))
    return path


@pytest.fixture
def leads(db, sample_program, instance, monkeypatch) -> list[str]:
    monkeypatch.setattr("engine.crm.cli.utcnow", lambda: MONDAY)
    emails = ["ada@globex.example", "bo@globex.example", "cy@initech.example"]
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY - timedelta(days=10))
        launch_all(s)
        for day, email in enumerate(emails):
            upsert_lead(session=s, fields={"email": email, "title": "CIO", "first_name": "A"},
                        now=MONDAY - timedelta(days=3 - day), actor="test",
                        program="acme-nurture")
    return emails


def write_csv(path, rows: list[list[str]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return str(path)


def lead(db, email: str) -> Lead:
    with db.session() as s:
        return s.scalar(select(Lead).where(Lead.email == email))


# -- export -----------------------------------------------------------------------------------

def test_export_writes_what_changed_since_under_the_crms_names(cli, leads, db, tmp_path):
    with db.session() as s:
        suppress(session=s, email="ada@globex.example", reason="unsubscribed", source="test",
                 now=MONDAY)
    out = tmp_path / "changes.csv"
    result = cli("crm", "export", "--since", (MONDAY - timedelta(days=2)).isoformat(),
                 "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["Email"] for r in rows] == ["ada@globex.example", "bo@globex.example",
                                          "cy@initech.example"]
    ada, bo = rows[0], rows[1]
    assert (ada["DoNotContact"], bo["DoNotContact"]) == ("true", "false")  # ada: suppressed
    assert (bo["Title"], bo["Status"]) == ("CIO", "Open")  # the stage through its value map
    assert set(rows[0]) == {"NurtureId", "CrmId", "DoNotContact", "UpdatedAt", "Email",
                            "Title", "Company", "Status", "OwnerName"}
    assert "3 lead(s) changed since" in result.output


def test_export_to_standard_output_and_cells_a_spreadsheet_would_run_are_defused(cli, leads, db):
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "bo@globex.example", "title": "=HYPERLINK(1)"},
                    now=MONDAY, actor="test")
    result = cli("crm", "export", "--since", "2026-11-02")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["Email"] for r in rows] == ["bo@globex.example"]
    assert rows[0]["Title"] == "'=HYPERLINK(1)"


def test_export_refuses_a_bad_time(cli, leads):
    result = cli("crm", "export", "--since", "last tuesday")
    assert result.exit_code != 0 and "since" in result.output and "ISO date" in result.output


# -- import -----------------------------------------------------------------------------------

def test_import_applies_each_row_through_the_map_and_twice_changes_nothing(cli, leads, db,
                                                                           tmp_path):
    path = write_csv(tmp_path / "contacts.csv", [
        ["Id", "email", "FirstName", "Title", "AccountId", "Fax"],
        ["003A", "ada@globex.example", "Ada", "CTO", "001G", "123"],
        ["", "", "", "", "", ""],
        ["003N", "new@hooli.example", "Nia", "VP", "", ""],
    ])
    result = cli("crm", "import", path, "--object", "contact")
    assert result.exit_code == 0, result.output
    assert "2 row(s): 2 applied, 0 already imported, 0 refused; 2 conflict(s)" in result.output  # first_name, title
    ada = lead(db, "ada@globex.example")
    assert (ada.first_name, ada.title, ada.crm_id, ada.crm_object) == ("Ada", "CTO", "003A",
                                                                       "contact")
    with db.session() as s:
        assert s.get(Account, ada.account_id).crm_id == "001G"
    assert lead(db, "new@hooli.example").first_name == "Nia"
    again = cli("crm", "import", path, "--object", "contact")
    assert "2 row(s): 0 applied, 2 already imported" in again.output


def test_import_refuses_bad_rows_by_number_and_keeps_the_good(cli, leads, db, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr("engine.flows.crm_exchange.CHUNK_ROWS", 2)  # rows span transactions
    path = write_csv(tmp_path / "opportunities.csv", [
        ["Id", "Name", "Amount", "CloseDate", "AccountId"],
        ["006A", "Platform", "48000", "2027-03-31", "001G"],
        ["006B", "Bad amount", "lots", "2027-03-31", ""],
        ["", "No id", "1", "", ""],
        ["006C", "Bad date", "1", "31/03/2027", ""],
    ])
    result = cli("crm", "import", path, "--object", "opportunity")
    assert result.exit_code == 1
    assert "4 row(s): 1 applied, 0 already imported, 3 refused" in result.output
    assert "opportunities.csv: row 2, data.fields.Amount" in result.output
    assert "opportunities.csv: row 3, data.id" in result.output
    assert "opportunities.csv: row 4, data.fields.CloseDate" in result.output
    with db.session() as s:
        found = list(s.execute(select(Opportunity.crm_id, Opportunity.amount)))
    assert found == [("006A", Decimal("48000.00"))]


def test_import_of_two_records_for_one_email_keeps_the_latest_and_reports_it(cli, leads, db,
                                                                             tmp_path):
    path = write_csv(tmp_path / "contacts.csv", [
        ["Id", "Email", "Title", "LastModifiedDate"],
        ["003NEW", "ada@globex.example", "CEO", "2026-11-01T10:00:00+00:00"],
        ["003OLD", "ada@globex.example", "Intern", "2025-01-01T10:00:00+00:00"],
    ])
    result = cli("crm", "import", path, "--object", "contact", "--updated-column",
                 "LastModifiedDate")
    assert result.exit_code == 0, result.output
    assert ("duplicate: row 2: ada@globex.example is 003NEW and 003OLD in the CRM; kept 003NEW"
            in result.output)
    found = lead(db, "ada@globex.example")
    assert (found.crm_id, found.title) == ("003NEW", "CEO")
    listed = json.loads(cli("crm", "duplicates", "--json").output)
    assert [(d["email"], d["kept"]) for d in listed] == [("ada@globex.example", "003NEW")]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "no header row"),
    (b"Name,Amount\nx,1\n", "no id column"),
    (b"Id,Id\n1,2\n", "appears twice"),
])
def test_import_refuses_a_file_it_cannot_read_before_applying_anything(cli, leads, db, tmp_path,
                                                                       content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = cli("crm", "import", path, "--object", "account")
    assert result.exit_code != 0 and message in result.output
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(CrmInboundEvent)) == 0


def test_import_of_a_missing_file_names_it(cli, leads, tmp_path):
    result = cli("crm", "import", tmp_path / "nope.csv", "--object", "lead")
    assert result.exit_code != 0 and "nope.csv" in result.output


def test_the_inbound_log_lists_changes_conflicts_and_refusals(cli, leads, tmp_path):
    path = write_csv(tmp_path / "leads.csv", [
        ["Id", "Email", "Title", "Status"],
        ["00QA", "ada@globex.example", "CTO", "Working"],
        ["00QB", "bo@globex.example", "CTO", "Customer?"],
        ["00QC", "cy@initech.example", "", "Accepted"],
    ])
    cli("crm", "import", path, "--object", "lead")
    shown = cli("crm", "inbound").output
    assert "lead ada@globex.example: stage, title" in shown
    assert "conflict lead.title: ours 'CIO', the CRM's 'CTO': kept crm" in shown
    refused = json.loads(cli("crm", "inbound", "--outcome", "refused", "--json").output)
    assert [e["outcome"] for e in refused] == ["refused"]
    assert "Customer?" in refused[0]["error"]
    status = cli("crm", "status").output
    assert "from the CRM: 2 applied, 1 refused" in status
