"""Personalised messages per second: compile once vs compile per recipient, in the same run.

    .venv/bin/python bench/render.py [--messages 600] [--naive-messages 45]

Both paths use the sample program's 15 emails, the same leads, the same sandboxed Jinja
environment and the same message builder (engine/render/message.py), serialised to bytes as a
send would. Compile-once renders the HTML and text compiled at upload; naive runs Jinja over
the MJML, then MJML, premailer and the text derivation for every recipient.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml

from engine.render.compile import compile_asset, html_to_text, inline_css
from engine.render.message import build_message
from engine.render.personalise import (
    Links,
    RenderContext,
    Rendered,
    render_email,
    render_subject,
    render_template,
    template,
)

PROGRAM = ROOT / "assets" / "acme-nurture"
NAMES = [("Ada", "Globex"), ("Grace", None), ("Linus", "Initech & Co"), ("<b>Eve</b>", "Hooli")]


def contexts(n: int) -> list[RenderContext]:
    return [RenderContext(
        lead={"first_name": NAMES[i % 4][0], "company": NAMES[i % 4][1],
              "email": f"lead{i}@example.com"},
        program={"name": "Acme Cloud", "slug": "acme-nurture"},
        sender={"from": "Acme Cloud <hello@acme.example>", "reply_to": "team@acme.example"},
        links=Links(base_url="http://localhost:5000", program="acme-nurture", token=f"t{i}"),
    ) for i in range(n)]


def send_bytes(rendered: Rendered, ctx: RenderContext, sender: dict, now: datetime) -> bytes:
    message = build_message(rendered=rendered, sender=sender, to=ctx.lead["email"], date=now,
                            unsubscribe_url=ctx.links.unsubscribe)
    return message.as_bytes(policy=SMTP)


def compile_once(emails: list[tuple[str, str, str]], n: int, sender: dict, now) -> float:
    compiled = [(key, subject, compile_asset("email", source)) for key, subject, source in emails]
    started = time.perf_counter()
    for i, ctx in enumerate(contexts(n)):
        key, subject, c = compiled[i % len(compiled)]
        rendered = render_email(version_id=hash(key), html=c.html, text=c.text, subject=subject,
                                context=ctx)
        send_bytes(rendered, ctx, sender, now)
    return n / (time.perf_counter() - started)


def naive(emails: list[tuple[str, str, str]], n: int, sender: dict, now) -> float:
    from mjml import mjml_to_html

    started = time.perf_counter()
    for i, ctx in enumerate(contexts(n)):
        _key, subject, source = emails[i % len(emails)]
        mjml = render_template(template(source, html=True), ctx.variables())
        html = inline_css(mjml_to_html(mjml).html)
        rendered = Rendered(subject=render_subject(subject, ctx), html=html,
                            text=html_to_text(html))
        send_bytes(rendered, ctx, sender, now)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--naive-messages", type=int, default=45)
    args = parser.parse_args()
    spec = yaml.safe_load((PROGRAM / "program.yaml").read_text())
    emails = [(key, e["subject"], (PROGRAM / e["file"]).read_text())
              for key, e in spec["emails"].items()]
    sender = spec["sender"]
    now = datetime.now(UTC)
    started = time.perf_counter()
    for _, _, source in emails:
        compile_asset("email", source)
    compile_ms = (time.perf_counter() - started) * 1000 / len(emails)
    naive(emails[:2], 4, sender, now)  # warm up imports and caches for both paths
    fast = compile_once(emails, args.messages, sender, now)
    slow = naive(emails, args.naive_messages, sender, now)
    print(f"sample program: {len(emails)} emails; one-off compile {compile_ms:.1f} ms per email")
    print(f"compile once (Jinja render + MIME message): {fast:8.1f} messages/s "
          f"({args.messages} messages)")
    print(f"naive (Jinja over MJML, compile, premailer): {slow:8.1f} messages/s "
          f"({args.naive_messages} messages)")
    print(f"ratio: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
