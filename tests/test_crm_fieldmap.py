"""The CRM field map (crm.yaml) as the person who writes it and the CRM that receives its
events see it: every mistake named at its line, hostile files refused, fields renamed and
values mapped both ways, conflicts settled by their rules, the map in effect read once per
change of its file, the events delivered by the CRM's names, and `nurture crm map`."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.crm import fieldmap
from engine.crm.delivery import CrmWebhook, deliver_all
from engine.crm.events import event_body
from engine.crm.fieldmap import (
    DEFAULT_MAP,
    INFO_KEY,
    LOCAL_FIELDS,
    RULES,
    FieldRule,
    MapInvalid,
    Settled,
    current_map,
    load_map,
    map_at,
    settle,
)
from engine.crm.models import CrmOutboxItem
from engine.crm.receiver import Receiver
from engine.db import Database
from engine.leads.models import STANDARD_FIELDS
from engine.leads.service import set_stage, write_lead

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SECRET = "field-map-secret"
MAP = """\
mql_as: contact
conflict: prefer_crm_unless_blank
objects:
  lead:
    - {local: email, crm: Email, conflict: always_local}
    - {local: first_name, crm: FirstName}
    - {local: company, crm: Company}
    - {local: title, crm: Title, direction: push}
    - {local: source_channel, crm: LeadSource, direction: push, values: lead_source}
    - {local: stage, crm: Status, direction: push, values: lead_status}
    - {local: owner, crm: OwnerId, direction: pull, conflict: always_crm}
    - {local: custom.employees, crm: NumberOfEmployees, conflict: most_recent}
  account:
    - {local: name, crm: Name}
    - {local: domain, crm: Website}
  opportunity:
    - {local: stage, crm: StageName, values: opportunity_stage}
    - {local: amount, crm: Amount}
    - {local: status, crm: Status__c, values: opportunity_status}
values:
  lead_status: {inquiry: Open, engaged: Working, mql: Marketing Qualified, sal: Accepted}
  lead_source: {webinar: Webinar, organic: Web}
  opportunity_stage: {prospecting: Prospecting, won: Closed Won, lost: Closed Lost}
  opportunity_status: {open: Open, won: Won, lost: Lost}
"""


def write(tmp_path: Path, text: str, name: str = "crm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def errors_of(path: Path) -> list[str]:
    with pytest.raises(MapInvalid) as caught:
        load_map(path)
    return [str(error) for error in caught.value.errors]


@pytest.fixture
def sample(tmp_path):
    return load_map(write(tmp_path, MAP))


# -- reading a map ------------------------------------------------------------------------------

def test_a_map_reads_as_written_with_the_defaults_filled_in(sample, tmp_path):
    assert sample.mql_as == "contact" and sample.default_conflict == "prefer_crm_unless_blank"
    assert sample.source == str(tmp_path / "crm.yaml")
    lead = {rule.local: rule for rule in sample.rules("lead")}
    assert lead["company"] == FieldRule("company", "Company", "both",
                                        "prefer_crm_unless_blank", None)
    assert lead["stage"] == FieldRule("stage", "Status", "push", "prefer_crm_unless_blank",
                                      "lead_status")
    assert lead["custom.employees"].conflict == "most_recent"
    assert sample.values["lead_status"]["mql"] == "Marketing Qualified"
    # the contact is left out: it keeps the default map's fields, under the file's rule
    assert sample.defaulted == {"contact"} and sample.custom_as_is == {"contact"}
    assert [rule.local for rule in sample.rules("contact")] == [*STANDARD_FIELDS, "owner"]


def test_an_object_written_empty_syncs_nothing(tmp_path):
    crm_map = load_map(write(tmp_path, "objects:\n  lead: []\n  contact:\n"))
    assert crm_map.rules("lead") == crm_map.rules("contact") == ()
    assert not crm_map.pushes("lead", "email") and not crm_map.pushes("lead", "custom.x")
    assert crm_map.to_crm("lead", {"email": "a@b.example", "custom": {"x": 1}}) == {}


def test_every_mistake_is_named_at_its_line_all_at_once(tmp_path):
    text = """\
