"""The sales handoff over the JSON API as a CRM or a sales rep's tool uses it: the MQL queue
with each lead's timeline, leads one field short of qualifying, accept and reject with their
role checks and hostile input, and a lead's explanation.

Leads become MQLs the way they do in production: an email is sent, then the person's opens,
clicks and landing-page visit are stored by the tracking drainer (store_events), which scores
them. The API's clock is fixed so that decayed scores are exact.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from defects import drop_advance
from sqlalchemy import func, select

from engine.auth.service import ROLES
from engine.crm.models import CrmOutboxItem
from engine.flows.leads import upsert_lead
from engine.flows.tracking import store_events
from engine.leads.models import Lead, StageChange
from engine.leads.service import set_stage
from engine.programs.service import load_program
from engine.sales.models import SalesNotification
from engine.scoring.models import ScoreEvent
from engine.sending.models import OutboxMessage
from engine.sending.suppression import suppress
from engine.tracking.models import TrackingEvent
from engine.tracking.service import new_event
from engine.web.app import MAX_REQUEST_BYTES, create_app

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the first email goes at once
NOW = MONDAY + timedelta(days=2)  # the API's clock
HALF_LIFE = timedelta(days=30)  # the sample's decay
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
PERSON_IP = "203.0.113.7"
GUIDE = "https://acme.example/guide?utm_source=nurture"
PAGE_TOKEN = "eyJsIjoxfQ.secret-personal-token"
PRICING = f"http://localhost:5000/p/acme-nurture/pricing?t={PAGE_TOKEN}"
IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}  # it_manager persona, fit 15


# -- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture
def clock(monkeypatch):
    """The API's clock (scores decay against it; accept and reject are stamped with it)."""
    state = {"now": NOW}
    monkeypatch.setattr("engine.web.sales_api.utcnow", lambda: state["now"])
    return state


@pytest.fixture
def app(env, clock, db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=drop_advance(sample_program),  # clicks only score
                     now=MONDAY - timedelta(days=1))
    app = create_app()
    yield app
    app.extensions["nurture.db"].dispose()




