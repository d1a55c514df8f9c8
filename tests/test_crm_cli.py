"""`nurture crm ...` as an operator uses it: the sync health view, delivering now, the dead
letters, the reference receiver; and the scheduler's `crm` job delivering in the background.
Every error names what is wrong."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime

import pytest
from redis import exceptions as redis_errors
from rq import Queue
from rq_worker import SimpleWorker
from sqlalchemy import select

from engine.config import Settings, redis_connection
from engine.crm.models import CrmOutboxItem
from engine.crm.receiver import Answers, Receiver
from engine.leads.service import set_stage, write_lead
from worker import jobs, queues
from worker.scheduler import tick

SECRET = "crm-cli-secret"
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def leads(db, env) -> list[int]:
    """Two leads: ada (created, then engaged), bo (created): three items."""
    with db.session() as s:
        ada = write_lead(session=s, fields={"email": "ada@globex.example"}, now=MONDAY,
                         actor="test").lead
        set_stage(session=s, lead=ada, stage="engaged", reason="met at a booth", actor="test",
                  now=MONDAY)
        bo = write_lead(session=s, fields={"email": "bo@initech.example"}, now=MONDAY,
                        actor="test").lead
        return [ada.id, bo.id]


@pytest.fixture
def receiver(tmp_path):
    with Receiver(tmp_path / "crm", secret=SECRET) as server:
        yield server


@pytest.fixture
def configured(monkeypatch, receiver):
    monkeypatch.setenv("NURTURE_CRM_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("NURTURE_CRM_WEBHOOK_SECRET", SECRET)
    return receiver


def statuses(db) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(CrmOutboxItem.status).order_by(CrmOutboxItem.id)))


def test_status_says_why_nothing_is_sent_without_a_webhook_url(cli, leads):
    result = cli("crm", "status")
    assert result.exit_code == 0
    assert result.output.splitlines()[:2] == [
        "not delivering: NURTURE_CRM_WEBHOOK_URL is not set: CRM items stay pending until it is",
        "pending   3"]
    assert "oldest not delivered: 2026-11-02T08:00:00+00:00" in result.output
    health = json.loads(cli("crm", "status", "--json").output)
    assert (health["configured"], health["pending"], health["sent"]) == (False, 3, 0)


@pytest.mark.parametrize("unset", ["NURTURE_CRM_WEBHOOK_URL", "NURTURE_CRM_WEBHOOK_SECRET"])
def test_deliver_refuses_naming_the_setting_missing(cli, db, leads, configured, monkeypatch,
                                                    unset):
    monkeypatch.delenv(unset)
    result = cli("crm", "deliver")
    assert result.exit_code == 1
    assert f"Error: {unset} is not set" in result.output
    assert statuses(db) == ["pending"] * 3 and configured.received() == []


def test_deliver_sends_everything_due_and_status_shows_the_health(cli, db, leads, configured):
    result = cli("crm", "deliver")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "3 sent (of 3 waiting, 2 due at the start)"
    assert [e.event_type for e in configured.received()] == ["lead_created", "lead_created",
                                                             "stage_change"]
    health = json.loads(cli("crm", "status", "--json").output)
    assert (health["configured"], health["pending"], health["sent"], health["dead"]) == (
        True, 0, 3, 0)
    assert health["last_success"] is not None and health["oldest_undelivered"] is None
    text = cli("crm", "status").output
    assert text.startswith(f"delivering to {configured.url}\n")
    assert "sent      3" in text and "oldest not delivered: none" in text


def test_dead_letters_are_listed_replayed_and_explained(cli, db, leads, configured):
    configured.answers = Answers(script=[422, 200])
    assert cli("crm", "deliver").exit_code == 0
    assert statuses(db) == ["dead", "pending", "sent"]
    health = json.loads(cli("crm", "status", "--json").output)
    assert (health["dead"], health["dead_by_error"], health["held_by_dead_letters"]) == (
        1, {"http_4xx": 1}, 1)
    assert "1 later item(s) of their leads wait for them" in cli("crm", "status").output
    [dead] = json.loads(cli("crm", "dead-letter", "list", "--json").output)
    assert (dead["id"], dead["email"], dead["type"], dead["error_kind"]) == (
        1, "ada@globex.example", "lead_created", "http_4xx")
    assert dead["last_error"].startswith("not retried: HTTP 422")
    table = cli("crm", "dead-letter", "list").output
    assert "ada@globex.example" in table and "http_4xx" in table

    assert cli("crm", "dead-letter", "replay", "99").output == "error: no CRM item 99\n"
    refused = cli("crm", "dead-letter", "replay", "3")
    assert refused.exit_code == 1
    assert refused.output.startswith("error: CRM item 3 is sent, not dead-lettered")
    both = cli("crm", "dead-letter", "replay")
    assert both.exit_code == 2 and "give one dead letter's ID or --all" in both.output
    replayed = cli("crm", "dead-letter", "replay", "1")
    assert replayed.output == "CRM item 1 (lead_created of ada@globex.example) back in line\n"
    assert cli("crm", "deliver").output.startswith("2 sent")
    assert statuses(db) == ["sent", "sent", "sent"]
    assert cli("crm", "dead-letter", "list").output == "no dead letter\n"
    assert cli("crm", "dead-letter", "replay", "--all").output == "0 dead letter(s) back in line\n"


def test_skipping_a_dead_letter_needs_a_reason_and_lets_the_rest_go(cli, db, leads, configured):
    configured.answers = Answers(script=[400])
    cli("crm", "deliver")
    result = cli("crm", "dead-letter", "skip", "1", "--reason", "test lead", "--by", "maria")
    assert result.output == "CRM item 1 (lead_created of ada@globex.example) skipped\n"
    cli("crm", "deliver")
    assert statuses(db) == ["skipped", "sent", "sent"]


def test_deliver_with_the_receiver_down_fails_saying_the_items_wait(cli, db, leads, configured):
    configured.stop()
    result = cli("crm", "deliver")
    assert result.exit_code == 1
    assert f"Error: the CRM webhook {configured.url} did not answer" in result.output
    assert statuses(db) == ["pending"] * 3
    health = json.loads(cli("crm", "status", "--json").output)
    assert (health["retrying"], health["retrying_by_error"]) == (1, {"connection": 1})


def test_received_lists_what_the_receiver_stored(cli, db, leads, configured, tmp_path):
    cli("crm", "deliver")
    listing = cli("crm", "received", "--dir", configured.directory)
    assert "inquiry -> engaged" in listing.output and "bo@initech.example" in listing.output
    stored = json.loads(cli("crm", "received", "--dir", configured.directory, "--type",
                            "stage_change", "--json").output)
    assert [(r["event_type"], r["verified"]) for r in stored] == [("stage_change", True)]
    assert cli("crm", "received", "--dir", tmp_path / "none").output == "nothing received\n"


def test_the_receiver_refuses_a_bad_status_naming_it(cli):
    result = cli("crm", "receiver", "--status", "600")
    assert result.exit_code == 2
    assert "expected an HTTP status from 200 to 599, 'hang' or 'close', not '600'" in \
        result.output


# -- the scheduler's job -------------------------------------------------------------------------

@pytest.fixture
def redis(env, tmp_path, ci_redis_url, monkeypatch):
    if os.environ.get("CI") == "true":
        url = ci_redis_url
    else:
        server = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "r"),
                                                     "SECRET_KEY": "x"}))
        url = f"unix://{server.socket_file}"
    monkeypatch.setenv("REDIS_URL", url)
    client = redis_connection(Settings.from_env())
    client.flushdb()
    jobs._database.cache_clear()
    yield client
    client.flushdb()
    jobs._database().dispose()
    jobs._database.cache_clear()
    if os.environ.get("CI") != "true":
        with contextlib.suppress(redis_errors.ConnectionError):
            server.shutdown(nosave=True)


def test_the_scheduler_queues_one_crm_job_which_delivers(db, leads, redis, monkeypatch,
                                                         receiver):
    assert tick(db=db, redis=redis)["crm_job_queued"] is False  # not configured
    monkeypatch.setenv("NURTURE_CRM_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("NURTURE_CRM_WEBHOOK_SECRET", SECRET)
    assert tick(db=db, redis=redis)["crm_job_queued"] is True
    assert tick(db=db, redis=redis)["crm_job_queued"] is False  # one is waiting already
    queue = Queue(queues.CRM, connection=redis)
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert statuses(db) == ["sent"] * 3
    assert len(receiver.received(accepted_only=True)) == 3
    assert tick(db=db, redis=redis)["crm_job_queued"] is False  # nothing due


@pytest.mark.parametrize("name, value, says", [
    ("NURTURE_CRM_MAX_ATTEMPTS", "many", "NURTURE_CRM_MAX_ATTEMPTS='many' is not a whole number"),
    ("NURTURE_CRM_TIMEOUT_SECONDS", "0", "NURTURE_CRM_TIMEOUT_SECONDS='0' must be more than 0"),
    ("NURTURE_CRM_TIMEOUT_SECONDS", "200",
     "the CRM claim lease (300 s) must be over twice the webhook timeout (200 s)")])
def test_a_bad_crm_setting_is_named(cli, leads, configured, monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    result = cli("crm", "deliver")
    assert result.exit_code == 1 and result.output.startswith(f"error: {says}")
