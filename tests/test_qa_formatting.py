"""Formatting QA: the clean sample program passes, each planted defect is named with its asset
and location, and hostile HTML or MJML is handled in bounded time."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest

from engine.programs.loader import load_program_dir
from engine.programs.spec import Persona
from engine.render.compile import compile_asset
from qa.compat import (
    DATA,
    MAJOR_CLIENTS,
    baseline_features,
    caniemail_index,
    check_client_support,
)
from qa.findings import Finding, Severity
from qa.formatting import (
    RenderedEmail,
    check_email,
    check_email_asset,
    check_link_text,
    check_program_formatting,
    check_subject,
    looks_like_postal_address,
    sending_links,
)
from qa.html_scan import scan_html
from qa.merge_fields import render_personas, sample_leads, suggestion
from qa.mjml_rules import check_mjml

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"
WELCOME = "emails/welcome_it.mjml"
LOGO = "https://acme.example/img/logo.png"


@pytest.fixture(scope="module")
def loaded():
    return load_program_dir(SAMPLE)


@pytest.fixture(scope="module")
def sample_findings() -> list[Finding]:
    return check_program_formatting(SAMPLE)


@pytest.fixture(scope="module")
def clean_welcome(loaded) -> set[Finding]:
    return set(_check_welcome(loaded))


def _check_welcome(loaded, source: str | None = None, program=None, **email_changes):
    program = program or loaded.program
    email = dataclasses.replace(program.emails["welcome_it"], **email_changes)
    return check_email_asset(program=program, email=email,
                             source=source if source is not None else loaded.files[WELCOME])


def _planted(loaded, clean_welcome, source=None, **changes) -> list[Finding]:
    """The findings a change to the welcome email adds to those of the clean email."""
    clean = {f.key for f in clean_welcome}
    return [f for f in _check_welcome(loaded, source, **changes) if f.key not in clean]


def _edit(loaded, old: str, new: str) -> str:
    source = loaded.files[WELCOME]
    assert old in source
    return source.replace(old, new, 1)


def _insert_text(loaded, html: str) -> str:
    """Welcome email with an extra mj-text holding `html`, after the pricing paragraph."""
    return _edit(loaded, "        <mj-text>\n          Claire Martin",
                 f"        <mj-text>{html}</mj-text>\n        <mj-text>\n          Claire Martin")


def _only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    assert findings[0].asset == WELCOME
    return findings[0]


# -- the clean sample -------------------------------------------------------------------------

def test_clean_sample_has_no_blockers(sample_findings):
    blockers = [f for f in sample_findings if f.severity == Severity.BLOCKER]
    assert blockers == []


def test_clean_sample_raises_no_merge_mjml_or_client_support_noise(sample_findings):
    noisy = [f for f in sample_findings
             if f.code.startswith(("format.merge", "mjml.", "compat.", "format.render"))]
    assert noisy == []


def test_findings_are_unique_by_key(sample_findings):
    keys = [f.key for f in sample_findings]
    assert len(keys) == len(set(keys))


def test_sample_leads_resolve_to_every_persona(loaded):
    from engine.programs.personas import resolve_persona

    samples = sample_leads(loaded.program)
    assert [s.persona.key for s in samples] == list(loaded.program.personas)
    for sample in samples:
        assert resolve_persona(loaded.program, sample.lead.fields()) == sample.persona.key


# -- planted defects --------------------------------------------------------------------------

def test_linked_image_without_alt_is_a_blocker(loaded, clean_welcome):
    source = _edit(loaded, 'alt="Acme Cloud" ', "")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.BLOCKER, "format.missing-alt")
    assert finding.location == f"img {LOGO}"
    assert "(line 26)" in finding.message


def test_image_without_alt_is_a_warning(loaded, clean_welcome):
    source = _insert_text(loaded, '<img src="https://acme.example/img/team.png" width="200">')
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.WARNING, "format.missing-alt")
    assert finding.location == "img https://acme.example/img/team.png"


def test_image_without_width(loaded, clean_welcome):
    source = _insert_text(loaded, '<img src="https://acme.example/img/badge.png" alt="Badge">')
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.WARNING, "format.image-width")
    assert finding.location == "img https://acme.example/img/badge.png"
    assert "no width attribute" in finding.message


def test_email_over_102_kb_is_a_blocker(loaded, clean_welcome):
    paragraph = "Acme Cloud keeps infrastructure simple and predictable for every team. " * 20
    source = _insert_text(loaded, "<p>" + "</p><p>".join([paragraph] * 110) + "</p>")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code, finding.location) == \
        (Severity.BLOCKER, "format.html-size", "html")
    assert "102 KB" in finding.message


def test_unresolved_merge_field_names_asset_line_and_personas(loaded, clean_welcome):
    source = _edit(loaded, "Welcome, {{ lead.first_name }}", "Welcome, {{ lead.custom.industry }}")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.BLOCKER, "format.merge-unresolved")
    assert finding.location == "line 32: lead.custom.industry"
    assert "IT manager (it_manager)" in finding.message
    assert "Finance lead (finance)" in finding.message


def test_misspelled_merge_field_suggests_the_known_name(loaded, clean_welcome):
    source = _edit(loaded, "Welcome, {{ lead.first_name }}", "Welcome, {{ lead.frist_name }}")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.BLOCKER, "format.merge-misspelled")
    assert finding.location == "line 32: lead.frist_name"
    assert "did you mean lead.first_name?" in finding.message


def test_every_unresolved_field_is_named_not_only_the_first(loaded, clean_welcome):
    source = _edit(loaded, "Welcome, {{ lead.first_name }}",
                   "Welcome, {{ lead.frist_name }} {{ lead.custom.industry }}")
    subject = "Hello {{ lead.compnay }}"
    found = {(f.code, f.location)
             for f in _planted(loaded, clean_welcome, source, subject=subject)}
    assert found == {("format.merge-misspelled", "line 32: lead.frist_name"),
                     ("format.merge-unresolved", "line 32: lead.custom.industry"),
                     ("format.merge-misspelled", "subject: lead.compnay")}


def test_a_field_only_one_persona_has_is_reported_for_the_others(loaded):
    program = loaded.program
    developer = Persona(key="developer", name="Developer", match={"industry_in": ["software"]})
    program = dataclasses.replace(program, personas={"developer": developer, **program.personas})
    source = _edit(loaded, "Welcome, {{ lead.first_name }}", "Welcome, {{ lead.industry }}")
    findings = [f for f in _check_welcome(loaded, source, program=program)
                if f.code.startswith("format.merge")]
    finding = _only(findings)
    assert "IT manager (it_manager), Finance lead (finance)" in finding.message
    assert "developer" not in finding.message


def test_missing_unsubscribe_link(loaded, clean_welcome):
    source = _edit(loaded, '<a href="{{ links.unsubscribe }}" style="color: #6b7280;">'
                           "Unsubscribe</a> &#183; ", "")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code, finding.location) == \
        (Severity.BLOCKER, "format.unsubscribe-missing", "footer")


def test_an_unsubscribe_link_elsewhere_does_not_count(loaded, clean_welcome):
    source = _edit(loaded, "{{ links.unsubscribe }}", "https://acme.example/unsubscribe")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert finding.code == "format.unsubscribe-missing"
    assert "https://acme.example/unsubscribe" in finding.message


def test_missing_postal_address(loaded, clean_welcome):
    source = _edit(loaded, "Acme Cloud SAS, 12 rue de la Paix, 75002 Paris, France",
                   "Acme Cloud SAS")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code, finding.location) == \
        (Severity.BLOCKER, "format.postal-address-missing", "footer")
    assert "CAN-SPAM" in finding.message


def test_configured_sender_address_must_appear(loaded, clean_welcome):
    sender = {**loaded.program.sender, "address": "Acme Cloud SAS, 12 rue de la  Paix"}
    program = dataclasses.replace(loaded.program, sender=sender)
    assert _planted(loaded, clean_welcome, program=program) == []
    program = dataclasses.replace(loaded.program,
                                  sender={**sender, "address": "1 Infinite Loop, 95014"})
    finding = _only(_planted(loaded, clean_welcome, program=program))
    assert finding.code == "format.postal-address-missing"
    assert "1 Infinite Loop" in finding.message


def test_all_caps_subject(loaded, clean_welcome):
    finding = _only(_planted(loaded, clean_welcome,
                             subject="WELCOME TO ACME CLOUD, {{ lead.first_name }}"))
    assert (finding.severity, finding.code, finding.location) == \
        (Severity.WARNING, "format.subject-caps", "subject")


def test_link_text_showing_another_domain(loaded, clean_welcome):
    source = _insert_text(loaded, '<a href="https://evil.example/login">www.acme.example</a>')
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code) == (Severity.WARNING, "format.deceptive-link")
    assert finding.location == "link https://evil.example/login"
    assert "acme.example" in finding.message and "evil.example" in finding.message


def test_unsupported_css_property_names_the_clients(loaded, clean_welcome):
    source = _insert_text(loaded, '<span style="position: absolute">New</span>')
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.severity, finding.code, finding.location) == \
        (Severity.WARNING, "compat.unsupported", "css-position")
    assert "Outlook (Windows)" in finding.message and "Gmail (webmail)" in finding.message
    assert "position: absolute" in finding.message


def test_missing_preheader(loaded, clean_welcome):
    source = _edit(loaded, "    <mj-preview>Your quick-start path to running production "
                           "workloads on Acme Cloud</mj-preview>\n", "")
    finding = _only(_planted(loaded, clean_welcome, source))
    assert (finding.code, finding.location) == ("format.preheader-missing", "preheader")
    assert "program.yaml" in finding.message  # the sample declares one there, unused


def test_preheader_that_differs_from_program_yaml(loaded, clean_welcome):
    finding = _only(_planted(loaded, clean_welcome, preheader="Something else entirely"))
    assert finding.code == "format.preheader-mismatch"


def test_missing_text_part(loaded):
    email = loaded.program.emails["welcome_it"]
    compiled = compile_asset("email", loaded.files[WELCOME])
    _, renders = render_personas(asset=WELCOME, source=loaded.files[WELCOME],
                                 html=compiled.html, text=compiled.text, subject=email.subject,
                                 program=loaded.program,
                                 links=sending_links(loaded.program, "http://localhost:5000"))
    rendered = renders[0].rendered

    def check(text: str | None) -> set[Finding]:
        return set(check_email(RenderedEmail(asset=WELCOME, subject=rendered.subject,
                                             html=rendered.html, text=text)))

    finding = _only(list(check("") - check(rendered.text)))
    assert (finding.severity, finding.code) == (Severity.BLOCKER, "format.text-missing")
    assert check(None) == check("")


def test_compile_errors_are_blockers_without_a_duplicate_warning(loaded, clean_welcome):
    source = _insert_text(loaded, "x").replace("<mj-text>x</mj-text>", "<mj-foo>x</mj-foo>")
    findings = _planted(loaded, clean_welcome, source)
    assert [(f.severity, f.code) for f in findings] == \
        [(Severity.BLOCKER, "format.compile-error")]
    assert "mj-foo" in findings[0].message


def test_program_that_does_not_load(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "program")
    (tmp_path / "program" / "program.yaml").write_text("program: [unclosed\n")
    findings = check_program_formatting(tmp_path / "program")
    assert findings and {(f.severity, f.code, f.asset) for f in findings} == \
        {(Severity.BLOCKER, "program.invalid", "program.yaml")}


def test_program_directory_with_planted_defects(tmp_path):
    program = tmp_path / "acme"
    shutil.copytree(SAMPLE, program)
    welcome = program / WELCOME
    welcome.write_text(welcome.read_text().replace("{{ lead.first_name }}",
                                                   "{{ lead.frist_name }}"))
    guide = program / "emails" / "guide_it.mjml"
    guide.write_text(guide.read_text().replace("{{ links.unsubscribe }}", "#"))
    blockers = {(f.asset, f.code, f.location) for f in check_program_formatting(program)
                if f.severity == Severity.BLOCKER}
    assert blockers == {(WELCOME, "format.merge-misspelled", "line 32: lead.frist_name"),
                        ("emails/guide_it.mjml", "format.unsubscribe-missing", "footer")}


# -- rules in isolation -----------------------------------------------------------------------

@pytest.mark.parametrize(("subject", "code"), [
    ("A" * 30 + " " + "b" * 60, "format.subject-long"),
    ("Big news!! Read this", "format.subject-punctuation"),
    ("Act now: your cloud review", "format.subject-spam-words"),
    ("FREE CLOUD CREDITS INSIDE", "format.subject-caps"),
    ("   ", "format.subject-missing"),
])
def test_subject_rules(subject, code):
    email = RenderedEmail(asset=WELCOME, subject=subject, html="", text="x")
    assert [f.code for f in check_subject(email, scan_html(""))] == [code]


@pytest.mark.parametrize("subject", [
    "How Lumen Logistics cut incident time by 60%", "AWS or Acme Cloud?", "Welcome, Alex",
])
def test_ordinary_subjects_pass(subject):
    email = RenderedEmail(asset=WELCOME, subject=subject, html="", text="x")
    assert check_subject(email, scan_html("")) == []


@pytest.mark.parametrize("text", [
    "Acme Cloud SAS, 12 rue de la Paix, 75002 Paris, France",
    "Acme Inc.\n350 Fifth Avenue, Suite 4200\nNew York, NY 10118",
    "Acme GmbH, Hauptstraße 5, 10115 Berlin",
    "PO Box 123, Springfield, IL 62701",
    "10 Downing Street, London SW1A 2AA",
])
def test_postal_addresses_are_recognised(text):
    assert looks_like_postal_address(text)


@pytest.mark.parametrize("text", [
    "Download our 12-point checklist\nUnsubscribe · View in browser",
    "Call us on 0800 123 456",
    "In 2024 we moved 400 servers in eight weeks",
    "",
])
def test_other_text_is_not_an_address(text):
    assert not looks_like_postal_address(text)


@pytest.mark.parametrize(("text", "href", "deceptive"), [
    ("www.acme.example", "https://evil.example/login", True),
    ("https://acme.com/pricing", "https://acme-pricing.net", True),
    ("acme.example/pricing", "https://www.acme.example/pricing?utm=1", False),
    ("https://docs.acme.example", "https://acme.example/docs", False),
    ("Read the guide", "https://evil.example", False),
    ("Node.js", "https://nodejs.org", False),
    ("www.acme.example", "mailto:hello@acme.example", False),
])
def test_link_text_domains(text, href, deceptive):
    html = f'<body><p><a href="{href}">{text}</a></p></body>'
    email = RenderedEmail(asset=WELCOME, subject="s", html=html, text="x")
    assert bool(check_link_text(email, scan_html(html))) is deceptive


def test_mjml_structure_rules():
    source = """<mjml>
  <mj-head><mj-preview>Hi</mj-preview></mj-head>
  <mj-body>
    <mj-column><mj-text>Not in a section</mj-text></mj-column>
    <mj-section>
      <mj-column>
        <mj-text colour="#000" align="middle" padding="10">Text</mj-text>
        <!-- <mj-bogus> inside a comment is ignored -->
        <mj-image src="x.png" width="120px" alt="ok" />
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""
    found = {(f.code, f.location) for f in check_mjml(WELCOME, source)}
    assert found == {
        ("mjml.invalid-parent", "line 4: <mj-column>"),
        ("mjml.unknown-attribute", "line 7: <mj-text>"),
        ("mjml.invalid-value", "line 7: <mj-text>"),  # align and padding
        ("mjml.missing-title", "<mj-head>"),
    }
    assert all(f.severity == Severity.WARNING for f in check_mjml(WELCOME, source))
    assert len([f for f in check_mjml(WELCOME, source) if f.code == "mjml.invalid-value"]) == 2


