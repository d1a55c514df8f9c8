"""The CRM field map (crm.yaml): which fields of a lead, contact, account and opportunity sync
with the CRM, under which CRM names, which way, and who wins when both sides changed; value
maps for stages and picklists; whether an MQL goes to the CRM as a lead or as a contact.

    mql_as: contact                        # or lead (the default)
    conflict: prefer_crm_unless_blank      # the rule of every field that names none
    objects:
      lead:
        - {local: email, crm: Email}       # direction: both unless it says
        - {local: stage, crm: Status, direction: push, values: lead_status}
        - {local: custom.employees, crm: NumberOfEmployees, direction: pull, conflict: always_crm}
      account:
        - {local: domain, crm: Website}
    values:
      lead_status: {inquiry: Open, engaged: Working, mql: Marketing Qualified}

Rules, checked with every error named by file and line (`load_map`):

- objects: lead, contact, account, opportunity. One the file leaves out keeps DEFAULT_MAP's
  rules; `lead: []` syncs nothing of a lead.
- local fields (LOCAL_FIELDS): a lead's or contact's standard fields, `owner`, and any custom
  field as `custom.NAME`; an account's and an opportunity's own. Each local field, and each CRM
  field (compared ignoring case), is mapped once per object.
- direction: push (ours to the CRM), pull (the CRM's to us) or both.
- conflict (RULES), when both sides changed a field: prefer_crm_unless_blank (the CRM's value
  unless it is blank), always_crm, always_local, most_recent (the later change; a tie goes to
  the CRM), never_sync (each side keeps its own: ours stays).
- values: a value map is local value -> CRM value, applied both ways, so it must be one-to-one;
  a value it does not list passes unchanged. A lead's or contact's `stage` maps only real
  stages; an opportunity's `status` only open, won and lost.

The map in effect is the instance's: NURTURE_CRM_MAP, by default instance/crm.yaml
(`current_map`); without that file, DEFAULT_MAP. A program directory may keep a crm.yaml with
its program: `nurture program validate` checks it, but only the instance's is applied. An
invalid map in effect fails every use loudly (MapInvalid, listing its errors): syncing fields
by a map nobody wrote would be worse.

The map is applied in two places only: when an event's body is made (engine/crm/events.py,
renaming its fields for the CRM), and when a field change is written (`pushes`: only the
fields the CRM takes are told). Sessions find the map of their database's instance in
`session.info` (`session_info`, `map_for`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.leads.fields import CUSTOM_NAME
from engine.leads.models import STANDARD_FIELDS
from engine.leads.stages import STAGES
from engine.yaml_lines import (
    Checker,
    FileError,
    FileInvalid,
    LineMap,
    LineSeq,
    read_yaml,
    shown,
)

MAP_FILE = "crm.yaml"
MAX_FILE_BYTES = 1024 * 1024
OBJECTS = ("lead", "contact", "account", "opportunity")
PUSH, PULL, BOTH = "push", "pull", "both"
DIRECTIONS = (PUSH, PULL, BOTH)
PREFER_CRM_UNLESS_BLANK = "prefer_crm_unless_blank"
ALWAYS_CRM = "always_crm"
ALWAYS_LOCAL = "always_local"
MOST_RECENT = "most_recent"
NEVER_SYNC = "never_sync"
RULES = (PREFER_CRM_UNLESS_BLANK, ALWAYS_CRM, ALWAYS_LOCAL, MOST_RECENT, NEVER_SYNC)
MQL_AS = ("lead", "contact")
CUSTOM = "custom."  # a custom field of a lead or contact: custom.NAME
PERSON_FIELDS = (*STANDARD_FIELDS, "owner")
ACCOUNT_FIELDS = ("name", "domain", "industry", "employees", "country", "owner")
OPPORTUNITY_FIELDS = ("name", "amount", "currency", "stage", "close_date", "owner", "status")
OPPORTUNITY_STATUSES = ("open", "won", "lost")
# The local fields a map may name, per object (custom.NAME besides, for lead and contact).
LOCAL_FIELDS: dict[str, tuple[str, ...]] = {
    "lead": PERSON_FIELDS, "contact": PERSON_FIELDS,
    "account": ACCOUNT_FIELDS, "opportunity": OPPORTUNITY_FIELDS,
}
WITH_CUSTOM = ("lead", "contact")
TOP_KEYS = ("mql_as", "conflict", "objects", "values")
RULE_KEYS = ("local", "crm", "direction", "conflict", "values")
MAX_CRM_NAME = 255
INFO_KEY = "crm_map_path"  # in session.info: the file of the map in effect


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field: its local name, its CRM name, the way it syncs, the rule when both sides
    changed it, and the value map its values go through (a name under `values`, or None)."""

    local: str
    crm: str
    direction: str = BOTH
    conflict: str = PREFER_CRM_UNLESS_BLANK
    values: str | None = None

    @property
    def pushes(self) -> bool:
        return self.direction in (PUSH, BOTH)

    @property
    def pulls(self) -> bool:
        return self.direction in (PULL, BOTH)