mql_as: account
conflict: prefer_us
colour: blue
objects:
  lead:
    - {local: email, crm: Email, direction: sideways}
    - {local: compnay, crm: Company}
    - {local: stage, crm: Status, values: lead_state}
    - {local: email, crm: EmailAddress}
    - {local: title, crm: EMAIL}
    - {local: country, crm: Country, conflict: newest}
    - {local: timezone, crm: 42}
    - {local: persona}
    - {crm: Persona__c}
    - {local: consent, crm: Consent__c, colour: red}
    - just a field
  account:
    - {local: custom.size, crm: Size__c}
    - {local: revenue, crm: AnnualRevenue}
  deal: []
values:
  lead_status: {inquiry: Open, hot: Hot, engaged: Open}
  lead_source: [Web, Webinar]
"""
    path = write(tmp_path, text)
    at = lambda needle: f"{path}:{line_of(text, needle)}: "
    person = ("email, first_name, last_name, company, title, country, timezone, persona, stage, "
              "source_channel, source_offer, source_partner, consent, owner, custom.NAME")
    assert errors_of(path) == [
        at("mql_as") + "mql_as must be lead or contact (how an MQL goes to the CRM), not "
                       "'account'",
        at("conflict: prefer_us") + "conflict: unknown rule 'prefer_us' (one of "
                                    + ", ".join(RULES) + ")",
        at("colour: blue") + "unknown key 'colour' (expected one of mql_as, conflict, "
                             "objects, values)",
        at("sideways") + "objects.lead email: unknown direction 'sideways' (push: ours to the "
                         "CRM, pull: the CRM's to us, both)",
        at("compnay") + f"objects.lead field 2: unknown local field 'compnay' for lead (one of "
                        f"{person})",
        at("lead_state") + "objects.lead stage: unknown value map 'lead_state' (defined: "
                           "lead_status, lead_source)",
        at("EmailAddress") + "objects.lead: email is mapped twice (field 1 maps it already)",
        at("EMAIL") + "objects.lead: CRM field 'EMAIL' is mapped twice (field 1 maps it "
                      "already; CRM names are compared ignoring case)",
        at("newest") + "objects.lead country: unknown conflict rule 'newest' (one of "
                       + ", ".join(RULES) + ")",
        at("crm: 42") + "objects.lead timezone: the CRM field must be one line of text, at "
                        "most 255 characters, not 42",
        at("{local: persona}") + "objects.lead persona: missing 'crm' (the field's name in "
                                 "the CRM)",
        at("Persona__c") + "objects.lead field 9: missing 'local' (the field's name here)",
        at("colour: red") + "objects.lead consent: unknown key 'colour' (expected one of "
                            "local, crm, direction, conflict, values)",
        at("just a field") + "objects.lead field 11: must be a mapping like {local: email, "
                             "crm: Email}, not 'just a field'",
        at("custom.size") + "objects.account field 1: unknown local field 'custom.size' for "
                            "account (one of name, domain, industry, employees, country, owner)",
        at("revenue") + "objects.account field 2: unknown local field 'revenue' for account "
                        "(one of name, domain, industry, employees, country, owner)",
        at("deal") + "objects: unknown object 'deal' (one of lead, contact, account, "
                     "opportunity)",
        at("lead_status:") + "values.lead_status: 'inquiry' and 'engaged' both map to 'Open': "
                             "a value map must be one-to-one (the CRM's value must tell which "
                             "of ours it means)",
        at("lead_source:") + "values.lead_source must be a mapping of local value: CRM value "
                             "(e.g. mql: Marketing Qualified), not a list",
    ]


def test_a_stage_value_map_holds_real_stages_and_a_status_map_open_won_lost(tmp_path):
    text = """\
objects:
  contact:
    - {local: stage, crm: Lifecycle__c, values: stages}
  lead:
    - {local: stage, crm: Status, values: stages}
    - {local: source_channel, crm: LeadSource, values: stages}
  opportunity:
    - {local: status, crm: Status__c, values: statuses}
values:
  stages: {inquiry: Open, hot: Hot}
  statuses: {open: Open, closed: Closed}
