"""The console's leads and sales pages: search, a lead's page, set stage through the pipeline,
the MQL queue with accept and reject, roles, hostile input shown escaped, oversized fields."""

from __future__ import annotations

import pytest
from console_helpers import Browser, Clock, add_lead, add_user
from sqlalchemy import func, select

from engine.leads.models import Lead, StageChange
from engine.web.app import create_app

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


@pytest.fixture
def app(env):
    app = create_app(clock=Clock())
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def as_role(app, db):
    """as_role("sales") -> a Browser signed in as a user of that role."""

    def sign_in(role: str) -> Browser:
        email = f"{role.replace('_', '-')}@example.com"
        add_user(db, email, role)
        browser = Browser(app.test_client())
        assert browser.sign_in(email).status_code == 303
        return browser

    return sign_in


def stage_changes(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(StageChange))


def stage_of(db, lead_id: int) -> str:
    with db.session() as s:
        return s.get(Lead, lead_id).stage


def test_leads_are_found_by_email_name_company_and_stage(as_role, db):
    add_lead(db, "ada@analytical.example", first_name="Ada", last_name="Lovelace",
             company="Analytical Engines")
    add_lead(db, "grace@navy.example", first_name="Grace", last_name="Hopper", company="Navy",
             stage="mql")
    browser = as_role("read_only")
    for query, expected, absent in [("q=lovelace", "ada@", "grace@"),
                                    ("q=ada+lovelace", "ada@", "grace@"),
                                    ("q=NAVY", "grace@", "ada@"),
                                    ("q=grace%40navy", "grace@", "ada@"),
                                    ("stage=mql", "grace@", "ada@")]:
        page = browser.get(f"/leads?{query}").get_data(as_text=True)
        assert expected in page and absent not in page, query
    assert "2 leads" in browser.get("/leads").get_data(as_text=True)
    assert browser.get("/leads?stage=bogus").status_code == 422


def test_leads_are_paged(as_role, db):
    for n in range(30):
        add_lead(db, f"lead{n:02}@example.com")
    browser = as_role("read_only")
    first = browser.get("/leads").get_data(as_text=True)
    assert "page 1 of 2" in first and "lead24@" in first and "lead25@" not in first
    second = browser.get("/leads?page=2").get_data(as_text=True)
    assert "lead25@" in second and "lead24@" not in second and "Previous page" in second


def test_hostile_fields_are_shown_escaped_on_the_list_and_the_lead(as_role, db):
    lead_id = add_lead(db, "hostile@example.com", first_name=SCRIPT, last_name=IMG,
                       company=IMG, title=SCRIPT)
    browser = as_role("admin")
    for path in ("/leads", f"/leads/{lead_id}", "/leads?q=%3Cscript%3E"):
        page = browser.get(path).get_data(as_text=True)
        assert SCRIPT not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page, path


def test_a_lead_page_shows_fields_history_score_enrollments_and_crm(as_role, db):
    lead_id = add_lead(db, "ada@example.com", first_name="Ada", company="Globex", stage="mql")
    page = as_role("reviewer").get(f"/leads/{lead_id}").get_data(as_text=True)
    for heading in ("Fields", "Stage history", "Timeline", "Event log", "Score",
                    "Enrollments and next send", "CRM record"):
        assert f">{heading}</h2>" in page, heading
    assert "test setup" in page  # the history row's reason
    assert "Your role may look at this lead but not change its stage." in page


def test_unknown_leads_are_404(as_role):
    browser = as_role("admin")
    assert browser.get("/leads/999").status_code == 404
    assert browser.get("/leads/99999999999999999999").status_code == 404
    assert browser.get("/leads/abc").status_code == 404


def test_a_stage_set_in_the_console_goes_through_the_pipeline_and_shows_in_the_history(
        as_role, db):
    lead_id = add_lead(db, "ada@example.com")
    browser = as_role("marketer")
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "engaged",
                                                        "reason": "called us"},
                            page=f"/leads/{lead_id}")
    assert response.status_code == 303
    page = browser.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "Moved from inquiry to engaged." in page and "called us" in page
    assert "user:marketer@example.com" in page
    assert stage_of(db, lead_id) == "engaged"


def test_an_illegal_stage_change_shows_the_transition_tables_message_and_stores_nothing(
        as_role, db):
    lead_id = add_lead(db, "ada@example.com")
    browser = as_role("admin")
    before = stage_changes(db)
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "customer", "reason": "why"},
                            page=f"/leads/{lead_id}")
    assert response.status_code == 409
    assert ("illegal stage change inquiry -&gt; customer (from inquiry: disqualified, engaged,"
            " mql, recycled, sal)") in response.get_data(as_text=True)
    no_reason = browser.post(f"/leads/{lead_id}/stage", {"stage": "engaged", "reason": " "},
                             page=f"/leads/{lead_id}")
    assert no_reason.status_code == 422
    assert stage_of(db, lead_id) == "inquiry" and stage_changes(db) == before


