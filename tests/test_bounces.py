"""Bounce and complaint intake: parsing DSNs (RFC 3464) and ARF complaints (RFC 5965),
recording them, and `nurture bounces scan|record` over the real local sink."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from launching import launch_all
from smtp_sink import nurture_message
from sqlalchemy import func, select

from engine.errors import Invalid
from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent
from engine.programs.service import load_program
from engine.sending.bounces import (
    MAX_RECIPIENTS,
    MAX_REPORT_BYTES,
    BounceKind,
    BounceReport,
    parse_bounce,
    record_bounce,
)
from engine.sending.delivery import deliver_due
from engine.sending.models import OutboxMessage, Suppression
from engine.sending.sink import Sink
from engine.sending.suppression import suppress, suppressed_reasons

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris
ORIGINAL_ID = "<41.welcome_it.acme-nurture@acme.example>"


# -- report builders (the email package, as an MTA would write them) ----------------------------

def fields(**values: str) -> Message:
    block = Message()
    for name, value in values.items():
        block[name.replace("_", "-")] = value
    return block


def original(to: str = "ada@globex.example", message_id: str = ORIGINAL_ID) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Acme Cloud <hello@acme.example>"
    message["To"] = to
    message["Subject"] = "Welcome, Ada"
    message["Message-ID"] = message_id
    message.set_content("Hello Ada")
    return message


def dsn(*recipients: dict, attach: str = "message", message_id: str = ORIGINAL_ID,
        to: str = "ada@globex.example") -> bytes:
    """A multipart/report; report-type=delivery-status with one field block per recipient;
    the original attached whole (`message`), as headers only (`headers`) or not at all."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.globex.example>"
    report["To"] = "hello@acme.example"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(MIMEText("This is the mail system. Your message could not be delivered."))
    status = Message()
    status.set_type("message/delivery-status")
    status.set_payload([fields(Reporting_MTA="dns; mx.globex.example")]
                       + [fields(**r) for r in recipients])
    report.attach(status)
    if attach == "message":
        report.attach(MIMEMessage(original(to, message_id)))
    elif attach == "headers":
        headers = f"From: hello@acme.example\nTo: {to}\nMessage-ID: {message_id}\n"
        report.attach(MIMEText(headers, "rfc822-headers"))
    return report.as_bytes()


def failed(address: str = "ada@globex.example", status: str = "5.1.1",
           diagnostic: str = "smtp; 550 5.1.1 <ada@globex.example>: Recipient address rejected",
           **more: str) -> dict:
    return {"Final_Recipient": f"rfc822; {address}", "Action": "failed", "Status": status,
            "Diagnostic_Code": diagnostic, **more}


def delayed(address: str = "ada@globex.example") -> dict:
    return {"Final_Recipient": f"rfc822; {address}", "Action": "delayed", "Status": "4.2.2",
            "Diagnostic_Code": "smtp; 452 4.2.2 Mailbox full"}


def arf(feedback_type: str = "abuse", rcpt_to: str | None = "ada@globex.example",
        to: str = "ada@globex.example", message_id: str = ORIGINAL_ID) -> bytes:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@isp.example"
    report["Subject"] = "FW: Welcome, Ada"
    report.attach(MIMEText("This is an email abuse report for an email message received."))
    values = {"Feedback_Type": feedback_type, "User_Agent": "ISP-FBL/1.0", "Version": "1"}
    if rcpt_to:
        values["Original_Rcpt_To"] = rcpt_to
    feedback = Message()
    feedback.set_type("message/feedback-report")
    feedback.attach(fields(**values))
    report.attach(feedback)
    report.attach(MIMEMessage(original(to, message_id)))
    return report.as_bytes()


# -- parsing -----------------------------------------------------------------------------------

