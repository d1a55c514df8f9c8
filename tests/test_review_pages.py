"""The reviewer pages at /review/<token>, driven by the links in proofs received by the real
local sink, and the proofs API under /api/v1."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from launching import send_proofs_to
from sqlalchemy import func, select

from engine.assets.service import upload
from engine.launch.approvals import REVIEW_PURPOSE, approval_status, reviewer_digest
from engine.launch.models import Approval, Proof
from engine.sending.inbox import read_message
from engine.sending.sink import Sink
from engine.tracking.tokens import sign, unsubscribe_token
from engine.web.app import create_app

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "test-secret"  # the env fixture's SECRET_KEY
BASE = "https://nurture.acme.example"
LINK = re.compile(r"https://nurture\.acme\.example(/review/[A-Za-z0-9_.\-]+)\?decision=(\w+)")
PROOFS_PER_REVIEWER = 30  # the sample program: 15 emails x 2 personas


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink", replies={"bounce@": "550 5.1.1 No such user"}) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def app(env, sink, clock, monkeypatch):
    monkeypatch.setenv("NURTURE_SINK_PORT", str(sink.port))
    monkeypatch.setenv("NURTURE_BASE_URL", BASE)
    app = create_app(clock=clock)
    yield app
    app.extensions["nurture.db"].dispose()


def send(db, sink, reviewers=("ann@acme.example",), now=NOW) -> list[int]:
    return send_proofs_to(db, sink, reviewers, base_url=BASE, now=now, secret_key=SECRET)


def links(sink, email_key: str = "welcome_it", persona: str = "it_manager",
          to: str = "ann@acme.example") -> dict[str, str]:
    """{"approve": path, "reject": path} from the received proof's text part."""
    for stored in reversed(sink.messages(to=to)):  # the newest proof first
        message = read_message(sink.directory, stored)
        marker = message["X-Nurture-Proof"]
        if f"email={email_key};" in marker and marker.endswith(f"persona={persona}"):
            text = message.get_body(("plain",)).get_content()
            return {decision: f"{path}?decision={decision}" for path, decision in LINK.findall(text)}
    raise AssertionError(f"no proof of {email_key} for {persona} to {to}")