@dataclass(frozen=True, slots=True)
class Settled:
    """Which value a field keeps when both sides changed it, who won, and by which rule."""

    value: Any
    winner: str  # "crm" or "local"
    rule: str


class MapInvalid(FileInvalid):
    """A field map with errors, each as `file:line: message`."""


def is_blank(value: Any) -> bool:
    """None, or text of nothing but spaces: what never erases a value."""
    return value is None or (isinstance(value, str) and not value.strip())


def settle(rule: str, *, local: Any, crm: Any, local_at: datetime | None,
           crm_at: datetime | None) -> Settled:
    """The value a field keeps when both sides changed it, by `rule` (RULES). Both values in
    local terms (from_crm has mapped the CRM's). With most_recent a change of unknown time is
    older than any other, and a tie goes to the CRM."""
    if rule == PREFER_CRM_UNLESS_BLANK:
        return Settled(local, "local", rule) if is_blank(crm) else Settled(crm, "crm", rule)
    if rule == ALWAYS_CRM:
        return Settled(crm, "crm", rule)
    if rule in (ALWAYS_LOCAL, NEVER_SYNC):
        return Settled(local, "local", rule)
    if rule == MOST_RECENT:
        if local_at is not None and (crm_at is None or local_at > crm_at):
            return Settled(local, "local", rule)
        return Settled(crm, "crm", rule)
    raise ValueError(f"unknown conflict rule {rule!r} (one of {', '.join(RULES)})")


@dataclass(frozen=True)
class _Index:
    by_local: dict[str, FieldRule]
    named_custom: frozenset[str]  # custom.NAME named by a rule, whatever its direction
    pulled: dict[str, FieldRule]  # by CRM name