def test_hard_bounce_5_1_1():
    assert parse_bounce(dsn(failed())) == [BounceReport(
        kind=BounceKind.HARD, recipient="ada@globex.example", message_id=ORIGINAL_ID,
        status="5.1.1", action="failed",
        diagnostic="550 5.1.1 <ada@globex.example>: Recipient address rejected")]


def test_delayed_4_2_2_is_soft():
    [report] = parse_bounce(dsn(delayed()))
    assert (report.kind, report.status, report.action) == ("soft", "4.2.2", "delayed")
    assert report.reason == "452 4.2.2 Mailbox full"
    assert BounceReport(BounceKind.SOFT, None, status="4.4.7", diagnostic="Expired").reason == (
        "4.4.7 Expired")


@pytest.mark.parametrize(("action", "status", "diagnostic", "kind"), [
    ("failed", "4.4.7", "smtp; 451 4.4.7 Expired", "soft"),  # a temporary failure given up on
    ("delayed", "5.0.0", "", "soft"),  # delayed is never final
    ("failed", "", "smtp; 550 5.1.1 User unknown", "hard"),  # no Status: the diagnostic's code
    ("failed", "", "smtp; 550 User unknown", "hard"),  # ... or its basic reply code
    ("failed", "", "", "soft"),  # a failure nobody explains: never suppress on a guess
    ("Failed (permanent)", "5.2.1 (mailbox disabled)", "", "hard"),
])
def test_kind_follows_action_and_status(action, status, diagnostic, kind):
    block = {"Final_Recipient": "rfc822; ada@globex.example", "Action": action}
    block |= {"Status": status} if status else {}
    block |= {"Diagnostic_Code": diagnostic} if diagnostic else {}
    [report] = parse_bounce(dsn(block))
    assert report.kind == kind


def test_several_recipients_each_get_a_report_and_deliveries_none():
    raw = dsn(failed("ada@globex.example"), delayed("bo@globex.example"),
              {"Final_Recipient": "rfc822; cy@globex.example", "Action": "delivered",
               "Status": "2.0.0"},
              failed("dee@globex.example", status="5.2.1"))
    assert [(r.recipient, r.kind) for r in parse_bounce(raw)] == [
        ("ada@globex.example", "hard"), ("bo@globex.example", "soft"),
        ("dee@globex.example", "hard")]


def test_original_recipient_only():
    [report] = parse_bounce(dsn({"Original_Recipient": "rfc822;Ada@Globex.example",
                                 "Action": "failed", "Status": "5.1.1"}))
    assert report.recipient == "ada@globex.example"


def test_original_recipient_wins_over_a_rewritten_final_recipient():
    [report] = parse_bounce(dsn(failed("ada.lovelace@mbox.globex.example",
                                       Original_Recipient="rfc822; ada@globex.example")))
    assert report.recipient == "ada@globex.example"


@pytest.mark.parametrize(("attach", "message_id"), [("message", ORIGINAL_ID),
                                                    ("headers", ORIGINAL_ID), ("none", None)])
def test_original_message_id_from_the_attached_message_or_headers(attach, message_id):
    [report] = parse_bounce(dsn(failed(), attach=attach))
    assert report.message_id == message_id


def test_arf_abuse_report_is_a_complaint():
    assert parse_bounce(arf()) == [BounceReport(
        kind=BounceKind.COMPLAINT, recipient="ada@globex.example", message_id=ORIGINAL_ID,
        diagnostic="abuse report from ISP-FBL/1.0")]


def test_arf_without_original_rcpt_to_uses_the_original_to():
    [report] = parse_bounce(arf(rcpt_to=None, to="Ada <ada@globex.example>"))
    assert report.recipient == "ada@globex.example"


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure", "virus"])
def test_arf_other_feedback_types_are_not_complaints(feedback_type):
    assert parse_bounce(arf(feedback_type)) == []


def test_mail_that_is_not_a_report_is_not_a_bounce():
    assert parse_bounce(nurture_message().as_bytes(policy=policy.SMTP)) == []
    receipt = MIMEMultipart("report", report_type="disposition-notification")
    receipt.attach(MIMEText("read"))
    assert parse_bounce(receipt.as_bytes()) == []
    assert parse_bounce(b"") == []


