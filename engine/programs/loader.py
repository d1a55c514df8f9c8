"""Read and validate a program directory, reporting every error at once as `file:line: message`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.leads.stages import STAGES
from engine.programs.spec import (
    DAYS,
    Email,
    NonResponders,
    Page,
    Persona,
    Program,
    Rules,
    SendWindow,
    Step,
    parse_duration,
)

PROGRAM_FILE = "program.yaml"
MAX_FILE_BYTES = 2 * 1024 * 1024
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
MATCH_OPS = ("contains", "in", "equals")
TOP_KEYS = {
    "program", "name", "timezone", "sender", "send_window", "personas", "emails", "pages",
    "tracks", "rules",
}
_jinja = ImmutableSandboxedEnvironment()


@dataclass(frozen=True)
class ProgramError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class LoadedProgram:
    program: Program
    files: dict[str, str]  # relative path -> text of every referenced email and page
    content_hash: str
    source: str


class ProgramInvalid(Exception):
    def __init__(self, errors: list[ProgramError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


# -- YAML with line numbers ---------------------------------------------------------------

class _Map(dict):
    """A mapping that remembers the line of each key (1-based) and its own line."""

    line: int = 1
    key_lines: dict


class _Seq(list):
    line: int = 1
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        mapping = _Map(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {
            self.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value
        }
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = _Seq(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        seq.item_lines = [item.start_mark.line + 1 for item in node.value]
        return seq


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence)


def _line(container, key) -> int:
    if isinstance(container, _Map):
        return container.key_lines.get(key, container.line)
    if isinstance(container, _Seq) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", 1)


# -- validation -------------------------------------------------------------------------

class _Checker:
    def __init__(self, directory: Path):
        self.directory = directory
        self.errors: list[ProgramError] = []
        self.files: dict[str, str] = {}

    def error(self, container, key, message: str, file: str = PROGRAM_FILE) -> None:
        self.errors.append(ProgramError(file, _line(container, key), message))

    def mapping(self, parent, key, *, required: bool = True) -> _Map | None:
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            if required:
                self.error(parent, key, f"missing {key!r}")
            return None
        if not isinstance(value, dict):
            self.error(parent, key, f"{key!r} must be a mapping")
            return None
        return value

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
            line = offset + (exc.lineno or 1) if file != PROGRAM_FILE else _line(container, key)
            self.errors.append(ProgramError(file, line, f"{label}: template syntax error: {exc.message}"))


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
        data = yaml.load(source, Loader=_LineLoader)
    except UnicodeDecodeError as exc:
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1, f"not UTF-8: {exc.reason}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, line, f"YAML syntax error: {problem}")]) from exc
    if not isinstance(data, dict):
        raise ProgramInvalid([ProgramError(PROGRAM_FILE, 1, "program.yaml must be a mapping")])
    checker = _Checker(directory)
    program = _validate(checker, data)
    if checker.errors or program is None:
        raise ProgramInvalid(sorted(checker.errors, key=lambda e: (e.file, e.line)))
    digest = hashlib.sha256(source.encode())
    for name in sorted(checker.files):
        digest.update(b"\0" + name.encode() + b"\0" + checker.files[name].encode())
    return LoadedProgram(program, checker.files, digest.hexdigest(), source)


def validate_program_dir(directory: str | Path) -> list[ProgramError]:
    try:
        load_program_dir(directory)
    except ProgramInvalid as exc:
        return exc.errors
    return []


def _validate(c: _Checker, data: _Map) -> Program | None:
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
    rules_map = c.mapping(data, "rules", required=False) or _Map()
    move_targets = _move_targets(rules_map)
    tracks = _tracks(c, data, personas, emails, move_targets)
    rules = _rules(c, rules_map, tracks)
    sender = data.get("sender") or {}
    if not isinstance(sender, dict):
        c.error(data, "sender", "'sender' must be a mapping with 'from' and optional 'reply_to'")
        sender = {}
    if c.errors or None in (tz, window, personas, emails, pages, tracks, rules):
        return None
    return Program(
        slug=slug, name=str(data.get("name") or slug), timezone=tz, send_window=window,
        personas=personas, emails=emails, pages=pages, tracks=tracks, rules=rules,
        sender=dict(sender),
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
        return SendWindow() if "send_window" not in data else None
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
        return {} if "pages" not in data else None
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
        pages[str(key)] = Page(key=str(key), file=str(spec.get("file")), slug=slug, title=spec.get("title"))
    return pages


def _move_targets(rules) -> set[str]:
    nr = rules.get("non_responders") if isinstance(rules, dict) else None
    target = nr.get("move_to") if isinstance(nr, dict) else None
    return {target} if isinstance(target, str) else set()


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
            c.error(section, key, f"track {key}: unknown stage {segment!r} "
                                  "(a side track must be the target of a move_to rule)")
        if not isinstance(steps, list):
            c.error(section, key, f"track {key}: must be a list of steps")
            continue
        tracks[str(key)] = tuple(_steps(c, str(key), steps, emails))
    return tracks


def _steps(c: _Checker, track: str, steps: _Seq, emails) -> list[Step]:
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
                parsed.append(Step(wait=parse_duration(step["wait"])))
            except ValueError as exc:
                c.error(steps, i, f"track {track} step {i + 1}: {exc}")
    return parsed


def _rules(c: _Checker, rules: _Map, tracks) -> Rules | None:
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