@dataclass(frozen=True)
class CrmMap:
    """A field map, checked. `source` is its file (None: DEFAULT_MAP); `defaulted`, the
    objects the file leaves out, which keep DEFAULT_MAP's rules; `custom_as_is`, the objects
    whose custom fields no rule names go to the CRM as they are, under `custom` (a lead's and
    a contact's, by DEFAULT_MAP: without a map, the CRM hears everything by our names)."""

    mql_as: str
    default_conflict: str
    objects: Mapping[str, tuple[FieldRule, ...]]
    values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    source: str | None = None
    defaulted: frozenset[str] = frozenset()
    custom_as_is: frozenset[str] = frozenset()

    def rules(self, obj: str) -> tuple[FieldRule, ...]:
        if obj not in OBJECTS:
            raise ValueError(f"unknown CRM object {obj!r} (one of {', '.join(OBJECTS)})")
        return self.objects.get(obj, ())

    def rule(self, obj: str, local_field: str) -> FieldRule | None:
        return self._index(obj).by_local.get(local_field)

    def pushes(self, obj: str, local_field: str) -> bool:
        """Whether a change of `local_field` (a name, or custom.NAME) goes to the CRM."""
        index = self._index(obj)
        rule = index.by_local.get(local_field)
        if rule is not None:
            return rule.pushes
        return local_field.startswith(CUSTOM) and obj in self.custom_as_is

    def crm_field(self, obj: str, local_field: str) -> str | None:
        """The CRM's name of a field the map pushes, else None (a custom field pushed as it is
        keeps its custom.NAME)."""
        rule = self._index(obj).by_local.get(local_field)
        if rule is not None:
            return rule.crm if rule.pushes else None
        return local_field if self.pushes(obj, local_field) else None

    def to_crm(self, obj: str, local: Mapping) -> dict:
        """The pushed fields present in `local` by their CRM names, values mapped; custom.NAME
        is read from local["custom"]["NAME"]. (The custom fields pushed as they are, with
        `custom_as_is`: `as_is`.)"""
        found: dict = {}
        custom = local.get("custom") or {}
        for rule in self.rules(obj):
            if not rule.pushes:
                continue
            if rule.local.startswith(CUSTOM):
                name = rule.local.removeprefix(CUSTOM)
                if name not in custom:
                    continue
                value = custom[name]
            elif rule.local in local:
                value = local[rule.local]
            else:
                continue
            found[rule.crm] = self.crm_value(rule, value)
        return found

    def as_is(self, obj: str, custom: Mapping) -> dict:
        """Of `custom` (NAME -> value), the fields the CRM hears as they are: with
        `custom_as_is`, those no rule names; else none."""
        if obj not in self.custom_as_is:
            return {}
        named = self._index(obj).named_custom
        return {name: value for name, value in custom.items() if CUSTOM + name not in named}

    def from_crm(self, obj: str, remote: Mapping) -> dict:
        """The pulled fields present in `remote` by our names, values mapped back; custom
        fields as {"custom": {NAME: value}}."""
        found: dict = {}
        custom: dict = {}
        for name, rule in self._index(obj).pulled.items():
            if name not in remote:
                continue
            value = self.local_value(rule, remote[name])
            if rule.local.startswith(CUSTOM):
                custom[rule.local.removeprefix(CUSTOM)] = value
            else:
                found[rule.local] = value
        if custom:
            found["custom"] = custom
        return found

    def unmapped(self, obj: str, remote: Mapping) -> list[str]:
        """The CRM's fields in `remote` that the map does not pull, in their order."""
        pulled = self._index(obj).pulled
        return [name for name in remote if name not in pulled]

    def crm_value(self, rule: FieldRule, value: Any) -> Any:
        """`value` as the CRM knows it, by the rule's value map (unlisted: unchanged)."""
        return _lookup(self.values.get(rule.values) if rule.values else None, value)

    def local_value(self, rule: FieldRule, value: Any) -> Any:
        """A CRM value as we know it, by the rule's value map read backwards."""
        return _lookup(self._reversed.get(rule.values) if rule.values else None, value)

    def settle(self, obj: str, local_field: str, *, local: Any, crm: Any,
               local_at: datetime | None, crm_at: datetime | None) -> Settled:
        """Settle a change both sides made to `local_field` by its rule (a field the map does
        not name: the map's default rule)."""
        rule = self.rule(obj, local_field)
        return settle(rule.conflict if rule else self.default_conflict, local=local, crm=crm,
                      local_at=local_at, crm_at=crm_at)

    def _index(self, obj: str) -> _Index:
        if obj not in OBJECTS:
            raise ValueError(f"unknown CRM object {obj!r} (one of {', '.join(OBJECTS)})")
        return self._indexes[obj]

    @cached_property
    def _indexes(self) -> dict[str, _Index]:
        indexes = {}
        for obj in OBJECTS:
            rules = self.objects.get(obj, ())
            custom = [rule for rule in rules if rule.local.startswith(CUSTOM)]
            indexes[obj] = _Index(
                by_local={rule.local: rule for rule in rules},
                named_custom=frozenset(rule.local for rule in custom),
                pulled={rule.crm: rule for rule in rules if rule.pulls})
        return indexes

    @cached_property
    def _reversed(self) -> dict[str, dict]:
        return {name: {crm: local for local, crm in pairs.items()}
                for name, pairs in self.values.items()}


def _lookup(pairs: Mapping | None, value: Any) -> Any:
    if not pairs:
        return value
    try:
        return pairs.get(value, value)
    except TypeError:  # a list or mapping: no value map lists it
        return value


def _default_rules(obj: str, conflict: str) -> tuple[FieldRule, ...]:
    direction = PUSH if obj in WITH_CUSTOM else BOTH
    return tuple(FieldRule(name, name, direction, conflict) for name in LOCAL_FIELDS[obj])