def test_a_report_missing_its_status_part_is_invalid():
    report = MIMEMultipart("report", report_type="delivery-status")
    report.attach(MIMEText("Your message could not be delivered."))
    with pytest.raises(Invalid, match="message/delivery-status"):
        parse_bounce(report.as_bytes())


@pytest.mark.parametrize("cut", [0.05, 0.2, 0.5, 0.7, 0.9])
def test_truncated_reports_give_what_they_hold_or_a_clear_error(cut):
    raw = dsn(failed())
    try:
        reports = parse_bounce(raw[:int(len(raw) * cut)])
    except Invalid as exc:
        assert exc.field == "message"
        return
    assert all(r.kind in BounceKind for r in reports)


def test_truncated_after_the_headers_is_invalid():
    raw = dsn(failed())
    with pytest.raises(Invalid, match="truncated"):
        parse_bounce(raw[:raw.index(b"\n\n") + 2])


def test_bad_encodings_come_out_as_clean_text():
    raw = dsn(failed(diagnostic="smtp; 550 5.1.1 Benutzer unbekannt XX"))
    raw = raw.replace(b"unbekannt XX", b"unbekannt \xfc\x00\xff")  # latin-1, NUL, junk
    raw = raw.replace(b'charset="us-ascii"', b'charset="x-no-such-charset"')
    [report] = parse_bounce(raw)
    assert report.kind == "hard"
    assert report.diagnostic.startswith("550 5.1.1 Benutzer unbekannt")
    assert "\x00" not in report.diagnostic
    assert not any("\ud800" <= c <= "\udfff" for c in report.diagnostic)


def test_broken_base64_in_the_headers_part_still_yields_the_bounce():
    raw = dsn(failed(), attach="headers")
    raw = raw.replace(b"Content-Transfer-Encoding: 7bit\n\nFrom: hello",
                      b"Content-Transfer-Encoding: base64\n\n!!!not base64!!!\nFrom: hello")
    [report] = parse_bounce(raw)
    assert (report.kind, report.recipient) == ("hard", "ada@globex.example")


def test_deeply_nested_parts_are_refused_not_a_crash():
    raw = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n"
    raw += b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
                    for i in range(5000))
    with pytest.raises(Invalid, match="unreadable"):
        parse_bounce(raw)


