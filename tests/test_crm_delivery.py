"""The CRM outbox delivered as signed webhooks to a real HTTP server (the reference receiver):
in order per lead, retried with backoff, dead-lettered when refused, never lost, and posted
again only with the same Idempotency-Key. The clock is injected; no test sleeps for long."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from engine.crm.delivery import (
    CrmWebhook,
    claim_due,
    deliver_all,
    deliver_batch,
    mark_sent,
    start_attempt,
)
from engine.crm.events import encode, event_body
from engine.crm.models import CrmOutboxItem, CrmStatus
from engine.crm.receiver import CLOSE, HANG, Answers, Receiver
from engine.crm.retry import Backoff
from engine.crm.service import replay, replay_all, skip
from engine.crm.webhook import post, signed_headers
from engine.errors import Invalid
from engine.leads.service import set_stage, write_lead

SECRET = "crm-secret-0123"
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
BACKOFF = Backoff(base=timedelta(seconds=30), cap=timedelta(hours=1))


class Clock:
    def __init__(self, now: datetime = MONDAY) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


class Ceiling(random.Random):
    """Full jitter drawing its ceiling every time: the backoff's wait is its longest."""

    def random(self) -> float:
        return 1.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver(tmp_path):
    with Receiver(tmp_path / "crm", secret=SECRET) as server:
        yield server


def webhook(receiver: Receiver, **options) -> CrmWebhook:
    return CrmWebhook(url=receiver.url, secret=SECRET, backoff=BACKOFF, rng=Ceiling(),
                      **{"timeout": 2.0, **options})


def new_lead(db, email: str, *stages: str) -> int:
    """A lead (its lead_created item) and a stage change item per stage."""
    with db.session() as s:
        lead = write_lead(session=s, fields={"email": email}, now=MONDAY, actor="test").lead
        for stage in stages:
            set_stage(session=s, lead=lead, stage=stage, reason=f"to {stage}", actor="test",
                      now=MONDAY)
        return lead.id


def items(db, lead_id: int | None = None) -> list[CrmOutboxItem]:
    with db.session() as s:
        query = select(CrmOutboxItem).order_by(CrmOutboxItem.id)
        if lead_id is not None:
            query = query.where(CrmOutboxItem.lead_id == lead_id)
        return list(s.scalars(query))


def arrivals(receiver: Receiver) -> dict[int, list[int]]:
    """The sequence numbers each lead's accepted events arrived in."""
    found = defaultdict(list)
    for entry in receiver.received(accepted_only=True):
        found[entry.body["lead"]["id"]].append(entry.body["sequence"])
    return dict(found)


# -- the request ---------------------------------------------------------------------------------

def test_each_item_arrives_signed_with_its_event_id_as_idempotency_key(db, receiver, clock):
    lead_id = new_lead(db, "ada@globex.example", "engaged", "mql")
    report = deliver_all(db=db, webhook=webhook(receiver), worker="w1", clock=clock)
    assert report.counts == {"sent": 3}
    stored = items(db, lead_id)
    got = receiver.received()
    assert [entry.verified for entry in got] == [True] * 3
    assert [entry.idempotency_key for entry in got] == [item.event_id for item in stored]
    assert [entry.event_type for entry in got] == ["lead_created", "stage_change",
                                                   "stage_change"]
    mql = got[2].body
    assert mql == {"id": stored[2].event_id, "type": "stage_change", "sequence": stored[2].id,
                   "occurred_at": MONDAY.isoformat(),
                   "lead": {"id": lead_id, "email": "ada@globex.example", "object": "lead",
                            "crm_id": None},
                   "payload": {"from": "engaged", "to": "mql", "reason": "to mql",
                               "actor": "test", "as": "lead"}}  # an MQL goes as a lead
    assert [(i.status, i.attempts, i.delivered_at) for i in stored] == [
        ("sent", 1, MONDAY)] * 3