def test_mjml_unknown_tag_and_empty_title():
    source = "<mjml><mj-head><mj-title> </mj-title></mj-head><mj-body><mj-sektion>" \
             "</mj-sektion></mj-body></mjml>"
    assert {f.code for f in check_mjml(WELCOME, source)} == \
        {"mjml.unknown-tag", "mjml.missing-title"}


def test_suggestion_only_for_near_misses():
    assert suggestion("frist_name", ["first_name", "last_name", "company"]) == "first_name"
    assert suggestion("industry", ["first_name", "last_name", "company"]) is None


# -- client support data ----------------------------------------------------------------------

def test_caniemail_data_is_vendored_with_its_licence():
    licence = (DATA.parent / "LICENSE-caniemail").read_text()
    assert "MIT License" in licence
    assert (DATA.parent / "refresh_caniemail.sh").stat().st_mode & 0o111


def test_caniemail_index_is_built_once_and_knows_the_major_clients():
    features, by_key = caniemail_index()
    assert caniemail_index() is caniemail_index()
    assert by_key["prop:position"] == ("css-position",)
    assert set(features["css-position"].support) == set(MAJOR_CLIENTS.values())
    assert features["css-position"].support["Outlook (Windows)"] == "n"


def test_mjml_own_features_are_not_reported():
    assert {"css-padding", "css-border-radius", "html-table", "css-at-media"} <= \
        baseline_features()
    html = '<body><table style="padding:4px;border-radius:6px"><tr><td>x</td></tr></table></body>'
    assert check_client_support(WELCOME, html) == []