"""
    path = write(tmp_path, text)
    stages = "inquiry, engaged, mql, sal, opportunity, customer, recycled, disqualified"
    assert errors_of(path) == [  # once per map and value, whoever else uses it
        (f"{path}:10: values.stages: 'hot' is not a stage (one of {stages}); objects.contact "
        "maps stage through it"),
        (f"{path}:11: values.statuses: 'closed' is not an opportunity status (one of open, won, "
        "lost); objects.opportunity maps status through it"),
    ]


def test_a_key_written_twice_is_an_error_not_a_silent_last_one(tmp_path):
    text = "mql_as: lead\nobjects:\n  lead:\n    - {local: email, crm: Email, crm: Mail}\n" \
           "mql_as: contact\n"
    path = write(tmp_path, text)
    assert errors_of(path) == [
        (f"{path}:4: objects.lead email: 'crm' is written twice (first on line 4; only this "
        "one would count)"),
        f"{path}:5: 'mql_as' is written twice (first on line 1; only this one would count)",
    ]


def test_a_custom_field_must_have_a_custom_fields_name(tmp_path):
    text = "objects:\n  lead:\n    - {local: custom.Employees, crm: A}\n" \
           "    - {local: custom.email, crm: B}\n    - {local: custom., crm: C}\n"
    errors = errors_of(write(tmp_path, text))
    assert [e.split(": ", 2)[1:] for e in errors] == [
        ["objects.lead field 1", (f"unknown local field 'custom.Employees' for lead (one of "
                                 f"{', '.join(LOCAL_FIELDS['lead'])}, custom.NAME)")],
        ["objects.lead field 2", (f"unknown local field 'custom.email' for lead (one of "
                                 f"{', '.join(LOCAL_FIELDS['lead'])}, custom.NAME)")],
        ["objects.lead field 3", (f"unknown local field 'custom.' for lead (one of "
                                 f"{', '.join(LOCAL_FIELDS['lead'])}, custom.NAME)")]]


@pytest.mark.parametrize("text, error", [
    ("objects: [lead]\n", "1: 'objects' must be a mapping"),
    ("objects:\n  lead: {local: email, crm: Email}\n",
     "2: objects.lead must be a list of fields like {local: email, crm: Email}"),
    ("values: {m: {a: [1, 2]}}\nobjects: {lead: [{local: stage, crm: S, values: m}]}\n",
     "1: values.m: 'a' must map to text or a number, not a list"),
    ("values: {m: {a: }}\n", "1: values.m: 'a' must map to text or a number, not nothing"),
    ("objects: {lead: [{local: stage, crm: S, values: [m]}]}\n",
     "1: objects.lead stage: unknown value map a list (define it under 'values:')"),
    ("objects: {lead: [{local: [email], crm: E}]}\n",
     "1: objects.lead field 1: unknown local field a list for lead"),
    ("objects: {lead: [{local: email, crm: ' Email'}]}\n",
     "1: objects.lead email: the CRM field must be one line of text"),
    ("objects: {lead: [{local: email, crm: \"E\\nmail\"}]}\n",
     "1: objects.lead email: the CRM field must be one line of text"),
    ("mql_as: yes\n", "1: mql_as must be lead or contact (how an MQL goes to the CRM), not True"),
    ("- a\n- list\n", "1: a CRM field map must be a mapping"),
    ("", "1: a CRM field map must be a mapping (the file is empty)"),
    ("objects:\n  lead: [\n    {local: email\n", "4: YAML syntax error: "),
])
def test_a_wrong_shape_is_an_error_at_its_line(tmp_path, text, error):
    path = write(tmp_path, text)
    [message] = errors_of(path)
    assert message.startswith(f"{path}:{error}"), message


# -- hostile files ------------------------------------------------------------------------------

def test_a_huge_file_is_refused_unread(tmp_path, monkeypatch):
    path = write(tmp_path, "# padding\n" * 110_000)  # over 1 MB
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    assert errors_of(path) == [f"{path}:1: larger than 1048576 bytes: not a CRM field map"]
    assert read == []


def test_a_file_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "crm.yaml"
    path.write_bytes(b"mql_as: lead\nobjects: caf\xe9\n")
    assert errors_of(path) == [f"{path}:1: not UTF-8: invalid continuation byte"]
    path.write_bytes(b"mql_as: lead\n\x00\x01\x02binary")
    assert errors_of(path) == [f"{path}:2: not a text file: character U+0000 is not allowed"]


def test_an_alias_bomb_is_refused_at_once_without_being_expanded(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    lines += ["objects: {lead: *a9, account: [*a9]}", "values: {m: *a9, n: {x: *a9}}"]
    path = write(tmp_path, "\n".join(lines) + "\n")  # 10^10 x's, expanded
    started = time.process_time()
    errors = errors_of(path)
    assert time.process_time() - started < 2
    assert f"{path}:1: unknown key 'a0' (expected one of mql_as, conflict, objects, values)" \
        in errors
    # an alias is the content its anchor wrote: errors point there, and name a list as such
    assert len(errors) == 10 + 10 + 1 + 2
    assert errors[-4:] == [
        f"{path}:10: unknown key 'a9' (expected one of mql_as, conflict, objects, values)",
        (f"{path}:10: objects.account field 1: must be a mapping like {{local: email, crm: "
        "Email}, not a list"),
        (f"{path}:12: values.m must be a mapping of local value: CRM value (e.g. mql: "
        "Marketing Qualified), not a list"),
        f"{path}:12: values.n: 'x' must map to text or a number, not a list",
    ]
    assert f"{path}:9: objects.lead field 10: must be a mapping like {{local: email, crm: " \
           "Email}, not a list" in errors


def test_a_deeply_nested_file_is_an_error_not_a_crash(tmp_path):
    path = write(tmp_path, "mql_as: lead\nobjects: " + "[" * 5000 + "]" * 5000 + "\n")
    assert errors_of(path) == [f"{path}:2: YAML: nested deeper than 64 levels"]


def test_a_missing_file_or_a_directory_is_named(tmp_path):
    assert errors_of(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}:1: no such file (expected a CRM field map)"]
    assert errors_of(tmp_path) == [(f"{tmp_path}:1: not a regular file (expected a CRM field "
                                   "map)")]


# -- fields both ways ---------------------------------------------------------------------------

def test_our_fields_go_by_the_crms_names_and_come_back_by_ours(sample):
    ours = {"email": "ada@globex.example", "first_name": "Ada", "company": "Globex",
            "title": "CTO", "source_channel": "webinar", "stage": "mql", "owner": "rita",
            "country": "FR", "custom": {"employees": 120, "shoe_size": 38}}
    theirs = sample.to_crm("lead", ours)
    assert theirs == {"Email": "ada@globex.example", "FirstName": "Ada", "Company": "Globex",
                      "Title": "CTO", "LeadSource": "Webinar", "Status": "Marketing Qualified",
                      "NumberOfEmployees": 120}  # owner is pulled only; country, shoe size: unmapped
    back = sample.from_crm("lead", {**theirs, "OwnerId": "005xx", "Industry": "Retail"})
    assert back == {"email": "ada@globex.example", "first_name": "Ada", "company": "Globex",
                    "owner": "005xx", "custom": {"employees": 120}}  # title, source, stage: pushed only
    assert sample.unmapped("lead", {**theirs, "OwnerId": "005xx", "Industry": "Retail"}) == [
        "Title", "LeadSource", "Status", "Industry"]


def test_value_maps_work_both_ways_and_let_unlisted_values_through(sample):
    stage = next(rule for rule in sample.rules("opportunity") if rule.local == "stage")
    assert sample.crm_value(stage, "won") == "Closed Won"
    assert sample.local_value(stage, "Closed Won") == "won"
    assert sample.crm_value(stage, "negotiation") == "negotiation"
    assert sample.local_value(stage, "Id. Decision Makers") == "Id. Decision Makers"
    remote = {"StageName": "Closed Lost", "Amount": 1200.5, "Status__c": "Lost"}
    assert sample.from_crm("opportunity", remote) == {"stage": "lost", "amount": 1200.5,
                                                      "status": "lost"}
    assert sample.to_crm("opportunity", sample.from_crm("opportunity", remote)) == remote
    assert sample.to_crm("lead", {"source_channel": "trade-show"}) == {"LeadSource": "trade-show"}


def test_what_is_pushed_is_what_a_change_tells_the_crm(sample):
    assert sample.pushes("lead", "title") and sample.pushes("lead", "custom.employees")
    assert not sample.pushes("lead", "owner")  # pulled only
    assert not sample.pushes("lead", "country") and not sample.pushes("lead", "custom.shoe_size")
    assert sample.crm_field("lead", "stage") == "Status"
    assert sample.crm_field("lead", "owner") is None
    with pytest.raises(ValueError, match="unknown CRM object 'deal'"):
        sample.pushes("deal", "name")


LATER, EARLIER = MONDAY + timedelta(hours=1), MONDAY


@pytest.mark.parametrize("rule, local, crm, local_at, crm_at, expected", [
    ("prefer_crm_unless_blank", "Globex", "Globex Corp", LATER, EARLIER,
     Settled("Globex Corp", "crm", "prefer_crm_unless_blank")),
    ("prefer_crm_unless_blank", "Globex", "", EARLIER, LATER,
     Settled("Globex", "local", "prefer_crm_unless_blank")),
    ("prefer_crm_unless_blank", "Globex", None, EARLIER, LATER,
     Settled("Globex", "local", "prefer_crm_unless_blank")),
    ("prefer_crm_unless_blank", "Globex", "  ", EARLIER, LATER,
     Settled("Globex", "local", "prefer_crm_unless_blank")),
    ("always_crm", "Globex", "", LATER, EARLIER, Settled("", "crm", "always_crm")),
    ("always_local", "Globex", "Globex Corp", EARLIER, LATER,
     Settled("Globex", "local", "always_local")),
    ("most_recent", "Globex", "Globex Corp", LATER, EARLIER,
     Settled("Globex", "local", "most_recent")),
    ("most_recent", "Globex", "Globex Corp", EARLIER, LATER,
     Settled("Globex Corp", "crm", "most_recent")),
    ("most_recent", "Globex", "Globex Corp", LATER, LATER,
     Settled("Globex Corp", "crm", "most_recent")),  # a tie goes to the CRM
    ("most_recent", "Globex", "Globex Corp", LATER, None,
     Settled("Globex", "local", "most_recent")),  # a time unknown is older
    ("most_recent", "Globex", "Globex Corp", None, None,
     Settled("Globex Corp", "crm", "most_recent")),
    ("never_sync", "Globex", "Globex Corp", EARLIER, LATER,
     Settled("Globex", "local", "never_sync")),
])
def test_each_conflict_rule_settles_as_its_name_says(rule, local, crm, local_at, crm_at,
                                                     expected):
    assert settle(rule, local=local, crm=crm, local_at=local_at, crm_at=crm_at) == expected


def test_a_field_settles_by_its_own_rule_else_the_maps(sample):
    both = {"local": "Ada", "crm": "Ada L.", "local_at": LATER, "crm_at": EARLIER}
    assert sample.settle("lead", "email", **both).winner == "local"  # always_local
    assert sample.settle("lead", "custom.employees", **both).winner == "local"  # most_recent
    assert sample.settle("lead", "first_name", **both) == Settled("Ada L.", "crm",
                                                                  "prefer_crm_unless_blank")
    assert sample.settle("lead", "country", **both).rule == "prefer_crm_unless_blank"
    with pytest.raises(ValueError, match="unknown conflict rule 'newest'"):
        settle("newest", **both)


def test_the_default_map_tells_the_crm_everything_by_our_names():
    assert DEFAULT_MAP.mql_as == "lead" and DEFAULT_MAP.source is None
    assert DEFAULT_MAP.default_conflict == "prefer_crm_unless_blank"
    for obj in ("lead", "contact"):
        assert [(r.local, r.crm, r.direction) for r in DEFAULT_MAP.rules(obj)] == [
            (name, name, "push") for name in (*STANDARD_FIELDS, "owner")]
        assert DEFAULT_MAP.pushes(obj, "custom.anything")
    for obj in ("account", "opportunity"):
        assert {(r.local, r.crm, r.direction) for r in DEFAULT_MAP.rules(obj)} == {
            (name, name, "both") for name in LOCAL_FIELDS[obj]}
    lead = {"email": "ada@globex.example", "stage": "mql", "custom": {"team": "ops"}}
    assert DEFAULT_MAP.to_crm("lead", lead) == {"email": "ada@globex.example", "stage": "mql"}
    assert DEFAULT_MAP.as_is("lead", lead["custom"]) == {"team": "ops"}
    assert DEFAULT_MAP.from_crm("lead", {"email": "x@y.example"}) == {}  # pushed only
    assert DEFAULT_MAP.from_crm("account", {"name": "Globex", "Name": "?"}) == {"name": "Globex"}


# -- the map in effect ---------------------------------------------------------------------------

@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "instance"),
                              "SECRET_KEY": "k"})


def test_without_a_file_the_default_map_is_in_effect(settings):
    assert settings.crm_map_path == settings.instance_path / "crm.yaml"
    assert current_map(settings) is DEFAULT_MAP


def test_nurture_crm_map_names_another_file(tmp_path):
    other = write(tmp_path, MAP, "salesforce.yaml")
    settings = Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "instance"),
                                  "NURTURE_CRM_MAP": str(other), "SECRET_KEY": "k"})
    assert current_map(settings).mql_as == "contact"


def test_the_map_is_read_once_and_again_when_its_file_changes(settings, monkeypatch):
    reads = []
    load = fieldmap.load_map
    monkeypatch.setattr(fieldmap, "load_map", lambda path: reads.append(path) or load(path))
    settings.instance_path.mkdir()
    path = write(settings.instance_path, MAP)
    first = current_map(settings)
    assert current_map(settings) is first and len(reads) == 1
    path.write_text(MAP.replace("mql_as: contact", "mql_as: lead"), encoding="utf-8")
    assert current_map(settings).mql_as == "lead" and len(reads) == 2
    # same size, new time: read again
    path.write_text(MAP.replace("mql_as: contact", "mql_as: leaD"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(MapInvalid) as caught:
        current_map(settings)
    assert [str(e) for e in caught.value.errors] == [
        f"{path}:1: mql_as must be lead or contact (how an MQL goes to the CRM), not 'leaD'"]
    with pytest.raises(MapInvalid):  # an invalid map in effect fails every time, loudly
        current_map(settings)
    assert len(reads) == 3
    path.unlink()
    assert current_map(settings) is DEFAULT_MAP


# -- events delivered by the CRM's names --------------------------------------------------------

@pytest.fixture
def mapped_db(database_url, tmp_path) -> Database:
    """The test database, its instance's map being MAP."""
    database = Database(database_url, info={INFO_KEY: write(tmp_path, MAP)})
    yield database
    database.dispose()