def test_a_receiver_with_another_secret_refuses_the_signature_and_it_is_not_retried(
        db, tmp_path, clock):
    new_lead(db, "ada@globex.example")
    with Receiver(tmp_path / "other", secret="not-the-same") as other:
        report = deliver_all(db=db, webhook=webhook(other), worker="w1", clock=clock)
        [entry] = other.received()
    assert report.counts == {"dead": 1}
    assert (entry.answered, entry.verified) == (401, False)
    assert entry.error == "X-Nurture-Signature: signature does not match the body"
    [item] = items(db)
    assert (item.status, item.error_kind, item.attempts) == ("dead", "http_4xx", 1)
    assert item.last_error.startswith("not retried: HTTP 401")


def test_the_signature_is_the_bounce_webhooks_and_a_tampered_body_fails_it(receiver):
    body = encode({"id": "x", "type": "stage_change"})
    headers = signed_headers(secret=SECRET, body=body, event_id="x", event_type="stage_change",
                             attempt=1)
    assert post(receiver.url, body, headers, 2.0).status == 200
    reply = post(receiver.url, body.replace(b"stage", b"STAGE"), headers, 2.0)
    assert reply.status == 401
    assert [e.verified for e in receiver.received()] == [True, False]


# -- order per lead --------------------------------------------------------------------------------

def test_a_leads_later_items_wait_while_an_earlier_one_retries(db, tmp_path, clock):
    first = new_lead(db, "ada@globex.example", "engaged")
    other = new_lead(db, "bo@initech.example", "engaged")
    with Receiver(tmp_path / "crm", secret=SECRET, answers=Answers(script=[503])) as server:
        hook = webhook(server)
        report = deliver_all(db=db, webhook=hook, worker="w1", clock=clock)
        # ada's first item failed; bo's two went; ada's second waits behind her first
        assert report.counts == {"retry": 1, "sent": 2}
        created, engaged = items(db, first)
        assert (created.status, created.attempts, created.error_kind) == ("pending", 1,
                                                                          "http_5xx")
        assert created.next_attempt_at == MONDAY + timedelta(seconds=30)
        assert (engaged.status, engaged.attempts) == ("pending", 0)
        clock.advance(seconds=29)
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {}
        clock.advance(seconds=1)
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {"sent": 2}
        assert arrivals(server) == {other: [3, 4], first: [1, 2]}


def test_two_workers_never_hold_two_items_of_one_lead(db, clock):
    new_lead(db, "ada@globex.example", "engaged", "mql")
    new_lead(db, "bo@initech.example")
    with db.session() as s:
        one = claim_due(session=s, worker="w1", now=MONDAY, limit=10)
    with db.session() as s:
        two = claim_due(session=s, worker="w2", now=MONDAY, limit=10)
    assert (one, two) == ([1, 4], [])


# -- the receiver down for a while ----------------------------------------------------------------

def test_the_receiver_down_for_a_while_loses_nothing_keeps_order_and_backs_off(
        db, tmp_path, clock):
    leads = [new_lead(db, f"lead{n}@globex.example", "engaged", "mql") for n in range(3)]
    server = Receiver(tmp_path / "crm", secret=SECRET)  # not started: connections refused
    hook = webhook(server)
    waits = []
    for _ in range(4):
        report = deliver_all(db=db, webhook=hook, worker="w1", clock=clock)
        # the first due item is tried; the rest of the batch waits with it, charged nothing
        assert report.unreachable and report.counts == {"retry": 1, "held": 2}
        first = items(db)[0]
        assert first.error_kind == "connection" and "cannot reach" in first.last_error
        waits.append(first.next_attempt_at - clock.now)
        held = [i for i in items(db) if i.attempts == 0 and i.id in (4, 7)]
        assert [i.next_attempt_at for i in held] == [first.next_attempt_at] * 2
        clock.now = first.next_attempt_at
    assert waits == [timedelta(seconds=30 * 2 ** n) for n in range(4)]  # exponential
    assert items(db)[0].attempts == 4
    with server:
        report = deliver_all(db=db, webhook=hook, worker="w1", clock=clock)
        assert report.counts == {"sent": 9}
        assert arrivals(server) == {lead: sorted(arrivals(server)[lead]) for lead in leads}
        keys = [entry.idempotency_key for entry in server.received()]
    assert sorted(keys) == sorted(item.event_id for item in items(db))  # each once, all there
    assert {item.status for item in items(db)} == {"sent"}