@pytest.fixture
def call(app, keys):
    """call(role, method, path, **kwargs): a request with that role's key (role None: no key)."""
    client = app.test_client()

    def request(role: str | None, method: str, path: str, headers=None, **kwargs):
        auth = {"Authorization": f"Bearer {keys[role]}"} if role else {}
        return client.open(path, method=method, headers={**auth, **(headers or {})}, **kwargs)

    return request


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body.get("field") == field, body
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def add_lead(db, email: str, at: datetime = MONDAY, **fields) -> tuple[int, int]:
    """A lead enrolled in the sample, and its first email marked sent at `at`."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=at,
                              actor="test", program="acme-nurture")
        row = s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == lead.id))
        row.status, row.sent_at, row.links = "sent", at, [GUIDE, PRICING]
        return lead.id, row.id


def person(kind: str, lead_id: int, outbox_id: int | None, at: datetime, **kwargs) -> dict:
    return new_event(kind, lead_id=lead_id, outbox_id=outbox_id, at=at, user_agent=BROWSER,
                     ip=PERSON_IP, **kwargs)


def engage(db, lead_id: int, outbox_id: int, at: datetime) -> list[datetime]:
    """An hour after `at`: an open, a click on the guide, a click on the pricing link and the
    pricing visit it leads to (1 + 10 + 10 + 3 + 20 = 44 behaviour points), plus a mail
    scanner's click that counts for nothing. Returns the people's times."""
    start = at + timedelta(hours=1)
    times = [start, start + timedelta(minutes=1), start + timedelta(minutes=2),
             start + timedelta(minutes=2, seconds=3)]
    events = [
        person("open", lead_id, outbox_id, times[0]),
        person("click", lead_id, outbox_id, times[1], link_index=0, url=GUIDE),
        new_event("click", lead_id=lead_id, outbox_id=outbox_id, at=times[1], link_index=0,
                  url=GUIDE, user_agent=SCANNER, ip="198.51.100.9"),
        person("click", lead_id, outbox_id, times[2], link_index=1, url=PRICING),
        person("page_view", lead_id, None, times[3], url="/p/acme-nurture/pricing",
               page="pricing"),
    ]
    with db.session() as s:
        assert store_events(session=s, events=events) == 5
    return times


def make_mql(db, email: str, at: datetime = MONDAY, **fields) -> int:
    lead_id, outbox_id = add_lead(db, email, at, **(fields or IT_DIRECTOR))
    engage(db, lead_id, outbox_id, at)
    assert stage(db, lead_id) == "mql"
    return lead_id


def stage(db, lead_id: int) -> str:
    with db.session() as s:
        return s.get(Lead, lead_id).stage


def decayed(points: float, since: datetime, now: datetime = NOW) -> float:
    return points * 0.5 ** ((now - since) / HALF_LIFE)


def snapshot(db, lead_id: int) -> tuple:
    """What an answer from sales may change, to show a refused one changed nothing."""
    with db.session() as s:
        lead = s.get(Lead, lead_id)

        def count(model) -> int:
            return s.scalar(select(func.count()).select_from(model)
                            .where(model.lead_id == lead_id))

        return (lead.stage, lead.owner, lead.behaviour_score, lead.fit_score,
                count(StageChange), count(CrmOutboxItem), count(ScoreEvent),
                count(SalesNotification))


# -- the MQL queue ----------------------------------------------------------------------------

def test_mql_queue_lists_mqls_by_score_with_their_timeline_in_order(call, db):
    ada = make_mql(db, "ada@globex.example", MONDAY)
    # Cy qualifies a day later with more fit points (company size 1,200: +10).
    cy = make_mql(db, "cy@umbrella.example", MONDAY + timedelta(days=1), title="CIO",
                  company="Umbrella", company_size="1,200")
    add_lead(db, "dee@hooli.example", **IT_DIRECTOR)  # enrolled, never answered: not an MQL
    accepted = make_mql(db, "eve@initech.example")
    assert call("sales", "POST", f"/api/v1/leads/{accepted}/accept").status_code == 200

    response = call("reviewer", "GET", "/api/v1/sales/mql")
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [item["id"] for item in items] == [cy, ada]
    first_visit = MONDAY + timedelta(hours=1, minutes=2, seconds=3)
    assert [item["score"] for item in items] == pytest.approx(
        [25 + decayed(44, first_visit + timedelta(days=1)), 15 + decayed(44, first_visit)],
        abs=0.06)
    ada_item = items[1]
    assert (ada_item["email"], ada_item["company"], ada_item["title"], ada_item["owner"]) == (
        "ada@globex.example", "Globex", "IT Director", None)
    assert ada_item["mql_at"] == first_visit.isoformat()
    assert "MQL threshold 55" in ada_item["reason"]
    start = MONDAY + timedelta(hours=1)
    assert ada_item["timeline"] == [
        {"at": start.isoformat(), "kind": "open", "what": "opened welcome_it"},
        {"at": (start + timedelta(minutes=1)).isoformat(), "kind": "click",
         "what": f"clicked {GUIDE} in welcome_it"},  # not our page: the URL as it is
        {"at": (start + timedelta(minutes=2)).isoformat(), "kind": "click",
         "what": "clicked http://localhost:5000/p/acme-nurture/pricing in welcome_it"},
        {"at": first_visit.isoformat(), "kind": "page_view",
         "what": "visited /p/acme-nurture/pricing"},
    ]  # the scanner's click is not there
    assert PAGE_TOKEN not in response.get_data(as_text=True)


def test_mql_queue_limit_keeps_the_highest_scores(call, db):
    make_mql(db, "ada@globex.example")
    cy = make_mql(db, "cy@umbrella.example", title="CIO", company="Umbrella",
                  company_size="500")
    items = call("sales", "GET", "/api/v1/sales/mql?limit=1").get_json()["items"]
    assert [item["id"] for item in items] == [cy]
    assert len(call("sales", "GET", "/api/v1/sales/mql?limit=500").get_json()["items"]) == 2


def test_an_empty_queue_is_an_empty_list(call):
    response = call("sales", "GET", "/api/v1/sales/mql")
    assert (response.status_code, response.get_json()) == (200, {"items": []})


@pytest.mark.parametrize("path", ["/api/v1/sales/mql", "/api/v1/sales/one-field-short"])
def test_a_bad_limit_is_422_naming_it(call, path):
    for limit in ("0", "501", "abc", "-1", "1.5", "", "1e2", "%205", "0x10", "5%00"):
        body = assert_problem(call("sales", "GET", f"{path}?limit={limit}"), 422, "limit")
        assert "1 to 500" in body["detail"], limit


@pytest.mark.parametrize("limit", ["%C2%B2", "9" * 5000])
def test_a_limit_that_only_looks_numeric_is_422_too(call, limit):
    assert_problem(call("sales", "GET", f"/api/v1/sales/mql?limit={limit}"), 422, "limit")


# -- one field short ----------------------------------------------------------------------------

def test_one_field_short_names_the_missing_field(call, db):
    # Enough points, but the sample requires a company: the field sales should fill in.
    no_company, outbox_id = add_lead(db, "bo@nowhere.example", title="IT Director")
    engage(db, no_company, outbox_id, MONDAY)
    assert stage(db, no_company) == "inquiry"
    # 5 fit points (industry) and 44 behaviour: a company size of 200 or more (+10) would do.
    short_size, outbox_id = add_lead(db, "cat@globex.example", title="IT manager",
                                     company="Globex", industry="software")
    engage(db, short_size, outbox_id, MONDAY)
    make_mql(db, "ada@globex.example")  # qualified: not listed
    add_lead(db, "dee@hooli.example", **IT_DIRECTOR)  # far from it: not listed

    response = call("reviewer", "GET", "/api/v1/sales/one-field-short")
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [(i["email"], i["missing"]) for i in items] == [
        ("bo@nowhere.example", ["company"]), ("cat@globex.example", ["company_size"])]
    assert items[0]["id"] == no_company
    assert items[0]["score"] == pytest.approx(
        15 + decayed(44, MONDAY + timedelta(hours=1, minutes=2, seconds=3)), abs=0.06)
    assert call("sales", "GET", "/api/v1/sales/one-field-short?limit=1").get_json()[
        "items"] == items[:1]


# -- accept -------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["sales", "marketer", "admin"])
def test_accept_makes_the_mql_a_sal_owned_by_the_callers_key(call, db, clock, role):
    lead_id = make_mql(db, "ada@globex.example")
    response = call(role, "POST", f"/api/v1/leads/{lead_id}/accept")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["id"], body["stage"], body["owner"]) == (lead_id, "sal", f"api:{role} bot")
    with db.session() as s:
        change = s.scalars(select(StageChange).where(StageChange.lead_id == lead_id)
                           .order_by(StageChange.id.desc())).first()
        assert (change.from_stage, change.to_stage, change.actor, change.at) == (
            "mql", "sal", f"api:{role} bot", NOW)
        assert s.get(Lead, lead_id).owner == f"api:{role} bot"
        item = s.scalars(select(CrmOutboxItem).where(CrmOutboxItem.lead_id == lead_id)
                         .order_by(CrmOutboxItem.id.desc())).first()
        assert (item.kind, item.payload["to"], item.payload["owner"]) == (
            "stage_change", "sal", f"api:{role} bot")
    assert call(role, "GET", "/api/v1/sales/mql").get_json()["items"] == []


def test_accept_for_a_named_owner(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    response = call("sales", "POST", f"/api/v1/leads/{lead_id}/accept",
                    json={"owner": "rita@acme.example"})
    assert response.status_code == 200
    assert response.get_json()["owner"] == "rita@acme.example"
    with db.session() as s:
        change = s.scalars(select(StageChange).where(StageChange.to_stage == "sal")).one()
        assert change.actor == "api:sales bot"  # who did it is kept apart from who owns it
        assert s.get(Lead, lead_id).owner == "rita@acme.example"


def test_an_empty_json_object_accepts_for_the_caller(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    response = call("sales", "POST", f"/api/v1/leads/{lead_id}/accept", json={})
    assert (response.status_code, response.get_json()["owner"]) == (200, "api:sales bot")


# -- reject -------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["sales", "marketer"])
def test_reject_recycles_the_mql_with_the_reason_and_resets_behaviour(call, db, role):
    lead_id = make_mql(db, "ada@globex.example")
    response = call(role, "POST", f"/api/v1/leads/{lead_id}/reject",
                    json={"reason": "  no budget until Q3  "})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["stage"] == "recycled"
    with db.session() as s:
        lead = s.get(Lead, lead_id)
        assert (lead.stage, lead.behaviour_score, lead.fit_score, lead.owner) == (
            "recycled", 0, 15, None)
        change = s.scalars(select(StageChange).where(StageChange.to_stage == "recycled")).one()
        assert (change.from_stage, change.actor, change.at) == ("mql", f"api:{role} bot", NOW)
        assert change.reason == "rejected by sales: no budget until Q3"
        item = s.scalars(select(CrmOutboxItem).order_by(CrmOutboxItem.id.desc())).first()
        assert (item.payload["to"], item.payload["rejected"]) == ("recycled", True)
        assert item.payload["reason"] == "rejected by sales: no budget until Q3"
    assert call(role, "GET", "/api/v1/sales/mql").get_json()["items"] == []


def test_the_longest_reason_is_accepted(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    response = call("sales", "POST", f"/api/v1/leads/{lead_id}/reject",
                    json={"reason": "é" * 1000})
    assert response.status_code == 200
    assert stage(db, lead_id) == "recycled"


# -- who may answer -----------------------------------------------------------------------------

@pytest.mark.parametrize("verb, body", [("accept", None), ("reject", {"reason": "no fit"})])
def test_a_reviewer_may_not_answer_for_sales(call, db, verb, body):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    body = assert_problem(call("reviewer", "POST", f"/api/v1/leads/{lead_id}/{verb}", json=body),
                          403)
    assert "reviewer" in body["detail"]
    assert snapshot(db, lead_id) == before


@pytest.mark.parametrize("verb", ["accept", "reject"])
def test_without_a_valid_key_answers_are_401_before_the_body_is_read(call, db, verb):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    for headers in ({}, {"Authorization": "Bearer nur_00000000_forged"},
                    {"Authorization": "Basic c2FsZXM6c2FsZXM="}, {"X-API-Key": "' OR 1=1 --"}):
        for path, body in ((f"/api/v1/leads/{lead_id}/{verb}", {"reason": "x"}),
                           ("/api/v1/leads/abc/" + verb, "not json")):
            response = call(None, "POST", path, headers=headers, data=json.dumps(body),
                            content_type="text/plain")
            assert_problem(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(db, lead_id) == before


@pytest.mark.parametrize("path", ["/api/v1/sales/mql", "/api/v1/sales/one-field-short",
                                  "/api/v1/leads/1/explain"])
def test_the_read_routes_need_a_key_and_are_open_to_every_role(call, db, path):
    make_mql(db, "ada@globex.example")
    assert_problem(call(None, "GET", path), 401)
    for role in ROLES:
        assert call(role, "GET", path).status_code == 200, role


# -- answers that do not apply ------------------------------------------------------------------

@pytest.mark.parametrize("verb, body", [("accept", None), ("reject", {"reason": "no fit"})])
@pytest.mark.parametrize("situation", ["inquiry", "accepted", "rejected"])
def test_only_an_mql_can_be_answered_409(call, db, verb, body, situation):
    if situation == "inquiry":
        lead_id, _ = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    else:
        lead_id = make_mql(db, "ada@globex.example")
        answer = {"accepted": ("accept", None), "rejected": ("reject", {"reason": "later"})}
        first_verb, first_body = answer[situation]
        assert call("sales", "POST", f"/api/v1/leads/{lead_id}/{first_verb}",
                    json=first_body).status_code == 200
    before = snapshot(db, lead_id)
    response = call("sales", "POST", f"/api/v1/leads/{lead_id}/{verb}", json=body)
    problem = assert_problem(response, 409, "stage")
    assert "only an MQL" in problem["detail"] and "ada@globex.example" in problem["detail"]
    assert snapshot(db, lead_id) == before


@pytest.mark.parametrize("verb", ["accept", "reject", "explain"])
def test_unknown_or_malformed_lead_ids_are_404(call, db, verb):
    lead_id = make_mql(db, "ada@globex.example")  # id 1 exists; none of these names it
    before = snapshot(db, lead_id)
    method = "GET" if verb == "explain" else "POST"
    body = {"reason": "no fit"} if verb == "reject" else None
    for bad in ("999999", "abc", "0", "-1", "1.5", "%00", "2147483648", "1%20OR%201=1",
                "%D9%A1", "01x", "1" * 5000):
        response = call("sales", method, f"/api/v1/leads/{bad}/{verb}", json=body)
        assert_problem(response, 404, "id")
    assert snapshot(db, lead_id) == before


# -- bad and hostile bodies ---------------------------------------------------------------------

BAD_REJECT_BODIES = [
    ({}, "reason"),
    ({"reason": ""}, "reason"),
    ({"reason": "   \t "}, "reason"),
    ({"reason": None}, "reason"),
    ({"reason": 42}, "reason"),
    ({"reason": ["no", "fit"]}, "reason"),
    ({"reason": {"a": {"b": {"c": [[[[["deep"]]]]]}}}}, "reason"),
    ({"reason": "x" * 1001}, "reason"),
    ({"reason": "x" * 200_000}, "reason"),
    ({"reason": "no\u0000fit"}, "reason"),
    ({"reason": "\ud800"}, "reason"),
    ({"reason": "no fit", "owner": "rita"}, "owner"),
    ({"reason": "no fit", "stage": "customer"}, "stage"),
]


def test_bad_reject_bodies_are_422_naming_the_field(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    for body, field in BAD_REJECT_BODIES:  # \u0000 and \ud800 travel as JSON escapes
        response = call("sales", "POST", f"/api/v1/leads/{lead_id}/reject",
                        data=json.dumps(body), content_type="application/json")
        assert_problem(response, 422, field)
    assert snapshot(db, lead_id) == before


BAD_ACCEPT_BODIES = [
    ({"owner": "x" * 201}, "owner"),
    ({"owner": "rita\u0000"}, "owner"),
    ({"owner": 7}, "owner"),
    ({"owner": {"nested": ["rita"]}}, "owner"),
    ({"owner": "rita", "stage": "customer"}, "stage"),
    ({"actor": "admin"}, "actor"),
]


def test_bad_accept_bodies_are_422_naming_the_field(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    for body, field in BAD_ACCEPT_BODIES:
        response = call("sales", "POST", f"/api/v1/leads/{lead_id}/accept",
                        data=json.dumps(body), content_type="application/json")
        assert_problem(response, 422, field)
    assert snapshot(db, lead_id) == before


NOT_A_JSON_OBJECT = [
    ('{"reason": "no fit"}', "text/plain", 415),
    ("reason=no+fit", "application/x-www-form-urlencoded", 415),
    ('{"reason": "no fit"}', None, 415),
    ("{", "application/json", 400),
    (b'{"reason": "\xff"}', "application/json", 400),
    ("[" * 100_000 + "]" * 100_000, "application/json", 400),
    ('["no fit"]', "application/json", 422),
    ("null", "application/json", 422),
    (json.dumps({"reason": "x" * (MAX_REQUEST_BYTES + 10)}), "application/json", 413),
]


@pytest.mark.parametrize("verb", ["accept", "reject"])
def test_bodies_that_are_not_a_json_object_are_refused_and_change_nothing(call, db, verb):
    lead_id = make_mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    for data, content_type, status in NOT_A_JSON_OBJECT:
        headers = {"Content-Type": content_type} if content_type else {}
        response = call("sales", "POST", f"/api/v1/leads/{lead_id}/{verb}", data=data,
                        headers=headers)
        assert_problem(response, status)
    assert snapshot(db, lead_id) == before


# -- explain ------------------------------------------------------------------------------------

def test_explain_names_fit_rules_decayed_awards_stages_and_the_next_send(call, db, clock):
    lead_id = make_mql(db, "ada@globex.example")
    start = MONDAY + timedelta(hours=1)
    clock["now"] = start + HALF_LIFE  # the first award is worth exactly half now
    response = call("reviewer", "GET", f"/api/v1/leads/{lead_id}/explain")
    assert response.status_code == 200
    data = response.get_json()
    assert data["lead"] == {"id": lead_id, "email": "ada@globex.example", "stage": "mql",
                            "persona": "it_manager", "owner": None}  # the persona it follows
    score = data["score"]
    assert (score["program"], score["threshold"], score["half_life_days"]) == (
        "acme-nurture", 55, 30)
    assert score["fit"] == [{"rule": "title matches director|head|vp|chief|cio|cto|cfo: +15",
                             "points": 15.0}]
    got = [(a["at"], a["rule"], a["points"], a["now"]) for a in score["behaviour"]]
    visit = start + timedelta(minutes=2, seconds=3)
    now = clock["now"]
    assert got == [
        (start.isoformat(), "open: +1", 1.0, 0.5),
        ((start + timedelta(minutes=1)).isoformat(), "click: +10", 10.0,
         round(decayed(10, start + timedelta(minutes=1), now), 2)),
        ((start + timedelta(minutes=2)).isoformat(), "click: +10", 10.0,
         round(decayed(10, start + timedelta(minutes=2), now), 2)),
        (visit.isoformat(), "page_view: +3", 3.0, round(decayed(3, visit, now), 2)),
        (visit.isoformat(), "page pricing: +20", 20.0, round(decayed(20, visit, now), 2)),
    ]
    assert score["total"] == pytest.approx(15 + decayed(44, visit, now), abs=0.01)
    assert score["missing_requirements"] == [] and score["reset"] is None
    assert [(c["at"], c["from"], c["to"], c["reason"], c["actor"])
            for c in data["stage_history"]] == [
        (MONDAY.isoformat(), None, "inquiry", "created", "test"),
        (visit.isoformat(), "inquiry", "mql", "score 59 reached the MQL threshold 55", "scoring")]
    [send] = data["next_sends"]
    assert (send["program"], send["status"], send["why"]) == (
        "acme-nurture", "idle", "waiting: the program has no track for it_manager/mql")
    assert [(n["kind"], n["at"]) for n in data["sales"]["notifications"]] == [
        ("mql", visit.isoformat())]
    assert data["suppressed"] is None


def test_explain_after_rejection_shows_the_reset_and_the_reason(call, db):
    lead_id = make_mql(db, "ada@globex.example")
    call("sales", "POST", f"/api/v1/leads/{lead_id}/reject", json={"reason": "no budget"})
    data = call("sales", "GET", f"/api/v1/leads/{lead_id}/explain").get_json()
    assert data["score"]["behaviour"] == []  # awards before the reset no longer count
    assert data["score"]["reset"] == "behaviour points reset: rejected by sales"
    assert data["score"]["total"] == 15
    last = data["stage_history"][-1]
    assert (last["from"], last["to"], last["reason"], last["actor"]) == (
        "mql", "recycled", "rejected by sales: no budget", "api:sales bot")
    assert data["next_sends"][0]["track"] == "it_manager/recycled"


def test_explain_says_why_nothing_is_sent_to_an_accepted_or_suppressed_lead(call, db):
    accepted = make_mql(db, "ada@globex.example")
    call("sales", "POST", f"/api/v1/leads/{accepted}/accept")
    [send] = call("sales", "GET", f"/api/v1/leads/{accepted}/explain").get_json()["next_sends"]
    assert send["status"] == "exited"
    assert send["why"].startswith("left the program:") and "sal" in send["why"]

    gone, _ = add_lead(db, "gone@globex.example", **IT_DIRECTOR)
    with db.session() as s:
        suppress(session=s, email="gone@globex.example", reason="unsubscribed", source="test",
                 now=MONDAY)
    data = call("sales", "GET", f"/api/v1/leads/{gone}/explain").get_json()
    assert data["suppressed"] == "unsubscribed"
    assert data["next_sends"][0]["why"] == ("nothing will be sent: the address is suppressed "
                                            "(unsubscribed)")


def test_explain_of_a_lead_without_a_program(call, db):
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": "solo@globex.example"}, now=MONDAY,
                              actor="test")
        set_stage(session=s, lead=lead, stage="engaged", reason="replied", actor="sam",
                  now=MONDAY)
        lead_id = lead.id
    data = call("sales", "GET", f"/api/v1/leads/{lead_id}/explain").get_json()
    assert data["score"] == {"program": None, "total": 0.0,
                             "note": "no enrolled program has scoring rules"}
    assert data["next_sends"] == []
    assert [(c["from"], c["to"], c["reason"]) for c in data["stage_history"]][-1] == (
        "inquiry", "engaged", "replied")


def test_explain_names_the_next_email_of_a_lead_in_nurture(call, db):
    lead_id, _ = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    [send] = call("sales", "GET", f"/api/v1/leads/{lead_id}/explain").get_json()["next_sends"]
    assert (send["status"], send["track"], send["next_email"]) == (
        "active", "it_manager/inquiry", "guide_it")
    assert send["why"] == ("next: guide_it (A practical guide to migrating VMs without "
                           "downtime) at 2026-11-05T08:00:00+00:00")  # welcome_it + 3 days


def test_a_blank_owner_is_not_an_owner(call, db):
    """A blank owner is no owner: the lead goes to the acceptor (as for ""), or is refused."""
    lead_id = make_mql(db, "ada@globex.example")
    response = call("sales", "POST", f"/api/v1/leads/{lead_id}/accept", json={"owner": "   "})
    assert response.status_code in (200, 422), response.get_json()
    if response.status_code == 200:
        assert response.get_json()["owner"] == "api:sales bot"
    else:
        assert stage(db, lead_id) == "mql"



def test_a_chunked_body_names_the_owner_too(app, db, keys):
    lead_id = make_mql(db, "ada@globex.example")
    response = app.test_client().post(
        f"/api/v1/leads/{lead_id}/accept",
        input_stream=io.BytesIO(json.dumps({"owner": "rita@acme.example"}).encode()),
        headers={"Authorization": f"Bearer {keys['sales']}", "Content-Type": "application/json",
                 "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})  # as the WSGI servers pass it
    assert response.status_code == 200
    with db.session() as s:
        assert s.get(Lead, lead_id).owner == "rita@acme.example"



def test_a_long_timeline_still_shows_what_made_the_lead_an_mql(call, db):
    lead_id, outbox_id = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    with db.session() as s:  # ten months of daily opens
        s.add_all(TrackingEvent(event_key=f"old-{n}", kind="open", lead_id=lead_id,
                                outbox_id=outbox_id, at=MONDAY - timedelta(days=300 - n),
                                bot=False) for n in range(210))
    engage(db, lead_id, outbox_id, MONDAY)
    [item] = call("sales", "GET", "/api/v1/sales/mql").get_json()["items"]
    assert item["timeline"][-1]["what"] == "visited /p/acme-nurture/pricing"


def test_the_page_token_is_hidden_under_a_base_url_with_a_path(call, db):
    lead_id, outbox_id = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    url = f"https://go.acme.example/nurture/p/acme-nurture/pricing?t={PAGE_TOKEN}"
    with db.session() as s:
        store_events(session=s, events=[person("click", lead_id, outbox_id,
                                               MONDAY + timedelta(hours=1), link_index=1,
                                               url=url)])
        set_stage(session=s, lead=s.get(Lead, lead_id), stage="mql", reason="by hand",
                  actor="test", now=MONDAY + timedelta(hours=2))
    [item] = call("sales", "GET", "/api/v1/sales/mql").get_json()["items"]
    assert [entry["what"] for entry in item["timeline"]] == [
        "clicked https://go.acme.example/nurture/p/acme-nurture/pricing in welcome_it"]