def csrf(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def approvals(db) -> list[Approval]:
    with db.session() as s:
        return list(s.scalars(select(Approval).order_by(Approval.id)))


def state(db, email_key: str = "welcome_it") -> tuple[str, int | None]:
    with db.session() as s:
        item = next(i for i in approval_status(session=s, program_name="acme-nurture")
                    if i.email_key == email_key)
    return item.state, item.version


def assert_safe_headers(response) -> None:
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"  # the token is in the URL
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- the review page ----------------------------------------------------------------------------

def test_the_approve_link_from_the_received_proof_works_end_to_end(db, loaded_program, sink,
                                                                   client):
    send(db, sink)
    approve = links(sink)["approve"]

    page = client.get(approve)
    assert page.status_code == 200
    assert_safe_headers(page)
    for fact in ("welcome_it", "emails/welcome_it.mjml", "IT manager", "ann@acme.example",
                 "Acme Cloud perpetual nurture", "Approve version 1", "Reject version 1"):
        assert fact in page.text, fact
    assert page.headers.getlist("Set-Cookie")[0].startswith("nurture_review_csrf=")
    assert "HttpOnly" in page.headers["Set-Cookie"] and "Path=/review/" in page.headers["Set-Cookie"]
    for _ in range(3):  # mail scanners fetch every link, several times
        assert client.get(approve).status_code == 200
        assert client.get(links(sink)["reject"]).status_code == 200
    assert approvals(db) == [] and state(db) == ("pending", 1)

    done = client.post(approve.split("?")[0], data={"csrf_token": csrf(page),
                                                    "decision": "approve"})
    assert done.status_code == 200, done.text
    assert_safe_headers(done)
    assert "You approved version 1 of welcome_it" in done.text
    [approval] = approvals(db)
    assert (approval.reviewer, approval.decision, approval.comment, approval.at) == (
        "ann@acme.example", "approved", None, NOW)
    assert state(db) == ("approved", 1)
    assert state(db, "welcome_finance") == ("pending", 1)
    assert "You approved this version" in client.get(approve).text  # the page remembers


def test_reject_needs_a_comment_and_records_it(db, loaded_program, sink, client, clock):
    send(db, sink)
    reject = links(sink, "guide_it", "finance")["reject"]
    page = client.get(reject)
    assert "autofocus" in page.text  # the reject link opens on the comment box
    token, path = csrf(page), reject.split("?")[0]

    for comment in (None, "", "   \n  ", "x" * 2001):
        form = {"csrf_token": token, "decision": "reject"}
        if comment is not None:
            form["comment"] = comment
        refused = client.post(path, data=form)
        assert refused.status_code == 422, comment
        assert "comment" in refused.text and 'role="alert"' in refused.text
        assert "Traceback" not in refused.text
    assert approvals(db) == []

    clock.now = NOW + timedelta(minutes=5)
    done = client.post(path, data={"csrf_token": token, "decision": "reject",
                                   "comment": "The <b>CTA</b> points at the wrong guide"})
    assert done.status_code == 200
    assert "You rejected version 1 of guide_it" in done.text
    assert "&lt;b&gt;CTA&lt;/b&gt;" in done.text and "<b>CTA</b>" not in done.text
    [approval] = approvals(db)
    assert (approval.decision, approval.comment, approval.at) == (
        "rejected", "The <b>CTA</b> points at the wrong guide", NOW + timedelta(minutes=5))
    assert state(db, "guide_it") == ("rejected", 1)


def test_an_unknown_decision_is_refused(db, loaded_program, sink, client):
    send(db, sink)
    approve = links(sink)["approve"]
    token = csrf(client.get(approve))
    response = client.post(approve.split("?")[0], data={"csrf_token": token, "decision": "yes"})
    assert response.status_code == 422 and approvals(db) == []


def test_a_post_without_a_valid_csrf_token_is_refused(db, loaded_program, sink, app, client):
    send(db, sink)
    path = links(sink)["approve"].split("?")[0]
    token = csrf(client.get(path))
    landing = app.test_client().get("/p/acme-nurture/demo")  # another form's CSRF token
    other = app.test_client()  # no cookie of its own
    another = app.test_client()
    another.get(path)  # a cookie of its own: a token signed for someone else's nonce fails

    attempts = [
        (client, {"decision": "approve"}),
        (client, {"decision": "approve", "csrf_token": "abc.def.ghi"}),
        (client, {"decision": "approve", "csrf_token": csrf(landing)}),
        (client, {"decision": "approve", "csrf_token": "x" * 300}),
        (other, {"decision": "approve", "csrf_token": token}),
        (another, {"decision": "approve", "csrf_token": token}),
    ]
    for caller, form in attempts:
        response = caller.post(path, data=form)
        assert response.status_code == 400, form
        assert "expired" in response.text and "Traceback" not in response.text
    assert approvals(db) == []


def _sign(payload: dict, secret: str = SECRET, purpose: str = REVIEW_PURPOSE) -> str:
    return "/review/" + sign(secret, purpose, payload)


def test_bad_tokens_get_a_safe_404_page_and_record_nothing(db, loaded_program, sink, client):
    [first, *_] = send(db, sink)
    path = links(sink)["approve"].split("?")[0]
    token = path.removeprefix("/review/")
    with db.session() as s:
        proof = s.get(Proof, first)
        good = {"p": proof.id, "v": proof.asset_version_id, "r": reviewer_digest(proof.reviewer)}
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    bad_paths = [
        "/review/" + flipped,  # tampered
        "/review/" + token[:-1],  # truncated
        "/review/" + unsubscribe_token(SECRET, lead_id=proof.id, outbox_id=1),  # another purpose
        _sign(good, secret="someone-else"),  # another installation
        _sign({**good, "p": 999_999}),  # no such proof
        _sign({**good, "v": good["v"] + 1}),  # another version
        _sign({**good, "r": reviewer_digest("mallory@acme.example")}),  # another reviewer
        _sign({**good, "p": "1"}),  # not an id
        _sign({"p": proof.id}),  # incomplete
        "/review/" + token + "A" * 600,  # over-long
        "/review/%00",
        "/review/..%2F..%2Fetc",
    ]
    for bad in bad_paths:
        for response in (client.get(bad), client.post(bad, data={"decision": "approve"})):
            assert response.status_code == 404, bad
            assert "This review link is not valid" in response.text or "not found" in \
                response.text.lower()
            assert "Traceback" not in response.text and "csrf_token" not in response.text
    assert client.get(path).status_code == 200  # the genuine one still works
    assert approvals(db) == []


def test_review_links_expire_after_30_days(db, loaded_program, sink, client, clock):
    send(db, sink)
    approve = links(sink)["approve"]
    clock.now = NOW + timedelta(days=30)
    assert client.get(approve).status_code == 200
    clock.now = NOW + timedelta(days=30, seconds=1)
    response = client.get(approve)
    assert response.status_code == 404 and "not valid" in response.text


def test_a_new_version_is_pending_again_and_the_old_proof_cannot_decide(db, loaded_program,
                                                                       sample_program, sink,
                                                                       client):
    send(db, sink)
    old = links(sink)["approve"]
    client.post(old.split("?")[0], data={"csrf_token": csrf(client.get(old)),
                                         "decision": "approve"})
    assert state(db) == ("approved", 1)

    source = (sample_program / "emails" / "welcome_it.mjml").read_text()
    with db.session() as s:
        upload(session=s, program="acme-nurture", filename="welcome_it.mjml",
               data=source.replace("Spin up a sandbox", "Start a sandbox").encode(),
               now=NOW + timedelta(hours=1))
    assert state(db) == ("pending", 2)

    page = client.get(old)
    assert page.status_code == 200
    assert "the current version of emails/welcome_it.mjml is 2" in page.text
    assert 'name="decision"' not in page.text  # no forms for a superseded version
    # the form is gone, but a crafted POST with this client's valid CSRF token is refused too
    refused = client.post(old.split("?")[0], data={"csrf_token": _any_csrf(client, sink),
                                                   "decision": "approve"})
    assert refused.status_code == 409 and "newer version" in refused.text
    assert len(approvals(db)) == 1 and state(db) == ("pending", 2)

    send(db, sink, now=NOW + timedelta(hours=2))
    new = links(sink)["approve"]
    assert new != old
    done = client.post(new.split("?")[0], data={"csrf_token": csrf(client.get(new)),
                                                "decision": "approve"})
    assert done.status_code == 200 and state(db) == ("approved", 2)


def _any_csrf(client, sink) -> str:
    """A valid CSRF token for this client, from the review page of a still-current proof."""
    return csrf(client.get(links(sink, "guide_it")["approve"]))


# -- the API ------------------------------------------------------------------------------------



def call(client, keys, role: str | None, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {keys[role]}"} if role else {}
    return getattr(client, method)(path, headers=headers, **kwargs)


PROOFS = "/api/v1/programs/acme-nurture/proofs"
APPROVALS = "/api/v1/programs/acme-nurture/approvals"


def test_api_sends_proofs_for_admins_and_marketers_only(db, loaded_program, sink, client, keys):
    body = {"to": ["ann@acme.example"]}
    assert call(client, keys, None, "post", PROOFS, json=body).status_code == 401
    for role in ("reviewer", "sales"):
        response = call(client, keys, role, "post", PROOFS, json=body)
        assert response.status_code == 403 and role in response.get_json()["detail"]
    assert sink.messages() == []

    response = call(client, keys, "marketer", "post", PROOFS, json=body)
    assert response.status_code == 201, response.get_json()
    result = response.get_json()
    assert len(result["sent"]) == PROOFS_PER_REVIEWER == len(sink.messages())
    assert (result["failed"], result["skipped"]) == ([], 0)
    first = result["sent"][0]
    assert (first["email"], first["persona"], first["reviewer"], first["asset_version"]) == (
        "welcome_it", "it_manager", "ann@acme.example", 1)
    assert first["message_id"] == sink.messages()[0].message_id
    assert first["sent_at"] == NOW.isoformat()  # the app's clock
    assert call(client, keys, "admin", "post", PROOFS, json=body).status_code == 201


def test_api_approvals_for_readers(db, loaded_program, sink, client, keys):
    assert call(client, keys, None, "get", APPROVALS).status_code == 401
    assert call(client, keys, "sales", "get", APPROVALS).status_code == 403
    send(db, sink)
    approve = links(sink)["approve"]
    client.post(approve.split("?")[0], data={"csrf_token": csrf(client.get(approve)),
                                             "decision": "approve"})
    response = call(client, keys, "reviewer", "get", APPROVALS)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["program"], body["version"], body["approved"]) == ("acme-nurture", 1, False)
    items = {item["email"]: item for item in body["items"]}
    assert items["welcome_it"] == {"email": "welcome_it", "asset": "emails/welcome_it.mjml",
                                   "version": 1, "state": "approved",
                                   "approved_by": ["ann@acme.example"], "rejections": [],
                                   "awaiting": [], "problem": None}
    assert items["guide_it"]["awaiting"] == ["ann@acme.example"]
    assert call(client, keys, "reviewer", "get",
                "/api/v1/programs/nope/approvals").status_code == 404


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"json": {"to": []}}, 422, "to"),
    ({"json": {"to": [f"r{n}@acme.example" for n in range(21)]}}, 422, "to"),
    ({"json": {"to": ["a@acme.example"] * 40_000}}, 422, "to"),
    ({"json": {"to": ["ann@acme.example", "not an address"]}}, 422, "to.1"),
    ({"json": {"to": ["x" * 400 + "@acme.example"]}}, 422, "to.0"),
    ({"json": {"to": ["ann@acme.example\r\nBcc: all@acme.example"]}}, 422, "to.0"),
    ({"json": {"to": "ann@acme.example"}}, 422, "to"),
    ({"json": {"to": [{"email": "ann@acme.example"}]}}, 422, "to.0"),
    ({"json": {"to": ["ann@acme.example"], "cc": ["x@acme.example"]}}, 422, "cc"),
    ({"json": {}}, 422, "to"),
    ({"json": ["ann@acme.example"]}, 422, None),
    ({"data": "to=ann@acme.example",
      "content_type": "application/x-www-form-urlencoded"}, 415, None),
    ({"data": "{not json", "content_type": "application/json"}, 400, None),
    ({"data": json.dumps({"to": ["a@acme.example"]}) + " " * 2_000_000,
      "content_type": "application/json"}, 413, None),
])
def test_api_refuses_hostile_input_and_sends_nothing(db, loaded_program, sink, client, keys,
                                                     kwargs, status, field):
    response = call(client, keys, "marketer", "post", PROOFS, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    assert response.get_json().get("field") == field
    assert "Traceback" not in response.get_data(as_text=True)
    assert sink.messages() == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Proof)) == 0


