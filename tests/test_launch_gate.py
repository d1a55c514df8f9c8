"""The launch gate as a marketer meets it: `nurture qa run` names every planted defect with
its place and blocks; the clean sample passes; `nurture launch` refuses while blockers remain,
a waiver lets one named finding through, and nothing is sent until the program is launched."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from launching import approve_everything
from sqlalchemy import func, select

from engine.flows.leads import upsert_lead
from engine.launch.models import Launch, Waiver
from engine.programs.models import ProgramRecord
from engine.programs.service import load_program
from engine.sending.delivery import deliver_due
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink
from qa.gate import GateOptions, load_target, run_gate
from qa.links import LinkCheckOptions

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
WELCOME = "emails/welcome_it.mjml"


class _Missing(BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def gone_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Missing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/gone"
    server.shutdown()
    server.server_close()


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _gate(directory, **links):
    target = load_target(session=None, program=str(directory))
    options = GateOptions(base_url="https://go.acme.example",
                          links=LinkCheckOptions(timeout=3.0, **links))
    return run_gate(target=target, session=None, options=options, now=MONDAY)


def _blocker(report, code: str, asset: str):
    found = [f for f in report.blockers if f.code == code and f.asset == asset]
    assert found, f"no {code} blocker on {asset}: {[(f.code, f.asset) for f in report.blockers]}"
    return found[0]


def test_the_clean_sample_passes(sample_program):
    report = _gate(sample_program, network=False)
    assert report.passed, [f.to_dict() for f in report.blockers]
    assert report.counts()["blocker"] == 0


def test_every_planted_defect_is_named_with_its_place_and_blocks(sample_program, gone_url):
    welcome = sample_program / WELCOME
    _edit(welcome, 'alt="Acme Cloud" ', "")  # a linked image without alt text
    _edit(welcome, "https://acme.example/docs/quick-start", gone_url)  # a broken link
    _edit(welcome, "Welcome, {{ lead.first_name }}", "Welcome, {{ lead.frist_name }}")
    guide = sample_program / "emails" / "guide_it.mjml"
    padding = "<mj-text>" + "Acme cloud costs, explained. " * 5300 + "</mj-text>"
    _edit(guide, "</mj-column>", padding + "</mj-column>")  # over Gmail's 102 KB clip

    report = _gate(sample_program, allow_hosts=("127.0.0.1",))

    assert not report.passed
    assert "img" in _blocker(report, "format.missing-alt", WELCOME).location
    broken = _blocker(report, "link.broken", WELCOME)
    assert gone_url in broken.location and broken.location.startswith("line ")
    merge = _blocker(report, "format.merge-misspelled", WELCOME)
    assert "frist_name" in merge.location and "first_name" in merge.message
    size = _blocker(report, "format.html-size", "emails/guide_it.mjml")
    assert "KB" in size.message


def test_a_report_is_written_as_json_and_html(cli, sample_program, tmp_path):
    _edit(sample_program / WELCOME, 'alt="Acme Cloud" ', "")
    out = tmp_path / "report"
    result = cli("qa", "run", str(sample_program), "--offline", "--no-screenshots",
                 "--out", str(out))
    assert result.exit_code == 1, result.output  # blocked
    assert "QA blocked: 1 blocker(s)" in result.stdout
    data = json.loads((out / "qa-report.json").read_text())
    assert data["passed"] is False and data["counts"]["blocker"] == 1
    [blocker] = [f for f in data["findings"] if f["severity"] == "blocker"]
    assert (blocker["code"], blocker["asset"]) == ("format.missing-alt", WELCOME)
    html = (out / "qa-report.html").read_text()
    assert "Blocked: 1 blocker(s)" in html and "format.missing-alt" in html
    assert "<script" not in html


def _load(db, directory):
    with db.session() as s:
        load_program(session=s, directory=directory, now=MONDAY)
        upsert_lead(session=s, fields={"email": "ada@globex.example", "title": "CIO",
                                       "timezone": "Europe/Paris"},
                    now=MONDAY, actor="test", program="acme-nurture")


def _approve_everything(db, tmp_path) -> None:
    approve_everything(db, tmp_path / "proofs", MONDAY)


def _queued(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage)
                        .where(OutboxMessage.status == "pending"))


def test_nothing_is_sent_before_launch_and_launch_refuses_naming_the_blocker(
        cli, db, sample_program, tmp_path):
    _edit(sample_program / WELCOME, 'alt="Acme Cloud" ', "")
    _load(db, sample_program)
    _approve_everything(db, tmp_path)
    with Sink(tmp_path / "sink") as sink, sink.transport() as transport:
        report = deliver_due(db=db, transport=transport, worker="w", clock=lambda: MONDAY)
        assert report.counts.total() == 0 and sink.messages() == []  # not launched: waits
    assert _queued(db) == 1

    refused = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
                  "--out", str(tmp_path / "r1"))
    assert refused.exit_code == 1
    assert "format.missing-alt" in refused.stdout and "not launched: 1 blocker(s)" in refused.stderr
    with db.session() as s:
        record = s.scalar(select(ProgramRecord))
        attempt = s.scalar(select(Launch))
        assert record.launched_at is None
        assert attempt.launched is False and "format.missing-alt" in attempt.summary


def test_a_waiver_lets_the_named_finding_through_and_launch_tells_sales_and_support(
        cli, db, sample_program, tmp_path, monkeypatch):
    _edit(sample_program / WELCOME, 'alt="Acme Cloud" ', "")
    _load(db, sample_program)
    _approve_everything(db, tmp_path)
    report = json.loads(cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                            "--out", str(tmp_path / "r0"), "--json").stdout)
    [key] = [f["key"] for f in report["findings"] if f["severity"] == "blocker"]

    waived = cli("qa", "waive", "acme-nurture", key, "--reason", "logo is decorative here",
                 "--by", "maria")
    assert waived.exit_code == 0, waived.output
    with Sink(tmp_path / "sink") as sink:
        monkeypatch.setenv("NURTURE_SINK_PORT", str(sink.port))
        launched = cli("launch", "acme-nurture", "--by", "maria", "--offline",
                       "--no-screenshots", "--out", str(tmp_path / "r1"))
        assert launched.exit_code == 0, launched.output
        assert "1 waived" in launched.stdout and "launched Acme Cloud" in launched.stdout
        [notice] = sink.messages()
    assert set(notice.rcpt_tos) == {"sales@acme.example", "support@acme.example"}
    assert notice.subject == "Launched: Acme Cloud perpetual nurture"
    with db.session() as s:
        assert s.scalar(select(ProgramRecord.launched_at)) is not None
        waiver = s.scalar(select(Waiver))
        assert (waiver.finding_key, waiver.by) == (key, "maria")

    with Sink(tmp_path / "sink2") as sink, sink.transport() as transport:
        sent = deliver_due(db=db, transport=transport, worker="w", clock=lambda: MONDAY)
        assert sent.counts["sent"] == 1 and len(sink.messages()) == 1  # launched: it goes out
    again = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots")
    assert again.exit_code == 0 and "already launched" in again.stdout


def test_unapproved_emails_block_the_launch_until_a_reviewer_approves_them(
        cli, db, sample_program, tmp_path):
    _load(db, sample_program)
    refused = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
                  "--out", str(tmp_path / "r1"))
    assert refused.exit_code == 1
    assert refused.stdout.count("approval.missing") == 15  # every email, named
    assert "emails/welcome_it.mjml  welcome_it v1: This version is not approved" in refused.stdout
    _approve_everything(db, tmp_path)
    launched = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
                   "--out", str(tmp_path / "r2"))
    assert launched.exit_code == 0, launched.output


UNAPPROVED_WELCOME = f"approval.missing:{WELCOME}:welcome_it v1"


def _launch_refused_on_the_unapproved_welcome(cli, tmp_path) -> None:
    refused = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
                  "--out", str(tmp_path / "launch"))
    assert refused.exit_code == 1
    assert f"approval.missing  {WELCOME}  welcome_it v1" in refused.stdout
    assert "1 blocker(s)" in refused.stdout and "0 waived" in refused.stdout
    assert "approval blockers cannot be waived" in " ".join(refused.stderr.split())


@pytest.mark.parametrize("key", [UNAPPROVED_WELCOME, f"approval.rejected:{WELCOME}:welcome_it v1",
                                 "  approval.not-loaded:program.yaml:program"])
def test_an_approval_finding_cannot_be_waived_a_reviewer_must_approve(cli, db, sample_program,
                                                                      tmp_path, key):
    _load(db, sample_program)
    approve_everything(db, tmp_path / "proofs", MONDAY, leaving_out=("welcome_it",))

    refused = cli("qa", "waive", "acme-nurture", key, "--reason", "no time for a proof",
                  "--by", "maria")

    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert "key: an approval finding cannot be waived: a reviewer must approve" in message
    assert "nurture qa proof" in message
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Waiver)) == 0
    _launch_refused_on_the_unapproved_welcome(cli, tmp_path)


def test_an_approval_waiver_stored_before_they_were_refused_does_not_let_the_launch_pass(
        cli, db, sample_program, tmp_path):
    _load(db, sample_program)
    approve_everything(db, tmp_path / "proofs", MONDAY, leaving_out=("welcome_it",))
    with db.session() as s:
        s.add(Waiver(program_id=s.scalar(select(ProgramRecord.id)), finding_key=UNAPPROVED_WELCOME,
                     reason="no time for a proof", by="maria", at=MONDAY))

    _launch_refused_on_the_unapproved_welcome(cli, tmp_path)
    with db.session() as s:
        assert s.scalar(select(ProgramRecord.launched_at)) is None


def test_a_loaded_program_is_checked_and_launched_by_name_beside_a_subdirectory_of_that_name(
        cli, db, sample_program, tmp_path, monkeypatch):
    _load(db, sample_program)
    _approve_everything(db, tmp_path)
    (tmp_path / "work" / "acme-nurture").mkdir(parents=True)  # no program.yaml: not a program
    monkeypatch.chdir(tmp_path / "work")

    checked = cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                  "--out", str(tmp_path / "r0"), "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["version"] == 1  # the loaded program's version
    launched = cli("launch", "acme-nurture", "--by", "maria", "--offline", "--no-screenshots",
                   "--out", str(tmp_path / "r1"))
    assert launched.exit_code == 0, launched.output
    assert "launched Acme Cloud perpetual nurture v1" in launched.stdout


@pytest.mark.parametrize("args, message", [
    (["qa", "waive", "acme-nurture", "", "--reason", "r", "--by", "m"], "finding key"),
    (["qa", "waive", "acme-nurture", "k", "--reason", "  ", "--by", "m"], "reason"),
    (["qa", "waive", "acme-nurture", "k" * 1001, "--reason", "r", "--by", "m"], "finding key"),
    (["qa", "waive", "no-such-program", "k", "--reason", "r", "--by", "m"], "no-such-program"),
    (["launch", "no-such-program", "--by", "m"], "no-such-program"),
])
def test_bad_waivers_and_launches_are_refused_clearly(cli, db, sample_program, args, message):
    _load(db, sample_program)
    result = cli(*args)
    assert result.exit_code != 0 and message in result.output
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Waiver)) == 0
        assert s.scalar(select(ProgramRecord.launched_at)) is None


def test_the_gate_walks_the_stored_scenario_table_of_a_loaded_program(cli, db, sample_program,
                                                                     tmp_path):
    table = sample_program / "scenarios.yaml"
    text = table.read_text()
    assert "welcome_it: 0" in text
    table.write_text(text.replace("welcome_it: 0", "welcome_it: 5", 1))  # a wrong expectation
    _load(db, sample_program)
    result = cli("qa", "run", "acme-nurture", "--offline", "--no-screenshots",
                 "--out", str(tmp_path / "r"), "--json")
    data = json.loads(result.stdout)
    [failed] = [f for f in data["findings"] if f["code"] == "scenario.failed"]
    assert failed["severity"] == "blocker" and "welcome_it" in failed["message"]
    assert sum(not s["passed"] for s in data["scenarios"]) == 1
    assert data["coverage"]["tracks"]["covered"] > 0


# Internal hosts: `--allow-host` and NURTURE_QA_ALLOW_HOSTS reach the link checker through
# run_gate_for, for `qa run` and `launch` alike.

STAGING = "staging.acme.internal"
QUICK_START = "https://acme.example/docs/quick-start"


class _Intranet(BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.server.paths.append(self.path)
        self.send_response(200 if self.path == "/docs/quick-start" else 404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def staging(monkeypatch):
    """A web server on 127.0.0.1; staging.acme.internal resolves to it. Yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Intranet)
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if host == STAGING else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # what the SSRF guard resolves with
    yield server, f"http://{STAGING}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _link_findings(result, url: str) -> list[tuple[str, str]]:
    data = json.loads(result.stdout)
    return sorted((f["code"], f["severity"]) for f in data["findings"] if url in f["location"])