def test_oversized_input_is_refused():
    raw = dsn(failed(diagnostic="smtp; 550 5.1.1 " + "x" * 100))
    padding = b"\n" + b"padding line\n" * (MAX_REPORT_BYTES // 13 + 1)
    with pytest.raises(Invalid, match="limit"):
        parse_bounce(raw.replace(b"could not be delivered.", b"could not" + padding))


def test_recipients_are_capped():
    many = [failed(f"user{i}@globex.example") for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(Invalid, match="recipients"):
        parse_bounce(dsn(*many))
    assert len(parse_bounce(dsn(*many[:MAX_RECIPIENTS]))) == MAX_RECIPIENTS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise_anything_but_invalid(data):
    for raw in (data, b"Content-Type: multipart/report; report-type=delivery-status; "
                      b"boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n"
                      + data):
        try:
            reports = parse_bounce(raw)
        except Invalid:
            continue
        assert all(isinstance(r, BounceReport) for r in reports)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_reports_never_raise_anything_but_invalid(data):
    raw = bytearray(data.draw(st.sampled_from([dsn(failed(), delayed("bo@globex.example")),
                                               dsn(failed(), attach="headers"), arf()])))
    for _ in range(data.draw(st.integers(1, 20))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position:position + data.draw(st.integers(0, 40))] = data.draw(st.binary(max_size=8))
    try:
        parse_bounce(bytes(raw))
    except Invalid:
        pass


# -- recording ---------------------------------------------------------------------------------

@pytest.fixture
def program(db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)


def add(db, email: str, first_name: str = "Ada") -> None:
    with db.session() as s:
        upsert_lead(session=s, fields={"email": email, "first_name": first_name, "title": "CIO",
                                       "timezone": "Europe/Paris"},
                    now=MONDAY, actor="test", program="acme-nurture")


@pytest.fixture
def ada(db, program) -> str:
    add(db, "ada@globex.example")
    return "ada@globex.example"


def record(db, email, kind, *, message_id=None, reason="550 5.1.1 no such user",
           source="test", now=MONDAY + timedelta(hours=1)) -> bool:
    with db.session() as s:
        return record_bounce(session=s, email=email, kind=kind, source=source, now=now,
                             message_id=message_id, reason=reason)


def suppressions(db) -> dict[str, str]:
    with db.session() as s:
        return dict(s.execute(select(Suppression.email, Suppression.reason)).all())


def journey(db, email: str) -> tuple[str, str | None]:
    with db.session() as s:
        enrollment = s.scalar(select(Enrollment).join(Lead, Lead.id == Enrollment.lead_id)
                              .where(Lead.email == email))
        return enrollment.status, enrollment.state["exit_reason"]


def bounce_events(db, email: str) -> list[dict]:
    with db.session() as s:
        return [e.detail for e in s.scalars(
            select(LeadEvent).join(Lead, Lead.id == LeadEvent.lead_id)
            .where(Lead.email == email, LeadEvent.kind.in_(["bounced", "unsubscribed"]),
                   LeadEvent.category == "event").order_by(LeadEvent.id))]


def message_id_of(db, email: str) -> str:
    with db.session() as s:
        return s.scalar(select(OutboxMessage.message_id).join(Lead, Lead.id == OutboxMessage.lead_id)
                        .where(Lead.email == email))


def test_hard_bounce_suppresses_and_ends_journeys_once(db, ada):
    assert record(db, "Ada@Globex.example", "hard") is True
    assert suppressions(db) == {ada: "bounced"}
    assert journey(db, ada) == ("exited", "hard_bounce")
    assert bounce_events(db, ada) == [{"detail": "hard"}]
    assert record(db, ada, "hard") is False  # the same report again changes nothing
    assert bounce_events(db, ada) == [{"detail": "hard"}]
    with db.session() as s:
        assert s.scalar(select(Suppression.source)) == "test: 550 5.1.1 no such user"


def test_complaint_suppresses_and_ends_journeys_like_an_unsubscribe(db, ada):
    assert record(db, ada, "complaint", reason="abuse report") is True
    assert suppressions(db) == {ada: "complained"}
    assert journey(db, ada) == ("exited", "unsubscribed")
    assert bounce_events(db, ada) == [{"detail": "complaint"}]
    assert record(db, ada, "complaint", reason="abuse report") is False
    assert record(db, ada, "hard") is False  # already suppressed, journeys already over


def test_soft_bounce_is_logged_once_and_suppresses_nothing(db, ada):
    assert record(db, ada, "soft", reason="4.2.2 mailbox full", message_id="<1@x>") is True
    assert record(db, ada, "soft", reason="4.2.2 mailbox full", message_id="<1@x>") is False
    assert record(db, ada, "soft", reason="4.2.2 mailbox full", message_id="<2@x>") is True
    assert suppressions(db) == {}
    assert journey(db, ada)[0] == "active"
    assert bounce_events(db, ada) == [
        {"detail": "soft", "reason": "4.2.2 mailbox full", "message_id": "<1@x>",
         "source": "test"},
        {"detail": "soft", "reason": "4.2.2 mailbox full", "message_id": "<2@x>",
         "source": "test"}]


def test_unknown_address_is_suppressed_without_a_journey_event(db, ada):
    assert record(db, "nobody@globex.example", "hard") is True
    assert record(db, "nobody@globex.example", "hard") is False
    assert suppressions(db) == {"nobody@globex.example": "bounced"}
    assert journey(db, ada) == ("active", None)
    assert record(db, "other@globex.example", "soft") is False  # no lead to log it on


def test_rewritten_recipient_is_matched_by_the_original_message_id(db, ada):
    message_id = message_id_of(db, ada)
    assert record(db, "ada.lovelace@mbox.globex.example", "hard", message_id=message_id)
    assert suppressions(db) == {ada: "bounced"}  # the address we send to, not the rewritten one
    assert journey(db, ada) == ("exited", "hard_bounce")


def test_missing_recipient_is_matched_by_message_id_or_refused(db, ada):
    with pytest.raises(Invalid, match="no recipient"):
        record(db, None, "hard", message_id="<unknown@acme.example>")
    assert record(db, None, "complaint", message_id=message_id_of(db, ada)) is True
    assert suppressions(db) == {ada: "complained"}


def test_hand_suppressed_address_still_has_its_journeys_ended(db, ada):
    with db.session() as s:
        suppress(session=s, email=ada, reason="manual", source="ops", now=MONDAY)
    assert record(db, ada, "hard") is True
    assert suppressions(db) == {ada: "manual"}  # the first reason is kept
    assert journey(db, ada) == ("exited", "hard_bounce")
    assert record(db, ada, "hard") is False


def test_bad_text_is_cleaned_before_it_reaches_the_database(db, ada):
    assert record(db, ada, "hard", reason="550 \x00bad\ud800 \x1b[2Jtext\x9b31m\x7f\r\nend",
                  source="dsn\x00") is True
    with db.session() as s:  # controls, C1 ones too, are spaces: one line a terminal only shows
        assert s.scalar(select(Suppression.source)) == "dsn: 550 bad [2Jtext 31m end"


def test_unknown_kind_is_invalid(db, ada):
    with pytest.raises(Invalid) as error:
        record(db, ada, "bogus")
    assert error.value.field == "type"


def test_a_bounced_address_is_never_sent_to(db, ada, tmp_path):
    add(db, "bo@initech.example", first_name="Bo")
    record(db, ada, "hard")
    with Sink(tmp_path / "sink") as sink, sink.transport() as transport:
        report = deliver_due(db=db, transport=transport, worker="w",
                             clock=lambda: MONDAY + timedelta(minutes=1))
        assert [m.rcpt_tos for m in sink.messages()] == [("bo@initech.example",)]
    assert report.counts["sent"] == 1
    with db.session() as s:
        assert suppressed_reasons(session=s, emails=[ada, "bo@initech.example"]) == {
            ada: "bounced"}
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == "sent")) == 1