@pytest.fixture
def receiver(tmp_path):
    with Receiver(tmp_path / "crm", secret=SECRET) as server:
        yield server


def deliver(db: Database, receiver: Receiver) -> list[dict]:
    webhook = CrmWebhook(url=receiver.url, secret=SECRET, timeout=2.0)
    deliver_all(db=db, webhook=webhook, worker="test", clock=lambda: MONDAY)
    return [entry.body for entry in receiver.received(accepted_only=True)]


def test_the_crm_receives_a_new_lead_and_its_mql_by_its_own_names(mapped_db, receiver):
    with mapped_db.session() as s:
        lead = write_lead(session=s, fields={
            "email": "ada@globex.example", "first_name": "Ada", "company": "Globex",
            "country": "FR", "source_channel": "webinar", "employees": "120",
            "shoe_size": "38"}, now=MONDAY, actor="api:test").lead
        set_stage(session=s, lead=lead, stage="engaged", reason="clicked", actor="scoring",
                  now=MONDAY)
        set_stage(session=s, lead=lead, stage="mql", reason="score 58", actor="scoring",
                  now=MONDAY, crm={"score": 58})
    created, engaged, mql = deliver(mapped_db, receiver)
    assert created["payload"] == {
        "actor": "api:test", "custom": {},
        "fields": {"Email": "ada@globex.example", "FirstName": "Ada", "Company": "Globex",
                   "LeadSource": "Webinar", "Status": "Open", "NumberOfEmployees": "120"}}
    assert engaged["payload"] == {"from": "inquiry", "to": "engaged", "reason": "clicked",
                                  "actor": "scoring", "crm": {"Status": "Working"},
                                  "crm_from": {"Status": "Open"}}
    assert mql["payload"] == {"from": "engaged", "to": "mql", "reason": "score 58",
                              "actor": "scoring", "score": 58, "as": "contact",
                              "crm": {"Status": "Marketing Qualified"},
                              "crm_from": {"Status": "Working"}}


