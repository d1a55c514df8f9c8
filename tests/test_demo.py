"""`nurture demo` and `nurture db upgrade` on the embedded defaults, as a newcomer runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import create_engine, func, inspect, select

from engine.leads.models import Lead
from engine.programs.models import ProgramRecord


def test_demo_loads_imports_simulates_and_summarises(cli, db, env, tmp_path, monkeypatch):
    own = tmp_path / "demo"
    result = cli("demo", "--leads", "40", "--days", "30", "--instance", own)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"demo instance: {own} (its own database, Redis, sink and files")
    assert "2 personas, 15 emails, 2 landing pages" in out
    assert re.search(r"created 40, updated 0, rejected 3", out)
    assert re.search(r"\d+ sends to 40 leads; 3 sales notification\(s\)", out)
    assert "exits: 3 talk_to_sales, 2 unsubscribed, 1 hard_bounce" in out
    assert "non-responder: 3 sends without response" in out
    delivered = re.search(r"sink: (\d+) message\(s\) received", out)
    assert delivered and int(delivered.group(1)) >= 40  # every lead got at least its welcome
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    assert re.search(r"QA passed: 0 blockers, \d+ warning", out)
    assert "launched Acme Cloud perpetual nurture v1" in out
    assert "told sales@acme.example, support@acme.example what the program does" in out
    # Visitors from campaigns filled in the demo form: leads with their source and consent,
    # handed to sales by the demo request (tests/test_lifecycle.py has the rest of the story).
    assert re.search(r"mira@northwind\.example +Head of IT Operations +source "
                     r"social/linkedin/q4-demo, consent given, stage mql", out)
    assert re.search(r"tomas@fabrikam\.example +CFO +source review-site/g2/cloud-compare, "
                     r"consent not given, stage mql", out)
    assert re.search(r"\d+ CRM outbox item\(s\) \(new leads, stage changes", out)
    # The CRM heard of it all: signed webhooks to the reference receiver, MQLs among them.
    crm = out.split("8. The CRM hears of it")[1].split("9. The quarterly review")[0]
    sent = re.search(r"delivered: (\d+) sent\n", crm)
    arrived = re.search(r"arrived: (\d+) event\(s\), (\d+) with a good signature: "
                        r"(\d+) lead_created", crm)
    assert sent and arrived and sent.group(1) == arrived.group(1) == arrived.group(2)
    assert int(arrived.group(3)) == 40 + 3  # the imported leads and the form's visitors
    mqls = re.search(r"stage changes: \d+, of which MQLs: (\d+)", crm)
    assert mqls and int(mqls.group(1)) >= 1 and "-> mql: score" in crm
    # by the CRM's names: the sample's field map is the demo instance's
    assert f"CRM field map in effect: {own / 'crm.yaml'}" in out
    assert "(in the CRM: Status: Marketing Qualified, as a lead)" in crm
    assert ("a new lead's fields, as the CRM names them (the field map): Company, "
            "Company_Size__c, Country, Email, Email_Consent__c, FirstName, Industry, "
            "LastName, LeadSource, Offer__c, Status, Title") in crm
    # The CRM answered over its signed door: one MQL won, another lost.
    assert re.search(r"opportunity\.won +200 applied: opportunity 006DEMO1 won; lead \S+: "
                     r"stage customer", crm)
    assert re.search(r"opportunity\.lost +200 applied: opportunity 006DEMO2 lost; lead \S+: "
                     r"stage recycled", crm)
    assert re.search(r"\S+ is a customer, \S+ is recycled", crm)
    # Sales heard of each MQL and trigger by email (the sample's sales team).
    emailed = re.search(r"sales notifications emailed: (\d+) \(to sales@acme\.example", out)
    notified = re.search(r"(\d+) sales notification\(s\)", out.split("7. Scores")[1])
    assert emailed and emailed.group(1) == notified.group(1) != "0"
    assert "(emailed to sales@acme.example)" in out
    # It ends with the quarterly review of the simulated quarter, written as a page with charts.
    review = re.search(r"attribution reports and their charts: (\S+review-(\d{4}-Q\d)\.html)", out)
    assert review and "Quarterly review " + review.group(2) in out
    assert re.search(r"emails sent +│ +\d[\d,]* +│", out)
    page = Path(review.group(1)).read_text(encoding="utf-8")
    assert page.count("<svg") >= 5 and "<script" not in page
    # Everything is in the demo's own instance: the configured database and instance directory
    # were not touched, and the demo says how to look at its data.
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 0
        assert s.scalar(select(func.count()).select_from(ProgramRecord)) == 0
    assert not (tmp_path / "instance" / "sink").exists()
    assert (own / "nurture.db").exists() and (own / "sink" / "index.jsonl").exists()
    look = f"NURTURE_INSTANCE={own} DATABASE_URL= SECRET_KEY="  # both set by the env fixture
    assert f"the demo's data stays in {own}: run a command on it as `{look} nurture ...`" in out
    assert f"see them all with `{look} nurture inbox`" in out
    # and how to open the console on it, with a user to sign in as
    console = re.search(rf"open the console on the demo's data: `{re.escape(look)} flask --app "
                        r"wsgi run`, then http://localhost:5000/ and sign in as "
                        r"demo@acme\.example with the password (demo-\S+)", out)
    assert console, out[-2000:]
    assert (own / "console-password").read_text().strip() == console.group(1)
    monkeypatch.setenv("NURTURE_INSTANCE", str(own))
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("SECRET_KEY")
    inbox = cli("inbox", "--json", "--limit", "100000")
    assert inbox.exit_code == 0
    # every delivered email, and before them 30 proofs (15 emails x 2 personas), approved
    # from their links, and the launch notice
    assert "review@acme.example approved 30 of 30 proofs" in out
    assert inbox.stdout.count('"rcpt_tos"') == int(delivered.group(1)) + 30 + 1
    assert inbox.stdout.count('"subject": "[PROOF] ') == 30
    assert '"subject": "Launched: Acme Cloud perpetual nurture"' in inbox.stdout
    # people clicked tracked links over HTTP; scoring handed the hottest to sales
    assert re.search(r"tracking: \d+ requests to http://127\.0\.0\.1:\d+", out)
    assert re.search(r"tracked by people: \d+ clicks, \d+ opens", out)
    assert re.search(r"[1-9]\d* sales notification\(s\)", out.split("7. Scores")[1])
    assert "the timeline sales sees" in out
    queue = cli("sales", "queue", "--json")  # on the demo's instance, as the demo says
    assert queue.exit_code == 0 and '"email"' in queue.stdout
    again = cli("demo", "--leads", "40", "--days", "30", "--instance", own)
    assert "already launched at its current version" in again.stdout
    assert f"sign in as demo@acme.example with the password {console.group(1)}" in again.stdout
    # Importing again creates nothing; a lead that moved on meanwhile (an MQL, an engaged lead)
    # is not sent back to the file's stage where the transition table forbids it (that row is
    # rejected with the illegal transition named).
    assert re.search(r"created 0, updated \d+, rejected [3-9]\b", again.stdout)
    sent = [(m["rcpt_tos"][0], m["subject"]) for m in json.loads(
        cli("inbox", "--json", "--limit", "100000").stdout)
        if not m["subject"].startswith(("[PROOF]", "Launched:", "Sales alert:"))]
    assert len(sent) == len(set(sent))  # nothing is sent twice


def test_db_upgrade_creates_the_schema(cli, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"leads", "programs", "program_versions", "enrollments", "lead_events",
            "stage_changes", "api_keys", "alembic_version"} <= tables
