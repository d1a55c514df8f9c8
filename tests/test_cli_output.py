"""What `nurture` prints of stored text cannot drive the operator's terminal: escape sequences,
C1 controls and bidi overrides stored by older versions, by a door that still takes them (bounce
reasons, SMTP replies, user agents, reviewer comments) or by a direct write show as visible
escapes, in every command; JSON output stays valid JSON with the same values. Rich markup in
stored text (`[/]`, `[red]`, `[link=...]`) is shown as written: it neither crashes a command nor
restyles the output nor makes a terminal hyperlink."""

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
from engine.cli_context import SafeConsole, echo_json, printable, styled
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
# a closing tag with nothing open (rich raises MarkupError), a colour, a terminal hyperlink (OSC 8)
# and an emoji code
MARKUP = "[/] [red]x[/red] [link=https://evil.example]click[/link] :skull:"
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
    console.print(styled(("name", "bold"), f" {HOSTILE} :skull:"))
    console.print(HOSTILE)
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


def test_the_console_shows_rich_markup_in_text_as_written_wherever_it_goes():
    console, out = terminal()
    console.print(MARKUP)
    console.print(MARKUP, markup=True, emoji=True)  # a call site cannot turn it back on
    console.print(styled(("name", "bold"), f" {MARKUP}"))
    console.rule(MARKUP)
    table = Table(MARKUP, title=MARKUP)
    table.add_row(MARKUP)
    console.print(table)
    printed = out.getvalue()
    assert "\x1b]8;" not in printed  # no hyperlink
    assert "\x1b[31m" not in printed  # nothing red
    assert "\x1b[1mname\x1b[0m" in printed  # styles given as data still apply
    without_styles = re.sub(r"\x1b\[[0-9;]*m", "", printed)
    assert without_styles.count(MARKUP) == 7, without_styles


def test_a_console_made_with_markup_on_still_reads_none():
    out = io.StringIO()
    SafeConsole(file=out, markup=True, emoji=True).print(MARKUP)
    assert out.getvalue() == MARKUP + "\n"


def test_commands_style_text_only_through_the_safe_helpers():
    """What reads markup whatever the console says (rich's markup module, Text.from_markup, a
    Panel's or a Prompt's str title, rich's own print, a progress column showing a task's
    description unless told otherwise), and rich's Text, which drops BEL and CR unseen:
    commands use `styled` instead."""
    unsafe = re.compile(r"rich\.markup|from_markup|\bPanel\b|rich\.prompt|rich\.text|"
                        r"from rich import [^\n]*\b(print|Text)\b|rich\.print\(")
    offenders = []
    for package in ("engine", "qa", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "cli_context.py":
                continue
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT)
            offenders += [f"{where}: {m.group()}" for m in unsafe.finditer(text)]
            offenders += [f"{where}: {m.group()}"
                          for m in re.finditer(r"TextColumn\([^()]*description[^()]*\)", text)
                          if "markup=False" not in m.group()]
    assert offenders == []


# -- commands over stored text --------------------------------------------------------------------

@pytest.fixture
def stored(cli, db, loaded_program, tmp_path, leads_cli_clock) -> int:
    """A lead imported cleanly, then given hostile text everywhere, as older data would hold it."""
    return store_everywhere(cli, db, loaded_program, tmp_path, HOSTILE)


@pytest.fixture
def marked(cli, db, loaded_program, tmp_path, leads_cli_clock, monkeypatch) -> int:
    """The same with rich markup in place of control characters; a wide terminal, so that no
    table cell wraps."""
    monkeypatch.setenv("COLUMNS", "400")
    return store_everywhere(cli, db, loaded_program, tmp_path, MARKUP)


def store_everywhere(cli, db, loaded_program: str, tmp_path: Path, text: str) -> int:
    """A lead imported cleanly, then given `text` in every stored field a command shows."""
    path = tmp_path / "leads.csv"
    path.write_text(f"email,title\n{EMAIL},IT Director\n", encoding="utf-8")
    assert cli("leads", "import", path, "--program", loaded_program).exit_code == 0
    now = utcnow()
    with db.session() as s:
        lead = s.scalar(select(Lead).where(Lead.email == EMAIL))
        lead.company = lead.first_name = lead.owner = text
        lead.custom = {"notes": text}
        lead.stage = "mql"
        s.add(StageChange(lead_id=lead.id, from_stage="inquiry", to_stage="mql", at=AT,
                          reason=text, actor=text))
        s.add(LeadEvent(lead_id=lead.id, at=AT, category="event", kind="bounced",
                        detail={"detail": text, "reason": text}, actor=text))
        s.add(SalesNotification(lead_id=lead.id, at=AT, kind="mql", reason=text,
                                owner=text))
        s.add(SlaBreach(lead_id=lead.id, kind="mql_unanswered", since=AT, due_at=AT,
                        detected_at=AT, owner=text, action=text))
        s.add(TrackingEvent(event_key="hostile-click", kind="click", lead_id=lead.id,
                            url=f"https://globex.example/{text}", at=AT, user_agent=text,
                            bot=True, bot_reason=text))
        enrollment = s.scalar(select(Enrollment).where(Enrollment.lead_id == lead.id))
        s.add(OutboxMessage(enrollment_id=enrollment.id, lead_id=lead.id,
                            program_id=enrollment.program_id, program_version=1,
                            step="welcome_it", status=Delivery.FAILED_PERM, due_at=now,
                            message_id="<hostile@globex.example>", last_error=text,
                            created_at=now, updated_at=now))
        s.execute(update(Asset).where(Asset.path == "pages/pricing.html")
                  .values(path=f"pages/{text}.html"))
        version = s.scalar(select(AssetVersion).join(Asset, Asset.id == AssetVersion.asset_id)
                           .where(Asset.path == "emails/welcome_it.mjml",
                                  AssetVersion.version == Asset.current_version))
        record = s.scalar(select(ProgramRecord).where(ProgramRecord.name == loaded_program))
        s.add(Approval(program_id=record.id, asset_version_id=version.id, reviewer=text,
                       decision="rejected", comment=text, at=now - timedelta(minutes=1)))
        return lead.id


