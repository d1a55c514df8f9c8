"""Benchmark the SMTP transport into the local sink, against raw smtplib in the same run.

    .venv/bin/python bench/send.py                  # 1,000 messages of ~30 KB, 3 rounds
    .venv/bin/python bench/send.py --messages 300 --rounds 1

The sink (`nurture sink`) runs in a separate process, so it does not share the sender's GIL.
Variants, interleaved round by round (the median round is reported):
- transport: SMTPTransport.send(message), one persistent connection;
- raw: a hand-written persistent smtplib loop, sendmail(from, to, as_bytes(policy=SMTP));
- raw, pre-serialised: the same with the bytes built once (what serialisation costs);
- raw, new connection: connect, EHLO, sendmail, QUIT for every message;
- engine end to end: the outbox as the workers run it (claim with a lease, send-time checks,
  sandboxed render of the sample program's compiled email, Message-ID, SMTP, mark sent), on
  SQLite, for N leads imported beforehand (the import is not timed);
- engine end to end, tracked: the same with a secret key, as production sends: signed click
  links around the asset's own links, the open pixel, the honeypot.
The ratio column is each variant's messages per second over the raw persistent loop's.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.sending.sink import free_port
from engine.sending.smtp import SMTPTransport

FROM, TO = "news@acme.example", "lead@example.com"
ENGINE = "engine end to end"
ENGINE_TRACKED = "engine end to end, tracked"


def message(size: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Acme <{FROM}>"
    msg["To"] = TO
    msg["Subject"] = "Ihr Leitfaden — état des lieux"
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg["List-Unsubscribe"] = "<https://acme.example/u/T0KEN>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n"
    text = line * (size // 2 // len(line))
    msg.set_content(text)
    msg.add_alternative("<html><body>" + "".join(f"<p>{line}</p>" for line in
                                                 text.splitlines()) + "</body></html>",
                        subtype="html")
    return msg


def start_sink(directory: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "sink", "--port", str(port), "--dir",
         str(directory)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if "listening" not in process.stdout.readline():
        process.kill()
        raise SystemExit("the sink did not start")
    return process, port


def transport_loop(port: int, msg: EmailMessage, n: int) -> None:
    with SMTPTransport("127.0.0.1", port) as transport:
        for _ in range(n):
            if not transport.send(msg).sent:
                raise SystemExit("send failed")


def raw_loop(port: int, msg: EmailMessage, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for _ in range(n):
            smtp.sendmail(FROM, [TO], msg.as_bytes(policy=policy.SMTP))


def raw_prebuilt_loop(port: int, msg: EmailMessage, n: int) -> None:
    payload = msg.as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for _ in range(n):
            smtp.sendmail(FROM, [TO], payload)


def raw_new_connection_loop(port: int, msg: EmailMessage, n: int) -> None:
    for _ in range(n):
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail(FROM, [TO], msg.as_bytes(policy=policy.SMTP))


def engine_rate(port: int, n: int, work: Path, *, tracked: bool = False) -> float:
    """Messages per second through deliver_due, for n due outbox rows (set-up not timed);
    `tracked`: with tracked links, as production sends."""
    import shutil
    from datetime import UTC, datetime

    from engine.db import Database
    from engine.launch.service import launch_unchecked
    from engine.leads.importer import import_leads
    from engine.migrate import upgrade
    from engine.programs.service import load_program
    from engine.sending.compose import Signing
    from engine.sending.delivery import DeliveryOptions, deliver_due

    work.mkdir(parents=True)
    program = work / "program"
    shutil.copytree(ROOT / "assets" / "acme-nurture", program)
    yaml = program / "program.yaml"  # a window that is always open: the clock is real here
    yaml.write_text(yaml.read_text().replace("timezone: Europe/Paris", "timezone: UTC").replace(
        'send_window: {days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"}',
        'send_window: {days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "23:59"}'))
    url = f"sqlite:///{work / 'bench.db'}"
    upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    with db.session() as session:
        load_program(session=session, directory=program, now=now)
        launch_unchecked(session=session, name="acme-nurture", by="bench", now=now,
                         why="benchmark of sending")
    leads = work / "leads.csv"
    leads.write_text("email,first_name,title,timezone\n" + "".join(
        f"lead{i}@bench{i % 50}.example,Lead{i},CIO,UTC\n" for i in range(n)))
    import_leads(db=db, path=leads, program="acme-nurture", now=now)
    options = DeliveryOptions(signing=Signing(secret_key="bench" if tracked else ""))
    start, sent = time.perf_counter(), 0
    with SMTPTransport("127.0.0.1", port) as transport:
        while True:
            report = deliver_due(db=db, transport=transport, worker="bench", limit=200,
                                 clock=lambda: datetime.now(UTC), options=options)
            sent += report.counts["sent"]
            if not report.counts:
                break
    elapsed = time.perf_counter() - start
    db.dispose()
    if sent != n:
        raise SystemExit(f"engine round sent {sent} of {n}")
    return n / elapsed


VARIANTS = {
    "transport (persistent)": transport_loop,
    "raw smtplib (persistent)": raw_loop,
    "raw, pre-serialised": raw_prebuilt_loop,
    "raw, new connection each": raw_new_connection_loop,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=30_000, help="approximate message bytes")
    args = parser.parse_args()
    msg = message(args.size)
    size = len(msg.as_bytes(policy=policy.SMTP))
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_sink(Path(tmp) / "sink")
        try:
            raw_loop(port, msg, 20)  # warm up
            for round_number in range(args.rounds):
                for name, loop in VARIANTS.items():
                    start = time.perf_counter()
                    loop(port, msg, args.messages)
                    rates[name].append(args.messages / (time.perf_counter() - start))
                rates.setdefault(ENGINE, []).append(
                    engine_rate(port, args.messages, Path(tmp) / f"engine{round_number}"))
                rates.setdefault(ENGINE_TRACKED, []).append(engine_rate(
                    port, args.messages, Path(tmp) / f"tracked{round_number}", tracked=True))
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(f"{args.messages} messages of {size:,} bytes x {args.rounds} rounds into the local "
          f"sink (separate process), Python {sys.version.split()[0]}")
    baseline = statistics.median(rates["raw smtplib (persistent)"])
    print(f"{'variant':<28}{'msg/s':>10}{'ratio':>8}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<28}{rate:>10.0f}{rate / baseline:>8.2f}")


if __name__ == "__main__":
    main()