def test_without_a_map_file_the_bodies_are_as_before_but_an_mqls_as(db, receiver):
    with db.session() as s:
        lead = write_lead(session=s, fields={"email": "ada@globex.example", "company": "Globex",
                                             "employees": "120"},
                          now=MONDAY, actor="api:test").lead
        set_stage(session=s, lead=lead, stage="mql", reason="score 58", actor="scoring",
                  now=MONDAY)
    created, mql = deliver(db, receiver)
    assert created["payload"] == {"actor": "api:test", "custom": {"employees": "120"},
                                  "fields": {"company": "Globex", "stage": "inquiry"}}
    assert mql["payload"] == {"from": "inquiry", "to": "mql", "reason": "score 58",
                              "actor": "scoring", "as": "lead"}


def test_items_waiting_are_renamed_by_the_map_in_effect_when_delivered(mapped_db, receiver):
    with mapped_db.session() as s:
        write_lead(session=s, fields={"email": "ada@globex.example", "company": "Globex"},
                   now=MONDAY, actor="test")
    path = mapped_db.info[INFO_KEY]
    path.write_text(MAP.replace("crm: Company}", "crm: Account_Name__c}"), encoding="utf-8")
    [created] = deliver(mapped_db, receiver)
    assert created["payload"]["fields"] == {"Email": "ada@globex.example",
                                            "Account_Name__c": "Globex", "Status": "Open"}


