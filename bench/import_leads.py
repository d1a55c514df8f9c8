"""Benchmark `nurture leads import` on SQLite: rows/s, wall time, peak memory.

    .venv/bin/python bench/import_leads.py --rows 1000000
    .venv/bin/python bench/import_leads.py --rows 100000      # quick run

Generates a deterministic leads CSV (realistic values, four custom columns) in a temporary
directory, then, each in a fresh child process so that peak memory is the phase's own:

1. baseline: csv.reader + sqlite3 executemany of the same rows into a bare table (commit every
   1,000 rows, like the importer), the floor any importer is measured against;
2. import: `import_leads` into a fresh migrated database with the sample program loaded: new
   leads, each with a stage change, an enrollment and its event log rows;
3. re-import of the same file: every row unchanged, nothing written.

Peak memory is the child's RSS high-water mark (resource.getrusage); --tracemalloc adds the
Python heap peak of the import (slower: its rows/s is then not meaningful).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ["email", "first_name", "last_name", "company", "title", "country", "timezone", "stage",
           "source_channel", "source_offer", "consent", "industry", "employees", "lead_score",
           "crm_id"]
FIRST = ["Ada", "Bob", "Chloé", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ingrid", "José",
         "Kwame", "Lena", "Marta", "Nils", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Yuki"]
LAST = ["Lovelace", "Martin", "Dubois", "Ivanov", "García", "Haddad", "Hopper", "Tanaka",
        "Larsen", "Pereira", "Mensah", "Schmidt", "Nowak", "Berg", "Petrova", "Sharma", "Moreau"]
COMPANIES = ["Globex", "Initech", "Umbrella Logistics", "Stark Retail", "Wayne Foods", "Acme Tools",
             "Hooli", "Vandelay Imports", "Soylent Health", "Cyberdyne Energy", "Tyrell Bank"]
TITLES = ["IT Director", "CIO", "Head of Infrastructure", "Senior Sysadmin", "DevOps Lead", "CFO",
          "Finance Manager", "Financial Controller", "Accountant", "Marketing Manager", "CEO",
          "Procurement Officer"]
PLACES = [("FR", "Europe/Paris"), ("DE", "Europe/Berlin"), ("GB", "Europe/London"),
          ("US", "America/New_York"), ("US", "America/Los_Angeles"), ("ES", "Europe/Madrid"),
          ("JP", "Asia/Tokyo"), ("BR", "America/Sao_Paulo"), ("IN", "Asia/Kolkata"), ("NL", "")]
STAGES = ["inquiry"] * 14 + ["engaged"] * 3 + ["mql", "recycled", ""]
CHANNELS = ["webinar", "paid_search", "event", "partner", "organic", "content_syndication"]
OFFERS = ["cloud-cost-guide", "migration-webinar", "security-checklist", "tco-calculator", ""]
INDUSTRIES = ["retail", "logistics", "finance", "manufacturing", "healthcare", "energy"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(rows):
            first, last, company = rng.choice(FIRST), rng.choice(LAST), rng.choice(COMPANIES)
            country, zone = rng.choice(PLACES)
            domain = company.lower().replace(" ", "-") + ".example"
            writer.writerow([
                f"{first[0]}.{last}{i}@{domain}".replace("é", "e").replace("í", "i"),
                first, last, company, rng.choice(TITLES), country, zone, rng.choice(STAGES),
                rng.choice(CHANNELS), rng.choice(OFFERS), rng.choice(["yes", "yes", "no", ""]),
                rng.choice(INDUSTRIES), str(rng.choice([20, 50, 200, 1000, 5000])),
                str(rng.randint(0, 100)), f"CRM-{1000000 + i}",
            ])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def phase_baseline(csv_path: Path, work: Path) -> dict:
    db = sqlite3.connect(work / "baseline.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    count = 0
    with open(csv_path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        db.execute(f"CREATE TABLE leads (id INTEGER PRIMARY KEY, {', '.join(header)})")
        sql = f"INSERT INTO leads ({', '.join(header)}) VALUES ({', '.join('?' * len(header))})"
        batch = []
        for row in reader:
            batch.append(row)
            if len(batch) == 1000:
                db.execute("BEGIN")
                db.executemany(sql, batch)
                db.execute("COMMIT")
                count += len(batch)
                batch = []
        if batch:
            db.execute("BEGIN")
            db.executemany(sql, batch)
            db.execute("COMMIT")
            count += len(batch)
    seconds = time.perf_counter() - started
    db.close()
    return {"rows": count, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def phase_import(csv_path: Path, work: Path, *, fresh: bool, trace: bool) -> dict:
    from engine.db import Database
    from engine.leads.importer import import_leads
    from engine.migrate import upgrade
    from engine.programs.service import load_program

    url = f"sqlite:///{work / 'nurture.db'}"
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, inside the send window
    if fresh:
        upgrade(url)
    db = Database(url)
    if fresh:
        with db.session() as session:
            load_program(session=session, directory=ROOT / "assets" / "acme-nurture", now=now)
    if trace:
        import tracemalloc

        tracemalloc.start()
    started = time.perf_counter()
    summary = import_leads(db=db, path=csv_path, program="acme-nurture", now=now,
                           rejects_path=work / "rejects.csv")
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "created": summary.created,
              "updated": summary.updated, "unchanged": summary.unchanged,
              "rejected": summary.rejected, "rows": summary.rows}
    if trace:
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    with db.engine.connect() as conn:
        from sqlalchemy import text

        result["tables"] = {table: conn.scalar(text(f"SELECT count(*) FROM {table}"))
                            for table in ("leads", "stage_changes", "enrollments", "lead_events")}
    db.dispose()
    return result


def run_phase(name: str, csv_path: Path, work: Path, trace: bool = False) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--csv", str(csv_path),
               "--work", str(work)] + (["--tracemalloc"] if trace else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report the Python heap peak of the import (slower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--phase", choices=["baseline", "import", "reimport"], help="internal")
    parser.add_argument("--csv", type=Path, help="internal")
    parser.add_argument("--work", type=Path, help="internal")
    args = parser.parse_args()
    if args.phase:
        if args.phase == "baseline":
            result = phase_baseline(args.csv, args.work)
        else:
            result = phase_import(args.csv, args.work, fresh=args.phase == "import",
                                  trace=args.tracemalloc)
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    csv_path = work / "leads.csv"
    started = time.perf_counter()
    generate(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 2**20
    print(f"generated {args.rows:,} rows ({size_mb:,.1f} MB) in "
          f"{time.perf_counter() - started:.1f} s: {csv_path}")

    base = run_phase("baseline", csv_path, work)
    first = run_phase("import", csv_path, work, trace=args.tracemalloc)
    again = run_phase("reimport", csv_path, work)

    def line(label: str, result: dict) -> str:
        rate = result["rows"] / result["seconds"]
        text = (f"{label:<34} {rate:>10,.0f} rows/s  {result['seconds']:>8.1f} s  "
                f"peak RSS {result['peak_rss_mb']:>6.0f} MB")
        if "tracemalloc_peak_mb" in result:
            text += f"  tracemalloc peak {result['tracemalloc_peak_mb']:.1f} MB"
        return text

    base_rate = base["rows"] / base["seconds"]
    print(line("baseline csv + sqlite3 executemany", base))
    print(line("import (new leads, enrolled)", first)
          + f"  {first['rows'] / first['seconds'] / base_rate:.2f}x baseline")
    print(f"  created {first['created']:,}, updated {first['updated']:,}, "
          f"unchanged {first['unchanged']:,}, rejected {first['rejected']:,}; rows stored: "
          + ", ".join(f"{table} {count:,}" for table, count in first["tables"].items()))
    print(line("re-import (all unchanged)", again)
          + f"  {again['rows'] / again['seconds'] / base_rate:.2f}x baseline")
    print(f"  created {again['created']:,}, updated {again['updated']:,}, "
          f"unchanged {again['unchanged']:,}; tables unchanged: {again['tables'] == first['tables']}")
    if args.keep:
        print(f"kept {work}")
    else:
        import shutil

        shutil.rmtree(work)


if __name__ == "__main__":
    main()