@pytest.mark.parametrize("allow", ["flag", "environment", "both"])
def test_qa_run_checks_an_allowed_internal_host_and_refuses_it_otherwise(
        cli, sample_program, staging, tmp_path, monkeypatch, allow):
    server, base = staging
    page = f"{base}/docs/quick-start"
    _edit(sample_program / WELCOME, QUICK_START, page)
    runs = (f"r{n}" for n in range(3))

    def qa_run(*extra: str):
        return cli("qa", "run", sample_program, "--no-screenshots", "--json",
                   "--out", tmp_path / next(runs), *extra)

    refused = qa_run()
    assert refused.exit_code == 1
    assert _link_findings(refused, page) == [("link.insecure", "warning"),
                                            ("link.private-address", "blocker")]
    assert server.paths == []  # refused before connecting

    flags = ["--allow-host", STAGING] if allow != "environment" else []
    if allow == "both":  # the lists add up: the flag does not replace the environment's
        flags = ["--allow-host", "wiki.acme.internal"]
        monkeypatch.setenv("NURTURE_QA_ALLOW_HOSTS", f"{STAGING}, 10.9.0.0/16")
    elif allow == "environment":
        monkeypatch.setenv("NURTURE_QA_ALLOW_HOSTS", f"wiki.acme.internal,{STAGING},")
    passed = qa_run(*flags)
    assert passed.exit_code == 0, passed.output
    assert _link_findings(passed, page) == [("link.insecure", "warning")]
    assert server.paths == ["/docs/quick-start"]

    _edit(sample_program / WELCOME, page, f"{base}/docs/gone")
    broken = qa_run(*flags)
    assert broken.exit_code == 1
    assert _link_findings(broken, f"{base}/docs/gone") == [("link.broken", "blocker"),
                                                           ("link.insecure", "warning")]