def test_full_jitter_waits_a_random_time_up_to_the_ceiling_which_is_capped():
    rng = random.Random(7)
    waits = [BACKOFF.wait(attempt, rng) for attempt in range(1, 12)]
    ceilings = [BACKOFF.ceiling(attempt) for attempt in range(1, 12)]
    assert all(timedelta(0) <= wait <= ceiling for wait, ceiling in zip(waits, ceilings))
    assert ceilings[:3] == [timedelta(seconds=30), timedelta(seconds=60),
                            timedelta(seconds=120)]
    assert ceilings[-1] == timedelta(hours=1)
    assert len(set(waits)) == len(waits)


# -- a flaky receiver ----------------------------------------------------------------------------

def test_a_flaky_receiver_gets_every_event_in_order_and_duplicates_only_with_the_same_key(
        db, tmp_path, clock):
    leads = [new_lead(db, f"lead{n}@globex.example", "engaged", "mql") for n in range(4)]
    answers = Answers(script=[200, HANG, 500, CLOSE, 502], fail_rate=0.4, seed=3,
                      fail_status=503, hang_seconds=0.4)
    with Receiver(tmp_path / "crm", secret=SECRET, answers=answers) as server:
        hook = webhook(server, timeout=0.15)
        for _ in range(60):
            deliver_all(db=db, webhook=hook, worker="w1", clock=clock)
            if {item.status for item in items(db)} == {"sent"}:
                break
            clock.advance(hours=1)
        got = server.received()
    stored = items(db)
    assert {item.status for item in stored} == {"sent"}
    accepted = [entry for entry in got if entry.accepted]
    by_key = defaultdict(list)
    for entry in accepted:
        by_key[entry.idempotency_key].append(entry)
    assert set(by_key) == {item.event_id for item in stored}  # nothing lost
    duplicates = [entries for entries in by_key.values() if len(entries) > 1]
    assert duplicates, "the hang made the sender time out on an event the receiver had"
    for entries in duplicates:  # the same event, with the same key and the same body
        assert {e.body["id"] for e in entries} == {entries[0].idempotency_key}
        assert [e.duplicate for e in entries] == [False] + [True] * (len(entries) - 1)
    first_arrivals = defaultdict(list)
    for entry in accepted:
        if not entry.duplicate:
            first_arrivals[entry.body["lead"]["id"]].append(entry.body["sequence"])
    assert all(first_arrivals[lead] == sorted(first_arrivals[lead]) for lead in leads)
    assert any(entry.answered >= 500 for entry in got)


# -- what is retried -------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, retry_after, status, kind, wait", [
    (400, None, "dead", "http_4xx", None),
    (404, None, "dead", "http_4xx", None),
    (302, None, "dead", "http_3xx", None),
    (408, None, "pending", "http_408", timedelta(seconds=30)),
    (429, None, "pending", "http_429", timedelta(seconds=30)),
    (429, "120", "pending", "http_429", timedelta(seconds=120)),
    (503, "7", "pending", "http_5xx", timedelta(seconds=7)),
    (500, "120", "pending", "http_5xx", timedelta(seconds=30)),  # only 429 and 503 say when
])
def test_4xx_is_not_retried_but_408_and_429_are_and_retry_after_is_honoured(
        db, tmp_path, clock, answer, retry_after, status, kind, wait):
    new_lead(db, "ada@globex.example")
    answers = Answers(script=[answer], retry_after=retry_after)
    with Receiver(tmp_path / "crm", secret=SECRET, answers=answers) as server:
        deliver_all(db=db, webhook=webhook(server), worker="w1", clock=clock)
        assert len(server.received()) == 1  # a redirect is not followed
    [item] = items(db)
    assert (item.status, item.error_kind, item.attempts) == (status, kind, 1)
    assert item.last_error.startswith(("not retried: " if status == "dead" else "")
                                      + f"HTTP {answer}")
    if answer == 302:
        assert "redirect to /crm/moved not followed" in item.last_error
    assert (item.next_attempt_at - MONDAY if wait else item.next_attempt_at) == wait


