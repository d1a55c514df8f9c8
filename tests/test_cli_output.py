"""What `nurture` prints of stored text cannot drive the operator's terminal: escape sequences,
C1 controls and bidi overrides stored by older versions, by a door that still takes them (bounce
reasons, SMTP replies, user agents, reviewer comments) or by a direct write show as visible
escapes, in every command; JSON output stays valid JSON with the same values."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.table import Table
from rich.text import Text
from sqlalchemy import select, update

from engine.assets.models import Asset, AssetVersion
from engine.cli_context import SafeConsole, echo_json, printable
from engine.db import utcnow
from engine.journeys.models import Enrollment
from engine.launch.models import Approval
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.programs.models import ProgramRecord
from engine.sales.models import SalesNotification, SlaBreach
from engine.sending.models import Delivery, OutboxMessage
from engine.tracking.models import TrackingEvent

ROOT = Path(__file__).resolve().parent.parent
# a window title change with its BEL, a screen clear, an 8-bit CSI, a right-to-left override, an
# isolate and DEL
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\u2066\x7f"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\u2066\\x7f"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
EMAIL = "ada@globex.example"
AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def assert_no_control(result) -> None:
    assert result.exit_code == 0, result.output
    for stream in (result.stdout, result.stderr):
        found = RAW.search(stream)
        assert found is None, f"raw {found.group()!r} in {stream!r}"


# -- the one place ------------------------------------------------------------------------------

def test_printable_escapes_what_a_terminal_acts_on_and_keeps_the_rest():
    assert printable(HOSTILE) == SHOWN
    kept = "tab\there\nnext line: café, 日本, emoji 🚀, \u200e marks"
    assert printable(kept) == kept


def terminal() -> tuple[SafeConsole, io.StringIO]:
    out = io.StringIO()
    return SafeConsole(file=out, force_terminal=True, color_system="standard", highlight=False,
                       soft_wrap=True, emoji=False), out


def test_the_console_escapes_stored_text_and_keeps_its_own_styles():
    console, out = terminal()
    console.print(f"[bold]name[/bold] {HOSTILE} :skull:")
    console.print(HOSTILE, markup=False)
    table = Table("a", "b")
    table.add_row(HOSTILE, Text(HOSTILE))
    console.print(table)
    printed = out.getvalue()
    assert "\x1b[1mname\x1b[0m" in printed  # rich's own bold survives
    assert f"{SHOWN} :skull:\n{SHOWN}\n" in printed
    assert "\\x1b]0;pwned" in printed.split("┃")[-1]  # inside the table too
    without_styles = re.sub(r"\x1b\[[0-9;]*m", "", printed)
    assert RAW.search(without_styles) is None


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_json_output_stays_json_with_every_control_escaped(capsys, ensure_ascii):
    echo_json({"company": HOSTILE, "name": "café"}, ensure_ascii=ensure_ascii)
    printed = capsys.readouterr().out
    assert RAW.search(printed) is None
    assert json.loads(printed) == {"company": HOSTILE, "name": "café"}


def test_commands_print_only_through_the_safe_helpers():
    """A future command cannot forget: plain click.echo or print would skip the escaping."""
    offenders = []
    for package in ("engine", "qa", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "cli_context.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"click\.(echo|secho)\(|(?<![\w.])print\(|sys\.std(out|err)\.write",
                             line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


# -- commands over stored text --------------------------------------------------------------------

@pytest.fixture
def stored(cli, db, loaded_program, tmp_path, leads_cli_clock) -> int:
    """A lead imported cleanly, then given hostile text everywhere, as older data would hold it."""
    path = tmp_path / "leads.csv"
    path.write_text(f"email,title\n{EMAIL},IT Director\n", encoding="utf-8")
    assert cli("leads", "import", path, "--program", loaded_program).exit_code == 0
    now = utcnow()
    with db.session() as s:
        lead = s.scalar(select(Lead).where(Lead.email == EMAIL))
        lead.company = lead.first_name = lead.owner = HOSTILE
        lead.custom = {"notes": HOSTILE}
        lead.stage = "mql"
        s.add(StageChange(lead_id=lead.id, from_stage="inquiry", to_stage="mql", at=AT,
                          reason=HOSTILE, actor=HOSTILE))
        s.add(LeadEvent(lead_id=lead.id, at=AT, category="event", kind="bounced",
                        detail={"detail": HOSTILE, "reason": HOSTILE}, actor=HOSTILE))
        s.add(SalesNotification(lead_id=lead.id, at=AT, kind="mql", reason=HOSTILE,
                                owner=HOSTILE))
        s.add(SlaBreach(lead_id=lead.id, kind="mql_unanswered", since=AT, due_at=AT,
                        detected_at=AT, owner=HOSTILE, action=HOSTILE))
        s.add(TrackingEvent(event_key="hostile-click", kind="click", lead_id=lead.id,
                            url=f"https://globex.example/{HOSTILE}", at=AT, user_agent=HOSTILE,
                            bot=True, bot_reason=HOSTILE))
        enrollment = s.scalar(select(Enrollment).where(Enrollment.lead_id == lead.id))
        s.add(OutboxMessage(enrollment_id=enrollment.id, lead_id=lead.id,
                            program_id=enrollment.program_id, program_version=1,
                            step="welcome_it", status=Delivery.FAILED_PERM, due_at=now,
                            message_id="<hostile@globex.example>", last_error=HOSTILE,
                            created_at=now, updated_at=now))
        s.execute(update(Asset).where(Asset.path == "pages/pricing.html")
                  .values(path=f"pages/{HOSTILE}.html"))
        version = s.scalar(select(AssetVersion).join(Asset, Asset.id == AssetVersion.asset_id)
                           .where(Asset.path == "emails/welcome_it.mjml",
                                  AssetVersion.version == Asset.current_version))
        record = s.scalar(select(ProgramRecord).where(ProgramRecord.name == loaded_program))
        s.add(Approval(program_id=record.id, asset_version_id=version.id, reviewer=HOSTILE,
                       decision="rejected", comment=HOSTILE, at=now - timedelta(minutes=1)))
        return lead.id


@pytest.mark.parametrize("args", [
    ("leads", "show", EMAIL),
    ("leads", "explain", EMAIL),
    ("sales", "queue"),
    ("sales", "notifications"),
    ("sla", "report"),
    ("tracking", "show", EMAIL, "--bots"),
    ("send-runs",),
    ("assets", "list", "--program", "acme-nurture"),
    ("qa", "approvals", "acme-nurture"),
])
def test_stored_control_characters_show_as_escapes(cli, stored, args):
    result = cli(*args)
    assert_no_control(result)
    assert "\\x1b]0;pwned" in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")


@pytest.mark.parametrize("args", [
    ("leads", "show", EMAIL, "--json"),
    ("leads", "explain", EMAIL, "--json"),
    ("sales", "queue", "--json"),
    ("sales", "notifications", "--json"),
    ("sla", "report", "--json"),
    ("tracking", "show", EMAIL, "--bots", "--json"),
    ("send-runs", "--json"),
    ("qa", "approvals", "acme-nurture", "--json"),
])
def test_json_output_of_stored_control_characters_is_escaped_json(cli, stored, args):
    result = cli(*args)
    assert_no_control(result)
    assert any(HOSTILE in text for text in strings(json.loads(result.stdout)))


def strings(data) -> list[str]:
    """Every string in parsed JSON, keys included."""
    if isinstance(data, dict):
        return [*data, *(text for value in data.values() for text in strings(value))]
    if isinstance(data, list):
        return [text for value in data for text in strings(value)]
    return [data] if isinstance(data, str) else []


def test_a_program_name_with_controls_shows_as_escapes(cli, db, sample_program):
    program_yaml = sample_program / "program.yaml"
    text = program_yaml.read_text(encoding="utf-8")
    program_yaml.write_text(text.replace("name: Acme Cloud perpetual nurture",
                                         'name: "Acme \\e]0;pwned\\a \\x9b31m"', 1),
                            encoding="utf-8")
    load = cli("program", "load", sample_program)
    assert_no_control(load)
    shown = cli("program", "show", "acme-nurture")
    assert_no_control(shown)
    assert "Acme \\x1b]0;pwned\\x07 \\x9b31m" in shown.stdout


def test_a_bounce_reason_given_on_the_command_line_reaches_no_terminal(cli, stored):
    recorded = cli("bounces", "record", EMAIL, "--type", "soft", "--reason", "5.1.1 \x1b[2J gone")
    assert_no_control(recorded)
    shown = cli("leads", "show", EMAIL)
    assert_no_control(shown)
    assert "reason 5.1.1" in shown.stdout  # the bounce service drops controls as it stores


def test_a_received_message_shows_as_escapes(cli, env):
    sink = Path(env["NURTURE_INSTANCE"]) / "sink"
    sink.mkdir(parents=True)
    (sink / "1.eml").write_bytes(b"From: a@globex.example\r\nTo: b@globex.example\r\n"
                                 b"Subject: hello \x1b]0;pwned\x07\r\n\r\nbody \x1b[2J\xc2\x9b31m\r\n")
    entry = {"seq": 1, "file": "1.eml", "received_at": "2026-03-02T06:00:00+00:00",
             "mail_from": "a@globex.example", "rcpt_tos": ["b@globex.example"],
             "subject": f"hello {HOSTILE}", "message_id": "<1@globex.example>", "size": 10}
    (sink / "index.jsonl").write_text(json.dumps(entry) + "\n", encoding="utf-8")
    for args in (("inbox",), ("inbox", "--json"), ("inbox", "show", "1"),
                 ("inbox", "show", "1", "--raw")):
        result = cli(*args)
        assert_no_control(result)
        assert "\\x1b]0;pwned" in result.stdout or "\\u001b]0;pwned" in result.stdout, args