def test_launch_passes_allowed_hosts_to_the_gate(cli, db, sample_program, staging, tmp_path,
                                                 monkeypatch):
    _, base = staging
    _edit(sample_program / WELCOME, QUICK_START, f"{base}/docs/quick-start")
    _load(db, sample_program)
    _approve_everything(db, tmp_path)
    refused = cli("launch", "acme-nurture", "--by", "maria", "--no-screenshots",
                  "--out", tmp_path / "r1")
    assert refused.exit_code == 1 and "link.private-address" in refused.stdout
    with Sink(tmp_path / "sink") as sink:
        monkeypatch.setenv("NURTURE_SINK_PORT", str(sink.port))
        launched = cli("launch", "acme-nurture", "--by", "maria", "--no-screenshots",
                       "--out", tmp_path / "r2", "--allow-host", STAGING)
    assert launched.exit_code == 0, launched.output
    assert "launched Acme Cloud" in launched.stdout
    with db.session() as s:
        assert s.scalar(select(ProgramRecord.launched_at)) is not None


@pytest.mark.parametrize(("flag", "environment", "message"), [
    ("*.acme.internal", None,
     "Invalid value for '--allow-host': allowlist entry '*.acme.internal': wildcards"),
    ("169.254.169.254", None, "'169.254.169.254' is never fetched (link-local"),
    ("http://staging.acme.internal/", None, "'http://staging.acme.internal/' is not a host"),
    (None, "staging.acme.internal,*.acme.internal",
     "NURTURE_QA_ALLOW_HOSTS: allowlist entry '*.acme.internal': wildcards are not supported"),
    (None, "fd00:ec2::254",
     "NURTURE_QA_ALLOW_HOSTS: allowlist entry 'fd00:ec2::254' is never fetched (AWS metadata"),
], ids=["wildcard flag", "metadata flag", "URL flag", "wildcard setting", "metadata setting"])
@pytest.mark.parametrize("command", ["qa", "launch"])
def test_bad_allowed_hosts_are_refused_naming_where_they_came_from(
        cli, db, sample_program, tmp_path, monkeypatch, command, flag, environment, message):
    _load(db, sample_program)
    if environment:
        monkeypatch.setenv("NURTURE_QA_ALLOW_HOSTS", environment)
    args = (["qa", "run", "acme-nurture"] if command == "qa"
            else ["launch", "acme-nurture", "--by", "maria"])
    args += ["--offline", "--no-screenshots", "--out", tmp_path / "r"]
    result = cli(*args, *(["--allow-host", flag] if flag else []))
    assert result.exit_code == (2 if flag else 1)  # a bad option is a usage error
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "r").exists()  # nothing ran
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Launch)) == 0