def test_an_invalid_map_in_effect_stops_delivery_before_it_claims_anything(mapped_db, receiver):
    with mapped_db.session() as s:
        write_lead(session=s, fields={"email": "ada@globex.example"}, now=MONDAY, actor="test")
    mapped_db.info[INFO_KEY].write_text("mql_as: account\n", encoding="utf-8")
    with pytest.raises(MapInvalid, match="crm.yaml:1: mql_as must be lead or contact"):
        deliver(mapped_db, receiver)
    with mapped_db.session() as s:
        assert [(i.status, i.attempts) for i in s.scalars(select(CrmOutboxItem))] == [
            ("pending", 0)]
    assert receiver.received() == []


def test_a_field_change_reaches_the_crm_by_its_names_and_values(mapped_db, receiver):
    with mapped_db.session() as s:
        write_lead(session=s, fields={"email": "ada@globex.example", "title": "CTO"},
                   now=MONDAY, actor="test")
        write_lead(session=s, fields={"email": "ada@globex.example", "title": "CIO",
                                      "source_channel": "organic", "country": "FR",
                                      "employees": "200"}, now=MONDAY, actor="api:test")
    _created, changed = deliver(mapped_db, receiver)
    assert changed["type"] == "field_changed"
    assert changed["payload"] == {"actor": "api:test", "changes": {
        "Title": {"from": "CTO", "to": "CIO", "local": "title"},
        "LeadSource": {"from": None, "to": "Web", "local": "source_channel"},
        "NumberOfEmployees": {"from": None, "to": "200", "local": "custom.employees"}}}


