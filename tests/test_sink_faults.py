"""The local sink when its storage fails: a temporary reply (451/452, never a 5xx), nothing half
stored visible to readers, and the sender's retry stored exactly once, through the real SMTP
transport and through the engine's delivery.

Failures are real system calls failing under the sink's directory (tests/smtp_sink.SinkDisk),
a directory that is not there, and, where user namespaces allow it, a real full tmpfs.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from smtp_sink import SinkDisk, nurture_message
from sqlalchemy import select
from test_delivery import MONDAY, Clock, add, program  # noqa: F401 - program is a fixture

from engine.sending.delivery import deliver_due
from engine.sending.inbox import INDEX_NAME, list_messages
from engine.sending.models import OutboxMessage
from engine.sending.sink import MessageStore, Sink, free_port
from engine.sending.smtp import SMTPTransport
from engine.sending.transport import Stage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink") as server:
        yield server


@pytest.fixture
def disk(sink, monkeypatch):
    return SinkDisk(monkeypatch, sink.directory)


@pytest.fixture
def transport(sink):
    with sink.transport(timeout=10) as transport:
        yield transport


def files(directory: Path) -> list[str]:
    """Every file in the sink's directory but the index, hidden ones included."""
    return sorted(p.name for p in directory.iterdir() if p.name != INDEX_NAME)


def assert_stored_once_each(sink: Sink, message_ids: list[str]) -> None:
    stored = sink.messages()
    assert sorted(m.message_id for m in stored) == sorted(message_ids)
    assert files(sink.directory) == sorted(m.file for m in stored)  # no orphan, no temp file
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))


def test_a_full_disk_is_answered_452_and_the_retry_is_stored_once(sink, disk, transport):
    message = nurture_message("ada@example.com")
    disk.fill()
    result = transport.send(message)
    assert result.temporary and result.stage is Stage.DATA and not result.hard_bounces
    assert (result.code, result.text) == (452, "4.3.1 Insufficient system storage")
    assert sink.messages() == [] and files(sink.directory) == []
    assert sink.handler.deferred == 1 and sink.handler.received == 0

    disk.free()
    assert transport.send(message).sent  # the same connection: the refused DATA left no state
    assert transport.connections_opened == 1
    assert_stored_once_each(sink, [message["Message-ID"]])


def test_a_disk_that_fills_in_the_middle_of_a_message_leaves_no_part_of_it(sink, disk, transport):
    first = nurture_message("a@example.com")
    assert transport.send(first).sent
    index_before = (sink.directory / INDEX_NAME).read_bytes()
    second = nurture_message("b@example.com", body_size=50_000)
    disk.fill(room=20_000)  # a short write, then ENOSPC
    assert transport.send(second).code == 452
    assert (sink.directory / INDEX_NAME).read_bytes() == index_before
    disk.free()
    assert transport.send(second).sent
    assert_stored_once_each(sink, [first["Message-ID"], second["Message-ID"]])


def test_a_message_whose_index_line_does_not_fit_is_removed_again(sink, disk, transport):
    first, second = nurture_message("a@example.com"), nurture_message("b@example.com")
    assert transport.send(first).sent
    index_before = (sink.directory / INDEX_NAME).read_bytes()
    stored_size = (sink.directory / sink.messages()[0].file).stat().st_size
    disk.fill(room=stored_size + 40)  # the .eml fits, its index line is cut short
    assert transport.send(second).code == 452
    assert (sink.directory / INDEX_NAME).read_bytes() == index_before  # the torn line is cut off
    assert len(files(sink.directory)) == 1
    disk.free()
    assert transport.send(second).sent
    assert_stored_once_each(sink, [first["Message-ID"], second["Message-ID"]])


@pytest.mark.parametrize(("op", "code", "reply"), [
    ("write", errno.EDQUOT, "452 4.3.1 Insufficient system storage"),
    ("write", errno.EIO, "451 4.3.0 Local error in processing"),
    ("open", errno.EACCES, "451 4.3.0 Local error in processing"),
    ("open", errno.ENOSPC, "452 4.3.1 Insufficient system storage"),  # no inode left
])
def test_each_storage_error_has_a_temporary_reply(sink, disk, transport, op, code, reply):
    message = nurture_message("ada@example.com")
    disk.fail(op, code=code)
    result = transport.send(message)
    assert f"{result.code} {result.text}" == reply and result.temporary
    assert transport.send(message).sent
    assert_stored_once_each(sink, [message["Message-ID"]])


