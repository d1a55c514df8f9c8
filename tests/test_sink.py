"""The local SMTP sink: storage, concurrency, restarts, and the `nurture sink` and
`nurture inbox` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from smtp_sink import REPLIES, nurture_message

from engine.cli import main
from engine.sending.inbox import find_message, list_messages, read_message, text_part
from engine.sending.sink import MessageStore, Sink, free_port, parse_reply_rule
from engine.sending.smtp import SMTPTransport

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture
def sink(tmp_path):
    """A real sink on a free port, answering REPLIES for their recipients, storing the rest."""
    with Sink(tmp_path / "sink", replies=REPLIES) as server:
        yield server



@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run `nurture ...` in-process with a private instance directory."""
    monkeypatch.setenv("NURTURE_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("SECRET_KEY", "test-secret")
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def send_all(server: Sink, messages) -> None:
    with server.transport() as transport:
        for message in messages:
            assert transport.send(message).sent


def test_concurrent_senders_are_all_stored_exactly_once(sink):
    sent: list[str] = []
    failures: list[object] = []

    def sender(worker: int) -> None:
        with sink.transport() as transport:
            for i in range(50):
                message = nurture_message(f"w{worker}-{i}@example.com", body_size=2_000)
                result = transport.send(message)
                if result.sent:
                    sent.append(message["Message-ID"])
                else:
                    failures.append(result)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == [] and len(sent) == 200
    stored = sink.messages()
    assert sorted(m.message_id for m in stored) == sorted(sent)
    assert [m.seq for m in stored] == list(range(1, 201))
    files = sorted(p.name for p in sink.directory.glob("*.eml"))
    assert files == sorted(m.file for m in stored)
    assert not list(sink.directory.glob(".*.tmp"))
    assert sink.connections == 4


def test_numbering_continues_after_a_restart(tmp_path):
    directory = tmp_path / "sink"
    with Sink(directory) as first:
        send_all(first, [nurture_message("a@example.com"), nurture_message("b@example.com")])
    with Sink(directory) as second:
        send_all(second, [nurture_message("c@example.com")])
    assert [(m.seq, m.rcpt_tos[0]) for m in list_messages(directory)] == [
        (1, "a@example.com"), (2, "b@example.com"), (3, "c@example.com")]


def test_a_torn_index_line_is_skipped(tmp_path):
    store = MessageStore(tmp_path)
    store.add(mail_from="a@x.example", rcpt_tos=["b@x.example"],
              content=b"Subject: hi\r\n\r\nbody\r\n")
    with open(tmp_path / "index.jsonl", "a") as index:
        index.write('{"seq": 2, "file": "0000')
    assert [m.subject for m in list_messages(tmp_path)] == ["hi"]


def test_find_by_number_or_message_id(sink):
    first, second = nurture_message("a@example.com"), nurture_message("b@example.com")
    send_all(sink, [first, second])
    assert find_message(sink.directory, 2).rcpt_tos == ("b@example.com",)
    assert find_message(sink.directory, first["Message-ID"]).seq == 1
    assert find_message(sink.directory, first["Message-ID"].strip("<>")).seq == 1
    stored = read_message(sink.directory, find_message(sink.directory, "1"))
    assert "Hallo Jürgen" in text_part(stored)
    assert stored["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_reply_rules():
    assert parse_reply_rule("Bounce@=550 5.1.1 No such user") == (
        "bounce@", "550 5.1.1 No such user")
    for bad in ("bounce@", "bounce=550", "bounce@=250x", "bounce@=650 no"):
        with pytest.raises(ValueError):
            parse_reply_rule(bad)


def test_inbox_lists_newest_last(sink, run):
    send_all(sink, [nurture_message("a@example.com", "First"),
                    nurture_message("b@example.com", "Second — ü"),
                    nurture_message("a@example.com", "Third")])
    result = run("inbox", "--dir", sink.directory)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "b@example.com  Second — ü" in lines[1]

    result = run("inbox", "--dir", sink.directory, "--to", "A@example.com", "--limit", "1")
    assert [line.split()[0] for line in result.output.splitlines()] == ["3"]
    assert result.output.rstrip().endswith("Third")

    result = run("inbox", "--dir", sink.directory, "--json")
    data = json.loads(result.output)
    assert [d["subject"] for d in data] == ["First", "Second — ü", "Third"]
    assert data[0]["rcpt_tos"] == ["a@example.com"] and data[0]["message_id"].startswith("<")
    assert set(data[0]) >= {"seq", "received_at", "size", "file", "mail_from"}


def test_inbox_defaults_to_the_instance_sink(tmp_path, run):
    directory = tmp_path / "instance" / "sink"
    with Sink(directory) as running:
        send_all(running, [nurture_message("a@example.com", "Hello")])
    result = run("inbox")
    assert result.exit_code == 0 and "a@example.com  Hello" in result.output


def test_inbox_show(sink, run):
    message = nurture_message("a@example.com", "Guide")
    send_all(sink, [message])
    for key in ("1", message["Message-ID"]):
        result = run("inbox", "--dir", sink.directory, "show", key)
        assert result.exit_code == 0, result.output
        assert "Subject: Guide" in result.output
        assert "List-Unsubscribe: <https://acme.example/u/T0KEN>" in result.output
        assert "Hallo Jürgen" in result.output and "<html>" not in result.output
    result = run("inbox", "--dir", sink.directory, "show", "1", "--raw")
    assert result.output.startswith("Return-Path: <news@acme.example>")
    result = run("inbox", "--dir", sink.directory, "show", "7")
    assert result.exit_code == 1 and "no stored message '7'" in result.output


@pytest.mark.parametrize("subtype", ["plain", "html"])
def test_inbox_show_prints_the_body_with_its_line_ends_as_newlines(sink, run, subtype):
    message = EmailMessage(policy=policy.default)
    message["From"], message["To"], message["Subject"] = "news@acme.example", "a@example.com", "Hi"
    message.set_content("Hallo Jürgen,\n\nhere is the guide.\n", subtype=subtype)
    send_all(sink, [message])  # SMTP carries every line with CR LF
    result = run("inbox", "--dir", sink.directory, "show", "1")
    assert result.exit_code == 0, result.output
    assert "\nHallo Jürgen,\n\nhere is the guide.\n" in result.output
    assert "\\x0d" not in result.output


def start_sink_command(tmp_path, port: int, *args) -> subprocess.Popen:
    """`nurture sink` in a process of its own; returns once it listens."""
    env = {**os.environ, "NURTURE_INSTANCE": str(tmp_path / "instance"), "SECRET_KEY": "x"}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "sink", "--port", str(port), "--dir",
         str(tmp_path / "box"), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_line = process.stdout.readline()
    assert f"listening on smtp://127.0.0.1:{port}" in first_line
    assert str(tmp_path / "box") in first_line
    return process


def interrupt(process: subprocess.Popen) -> str:
    """Ctrl-C; returns what it wrote on stderr."""
    try:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return err


def test_sink_command_runs_until_interrupted(tmp_path):
    port = free_port()
    process = start_sink_command(tmp_path, port, "--reply", "bounce@=550 5.1.1 No such user")
    with SMTPTransport("127.0.0.1", port, timeout=5) as transport:
        assert transport.send(nurture_message("a@example.com")).sent
        assert transport.send(nurture_message("bounce@example.com")).permanent
    assert "1 message(s) received" in interrupt(process)
    assert len(list_messages(tmp_path / "box")) == 1


def test_sink_command_answers_4xx_while_it_cannot_store_and_says_so(tmp_path):
    port = free_port()
    process = start_sink_command(tmp_path, port)
    box = tmp_path / "box"
    with SMTPTransport("127.0.0.1", port, timeout=5) as transport:
        assert transport.send(nurture_message("a@example.com")).sent
        box.rename(tmp_path / "away")
        box.write_text("")  # the directory is gone: ENOTDIR
        refused = transport.send(nurture_message("b@example.com"))
        assert (refused.code, refused.text) == (451, "4.3.0 Local error in processing")
    err = interrupt(process)
    assert "not stored (sender will retry)" in err and "Not a directory" in err
    assert "1 message(s) received, 1 answered 4xx (not stored, the sender retries)" in err


def test_sink_command_reports_a_busy_port(sink, run):
    result = run("sink", "--port", sink.port, "--dir", sink.directory)
    assert result.exit_code == 1 and "cannot listen" in result.output


def test_sink_command_refuses_a_directory_it_cannot_store_in(tmp_path, run):
    (tmp_path / "a-file").write_text("")
    result = run("sink", "--port", free_port(), "--dir", tmp_path / "a-file" / "sink")
    assert result.exit_code == 1, result.output
    assert f"cannot store messages in {tmp_path / 'a-file' / 'sink'}: Not a directory" in (
        result.output)