# Without a map: a lead's and a contact's standard fields, owner and custom fields pushed by
# our names (what the CRM was told before there were maps); accounts and opportunities by our
# names both ways. MQLs go as leads.
DEFAULT_MAP = CrmMap(
    mql_as="lead", default_conflict=PREFER_CRM_UNLESS_BLANK,
    objects={obj: _default_rules(obj, PREFER_CRM_UNLESS_BLANK) for obj in OBJECTS},
    defaulted=frozenset(OBJECTS), custom_as_is=frozenset(WITH_CUSTOM))


# -- reading and checking a file -----------------------------------------------------------------

def load_map(path: str | Path, *, name: str | None = None) -> CrmMap:
    """Read and check a map file; errors name it as `name` (default: the path as given).
    Raises MapInvalid listing every error."""
    path = Path(path)
    name = name or str(path)
    data = read_yaml(path, name, max_bytes=MAX_FILE_BYTES, what="a CRM field map",
                     invalid=MapInvalid)
    checker = Checker(name)
    crm_map = _check(checker, data, source=str(path))
    if checker.errors or crm_map is None:
        raise MapInvalid(sorted(checker.errors, key=lambda e: e.line))
    return crm_map


def check_program_map(directory: str | Path) -> list[FileError]:
    """The errors of the crm.yaml a program directory keeps, if it has one (named crm.yaml, as
    the program's own files are)."""
    path = Path(directory) / MAP_FILE
    if path.is_symlink():
        return [FileError(MAP_FILE, 1, "a symbolic link is not read: keep the map itself in "
                                       "the program directory")]
    if not path.exists():
        return []
    try:
        load_map(path, name=MAP_FILE)
    except MapInvalid as exc:
        return exc.errors
    return []


def _check(c: Checker, data: LineMap, *, source: str) -> CrmMap | None:
    _repeated(c, data, "")
    for key in data:
        if key not in TOP_KEYS:
            c.error(data, key, f"unknown key {shown(key)} (expected one of "
                               f"{', '.join(TOP_KEYS)})")
    mql_as = data.get("mql_as", "lead")
    if mql_as not in MQL_AS:
        c.error(data, "mql_as", f"mql_as must be lead or contact (how an MQL goes to the CRM), "
                                f"not {shown(mql_as)}")
    conflict = data.get("conflict", PREFER_CRM_UNLESS_BLANK)
    if conflict not in RULES:
        c.error(data, "conflict", f"conflict: unknown rule {shown(conflict)} (one of "
                                  f"{', '.join(RULES)})")
        conflict = PREFER_CRM_UNLESS_BLANK
    values = _value_maps(c, data)
    objects = _objects(c, data, conflict, values)
    if c.errors:
        return None
    left_out = frozenset(obj for obj in OBJECTS if obj not in objects)
    for obj in left_out:
        objects[obj] = _default_rules(obj, conflict)
    return CrmMap(mql_as=mql_as, default_conflict=conflict,
                  objects={obj: objects[obj] for obj in OBJECTS},
                  values={name: dict(pairs) for name, pairs in values.items()}, source=source,
                  defaulted=left_out, custom_as_is=left_out & DEFAULT_MAP.custom_as_is)


def _repeated(c: Checker, mapping: LineMap, label: str) -> None:
    for key, line, first in getattr(mapping, "repeated", ()):
        c.errors.append(FileError(c.file, line, f"{label}{shown(key)} is written twice (first "
                                                f"on line {first}; only this one would count)"))


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _value_maps(c: Checker, data: LineMap) -> dict[str, LineMap]:
    section = c.mapping(data, "values", required=False)
    if section is None:
        return {}
    _repeated(c, section, "values: ")
    maps = {}
    for name, pairs in section.items():
        label = f"values.{name}" if isinstance(name, str) else "values"
        if not isinstance(name, str) or not name.strip():
            c.error(section, name, f"values: a value map's name must be text, not {shown(name)}")
            continue
        maps[name] = None  # known from here, so that rules naming it are not told otherwise
        if not isinstance(pairs, dict) or not pairs:
            c.error(section, name, f"{label} must be a mapping of local value: CRM value "
                                   f"(e.g. mql: Marketing Qualified), not "
                                   f"{'nothing' if not pairs else shown(pairs)}")
            continue
        _repeated(c, pairs, f"{label}: ")
        crm_values: dict = {}
        ok = True
        for local, crm in pairs.items():
            if not _is_scalar(local):
                c.error(pairs, local, f"{label}: a local value must be text or a number, not "
                                      f"{shown(local)}")
                ok = False
                continue
            if not _is_scalar(crm):
                c.error(pairs, local, f"{label}: {shown(local)} must map to text or a number, "
                                      f"not {'nothing' if crm is None else shown(crm)}")
                ok = False
                continue
            if crm in crm_values:
                c.error(pairs, local, f"{label}: {shown(crm_values[crm])} and {shown(local)} "
                                      f"both map to {shown(crm)}: a value map must be "
                                      "one-to-one (the CRM's value must tell which of ours it "
                                      "means)")
                ok = False
                continue
            crm_values[crm] = local
        if ok:
            maps[name] = pairs
    return maps


