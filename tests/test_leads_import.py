"""`nurture leads import` as a marketer uses it: a CRM export in, leads and enrollments out,
bad rows in a rejects file, nothing changed by importing the same file twice."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine.journeys.models import Enrollment
from engine.leads import importer
from engine.leads.importer import LeadRow, read_lead_rows
from engine.leads.models import Lead, LeadEvent, StageChange

HEADER = "email,first_name,last_name,company,title,timezone,stage,consent,industry\n"
GOOD = (HEADER
        + "ada@globex.example,Ada,Lovelace,Globex,IT Director,Europe/Paris,inquiry,yes,retail\n"
        + "bob@initech.example,Bob,Porter,Initech,CFO,America/New_York,engaged,no,finance\n"
        + "carla@umbrella.example,Carla,Diaz,Umbrella,Head of Marketing,,,,\n")
TABLES = (Lead, StageChange, Enrollment, LeadEvent)
SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"


pytestmark = pytest.mark.usefixtures("leads_cli_clock")


def write(tmp_path, text: str | bytes, name: str = "leads.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run(cli, path, *extra, program="acme-nurture", code=0):
    result = cli("leads", "import", path, "--program", program, *extra)
    assert result.exit_code == code, result.output
    if code == 0:
        assert_every_row_counted(result, path, *extra)
    return result


def assert_every_row_counted(result, path, *extra) -> None:
    """created + updated + unchanged + rejected = the file's data rows, and the rejects file
    holds every rejected row: no row is lost between the file and the summary. (That the data
    rows account for every line of the file is checked on hostile files below.)"""
    encoding = extra[extra.index("--encoding") + 1] if "--encoding" in extra else "utf-8"
    found = counts(result)
    assert sum(found.values()) == sum(1 for _ in read_lead_rows(path, encoding)), found
    written = re.search(r"rejected rows: (.+) \(row 1", result.stdout)
    if found["rejected"]:
        assert len(rejects(written.group(1))) == found["rejected"]
    else:
        assert written is None


def data_lines(text: str) -> int:
    """The non-blank lines after the header: the data rows of a file without multi-line values."""
    return sum(1 for line in text.split("\n")[1:] if line.strip())


def counts(result) -> dict:
    match = re.search(r"created (\d+), updated (\d+), unchanged (\d+), rejected (\d+)",
                      result.stdout)
    assert match, result.stdout
    return dict(zip(("created", "updated", "unchanged", "rejected"), map(int, match.groups())))


def rejects(path) -> list[dict]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        return list(csv.DictReader(handle))


def table_counts(db) -> dict:
    with db.session() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}


def lead(db, email: str) -> Lead:
    with db.session() as s:
        return s.scalar(select(Lead).where(Lead.email == email))


def test_good_file_creates_leads_with_history_and_enrollment(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, GOOD)
    result = run(cli, path)
    assert counts(result) == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 0}
    assert not (tmp_path / "leads.rejects.csv").exists()
    ada = lead(db, "ada@globex.example")
    assert (ada.first_name, ada.company, ada.title, ada.timezone, ada.stage, ada.consent) == (
        "Ada", "Globex", "IT Director", "Europe/Paris", "inquiry", True)
    assert ada.custom == {"industry": "retail"}
    assert lead(db, "bob@initech.example").consent is False
    carla = lead(db, "carla@umbrella.example")
    assert (carla.stage, carla.timezone, carla.consent, carla.custom) == ("inquiry", None, None, {})
    with db.session() as s:
        history = s.execute(select(StageChange.from_stage, StageChange.to_stage,
                                   StageChange.reason, StageChange.actor)
                            .where(StageChange.lead_id == ada.id)).all()
        assert history == [(None, "inquiry", "imported", "import")]
        enrollments = {e.lead_id: e for e in s.scalars(select(Enrollment))}
        assert len(enrollments) == 3
        assert enrollments[ada.id].status == "active"
        assert enrollments[ada.id].track == "it_manager/inquiry"
        assert enrollments[ada.id].state["next_email"] == "welcome_it"
        assert enrollments[ada.id].due_at == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        assert enrollments[ada.id].state["timezone"] == "Europe/Paris"
        bob = lead(db, "bob@initech.example")
        assert enrollments[bob.id].track == "finance/engaged"
        assert enrollments[carla.id].state["timezone"] == "Europe/Paris"  # the program's zone
        kinds = s.scalars(select(LeadEvent.kind).where(LeadEvent.lead_id == ada.id)
                          .order_by(LeadEvent.id)).all()
        assert kinds[:2] == ["enrolled", "move"]


def test_same_file_twice_changes_nothing(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, GOOD + "ADA@globex.example,,,Globex Corp,,,,,\n")  # a duplicate
    first = run(cli, path)
    assert counts(first) == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 1}
    before = table_counts(db)
    with db.session() as s:
        stamps = dict(s.execute(select(Lead.email, Lead.updated_at)).all())
    again = run(cli, path)
    assert counts(again) == {"created": 0, "updated": 0, "unchanged": 3, "rejected": 1}
    assert table_counts(db) == before
    with db.session() as s:
        assert dict(s.execute(select(Lead.email, Lead.updated_at)).all()) == stamps


def test_upsert_by_email_ignores_case_and_blank_cells_keep_values(cli, db, loaded_program,
                                                                  tmp_path):
    run(cli, write(tmp_path, GOOD))
    before = lead(db, "ada@globex.example")
    update = write(tmp_path, "EMAIL,First_Name , company,score\n"
                             "  ADA@Globex.Example ,,Globex Corporation,91\n", "update.csv")
    result = run(cli, update)
    assert counts(result) == {"created": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    after = lead(db, "ada@globex.example")
    assert after.id == before.id
    assert (after.first_name, after.company) == ("Ada", "Globex Corporation")
    assert after.custom == {"industry": "retail", "score": "91"}
    assert after.updated_at > before.updated_at
    assert table_counts(db)["leads"] == 3


def test_a_later_row_with_the_same_email_is_rejected_naming_both_rows(cli, db, loaded_program,
                                                                      tmp_path):
    path = write(tmp_path, "email,company,title\n"
                           "dup@globex.example,Globex,\n"
                           "other@initech.example,Initech,\n"
                           "DUP@globex.example,,CIO\n"
                           "dup@globex.example,Globex Corp,CIO\n")
    result = run(cli, path)
    assert counts(result) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 2}
    assert ("duplicate emails: 2 row(s) rejected, an earlier row with the same email was "
            "imported") in result.stdout
    assert "  rows 1 and 3: dup@globex.example (row 3 rejected)" in result.stdout
    assert "  rows 1 and 4: dup@globex.example (row 4 rejected)" in result.stdout
    got = {r["row"]: r for r in rejects(tmp_path / "leads.rejects.csv")}
    assert set(got) == {"3", "4"}
    for row in got.values():
        assert row["column"] == "email"
        assert row["reason"] == ("duplicate email: row 1 has the same email and was imported; "
                                 "this row was not")
    assert (got["3"]["email"], got["4"]["company"]) == ("DUP@globex.example", "Globex Corp")
    dup = lead(db, "dup@globex.example")
    assert (dup.company, dup.title) == ("Globex", None)  # the first row, nothing of the others
    assert table_counts(db)["leads"] == 2
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StageChange)
                        .where(StageChange.lead_id == dup.id)) == 1
        enrollment = s.scalar(select(Enrollment).where(Enrollment.lead_id == dup.id))
        assert enrollment.track == "finance/inquiry"  # no title: the default persona
    # The rows that were rejected, merged by hand and imported again, update the lead.
    again = run(cli, write(tmp_path, "email,company,title\ndup@globex.example,Globex Corp,CIO\n",
                           "merged.csv"))
    assert counts(again) == {"created": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    assert "duplicate" not in again.stdout
    assert lead(db, "dup@globex.example").title == "CIO"


def test_a_row_that_is_rejected_does_not_make_a_later_one_a_duplicate(cli, db, loaded_program,
                                                                      tmp_path):
    run(cli, write(tmp_path, "email,stage\nada@globex.example,mql\n", "first.csv"))
    path = write(tmp_path, "email,stage,timezone,company\n"
                           "ada@globex.example,inquiry,,Globex\n"  # illegal: mql -> inquiry
                           "bob@initech.example,,Mars/Olympus,Initech\n"  # bad time zone
                           "ada@globex.example,sal,,Globex\n"
                           "bob@initech.example,,,Initech\n"
                           "bob@initech.example,,,Initech Ltd\n")
    result = run(cli, path)
    assert counts(result) == {"created": 1, "updated": 1, "unchanged": 0, "rejected": 3}
    got = {r["row"]: r["reason"] for r in rejects(tmp_path / "leads.rejects.csv")}
    assert "illegal stage change mql -> inquiry" in got["1"]
    assert "unknown time zone" in got["2"]
    assert got["5"].startswith("duplicate email: row 4 has the same email")
    assert "rows 4 and 5: bob@initech.example" in result.stdout
    assert (lead(db, "ada@globex.example").stage, lead(db, "bob@initech.example").company) == (
        "sal", "Initech")


def test_the_summary_lists_20_duplicates_and_counts_the_rest(cli, db, loaded_program, tmp_path):
    rows = [f"lead{i}@globex.example" for i in range(25)]
    result = run(cli, write(tmp_path, "email\n" + "\n".join(rows + rows) + "\n"))
    assert counts(result) == {"created": 25, "updated": 0, "unchanged": 0, "rejected": 25}
    assert "duplicate emails: 25 row(s) rejected" in result.stdout
    assert result.stdout.count(" rejected)\n") == 20
    assert "  rows 1 and 26: lead0@globex.example (row 26 rejected)" in result.stdout
    assert "  and 5 more, in the rejects file" in result.stdout
    assert len(rejects(tmp_path / "leads.rejects.csv")) == 25


def test_rows_are_committed_per_chunk_and_duplicates_span_chunks(cli, db, loaded_program,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    rows = [f"lead{i}@globex.example,Company {i}," for i in range(5)]
    rows.append("lead0@globex.example,,CFO")  # in the third chunk, a duplicate of row 1
    path = write(tmp_path, "email,company,title\n" + "\n".join(rows) + "\n")

    original = importer._ChunkWriter.apply
    calls = []

    def crash_on_third_chunk(self, chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return original(self, chunk)

    monkeypatch.setattr(importer._ChunkWriter, "apply", crash_on_third_chunk)
    with pytest.raises(RuntimeError):
        cli("leads", "import", path, "--program", "acme-nurture")
    assert table_counts(db)["leads"] == 4  # two chunks committed, the third lost

    monkeypatch.setattr(importer._ChunkWriter, "apply", original)
    result = run(cli, path)
    assert counts(result) == {"created": 1, "updated": 0, "unchanged": 4, "rejected": 1}
    assert "rows 1 and 6: lead0@globex.example" in result.stdout
    assert lead(db, "lead0@globex.example").title is None
    assert table_counts(db)["enrollments"] == 5


def test_imports_one_after_another_in_one_process_each_see_their_own_duplicates(
        db, loaded_program, tmp_path, monkeypatch):
    """The emails an import has seen are its own, even on a pooled connection after an import
    that failed half-way (the service and the workers keep one Database for many imports)."""
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    path = write(tmp_path, "email\n" + "".join(f"lead{i}@globex.example\n" for i in range(5)))
    now = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    original = importer._ChunkWriter.apply

    def crash_on_second_chunk(self, chunk):
        if chunk[0].number == 3:
            raise RuntimeError("power cut")
        return original(self, chunk)

    monkeypatch.setattr(importer._ChunkWriter, "apply", crash_on_second_chunk)
    with pytest.raises(RuntimeError):
        importer.import_leads(db=db, path=path, program="acme-nurture", now=now)
    monkeypatch.setattr(importer._ChunkWriter, "apply", original)
    for _ in range(2):
        summary = importer.import_leads(db=db, path=path, program="acme-nurture", now=now)
        assert (summary.rejected, summary.duplicate_rows) == (0, 0)
        assert summary.rows == 5
    assert table_counts(db)["leads"] == 5


def test_bom_semicolons_crlf_and_quoted_newlines(cli, db, loaded_program, tmp_path):
    text = ('Email;Company;Title;Notes\r\n'
            'ada@globex.example;"Globex; Inc";IT Director;"line one\r\nline two"\r\n'
            'not-an-email;X;;\r\n'
            'bob@initech.example;Initech;CFO;"said ""hi"""\r\n')
    path = write(tmp_path, b"\xef\xbb\xbf" + text.encode("utf-8"))
    result = run(cli, path)
    assert counts(result) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    ada = lead(db, "ada@globex.example")
    assert ada.company == "Globex; Inc"
    assert ada.custom == {"notes": "line one\r\nline two"}
    assert lead(db, "bob@initech.example").custom == {"notes": 'said "hi"'}
    rejects_path = tmp_path / "leads.rejects.csv"
    assert rejects_path.read_bytes().startswith(b"\xef\xbb\xbfrow,")  # a BOM, like the input
    [reject] = rejects(rejects_path)
    assert (reject["row"], reject["column"]) == ("2", "email")  # data rows, not physical lines
    assert reject["Email"] == "not-an-email"


