"""Validation of lead fields, shared by the CSV import, the API and the simulator."""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import available_timezones

from engine.errors import Invalid
from engine.leads.models import STANDARD_FIELDS, Lead
from engine.leads.stages import parse_stage
from engine.text import CONTROL_CHARACTERS

MAX_FIELD_LENGTH = 1000
MAX_CUSTOM_FIELDS = 50
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}$"
)
CUSTOM_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# NUL, and unpaired surrogates (undecodable bytes read with surrogateescape): PostgreSQL
# refuses both, so no text holding them may reach a query.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
# What a lead field may not hold, BAD_TEXT included: control characters, which a terminal reads
# as commands (ESC, and CSI as \x9b), except tab and line breaks (LF, or CR LF as a Windows
# export writes a cell's lines). DEL has no use in a field; C1 controls mostly mean a cp1252 file
# read as latin-1. One character class, so that the common case costs one scan.
_SUSPECT_TEXT = re.compile(f"[{CONTROL_CHARACTERS}\ud800-\udfff]")
_CONTROL = re.compile(f"(?!\r\n)[{CONTROL_CHARACTERS}]")
_TRUE = {"yes", "y", "true", "1", "opt-in", "optin", "granted"}
_FALSE = {"no", "n", "false", "0", "opt-out", "optout", "withdrawn"}
_STANDARD = frozenset(STANDARD_FIELDS)
# Standard fields are bounded by their columns (an over-long value would fail a whole batch on
# PostgreSQL); custom values by MAX_FIELD_LENGTH.
_LIMITS = {name: Lead.__table__.c[name].type.length for name in STANDARD_FIELDS
           if getattr(Lead.__table__.c[name].type, "length", None)} | {"email": 254}


class MisdecodedText(Invalid):
    """A character that, in a file, most likely means the file was read in the wrong encoding.
    `encoding_advice` is for the file import to add (it has --encoding); the API and forms show
    the field and the character only."""

    def __init__(self, detail: str, *, field: str, encoding_advice: str):
        super().__init__(detail, field=field)
        self.encoding_advice = encoding_advice


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def normalise_email(value: str | None) -> str:
    email = (value or "").strip()
    if not email:
        raise Invalid("email is required", field="email")
    if len(email) > 254 or not _EMAIL.match(email):
        raise Invalid(f"invalid email address {email[:100]!r}", field="email")
    return email.lower()


def parse_consent(value: str | bool | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid(f"consent must be yes or no, got {value!r}", field="consent")


def check_timezone(value: str) -> str:
    if value not in _timezones():
        raise Invalid(f"unknown time zone {value!r} (use an IANA name like Europe/Paris)",
                      field="timezone")
    return value


@lru_cache(maxsize=1024)  # a file repeats its column names on every row; errors are not cached
def _custom_name(name) -> str:
    key = str(name).strip().lower()
    if not CUSTOM_NAME.match(key) or key in STANDARD_FIELDS or key == "custom":
        raise Invalid(f"bad custom field name {str(name)[:70]!r} (letters, digits and _)", field=key[:64])
    return key


def clean_value(key: str, value):
    """Text is trimmed and bounded, with no control character but tab and line breaks; a
    number or boolean passes; anything else (a list, a mapping) is refused, naming `key`."""
    if isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        raise Invalid("must be text, a number or a boolean", field=key)
    untrimmed, value = value, value.strip()
    limit = _LIMITS.get(key, MAX_FIELD_LENGTH)
    if len(value) > limit:
        raise Invalid(f"value longer than {limit} characters", field=key)
    if _SUSPECT_TEXT.search(untrimmed):  # strip() takes some controls (U+0085, U+001C...)
        if "\x00" in untrimmed:
            raise Invalid("NUL character", field=key)
        if BAD_TEXT.search(untrimmed):
            raise MisdecodedText("bytes that are not valid UTF-8", field=key,
                                 encoding_advice="re-run with --encoding latin-1?")
        control = _CONTROL.search(untrimmed)
        if control:
            _refuse_control(key, control)
    return value


def _refuse_control(key: str, control: re.Match) -> None:
    code = ord(control.group())
    detail = (f"control character U+{code:04X} at position {control.start() + 1}: only tab "
              "and line breaks are allowed")
    if code >= 0x80:  # a C1 control: mostly a cp1252 file read as latin-1
        raise MisdecodedText(detail, field=key, encoding_advice="a cp1252 file needs "
                                                                "--encoding cp1252")
    raise Invalid(detail, field=key)


def clean_lead_fields(raw: dict) -> dict:
    """Validate one lead's fields. Returns standard fields plus `custom`; blank values are dropped.

    Raises Invalid naming the first field at fault.
    """
    clean: dict = {}
    custom: dict = {}
    for name, value in raw.items():
        if name is None:
            raise Invalid("more values than columns", field="(extra)")
        key = str(name).strip().lower()
        if key == "custom" and isinstance(value, dict):
            for custom_name, custom_value in value.items():
                custom_key = _custom_name(custom_name)
                if custom_value is not None:
                    custom[custom_key] = clean_value(f"custom.{custom_key}", custom_value)
            continue
        if type(value) is str:  # the CSV case: inline the common path of _check_value
            suspect = _SUSPECT_TEXT.search(value)
            if suspect or len(value) > _LIMITS.get(key, MAX_FIELD_LENGTH):
                clean_value(key, value)  # raises the error naming the field (CR LF passes)
            value = value.strip()
            if not value:
                continue
        elif value is None:
            continue
        else:
            value = clean_value(key, value)
        if key in _STANDARD:
            if not isinstance(value, str) and key != "consent":
                raise Invalid("must be text", field=key)
            clean[key] = value
        else:
            custom[_custom_name(key)] = value
    clean["email"] = normalise_email(clean.get("email"))
    if "stage" in clean:
        clean["stage"] = parse_stage(clean["stage"])
    if "timezone" in clean:
        clean["timezone"] = check_timezone(clean["timezone"])
    if "consent" in clean:
        clean["consent"] = parse_consent(clean["consent"])
    if len(custom) > MAX_CUSTOM_FIELDS:
        raise Invalid(f"more than {MAX_CUSTOM_FIELDS} custom fields", field="custom")
    clean["custom"] = custom
    return clean