@pytest.mark.parametrize("role", ["read_only", "reviewer"])
def test_roles_without_the_stage_permission_cannot_post_a_stage_change(as_role, db, role):
    lead_id = add_lead(db, "ada@example.com")
    browser = as_role(role)
    before = stage_changes(db)
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "engaged", "reason": "x"},
                            page=f"/leads/{lead_id}")
    assert response.status_code == 403
    assert stage_of(db, lead_id) == "inquiry" and stage_changes(db) == before


def test_oversized_form_fields_are_refused_and_nothing_is_stored(as_role, db):
    lead_id = add_lead(db, "ada@example.com", stage="mql")
    browser = as_role("admin")
    before = stage_changes(db)
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "engaged",
                                                        "reason": "x" * 1001},
                            page=f"/leads/{lead_id}")
    assert response.status_code == 422
    assert "reason is longer than 1000" in response.get_data(as_text=True)
    rejected = browser.post(f"/sales/{lead_id}/reject", {"reason": "y" * 5000}, page="/sales")
    assert rejected.status_code == 422
    assert stage_of(db, lead_id) == "mql" and stage_changes(db) == before
    huge = browser.post(f"/sales/{lead_id}/reject", {"reason": "z" * (2 * 1024 * 1024)},
                        page="/sales")
    assert huge.status_code == 413


def test_sales_accepts_an_mql_which_leaves_the_queue_and_becomes_theirs(as_role, db):
    low = add_lead(db, "low@example.com", stage="mql", company="Initech")
    add_lead(db, "nurtured@example.com")
    browser = as_role("sales")
    page = browser.get("/sales").get_data(as_text=True)
    assert "low@example.com" in page and "nurtured@example.com" not in page
    assert "1 MQL," in page
    response = browser.post(f"/sales/{low}/accept", page="/sales")
    assert response.status_code == 303
    page = browser.get("/sales").get_data(as_text=True)
    assert "Accepted low@example.com" in page and "No MQLs are waiting." in page
    with db.session() as s:
        lead = s.get(Lead, low)
        assert (lead.stage, lead.owner) == ("sal", "sales@example.com")


def test_a_rejection_needs_a_reason(as_role, db):
    lead_id = add_lead(db, "ada@example.com", stage="mql")
    browser = as_role("sales")
    blank = browser.post(f"/sales/{lead_id}/reject", {"reason": "  "}, page="/sales")
    assert blank.status_code == 422
    assert "a reason is required to reject a lead" in blank.get_data(as_text=True)
    assert stage_of(db, lead_id) == "mql"
    done = browser.post(f"/sales/{lead_id}/reject", {"reason": "student"}, page="/sales")
    assert done.status_code == 303 and stage_of(db, lead_id) == "recycled"


def test_accepting_a_lead_that_is_no_longer_an_mql_says_so(as_role, db):
    lead_id = add_lead(db, "ada@example.com")
    response = as_role("admin").post(f"/sales/{lead_id}/accept", page="/sales")
    assert response.status_code == 409
    assert "only an MQL can be accepted" in response.get_data(as_text=True)


@pytest.mark.parametrize("role", ["reviewer", "read_only", "marketer"])
def test_roles_other_than_sales_and_admin_see_the_queue_without_its_actions(as_role, db,
                                                                           role):
    lead_id = add_lead(db, "ada@example.com", stage="mql")
    browser = as_role(role)
    page = browser.get("/sales").get_data(as_text=True)
    assert "ada@example.com" in page
    assert "Accept</button>" not in page and "Reject</button>" not in page
    assert browser.post(f"/sales/{lead_id}/accept", page="/sales").status_code == 403
    assert browser.post(f"/sales/{lead_id}/reject", {"reason": "no"},
                        page="/sales").status_code == 403
    assert stage_of(db, lead_id) == "mql"


def test_sla_breaches_are_listed_by_owner(as_role, db):
    from console_helpers import START

    from engine.sales.models import SlaBreach

    lead_id = add_lead(db, "late@example.com", stage="mql")
    with db.session() as s:
        s.add(SlaBreach(lead_id=lead_id, kind="mql_unanswered", since=START, due_at=START,
                        detected_at=START, owner="rep@example.com", action="escalated to boss"))
    page = as_role("read_only").get("/sales").get_data(as_text=True)
    assert "<h3>rep@example.com</h3>" in page
    assert "late@example.com" in page and "escalated to boss" in page


def test_a_long_event_log_shows_its_latest_events(as_role, db):
    from console_helpers import START

    from engine.leads.models import LeadEvent

    lead_id = add_lead(db, "busy@example.com")
    with db.session() as s:
        s.add_all(LeadEvent(lead_id=lead_id, at=START, category="event", kind="opened",
                            detail={"n": f"event-{n:03}"}, actor="test") for n in range(250))
    page = as_role("read_only").get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "The latest 200 events." in page
    assert "event-249" in page and "event-050" in page and "event-049" not in page