def test_latin1_bytes_are_rejected_naming_the_column(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, b"email,first_name,company\n"
                           b"rene@globex.example,Ren\xe9,Globex\n"
                           b"ada@globex.example,Ada,Globex\n")
    result = run(cli, path)
    assert counts(result) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    [reject] = rejects(tmp_path / "leads.rejects.csv")
    assert (reject["row"], reject["column"]) == ("1", "first_name")
    assert "--encoding latin-1" in reject["reason"]
    assert b"Ren\xe9" in (tmp_path / "leads.rejects.csv").read_bytes()  # original bytes kept
    assert lead(db, "rene@globex.example") is None


def test_latin1_file_imports_with_encoding_option(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, b"email;first_name;company\n"
                           b"rene@globex.example;Ren\xe9;Soci\xe9t\xe9 G\xe9n\xe9rale\n")
    result = run(cli, path, "--encoding", "latin-1")
    assert counts(result) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 0}
    rene = lead(db, "rene@globex.example")
    assert (rene.first_name, rene.company) == ("René", "Société Générale")


def test_bad_rows_are_rejected_with_row_column_and_reason(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, "email,first_name,timezone,stage,persona\n"
                           "good1@globex.example,A,Europe/Paris,inquiry,\n"
                           "bad@@globex,B,,,\n"
                           "c@globex.example,C,,shopping,\n"
                           "d@globex.example,D,Mars/Olympus,,\n"
                           "e@globex.example,E,,,astronaut\n"
                           "f@globex.example,F,,\n"
                           f"g@globex.example,{'G' * 300},,,\n"
                           "good2@globex.example,H,,mql,finance\n")
    result = run(cli, path)
    assert counts(result) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 6}
    assert "leads.rejects.csv" in result.stdout
    got = {r["row"]: r for r in rejects(tmp_path / "leads.rejects.csv")}
    expected = {"2": ("email", "invalid email address"), "3": ("stage", "unknown stage 'shopping'"),
                "4": ("timezone", "unknown time zone 'Mars/Olympus'"),
                "5": ("persona", "unknown persona 'astronaut'"),
                "6": ("", "4 values for 5 columns"), "7": ("first_name", "longer than 200")}
    assert set(got) == set(expected)
    for row, (column, reason) in expected.items():
        assert got[row]["column"] == column and reason in got[row]["reason"], got[row]
    assert got["3"]["first_name"] == "C" and got["3"]["stage"] == "shopping"  # original cells
    assert lead(db, "good2@globex.example").persona == "finance"
    assert table_counts(db)["leads"] == 2


