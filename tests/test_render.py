"""Per-recipient rendering: personalised and escaped; `nurture render`."""

from __future__ import annotations

import email
import email.policy

import pytest

from engine.render import personalise
from engine.render.compile import compile_asset
from engine.render.personalise import (
    Links,
    RenderContext,
    RenderFailed,
    render_email,
    render_subject,
    render_template,
    template,
)

LEADS = """email,first_name,last_name,company,title,industry
ada@example.com,<script>alert(1)</script>,Lovelace,Globex & Sons,CIO,aerospace
bob@example.com,Bob,Smith,,CFO,retail
"""


@pytest.fixture
def leads(cli, loaded_program, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(LEADS)
    result = cli("leads", "import", path, "--program", loaded_program)
    assert result.exit_code == 0, result.output
    return loaded_program


def context(**lead) -> RenderContext:
    return RenderContext(lead={"first_name": "Ada", **lead}, program={"name": "P", "slug": "p"},
                         sender={}, links=Links(base_url="http://x.test", program="p"))


def render(source: str, *, html: bool = True, strict: bool = False, **lead) -> str:
    return render_template(template(source, html=html, strict=strict),
                           context(**lead).variables())


# -- personalised and escaped ---------------------------------------------------------------------

def test_render_is_personalised_and_escaped(cli, leads):
    result = cli("render", "welcome_it", "--lead", "ada@example.com")
    assert result.exit_code == 0, result.output
    assert "Subject: Welcome, <script>alert(1)</script>" in result.output  # a header, not HTML
    assert "Globex & Sons." in result.output
    assert "Unsubscribe (http://localhost:5000/u/preview)" in result.output
    assert "pricing page (http://localhost:5000/p/acme-nurture/pricing?t=preview)" in result.output
    other = cli("render", "welcome_it", "--lead", "bob@example.com")
    assert "Subject: Welcome, Bob" in other.output and "see whether we fit\nyour team." in other.output


def test_html_part_escapes_lead_fields(cli, leads, tmp_path):
    out = tmp_path / "welcome.html"
    assert cli("render", "welcome_it", "--lead", "ada@example.com", "--out", out).exit_code == 0
    html = out.read_text()
    assert "<script>alert" not in html
    assert "Welcome, &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Globex &amp; Sons" in html
    assert 'href="http://localhost:5000/u/preview"' in html
    assert "{{" not in html and "{%" not in html


def test_eml_is_a_parseable_multipart_message(cli, leads, tmp_path):
    out = tmp_path / "welcome.eml"
    result = cli("render", "welcome_it", "--lead", "ada@example.com", "--out", out)
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "Acme Cloud <hello@acme.example>"
    assert message["Reply-To"] == "team@acme.example"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Welcome, <script>alert(1)</script>"
    assert message["Date"] and message["Message-ID"].endswith("@acme.example>")
    assert message["List-Unsubscribe"] == "<http://localhost:5000/u/preview>"
    text, html = (part.get_content() for part in message.iter_parts())
    assert "Unsubscribe (http://localhost:5000/u/preview)" in text
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_render_errors(cli, leads, tmp_path):
    assert "no email 'nope'" in cli("render", "nope", "--lead", "ada@example.com").output
    assert "no lead with email" in cli("render", "welcome_it", "--lead", "x@example.com").output
    bad = cli("render", "welcome_it", "--lead", "ada@example.com", "--out", tmp_path / "x.pdf")
    assert bad.exit_code == 1 and "--out must end in .html or .eml" in bad.output


def test_an_asset_with_only_invalid_versions_is_not_rendered(cli, leads, sample_program, db):
    from sqlalchemy import update

    from engine.assets.models import Asset

    broken = sample_program / "emails" / "welcome_it.mjml"
    broken.write_text(broken.read_text().replace("{{ lead.first_name }}", "{{ lead.first_name }}}"
                                                 "{% if %}"))
    assert cli("assets", "upload", broken, "--program", leads).exit_code == 1
    # version 1 is still current and renders
    assert cli("render", "welcome_it", "--lead", "bob@example.com").exit_code == 0
    with db.session() as s:
        s.execute(update(Asset).where(Asset.path == "emails/welcome_it.mjml")
                  .values(current_version=None))
    assert cli("render", "welcome_it", "--lead", "bob@example.com").exit_code == 0  # launched v1
    result = cli("render", "welcome_it", "--lead", "bob@example.com", "--pending")
    assert result.exit_code == 1
    assert "emails/welcome_it.mjml has no valid version (version 2: line" in result.output


def test_custom_fields_and_subject_are_rendered(cli, leads, db):
    from engine.leads.service import get_lead
    from engine.programs.store import current_program
    from engine.render.personalise import make_context

    with db.session() as s:
        lead = get_lead(session=s, email="ada@example.com")
        _, program = current_program(session=s, name=leads)
        ctx = make_context(lead=lead, program=program)
    assert render_template(template("{{ lead.industry }}/{{ lead.custom.industry }}", html=True),
                           ctx.variables()) == "aerospace/aerospace"
    assert render_template(template("{{ sender.name }} <{{ sender.email }}>", html=False),
                           ctx.variables()) == "Acme Cloud <hello@acme.example>"
    # a line break in a field cannot inject a header
    ctx2 = context(first_name="Ann\r\nBcc: victim@example.com")
    assert render_subject("Hi {{ lead.first_name }}", ctx2) == "Hi Ann Bcc: victim@example.com"


# -- strict mode and cache (the sandbox's bounds: tests/test_sandbox.py) ------------------------

def test_strict_mode_finds_missing_fields():
    assert render("Hi {{ lead.nickname }}!") == "Hi !"
    with pytest.raises(RenderFailed, match="undefined variable: .*nickname"):
        render("Hi {{ lead.nickname }}!", strict=True)


def test_ordinary_templates_still_work():
    assert render("{{ '%d'|format(5000000) }} {{ lead.first_name|upper }} {{ links.page('a b') }}"
                  "{% for i in range(3) %}{{ i }}{% endfor %}", html=False) == \
        "5000000 ADA http://x.test/p/p/a%20b?t=preview012"


def test_compiled_versions_render_from_cache():
    compiled = compile_asset("email", "<mjml><mj-body><mj-section><mj-column><mj-text>"
                                      "Hi {{ lead.first_name }}</mj-text></mj-column></mj-section>"
                                      "</mj-body></mjml>")
    first = render_email(version_id=987654, html=compiled.html, text=compiled.text,
                         subject="S {{ lead.first_name }}", context=context(first_name="<b>"))
    assert "Hi &lt;b&gt;" in first.html and "Hi <b>" in first.text and first.subject == "S <b>"
    key = ("html", 987654)
    cached = personalise.template(compiled.html, html=True, cache_key=key)
    assert personalise.template(compiled.html, html=True, cache_key=key) is cached  # compiled once
    # A version id alone names nothing across databases: other content renders as itself.
    again = render_email(version_id=987654, html="Other {{ lead.first_name }}", text="x",
                         subject="S", context=context())
    assert again.html == "Other Ada"
