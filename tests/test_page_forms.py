"""A page's `form:` in program.yaml: what loads, every error as `program.yaml:LINE: message`,
and the pure rules that turn a posted form and a visit into lead fields."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import Invalid
from engine.pages.forms import (
    Consent,
    FormSpec,
    SourceRule,
    lead_fields,
    source_fields,
    touch_source,
    visit_params,
)
from engine.programs.loader import load_program_dir, validate_program_dir
from engine.programs.spec import Program

BASE = """\
program: formed
personas:
  it: {name: IT, match: {title_contains: [IT]}, default: true}
emails:
  welcome: {file: emails/welcome.mjml, subject: Welcome}
tracks:
  it/inquiry: [{email: welcome}]
pages:
  demo:
    file: pages/demo.html
"""


def write_program(directory: Path, form: str) -> Path:
    (directory / "emails").mkdir(parents=True)
    (directory / "pages").mkdir()
    (directory / "emails" / "welcome.mjml").write_text("<mjml><mj-body>hi</mj-body></mjml>")
    (directory / "pages" / "demo.html").write_text("<form method='post'></form>")
    (directory / "program.yaml").write_text(BASE + textwrap.indent(textwrap.dedent(form), "    "))
    return directory


def line_of(directory: Path, needle: str) -> int:
    lines = (directory / "program.yaml").read_text().splitlines()
    [found] = [n for n, line in enumerate(lines, start=1) if needle in line]
    return found


def test_a_form_loads_and_survives_storage(tmp_path):
    directory = write_program(tmp_path / "p", """\
        form:
          fields: {job_title: title, size: custom.team_size}
          consent: {field: opt_in, text: "  Send me   news.  "}
          source: {source_offer: [utm_campaign, utm_content], source_partner: {value: g2}}
        """)
    program = load_program_dir(directory).program
    form = program.pages["demo"].form
    assert form.fields["job_title"] == "title" and form.fields["size"] == "custom.team_size"
    assert form.fields["first_name"] == "first_name"  # the same-named fields stay mapped
    assert form.consent == Consent(field="opt_in", text="Send me news.")
    assert form.source["source_offer"] == SourceRule(params=("utm_campaign", "utm_content"))
    assert form.source["source_partner"] == SourceRule(value="g2")
    assert form.source["source_channel"] == SourceRule(params=("utm_medium",))  # the default
    stored = Program.from_dict(program.to_dict())
    assert stored.pages["demo"].form == form


def test_a_page_without_a_form_gets_the_defaults_and_old_stored_versions_load(tmp_path):
    program = load_program_dir(write_program(tmp_path / "p", "")).program
    assert program.pages["demo"].form == FormSpec()
    data = program.to_dict()
    del data["pages"]["demo"]["form"]  # a version stored before forms had a map
    assert Program.from_dict(data).pages["demo"].form == FormSpec()


@pytest.mark.parametrize("form, needle, message", [
    ("form: yes\n", "form: yes", "'form' must be a mapping"),
    ("form: {colour: red}\n", "colour", "unknown key 'colour'"),
    ("form:\n  fields: {email: company}\n", "fields:", "'email' cannot be a form field's name"),
    ("form:\n  fields: {title: stage}\n", "fields:", "'stage' is not a lead field a form may"),
    ("form:\n  fields: {x: custom.Bad-Name}\n", "fields:", "is not a lead field"),
    ("form:\n  fields: {\"a b\": title}\n", "fields:", "cannot be a form field's name"),
    ("form:\n  consent: {field: opt_in}\n", "consent:", "'text' is the wording the form shows"),
    ("form:\n  consent: {field: csrf_token, text: ok}\n", "consent:", "'field' names the"),
    ("form:\n  source: {source_medium: utm_medium}\n", "source:", "not a source field"),
    ("form:\n  source: {source_offer: utm_nonsense}\n", "source:", "a visit parameter"),
    ("form:\n  source: {source_offer: []}\n", "source:", "a visit parameter"),
    ("form:\n  source: {source_offer: {value: ''}}\n", "source:", "a visit parameter"),
    ("shape: round\n", "shape", "unknown key 'shape'"),
])
def test_each_error_names_its_line(tmp_path, form, needle, message):
    directory = write_program(tmp_path / "p", form)
    errors = [str(e) for e in validate_program_dir(directory)]
    expected = f"program.yaml:{line_of(directory, needle)}:"
    assert any(e.startswith(expected) and message in e for e in errors), errors


def test_posted_fields_map_to_lead_fields_and_the_rest_stays_out():
    spec = FormSpec(fields={"first_name": "first_name", "job_title": "title",
                            "size": "custom.team_size"})
    posted = {"first_name": "Ada", "job_title": "CTO", "size": "40", "message": "hi",
              "stage": "customer", "first_name_2": "x", "job_title_list": ["a", "b"]}
    assert lead_fields(spec, posted) == {"first_name": "Ada", "title": "CTO",
                                         "custom": {"team_size": "40"}}
    assert lead_fields(spec, {"first_name": "", "job_title": "  "}) == {"custom": {}}


@pytest.mark.parametrize("posted, field, detail", [
    ({"job_title": ["CIO", "CTO"]}, "job_title", "posted more than once"),
    ({"job_title": "x" * 301}, "job_title", "value longer than 300 characters"),
    ({"size": "4\x1b0"}, "size", "control character U+001B at position 2"),
])
def test_a_value_the_lead_cannot_take_is_refused_naming_the_posted_field(posted, field, detail):
    spec = FormSpec(fields={"job_title": "title", "size": "custom.team_size"})
    with pytest.raises(Invalid) as refused:
        lead_fields(spec, posted)
    assert refused.value.field == field and refused.value.detail.startswith(detail)


def test_the_visit_gives_the_source_by_the_map():
    visit = visit_params({"utm_source": "linkedin", "utm_medium": "social",
                          "utm_campaign": "q1", "utm_bogus": "x"},
                         "https://www.linkedin.com/feed", own_host="go.acme.example")
    assert visit == {"utm_source": "linkedin", "utm_medium": "social", "utm_campaign": "q1",
                     "referrer": "www.linkedin.com"}
    assert source_fields(FormSpec(), visit) == {"source_channel": "social",
                                                "source_offer": "q1",
                                                "source_partner": "linkedin"}
    fixed = FormSpec(source={"source_partner": SourceRule(value="g2"),
                             "source_offer": SourceRule(params=("utm_term", "utm_campaign"))})
    assert source_fields(fixed, visit) == {"source_partner": "g2", "source_offer": "q1"}


def test_a_submission_carries_its_posted_source_else_its_visits():
    visit = {"utm_medium": "social", "utm_campaign": "q1", "utm_source": "linkedin"}
    posted = {"utm_medium": "email", "source_offer": "webinar-2026", "utm_campaign": "other"}
    assert touch_source(FormSpec(), posted, visit) == {
        "source_channel": "email", "source_offer": "webinar-2026", "source_partner": "linkedin"}
    assert touch_source(FormSpec(), {}, {}) == {}


@pytest.mark.parametrize("value", ["x" * 201, "a\x1bb", "nul\x00", "   ", ["a", "b"]])
def test_a_hostile_posted_source_is_left_out_for_the_visits(value):
    found = touch_source(FormSpec(), {"source_channel": value}, {"utm_medium": "social"})
    assert found == {"source_channel": "social"}


def test_a_visit_without_tags_from_another_site_is_a_referral_and_our_own_site_is_not():
    other = visit_params({}, "https://news.ycombinator.com/item?id=1", own_host="go.acme.example")
    assert source_fields(FormSpec(), other) == {"source_channel": "referral",
                                                "source_partner": "news.ycombinator.com"}
    ours = visit_params({}, "https://go.acme.example/p/acme/pricing", own_host="go.acme.example")
    assert ours == {} and source_fields(FormSpec(), ours) == {}


@pytest.mark.parametrize("value", ["x" * 201, "a\x1bb", "nul\x00", "   "])
def test_hostile_visit_values_are_left_out(value):
    assert visit_params({"utm_source": value}, None, own_host="go.acme.example") == {}
