"""`nurture program validate|load|list|show` as a marketer uses them."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil

import pytest
from launching import mark_launched
from sqlalchemy import func, select

from engine.programs.models import ProgramRecord, ProgramVersion
from engine.programs.store import current_program
from engine.sending.outbox import message_id


def test_sample_program_is_valid(cli, sample_program):
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def line_of(path, needle) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_validate_reports_every_error_with_file_and_line(cli, sample_program):
    yaml_path = sample_program / "program.yaml"
    replace_in(yaml_path, "{wait: 3d}", "{wait: 3 days}")
    replace_in(yaml_path, "{email: guide_it}", "{email: guide_typo}")
    replace_in(yaml_path, "finance/engaged:", "finance/engagd:")
    replace_in(yaml_path, "it_manager/recycled:", "it_mgr/recycled:")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"program.yaml:{line_of(yaml_path, '3 days')}: track it_manager/inquiry step 2: bad duration '3 days' (use a number and m, h, d or w, e.g. 3d or 1w)" in lines
    assert f"program.yaml:{line_of(yaml_path, 'guide_typo')}: track it_manager/inquiry step 3: unknown email 'guide_typo'" in lines
    assert any(re.match(rf"program.yaml:{line_of(yaml_path, 'finance/engagd')}: track finance/engagd: unknown stage 'engagd'", l) for l in lines)
    assert f"program.yaml:{line_of(yaml_path, 'it_mgr/recycled')}: track it_mgr/recycled: unknown persona 'it_mgr'" in lines


def test_yaml_syntax_error_names_the_line(cli, sample_program):
    yaml_path = sample_program / "program.yaml"
    text = yaml_path.read_text().splitlines()
    text.insert(3, "personas: [unclosed")
    yaml_path.write_text("\n".join(text))
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    assert re.search(r"^program\.yaml:\d+: YAML syntax error", result.stderr, re.MULTILINE)


def test_missing_email_file_and_template_error_are_reported(cli, sample_program):
    (sample_program / "emails" / "guide_it.mjml").unlink()
    replace_in(sample_program / "emails" / "roi_it.mjml", "{{ lead.first_name", "{{ lead.first_name }")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    assert "email guide_it: file 'emails/guide_it.mjml' not found" in result.stderr
    assert re.search(r"^emails/roi_it\.mjml:\d+: email roi_it: template syntax error", result.stderr, re.MULTILINE)


def test_load_stores_a_version_and_is_idempotent(cli, sample_program, db):
    first = cli("program", "load", sample_program)
    assert first.exit_code == 0, first.output
    assert "loaded acme-nurture version 1" in first.output
    again = cli("program", "load", sample_program)
    assert "unchanged" in again.output
    replace_in(sample_program / "program.yaml", "{wait: 3d}", "{wait: 2d}")
    third = cli("program", "load", sample_program)
    assert "version 2" in third.output
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ProgramVersion)) == 2
        assert s.scalar(select(ProgramRecord.current_version)) == 2


def test_load_of_invalid_program_stores_nothing(cli, sample_program, db):
    replace_in(sample_program / "program.yaml", "{email: guide_it}", "{email: nope}")
    result = cli("program", "load", sample_program)
    assert result.exit_code == 1
    assert "unknown email 'nope'" in result.stderr
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ProgramRecord)) == 0


def test_show_prints_matrix_and_flags_empty_cells(cli, loaded_program):
    result = cli("program", "show", loaded_program)
    assert result.exit_code == 0, result.output
    assert "it_manager/inquiry" in result.output
    assert "EMPTY" in result.output
    assert "empty cell(s)" in result.output and "it_manager/mql" in result.output


def test_show_prints_kind_goal_and_advance_rules(cli, loaded_program, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    result = cli("program", "show", loaded_program)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1:5] == [
        "kind: inbound", "goal: form_submitted on page demo within 90d of enrolling",
        "advance inquiry, recycled -> engaged on click, form_submitted, consumed",
        "advance engaged -> recycled after 90d without a response"]
    shown = json.loads(cli("program", "show", loaded_program, "--json").output)
    assert shown["kind"] == "inbound"
    assert shown["goal"] == {"event": "form_submitted", "page": "demo", "within": "90d",
                             "text": "form_submitted on page demo within 90d of enrolling"}
    assert shown["advance"] == lines[3:5]


def listed(cli) -> list[dict]:
    result = cli("program", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_program_list_names_kind_goal_versions_launch_state_and_enrolled_leads(
        cli, sample_program, db, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert cli("program", "list").output.strip() == (
        "no programs (load one with `nurture program load DIR`)")
    assert listed(cli) == []
    plain = tmp_path / "plain"  # a second program, with neither kind nor goal
    shutil.copytree(sample_program, plain)
    replace_in(plain / "program.yaml", "program: acme-nurture", "program: acme-plain")
    replace_in(plain / "program.yaml", "kind: inbound\n", "")
    replace_in(plain / "program.yaml", "goal: {event: form_submitted, page: demo_request, "
                                       "within: 90d}\n", "")
    for directory in (plain, sample_program):
        assert cli("program", "load", directory).exit_code == 0
    [acme, other] = listed(cli)
    assert acme == {
        "program": "acme-nurture", "name": "Acme Cloud perpetual nurture", "kind": "inbound",
        "goal": {"event": "form_submitted", "page": "demo", "within": "90d",
                 "text": "form_submitted on page demo within 90d of enrolling"},
        "version": 1, "live_version": None, "launch_state": "not launched", "enrolled": {}}
    assert (other["program"], other["kind"], other["goal"]) == ("acme-plain", None, None)

    leads = tmp_path / "leads.csv"
    leads.write_text("email,title,stage\nada@globex.example,CIO,\nbob@initech.example,CFO,\n"
                     "cy@globex.example,CIO,sal\n")
    assert cli("leads", "import", leads, "--program", "acme-nurture").exit_code == 0
    mark_launched(db, "acme-nurture")
    acme = listed(cli)[0]
    assert (acme["launch_state"], acme["live_version"]) == ("live", 1)
    assert acme["enrolled"] == {"active": 2, "exited": 1}
    replace_in(sample_program / "program.yaml", "{wait: 3d}", "{wait: 2d}")
    assert cli("program", "load", sample_program).exit_code == 0
    acme = listed(cli)[0]
    assert (acme["version"], acme["live_version"], acme["launch_state"]) == (2, 1, "pending launch")

    text = cli("program", "list").output
    [acme_row] = [line for line in text.splitlines() if "acme-nurture" in line]
    for words in ("Acme Cloud perpetual nurture", "inbound",
                  "form_submitted on page demo within 90d of enrolling",
                  "version 1 live, 2 pending launch", "2 active, 1 exited"):
        assert words in acme_row, words
    [plain_row] = [line for line in text.splitlines() if "acme-plain" in line]
    assert [cell.strip() for cell in plain_row.split("│")[3:8]] == [
        "-", "-", "1", "not launched", "none"]


def test_show_unknown_program_is_a_clear_error(cli, env):
    result = cli("program", "show", "nope")
    assert result.exit_code == 1
    assert "no program named 'nope'" in result.stderr


def test_move_to_must_name_a_track_or_a_side_track_some_persona_has(cli, sample_program):
    yaml_path = sample_program / "program.yaml"
    replace_in(yaml_path, "move_to: reengage", "move_to: winback")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    line = line_of(yaml_path, "move_to: winback")
    assert f"program.yaml:{line}: rules.non_responders.move_to: unknown track 'winback'" in result.stderr
    # the reengage side tracks are no longer the target of any rule
    assert "track it_manager/reengage: unknown stage 'reengage'" in result.stderr


def test_hostile_program_files_get_errors_not_crashes(cli, tmp_path):
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 10)]
    lines += ["program: bomb", "personas: {p: {name: P}}", "emails: {}", "tracks: {p/inquiry: *a9}"]
    (bomb / "program.yaml").write_text("\n".join(lines))
    result = cli("program", "validate", bomb)
    assert result.exit_code == 1
    assert "unknown key 'a0'" in result.stderr
    assert "track p/inquiry step 1: use {email: NAME} or {wait: DURATION}" in result.stderr

    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "program.yaml").write_text("# padding\n" * 300_000)
    result = cli("program", "validate", huge)
    assert result.exit_code == 1
    assert "program.yaml:1: larger than" in result.stderr

    (huge / "program.yaml").write_bytes(b"program: caf\xe9\n")
    result = cli("program", "validate", huge)
    assert result.exit_code == 1 and "program.yaml:1: not UTF-8" in result.stderr

    (huge / "program.yaml").write_text("- just\n- a list\n")
    result = cli("program", "validate", huge)
    assert result.exit_code == 1 and "program.yaml must be a mapping" in result.stderr

    # nested past what the YAML reader follows: an error at its line, not a RecursionError
    (huge / "program.yaml").write_text("program: deep\npersonas: " + "[" * 5000 + "]" * 5000)
    result = cli("program", "validate", huge)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "program.yaml:2: YAML: nested deeper than 64 levels"


# -- the sender -------------------------------------------------------------------------------

SENDER_LINE = 'sender: {from: "Acme Cloud <hello@acme.example>", reply_to: "team@acme.example"}'
NO_SENDER = ("missing sender.from (e.g. sender: {from: \"Acme <hello@acme.example>\"}), and "
             "NURTURE_FROM is not set")


def test_a_program_without_a_sender_or_nurture_from_is_refused_by_validate_and_load(
        cli, sample_program, db, monkeypatch):
    monkeypatch.delenv("NURTURE_FROM")
    path = sample_program / "program.yaml"
    replace_in(path, SENDER_LINE + "\n", "")
    for command in ("validate", "load"):  # the error names the program's first line
        result = cli("program", command, sample_program)
        assert result.exit_code == 1, command
        expected = f"program.yaml:{line_of(path, 'program: acme-nurture')}: {NO_SENDER}"
        assert expected in result.stderr.splitlines(), result.stderr
    replace_in(path, "program: acme-nurture\n",
               "program: acme-nurture\nsender: {reply_to: team@acme.example}\n")
    result = cli("program", "validate", sample_program)
    expected = f"program.yaml:{line_of(path, 'sender: {reply_to')}: {NO_SENDER}"
    assert expected in result.stderr.splitlines(), result.stderr
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ProgramRecord)) == 0


def test_nurture_from_sends_the_emails_of_a_program_without_a_sender(
        cli, sample_program, db, monkeypatch, tmp_path):
    monkeypatch.setenv("NURTURE_FROM", "Acme Ops <ops@mail.acme.example>")
    replace_in(sample_program / "program.yaml", SENDER_LINE + "\n", "")
    assert cli("program", "validate", sample_program).exit_code == 0
    assert "version 1" in cli("program", "load", sample_program).output
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name,title\nada@example.com,Ada,CIO\n")
    assert cli("leads", "import", leads, "--program", "acme-nurture").exit_code == 0
    out = tmp_path / "welcome.eml"
    result = cli("render", "welcome_it", "--lead", "ada@example.com", "--out", out)
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert message["From"] == "Acme Ops <ops@mail.acme.example>"
    assert message["Reply-To"] is None
    assert message["Message-ID"].endswith("@mail.acme.example>")
    with db.session() as s:  # the Message-ID each outbox row is given
        _, program = current_program(session=s, name="acme-nurture")
    assert message_id(enrollment_id=7, step="welcome_it", program=program) == (
        "<7.welcome_it.acme-nurture@mail.acme.example>")
    # another default is another version; a sender in program.yaml wins over the default
    monkeypatch.setenv("NURTURE_FROM", "Acme News <news@mail.acme.example>")
    assert "version 2" in cli("program", "load", sample_program).output
    replace_in(sample_program / "program.yaml", "program: acme-nurture\n",
               "program: acme-nurture\n" + SENDER_LINE + "\n")
    assert "version 3" in cli("program", "load", sample_program).output
    with db.session() as s:
        senders = [v.definition["sender"] for v in
                   s.scalars(select(ProgramVersion).order_by(ProgramVersion.version))]
    assert senders == [{"from": "Acme Ops <ops@mail.acme.example>"},
                       {"from": "Acme News <news@mail.acme.example>"},
                       {"from": "Acme Cloud <hello@acme.example>",
                        "reply_to": "team@acme.example"}]


NOT_AN_ADDRESS = ("is not an email address (write hello@acme.example or \"Acme "
                  "<hello@acme.example>\"; quote a name with a comma)")


@pytest.mark.parametrize(("sender", "needle", "message"), [
    ('{from: "Acme, Inc. <hello@acme.example>"}', "Acme, Inc.",
     f"sender.from: 'Acme, Inc. <hello@acme.example>' {NOT_AN_ADDRESS}"),
    ("{from: hello}", "from: hello", f"sender.from: 'hello' {NOT_AN_ADDRESS}"),
    ('{from: "Acme <hello@acme.example"}', "Acme <hello",
     f"sender.from: 'Acme <hello@acme.example' {NOT_AN_ADDRESS}"),
    ('{from: "Acme <hello@acme.example>\\nBcc: all@evil.example"}', "Bcc",
     f"sender.from: 'Acme <hello@acme.example>\\nBcc: all@evil.example' {NOT_AN_ADDRESS}"),
    ('{from: hello@acme.example, reply_to: "a@acme.example, b@acme.example"}', "reply_to",
     f"sender.reply_to: 'a@acme.example, b@acme.example' {NOT_AN_ADDRESS}"),
    ("{from: hello@acme.example, reply_to: 42}", "reply_to",
     f"sender.reply_to: '42' {NOT_AN_ADDRESS}"),
    ("{from: hello@acme.example, colour: blue}", "colour",
     "sender: unknown key 'colour' (expected one of from, reply_to, address)"),
    ("hello@acme.example", "sender: hello", "'sender' must be a mapping"),
])
def test_sender_addresses_are_checked_with_their_line(cli, sample_program, sender, needle,
                                                      message):
    path = sample_program / "program.yaml"
    replace_in(path, SENDER_LINE, f"sender: {sender}")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [f"program.yaml:{line_of(path, needle)}: {message}",
                                              "1 error(s)"]


def test_a_bad_nurture_from_is_reported_like_a_bad_sender(cli, sample_program, monkeypatch):
    monkeypatch.setenv("NURTURE_FROM", "ops at acme")
    assert cli("program", "validate", sample_program).exit_code == 0  # the file's sender wins
    replace_in(sample_program / "program.yaml", SENDER_LINE + "\n", "")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    line = line_of(sample_program / "program.yaml", "program: acme-nurture")
    assert (f"program.yaml:{line}: no sender.from, and NURTURE_FROM 'ops at acme' is not an "
            "email address") in result.stderr.splitlines()
