"""Benchmark `nurture crm import` (the CRM's CSV, applied row by row through the field map and
the one lead pipeline) on SQLite: rows/s, against the lead import of the same people in the
same run.

    .venv/bin/python bench/crm_import.py --rows 20000
    .venv/bin/python bench/crm_import.py --rows 2000      # quick run

Phases, each on a fresh migrated database with the sample program loaded:

1. baseline: `import_leads` of the people as a leads CSV (bulk writes per chunk): the engine's
   fastest way in for a lead, what a CRM import is measured against;
2. crm import: the same people as the CRM's contacts (Id, Email, FirstName, LastName, Title,
   AccountId; the sample's field map), each row an event: a lead created, linked to its record
   and to an account;
3. re-import of the same file: every row a repeat, nothing applied;
4. updates: the same contacts with a new Title, into the database of phase 2.

Each row of a CRM import is whole or not at all (a savepoint), 500 rows to a transaction.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FIRST = ["Ada", "Bob", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ingrid", "Jose"]
LAST = ["Lovelace", "Martin", "Dubois", "Ivanov", "Garcia", "Haddad", "Hopper", "Tanaka"]
TITLES = ["IT Director", "CIO", "Head of Infrastructure", "DevOps Lead", "CFO", "CEO"]


def people(rows: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"003{i:08d}", "email": f"p{i}@company{i % 2000}.example",
             "first": rng.choice(FIRST), "last": rng.choice(LAST), "title": rng.choice(TITLES),
             "account": f"001{i % 2000:08d}"} for i in range(rows)]


def write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fresh_database(path: Path):
    from engine.db import Database
    from engine.migrate import upgrade
    from engine.programs.service import load_program

    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    with db.session() as session:
        load_program(session=session, directory=ROOT / "assets" / "acme-nurture", now=NOW)
    return db


def timed(label: str, rows: int, work) -> dict:
    started = time.perf_counter()
    outcome = work()
    seconds = time.perf_counter() - started
    return {"label": label, "rows": rows, "seconds": seconds, "rate": rows / seconds,
            "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()

    from engine.crm.fieldmap import load_map
    from engine.flows.crm_exchange import import_records
    from engine.leads.importer import import_leads

    crm_map = load_map(ROOT / "assets" / "acme-nurture" / "crm.yaml")
    found = people(args.rows)
    with tempfile.TemporaryDirectory(prefix="nurture-bench-crm-") as tmp:
        work = Path(tmp)
        leads_csv = write(work / "leads.csv", ["email", "first_name", "last_name", "title"],
                          [[p["email"], p["first"], p["last"], p["title"]] for p in found])
        contacts = write(work / "contacts.csv",
                         ["Id", "Email", "FirstName", "LastName", "Title", "AccountId"],
                         [[p["id"], p["email"], p["first"], p["last"], p["title"],
                           p["account"]] for p in found])
        updates = write(work / "updates.csv", ["Id", "Email", "Title"],
                        [[p["id"], p["email"], "Chief " + p["title"]] for p in found])
        baseline_db = fresh_database(work / "baseline.db")
        crm_db = fresh_database(work / "crm.db")

        def crm(path: Path):
            summary = import_records(db=crm_db, crm_map=crm_map, path=path, obj="contact",
                                     now=NOW)
            return f"{summary.applied} applied, {summary.repeat} repeats, " \
                   f"{summary.refused} refused"

        results = [
            timed("baseline: leads import", args.rows, lambda: str(import_leads(
                db=baseline_db, path=leads_csv, program="acme-nurture", now=NOW,
                rejects_path=work / "rejects.csv").created) + " created"),
            timed("crm import: new contacts", args.rows, lambda: crm(contacts)),
            timed("crm import: the same file again", args.rows, lambda: crm(contacts)),
            timed("crm import: a field changed", args.rows, lambda: crm(updates)),
        ]
    base = results[0]["rate"]
    print(f"{args.rows:,} rows, SQLite")
    for result in results:
        print(f"{result['label']:<34} {result['rate']:>9,.0f} rows/s  {result['seconds']:7.2f} s"
              f"  {result['rate'] / base:5.2f}x the baseline  ({result['outcome']})")


if __name__ == "__main__":
    main()
