"""Build the RFC 5322 message a lead receives: multipart/alternative, text then HTML.

The sending issue reuses this builder; the Message-ID is passed in so a retried send keeps it.
"""

from __future__ import annotations

from datetime import datetime
from email import errors
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from engine.errors import Invalid
from engine.leads.fields import normalise_email
from engine.render.personalise import Rendered


def is_address(value: object) -> bool:
    """Whether `value` is one email address as the From header is built from it:
    hello@acme.example or "Acme <hello@acme.example>", without line breaks or defects."""
    if not isinstance(value, str) or any(ord(char) < 32 for char in value):
        return False
    probe = EmailMessage()
    try:
        probe["From"] = value
        header = probe["From"]
        [address] = header.addresses
        normalise_email(address.addr_spec)
    except (ValueError, IndexError, Invalid):
        return False
    return not any(isinstance(d, errors.InvalidHeaderDefect) for d in header.defects)


def sender_domain(sender: dict) -> str:
    """The domain of the program's From address (Message-ID)."""
    return _sender_address(sender).rpartition("@")[2]


def _sender_address(sender: dict) -> str:
    """Every loaded program has a sender (program.yaml or NURTURE_FROM); a version stored
    before that was checked may not, and is refused here rather than sent from nowhere."""
    address = parseaddr(str(sender.get("from") or ""))[1]
    if "@" not in address:
        raise Invalid("the program has no sender: add `sender: {from: ...}` to program.yaml "
                      "(or set NURTURE_FROM) and load it again", field="sender")
    return address


def build_message(*, rendered: Rendered, sender: dict, to: str, date: datetime,
                  message_id: str | None = None, unsubscribe_url: str | None = None,
                  headers: dict[str, str] | None = None) -> EmailMessage:
    """An EmailMessage with From/Reply-To from the program's sender, To, Subject, Date,
    Message-ID, and RFC 8058 one-click unsubscribe headers when a URL is given."""
    domain = sender_domain(sender)
    message = EmailMessage()
    try:
        message["From"] = sender["from"]
        if sender.get("reply_to"):
            message["Reply-To"] = sender["reply_to"]
        message["To"] = to
        message["Subject"] = rendered.subject
    except ValueError as exc:  # a line break or malformed address in a header
        raise Invalid(f"bad header: {exc}", field="sender") from None
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id or make_msgid(domain=domain)
    # RFC 8058: the HTTPS one-click URL only. A mailto would promise an opt-out that nothing
    # here reads (mail to the sender's domain never reaches the engine).
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