def test_style_block_features_are_detected():
    html = ("<head><style>@media (prefers-color-scheme: dark) { a:hover { color: red } }"
            "</style></head><body><p style='display:flex'>x</p></body>")
    slugs = {f.location for f in check_client_support(WELCOME, html)}
    assert {"css-at-media-prefers-color-scheme", "css-pseudo-class-hover",
            "css-display-flex"} <= slugs


# -- hostile input ----------------------------------------------------------------------------

HOSTILE_HTML = {
    "huge": "<p>" + "x" * 5_000_000 + "</p>",
    "deep": "<div>" * 200_000 + '<img src="a.png">' + "</div>" * 200_000,
    "open attributes": "<a " * 200_000,
    "unclosed comment": "<body><!--" + "<img src=x>" * 100_000,
    "nested links": "<a href='https://x.example'>" * 100_000,
    "brace-less css": "<style>" + "a" * 1_000_000 + "</style>",
    "nested css": "<style>" + "@media x {" * 100_000 + "</style>",
    "nul bytes": "\x00" * 100_000 + "<b>x</b>",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HTML))
def test_hostile_html_is_checked_in_bounded_time(name):
    html = HOSTILE_HTML[name]
    email = RenderedEmail(asset=WELCOME, subject="s", html=html, text="t")
    started = time.monotonic()
    findings = check_email(email) + check_client_support(WELCOME, html)
    assert time.monotonic() - started < 5
    assert all(isinstance(f, Finding) for f in findings)
    if name in ("huge", "deep"):
        assert "format.partly-checked" in {f.code for f in findings}
    if name == "huge":
        assert "format.html-size" in {f.code for f in findings}


@pytest.mark.parametrize("source", [
    "<mj-section " * 200_000,
    "<!--" * 200_000,
    "<mjml><mj-body>" + "<mj-wrapper>" * 100_000 + "</mjml>",
    "<mj-text " + "a=" * 500_000 + ">",
    "</mj-section>" * 100_000,
])
def test_hostile_mjml_is_checked_in_bounded_time(source):
    started = time.monotonic()
    findings = check_mjml(WELCOME, source)
    assert time.monotonic() - started < 5
    assert all(isinstance(f, Finding) for f in findings)