def test_a_retry_after_date_is_honoured(db, tmp_path, clock):
    new_lead(db, "ada@globex.example")
    answers = Answers(script=[503], retry_after="Mon, 02 Nov 2026 08:10:00 GMT")
    with Receiver(tmp_path / "crm", secret=SECRET, answers=answers) as server:
        deliver_all(db=db, webhook=webhook(server), worker="w1", clock=clock)
    assert items(db)[0].next_attempt_at == MONDAY + timedelta(minutes=10)


def test_a_timeout_is_retried_and_says_so(db, tmp_path, clock):
    new_lead(db, "ada@globex.example")
    answers = Answers(script=[HANG], hang_seconds=0.3)
    with Receiver(tmp_path / "crm", secret=SECRET, answers=answers) as server:
        report = deliver_all(db=db, webhook=webhook(server, timeout=0.1), worker="w1",
                             clock=clock)
    [item] = items(db)
    assert report.unreachable and (item.status, item.error_kind) == ("pending", "timeout")
    assert item.last_error.startswith("no answer within 0.1 s")


# -- dead letters ----------------------------------------------------------------------------------

def test_out_of_attempts_the_item_is_dead_lettered_and_holds_up_its_lead(db, tmp_path, clock):
    lead_id = new_lead(db, "ada@globex.example", "engaged")
    answers = Answers(fail_first=3, fail_status=500)
    with Receiver(tmp_path / "crm", secret=SECRET, answers=answers) as server:
        hook = webhook(server, max_attempts=3)
        for _ in range(3):
            deliver_all(db=db, webhook=hook, worker="w1", clock=clock)
            clock.advance(hours=1)
        dead, waiting = items(db, lead_id)
        assert (dead.status, dead.attempts, dead.dead_at) == ("dead", 3,
                                                              MONDAY + timedelta(hours=2))
        assert dead.last_error.startswith("gave up after 3 attempts: HTTP 500")
        assert waiting.status == "pending"
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {}
        with db.session() as s:
            assert replay(session=s, item_id=dead.id, now=clock.now).status == "pending"
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {"sent": 2}
        keys = [e.idempotency_key for e in server.received()]
    assert keys == [dead.event_id] * 4 + [waiting.event_id]
    replayed = items(db, lead_id)[0]
    assert (replayed.status, replayed.attempts, replayed.replays) == ("sent", 1, 1)


def test_a_skipped_dead_letter_lets_its_leads_later_items_go(db, tmp_path, clock):
    lead_id = new_lead(db, "ada@globex.example", "engaged")
    with Receiver(tmp_path / "crm", secret=SECRET, answers=Answers(script=[422])) as server:
        hook = webhook(server)
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {"dead": 1}
        with db.session() as s:
            skip(session=s, item_id=items(db, lead_id)[0].id, reason="bad data", by="maria")
        assert deliver_all(db=db, webhook=hook, worker="w1", clock=clock).counts == {"sent": 1}
    skipped, sent = items(db, lead_id)
    assert (skipped.status, skipped.skip_reason, sent.status) == ("skipped", "maria: bad data",
                                                                  "sent")


def test_replay_all_puts_every_dead_letter_back_and_only_those(db, tmp_path, clock):
    for n in range(3):
        new_lead(db, f"lead{n}@globex.example")
    with Receiver(tmp_path / "crm", secret=SECRET,
                  answers=Answers(script=[400, 200, 400])) as server:
        deliver_all(db=db, webhook=webhook(server), worker="w1", clock=clock)
    assert [i.status for i in items(db)] == ["dead", "sent", "dead"]
    with db.session() as s:
        assert replay_all(session=s, now=clock.now) == 2
    assert [i.status for i in items(db)] == ["pending", "sent", "pending"]


# -- claims with a lease ---------------------------------------------------------------------------