def test_event_body_renames_for_the_object_it_is_given(sample, mapped_db):
    with mapped_db.session() as s:
        write_lead(session=s, fields={"email": "ada@globex.example", "first_name": "Ada"},
                   now=MONDAY, actor="test")
        [item] = s.scalars(select(CrmOutboxItem)).all()
        # the contact is the default map's in MAP: our names, pushed
        assert event_body(item, sample, "contact")["payload"]["fields"] == {
            "email": "ada@globex.example", "first_name": "Ada", "stage": "inquiry"}
        assert event_body(item, sample)["payload"]["fields"] == {
            "Email": "ada@globex.example", "FirstName": "Ada", "Status": "Open"}


# -- nurture crm map ----------------------------------------------------------------------------

def test_map_show_prints_the_default_map_and_says_it_is_the_default(cli, env):
    result = cli("crm", "map", "show")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == (f"map in effect: the default map (no {env['NURTURE_INSTANCE']}/crm.yaml;"
                        " set NURTURE_CRM_MAP to use another file)")
    assert lines[2:5] == ["lead",
                          ("  local field          CRM field               conflict rule"
                          "            value map"),
                          "  email           -->  email                   prefer_crm_unless_blank"]
    assert "  custom.*        -->  custom.* (as they are)" in lines
    assert "  status       <->  status      prefer_crm_unless_blank" in lines
    assert lines[-2:] == ["MQLs go to the CRM as: lead",
                          "conflict rule of the fields that name none: prefer_crm_unless_blank"]


def test_map_show_prints_the_instances_map_side_by_side(cli, env):
    instance = Path(env["NURTURE_INSTANCE"])
    instance.mkdir(parents=True)
    write(instance, MAP)
    result = cli("crm", "map", "show")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f"map in effect: {instance / 'crm.yaml'}\n\nlead\n")
    assert "  stage             -->  Status             prefer_crm_unless_blank  lead_status\n" \
        in out
    assert "  owner             <--  OwnerId            always_crm\n" in out
    assert "  company           <->  Company            prefer_crm_unless_blank\n" in out
    assert "\ncontact (not in the file: the default map's)\n" in out
    assert "  lead_status\n    inquiry  ->  Open\n    engaged  ->  Working\n" \
           "    mql      ->  Marketing Qualified\n" in out
    assert "MQLs go to the CRM as: contact" in out
    data = json.loads(cli("crm", "map", "show", "--json").output)
    assert data["file"] == str(instance / "crm.yaml") and data["in_effect"] is True
    assert data["mql_as"] == "contact" and data["objects"]["contact"]["default"] is True
    assert data["objects"]["lead"]["fields"][5] == {
        "local": "stage", "crm": "Status", "direction": "push",
        "conflict": "prefer_crm_unless_blank", "values": "lead_status"}
    assert data["values"]["lead_source"] == [{"local": "webinar", "crm": "Webinar"},
                                             {"local": "organic", "crm": "Web"}]