def test_illegal_stage_change_of_existing_lead_is_rejected(cli, db, loaded_program, tmp_path):
    run(cli, write(tmp_path, "email,stage\nada@globex.example,mql\nbob@initech.example,inquiry\n"))
    path = write(tmp_path, "email,stage,company\n"
                           "ada@globex.example,inquiry,Globex\n"
                           "bob@initech.example,engaged,Initech\n", "second.csv")
    result = run(cli, path)
    assert counts(result) == {"created": 0, "updated": 1, "unchanged": 0, "rejected": 1}
    [reject] = rejects(tmp_path / "second.rejects.csv")
    assert (reject["row"], reject["column"]) == ("1", "stage")
    assert "illegal stage change mql -> inquiry" in reject["reason"]
    ada, bob = lead(db, "ada@globex.example"), lead(db, "bob@initech.example")
    assert (ada.stage, ada.company) == ("mql", None)  # a rejected row changes nothing
    assert (bob.stage, bob.company) == ("engaged", "Initech")
    with db.session() as s:
        history = s.execute(select(StageChange.from_stage, StageChange.to_stage,
                                   StageChange.reason).where(StageChange.lead_id == bob.id)
                            .order_by(StageChange.id)).all()
        assert history == [(None, "inquiry", "imported"), ("inquiry", "engaged", "imported")]
        enrollment = s.scalar(select(Enrollment).where(Enrollment.lead_id == bob.id))
        assert enrollment.track == "finance/engaged"  # the STAGE event reached the enrollment
        assert "stage" in s.scalars(select(LeadEvent.kind).where(LeadEvent.lead_id == bob.id)).all()


