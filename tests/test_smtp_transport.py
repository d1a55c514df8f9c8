"""The SMTP transport against a real local sink: what arrives, connection reuse, and how every
kind of failure is classified (never raised)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from email import policy
from pathlib import Path

import pytest
from smtp_sink import REPLIES, nurture_message, without_trace

from engine.config import Settings
from engine.sending.inbox import list_messages
from engine.sending.sink import Sink, free_port
from engine.sending.smtp import SMTPTransport, envelope, transport_from_settings
from engine.sending.transport import Outcome, SendResult, Stage, Transport


@pytest.fixture
def sink(tmp_path):
    """A real sink on a free port, answering REPLIES for their recipients, storing the rest."""
    with Sink(tmp_path / "sink", replies=REPLIES) as server:
        yield server



def stored_bytes(server, stored) -> bytes:
    return (Path(server.directory) / stored.file).read_bytes()


def test_message_arrives_byte_for_byte(sink):
    message = nurture_message(body_size=30_000)
    with sink.transport() as transport:
        result = transport.send(message)
    assert result.sent and result.code == 250 and not result.partial
    [stored] = sink.messages()
    assert without_trace(stored_bytes(sink, stored)) == message.as_bytes(policy=policy.SMTP)
    assert stored.subject == "Grüße aus Zürich — état"
    assert stored.message_id == message["Message-ID"]
    assert stored.rcpt_tos == ("lead@example.com",)
    assert stored.mail_from == "news@acme.example"


def test_one_connection_is_reused(sink):
    transport = sink.transport()
    try:
        results = [transport.send(nurture_message(f"lead{i}@example.com")) for i in range(5)]
    finally:
        transport.close()
    assert all(r.sent for r in results)
    assert sink.connections == 1 and transport.connections_opened == 1
    assert len(sink.messages()) == 5


def test_idle_connection_is_checked_with_noop(sink):
    now = [1000.0]
    transport = sink.transport(clock=lambda: now[0])
    try:
        assert transport.send(nurture_message()).sent
        now[0] += 10
        assert transport.send(nurture_message()).sent
        assert sink.handler.noops == 0
        now[0] += 31
        assert transport.send(nurture_message()).sent
        assert sink.handler.noops == 1
    finally:
        transport.close()
    assert sink.connections == 1


@pytest.mark.parametrize(("to", "outcome", "code", "throttled"), [
    ("lead@example.com", Outcome.SENT, 250, False),
    ("later@example.com", Outcome.TEMPORARY, 451, False),
    ("slowdown@example.com", Outcome.TEMPORARY, 451, True),
    ("busy@example.com", Outcome.TEMPORARY, 450, True),
    ("gmail-throttle@gmail.example", Outcome.TEMPORARY, 421, True),
    ("bounce@example.com", Outcome.PERMANENT, 550, False),
])
def test_replies_are_classified(sink, to, outcome, code, throttled):
    with sink.transport() as transport:
        result = transport.send(nurture_message(to))
        # whatever happened, the transport is still usable (421 closes the connection)
        assert transport.send(nurture_message("next@example.com")).sent
    assert (result.outcome, result.code, result.throttled) == (outcome, code, throttled)
    [recipient] = result.recipients
    assert (recipient.address, recipient.outcome, recipient.code) == (to, outcome, code)
    assert result.throttled_domains == ({to.split("@")[1]} if throttled else set())
    assert result.stage is (Stage.DATA if outcome is Outcome.SENT else Stage.RCPT)
    assert [r.address for r in result.hard_bounces] == (
        [to] if outcome is Outcome.PERMANENT else [])
    stored_for = [m.rcpt_tos for m in sink.messages()]
    assert stored_for == ([(to,)] if outcome is Outcome.SENT else []) + [("next@example.com",)]


def test_some_recipients_refused(sink):
    message = nurture_message("lead@example.com, bounce@example.com")
    message["Cc"] = "later@example.com"
    with sink.transport() as transport:
        result = transport.send(message)
    assert result.sent and result.partial
    assert {r.address: r.outcome for r in result.refused} == {
        "bounce@example.com": Outcome.PERMANENT, "later@example.com": Outcome.TEMPORARY}
    assert [r.address for r in result.hard_bounces] == ["bounce@example.com"]
    assert [m.rcpt_tos for m in sink.messages()] == [("lead@example.com",)]


def test_all_recipients_refused_permanently(sink):
    message = nurture_message("bounce@example.com, bounce@other.example")
    with sink.transport() as transport:
        result = transport.send(message)
    assert result.permanent and result.code == 550 and len(result.recipients) == 2
    assert sink.messages() == []


def test_refused_connection_is_temporary():
    transport = SMTPTransport("127.0.0.1", free_port(), timeout=2)
    result = transport.send(nurture_message())
    assert result.temporary and result.code is None and not result.throttled
    assert result.stage is Stage.CONNECT and "ConnectionRefused" in result.text
    assert [r.outcome for r in result.recipients] == [Outcome.TEMPORARY]
    transport.close()


def test_sink_stopping_mid_run_then_restarting(sink):
    with sink.transport(timeout=5) as transport:
        assert transport.send(nurture_message("one@example.com")).sent
        sink.stop()
        down = transport.send(nurture_message("two@example.com"))
        assert down.temporary and down.code is None
        sink.start()
        assert transport.send(nurture_message("three@example.com")).sent
        assert transport.connections_opened == 2
    assert [m.rcpt_tos[0] for m in sink.messages()] == ["one@example.com", "three@example.com"]


def test_stale_connection_is_replaced_without_a_failure(sink):
    """The server dropped the idle connection (here: restarted); nothing was handed over yet,
    so the message goes out on a fresh connection instead of failing."""
    with sink.transport(timeout=5) as transport:
        assert transport.send(nurture_message("one@example.com")).sent
        sink.stop()
        sink.start()
        assert transport.send(nurture_message("two@example.com")).sent
        assert transport.connections_opened == 2
    assert len(sink.messages()) == 2


def test_envelope_comes_from_return_path_and_bcc_is_not_shown(sink):
    message = nurture_message("lead@example.com")
    message["Return-Path"] = "<bounces+42@acme.example>"
    message["Bcc"] = "audit@acme.example"
    assert envelope(message) == ("bounces+42@acme.example",
                                 ["lead@example.com", "audit@acme.example"])
    with sink.transport() as transport:
        assert transport.send(message).sent
    [stored] = sink.messages()
    assert stored.mail_from == "bounces+42@acme.example"
    assert stored.rcpt_tos == ("lead@example.com", "audit@acme.example")
    body = stored_bytes(sink, stored)
    assert b"audit@acme.example" not in body and b"Return-Path: <bounces+42@" in body
    assert message["Bcc"] == "audit@acme.example"  # the caller's message is left alone


def test_programming_errors_raise(sink):
    message = nurture_message()
    del message["To"]
    with sink.transport() as transport, pytest.raises(ValueError, match="no recipients"):
        transport.send(message)
    message = nurture_message()
    del message["From"]
    with pytest.raises(ValueError, match="From"):
        envelope(message)


def test_smtp_url_forms():
    t = SMTPTransport.from_url("smtp://us%40er:p%3Ass@mail.example.com:587?starttls=1&timeout=5")
    assert (t.host, t.port, t.starttls, t.use_ssl) == ("mail.example.com", 587, True, False)
    assert (t.username, t.password, t.timeout) == ("us@er", "p:ss", 5.0)
    t = SMTPTransport.from_url("smtps://relay.example.com")
    assert (t.port, t.use_ssl, t.starttls, t.username) == (465, True, False, None)
    t = SMTPTransport.from_url("smtp://relay.example.com")
    assert (t.port, t.use_ssl, t.starttls) == (25, False, False)
    with pytest.raises(ValueError):
        SMTPTransport.from_url("http://relay.example.com")


def test_transport_from_settings_defaults_to_the_local_sink(tmp_path, sink):
    settings = Settings.from_env({"NURTURE_INSTANCE": str(tmp_path), "SECRET_KEY": "s",
                                  "NURTURE_SINK_PORT": str(sink.port)})
    assert settings.smtp_url is None and settings.sink_dir == tmp_path / "sink"
    transport = transport_from_settings(settings)
    assert isinstance(transport, Transport)
    assert (transport.host, transport.port) == ("127.0.0.1", sink.port)
    assert transport.send(nurture_message()).sent
    transport.close()
    assert len(sink.messages()) == 1

    settings = Settings.from_env({"NURTURE_INSTANCE": str(tmp_path), "SECRET_KEY": "s",
                                  "SMTP_URL": "smtp://u:p@mail.example.com:2525"})
    transport = transport_from_settings(settings)
    assert (transport.host, transport.port, transport.username) == ("mail.example.com", 2525,
                                                                     "u")


def test_send_result_summaries():
    result = SendResult.from_reply(None, "timed out", ["a@x.example"])
    assert result.temporary and not result.throttled and result.refused == result.recipients


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def _contexts(certificate) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_starttls_and_auth(tmp_path, certificate):
    server_tls, client_tls = _contexts(certificate)
    with Sink(tmp_path / "sink", tls=server_tls, users={"nurture": "s3cret"}) as sink:
        url = f"smtp://nurture:s3cret@127.0.0.1:{sink.port}?starttls=1&timeout=5"
        with SMTPTransport.from_url(url, ssl_context=client_tls) as transport:
            assert transport.send(nurture_message()).sent
        # wrong password: our configuration is at fault, not the lead's address
        bad = url.replace("s3cret", "wrong")
        with SMTPTransport.from_url(bad, ssl_context=client_tls) as transport:
            result = transport.send(nurture_message())
        assert (result.outcome, result.code, result.stage) == (Outcome.TEMPORARY, 535,
                                                               Stage.CONNECT)
        # a server that demands TLS and AUTH refuses a plain, anonymous client
        with sink.transport(timeout=5) as transport:
            result = transport.send(nurture_message())
        assert (result.outcome, result.code, result.stage) == (Outcome.PERMANENT, 530,
                                                               Stage.MAIL)
        assert result.hard_bounces == ()  # our sender was refused, not the lead's address
        # an untrusted certificate is a connection failure, not a send
        with SMTPTransport.from_url(url) as transport:
            result = transport.send(nurture_message())
        assert result.temporary and "CERTIFICATE_VERIFY_FAILED" in result.text
    assert len(list_messages(tmp_path / "sink")) == 1


def test_implicit_tls(tmp_path, certificate):
    server_tls, client_tls = _contexts(certificate)
    with Sink(tmp_path / "sink", tls=server_tls, implicit_tls=True) as sink:
        with SMTPTransport.from_url(f"smtps://127.0.0.1:{sink.port}",
                                    ssl_context=client_tls) as transport:
            assert transport.send(nurture_message()).sent
            assert transport.send(nurture_message()).sent
        assert sink.connections == 1
    assert len(list_messages(tmp_path / "sink")) == 2