@pytest.mark.parametrize("synced", [0, 1, 2])
def test_no_250_before_the_file_the_directory_and_the_index_are_synced(sink, disk, transport,
                                                                        synced):
    assert transport.send(nurture_message("first@example.com")).sent
    message = nurture_message("ada@example.com")
    disk.fail("fsync", after=synced)  # the .eml, the directory after the rename, the index
    result = transport.send(message)
    assert (result.code, result.temporary) == (451, True)
    assert [m.rcpt_tos for m in sink.messages()] == [("first@example.com",)]
    assert transport.send(message).sent
    assert len(sink.messages(to="ada@example.com")) == 1
    assert files(sink.directory) == sorted(m.file for m in sink.messages())


def test_when_the_torn_index_line_cannot_be_cut_the_file_stays_and_later_lines_read(tmp_path,
                                                                                   monkeypatch):
    store = MessageStore(tmp_path)
    store.add(mail_from="a@x.example", rcpt_tos=["a@x.example"], content=b"Subject: one\r\n\r\n")
    size = (tmp_path / store_files(tmp_path)[0]).stat().st_size
    disk = SinkDisk(monkeypatch, tmp_path)
    disk.fill(room=size + 30)
    disk.fail("ftruncate")
    with pytest.raises(OSError) as raised:
        store.add(mail_from="a@x.example", rcpt_tos=["b@x.example"],
                  content=b"Subject: two\r\n\r\n")
    assert raised.value.errno == errno.ENOSPC
    assert len(store_files(tmp_path)) == 2  # kept: no index entry may name a missing file
    disk.free()
    store.add(mail_from="a@x.example", rcpt_tos=["c@x.example"], content=b"Subject: three\r\n\r\n")
    stored = list_messages(tmp_path)
    assert [(m.seq, m.subject) for m in stored] == [(1, "one"), (3, "three")]
    assert all((tmp_path / m.file).exists() for m in stored)


def store_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.eml"))


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_message(tmp_path):
    MessageStore(tmp_path).add(mail_from="a@x.example", rcpt_tos=["a@x.example"],
                               content=b"Subject: one\r\n\r\n")
    with open(tmp_path / INDEX_NAME, "a") as index:
        index.write('{"seq": 2, "file": "0000')  # the crash
    (tmp_path / ".000002-deadbeef.eml.tmp").write_bytes(b"half a mess")
    restarted = MessageStore(tmp_path)
    restarted.add(mail_from="a@x.example", rcpt_tos=["b@x.example"],
                  content=b"Subject: two\r\n\r\n")
    assert [(m.seq, m.subject) for m in list_messages(tmp_path)] == [(1, "one"), (2, "two")]
    assert not list(tmp_path.glob(".*.tmp"))  # the crash's temporary file is gone


def test_a_missing_directory_is_answered_451_and_mail_is_stored_once_it_is_back(sink,
                                                                                 transport):
    message = nurture_message("ada@example.com")
    away = sink.directory.with_name("away")
    sink.directory.rename(away)
    sink.directory.write_text("not a directory")  # ENOTDIR for every file in it
    result = transport.send(message)
    assert (result.code, result.temporary) == (451, True)
    sink.directory.unlink()
    away.rename(sink.directory)
    assert transport.send(message).sent
    assert_stored_once_each(sink, [message["Message-ID"]])


def test_a_bug_while_storing_is_a_temporary_failure_not_a_5xx(sink, transport, monkeypatch,
                                                              caplog):
    def broken(self):
        raise TypeError("a bug")

    message = nurture_message("ada@example.com")
    monkeypatch.setattr("engine.sending.inbox.StoredMessage.to_json", broken)
    result = transport.send(message)
    assert (result.code, result.text) == (451, "4.3.0 Local error in processing")
    assert "a bug" in caplog.text  # logged loudly, with its traceback
    assert files(sink.directory) == []
    monkeypatch.undo()
    assert transport.send(message).sent
    assert_stored_once_each(sink, [message["Message-ID"]])


