"""`nurture program validate|load|show` as a marketer uses them."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from engine.programs.models import ProgramRecord, ProgramVersion


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