def test_existing_lead_without_enrollment_gets_enrolled(cli, db, loaded_program, tmp_path):
    from engine.db import utcnow
    from engine.flows.leads import upsert_lead

    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@globex.example", "title": "CIO"},
                    now=utcnow(), actor="api")
    result = run(cli, write(tmp_path, "email,title\nada@globex.example,CIO\n"))
    assert counts(result) == {"created": 0, "updated": 0, "unchanged": 1, "rejected": 0}
    with db.session() as s:
        enrollment = s.scalar(select(Enrollment))
        assert enrollment.track == "it_manager/inquiry"


def test_missing_email_column_is_fatal_and_writes_nothing(cli, db, loaded_program, tmp_path):
    path = write(tmp_path, "e-mail,first_name\nada@globex.example,Ada\n")
    result = run(cli, path, code=1)
    assert "error:" in result.stderr and "no email column" in result.stderr
    assert table_counts(db)["leads"] == 0
    assert not (tmp_path / "leads.rejects.csv").exists()


@pytest.mark.parametrize("args, message", [
    (("missing.csv", "--program", "acme-nurture"), "no such file"),
    (("leads.csv", "--program", "nope"), "no program named 'nope'"),
    (("leads.csv", "--program", "acme-nurture", "--encoding", "klingon"), "unknown encoding"),
])
def test_fatal_errors_exit_1(cli, loaded_program, tmp_path, args, message):
    write(tmp_path, GOOD)
    result = cli("leads", "import", *(tmp_path / a if a.endswith(".csv") else a for a in args))
    assert result.exit_code == 1
    assert message in result.stderr