def test_a_worker_that_dies_after_claiming_loses_nothing_and_delivers_nothing_late(
        db, receiver, clock):
    new_lead(db, "ada@globex.example", "engaged")
    new_lead(db, "bo@initech.example")
    hook = webhook(receiver)
    with db.session() as s:
        assert claim_due(session=s, worker="dead", now=clock.now, limit=10) == [1, 3]
    # while its lease runs, nobody else takes its items
    assert deliver_all(db=db, webhook=hook, worker="w2", clock=clock).counts == {}
    clock.advance(minutes=5, seconds=1)
    assert deliver_all(db=db, webhook=hook, worker="w2", clock=clock).counts == {"sent": 3}
    with db.session() as s:  # the dead worker wakes up: it may no longer post
        assert not start_attempt(session=s, item_id=1, worker="dead", now=clock.now)
    assert len(receiver.received()) == 3


def test_a_worker_that_dies_mid_post_is_replaced_and_the_duplicate_has_the_same_key(
        db, receiver, clock):
    new_lead(db, "ada@globex.example", "engaged")
    hook = webhook(receiver)
    with db.session() as s:  # a worker claims, posts, and dies before recording the 2xx
        [item_id] = claim_due(session=s, worker="dead", now=clock.now, limit=10)
        assert start_attempt(session=s, item_id=item_id, worker="dead", now=clock.now)
        item = s.get(CrmOutboxItem, item_id)
        body = encode(event_body(item))
        headers = signed_headers(secret=SECRET, body=body, event_id=item.event_id,
                                 event_type=item.kind, attempt=1)
    assert post(receiver.url, body, headers, 2.0).delivered
    clock.advance(minutes=6)
    assert deliver_all(db=db, webhook=hook, worker="w2", clock=clock).counts == {"sent": 2}
    first, again, second = receiver.received()
    assert first.idempotency_key == again.idempotency_key and again.duplicate
    assert not second.duplicate
    with db.session() as s:  # a late 2xx of the dead worker changes nothing
        mark_sent(session=s, item_id=item_id, worker="dead", now=clock.now)
    assert [(i.status, i.delivered_at, i.attempts) for i in items(db)] == [
        ("sent", MONDAY + timedelta(minutes=6), 2), ("sent", MONDAY + timedelta(minutes=6), 1)]


def test_the_job_running_twice_at_once_delivers_each_item_once(db, receiver):
    for n in range(6):
        new_lead(db, f"lead{n}@globex.example", "engaged", "mql")
    hook = webhook(receiver)
    start = threading.Barrier(2)

    def run(worker: str) -> None:
        start.wait()
        deliver_all(db=db, webhook=hook, worker=worker, clock=lambda: MONDAY, limit=4)

    threads = [threading.Thread(target=run, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # one of them may stop early when it finds nothing due: the leftovers go next run
    deliver_all(db=db, webhook=hook, worker="w3", clock=lambda: MONDAY)
    keys = [entry.idempotency_key for entry in receiver.received()]
    assert len(keys) == len(set(keys)) == 18
    assert {(i.status, i.attempts) for i in items(db)} == {("sent", 1)}
    assert all(seqs == sorted(seqs) for seqs in arrivals(receiver).values())


def test_a_batch_never_outlasts_its_lease():
    hook = CrmWebhook(url="http://x", secret="s", timeout=10, lease=timedelta(minutes=5))
    assert hook.batch_size(100) == 15 and hook.batch_size(4) == 4
    with pytest.raises(Invalid, match="must be over twice the webhook timeout"):
        CrmWebhook(url="http://x", secret="s", timeout=200, lease=timedelta(minutes=5))


def test_a_stale_worker_cannot_record_a_failure_over_anothers_claim(db, receiver, clock):
    new_lead(db, "ada@globex.example")
    with db.session() as s:
        claim_due(session=s, worker="slow", now=clock.now, limit=1)
    clock.advance(minutes=6)
    assert deliver_batch(db=db, webhook=webhook(receiver), worker="w2",
                         clock=clock).counts == {"sent": 1}
    with db.session() as s:
        assert not start_attempt(session=s, item_id=1, worker="slow", now=clock.now)
    assert items(db)[0].status == CrmStatus.SENT