def _objects(c: Checker, data: LineMap, conflict: str,
             values: dict[str, LineMap | None]) -> dict[str, tuple[FieldRule, ...]]:
    section = c.mapping(data, "objects", required=False)
    if section is None:
        return {}
    _repeated(c, section, "objects: ")
    found: dict[str, tuple[FieldRule, ...]] = {}
    checked_values: set = set()
    for obj, items in section.items():
        if obj not in OBJECTS:
            c.error(section, obj, f"objects: unknown object {shown(obj)} (one of "
                                  f"{', '.join(OBJECTS)})")
            continue
        if items is None:
            items = LineSeq()
        if not isinstance(items, list):
            c.error(section, obj, f"objects.{obj} must be a list of fields like "
                                  "{local: email, crm: Email}")
            continue
        rules = []
        by_local: dict[str, int] = {}
        by_crm: dict[str, int] = {}
        for index, item in enumerate(items):
            rule = _rule(c, obj, items, index, item, conflict, values)
            if not isinstance(item, dict):
                continue
            number, once = index + 1, True
            local, crm = item.get("local"), item.get("crm")
            if _local_field(obj, local):
                if local in by_local:
                    c.error(item, "local", f"objects.{obj}: {local} is mapped twice (field "
                                           f"{by_local[local]} maps it already)")
                    once = False
                by_local.setdefault(local, number)
            if _crm_name(crm):
                if crm.casefold() in by_crm:
                    c.error(item, "crm", f"objects.{obj}: CRM field {crm!r} is mapped twice "
                                         f"(field {by_crm[crm.casefold()]} maps it already; "
                                         "CRM names are compared ignoring case)")
                    once = False
                by_crm.setdefault(crm.casefold(), number)
            if rule is not None and once:
                rules.append(rule)
                _check_values(c, obj, rule, values, checked_values)
        found[obj] = tuple(rules)
    return found


def _rule(c: Checker, obj: str, items: LineSeq, index: int, item, conflict: str,
          values: dict[str, LineMap | None]) -> FieldRule | None:
    label = f"objects.{obj} field {index + 1}"
    if not isinstance(item, dict):
        c.error(items, index, f"{label}: must be a mapping like {{local: email, crm: Email}}, "
                              f"not {shown(item)}")
        return None
    ok = True
    local = item.get("local")
    if local is None:
        c.error(items, index, f"{label}: missing 'local' (the field's name here)")
        ok = False
    elif not _local_field(obj, local):
        allowed = ", ".join(LOCAL_FIELDS[obj]) + (", custom.NAME" if obj in WITH_CUSTOM else "")
        c.error(item, "local", f"{label}: unknown local field {shown(local)} for {obj} "
                               f"(one of {allowed})")
        ok = False
    else:
        label = f"objects.{obj} {local}"
    _repeated(c, item, f"{label}: ")
    for key in item:
        if key not in RULE_KEYS:
            c.error(item, key, f"{label}: unknown key {shown(key)} (expected one of "
                               f"{', '.join(RULE_KEYS)})")
            ok = False
    crm = item.get("crm")
    if crm is None:
        c.error(items, index, f"{label}: missing 'crm' (the field's name in the CRM)")
        ok = False
    elif not _crm_name(crm):
        c.error(item, "crm", f"{label}: the CRM field must be one line of text, at most "
                             f"{MAX_CRM_NAME} characters, not {shown(crm)}")
        ok = False
    direction = item.get("direction", BOTH)
    if direction not in DIRECTIONS:
        c.error(item, "direction", f"{label}: unknown direction {shown(direction)} (push: ours "
                                   "to the CRM, pull: the CRM's to us, both)")
        ok = False
    rule = item.get("conflict", conflict)
    if rule not in RULES:
        c.error(item, "conflict", f"{label}: unknown conflict rule {shown(rule)} (one of "
                                  f"{', '.join(RULES)})")
        ok = False
    value_map = item.get("values")
    if value_map is not None and (not isinstance(value_map, str) or value_map not in values):
        known = ", ".join(str(name) for name in values)
        c.error(item, "values", f"{label}: unknown value map {shown(value_map)} "
                                + (f"(defined: {known})" if known
                                   else "(define it under 'values:')"))
        ok = False
    if not ok:
        return None
    return FieldRule(local=local, crm=crm, direction=direction, conflict=rule, values=value_map)