def test_giant_fields_are_rejected_and_other_rows_import(cli, db, loaded_program, tmp_path):
    giant = "x" * (50 * 2**20)
    multiline = "\n".join(["y" * 1000] * 200)  # 200 KB inside quotes, over the csv field limit
    path = tmp_path / "hostile.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("email,company,notes\n")
        handle.write("ada@globex.example,Globex,\n")
        handle.write(f'mallory@evil.example,"{giant}",x\n')
        handle.write("bob@initech.example,Initech,\n")
        handle.write(f'eve@evil.example,Evil,"{multiline}"\n')
        handle.write(f'oscar@evil.example,Evil,"first line\n{"z" * 150_000}"\n')  # ends the quote
        handle.write("carla@umbrella.example,Umbrella,\n")
    result = run(cli, path)
    # eve's value runs over 100,000 characters: taken as a quote left open, her line is
    # rejected and the 199 lines after it are read as rows (of one value each: rejected too)
    assert counts(result) == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 3 + 199}
    rejects_path = tmp_path / "hostile.rejects.csv"
    assert rejects_path.stat().st_size < 300_000  # the giant values are not copied
    got = {r["row"]: r for r in rejects(rejects_path)}
    assert got["2"]["column"] == "company" and "too large" in got["2"]["reason"]
    assert got["2"]["email"] == "mallory@evil.example"
    assert got["4"]["email"] == "eve@evil.example" and got["4"]["column"] == "notes"
    assert got["4"]["reason"].startswith("line 5: unterminated quote")
    assert "still open after 1,000 lines or 100,000 characters" in got["4"]["reason"]
    assert all(got[str(row)]["reason"] == "1 values for 3 columns" for row in range(5, 204))
    assert "too large" in got["204"]["reason"] and got["204"]["email"] == "oscar@evil.example"
    assert lead(db, "carla@umbrella.example").company == "Umbrella"
    assert lead(db, "mallory@evil.example") is None


def test_dry_run_stores_nothing_and_counts_like_the_real_run(cli, db, loaded_program, tmp_path):
    run(cli, write(tmp_path, "email,title,stage\nada@globex.example,CIO,mql\n"
                             "bob@initech.example,CFO,inquiry\n", "first.csv"))
    path = write(tmp_path, "email,title,stage\n"
                           "ada@globex.example,CIO,mql\n"  # unchanged
                           "bob@initech.example,CFO,engaged\n"  # updated, stage change
                           "carla@umbrella.example,CIO,\n"  # created
                           "carla@umbrella.example,CTO,\n"  # a duplicate
                           "dan@hooli.example,CTO,mql\n"  # created
                           "ada@globex.example,,inquiry\n"  # a duplicate
                           "dan@hooli.example,,inquiry\n"  # a duplicate
                           "nobody,,\n")
    before = table_counts(db)
    with db.session() as s:
        stamps = dict(s.execute(select(Lead.email, Lead.updated_at)).all())
    dry = run(cli, path, "--dry-run")
    assert "nothing stored" in dry.stdout
    assert counts(dry) == {"created": 2, "updated": 1, "unchanged": 1, "rejected": 4}
    assert "rows 3 and 4: carla@umbrella.example" in dry.stdout
    assert (tmp_path / "leads.rejects.csv").exists()  # the rejects file is still written
    assert table_counts(db) == before
    with db.session() as s:
        assert dict(s.execute(select(Lead.email, Lead.updated_at)).all()) == stamps
    real = run(cli, path)
    assert counts(real) == counts(dry)
    assert table_counts(db) != before