@pytest.mark.parametrize("name", ["nope", "../etc", "x" * 300, "acme nurture"])
def test_api_unknown_programs_are_404(db, loaded_program, sink, client, keys, name):
    response = call(client, keys, "admin", "post", f"/api/v1/programs/{name}/proofs",
                    json={"to": ["ann@acme.example"]})
    assert response.status_code == 404 and sink.messages() == []


def test_api_reports_refused_reviewers_and_keeps_what_was_sent(db, loaded_program, sink, client,
                                                              keys):
    response = call(client, keys, "admin", "post", PROOFS,
                    json={"to": ["bounce@acme.example", "ann@acme.example"]})
    assert response.status_code == 502
    body = response.get_json()
    assert body["field"] == "to" and "refused 1" in body["detail"]
    assert len(body["sent"]) == PROOFS_PER_REVIEWER
    assert body["failed"][0]["reviewer"] == "bounce@acme.example"
    assert body["skipped"] == PROOFS_PER_REVIEWER - 1
    with db.session() as s:  # committed: the links in the proofs that went out work
        assert s.scalar(select(func.count()).select_from(Proof)) == PROOFS_PER_REVIEWER
    assert client.get(links(sink)["approve"]).status_code == 200


def test_review_paths_parse_as_the_links_say(db, loaded_program, sink):
    send(db, sink)
    for decision, path in links(sink).items():
        parts = urlsplit(BASE + path)
        assert parts.path.startswith("/review/") and parts.query == f"decision={decision}"
