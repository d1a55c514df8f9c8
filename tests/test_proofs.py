"""Proofs to reviewers through the real local sink, the sample leads they are rendered for, the
approval status per asset version, and the `qa proof` / `qa approvals` commands."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from engine.assets.service import upload
from engine.cli import NurtureGroup
from engine.errors import Conflict, Invalid, NotFound
from engine.launch.approvals import (
    approval_status,
    proof_for_token,
    record_decision,
)
from engine.launch.models import Approval, Proof
from engine.launch.proofs import MAX_REVIEWERS, ProofsNotRendered, send_proofs
from engine.launch.samples import SAMPLE_VALUES, sample_fields, sample_leads
from engine.programs.loader import load_program_dir
from engine.programs.personas import resolve_persona
from engine.programs.spec import Persona
from engine.sending.inbox import read_message
from engine.sending.sink import Sink
from qa.proof_cli import approvals, proof

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "test-secret"  # the env fixture's SECRET_KEY: CLI and service tokens agree
BASE = "https://nurture.acme.example"
EMAILS, PERSONAS = 15, 2  # the sample program
PERSONA_NAMES = {"it_manager": "IT manager", "finance": "Finance lead"}
REVIEW_LINK = re.compile(r"https://nurture\.acme\.example/review/([A-Za-z0-9_.\-]+)\?decision=(\w+)")


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink", replies={"bounce@": "550 5.1.1 No such user",
                                          "later@": "451 4.3.0 Try again later"}) as server:
        yield server


def send(db, sink, program: str, reviewers: list[str], now: datetime = NOW):
    transport = sink.transport()
    try:
        with db.session() as s:
            sent = send_proofs(session=s, program_name=program, reviewers=reviewers,
                               transport=transport, secret_key=SECRET, base_url=BASE, now=now)
            return list(sent), sent.failures, sent.skipped
    finally:
        transport.close()


def proofs(db) -> list[Proof]:
    with db.session() as s:
        return list(s.scalars(select(Proof).order_by(Proof.id)))


def received(sink, **kwargs) -> list:
    return [read_message(sink.directory, m) for m in sink.messages(**kwargs)]


def find(messages, email_key: str, persona: str):
    [found] = [m for m in messages if f"email={email_key}; " in m["X-Nurture-Proof"]
               and m["X-Nurture-Proof"].endswith(f"persona={persona}")]
    return found


def subject(message) -> str:
    # Python folds a long Subject onto a continuation line, and its parser keeps the space
    return message["Subject"].strip()


def parts(message) -> tuple[str, str]:
    html, text = (message.get_body((kind,)).get_content() for kind in ("html", "plain"))
    return html.replace("\r\n", "\n"), text.replace("\r\n", "\n")


def decide(db, proof_id: int, decision: str, comment: str | None = None, *, at=NOW):
    with db.session() as s:
        return record_decision(session=s, proof=s.get(Proof, proof_id), decision=decision,
                               comment=comment, now=at).id


def status(db, program: str = "acme-nurture") -> dict:
    with db.session() as s:
        return {item.email_key: item for item in approval_status(session=s, program_name=program)}


def upload_changed_welcome(db, sample_program, text="Thanks for your interest in Acme Cloud.",
                           new="Thank you for your interest in Acme Cloud."):
    source = (sample_program / "emails" / "welcome_it.mjml").read_text()
    assert text in source
    with db.session() as s:
        result = upload(session=s, program="acme-nurture", filename="welcome_it.mjml",
                        data=source.replace(text, new).encode(), now=NOW + timedelta(hours=1))
    assert [v.version for v in result.versions] == [2]


# -- sending ------------------------------------------------------------------------------------

def test_one_proof_per_email_persona_and_reviewer_arrives_marked(db, loaded_program, sink):
    sent, failures, skipped = send(db, sink, loaded_program, ["Ann@Acme.example", "bob@acme.example"])

    assert (failures, skipped) == ([], 0)
    assert len(sent) == EMAILS * PERSONAS * 2
    for reviewer in ("ann@acme.example", "bob@acme.example"):
        messages = received(sink, to=reviewer)
        assert len(messages) == EMAILS * PERSONAS
        combos = {(m["X-Nurture-Proof"].split("email=")[1].split(";")[0],
                   m["X-Nurture-Proof"].rsplit("persona=", 1)[1]) for m in messages}
        assert len(combos) == EMAILS * PERSONAS  # each email for each persona, once
        for message in messages:
            assert re.match(r"^\[PROOF\] \[(IT manager|Finance lead)\] \S", subject(message))
            assert message["To"] == reviewer
            assert message["Auto-Submitted"] == "auto-generated"
    stored = proofs(db)
    assert [p.message_id for p in stored] == [m.message_id for m in sink.messages()]
    assert {p.reviewer for p in stored} == {"ann@acme.example", "bob@acme.example"}
    assert all(p.sent_at == NOW for p in stored)


def test_a_proof_has_the_banner_on_top_and_the_persona_sample_merged(db, loaded_program, sink):
    send(db, sink, loaded_program, ["ann@acme.example"])
    messages = received(sink)
    it = find(messages, "welcome_it", "it_manager")
    finance = find(messages, "welcome_it", "finance")

    assert subject(it) == "[PROOF] [IT manager] Welcome, Alex"
    assert subject(finance) == "[PROOF] [Finance lead] Welcome, Alex"
    html, text = parts(it)
    banner_at = html.index('data-nurture-proof="banner"')
    assert banner_at < html.index("View in browser") < html.index("Welcome, Alex")
    assert re.search(r"<body[^>]*>\s*<table[^>]*data-nurture-proof", html)
    for fact in ("PROOF FOR REVIEW", "Acme Cloud perpetual nurture (acme-nurture)", "welcome_it",
                 "emails/welcome_it.mjml", "IT manager (it_manager)", ">Approve<",
                 "Reject (with a comment)"):
        assert fact in html[:html.index("View in browser")], fact
    assert text.startswith("=" * 64 + "\nPROOF FOR REVIEW")
    assert "Asset version: 1\n" in text and "Persona:       IT manager (it_manager)" in text
    banner_text, _, body_text = text.partition("=" * 64 + "\n\n")
    assert "Welcome, Alex" in body_text and "Example Industries" in body_text
    assert "{{" not in html and "{{" not in text
    # both parts carry the same two signed links, one approve and one reject
    for part in (html, banner_text):
        links = REVIEW_LINK.findall(part)
        assert sorted(decision for _, decision in links) == ["approve", "reject"]
        assert len({token for token, _ in links}) == 1


def test_review_tokens_bind_the_proof_its_reviewer_and_its_version(db, loaded_program, sink):
    send(db, sink, loaded_program, ["ann@acme.example", "bob@acme.example"])
    message = find(received(sink, to="bob@acme.example"), "guide_it", "finance")
    token = REVIEW_LINK.search(parts(message)[1]).group(1)
    with db.session() as s:
        found = proof_for_token(session=s, secret_key=SECRET, token=token, now=NOW)
        assert (found.reviewer, found.email_key, found.persona, found.message_id) == (
            "bob@acme.example", "guide_it", "finance", message["Message-ID"])
        with pytest.raises(Exception, match="not valid"):
            proof_for_token(session=s, secret_key="another-secret", token=token, now=NOW)
        with pytest.raises(Exception, match="not valid"):  # links expire after 30 days
            proof_for_token(session=s, secret_key=SECRET, token=token,
                            now=NOW + timedelta(days=31))


@pytest.mark.parametrize(("reviewers", "field"), [
    ([], "to"),
    (["  "], "to.0"),
    (["ann@acme.example", "not-an-address"], "to.1"),
    (["ann@acme.example", "bob@acme.example\r\nBcc: x@evil.example"], "to.1"),
    ([f"r{n}@acme.example" for n in range(MAX_REVIEWERS + 1)], "to"),
    ([42], "to.0"),
])
def test_bad_reviewer_lists_are_refused_and_nothing_is_sent(db, loaded_program, sink,
                                                            reviewers, field):
    with pytest.raises(Invalid) as refused:
        send(db, sink, loaded_program, reviewers)
    assert refused.value.field == field
    assert sink.messages() == [] and proofs(db) == []


def test_reviewers_are_deduplicated_case_insensitively(db, loaded_program, sink):
    sent, _, _ = send(db, sink, loaded_program, ["Ann@acme.example", "ann@ACME.example"])
    assert len(sent) == EMAILS * PERSONAS
    assert {m.rcpt_tos for m in sink.messages()} == {("ann@acme.example",)}


def test_an_email_that_fails_to_render_sends_no_proof_at_all(db, cli, sample_program, sink):
    path = sample_program / "emails" / "tco_finance.mjml"
    path.write_text(path.read_text().replace("</mj-body>", """<mj-section><mj-column>
      <mj-text>Hi {{ lead.frist_name }}</mj-text></mj-column></mj-section></mj-body>"""))
    assert cli("program", "load", sample_program).exit_code == 0

    with pytest.raises(ProofsNotRendered) as refused:
        send(db, sink, "acme-nurture", ["ann@acme.example"])
    detail = refused.value.detail
    assert detail.startswith("no proofs sent: ")
    assert "tco_finance (emails/tco_finance.mjml) for persona it_manager" in detail
    assert "for persona finance" in detail and "frist_name" in detail
    assert len(refused.value.failures) == PERSONAS  # only the broken email, for both personas
    assert sink.messages() == [] and proofs(db) == []


def test_a_program_without_sender_is_refused_at_load_not_when_proofs_are_sent(
        db, cli, sample_program, sink, monkeypatch):
    monkeypatch.delenv("NURTURE_FROM")
    path = sample_program / "program.yaml"
    path.write_text(re.sub(r"(?m)^sender:.*\n", "", path.read_text()))
    result = cli("program", "load", sample_program)
    assert result.exit_code == 1 and "missing sender.from" in result.stderr
    with pytest.raises(NotFound):
        send(db, sink, "acme-nurture", ["ann@acme.example"])
    assert sink.messages() == []


def test_a_refused_reviewer_is_skipped_and_the_others_get_everything(db, loaded_program, sink):
    sent, failures, skipped = send(db, sink, loaded_program,
                                   ["bounce@acme.example", "ann@acme.example"])
    assert len(sent) == EMAILS * PERSONAS and {p.reviewer for p in sent} == {"ann@acme.example"}
    [failure] = failures
    assert (failure.reviewer, failure.permanent) == ("bounce@acme.example", True)
    assert failure.reason.startswith("550")
    assert skipped == EMAILS * PERSONAS - 1
    assert [p.id for p in proofs(db)] == [p.id for p in sent]  # the refused one is not stored


def test_a_temporary_failure_stops_the_run_and_keeps_what_was_sent(db, loaded_program, sink):
    sent, failures, skipped = send(db, sink, loaded_program,
                                   ["ann@acme.example", "later@acme.example"])
    assert [p.reviewer for p in sent] == ["ann@acme.example"]
    assert [(f.reviewer, f.permanent) for f in failures] == [("later@acme.example", False)]
    assert skipped == EMAILS * PERSONAS * 2 - 2
    assert len(proofs(db)) == 1 and len(sink.messages()) == 1


def test_unknown_program_is_not_found(db, loaded_program, sink):
    with pytest.raises(Exception, match="no program named"):
        send(db, sink, "no-such-program", ["ann@acme.example"])


# -- sample leads -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec():
    return load_program_dir(Path(__file__).parent.parent / "assets" / "acme-nurture").program


def with_personas(spec, *personas: Persona):
    return dataclasses.replace(spec, personas={p.key: p for p in personas})


def test_sample_leads_match_their_persona_by_their_fields(spec):
    samples = sample_leads(spec)
    assert [s.persona.key for s in samples] == ["it_manager", "finance"]
    for sample in samples:
        fields = sample.fields
        assert fields["persona"] is None  # resolved from the title, not named
        assert resolve_persona(spec, fields) == sample.persona.key
        assert fields["first_name"] == SAMPLE_VALUES["first_name"]
        assert fields["timezone"] == spec.timezone
    assert [s.fields["title"] for s in samples] == ["IT", "CFO"]


def test_a_needle_an_earlier_persona_also_matches_is_passed_over(spec):
    program = with_personas(
        spec,
        Persona("ops", "Ops", {"title_contains": ["manager"]}),
        Persona("it", "IT", {"title_contains": ["IT manager", "CIO"]}, default=True))
    it = sample_fields(program, program.personas["it"])
    assert (it["title"], it["persona"]) == ("CIO", None)  # "IT manager" would read as ops


def test_a_persona_no_value_can_reach_is_named_explicitly(spec):
    program = with_personas(
        spec,
        Persona("ops", "Ops", {"title_contains": ["manager"]}),
        Persona("it", "IT", {"title_contains": ["IT manager"]}),
        Persona("other", "Other", {}, default=True))
    for key in ("it", "other"):  # "other": the default title "Manager" reads as ops
        fields = sample_fields(program, program.personas[key])
        assert fields["persona"] == key and resolve_persona(program, fields) == key


def test_rules_on_custom_fields_and_several_rules_on_one_field(spec):
    program = with_personas(
        spec,
        Persona("big_fin", "Big finance", {"industry_in": ["Banking", "Insurance"],
                                          "title_contains": ["finance"],
                                          "title_in": ["CFO", "VP Finance"],
                                          "region_equals": "EMEA"}),
        Persona("rest", "Everyone else", {}, default=True))
    fields = sample_fields(program, program.personas["big_fin"])
    assert (fields["industry"], fields["title"], fields["region"]) == ("Banking", "VP Finance",
                                                                      "EMEA")
    assert fields["persona"] is None
    [big, rest] = sample_leads(program)
    assert big.lead.custom == {"industry": "Banking", "region": "EMEA"}
    assert rest.fields["persona"] is None and resolve_persona(program, rest.fields) == "rest"


def test_only_values_that_satisfy_every_rule_on_a_field_are_tried(spec):
    # 80 listed titles, one of which also contains "finance": found by its fields, not named
    titles = [f"Title {n}" for n in range(79)] + ["Head of Finance"]
    program = with_personas(spec, Persona("fin", "Finance", {"title_in": titles,
                                                             "title_contains": ["finance"]}),
                            Persona("rest", "Rest", {}, default=True))
    fields = sample_fields(program, program.personas["fin"])
    assert (fields["title"], fields["persona"]) == ("Head of Finance", None)


def test_the_email_field_stays_an_address(spec):
    program = with_personas(spec, Persona("acme", "Acme", {"email_contains": ["acme"]}),
                            Persona("rest", "Rest", {}, default=True))
    fields = sample_fields(program, program.personas["acme"])
    assert fields["email"] == SAMPLE_VALUES["email"] and fields["persona"] == "acme"


# -- approval status ----------------------------------------------------------------------------

def test_every_email_starts_pending_with_its_reviewers_awaited(db, loaded_program, sink):
    send(db, sink, loaded_program, ["ann@acme.example", "bob@acme.example"])
    items = status(db)
    assert len(items) == EMAILS
    assert {item.state for item in items.values()} == {"pending"}
    assert items["welcome_it"].version == 1
    assert items["welcome_it"].awaiting == ("ann@acme.example", "bob@acme.example")


def test_the_latest_decision_of_each_reviewer_counts(db, loaded_program, sink):
    sent, _, _ = send(db, sink, loaded_program, ["ann@acme.example", "bob@acme.example"])
    ann = {(p.email_key, p.persona): p.id for p in sent if p.reviewer == "ann@acme.example"}
    bob = {(p.email_key, p.persona): p.id for p in sent if p.reviewer == "bob@acme.example"}

    decide(db, ann["welcome_it", "it_manager"], "approve")
    item = status(db)["welcome_it"]
    assert (item.state, item.approved_by, item.awaiting) == ("approved", ("ann@acme.example",),
                                                             ("bob@acme.example",))
    decide(db, bob["welcome_it", "finance"], "reject", "  Logo is blurry  ",
           at=NOW + timedelta(minutes=1))
    item = status(db)["welcome_it"]
    assert item.state == "rejected"
    assert [(r.reviewer, r.comment) for r in item.rejections] == [("bob@acme.example",
                                                                   "Logo is blurry")]
    # bob changes his mind on another persona's proof of the same version: it is one version
    decide(db, bob["welcome_it", "it_manager"], "approve", at=NOW + timedelta(minutes=2))
    item = status(db)["welcome_it"]
    assert (item.state, item.approved_by) == ("approved", ("ann@acme.example",
                                                           "bob@acme.example"))
    # ann withdraws hers by rejecting later; the others stay pending
    decide(db, ann["welcome_it", "finance"], "reject", "Wrong CTA", at=NOW + timedelta(minutes=3))
    assert status(db)["welcome_it"].state == "rejected"
    assert status(db)["guide_it"].state == "pending"


@pytest.mark.parametrize(("decision", "comment", "field"), [
    ("reject", None, "comment"),
    ("reject", " \n ", "comment"),
    ("reject", "x" * 2001, "comment"),
    ("approve", "bad \x00 text", "comment"),
    ("maybe", "hmm", "decision"),
])
def test_bad_decisions_are_refused(db, loaded_program, sink, decision, comment, field):
    [first, *_] = send(db, sink, loaded_program, ["ann@acme.example"])[0]
    with pytest.raises(Invalid) as refused:
        decide(db, first.id, decision, comment)
    assert refused.value.field == field
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Approval)) == 0


def test_a_new_asset_version_is_pending_again_and_old_proofs_cannot_decide(db, loaded_program,
                                                                          sample_program, sink):
    sent, _, _ = send(db, sink, loaded_program, ["ann@acme.example"])
    old = next(p.id for p in sent if p.email_key == "welcome_it")
    decide(db, old, "approve")
    assert status(db)["welcome_it"].state == "approved"

    upload_changed_welcome(db, sample_program)
    item = status(db)["welcome_it"]
    assert (item.version, item.state, item.approved_by, item.awaiting) == (2, "pending", (), ())
    assert status(db)["welcome_finance"].state == "pending"
    with pytest.raises(Conflict, match="newer version"):
        decide(db, old, "approve")

    sent, _, _ = send(db, sink, loaded_program, ["ann@acme.example"], now=NOW + timedelta(hours=2))
    new = next(p.id for p in sent if p.email_key == "welcome_it")
    decide(db, new, "approve", at=NOW + timedelta(hours=2))
    assert (status(db)["welcome_it"].state, status(db)["welcome_it"].version) == ("approved", 2)


def test_an_email_without_a_valid_version_is_pending_with_the_reason(db, loaded_program):
    from engine.assets.models import Asset

    with db.session() as s:
        asset = s.scalar(select(Asset).where(Asset.path == "emails/roi_it.mjml"))
        asset.current_version = None
    item = status(db)["roi_it"]
    assert (item.state, item.version) == ("pending", None)
    assert "no valid version" in item.problem


# -- the commands -------------------------------------------------------------------------------

@pytest.fixture
def qa(env, sink, monkeypatch):
    """`nurture qa ...` as the qa group will run it: domain errors mapped by NurtureGroup."""
    monkeypatch.setenv("NURTURE_SINK_PORT", str(sink.port))
    monkeypatch.setenv("NURTURE_BASE_URL", BASE)
    group = NurtureGroup("qa", commands=[proof, approvals])
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(group, list(args), catch_exceptions=False)

    return invoke


def test_qa_proof_sends_and_prints_what_was_sent(db, loaded_program, sink, qa):
    result = qa("proof", loaded_program, "--to", "ann@acme.example, bob@acme.example")
    assert result.exit_code == 0, result.output
    assert len(sink.messages()) == EMAILS * PERSONAS * 2
    assert f"{EMAILS * PERSONAS * 2} proofs sent" in result.output
    assert re.search(r"welcome_it\s*│\s*1\s*│\s*it_manager\s*│\s*ann@acme\.example", result.output)
    # the links in the sent proofs are signed with the configured secret and base URL
    token = REVIEW_LINK.search(parts(received(sink)[0])[1]).group(1)
    with db.session() as s:
        assert proof_for_token(session=s, secret_key=SECRET, token=token,
                               now=datetime.now(UTC)).reviewer == "ann@acme.example"


def test_qa_proof_json_and_failures_exit_1(db, loaded_program, sink, qa):
    result = qa("proof", loaded_program, "--to", "bounce@acme.example,ann@acme.example", "--json")
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert len(body["sent"]) == EMAILS * PERSONAS
    assert body["failed"][0]["reviewer"] == "bounce@acme.example"


@pytest.mark.parametrize(("args", "message"), [
    (("--to", " , "), "error: to: name at least one reviewer"),
    (("--to", "ann@acme.example,nope"), "error: to.1: invalid email address 'nope'"),
])
def test_qa_proof_refuses_bad_reviewers(loaded_program, sink, qa, args, message):
    result = qa("proof", loaded_program, *args)
    assert result.exit_code == 1 and message in result.output
    assert sink.messages() == []


def test_qa_proof_of_an_unknown_program(db, qa):
    result = qa("proof", "nope", "--to", "ann@acme.example")
    assert result.exit_code == 1 and "no program named 'nope'" in result.output


def test_qa_approvals_prints_each_email_state(db, loaded_program, sink, qa):
    sent, _, _ = send(db, sink, loaded_program, ["ann@acme.example"])
    ids = {(p.email_key, p.persona): p.id for p in sent}
    decide(db, ids["welcome_it", "it_manager"], "approve")
    decide(db, ids["guide_it", "finance"], "reject", "[bold]Typo[/bold] in the title")

    result = qa("approvals", loaded_program)
    assert result.exit_code == 0, result.output
    assert re.search(r"welcome_it\s*│\s*1\s*│\s*approved\s*│\s*ann@acme\.example", result.output)
    assert "[bold]Typo[/bold]" in result.output  # shown as written, not as markup
    assert f"1 of {EMAILS} emails approved" in result.output

    body = json.loads(qa("approvals", loaded_program, "--json").stdout)
    states = {item["email"]: item["state"] for item in body["items"]}
    assert (states["welcome_it"], states["guide_it"], states["roi_it"]) == (
        "approved", "rejected", "pending")
    assert body["approved"] is False