def test_rejects_option_sets_the_path(cli, loaded_program, tmp_path):
    target = tmp_path / "out" / "bad.csv"
    target.parent.mkdir()
    result = run(cli, write(tmp_path, "email\nnope\n"), "--rejects", target)
    assert counts(result)["rejected"] == 1
    assert str(target) in result.stdout
    assert rejects(target)[0]["column"] == "email"


@pytest.mark.parametrize("cell, code", [
    ("\x1b]0;pwned\x07", "U+001B"), ("Globex\x1b[2J", "U+001B"), ("\x9b31mGlobex", "U+009B"),
    ("Glo\rbex", "U+000D"), ("Globex\x7f", "U+007F"), ("Glo\x08bex", "U+0008"),
])
def test_control_characters_are_rejected_naming_the_column(cli, db, loaded_program, tmp_path,
                                                          cell, code):
    path = tmp_path / "leads.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "company", "notes"])
        writer.writerow(["ada@globex.example", cell, ""])
        writer.writerow(["bob@initech.example", "Initech", cell])
        writer.writerow(["carla@umbrella.example", "Umbrella", "tab\there,\r\nand lines\nkept"])
    result = run(cli, path)
    assert counts(result) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 2}
    got = rejects(tmp_path / "leads.rejects.csv")
    assert [(r["row"], r["column"]) for r in got] == [("1", "company"), ("2", "notes")]
    assert all(f"control character {code}" in r["reason"] for r in got)
    c1_control = code == "U+009B"  # what a cp1252 file read as UTF-8 or latin-1 holds
    assert all(("(a cp1252 file needs --encoding cp1252)" in r["reason"]) == c1_control
               for r in got)
    assert lead(db, "carla@umbrella.example").custom == {"notes": "tab\there,\r\nand lines\nkept"}


def test_rejects_file_cells_cannot_run_as_spreadsheet_formulas(cli, loaded_program, tmp_path):
    cells = ['=HYPERLINK("http://evil.example","x")', "+33 1 23 45 67 89", "-1", "@SUM(A1)",
             "\tlead", "\rlead", "'quoted", "Globex"]
    path = tmp_path / "leads.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "=cmd", *(f"c{i}" for i in range(len(cells)))])
        writer.writerow(["=1+1", "-2", *cells])
    run(cli, path)
    with open(tmp_path / "leads.rejects.csv", encoding="utf-8", newline="") as handle:
        header, row = list(csv.reader(handle))
    assert header[:5] == ["row", "column", "reason", "email", "'=cmd"]
    assert row[0] == "1" and row[3:5] == ["'=1+1", "'-2"]
    assert row[5:] == ["'" + cell for cell in cells[:-1]] + ["Globex"]
    assert [cell.removeprefix("'") if cell.startswith("'") else cell for cell in row[5:]] == cells


def test_an_unterminated_quote_rejects_its_line_and_the_rows_after_it_import(
        cli, db, loaded_program, tmp_path):
    text = ("email,company,title\n"
            "ada@globex.example,Globex,CIO\n"
            'bob@initech.example,"Initech,CFO\n'  # line 3: the quote never closes
            "carla@umbrella.example,Umbrella,CTO\n"
            "\n"
            "dan@hooli.example,Hooli,CEO\n")
    path = write(tmp_path, text)
    dry = run(cli, path, "--dry-run")
    result = run(cli, path)
    assert counts(result) == counts(dry) == {"created": 3, "updated": 0, "unchanged": 0,
                                             "rejected": 1}
    assert sum(counts(result).values()) == data_lines(text)
    [reject] = rejects(tmp_path / "leads.rejects.csv")
    assert (reject["row"], reject["column"], reject["email"]) == ("2", "company",
                                                                  "bob@initech.example")
    assert reject["company"] == "Initech,CFO"  # the line's cells: the open value to its end
    assert reject["reason"] == ("line 3: unterminated quote: the quoted value that starts on "
                                "this line is still open at the end of the file; the lines "
                                "after it are read as rows")
    assert lead(db, "carla@umbrella.example").title == "CTO"
    assert lead(db, "dan@hooli.example").company == "Hooli"
    assert lead(db, "bob@initech.example") is None