# -- nurture bounces scan / record -------------------------------------------------------------

def send_raw(sink: Sink, raw: bytes, to: str = "hello@acme.example") -> None:
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("", [to], raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


@pytest.fixture
def sink_with_reports(db, env, program):
    """The default sink directory holding: the three welcome emails, a hard DSN for ada whose
    recipient was rewritten, an abuse complaint from bo, a delay notice for cy."""
    for email, name in (("ada@globex.example", "Ada"), ("bo@initech.example", "Bo"),
                        ("cy@hooli.example", "Cy")):
        add(db, email, name)
    with Sink(Path(env["NURTURE_INSTANCE"]) / "sink") as sink:
        with sink.transport() as transport:
            deliver_due(db=db, transport=transport, worker="w",
                        clock=lambda: MONDAY + timedelta(minutes=1))
        ids = {m.rcpt_tos[0]: m.message_id for m in sink.messages()}
        send_raw(sink, dsn(failed("ada.lovelace@mbox.globex.example"),
                           message_id=ids["ada@globex.example"]))
        send_raw(sink, arf(rcpt_to="bo@initech.example", message_id=ids["bo@initech.example"]))
        send_raw(sink, dsn(delayed("cy@hooli.example"), message_id=ids["cy@hooli.example"]))
        yield sink


def test_scan_records_what_the_sink_received_once(cli, db, sink_with_reports):
    result = cli("bounces", "scan")
    assert result.exit_code == 0, result.output
    assert "ada@globex.example" in result.output and "bo@initech.example" in result.output
    assert "6 message(s) scanned" in result.output
    assert "2 suppressed, 1 soft, 0 ignored" in result.output
    assert suppressions(db) == {"ada@globex.example": "bounced",
                                "bo@initech.example": "complained"}
    assert journey(db, "ada@globex.example") == ("exited", "hard_bounce")
    assert journey(db, "bo@initech.example") == ("exited", "unsubscribed")
    assert journey(db, "cy@hooli.example")[0] == "active"
    assert [e["detail"] for e in bounce_events(db, "cy@hooli.example")] == ["soft"]

    again = json.loads(cli("bounces", "scan", "--json").output)
    assert (again["scanned"], again["suppressed"], again["soft"], again["ignored"]) == (6, 0, 0, 3)
    assert {r["email"] for r in again["reports"]} == {"ada@globex.example", "bo@initech.example",
                                                     "cy@hooli.example"}
    assert len(bounce_events(db, "cy@hooli.example")) == 1


def test_scan_since_skips_older_messages(cli, sink_with_reports):
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert json.loads(cli("bounces", "scan", "--since", later, "--json").output)["scanned"] == 0
    assert json.loads(cli("bounces", "scan", "--since", "1h", "--json").output)["scanned"] == 6
    bad = cli("bounces", "scan", "--since", "last tuesday")
    assert bad.exit_code == 1 and "not an ISO 8601 date" in bad.output


def test_scan_reports_unreadable_and_unidentified_messages(cli, db, env, program):
    add(db, "ada@globex.example")
    many = [failed(f"user{i}@globex.example") for i in range(MAX_RECIPIENTS + 1)]
    nobody = dsn({"Action": "failed", "Status": "5.1.1"}, attach="none")
    with Sink(Path(env["NURTURE_INSTANCE"]) / "sink") as sink:
        for raw in (dsn(*many), nobody, dsn(failed())):
            send_raw(sink, raw)
    result = json.loads(cli("bounces", "scan", "--json").output)
    assert [(r["seq"], r["result"]) for r in result["reports"]] == [
        (1, "unreadable"), (2, "unidentified"), (3, "suppressed")]
    assert suppressions(db) == {"ada@globex.example": "bounced"}


def test_record_command(cli, db, ada):
    result = cli("bounces", "record", ada, "--type", "soft", "--reason", "4.2.2 mailbox full")
    assert result.exit_code == 0 and "soft bounce recorded" in result.output
    assert suppressions(db) == {}
    result = cli("bounces", "record", "ADA@globex.example", "--type", "hard", "--reason", "5.1.1")
    assert result.exit_code == 0 and f"{ada}: suppressed (hard)" in result.output
    assert journey(db, ada) == ("exited", "hard_bounce")
    again = cli("bounces", "record", ada, "--type", "hard", "--reason", "5.1.1")
    assert "already recorded" in again.output
    with db.session() as s:
        assert s.scalar(select(Suppression.source)) == "cli: 5.1.1"


def test_record_command_refuses_a_bad_address(cli, db):
    result = cli("bounces", "record", "not-an-address", "--type", "hard", "--reason", "x")
    assert result.exit_code == 1 and "invalid email address" in result.output
    assert suppressions(db) == {}


@pytest.mark.parametrize("kind", ["complaint", "hard"])
def test_record_command_for_an_unknown_address_suppresses_it(cli, db, kind):
    result = cli("bounces", "record", "nobody@example.com", "--type", kind, "--reason", "x")
    assert result.exit_code == 0, result.output
    assert suppressions(db) == {"nobody@example.com": {"hard": "bounced"}.get(kind, "complained")}
