"""The `scoring:` and `sla:` sections of program.yaml: what loads, and every error reported as
`program.yaml:LINE: message` naming the key at fault."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from engine.programs.loader import load_program_dir, validate_program_dir
from engine.programs.spec import Program
from engine.scoring.rules import FitRule, ScoringRules, SlaRules, Trigger

ROOT = Path(__file__).resolve().parent.parent
BASE = """\
program: scored
personas:
  it: {name: IT, match: {title_contains: [IT]}, default: true}
emails:
  welcome: {file: emails/welcome.mjml, subject: Welcome}
  guide: {file: emails/guide.mjml, subject: Guide}
pages:
  pricing: {file: pages/pricing.html, slug: pricing}
  demo_request: {file: pages/demo.html, slug: demo}
tracks:
  it/inquiry: [{email: welcome}, {wait: 3d}, {email: guide}]
  it/engaged: [{email: guide}]
"""
VALID = """\
scoring:
  behaviour:
    open: 1
    click: 3
    page_view: 2
    form_submitted: 15
    consumed: 5
  pages:
    pricing: 10
    demo_request: 4
  daily_caps:
    open: 3
    click: 9
  decay:
    half_life: 30d
  fit:
    - field: title
      matches: "(?i)\\\\b(director|head|vp|chief)\\\\b"
      points: 15
    - field: company_size
      at_least: 200
      at_most: 5000
      points: 10
    - field: industry
      in: [software, financial services]
      points: 5
  mql:
    threshold: 60
    requires: [company, company_size]
  triggers:
    - on: page_view
      page: pricing
      route: sales
    - on: click
      email: guide
      enroll: webinar-series
sla:
  mql_response: 10d
  opportunity_stalled: 3w
  stalled_track: support
  escalate_to: sales-manager@acme.example