@pytest.mark.parametrize("swallowing, closing, reason", [
    # closed by a stray quote inside a value
    ('ada@globex.example,Globex,"CIO', 'carla@umbrella.example,Umbrella,C"TO',
     "is closed on line 4 by a quote in the middle of a value"),
    # closed cleanly, with the right number of values: bob's line gives it away
    ('ada@globex.example,Globex,"CIO', 'carla@umbrella.example,Umbrella,CTO"',
     "runs over line 3, which reads as a row of its own"),
    # closed cleanly, with too many values
    ('ada@globex.example,"Globex,CIO', 'carla@umbrella.example",Umbrella,CTO',
     "runs to line 4, leaving 4 values for 3 columns"),
])
def test_a_stray_quote_loses_no_row(cli, db, loaded_program, tmp_path, swallowing, closing,
                                    reason):
    """A quote opened by mistake and closed by another one lines later once made one lead of
    three lines: the valid row between them was imported nowhere."""
    text = f"email,company,title\n{swallowing}\nbob@initech.example,Initech,CFO\n{closing}\n"
    result = run(cli, write(tmp_path, text))
    assert sum(counts(result).values()) == data_lines(text) == 3
    got = rejects(tmp_path / "leads.rejects.csv")
    assert got[0]["row"] == "1" and got[0]["email"] == "ada@globex.example"
    assert got[0]["reason"].startswith(f"line 2: unterminated quote: the quoted value that "
                                       f"starts on this line {reason}")
    assert lead(db, "bob@initech.example").title == "CFO"
    assert lead(db, "ada@globex.example") is None


def test_quoted_values_over_several_lines_are_one_row(cli, db, loaded_program, tmp_path):
    text = ("email,company,notes\n"
            'ada@globex.example,"Globex\nParis office","met at the fair\nwants a demo, CFO"\n'
            'bob@initech.example,Initech,"three lines\n\nwith a blank one"\n')
    result = run(cli, write(tmp_path, text))
    assert counts(result) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 0}
    ada = lead(db, "ada@globex.example")
    assert (ada.company, ada.custom) == ("Globex\nParis office",
                                         {"notes": "met at the fair\nwants a demo, CFO"})
    assert lead(db, "bob@initech.example").custom == {"notes": "three lines\n\nwith a blank one"}


def test_an_open_quote_on_the_last_line_is_rejected(cli, db, loaded_program, tmp_path):
    result = run(cli, write(tmp_path, 'email,company\nada@globex.example,Globex\n'
                                      'bob@initech.example,"Initech'))
    assert counts(result) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    [reject] = rejects(tmp_path / "leads.rejects.csv")
    assert reject["reason"].startswith("line 3: unterminated quote")
    assert lead(db, "bob@initech.example") is None


def test_a_quote_open_over_too_many_lines_is_unterminated(cli, db, loaded_program, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(importer, "MAX_ROW_LINES", 4)
    text = ("email,notes\n"
            'ada@globex.example,"four\nlines\nare\nfine"\n'
            'bob@initech.example,"five\nlines\nare\ntoo\nmany"\n'
            "carla@umbrella.example,\n")
    result = run(cli, write(tmp_path, text))
    assert counts(result) == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 5}
    got = rejects(tmp_path / "leads.rejects.csv")
    assert got[0]["email"] == "bob@initech.example"
    assert got[0]["reason"].startswith("line 6: unterminated quote: the quoted value that "
                                       "starts on this line is still open after 4 lines")
    assert [r["reason"] for r in got[1:]] == ["1 values for 2 columns"] * 4
    assert lead(db, "ada@globex.example").custom == {"notes": "four\nlines\nare\nfine"}
    assert lead(db, "carla@umbrella.example") is not None


def test_a_header_with_an_open_quote_is_fatal(cli, db, loaded_program, tmp_path):
    result = run(cli, write(tmp_path, 'email,"company\nada@globex.example,Globex\n'), code=1)
    assert "the header line opens a quote that it does not close" in result.stderr
    assert table_counts(db)["leads"] == 0


NAMES = ("email", "company", "title", "notes")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 10), width=st.integers(1, 4), delimiter=st.sampled_from(",;\t"),
       quotes=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 60)), max_size=6),
       newline=st.sampled_from(["\n", "\r\n"]), last_newline=st.booleans())