def test_map_show_file_shows_another_and_says_which_is_in_effect(cli, env, tmp_path):
    path = write(tmp_path, MAP, "next.yaml")
    result = cli("crm", "map", "show", "--file", path)
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"map: {path} (the map in effect is the default map)"
    assert json.loads(cli("crm", "map", "show", "--file", path, "--json").output)[
        "in_effect"] is False


def test_map_show_with_an_invalid_map_in_effect_fails_naming_its_errors(cli, env):
    instance = Path(env["NURTURE_INSTANCE"])
    instance.mkdir(parents=True)
    path = write(instance, "objects:\n  lead:\n    - {local: email, crm: Email, "
                           "direction: out}\n")
    result = cli("crm", "map", "show")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        (f"{path} is not a valid CRM field map (it is the map in effect: nothing syncs by it "
        "until it is fixed):"),
        (f"{path}:3: objects.lead email: unknown direction 'out' (push: ours to the CRM, pull: "
        "the CRM's to us, both)"),
        "1 error(s)"]


def test_map_check_says_valid_or_lists_every_error(cli, tmp_path):
    good = write(tmp_path, MAP)
    result = cli("crm", "map", "check", good)
    assert result.exit_code == 0
    assert result.output == (f"{good}: valid (lead 8, contact 14 (default), account 2, "
                             "opportunity 3 field(s); MQLs go as a contact)\n")
    bad = write(tmp_path, MAP.replace("crm: Title", "crm: Company").replace(
        "mql: Marketing Qualified", "mql: Working"), "bad.yaml")
    result = cli("crm", "map", "check", bad)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        (f"{bad}:8: objects.lead: CRM field 'Company' is mapped twice (field 3 maps it already;"
        " CRM names are compared ignoring case)"),
        (f"{bad}:21: values.lead_status: 'engaged' and 'mql' both map to 'Working': a value "
        "map must be one-to-one (the CRM's value must tell which of ours it means)"),
        "2 error(s)"]


def test_program_validate_checks_the_programs_crm_yaml_with_the_program(cli, sample_program):
    assert cli("program", "validate", sample_program).exit_code == 0  # its own crm.yaml
    (sample_program / "crm.yaml").write_text("mql_as: deal\n", encoding="utf-8")
    text = (sample_program / "program.yaml").read_text(encoding="utf-8")
    (sample_program / "program.yaml").write_text(text.replace("timezone: ", "timezone: Mars/",
                                                              1), encoding="utf-8")
    result = cli("program", "validate", sample_program)
    assert result.exit_code == 1
    assert "crm.yaml:1: mql_as must be lead or contact (how an MQL goes to the CRM), not " \
           "'deal'" in result.stderr.splitlines()
    assert any(line.startswith("program.yaml:") and "unknown time zone" in line
               for line in result.stderr.splitlines())
    (sample_program / "crm.yaml").unlink()
    elsewhere = write(sample_program.parent, "mql_as: lead\n", "elsewhere.yaml")
    (sample_program / "crm.yaml").symlink_to(elsewhere)
    result = cli("program", "validate", sample_program)
    assert "crm.yaml:1: a symbolic link is not read: keep the map itself in the program " \
           "directory" in result.stderr


def test_the_samples_map_is_valid_and_names_fields_as_salesforce_does():
    sample = load_map(Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"
                      / "crm.yaml")
    assert sample.defaulted == frozenset()
    assert sample.to_crm("lead", {"email": "a@b.example", "first_name": "Ada",
                                  "last_name": "L", "company": "Globex", "title": "CIO",
                                  "country": "FR", "source_channel": "webinar",
                                  "stage": "mql"}) == {
        "Email": "a@b.example", "FirstName": "Ada", "LastName": "L", "Company": "Globex",
        "Title": "CIO", "Country": "FR", "LeadSource": "Webinar",
        "Status": "Marketing Qualified"}


def test_map_at_none_is_the_default():
    assert map_at(None) is DEFAULT_MAP


def test_the_maps_opportunity_statuses_are_the_records_own():
    from engine.crm.models import OpportunityStatus

    assert fieldmap.OPPORTUNITY_STATUSES == tuple(OpportunityStatus)