def test_an_error_in_any_other_command_is_not_a_5xx(sink, transport, monkeypatch):
    def broken(address):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sink.handler, "reply_for", broken)
    result = transport.send(nurture_message("ada@example.com"))
    assert (result.code, result.temporary, result.hard_bounces) == (451, True, ())


# -- through the engine -------------------------------------------------------------------------

def test_rows_delivered_while_the_disk_is_full_are_sent_exactly_once(db, program, sink, disk,  # noqa: F811
                                                                       transport):
    for i in range(6):
        add(db, f"lead{i}@globex.example", first_name=f"L{i}")
    clock = Clock(MONDAY + timedelta(seconds=5))
    disk.fill(room=8_000)  # room for one or two messages, then full
    outcomes = []
    for round_ in range(40):
        if round_ == 3:
            disk.free()
        outcomes.append(deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts)
        with db.session() as s:
            rows = s.scalars(select(OutboxMessage)).all()
            if all(r.status == "sent" for r in rows):
                break
            clock.now = max(clock.now + timedelta(seconds=1),
                            min(r.due_at for r in rows if r.status != "sent"))
    assert {r.status for r in rows} == {"sent"}, [(r.status, r.last_error) for r in rows]
    assert sum(c["failed_temp"] for c in outcomes) >= 6 and disk.refused
    assert not any(c["failed_perm"] for c in outcomes)
    assert_stored_once_each(sink, [r.message_id for r in rows])


# -- a real full disk -------------------------------------------------------------------------

_TMPFS_SINK = """
import json, os, subprocess, sys
directory, port = sys.argv[1], int(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", directory], check=True)
from engine.sending.inbox import list_messages
from engine.sending.sink import Sink
filler = os.path.join(directory, "filler")
with Sink(directory, port=port) as sink:
    print("ready", flush=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "fill":
            with open(filler, "wb", buffering=0) as handle:
                for chunk in (65536, 4096, 512, 1):
                    try:
                        while True:
                            handle.write(b"x" * chunk)
                    except OSError:
                        pass
        elif command == "free":
            os.remove(filler)
        elif command == "list":
            names = sorted(n for n in os.listdir(directory) if n not in ("index.jsonl", "filler"))
            print(json.dumps({"ids": [m.message_id for m in list_messages(directory)],
                              "files": names}), flush=True)
            continue
        print("ok", flush=True)
"""


@pytest.fixture
def tmpfs_sink(tmp_path):
    """`nurture sink`'s Sink on a 256 KiB tmpfs of its own (in a user and mount namespace)."""
    directory = tmp_path / "tmpfs"
    directory.mkdir()
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "-rm", "mount", "-t", "tmpfs", "tmpfs", str(directory)],
                           check=False, capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no unprivileged user namespaces here to mount a small tmpfs")
    port = free_port()
    process = subprocess.Popen([unshare, "-rm", sys.executable, "-c", _TMPFS_SINK,
                                str(directory), str(port)], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def command(text: str) -> str:
        process.stdin.write(text + "\n")
        process.stdin.flush()
        return process.stdout.readline().strip()

    try:
        assert process.stdout.readline().strip() == "ready"
        yield port, command
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_a_really_full_disk_defers_mail_until_space_is_back(tmpfs_sink):
    port, command = tmpfs_sink
    first, second = nurture_message("a@example.com"), nurture_message("b@example.com")
    with SMTPTransport("127.0.0.1", port, timeout=10) as transport:
        assert transport.send(first).sent
        assert command("fill") == "ok"
        result = transport.send(second)
        assert (result.code, result.text, result.temporary) == (
            452, "4.3.1 Insufficient system storage", True)
        assert command("free") == "ok"
        assert transport.send(second).sent
    stored = json.loads(command("list"))
    assert sorted(stored["ids"]) == sorted([first["Message-ID"], second["Message-ID"]])
    assert len(stored["files"]) == 2 and not any(n.endswith(".tmp") for n in stored["files"])