def _local_field(obj: str, local) -> bool:
    if not isinstance(local, str):
        return False
    if local in LOCAL_FIELDS[obj]:
        return True
    name = local.removeprefix(CUSTOM)
    return (obj in WITH_CUSTOM and local.startswith(CUSTOM) and bool(CUSTOM_NAME.match(name))
            and name not in STANDARD_FIELDS)


def _crm_name(crm) -> bool:
    return (isinstance(crm, str) and 0 < len(crm) <= MAX_CRM_NAME and crm == crm.strip()
            and crm.isprintable())


def _check_values(c: Checker, obj: str, rule: FieldRule, values: dict[str, LineMap | None],
                  checked: set) -> None:
    """The local side of a stage's or an opportunity status's value map holds real ones."""
    pairs = values.get(rule.values) if rule.values else None
    if not pairs:
        return
    if obj in WITH_CUSTOM and rule.local == "stage":
        allowed, what = STAGES, "a stage"
    elif obj == "opportunity" and rule.local == "status":
        allowed, what = OPPORTUNITY_STATUSES, "an opportunity status"
    else:
        return
    for local in pairs:
        if local not in allowed and (rule.values, local) not in checked:
            checked.add((rule.values, local))
            c.error(pairs, local, f"values.{rule.values}: {shown(local)} is not {what} "
                                  f"(one of {', '.join(allowed)}); objects.{obj} maps "
                                  f"{rule.local} through it")


# -- the map in effect ----------------------------------------------------------------------------

_loaded: dict[Path, tuple[tuple, CrmMap | MapInvalid]] = {}
_loading = threading.Lock()


def map_path(settings: Settings) -> Path:
    """The instance's map file: NURTURE_CRM_MAP, else instance/crm.yaml."""
    return settings.crm_map_path or settings.instance_path / MAP_FILE


def current_map(settings: Settings) -> CrmMap:
    """The map in effect: the instance's file if it exists, else DEFAULT_MAP. Raises MapInvalid
    when the file is invalid."""
    return map_at(map_path(settings))


def map_at(path: Path | None) -> CrmMap:
    """The map in `path`, read again only when the file changes (its modification time, size
    or inode): delivery asks for it per batch, a write per lead. No file: DEFAULT_MAP."""
    if path is None:
        return DEFAULT_MAP
    try:
        stat = path.stat()
    except FileNotFoundError:
        return DEFAULT_MAP
    except OSError as exc:
        raise MapInvalid([FileError(str(path), 1, f"cannot read the CRM field map: "
                                                  f"{exc.strerror or exc}")]) from None
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = _loaded.get(path)
    if cached is None or cached[0] != key:
        with _loading:
            cached = _loaded.get(path)
            if cached is None or cached[0] != key:
                try:
                    result: CrmMap | MapInvalid = load_map(path)
                except MapInvalid as exc:
                    result = exc
                cached = _loaded[path] = (key, result)
    if isinstance(cached[1], MapInvalid):
        raise MapInvalid(cached[1].errors)
    return cached[1]


def session_info(settings: Settings) -> dict:
    """What the sessions of the instance's database carry (engine/migrate.py open_database),
    so that a service finds the map in effect with `map_for(session)`."""
    return {INFO_KEY: map_path(settings)}


def map_of(info: Mapping) -> CrmMap:
    """The map in effect for a database's sessions (Database.info); DEFAULT_MAP for one
    opened without an instance (a test's, a benchmark's)."""
    return map_at(info.get(INFO_KEY))


def map_for(session) -> CrmMap:
    return map_of(session.info)