"""


RE2_NOTE = " (fit regexes use RE2 syntax, which runs in linear time)"


def write_program(directory: Path, sections: str, *, tracks: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "emails").mkdir(exist_ok=True)
    (directory / "pages").mkdir(exist_ok=True)
    for name in ("welcome", "guide"):
        (directory / "emails" / f"{name}.mjml").write_text(f"<mjml><mj-body>{name}</mj-body></mjml>")
    for name in ("pricing", "demo"):
        (directory / "pages" / f"{name}.html").write_text(f"<h1>{name}</h1>")
    (directory / "program.yaml").write_text(BASE + tracks + textwrap.dedent(sections))
    return directory


def line_of(directory: Path, needle: str) -> int:
    lines = (directory / "program.yaml").read_text().splitlines()
    found = [number for number, line in enumerate(lines, start=1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def errors_of(directory: Path) -> list[str]:
    return [str(error) for error in validate_program_dir(directory)]


# -- what loads -----------------------------------------------------------------------------

def test_the_full_format_loads_into_rules(tmp_path):
    program = load_program_dir(write_program(
        tmp_path / "p", VALID, tracks="  it/support: [{email: welcome}]\n")).program
    scoring = program.scoring
    assert scoring.behaviour == {"open": 1, "click": 3, "page_view": 2, "form_submitted": 15,
                                 "consumed": 5}
    assert scoring.pages == {"pricing": 10, "demo": 4}  # by slug, written by key
    assert scoring.daily_caps == {"open": 3, "click": 9}
    assert scoring.half_life == timedelta(days=30)
    assert scoring.fit == (
        FitRule("title", 15, matches=r"(?i)\b(director|head|vp|chief)\b"),
        FitRule("company_size", 10, at_least=200, at_most=5000),
        FitRule("industry", 5, any_of=("software", "financial services")),
    )
    assert (scoring.threshold, scoring.requires) == (60, ("company", "company_size"))
    assert scoring.triggers == (Trigger("page_view", page="pricing", route="sales"),
                                Trigger("click", email="guide", enroll="webinar-series"))
    assert program.sla == SlaRules(mql_response=timedelta(days=10),
                                   opportunity_stalled=timedelta(weeks=3),
                                   stalled_track="support", escalate_to="sales-manager@acme.example")
    assert program.sla.stalled_target("it") == "it/support"


def test_stored_programs_keep_their_rules_and_old_versions_get_the_defaults(tmp_path):
    program = load_program_dir(write_program(
        tmp_path / "p", VALID, tracks="  it/support: [{email: welcome}]\n")).program
    again = Program.from_dict(program.to_dict())
    assert (again.scoring, again.sla) == (program.scoring, program.sla)
    old = program.to_dict()
    del old["scoring"], old["sla"]  # a version stored before scoring existed
    before = Program.from_dict(old)
    assert (before.scoring, before.sla) == (ScoringRules(), SlaRules())


def test_the_sample_program_scores_and_round_trips():
    program = load_program_dir(ROOT / "assets" / "acme-nurture").program
    assert program.scoring.threshold and program.scoring.behaviour and program.scoring.fit
    assert program.sla.stalled_target("finance") == "finance/engaged"
    assert program.sla.stalled_target("finance") in program.tracks
    again = Program.from_dict(program.to_dict())
    assert (again.scoring, again.sla) == (program.scoring, program.sla)


def test_a_program_without_scoring_scores_nothing_with_default_slas():
    program = load_program_dir(ROOT / "tests" / "programs" / "pinned-nurture").program
    assert program.scoring == ScoringRules() and not program.scoring.active
    assert program.scoring.threshold is None
    assert program.sla == SlaRules()
    assert program.sla.mql_response == program.sla.opportunity_stalled == timedelta(days=14)


@pytest.mark.parametrize("section", ["scoring:\n", "sla:\n", "pages:\n"])
def test_an_empty_section_is_the_same_as_none(tmp_path, section):
    text = (BASE.replace("pages:\n  pricing: {file: pages/pricing.html, slug: pricing}\n"
                         "  demo_request: {file: pages/demo.html, slug: demo}\n", "")
            + section)
    directory = write_program(tmp_path / "p", "")
    (directory / "program.yaml").write_text(text)
    program = load_program_dir(directory).program  # raised ProgramInvalid with no errors before
    assert (program.scoring, program.sla, program.pages) == (ScoringRules(), SlaRules(), {})


def test_a_side_track_may_exist_for_sla_stalled_track_alone(tmp_path):
    directory = write_program(tmp_path / "p", "sla:\n  stalled_track: support\n",
                              tracks="  it/support: [{email: welcome}]\n")
    assert errors_of(directory) == []
    directory = write_program(tmp_path / "q", "", tracks="  it/support: [{email: welcome}]\n")
    assert errors_of(directory) == [
        (f"program.yaml:{line_of(directory, 'it/support')}: track it/support: unknown stage "
        "'support' (a side track must be the target of a move_to rule or of sla.stalled_track)")]


def test_pages_may_be_named_by_slug_and_a_bare_on_key_is_not_a_boolean(tmp_path):
    directory = write_program(tmp_path / "p", """\
        scoring:
          pages: {demo: 4}
          mql: {threshold: 5}
          triggers:
            - {on: form_submitted, page: demo, route: sales}
            - {"on": open, route: sales}
        """)
    scoring = load_program_dir(directory).program.scoring
    assert scoring.pages == {"demo": 4}
    assert [t.on for t in scoring.triggers] == ["form_submitted", "open"]


# -- every error, with its line ---------------------------------------------------------------

CASES = [
    # (the scoring/sla text, the text on the line at fault, the message)
    ("scoring:\n  behavior: {open: 1}\n  mql: {threshold: 5}\n", "behavior",
     ("scoring: unknown key 'behavior' (expected one of behaviour, pages, daily_caps, decay, fit, "
     "mql, triggers)")),
    ("scoring: [open]\n", "scoring", "'scoring' must be a mapping"),
    ("scoring:\n  behaviour:\n    opened: 1\n  mql: {threshold: 5}\n", "opened",
     ("scoring.behaviour: unknown event kind 'opened' (expected one of open, click, page_view, "
     "form_submitted, consumed)")),
    ("scoring:\n  behaviour:\n    click: -3\n  mql: {threshold: 5}\n", "click",
     "scoring.behaviour.click must be a number >= 0, got -3"),
    ("scoring:\n  behaviour:\n    click: lots\n  mql: {threshold: 5}\n", "click",
     "scoring.behaviour.click must be a number >= 0, got 'lots'"),
    ("scoring:\n  behaviour:\n    click: yes\n  mql: {threshold: 5}\n", "click",
     "scoring.behaviour.click must be a number >= 0, got True"),
    ("scoring:\n  behaviour:\n    click: .nan\n  mql: {threshold: 5}\n", "click",
     "scoring.behaviour.click must be a number >= 0, got nan"),
    ("scoring:\n  behaviour:\n    click: " + "9" * 400 + "\n  mql: {threshold: 5}\n", "click",
     "scoring.behaviour.click must be a number >= 0, got " + "9" * 400),  # too big for a float
    ("scoring:\n  behaviour: [open, click]\n  mql: {threshold: 5}\n", "behaviour",
     "scoring.behaviour must be a mapping"),
    ("scoring:\n  pages:\n    priceing: 10\n  mql: {threshold: 5}\n", "priceing",
     "scoring.pages: unknown page 'priceing' (use a page key or slug from pages:)"),
    ("scoring:\n  pages:\n    demo: 1\n    demo_request: 2\n  mql: {threshold: 5}\n", "demo_request: 2",
     "scoring.pages: page 'demo_request' is listed twice"),
    ("scoring:\n  pages:\n    pricing: -10\n  mql: {threshold: 5}\n", "pricing: -10",
     "scoring.pages.pricing must be a number >= 0, got -10"),
    ("scoring:\n  daily_caps:\n    open: 0\n", "open",
     "scoring.daily_caps.open must be a number > 0, got 0"),
    ("scoring:\n  daily_caps:\n    bounce: 3\n", "bounce",
     ("scoring.daily_caps: unknown event kind 'bounce' (expected one of open, click, page_view, "
     "form_submitted, consumed)")),
    ("scoring:\n  decay:\n    half_life: 30 days\n", "half_life",
     "scoring.decay.half_life: bad duration '30 days' (use a number and m, h, d or w, e.g. 3d or 1w)"),
    ("scoring:\n  decay:\n    half_life: 0d\n", "half_life",
     "scoring.decay.half_life must be longer than 0"),
    ("scoring:\n  decay:\n    halflife: 30d\n", "halflife",
     "scoring.decay: unknown key 'halflife' (expected one of half_life)"),
    ("scoring:\n  fit: {title: 15}\n", "fit", "scoring.fit must be a list"),
    ("scoring:\n  fit:\n    - title\n  mql: {threshold: 5}\n", "- title",
     "scoring.fit 1: must be a mapping with field, points and a condition"),
    (("scoring:\n  fit:\n    - field: title\n      matches: \"(director\"\n      points: 15\n"
     "  mql: {threshold: 5}\n"), "(director",
     "scoring.fit 1.matches: bad regex '(director': missing ): (director" + RE2_NOTE),
    *[(("scoring:\n  fit:\n    - field: title\n      matches: '" + pattern + "'\n"
        "      points: 15\n  mql: {threshold: 5}\n"), pattern,
       f"scoring.fit 1.matches: bad regex {pattern!r}: {reason}" + RE2_NOTE)
      for pattern, reason in [
          (r"(?i)\bdirector\b(?!ate)", "negative lookahead (?!...) is not supported"),
          (r"(?<=VP )sales", "lookbehind (?<=...) is not supported"),
          (r"^(\w+) \1$", r"backreference \1 is not supported"),
          (r"(?P<w>\w+) (?P=w)",
           "named backreference (?P=name) or recursion (?P>name) is not supported"),
          (r"(?>director)", "atomic group (?>...) is not supported"),
          (r"director\Z", r"\Z is not supported (use \z for the end of the text)"),
          (r"vp++", "possessive quantifier ++ is not supported"),
          (r"(?x) vp", "the flag x is not supported (RE2 knows the flags i, m, s and U)"),
          (r"\d{1,1001}", "repetition {1,1001} is not supported (at most 1000)"),
      ]],
    ("scoring:\n  fit:\n    - field: title\n      matches: \"" + "x" * 201 + "\"\n      points: 15\n"
     "  mql: {threshold: 5}\n", "xxxx",
     "scoring.fit 1.matches: regex longer than 200 characters"),
    (("scoring:\n  fit:\n    - field: title\n      matches: 12\n      points: 15\n"
     "  mql: {threshold: 5}\n"), "matches: 12",
     "scoring.fit 1.matches must be a regular expression (quoted text)"),
    ("scoring:\n  fit:\n    - matches: CIO\n      points: 15\n  mql: {threshold: 5}\n", "CIO",
     "scoring.fit 1: missing 'field'"),
    (("scoring:\n  fit:\n    - field: Job Title\n      matches: CIO\n      points: 15\n"
     "  mql: {threshold: 5}\n"), "Job Title",
     "scoring.fit 1: field 'Job Title' is not a lead field name (lower-case letters, digits and '_')"),
    ("scoring:\n  fit:\n    - field: title\n      matches: CIO\n  mql: {threshold: 5}\n",
     "field: title", "scoring.fit 1: missing 'points'"),
    (("scoring:\n  fit:\n    - field: title\n      matches: CIO\n      points: -15\n"
     "  mql: {threshold: 5}\n"), "points: -15",
     "scoring.fit 1.points must be a number >= 0, got -15"),
    ("scoring:\n  fit:\n    - field: title\n      points: 15\n  mql: {threshold: 5}\n",
     "field: title", "scoring.fit 1: give a condition: matches, in, at_least or at_most"),
    (("scoring:\n  fit:\n    - field: title\n      contains: CIO\n      matches: CIO\n"
     "      points: 15\n"
     "  mql: {threshold: 5}\n"), "contains: CIO",
     ("scoring.fit 1: unknown key 'contains' (expected one of field, points, matches, in, at_least, "
     "at_most)")),
    (("scoring:\n  fit:\n    - field: company_size\n      at_least: two hundred\n      points: 5\n"
     "  mql: {threshold: 5}\n"), "two hundred",
     "scoring.fit 1.at_least must be a number, got 'two hundred'"),
    (("scoring:\n  fit:\n    - field: company_size\n      at_least: 500\n      at_most: 200\n"
     "      points: 5\n  mql: {threshold: 5}\n"), "at_most",
     "scoring.fit 1: at_most is below at_least"),
    (("scoring:\n  fit:\n    - field: industry\n      in: []\n      points: 5\n"
     "  mql: {threshold: 5}\n"), "in: []", "scoring.fit 1.in must be a non-empty list of values"),
    (("scoring:\n  fit:\n    - field: consent_text\n      in:\n        - maybe\n        - no\n"
     "      points: 5\n  mql: {threshold: 5}\n"), "- no",
     "scoring.fit 1.in: False is not a text value (quote yes, no, on, off, true and false)"),
    ("scoring:\n  behaviour: {click: 3}\n", "scoring",
     "scoring: missing 'mql' with a 'threshold' (points alone never make an MQL)"),
    ("scoring:\n  behaviour: {click: 3}\n  mql:\n    requires: [company]\n", "mql",
     "scoring.mql: missing 'threshold'"),
    ("scoring:\n  mql:\n    threshold: 0\n", "threshold",
     "scoring.mql.threshold must be a number > 0, got 0"),
    ("scoring:\n  mql:\n    threshold: -5\n", "threshold",
     "scoring.mql.threshold must be a number > 0, got -5"),
    ("scoring:\n  mql:\n    threshold: high\n", "threshold",
     "scoring.mql.threshold must be a number > 0, got 'high'"),
    ("scoring:\n  mql:\n    threshold: 5\n    requires:\n      - Company Size\n", "Company Size",
     ("scoring.mql.requires: 'Company Size' is not a lead field name (lower-case letters, digits "
     "and '_')")),
    ("scoring:\n  mql:\n    threshold: 5\n    require: [company]\n", "require:",
     "scoring.mql: unknown key 'require' (expected one of threshold, requires)"),
    ("scoring:\n  triggers:\n    - on: visit\n      route: sales\n", "visit",
     ("scoring.triggers 1: unknown event kind 'visit' (expected one of open, click, page_view, "
     "form_submitted, consumed)")),
    ("scoring:\n  triggers:\n    - page: pricing\n      route: sales\n", "- page",
     "scoring.triggers 1: missing 'on' (the event kind)"),
    ("scoring:\n  triggers:\n    - on: page_view\n      page: pricing\n      route: marketing\n",
     "marketing", "scoring.triggers 1: unknown route 'marketing' (expected sales)"),
    ("scoring:\n  triggers:\n    - on: page_view\n      page: pricing\n", "on: page_view",
     "scoring.triggers 1: missing what to do: 'route: sales' or 'enroll: PROGRAM'"),
    ("scoring:\n  triggers:\n    - on: page_view\n      route: sales\n      enroll: webinars\n",
     "enroll", "scoring.triggers 1: give either 'route' or 'enroll', not both"),
    ("scoring:\n  triggers:\n    - on: page_view\n      enroll: Webinar Series\n", "Webinar",
     "scoring.triggers 1: enroll: 'Webinar Series' is not a program name"),
    ("scoring:\n  triggers:\n    - on: page_view\n      page: prices\n      route: sales\n",
     "prices", "scoring.triggers 1: unknown page 'prices'"),
    ("scoring:\n  triggers:\n    - on: click\n      page: pricing\n      route: sales\n", "page:",
     "scoring.triggers 1: 'page' applies to page_view and form_submitted"),
    ("scoring:\n  triggers:\n    - on: page_view\n      email: guide\n      route: sales\n",
     "      email: guide", "scoring.triggers 1: 'email' applies to open, click and consumed"),
    ("scoring:\n  triggers:\n    - on: click\n      email: nope\n      route: sales\n", "nope",
     "scoring.triggers 1: unknown email 'nope'"),
    ("scoring:\n  triggers:\n    - on: click\n      when: always\n      route: sales\n", "when",
     "scoring.triggers 1: unknown key 'when' (expected one of on, page, email, route, enroll)"),
    ("scoring:\n  triggers:\n    - on: [click, open]\n      route: sales\n", "[click, open]",
     "scoring.triggers 1: 'on' must be a name, got ['click', 'open']"),
    ("sla:\n  mql_answer: 3d\n", "mql_answer",
     ("sla: unknown key 'mql_answer' (expected one of mql_response, opportunity_stalled, "
     "stalled_track, escalate_to)")),
    ("sla: 14d\n", "sla", "'sla' must be a mapping"),
    ("sla:\n  mql_response: two weeks\n", "two weeks",
     "sla.mql_response: bad duration 'two weeks' (use a number and m, h, d or w, e.g. 3d or 1w)"),
    ("sla:\n  opportunity_stalled: 0w\n", "0w", "sla.opportunity_stalled must be longer than 0"),
    ("sla:\n  stalled_track: winback\n", "winback", "sla.stalled_track: unknown track 'winback'"),
    ("sla:\n  stalled_track: it/winback\n", "winback",
     "sla.stalled_track: unknown track 'it/winback'"),
    ("sla:\n  escalate_to: ''\n", "escalate_to",
     "sla.escalate_to must be a name or address of at most 200 characters"),
]


@pytest.mark.parametrize(("sections", "needle", "message"), CASES,
                         ids=[f"{i}-{case[1][:20]}" for i, case in enumerate(CASES)])
def test_each_error_names_file_line_and_key(tmp_path, sections, needle, message):
    directory = write_program(tmp_path / "p", sections)
    errors = errors_of(directory)
    assert errors == [f"program.yaml:{line_of(directory, needle)}: {message}"]


def test_every_error_is_reported_at_once_through_the_cli(cli, tmp_path):
    directory = write_program(tmp_path / "p", """\
        scoring:
          behaviour:
            clik: 3
          pages:
            pricing: -1
          decay:
            half_life: soon
          mql:
            threshold: 0
        sla:
          stalled_track: nowhere
        """)
    result = cli("program", "validate", directory)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    for needle, message in [
        ("clik", "scoring.behaviour: unknown event kind 'clik'"),
        ("pricing: -1", "scoring.pages.pricing must be a number >= 0, got -1"),
        ("soon", "scoring.decay.half_life: bad duration 'soon'"),
        ("threshold: 0", "scoring.mql.threshold must be a number > 0, got 0"),
        ("nowhere", "sla.stalled_track: unknown track 'nowhere'"),
    ]:
        prefix = f"program.yaml:{line_of(directory, needle)}: {message}"
        assert any(line.startswith(prefix) for line in lines), result.stderr
    assert "5 error(s)" in result.stderr


def test_a_valid_sample_passes_the_cli(cli):
    result = cli("program", "validate", ROOT / "assets" / "acme-nurture")
    assert result.exit_code == 0, result.output
