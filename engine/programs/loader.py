"""Read and validate a program directory, reporting every error at once as `file:line: message`."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.config import default_sender
from engine.crm.fieldmap import check_program_map
from engine.errors import IllegalTransition, Invalid
from engine.leads.fields import normalise_email
from engine.leads.stages import STAGES, check_transition
from engine.pages.forms import (
    FORM_FIELDS,
    MAX_VISIT_VALUE,
    SOURCE_FIELDS,
    VISIT_PARAMS,
    Consent,
    FormSpec,
    SourceRule,
)
from engine.patterns import PatternError, compile_pattern
from engine.programs.spec import (
    DAYS,
    PROGRAM_KINDS,
    AdvanceRule,
    Email,
    Goal,
    NonResponders,
    Page,
    Persona,
    Program,
    Rules,
    SendWindow,
    Step,
    Wait,
    parse_duration,
)
from engine.render.message import is_address
from engine.scoring.rules import (
    EMAIL_KINDS,
    EVENT_KINDS,
    MAX_PATTERN,
    PAGE_KINDS,
    ROUTES,
    FitRule,
    ScoringRules,
    SlaRules,
    Trigger,
)
from engine.yaml_lines import (
    Checker,
    FileError,
    FileInvalid,
    LineMap,
    LineSeq,
    line_of,
    parse_yaml,
)

PROGRAM_FILE = "program.yaml"
MAX_FILE_BYTES = 2 * 1024 * 1024
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
MATCH_OPS = ("contains", "in", "equals")
TOP_KEYS = {
    "program", "name", "timezone", "sender", "send_window", "personas", "emails", "pages",
    "tracks", "rules", "scoring", "sla", "launch", "kind", "goal", "advance",
}
MAX_NOTIFY = 20
PAGE_KEYS = ("file", "slug", "title", "form")
FORM_KEYS = ("fields", "consent", "source")
FORM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")  # a posted form field's name
RESERVED_FORM_NAMES = frozenset({"email", "csrf_token"})
MAX_CONSENT_TEXT = 2000
FIELD = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")  # a standard or custom lead field
SCORING_KEYS = ("behaviour", "pages", "daily_caps", "decay", "fit", "mql", "triggers")
FIT_KEYS = ("field", "points", "matches", "in", "at_least", "at_most")
TRIGGER_KEYS = ("on", "page", "email", "route", "enroll")
SLA_KEYS = ("mql_response", "opportunity_stalled", "stalled_track", "escalate_to")
SENDER_KEYS = ("from", "reply_to", "address")
GOAL_KEYS = ("stage", "event", "page", "email", "within")
ADVANCE_KEYS = ("from", "to", "on", "idle", "page", "email")
_jinja = ImmutableSandboxedEnvironment()


ProgramError = FileError  # what every error of a program directory is: file, line, message


@dataclass(frozen=True)
class LoadedProgram:
    program: Program
    files: dict[str, str]  # relative path -> text of every referenced email and page
    content_hash: str
    source: str


class ProgramInvalid(FileInvalid):
    """A program directory with errors, each as `file:line: message`."""


# -- validation -------------------------------------------------------------------------

class _Checker(Checker):
    def __init__(self, directory: Path):
        super().__init__(PROGRAM_FILE)
        self.directory = directory
        self.files: dict[str, str] = {}

    def text_file(self, container, key, relative, label: str) -> str | None:
        if not isinstance(relative, str) or not relative.strip():
            self.error(container, key, f"{label}: 'file' must be a relative path")
            return None
        path = (self.directory / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(self.directory.resolve()):
            self.error(container, key, f"{label}: file {relative!r} is outside the program directory")
            return None
        if not path.is_file():
            self.error(container, key, f"{label}: file {relative!r} not found")
            return None
        if path.stat().st_size > MAX_FILE_BYTES:
            self.error(container, key, f"{label}: file {relative!r} is larger than {MAX_FILE_BYTES} bytes")
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.error(container, key, f"{label}: file {relative!r} is not UTF-8 ({exc.reason})")
            return None
        self.files[relative] = text
        return text

    def template(self, container, key, source: str, label: str, file: str = PROGRAM_FILE, offset=0):
        try:
            _jinja.parse(source)
        except TemplateSyntaxError as exc:
            line = offset + (exc.lineno or 1) if file != PROGRAM_FILE else line_of(container, key)
            self.errors.append(ProgramError(file, line, f"{label}: template syntax error: {exc.message}"))


def is_program_dir(path: str | Path) -> bool:
    """Whether `path` names a program's directory (it holds program.yaml). A command taking a
    directory or a loaded program's name reads any other argument as a name: the folder it is
    run from may well have a subdirectory named like a loaded program."""
    return (Path(path) / PROGRAM_FILE).is_file()


def load_program_dir(directory: str | Path) -> LoadedProgram:
    """Parse and validate a program directory. Raises ProgramInvalid listing every error."""
    directory = Path(directory)
    path = directory / PROGRAM_FILE
    if not path.is_file():
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1, f"no {PROGRAM_FILE} in {directory}")])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1,
                                           f"larger than {MAX_FILE_BYTES} bytes: not a program file")])
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1, f"not UTF-8: {exc.reason}")]) from exc
    data = parse_yaml(source, PROGRAM_FILE, ProgramInvalid)
    if not isinstance(data, dict):
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1, "program.yaml must be a mapping")])
    checker = _Checker(directory)
    default_from = default_sender()
    program = _validate(checker, data, default_from)
    _scenario_table(checker, Path(directory))
    # The CRM field map its team keeps with the program: checked here, applied only as the
    # instance's (NURTURE_CRM_MAP), so not part of the program's version.
    checker.errors.extend(check_program_map(directory))
    if checker.errors or program is None:
        raise ProgramInvalid(sorted(checker.errors, key=lambda e: (e.file, e.line)))
    digest = hashlib.sha256(source.encode())
    if program.sender["from"] == default_from:  # another NURTURE_FROM makes another version
        digest.update(b"\0NURTURE_FROM\0" + default_from.encode())
    for name in sorted(checker.files):
        digest.update(b"\0" + name.encode() + b"\0" + checker.files[name].encode())
    return LoadedProgram(program, checker.files, digest.hexdigest(), source)


SCENARIO_FILES = ("scenarios.yaml", "scenarios.csv")


def _scenario_table(checker: _Checker, directory: Path) -> None:
    """The program's scenario table, kept with its files (`nurture qa` runs it; a stored
    version carries it, so the gate tests the logic it launches). Checked there, not here."""
    for name in SCENARIO_FILES:
        path = directory / name
        if not path.is_file() or path.is_symlink():
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            checker.errors.append(ProgramError(name, 1, f"larger than {MAX_FILE_BYTES} bytes"))
            return
        try:
            checker.files[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            checker.errors.append(ProgramError(name, 1, f"not UTF-8: {exc.reason}"))
        return


def validate_program_dir(directory: str | Path) -> list[ProgramError]:
    try:
        load_program_dir(directory)
    except ProgramInvalid as exc:
        return exc.errors
    return []


def _validate(c: _Checker, data: LineMap, default_from: str | None) -> Program | None:
    for key in data:
        if key not in TOP_KEYS:
            c.error(data, key, f"unknown key {key!r} (expected one of {', '.join(sorted(TOP_KEYS))})")
    slug = data.get("program")
    if not isinstance(slug, str) or not SLUG.match(slug):
        c.error(data, "program", "'program' must be a slug of lower-case letters, digits and '-'")
    tz = _timezone(c, data)
    window = _send_window(c, data)
    personas = _personas(c, data)
    emails = _emails(c, data)
    pages = _pages(c, data)
    rules_map = c.mapping(data, "rules", required=False) or LineMap()
    sla_map = c.mapping(data, "sla", required=False)
    move_targets = _move_targets(rules_map, sla_map)
    tracks = _tracks(c, data, personas, emails, move_targets)
    rules = _rules(c, rules_map, tracks)
    scoring = _scoring(c, data, pages, emails)
    sla = _sla(c, sla_map, tracks)
    notify = _launch_notify(c, c.mapping(data, "launch", required=False))
    sender = _sender(c, data, default_from)
    kind = _kind(c, data)
    goal = _goal(c, data, pages, emails)
    advance = _advance(c, data, pages, emails)
    if c.errors or None in (tz, window, personas, emails, pages, tracks, rules, scoring, sla):
        return None
    return Program(
        slug=slug, name=str(data.get("name") or slug), timezone=tz, send_window=window,
        personas=personas, emails=emails, pages=pages, tracks=tracks, rules=rules,
        sender=sender, scoring=scoring, sla=sla, launch_notify=notify, kind=kind, goal=goal,
        advance=advance,
    )


def _timezone(c: _Checker, data) -> str | None:
    name = data.get("timezone", "UTC")
    try:
        ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        c.error(data, "timezone", f"unknown time zone {name!r}")
        return None
    return str(name)


def _send_window(c: _Checker, data) -> SendWindow | None:
    window = c.mapping(data, "send_window", required=False)
    if window is None:
        return SendWindow() if data.get("send_window") is None else None  # null: the default
    ok = True
    days = window.get("days", list(DAYS[:5]))
    if not isinstance(days, list) or not days:
        c.error(window, "days", "send_window.days must be a non-empty list like [mon, tue]")
        ok = False
        days = []
    for i, day in enumerate(days):
        if str(day).lower()[:3] not in DAYS:
            c.error(days, i, f"send_window.days: unknown day {day!r} (use mon..sun)")
            ok = False
    clock = {}
    for key, default in (("from", "09:00"), ("to", "17:00")):
        value = window.get(key, default)
        try:
            clock[key] = time.fromisoformat(value if isinstance(value, str) else f"{value}")
        except ValueError:
            c.error(window, key, f"send_window.{key}: bad time {value!r} (use HH:MM)")
            ok = False
    if ok and clock["from"] >= clock["to"]:
        c.error(window, "to", "send_window: 'to' must be later than 'from'")
        ok = False
    if not ok:
        return None
    return SendWindow(
        days=frozenset(DAYS.index(str(d).lower()[:3]) for d in days),
        start=clock["from"], end=clock["to"],
    )


def _personas(c: _Checker, data) -> dict[str, Persona] | None:
    section = c.mapping(data, "personas")
    if section is None:
        return None
    if not section:
        c.error(data, "personas", "at least one persona is required")
        return None
    personas = {}
    for key, spec in section.items():
        if not KEY.match(str(key)):
            c.error(section, key, f"persona key {key!r} may only hold letters, digits, '_' and '-'")
            continue
        if not isinstance(spec, dict):
            c.error(section, key, f"persona {key}: must be a mapping with 'name' and 'match'")
            continue
        match = spec.get("match") or {}
        if not isinstance(match, dict):
            c.error(spec, "match", f"persona {key}: 'match' must be a mapping")
            match = {}
        for rule, value in match.items():
            field, _, op = str(rule).rpartition("_")
            if not field or op not in MATCH_OPS:
                c.error(match, rule, f"persona {key}: unknown match rule {rule!r} "
                                     "(use <field>_contains, <field>_in or <field>_equals)")
            elif op in ("contains", "in") and not isinstance(value, (list, str)):
                c.error(match, rule, f"persona {key}: {rule} takes a list")
        for extra in set(spec) - {"name", "match", "default"}:
            c.error(spec, extra, f"persona {key}: unknown key {extra!r}")
        personas[str(key)] = Persona(
            key=str(key), name=str(spec.get("name") or key),
            match={k: (v if isinstance(v, list) or "_equals" in k else [v]) for k, v in match.items()},
            default=bool(spec.get("default", False)),
        )
    defaults = [k for k, p in personas.items() if p.default]
    if len(defaults) > 1:
        c.error(section, defaults[1], f"more than one default persona: {', '.join(defaults)}")
    return personas


def _emails(c: _Checker, data) -> dict[str, Email] | None:
    section = c.mapping(data, "emails")
    if section is None:
        return None
    emails = {}
    for key, spec in section.items():
        label = f"email {key}"
        if not isinstance(spec, dict):
            c.error(section, key, f"{label}: must be a mapping with 'file' and 'subject'")
            continue
        for extra in set(spec) - {"file", "subject", "preheader"}:
            c.error(spec, extra, f"{label}: unknown key {extra!r}")
        subject = spec.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            c.error(spec, "subject", f"{label}: missing 'subject'")
        else:
            c.template(spec, "subject", subject, f"{label} subject")
        text = c.text_file(spec, "file", spec.get("file"), label)
        if text is not None:
            c.template(spec, "file", text, label, file=spec["file"])
        emails[str(key)] = Email(
            key=str(key), file=str(spec.get("file")), subject=str(subject),
            preheader=spec.get("preheader"),
        )
    return emails


def _pages(c: _Checker, data) -> dict[str, Page] | None:
    section = c.mapping(data, "pages", required=False)
    if section is None:
        return {} if data.get("pages") is None else None  # null: no pages
    pages, slugs = {}, {}
    for key, spec in section.items():
        label = f"page {key}"
        if not isinstance(spec, dict):
            c.error(section, key, f"{label}: must be a mapping with 'file' and 'slug'")
            continue
        slug = str(spec.get("slug") or key)
        if not SLUG.match(slug):
            c.error(spec, "slug", f"{label}: slug {slug!r} must hold lower-case letters, digits, '-'")
        elif slug in slugs:
            c.error(spec, "slug", f"{label}: slug {slug!r} already used by page {slugs[slug]}")
        slugs.setdefault(slug, key)
        text = c.text_file(spec, "file", spec.get("file"), label)
        if text is not None:
            c.template(spec, "file", text, label, file=spec["file"])
        for name in spec:
            if name not in PAGE_KEYS:
                c.error(spec, name, f"{label}: unknown key {name!r} (expected one of "
                                    f"{', '.join(PAGE_KEYS)})")
        form = _page_form(c, spec, label) if "form" in spec else FormSpec()
        pages[str(key)] = Page(key=str(key), file=str(spec.get("file")), slug=slug,
                               title=spec.get("title"), form=form)
    return pages


def _page_form(c: _Checker, page, label: str) -> FormSpec:
    """`form:` of a page: fields (posted name -> lead field, on top of the same-named
    standard fields), consent (the checkbox and the words shown), source (a source field ->
    visit parameters, first present wins, or {value: text})."""
    section = c.mapping(page, "form")
    if section is None:
        return FormSpec()
    label = f"{label}: form"
    for name in section:
        if name not in FORM_KEYS:
            c.error(section, name, f"{label}: unknown key {name!r} (expected one of "
                                   f"{', '.join(FORM_KEYS)})")
    default = FormSpec()
    return FormSpec(fields={**default.fields, **_form_fields(c, section, label)},
                    consent=_form_consent(c, section, label),
                    source={**default.source, **_form_source(c, section, label)})


def _form_fields(c: _Checker, form, label: str) -> dict[str, str]:
    section = c.mapping(form, "fields", required=False) or {}
    found = {}
    for name, target in section.items():
        if not isinstance(name, str) or not FORM_NAME.match(name) or name in RESERVED_FORM_NAMES:
            c.error(section, name, f"{label}.fields: {name!r} cannot be a form field's name "
                                   "(letters, digits, _ and -; not email or csrf_token)")
        elif not isinstance(target, str) or not (
                target in FORM_FIELDS or (target.startswith("custom.")
                                          and FIELD.match(target.removeprefix("custom.")))):
            c.error(section, name, f"{label}.fields.{name}: {target!r} is not a lead field a "
                                   f"form may fill in ({', '.join(FORM_FIELDS)}, or custom.NAME)")
        else:
            found[name] = target
    return found


def _form_consent(c: _Checker, form, label: str) -> Consent | None:
    section = c.mapping(form, "consent", required=False)
    if section is None:
        return None
    name, text = section.get("field"), section.get("text")
    if not isinstance(name, str) or not FORM_NAME.match(name) or name in RESERVED_FORM_NAMES:
        c.error(section, "field", f"{label}.consent: 'field' names the checkbox (letters, "
                                  "digits, _ and -)")
        return None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_CONSENT_TEXT:
        c.error(section, "text", f"{label}.consent: 'text' is the wording the form shows, 1 "
                                 f"to {MAX_CONSENT_TEXT} characters")
        return None
    return Consent(field=name, text=" ".join(text.split()))


def _form_source(c: _Checker, form, label: str) -> dict[str, SourceRule]:
    section = c.mapping(form, "source", required=False) or {}
    found = {}
    for name, rule in section.items():
        where = f"{label}.source.{name}"
        if name not in SOURCE_FIELDS:
            c.error(section, name, f"{label}.source: {name!r} is not a source field "
                                   f"({', '.join(SOURCE_FIELDS)})")
        elif isinstance(rule, dict) and set(rule) == {"value"} and isinstance(rule["value"], str) \
                and 0 < len(rule["value"]) <= MAX_VISIT_VALUE:
            found[name] = SourceRule(value=rule["value"])
        else:
            params = [rule] if isinstance(rule, str) else rule
            if not isinstance(params, list) or not params or any(
                    p not in VISIT_PARAMS for p in params):
                c.error(section, name, f"{where}: a visit parameter ({', '.join(VISIT_PARAMS)}), "
                                       "a list of them (the first present wins), or {value: TEXT}")
            else:
                found[name] = SourceRule(params=tuple(params))
    return found


def _move_targets(rules, sla) -> set[str]:
    """Tracks rules move leads to (rules.non_responders.move_to, sla.stalled_track): a side
    track must be one of them."""
    nr = rules.get("non_responders") if isinstance(rules, dict) else None
    targets = (nr.get("move_to") if isinstance(nr, dict) else None,
               sla.get("stalled_track") if isinstance(sla, dict) else None)
    return {target for target in targets if isinstance(target, str)}


def _tracks(c: _Checker, data, personas, emails, move_targets) -> dict[str, tuple[Step, ...]] | None:
    section = c.mapping(data, "tracks")
    if section is None:
        return None
    tracks = {}
    for key, steps in section.items():
        persona, _, segment = str(key).partition("/")
        if not segment:
            c.error(section, key, f"track {key!r} must be named persona/stage")
        elif personas is not None and persona not in personas:
            c.error(section, key, f"track {key}: unknown persona {persona!r}")
        elif segment not in STAGES and key not in move_targets and segment not in move_targets:
            c.error(section, key, f"track {key}: unknown stage {segment!r} (a side track must "
                                  "be the target of a move_to rule or of sla.stalled_track)")
        if not isinstance(steps, list):
            c.error(section, key, f"track {key}: must be a list of steps")
            continue
        tracks[str(key)] = tuple(_steps(c, str(key), steps, emails))
    return tracks


def _steps(c: _Checker, track: str, steps: LineSeq, emails) -> list[Step]:
    parsed, seen = [], set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1 or not ({"email", "wait"} & set(step)):
            c.error(steps, i, f"track {track} step {i + 1}: use {{email: NAME}} or {{wait: DURATION}}")
            continue
        if "email" in step:
            name = str(step["email"])
            if emails is not None and name not in emails:
                c.error(steps, i, f"track {track} step {i + 1}: unknown email {name!r}")
            elif name in seen:
                c.error(steps, i, f"track {track} step {i + 1}: email {name!r} appears twice")
            seen.add(name)
            parsed.append(Step(email=name))
        else:
            try:
                parsed.append(Step(wait=Wait.parse(step["wait"])))
            except ValueError as exc:
                c.error(steps, i, f"track {track} step {i + 1}: {exc}")
    return parsed


def _rules(c: _Checker, rules: LineMap, tracks) -> Rules | None:
    for extra in set(rules) - {"exit_on_stages", "non_responders"}:
        c.error(rules, extra, f"rules: unknown key {extra!r}")
    exit_on = rules.get("exit_on_stages", sorted(Rules().exit_on_stages))
    if not isinstance(exit_on, list):
        c.error(rules, "exit_on_stages", "rules.exit_on_stages must be a list of stages")
        exit_on = []
    for i, stage in enumerate(exit_on):
        if stage not in STAGES:
            c.error(exit_on, i, f"rules.exit_on_stages: unknown stage {stage!r}")
    nr = rules.get("non_responders")
    non_responders = None
    if nr is not None:
        if not isinstance(nr, dict):
            c.error(rules, "non_responders", "rules.non_responders must be a mapping")
            return None
        after = nr.get("after_sends")
        if not isinstance(after, int) or isinstance(after, bool) or after < 1:
            c.error(nr, "after_sends", "rules.non_responders.after_sends must be a positive integer")
        move_to = nr.get("move_to")
        if move_to is not None and tracks is not None and not _move_target_exists(str(move_to), tracks):
            c.error(nr, "move_to", f"rules.non_responders.move_to: unknown track {move_to!r}")
        non_responders = NonResponders(after_sends=after if isinstance(after, int) else 0, move_to=move_to)
    return Rules(exit_on_stages=frozenset(s for s in exit_on if s in STAGES), non_responders=non_responders)


def _move_target_exists(move_to: str, tracks: dict) -> bool:
    """A full track name, or a side-track name that at least one persona has."""
    if "/" in move_to:
        return move_to in tracks
    return any(key.partition("/")[2] == move_to for key in tracks)


# -- scoring and SLAs ---------------------------------------------------------------------

def _is_number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _known_keys(c: _Checker, mapping, allowed, label: str) -> None:
    for key in mapping:
        if key not in allowed:
            c.error(mapping, key,
                    f"{label}: unknown key {key!r} (expected one of {', '.join(allowed)})")


def _section(c: _Checker, parent, key, label: str) -> LineMap:
    """A mapping inside a scoring or SLA section; empty when absent or null."""
    value = parent.get(key)
    if value is None:
        return LineMap()
    if not isinstance(value, dict):
        c.error(parent, key, f"{label} must be a mapping")
        return LineMap()
    return value


def _list(c: _Checker, parent, key, label: str) -> LineSeq:
    value = parent.get(key)
    if value is None:
        return LineSeq()
    if not isinstance(value, list):
        c.error(parent, key, f"{label} must be a list")
        return LineSeq()
    return value


def _points(c: _Checker, container, key, label: str, *, positive: bool = False) -> float:
    value = container.get(key)
    if not _is_number(value) or value < 0 or (positive and value == 0):
        c.error(container, key,
                f"{label} must be a number {'>' if positive else '>='} 0, got {value!r}")
        return 0.0
    return float(value)


def _duration(c: _Checker, container, key, label: str):
    try:
        value = parse_duration(container[key])
    except ValueError as exc:
        c.error(container, key, f"{label}: {exc}")
        return None
    if not value:
        c.error(container, key, f"{label} must be longer than 0")
        return None
    return value


def _page_slug(pages: dict[str, Page], name) -> str | None:
    """A page named by its key or its slug, as its slug."""
    if name in pages:
        return pages[name].slug
    return next((p.slug for p in pages.values() if p.slug == name), None)


def _scoring(c: _Checker, data, pages, emails) -> ScoringRules:
    """The `scoring:` section (none: nothing scores, no MQL threshold). Errors go to `c`; the
    value returned then is incomplete and never used."""
    section = c.mapping(data, "scoring", required=False)
    if section is None:
        return ScoringRules()
    _known_keys(c, section, SCORING_KEYS, "scoring")
    behaviour, caps, by_page = {}, {}, {}
    for key, target in (("behaviour", behaviour), ("daily_caps", caps)):
        points = _section(c, section, key, f"scoring.{key}")
        for kind in points:
            if kind not in EVENT_KINDS:
                c.error(points, kind, f"scoring.{key}: unknown event kind {kind!r} "
                                      f"(expected one of {', '.join(EVENT_KINDS)})")
            else:
                target[kind] = _points(c, points, kind, f"scoring.{key}.{kind}",
                                       positive=key == "daily_caps")
    page_points = _section(c, section, "pages", "scoring.pages")
    for name in page_points:
        slug = _page_slug(pages, name) if pages is not None else str(name)
        if slug is None:
            c.error(page_points, name, f"scoring.pages: unknown page {name!r} "
                                       "(use a page key or slug from pages:)")
        elif slug in by_page:
            c.error(page_points, name, f"scoring.pages: page {name!r} is listed twice")
        else:
            by_page[slug] = _points(c, page_points, name, f"scoring.pages.{name}")
    decay = _section(c, section, "decay", "scoring.decay")
    _known_keys(c, decay, ("half_life",), "scoring.decay")
    half_life = (_duration(c, decay, "half_life", "scoring.decay.half_life")
                 if "half_life" in decay else None)
    fit = _fit_rules(c, _list(c, section, "fit", "scoring.fit"))
    if section.get("mql") is None and (behaviour or by_page or fit):
        c.error(section if "mql" in section else data, "mql" if "mql" in section else "scoring",
                "scoring: missing 'mql' with a 'threshold' (points alone never make an MQL)")
    threshold, requires = _mql(c, section)
    triggers = _triggers(c, _list(c, section, "triggers", "scoring.triggers"), pages, emails)
    return ScoringRules(behaviour=behaviour, pages=by_page, daily_caps=caps, half_life=half_life,
                        fit=fit, threshold=threshold, requires=requires, triggers=triggers)


def _fit_rules(c: _Checker, rules: LineSeq) -> tuple[FitRule, ...]:
    parsed = []
    for i, rule in enumerate(rules):
        label = f"scoring.fit {i + 1}"
        if not isinstance(rule, dict):
            c.error(rules, i, f"{label}: must be a mapping with field, points and a condition")
            continue
        _known_keys(c, rule, FIT_KEYS, label)
        name = rule.get("field")
        if name is None:
            c.error(rule, "field", f"{label}: missing 'field'")
        elif not isinstance(name, str) or not FIELD.match(name):
            c.error(rule, "field", f"{label}: field {name!r} is not a lead field name "
                                   "(lower-case letters, digits and '_')")
        if "points" in rule:
            points = _points(c, rule, "points", f"{label}.points")
        else:
            c.error(rule, "points", f"{label}: missing 'points'")
            points = 0.0
        if not {"matches", "in", "at_least", "at_most"} & set(rule):
            c.error(rule, "field", f"{label}: give a condition: matches, in, at_least or at_most")
        matches = _pattern(c, rule, label) if "matches" in rule else None
        any_of = _values(c, rule, label) if "in" in rule else None
        bounds = {}
        for key in ("at_least", "at_most"):
            if key in rule:
                if _is_number(rule[key]):
                    bounds[key] = float(rule[key])
                else:
                    c.error(rule, key, f"{label}.{key} must be a number, got {rule[key]!r}")
        if len(bounds) == 2 and bounds["at_least"] > bounds["at_most"]:
            c.error(rule, "at_most", f"{label}: at_most is below at_least")
        parsed.append(FitRule(field=str(name), points=points, matches=matches, any_of=any_of,
                              **bounds))
    return tuple(parsed)


def _pattern(c: _Checker, rule, label: str) -> str | None:
    pattern = rule["matches"]
    if not isinstance(pattern, str) or not pattern:
        c.error(rule, "matches", f"{label}.matches must be a regular expression (quoted text)")
        return None
    if len(pattern) > MAX_PATTERN:
        c.error(rule, "matches", f"{label}.matches: regex longer than {MAX_PATTERN} characters")
        return None
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        c.error(rule, "matches", f"{label}.matches: bad regex {pattern!r}: {exc} (fit regexes use "
                                 "RE2 syntax, which runs in linear time)")
        return None
    return pattern


def _values(c: _Checker, rule, label: str) -> tuple[str, ...] | None:
    values = rule["in"]
    if not isinstance(values, list) or not values:
        c.error(rule, "in", f"{label}.in must be a non-empty list of values")
        return None
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            c.error(values, i, f"{label}.in: {value!r} is not a text value "
                               "(quote yes, no, on, off, true and false)")
    return tuple(str(v) for v in values)


def _mql(c: _Checker, section) -> tuple[float | None, tuple[str, ...]]:
    if section.get("mql") is None:
        return None, ()
    mql = _section(c, section, "mql", "scoring.mql")
    _known_keys(c, mql, ("threshold", "requires"), "scoring.mql")
    threshold = None
    if "threshold" not in mql:
        c.error(section, "mql", "scoring.mql: missing 'threshold'")
    elif not _is_number(mql["threshold"]) or mql["threshold"] <= 0:
        c.error(mql, "threshold",
                f"scoring.mql.threshold must be a number > 0, got {mql['threshold']!r}")
    else:
        threshold = float(mql["threshold"])
    requires = _list(c, mql, "requires", "scoring.mql.requires")
    for i, name in enumerate(requires):
        if not isinstance(name, str) or not FIELD.match(name):
            c.error(requires, i, f"scoring.mql.requires: {name!r} is not a lead field name "
                                 "(lower-case letters, digits and '_')")
    return threshold, tuple(str(name) for name in requires)


def _triggers(c: _Checker, triggers: LineSeq, pages, emails) -> tuple[Trigger, ...]:
    parsed = []
    for i, trigger in enumerate(triggers):
        label = f"scoring.triggers {i + 1}"
        if not isinstance(trigger, dict):
            c.error(triggers, i, f"{label}: must be a mapping like {{on: page_view, page: pricing, "
                                 "route: sales}")
            continue
        keys = _key_names(trigger)
        values = {name: trigger[key] for name, key in keys.items()}
        for name, key in keys.items():
            if name not in TRIGGER_KEYS:
                c.error(trigger, key, f"{label}: unknown key {name!r} "
                                      f"(expected one of {', '.join(TRIGGER_KEYS)})")
        for name in ("on", "page", "email", "route", "enroll"):
            if values.get(name) is not None and not isinstance(values[name], str):
                c.error(trigger, keys[name],
                        f"{label}: '{name}' must be a name, got {values[name]!r}")
                values[name] = None
        kind, page, email = values.get("on"), values.get("page"), values.get("email")
        if "on" not in keys:
            c.error(triggers, i, f"{label}: missing 'on' (the event kind)")
        elif kind is not None and kind not in EVENT_KINDS:
            c.error(trigger, keys["on"], f"{label}: unknown event kind {kind!r} "
                                         f"(expected one of {', '.join(EVENT_KINDS)})")
        if kind in EVENT_KINDS:
            page, email = _response_target(c, trigger, label, (kind,), page, email, pages, emails)
        route, enroll = values.get("route"), values.get("enroll")
        if "route" in keys and "enroll" in keys:
            c.error(trigger, "enroll", f"{label}: give either 'route' or 'enroll', not both")
        elif "route" not in keys and "enroll" not in keys:
            c.error(triggers, i,
                    f"{label}: missing what to do: 'route: sales' or 'enroll: PROGRAM'")
        elif route is not None and route not in ROUTES:
            c.error(trigger, "route", f"{label}: unknown route {route!r} "
                                      f"(expected {', '.join(ROUTES)})")
        elif enroll is not None and not SLUG.match(enroll):
            c.error(trigger, "enroll", f"{label}: enroll: {enroll!r} is not a program name")
        parsed.append(Trigger(on=str(kind), page=page, email=email, route=route, enroll=enroll))
    return tuple(parsed)


def _key_names(mapping) -> dict:
    """Each key of a mapping by its name: YAML 1.1 reads a bare `on` key as the boolean true."""
    return {("on" if key is True else key): key for key in mapping}


def _response_target(c: _Checker, container, label: str, kinds, page, email, pages,
                     emails) -> tuple[str | None, str | None]:
    """The page (as its slug) or email a rule on responses of `kinds` is limited to: a page
    for page_view and form_submitted, an email for open, click and consumed."""
    if page is not None:
        if any(kind not in PAGE_KINDS for kind in kinds):
            c.error(container, "page", f"{label}: 'page' applies to page_view and form_submitted")
        elif pages is not None:
            slug = _page_slug(pages, page)
            if slug is None:
                c.error(container, "page", f"{label}: unknown page {page!r}")
            page = slug
    if email is not None:
        if any(kind not in EMAIL_KINDS for kind in kinds):
            c.error(container, "email", f"{label}: 'email' applies to open, click and consumed")
        elif emails is not None and email not in emails:
            c.error(container, "email", f"{label}: unknown email {email!r}")
    return page, email


def _sender(c: _Checker, data, default_from: str | None) -> dict:
    """`sender: {from: "Acme <hello@acme.example>", reply_to: ..., address: ...}`; without
    `from`, NURTURE_FROM. A program always has a sender, so nothing fails at send time."""
    sender = c.mapping(data, "sender", required=False)
    if sender is None:
        if data.get("sender") is not None:  # not a mapping: said already
            return {}
        sender = {}
    _known_keys(c, sender, SENDER_KEYS, "sender")
    result = {key: sender[key] for key in SENDER_KEYS if sender.get(key) is not None}
    if "from" not in result:
        if default_from is None:
            c.error(data, "sender", "missing sender.from (e.g. sender: {from: \"Acme "
                                    "<hello@acme.example>\"}), and NURTURE_FROM is not set")
            return result
        if not is_address(default_from):
            c.error(data, "sender", f"no sender.from, and NURTURE_FROM {default_from[:100]!r} is "
                                    "not an email address")
            return result
        result["from"] = default_from
    for key in ("from", "reply_to"):
        if key in sender and not is_address(sender[key]):
            c.error(sender, key, f"sender.{key}: {str(sender[key])[:100]!r} is not an email "
                                 "address (write hello@acme.example or \"Acme <hello@acme.example>\"; "
                                 "quote a name with a comma)")
    if "address" in result and not isinstance(result["address"], str):
        c.error(sender, "address", "sender.address must be text (the postal address)")
    return result


def _launch_notify(c: _Checker, launch) -> tuple[str, ...]:
    """`launch: {notify: [sales@..., support@...]}`: who hears what the program does at launch."""
    if launch is None:
        return ()
    _known_keys(c, launch, ("notify",), "launch")
    notify = launch.get("notify") or []
    if not isinstance(notify, list) or len(notify) > MAX_NOTIFY:
        c.error(launch, "notify", f"launch.notify must be a list of at most {MAX_NOTIFY} addresses")
        return ()
    addresses = []
    for value in notify:
        try:
            addresses.append(normalise_email(value if isinstance(value, str) else ""))
        except Invalid:
            c.error(launch, "notify", f"launch.notify: {str(value)[:80]!r} is not an email address")
    return tuple(addresses)


def _sla(c: _Checker, sla, tracks) -> SlaRules:
    """The `sla:` section (none: the defaults, 14 days each, no stalled track)."""
    if sla is None:
        return SlaRules()
    _known_keys(c, sla, SLA_KEYS, "sla")
    default = SlaRules()
    durations = {}
    for key in ("mql_response", "opportunity_stalled"):
        value = _duration(c, sla, key, f"sla.{key}") if key in sla else None
        durations[key] = value or getattr(default, key)
    stalled = sla.get("stalled_track")
    if stalled is not None:
        if not isinstance(stalled, str) or not stalled.strip():
            c.error(sla, "stalled_track", "sla.stalled_track must be a track name")
        elif tracks is not None and not _move_target_exists(stalled, tracks):
            c.error(sla, "stalled_track", f"sla.stalled_track: unknown track {stalled!r}")
    escalate_to = sla.get("escalate_to")
    if escalate_to is not None and (not isinstance(escalate_to, str) or not escalate_to.strip()
                                    or len(escalate_to) > 200):
        c.error(sla, "escalate_to",
                "sla.escalate_to must be a name or address of at most 200 characters")
    return SlaRules(stalled_track=stalled, escalate_to=escalate_to, **durations)


# -- kind, goal and stage advancement ---------------------------------------------------------

def _kind(c: _Checker, data) -> str | None:
    """`kind: inbound` (outbound, cold, cross-sell, sales-support, or a name of one's own)."""
    kind = data.get("kind")
    if kind is not None and (not isinstance(kind, str) or not SLUG.match(kind)):
        c.error(data, "kind", f"kind must be {', '.join(PROGRAM_KINDS)} or a name of your own "
                              f"(lower-case letters, digits and '-'), got {kind!r}")
        return None
    return kind


def _goal(c: _Checker, data, pages, emails) -> Goal | None:
    """`goal: {stage: opportunity, within: 90d}` or `{event: form_submitted, page: demo}`."""
    goal = c.mapping(data, "goal", required=False)
    if goal is None:
        return None
    _known_keys(c, goal, GOAL_KEYS, "goal")
    stage, event = goal.get("stage"), goal.get("event")
    page, email = (_name(c, goal, key, "goal") for key in ("page", "email"))
    if (stage is None) == (event is None):
        c.error(data, "goal", "goal: give either 'stage' (a stage to reach) or 'event' (a "
                              "response, e.g. {event: form_submitted, page: demo_request})")
    if stage is not None and stage not in STAGES:
        c.error(goal, "stage", f"goal.stage: unknown stage {stage!r} "
                               f"(expected one of {', '.join(STAGES)})")
    if event is not None and event not in EVENT_KINDS:
        c.error(goal, "event", f"goal.event: unknown event kind {event!r} "
                               f"(expected one of {', '.join(EVENT_KINDS)})")
    if event is None and (page is not None or email is not None):
        c.error(goal, "page" if page is not None else "email",
                "goal: 'page' and 'email' apply to an event goal")
    elif event in EVENT_KINDS:
        page, email = _response_target(c, goal, "goal", (event,), page, email, pages, emails)
    within = _duration(c, goal, "within", "goal.within") if "within" in goal else None
    return Goal(stage=stage, event=event, page=page, email=email, within=within)


def _advance(c: _Checker, data, pages, emails) -> tuple[AdvanceRule, ...]:
    """`advance: [{from: inquiry, to: engaged, on: [click]}, {from: engaged, to: recycled,
    idle: 90d}]`: each move must be legal in the stage transition table."""
    rules = _list(c, data, "advance", "advance")
    parsed = []
    for i, rule in enumerate(rules):
        label = f"advance {i + 1}"
        if not isinstance(rule, dict):
            c.error(rules, i, f"{label}: must be a mapping like {{from: inquiry, to: engaged, "
                              "on: [click, form_submitted]}")
            continue
        keys = _key_names(rule)
        for name, key in keys.items():
            if name not in ADVANCE_KEYS:
                c.error(rule, key, f"{label}: unknown key {name!r} "
                                   f"(expected one of {', '.join(ADVANCE_KEYS)})")
        from_stages = _from_stages(c, rule, label)
        to = rule.get("to")
        if to is None:
            c.error(rules, i, f"{label}: missing 'to' (the stage to move to)")
        elif to not in STAGES:
            c.error(rule, "to", f"{label}: unknown stage {to!r} (expected one of {', '.join(STAGES)})")
        else:
            _check_moves(c, rule, label, from_stages, to)
        on = _response_kinds(c, rule, keys.get("on"), label) if "on" in keys else ()
        idle = _duration(c, rule, "idle", f"{label}.idle") if "idle" in keys else None
        if ("on" in keys) == ("idle" in keys):
            c.error(rules, i, f"{label}: give either 'on' (response kinds, e.g. [click, "
                              "form_submitted]) or 'idle' (a time without response, e.g. 90d)")
        page, email = (_name(c, rule, key, label) for key in ("page", "email"))
        if "on" not in keys and (page is not None or email is not None):
            c.error(rule, "page" if page is not None else "email",
                    f"{label}: 'page' and 'email' apply to an 'on' rule")
        elif on:
            page, email = _response_target(c, rule, label, on, page, email, pages, emails)
        parsed.append(AdvanceRule(from_stages=from_stages, to=str(to), on=on, page=page,
                                  email=email, idle=idle))
    return tuple(parsed)


def _name(c: _Checker, mapping, key: str, label: str) -> str | None:
    """A page or email name given in `mapping`, or None (when absent, or not text: said)."""
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        c.error(mapping, key, f"{label}: '{key}' must be a name, got {value!r}")
        return None
    return value


def _from_stages(c: _Checker, rule, label: str) -> tuple[str, ...]:
    value = rule.get("from")
    if value is None:
        c.error(rule, "from", f"{label}: missing 'from' (a stage, or a list of stages)")
        return ()
    stages = value if isinstance(value, list) else [value]
    if not stages:
        c.error(rule, "from", f"{label}: 'from' must name at least one stage")
    for j, stage in enumerate(stages):
        if stage not in STAGES:
            where = (stages, j) if isinstance(value, list) else (rule, "from")
            c.error(*where, f"{label}: unknown stage {stage!r} in 'from' "
                            f"(expected one of {', '.join(STAGES)})")
    return tuple(dict.fromkeys(str(stage) for stage in stages if stage in STAGES))


def _check_moves(c: _Checker, rule, label: str, from_stages, to: str) -> None:
    """Every from -> to move the rule makes must be one the stage transition table allows."""
    for stage in from_stages:
        if stage == to:
            c.error(rule, "to", f"{label}: 'to' is {to}, a stage it moves from")
            continue
        try:
            check_transition(stage, to)
        except IllegalTransition as exc:
            c.error(rule, "to", f"{label}: {exc.detail}")


def _response_kinds(c: _Checker, rule, key, label: str) -> tuple[str, ...]:
    value = rule[key]
    kinds = value if isinstance(value, list) else [value]
    if not kinds:
        c.error(rule, key, f"{label}: 'on' must name at least one response kind")
    for j, kind in enumerate(kinds):
        if kind not in EVENT_KINDS:
            where = (kinds, j) if isinstance(value, list) else (rule, key)
            c.error(*where, f"{label}: unknown response kind {kind!r} in 'on' "
                            f"(expected one of {', '.join(EVENT_KINDS)})")
    return tuple(dict.fromkeys(str(kind) for kind in kinds if kind in EVENT_KINDS))
