"""Delivery under faults, through the real SMTP transport and a real server that misbehaves
(tests/flaky_smtp.py): a reply slower than the lease, a connection dropped after DATA, a relay
that refuses connections then comes back. Pass: nothing lost, no duplicate but after a dropped
connection (and that row says so), attempts that count SMTP attempts only."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from flaky_smtp import FlakyServer
from launching import launch_all
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.programs.service import load_program
from engine.sending.delivery import DeliveryOptions, check_lease, deliver_due
from engine.sending.models import OutboxMessage, Suppression
from engine.sending.relay import PROBE_FIRST, RelayHealth
from engine.sending.smtp import SMTPTransport

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the send window is open


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def program(db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)


def add_leads(db, count: int) -> None:
    with db.session() as s:
        for n in range(count):
            upsert_lead(session=s, now=MONDAY, actor="test", program="acme-nurture",
                        fields={"email": f"lead{n}@globex.example", "title": "CIO",
                                "timezone": "Europe/Paris"})


def rows(db) -> list[OutboxMessage]:
    with db.session() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_a_reply_slower_than_the_lease_is_sent_once_while_two_workers_run(db, program):
    """Each worker keeps its claims alive while it waits on the server: with a lease of 0.6 s
    and DATA answered after 1 s, no row passes to the other worker, none goes out twice."""
    add_leads(db, 4)
    lease = timedelta(seconds=0.6)
    with FlakyServer() as server:
        server.handler.data_delay = 1.0

        def work(name: str) -> None:
            with SMTPTransport("127.0.0.1", server.port, timeout=10) as transport:
                options = DeliveryOptions(lease=lease)
                while deliver_due(db=db, transport=transport, worker=name,
                                  clock=lambda: datetime.now(UTC).replace(
                                      year=MONDAY.year, month=MONDAY.month, day=MONDAY.day,
                                      hour=MONDAY.hour), limit=2, options=options).counts:
                    pass

        workers = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    assert Counter(server.handler.received) == Counter({r.message_id: 1 for r in rows(db)})
    assert [(r.status, r.deliveries, r.attempts, r.delivery_unknown) for r in rows(db)] == \
        [("sent", 1, 1, False)] * 4


def test_a_connection_dropped_after_data_is_marked_and_the_mark_stays(db, program):
    add_leads(db, 1)
    clock = Clock(MONDAY)
    with FlakyServer() as server, SMTPTransport("127.0.0.1", server.port) as transport:
        server.handler.drop_after_data = 1
        report = deliver_due(db=db, transport=transport, worker="w1", clock=clock)
        assert report.counts == {"delivery_unknown": 1}
        [row] = rows(db)
        assert (row.status, row.attempts, row.delivery_unknown) == ("failed_temp", 1, True)
        clock.now = row.due_at
        assert deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts == {
            "sent": 1}
    [row] = rows(db)
    assert (row.status, row.attempts, row.deliveries, row.delivery_unknown) == (
        "sent", 2, 1, True)  # the server had it twice: possible, and said
    assert server.handler.received == [row.message_id, row.message_id]


def test_attempts_count_smtp_attempts_not_claims_or_holds(db, program):
    """Three real refusals climb the ladder 1 min, 5 min, 15 min; a hold for the send window
    in between charges nothing."""
    add_leads(db, 1)
    clock = Clock(MONDAY)
    with FlakyServer() as server, SMTPTransport("127.0.0.1", server.port) as transport:
        server.handler.refuse_data = 3
        waits = []
        for _ in range(3):
            deliver_due(db=db, transport=transport, worker="w1", clock=clock)
            [row] = rows(db)
            waits.append(row.due_at - clock.now)
            clock.now = row.due_at
        assert waits == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]
        clock.now = MONDAY.replace(hour=17)  # 18:00 in Paris: the window is shut
        assert deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts == {
            "held": 1}
        [row] = rows(db)
        assert row.attempts == 3  # the hold charged nothing
        clock.now = row.due_at
        assert deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts == {
            "sent": 1}
    [row] = rows(db)
    assert (row.attempts, row.deliveries) == (4, 1)


def test_a_relay_that_is_down_costs_no_attempt_and_is_used_again_once_it_answers(db, program):
    add_leads(db, 10)
    clock = Clock(MONDAY)
    server = FlakyServer()  # not listening yet: connections are refused
    relay = RelayHealth(name="test relay")
    options = DeliveryOptions(relay=relay)
    with SMTPTransport("127.0.0.1", server.port, timeout=2) as transport:
        first = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options)
        assert first.counts == {"held": 10}  # 3 refused connections, then none tried
        assert {r.attempts for r in rows(db)} == {0}
        assert all("relay test relay" in r.last_error for r in rows(db))
        again = deliver_due(db=db, transport=transport, worker="w1", clock=clock,
                            options=options)
        assert again.counts == {"relay_down": 0}  # down: nothing claimed at all
        server.start()
        try:
            clock.now = MONDAY + PROBE_FIRST
            probe = deliver_due(db=db, transport=transport, worker="w1", clock=clock,
                                options=options)
            assert probe.counts == {"sent": 1}  # one row probes it: it answers
            rest = deliver_due(db=db, transport=transport, worker="w1", clock=clock,
                               options=options)
            assert rest.counts == {"sent": 9}  # every held row is due at once, uncharged
        finally:
            server.stop()
    assert [(r.status, r.attempts) for r in rows(db)] == [("sent", 1)] * 10


def test_a_relay_still_down_at_the_probe_waits_longer(db, program):
    add_leads(db, 4)
    clock = Clock(MONDAY)
    options = DeliveryOptions(relay=RelayHealth(name="nowhere"))
    with SMTPTransport("127.0.0.1", FlakyServer().port, timeout=2) as transport:
        deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options)
        clock.now = MONDAY + PROBE_FIRST
        assert deliver_due(db=db, transport=transport, worker="w1", clock=clock,
                           options=options).counts == {"held": 1}  # the probe failed
        assert options.relay.next_probe(clock.now) == clock.now + 2 * PROBE_FIRST
    assert {r.attempts for r in rows(db)} == {0}


def test_a_lease_shorter_than_the_smtp_timeout_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"NURTURE_SEND_LEASE_SECONDS=3 is shorter than the "
                                         r"SMTP timeout \(30 s\)"):
        check_lease(timedelta(seconds=3), SMTPTransport("127.0.0.1", 25, timeout=30))
    check_lease(timedelta(seconds=30), SMTPTransport("127.0.0.1", 25, timeout=30))


def test_a_worker_claims_no_more_rows_than_it_sends_within_its_lease(db, program):
    from engine.sending.delivery import Pace

    add_leads(db, 20)
    pace = Pace(seconds_per_row=1.0)  # a slow worker: one row a second
    options = DeliveryOptions(lease=timedelta(seconds=6), pace=pace)
    with FlakyServer() as server, SMTPTransport("127.0.0.1", server.port) as transport:
        report = deliver_due(db=db, transport=transport, worker="w1", clock=Clock(MONDAY),
                             limit=100, options=options)
    assert report.counts == {"sent": 3} and report.full  # half a lease's worth
    assert pace.seconds_per_row < 1.0  # it learnt that it is faster


def test_a_flaky_server_and_unsubscribes_mid_run_lose_nothing_and_leak_nothing(db, program):
    """Three workers with a short lease against a server that is slow, refuses some messages
    for a while, drops the connection after some, and refuses some addresses for good; some
    leads unsubscribe while it runs. The queue drains: every row sent once (or, after a dropped
    connection, marked), refused addresses failed and suppressed, nothing sent to a lead after
    it unsubscribed."""
    from engine.sending.suppression import suppress

    add_leads(db, 30)
    clock = Clock(MONDAY)
    lock = threading.Lock()
    unsubscribed: dict[str, int] = {}  # address -> how many messages it had got by then

    def tick() -> None:  # the workers' shared clock: a minute passes at each round
        with lock:
            clock.now += timedelta(minutes=1)

    with FlakyServer() as server:
        handler = server.handler
        handler.data_delay, handler.temporary_every, handler.drop_every = 0.05, 4, 7
        handler.refuse_rcpt = {f"lead{n}@": "550 5.1.1 No such user" for n in range(25, 30)}

        def work(name: str) -> None:
            with SMTPTransport("127.0.0.1", server.port, timeout=5) as transport:
                options = DeliveryOptions(lease=timedelta(seconds=0.5))
                for _ in range(60):
                    deliver_due(db=db, transport=transport, worker=name, clock=clock, limit=3,
                                options=options)
                    tick()

        workers = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(3)]
        for worker in workers:
            worker.start()
        for n in range(20, 25):  # leave while it runs
            address = f"lead{n}@globex.example"
            with db.session() as s:
                suppress(session=s, email=address, reason="unsubscribed", source="test",
                         now=clock.now)
            unsubscribed[address] = handler.rcpt_to.count(address)
        for worker in workers:
            worker.join(timeout=120)
        received = Counter(handler.received)
        got = Counter(handler.rcpt_to)
    by_status = Counter(r.status for r in rows(db))
    assert by_status["pending"] == by_status["sending"] == by_status["failed_temp"] == 0
    for row in rows(db):
        if row.status == "sent":
            assert received[row.message_id] == 1 or row.delivery_unknown, row.step
        assert received[row.message_id] <= 1 or row.delivery_unknown
    refused = [r for r in rows(db) if r.status == "failed_perm"]
    # A 550 is never retried: a second attempt only comes from a claim taken over mid-send
    # (the lease is 0.5 s: a loaded machine may stall a worker that long), and says so.
    assert len(refused) == 5 and all(r.attempts == 1 or r.delivery_unknown for r in refused)
    with db.session() as s:
        suppressed = set(s.scalars(select(Suppression.email)))
    assert {f"lead{n}@globex.example" for n in range(25, 30)} <= suppressed
    for address, before in unsubscribed.items():
        assert got[address] == before  # nothing after the unsubscribe
    assert by_status["sent"] + by_status["skipped"] + by_status["failed_perm"] == 30