SHOWING_STORED_TEXT = [
    ("leads", "show", EMAIL),
    ("leads", "explain", EMAIL),
    ("sales", "queue"),
    ("sales", "notifications"),
    ("sla", "report"),
    ("tracking", "show", EMAIL, "--bots"),
    ("send-runs",),
    ("assets", "list", "--program", "acme-nurture"),
    ("qa", "approvals", "acme-nurture"),
]


@pytest.mark.parametrize("args", SHOWING_STORED_TEXT)
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


# -- rich markup in stored text ------------------------------------------------------------------

def assert_shown_as_written(result, text: str = MARKUP) -> None:
    """Parsed markup would crash on `[/]` or drop the tags; escaped for a markup reader, the
    brackets would show a backslash."""
    assert result.exit_code == 0, result.output
    assert text in result.stdout, result.stdout
    assert "\\[" not in result.output


@pytest.mark.parametrize("args", [*SHOWING_STORED_TEXT, ("render", "welcome_it", "--lead", EMAIL)])
def test_stored_rich_markup_shows_as_written(cli, marked, args):
    assert_shown_as_written(cli(*args))


def test_a_program_named_with_markup_shows_as_written(cli, db, sample_program):
    program_yaml = sample_program / "program.yaml"
    text = program_yaml.read_text(encoding="utf-8")
    program_yaml.write_text(text.replace("name: Acme Cloud perpetual nurture",
                                         f'name: "{MARKUP}"', 1), encoding="utf-8")
    assert_shown_as_written(cli("program", "load", sample_program), "loaded acme-nurture")
    shown = cli("program", "show", "acme-nurture")
    assert_shown_as_written(shown)
    assert shown.stdout.startswith(f"{MARKUP} (acme-nurture, version 1")


def test_a_directory_named_with_markup_is_named_as_written(cli, sample_program):
    directory = sample_program.rename(sample_program.with_name("[bold]acme"))
    assert_shown_as_written(cli("program", "validate", directory), f"{directory}: valid")


def test_names_and_reasons_typed_with_markup_show_as_written(cli, marked, loaded_program,
                                                             tmp_path):
    created = cli("apikey", "create", "--role", "sales", "--name", MARKUP)
    assert created.exit_code == 0 and f"created sales key '{MARKUP}'" in created.stderr
    assert_shown_as_written(cli("apikey", "list"))

    assert_shown_as_written(cli("sales", "accept", EMAIL, "--by", MARKUP),
                            f"{EMAIL}: accepted, stage sal, owner {MARKUP}")
    assert cli("bounces", "record", EMAIL, "--type", "soft", "--reason",
               f"4.2.2 {MARKUP}").exit_code == 0
    assert_shown_as_written(cli("leads", "show", EMAIL), f"reason 4.2.2 {MARKUP}")
    assert_shown_as_written(cli("qa", "waive", loaded_program, "format.missing-alt:[/]",
                                "--reason", MARKUP, "--by", MARKUP),
                            f"waived format.missing-alt:[/] for acme-nurture: {MARKUP}")


def test_an_error_quoting_markup_typed_on_the_command_line_shows_it_as_written(cli, env):
    result = cli("leads", "show", MARKUP)
    assert result.exit_code == 1
    assert f"invalid email address '{MARKUP}'" in result.stderr


def test_a_received_subject_with_markup_shows_as_written(cli, env):
    """A proof's subject names its persona: `[PROOF] [IT manager] ...`."""
    subject = f"[PROOF] [{MARKUP}] Welcome"
    sink = Path(env["NURTURE_INSTANCE"]) / "sink"
    sink.mkdir(parents=True)
    (sink / "1.eml").write_bytes(f"From: a@globex.example\r\nTo: b@globex.example\r\n"
                                 f"Subject: {subject}\r\n\r\nbody {MARKUP}\r\n".encode())
    entry = {"seq": 1, "file": "1.eml", "received_at": "2026-03-02T06:00:00+00:00",
             "mail_from": "a@globex.example", "rcpt_tos": ["b@globex.example"],
             "subject": subject, "message_id": "<1@globex.example>", "size": 10}
    (sink / "index.jsonl").write_text(json.dumps(entry) + "\n", encoding="utf-8")
    assert_shown_as_written(cli("inbox"), subject)
    assert_shown_as_written(cli("inbox", "show", "1"), subject)
