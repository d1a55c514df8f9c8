"""What goes out is what the gate checked: QA, proofs, approvals and sends read the same asset
version, and after a launch a new upload or program version waits for the next launch.

Driven as a marketer does it: `nurture assets upload`, `nurture qa run`, `nurture program show`,
`nurture launch`; deliveries through the real sink; pages over HTTP."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from launching import approve_everything
from sqlalchemy import select

from engine.assets.models import Asset
from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.journeys.service import run_due
from engine.launch.models import Launch
from engine.programs.models import ProgramRecord
from engine.sending.delivery import deliver_due
from engine.sending.inbox import read_message
from engine.sending.sink import Sink

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the send window is open
WELCOME = "emails/welcome_it.mjml"
OLD_WORDS = "Thanks for your interest in Acme Cloud."
NEW_WORDS = "Thanks for trying Acme Cloud, version two."


@pytest.fixture
def notify_sink(tmp_path, monkeypatch):
    """Where `nurture launch` tells sales and support (the launch notice)."""
    with Sink(tmp_path / "notices") as sink:
        monkeypatch.setenv("NURTURE_SINK_PORT", str(sink.port))
        yield sink


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _changed_welcome(sample_program, tmp_path, old: str = OLD_WORDS, new: str = NEW_WORDS):
    """A copy of the welcome email with one edit, named as the program names it."""
    changed = tmp_path / "upload" / "welcome_it.mjml"
    changed.parent.mkdir(exist_ok=True)
    changed.write_text((sample_program / WELCOME).read_text().replace(old, new, 1))
    assert changed.read_text() != (sample_program / WELCOME).read_text()
    return changed


def _add_lead(db, email: str, now: datetime = MONDAY) -> None:
    with db.session() as s:
        upsert_lead(session=s, fields={"email": email, "title": "CIO", "first_name": "Ada",
                                       "timezone": "Europe/Paris"},
                    now=now, actor="test", program="acme-nurture")


def _launch(cli, tmp_path, name: str):
    return cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
               "--out", str(tmp_path / name))


def _deliver(db, tmp_path, name: str, now: datetime = MONDAY) -> dict[str, str]:
    """Deliver what is due; the plain text each recipient got."""
    with Sink(tmp_path / name) as sink, sink.transport() as transport:
        deliver_due(db=db, transport=transport, worker="w", clock=lambda: now)
        return {m.rcpt_tos[0]: read_message(sink.directory, m).get_body(("plain",)).get_content()
                for m in sink.messages()}


@pytest.fixture
def launched(cli, db, sample_program, tmp_path, notify_sink):
    """The sample loaded, every email approved and launched past the gate."""
    assert cli("program", "load", sample_program).exit_code == 0
    approve_everything(db, tmp_path / "proofs0", MONDAY)
    result = _launch(cli, tmp_path, "r0")
    assert result.exit_code == 0, result.output
    return sample_program


# -- the gate checks what will be sent ----------------------------------------------------------

def test_qa_run_checks_the_uploaded_version_and_names_it(cli, db, sample_program, tmp_path):
    assert cli("program", "load", sample_program).exit_code == 0
    broken = _changed_welcome(sample_program, tmp_path, "Welcome, {{ lead.first_name }}",
                              "Welcome, {{ lead.frist_name }}")
    _edit(broken, 'alt="Acme Cloud" ', "")
    assert cli("assets", "upload", broken, "--program", "acme-nurture").exit_code == 0

    result = cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                 "--out", str(tmp_path / "r1"), "--json")
    report = json.loads(result.stdout)
    blockers = {(f["code"], f["asset"]) for f in report["findings"] if f["severity"] == "blocker"}
    assert ("format.merge-misspelled", WELCOME) in blockers
    assert ("format.missing-alt", WELCOME) in blockers
    assert {"asset": WELCOME, "version": 2} in [
        {k: a[k] for k in ("asset", "version")} for a in report["assets"]]
    html = (tmp_path / "r1" / "qa-report.html").read_text()
    assert "Asset versions checked" in html and "v2" in html

    fixed = _changed_welcome(sample_program, tmp_path, OLD_WORDS, NEW_WORDS)  # v3: both fixed
    assert cli("assets", "upload", fixed, "--program", "acme-nurture").exit_code == 0
    report = json.loads(cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                            "--out", str(tmp_path / "r2"), "--json").stdout)
    codes = {f["code"] for f in report["findings"] if f["asset"] == WELCOME}
    assert not codes & {"format.merge-misspelled", "format.missing-alt"}  # no reload needed
    [welcome] = [a for a in report["assets"] if a["asset"] == WELCOME]
    assert welcome["version"] == 3
    [approval] = [a for a in report["approvals"] if a["asset"] == WELCOME]
    assert approval["version"] == 3  # approvals name the version QA checked


def test_a_newer_upload_that_does_not_compile_is_a_warning_naming_the_version_checked(
        cli, db, sample_program, tmp_path):
    assert cli("program", "load", sample_program).exit_code == 0
    bad = _changed_welcome(sample_program, tmp_path, "<mj-column>", "<mj-column><mj-nonsense/>")
    assert cli("assets", "upload", bad, "--program", "acme-nurture").exit_code == 1
    report = json.loads(cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                            "--out", str(tmp_path / "r"), "--json").stdout)
    [warning] = [f for f in report["findings"] if f["code"] == "asset.upload-invalid"]
    assert (warning["asset"], warning["location"]) == (WELCOME, "v2")
    assert "checked version 1" in warning["message"]


# -- after launch, changed content waits for the next launch -----------------------------------

def test_an_upload_after_launch_is_sent_only_once_approved_and_launched(
        cli, db, launched, tmp_path):
    _add_lead(db, "ada@globex.example")
    changed = _changed_welcome(launched, tmp_path)
    upload = cli("assets", "upload", changed, "--program", "acme-nurture")
    assert upload.exit_code == 0 and "pending launch" in upload.stdout

    _add_lead(db, "bob@globex.example")  # enrolled after the upload
    got = _deliver(db, tmp_path, "sink1")
    assert set(got) == {"ada@globex.example", "bob@globex.example"}
    assert all(OLD_WORDS in text and NEW_WORDS not in text for text in got.values())

    show = cli("program", "show", "acme-nurture")
    assert "pending launch" in show.stdout
    assert f"{WELCOME}: v2 (live v1): not approved: no proof sent yet" in show.stdout
    pending = json.loads(cli("program", "show", "acme-nurture", "--json").stdout)["pending"]
    assert pending == [{"what": WELCOME, "live": 1, "pending": 2,
                        "why": "not approved: no proof sent yet (`nurture qa proof`)"}]

    refused = _launch(cli, tmp_path, "r1")
    assert refused.exit_code == 1
    assert f"{WELCOME}: v2 (live v1)" in refused.stdout  # says what it would launch
    assert refused.stdout.count("approval.missing") == 1 and "welcome_it v2" in refused.stdout
    _add_lead(db, "cy@globex.example")
    assert NEW_WORDS not in _deliver(db, tmp_path, "sink2")["cy@globex.example"]

    assert approve_everything(db, tmp_path / "proofs1", MONDAY) == 30  # 15 emails x 2 personas
    assert "approved by qa@acme.example: launch to send it" in cli(
        "program", "show", "acme-nurture").stdout
    relaunched = _launch(cli, tmp_path, "r2")
    assert relaunched.exit_code == 0, relaunched.output
    _add_lead(db, "dee@globex.example")
    assert NEW_WORDS in _deliver(db, tmp_path, "sink3")["dee@globex.example"]
    with db.session() as s:
        asset = s.scalar(select(Asset).where(Asset.path == WELCOME))
        assert (asset.current_version, asset.live_version) == (2, 2)
        launches = s.scalars(select(Launch).order_by(Launch.id)).all()
        assert [(la.launched, la.assets[WELCOME]) for la in launches] == [
            (True, 1), (False, 2), (True, 2)]
    assert "nothing pending" in cli("program", "show", "acme-nurture").stdout
    assert "nothing pending" in _launch(cli, tmp_path, "r3").stdout


def test_an_api_upload_after_launch_waits_too(cli, db, env, launched, tmp_path):
    from engine.auth.service import create_key
    from engine.web.app import create_app

    with db.session() as s:
        key = create_key(session=s, role="marketer", name="t", now=MONDAY)[1]
    app = create_app()
    changed = _changed_welcome(launched, tmp_path)
    with changed.open("rb") as handle:
        response = app.test_client().post(
            "/api/v1/assets", headers={"Authorization": f"Bearer {key}"},
            data={"program": "acme-nurture", "file": (handle, "welcome_it.mjml")})
    assert response.status_code == 201 and response.get_json()["pending_launch"] is True
    program = app.test_client().get("/api/v1/programs/acme-nurture",
                                    headers={"Authorization": f"Bearer {key}"}).get_json()
    assert (program["live_version"], [p["what"] for p in program["pending"]]) == (1, [WELCOME])
    app.extensions["nurture.db"].dispose()
    _add_lead(db, "ada@globex.example")
    assert OLD_WORDS in _deliver(db, tmp_path, "sink")["ada@globex.example"]


def test_render_shows_what_is_sent_and_pending_shows_the_upload(cli, db, launched, tmp_path):
    _add_lead(db, "ada@globex.example")
    assert cli("assets", "upload", _changed_welcome(launched, tmp_path), "--program",
               "acme-nurture").exit_code == 0
    sent = cli("render", "welcome_it", "--lead", "ada@globex.example")
    assert OLD_WORDS in sent.stdout and "version 1" in sent.stdout
    pending = cli("render", "welcome_it", "--lead", "ada@globex.example", "--pending")
    assert NEW_WORDS in pending.stdout and "version 2" in pending.stdout


def test_a_new_program_version_with_appended_steps_sends_them_only_after_its_launch(
        cli, db, launched, tmp_path):
    with db.session() as s:  # a finance lead: its inquiry track is three emails long
        upsert_lead(session=s, fields={"email": "fay@globex.example", "title": "CFO",
                                       "timezone": "Europe/Paris"},
                    now=MONDAY, actor="test", program="acme-nurture")
    day = MONDAY
    for _ in range(40):  # the whole track, day by day
        day += timedelta(days=1)
        with db.session() as s:
            run_due(session=s, now=day)
        _deliver(db, tmp_path, f"sink-{day:%m%d}", day)
    with db.session() as s:
        enrollment = s.scalar(select(Enrollment))
        assert enrollment.status == "completed", enrollment.state

    program_file = launched / "program.yaml"
    text = program_file.read_text()
    finance_track = next(line for line in text.splitlines()
                         if line.strip().startswith("finance/inquiry:"))
    appended = finance_track.rstrip().removesuffix("]") + ", {wait: 20d}, {email: product_update}]"
    program_file.write_text(text.replace(finance_track, appended))
    loaded = cli("program", "load", launched)
    assert loaded.exit_code == 0 and "pending launch" in loaded.stdout

    for _ in range(5):
        day += timedelta(days=1)
        with db.session() as s:
            run_due(session=s, now=day)
        assert _deliver(db, tmp_path, f"late-{day:%m%d}", day) == {}  # v1 still runs
    with db.session() as s:
        assert s.scalar(select(Enrollment.program_version)) == 1
        assert s.scalar(select(ProgramRecord.live_version)) == 1
    assert "program: v2 (live v1): loaded" in cli("program", "show", "acme-nurture").stdout

    relaunched = _launch(cli, tmp_path, "r1")  # emails unchanged: approvals still hold
    assert relaunched.exit_code == 0, relaunched.output
    with db.session() as s:
        assert s.scalar(select(Enrollment.program_version)) == 2
    sent: dict[str, str] = {}
    for _ in range(7):
        day += timedelta(days=1)
        with db.session() as s:
            run_due(session=s, now=day)
        sent |= _deliver(db, tmp_path, f"v2-{day:%m%d}", day)
    assert list(sent) == ["fay@globex.example"]  # the appended product update, once


def test_a_page_uploaded_after_launch_is_shown_only_after_the_next_launch(
        cli, db, env, launched, tmp_path):
    from engine.web.app import create_app

    changed = tmp_path / "pricing.html"
    original = (launched / "pages" / "pricing.html").read_text()
    changed.write_text(original.replace("</h1>", " (new prices)</h1>", 1))
    assert "(new prices)" in changed.read_text()
    assert cli("assets", "upload", changed, "--program", "acme-nurture").exit_code == 0
    app = create_app()
    page = app.test_client().get("/p/acme-nurture/pricing")
    assert page.status_code == 200 and "(new prices)" not in page.text
    approve_everything(db, tmp_path / "proofs1", MONDAY)  # pages need no approval; emails do
    assert _launch(cli, tmp_path, "r1").exit_code == 0
    page = app.test_client().get("/p/acme-nurture/pricing")
    assert "(new prices)" in page.text
    app.extensions["nurture.db"].dispose()


def test_loading_before_the_first_launch_moves_enrollments_at_once(cli, db, sample_program):
    assert cli("program", "load", sample_program).exit_code == 0
    _add_lead(db, "ada@globex.example")
    _edit(sample_program / "program.yaml", "timezone: Europe/Paris", "timezone: Europe/Berlin")
    loaded = cli("program", "load", sample_program)
    assert "1 running enrollment(s) migrated" in loaded.stdout
    show = cli("program", "show", "acme-nurture")
    assert "not launched" in show.stdout
    assert "program: v2, first launch, with 17 emails and pages (2 of them approved or pages)" \
        in show.stdout  # the two pages; each email is listed with why it waits
    assert show.stdout.count("(not live yet): not approved: no proof sent yet") == 15
    with db.session() as s:
        assert s.scalar(select(Enrollment.program_version)) == 2


# -- rows queued before a launch go out as the launched version --------------------------------

WELCOME_SUBJECT = 'subject: "Welcome, {{ lead.first_name }}"'


def _subjects(db, tmp_path, name: str) -> dict[str, str]:
    with Sink(tmp_path / name) as sink, sink.transport() as transport:
        deliver_due(db=db, transport=transport, worker="w", clock=lambda: MONDAY)
        return {m.rcpt_tos[0]: m.subject for m in sink.messages()}


def test_an_email_queued_before_the_first_launch_goes_out_as_launched(
        cli, db, sample_program, tmp_path, notify_sink):
    program = sample_program / "program.yaml"
    _edit(program, WELCOME_SUBJECT, 'subject: "UNCHECKED v1 subject"')
    assert cli("program", "load", sample_program).exit_code == 0
    _add_lead(db, "ada@globex.example")  # its welcome is queued under version 1
    _edit(program, 'subject: "UNCHECKED v1 subject"', WELCOME_SUBJECT)
    assert cli("program", "load", sample_program).exit_code == 0
    approve_everything(db, tmp_path / "proofs", MONDAY)
    assert _launch(cli, tmp_path, "r0").exit_code == 0
    assert _subjects(db, tmp_path, "sink") == {"ada@globex.example": "Welcome, Ada"}


def test_an_email_dropped_before_the_first_launch_is_skipped_saying_why(
        cli, db, sample_program, tmp_path, notify_sink):
    from engine.sending.models import OutboxMessage

    assert cli("program", "load", sample_program).exit_code == 0
    _add_lead(db, "ada@globex.example")  # welcome_it queued under version 1
    program = sample_program / "program.yaml"
    text = program.read_text()
    _edit(program, "welcome_it:          {file: emails/welcome_it.mjml",
          "hello_it:            {file: emails/welcome_it.mjml")
    program.write_text(program.read_text().replace("{email: welcome_it}", "{email: hello_it}"))
    (sample_program / "scenarios.yaml").write_text(
        (sample_program / "scenarios.yaml").read_text().replace("welcome_it", "hello_it"))
    assert program.read_text() != text
    assert cli("program", "load", sample_program).exit_code == 0, "renamed email"
    approve_everything(db, tmp_path / "proofs", MONDAY)
    assert _launch(cli, tmp_path, "r0").exit_code == 0
    assert _subjects(db, tmp_path, "sink") == {}  # version 1's email was never checked
    with db.session() as s:
        [row] = s.scalars(select(OutboxMessage).where(OutboxMessage.step == "welcome_it")).all()
        assert (row.status, row.skip_reason) == ("skipped",
                                                 "not in launched version 2 of the program")


# -- pages: live only once launched; reviewers preview them from their proofs ------------------

def _proof_page_links(db, tmp_path) -> list[str]:
    from urllib.parse import urlsplit

    from engine.launch.proofs import send_proofs

    with Sink(tmp_path / "proofs") as sink, sink.transport() as transport, db.session() as s:
        send_proofs(session=s, program_name="acme-nurture", reviewers=["qa@acme.example"],
                    transport=transport, secret_key="test-secret",
                    base_url="http://localhost:5000", now=MONDAY)
        html = "".join(read_message(sink.directory, m).get_body(("html",)).get_content()
                       for m in sink.messages())
    found = set(re.findall(r'href="(http://localhost:5000/p/[^"]+)"', html))
    return sorted(urlsplit(url.replace("&amp;", "&"))._replace(scheme="", netloc="").geturl()
                  for url in found)


def test_pages_are_not_served_before_launch_but_reviewers_preview_them(
        cli, db, env, sample_program, tmp_path, notify_sink):
    from engine.pages.models import FormSubmission
    from engine.web.app import create_app

    assert cli("program", "load", sample_program).exit_code == 0
    app = create_app()
    client = app.test_client()
    assert client.get("/p/acme-nurture/demo").status_code == 404  # not launched: not public
    [demo] = [link for link in _proof_page_links(db, tmp_path) if "/demo?" in link]
    preview = client.get(demo)
    assert preview.status_code == 200 and "Request a demo" in preview.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', preview.text).group(1)
    tried = client.post(demo, data={"csrf_token": token, "email": "qa@acme.example"})
    assert tried.status_code == 200 and "nothing was stored" in tried.text
    with db.session() as s:
        assert s.scalars(select(FormSubmission)).all() == []
    assert client.get(demo.replace("t=", "t=x")).status_code == 404  # a forged preview
    approve_everything(db, tmp_path / "proofs2", MONDAY)
    assert _launch(cli, tmp_path, "r0").exit_code == 0
    assert client.get("/p/acme-nurture/demo").status_code == 200
    app.extensions["nurture.db"].dispose()


def test_a_preview_shows_the_pending_page_and_visitors_the_live_one(
        cli, db, env, launched, tmp_path):
    from engine.pages.service import preview_token
    from engine.web.app import create_app

    changed = tmp_path / "pricing.html"
    changed.write_text((launched / "pages" / "pricing.html").read_text()
                       .replace("</h1>", " (new prices)</h1>", 1))
    assert cli("assets", "upload", changed, "--program", "acme-nurture").exit_code == 0
    app = create_app()
    token = preview_token(secret_key="test-secret", program="acme-nurture")
    assert "(new prices)" in app.test_client().get(f"/p/acme-nurture/pricing?t={token}").text
    assert "(new prices)" not in app.test_client().get("/p/acme-nurture/pricing").text
    app.extensions["nurture.db"].dispose()


def test_a_live_email_rejected_after_launch_is_named_until_a_fix_is_launched(
        cli, db, launched, tmp_path):
    from engine.launch.approvals import record_decision
    from engine.launch.models import Proof

    with db.session() as s:
        proof = next(p for p in s.scalars(select(Proof)) if p.email_key == "welcome_it")
        record_decision(session=s, proof=proof, decision="reject", comment="wrong logo",
                        now=MONDAY)
    show = cli("program", "show", "acme-nurture").stdout
    assert "nothing pending" not in show
    assert (f"{WELCOME}: v1 (live v1): rejected by qa@acme.example after launch: leads still "
            "get it") in show
    refused = _launch(cli, tmp_path, "r1")
    assert refused.exit_code == 1 and "approval.rejected" in refused.stdout


def test_uploading_the_live_content_again_leaves_nothing_pending(cli, db, launched, tmp_path):
    changed = _changed_welcome(launched, tmp_path)
    assert "pending launch" in cli("assets", "upload", changed, "--program",
                                   "acme-nurture").stdout
    restored = cli("assets", "upload", launched / WELCOME, "--program", "acme-nurture")
    assert "which is current again" in restored.stdout
    assert "pending launch" not in restored.stdout
    show = cli("program", "show", "acme-nurture").stdout
    assert "nothing pending" in show and "launched 20" in show and "by maria" in show