def test_stray_quotes_never_lose_or_merge_a_row(tmp_path, rows, width, delimiter, quotes, newline,
                                                last_newline):
    """Valid rows, with stray quotes put anywhere: each line ends up in exactly one row (none
    lost), and a row that imports carries no other line (none swallowed)."""
    lines = [delimiter.join([f"lead{n}@globex.example", *(f"{name} {n}" for name in NAMES[1:width])])
             for n in range(rows)]
    for index, position in quotes:
        line = lines[index % rows]
        at = position % (len(line) + 1)
        lines[index % rows] = line[:at] + '"' + line[at:]
    path = tmp_path / "stray.csv"
    path.write_text(newline.join([delimiter.join(NAMES[:width]), *lines])
                    + (newline if last_newline else ""), encoding="utf-8", newline="")
    found = list(read_lead_rows(path))
    carried = [[int(n) for n in re.findall(r"lead(\d+)@", "".join(row.values).replace('"', ""))]
               for row in found]
    assert sorted(n for numbers in carried for n in numbers) == list(range(rows))
    assert all(len(numbers) == 1 for row, numbers in zip(found, carried) if row.error is None)
    assert [row.number for row in found] == list(range(1, len(found) + 1))


def test_read_lead_rows_needs_no_database(tmp_path):
    path = write(tmp_path, "Email;Stage;Lead Score\n\nada@globex.example;MQL;\nbad;;\n")
    rows = list(read_lead_rows(path))
    assert [type(r) for r in rows] == [LeadRow, LeadRow]
    assert (rows[0].number, rows[0].error) == (2, None)  # the blank row 1 counts, then is skipped
    assert rows[0].fields == {"email": "ada@globex.example", "stage": "mql", "custom": {}}
    assert rows[1].number == 3 and rows[1].fields is None
    assert rows[1].error.field == "email"


# Any text a lead field may hold: no control characters but tab and line breaks (LF, CR LF).
# No "@" either: a line of a quoted value that reads as a row of its own (an email address in
# its column) is taken as a quote left open, see test_a_stray_quote_loses_no_row.
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n",
                                        exclude_characters="@"),
                          st.just("\r\n")), max_size=40).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(TEXT, TEXT), max_size=8), delimiter=st.sampled_from(",;\t"),
       bom=st.booleans())
def test_any_text_survives_the_csv_round_trip(tmp_path, cells, delimiter, bom):
    path = tmp_path / "round.csv"
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["email", "company", "notes"])
        for number, (company, notes) in enumerate(cells, start=1):
            writer.writerow([f"lead{number}@globex.example", company, notes])
    rows = list(read_lead_rows(path))
    assert [row.number for row in rows] == list(range(1, len(cells) + 1))
    for row, (company, notes) in zip(rows, cells):
        assert row.error is None, row.error
        assert row.fields.get("company") == (company.strip() or None)
        assert row.fields["custom"].get("notes") == (notes.strip() or None)


@settings(max_examples=200, deadline=None)
@given(leads=st.lists(st.fixed_dictionaries({
    "title": st.sampled_from([None, "", "CIO", "CFO", "IT Director", "Finance lead", "CEO",
                              "Controller of IT", "devops"]),
    "persona": st.sampled_from([None, "finance", "it_manager", "astronaut"]),
    "company": st.sampled_from([None, "Globex"])}), max_size=30))
def test_persona_resolver_agrees_with_resolve_persona(leads):
    from engine.programs.loader import load_program_dir
    from engine.programs.personas import PersonaResolver, resolve_persona

    program = load_program_dir(SAMPLE).program
    memo = PersonaResolver(program, limit=5)
    for fields in leads:
        assert memo(fields) == resolve_persona(program, fields)


def test_each_lead_keeps_the_persona_its_first_enrollment_matched(cli, db, loaded_program,
                                                                  tmp_path):
    """Reports split by persona read it (engine/reports/scope.py): the import keeps it as the
    one-by-one door does, and a change of title that moves the enrollment moves it too."""
    path = write(tmp_path, "email,title,persona\nada@globex.example,CIO,\n"
                           "bob@initech.example,CFO,\ncy@umbrella.example,CFO,it_manager\n")
    run(cli, path)
    assert [(lead(db, email).persona, lead(db, email).enrolled_persona) for email in
            ("ada@globex.example", "bob@initech.example", "cy@umbrella.example")] == [
        (None, "it_manager"), (None, "finance"), ("it_manager", "it_manager")]
    run(cli, write(tmp_path, "email,title\nada@globex.example,Controller\n", "moved.csv"))
    assert lead(db, "ada@globex.example").enrolled_persona == "finance"
