"""bench/reports.py: the data it generates follows the engine's rules (stage moves the
transition table allows, in time order; events after the email they answer; unique keys
unique), and, on PostgreSQL, it loads a database and times the reports end to end (skipping
those whose module does not exist yet)."""

from __future__ import annotations

import argparse
import importlib.util
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from engine.leads.stages import TRANSITIONS
from engine.programs.loader import load_program_dir
from engine.reports import NAMES

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("bench_reports", ROOT / "bench" / "reports.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def sample_programs() -> list:
    program = load_program_dir(bench.SAMPLE).program
    versions = {key: 100 + index for index, key in enumerate(program.emails)}
    return [bench.describe(program, 1, versions), bench.describe(program, 2, versions)]


def generated(leads: int, events: int) -> dict[str, list[list]]:
    """Every row the generator writes for `leads` leads, per table, ids given."""
    tables = defaultdict(list)
    sink = bench.Sink(lambda table, rows: tables[table].extend(rows))
    world = bench.World(seed=5, leads=leads, programs=sample_programs(), sink=sink,
                        intensity=bench.calibrate(sample_programs(), leads, events, 5, True)[0],
                        event_log=True)
    for index in range(leads):
        world.lead(index + 1, world.created_at(index))
        if index % 50 == 49:
            sink.flush(world.created_at(index) // bench.DAY)
    sink.flush(float("inf"))
    return {table: [dict(zip(bench.COLUMNS[table], row, strict=True)) for row in rows]
            for table, rows in tables.items()}


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return generated(600, 6000)


def test_stage_histories_move_as_the_transition_table_allows_in_time_order(rows):
    history = defaultdict(list)
    for change in rows["stage_changes"]:
        history[change["lead_id"]].append(change)
    assert len(history) == 600
    for changes in history.values():
        assert changes[0]["from_stage"] is None
        for before, after in pairwise(changes):
            assert after["from_stage"] == before["to_stage"]
            assert after["to_stage"] in TRANSITIONS[before["to_stage"]]
            assert after["at"] > before["at"]
    leads = {lead["id"]: lead for lead in rows["leads"]}
    assert all(leads[lead]["stage"] == changes[-1]["to_stage"]
               for lead, changes in history.items())


def test_every_table_is_written_in_time_order_with_ids_rising(rows):
    times = {"outbox": "created_at", "stage_changes": "at", "tracking_events": "at",
             "lead_events": "at", "form_submissions": "created_at",
             "sales_notifications": "at", "sla_breaches": "detected_at",
             "suppressions": "created_at", "leads": "created_at"}
    end = bench.ts(bench.END)
    for table, column in times.items():
        found = rows[table]
        assert [row["id"] for row in found] == list(range(1, len(found) + 1)), table
        stamps = [row[column] for row in found]
        assert stamps == sorted(stamps), table
        assert stamps[-1] < end, table


def test_events_follow_the_email_they_answer_and_keys_are_unique(rows):
    outbox = {row["id"]: row for row in rows["outbox"]}
    for event in rows["tracking_events"]:
        if event["outbox_id"] is not None:
            sent = outbox[event["outbox_id"]]
            assert sent["lead_id"] == event["lead_id"]
            assert sent["status"] == "sent" and event["at"] >= sent["sent_at"]
    assert len({row["message_id"] for row in rows["outbox"]}) == len(rows["outbox"])
    assert len({(row["enrollment_id"], row["step"]) for row in rows["outbox"]}) == len(
        rows["outbox"])
    assert len({row["event_key"] for row in rows["tracking_events"]}) == len(
        rows["tracking_events"])
    assert len({(r["lead_id"], r["kind"], r["since"]) for r in rows["sla_breaches"]}) == len(
        rows["sla_breaches"])
    assert len({row["email"] for row in rows["suppressions"]}) == len(rows["suppressions"])
    assert len({(r["lead_id"], r["program_id"]) for r in rows["enrollments"]}) == len(
        rows["enrollments"])


def test_about_the_events_asked_about_five_percent_of_them_machines(rows):
    events = rows["tracking_events"]
    assert 5000 < len(events) < 7000
    bots = sum(event["bot"] for event in events)
    assert 0.02 < bots / len(events) < 0.09
    assert all(event["bot_reason"] for event in events if event["bot"])


def test_on_postgresql_it_loads_a_database_and_times_each_report(postgres_only_url, capsys):
    bench.generate(postgres_only_url, 300, 3000, 7, True)
    loaded = capsys.readouterr().out
    assert "indexes and keys rebuilt" in loaded
    args = argparse.Namespace(tz="Europe/Paris", program="acme-nurture", repeat=1,
                              patience=10.0, plans=False, only=None)
    bench.time_reports(postgres_only_url, args)
    out = capsys.readouterr().out
    assert "baseline: count(*) of stage_changes in the quarter" in out
    assert "quarter: 2026-07-01 to 2026-09-30" in out
    for name in NAMES:
        exists = importlib.util.find_spec(f"engine.reports.{name}") is not None
        assert (f"{name:<12} quarter" in out) == exists
        assert (f"engine/reports/{name}.py does not exist yet" in out) == (not exists)
