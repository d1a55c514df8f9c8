"""Send-time safety: suppression, consent, exits, the send window and the frequency cap."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from engine.errors import Invalid
from engine.programs.spec import SendWindow
from engine.sending.policy import FrequencyCap, SendFacts, check_send
from engine.sending.suppression import suppress, suppressed_reasons

WINDOW = SendWindow(days=frozenset(range(5)), start=time(9), end=time(17))
CAP = FrequencyCap(max_sends=2, period=timedelta(days=7))
TUESDAY_10_PARIS = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def facts(**changes) -> SendFacts:
    base = {"suppressed_reason": None, "consent": True, "enrollment_exited": False,
                "timezone": "Europe/Paris", "recent_sends": ()}
    return SendFacts(**{**base, **changes})


def test_a_clean_send_inside_the_window_goes():
    assert check_send(facts(), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS).action == "send"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"suppressed_reason": "unsubscribed"}, "suppressed: unsubscribed"),
    ({"consent": False}, "consent withdrawn"),
    ({"enrollment_exited": True}, "enrollment exited"),
])
def test_suppressed_unconsented_and_exited_sends_are_skipped(changes, reason):
    verdict = check_send(facts(**changes), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS)
    assert (verdict.action, verdict.reason) == ("skip", reason)


def test_unknown_consent_is_allowed_unless_required():
    assert check_send(facts(consent=None), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS).action == "send"
    verdict = check_send(facts(consent=None), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS,
                         require_consent=True)
    assert (verdict.action, verdict.reason) == ("skip", "no consent recorded")


def test_outside_the_window_is_held_to_the_next_opening_in_the_lead_zone():
    evening = datetime(2026, 11, 3, 17, 30, tzinfo=UTC)  # 12:30 in New York
    assert check_send(facts(timezone="America/New_York"), window=WINDOW, cap=CAP,
                      now=evening).action == "send"
    verdict = check_send(facts(), window=WINDOW, cap=CAP, now=evening)  # 18:30 in Paris
    assert verdict.action == "hold" and verdict.reason == "outside the send window"
    assert verdict.until == datetime(2026, 11, 4, 8, 0, tzinfo=UTC)


def test_frequency_cap_holds_until_the_oldest_send_leaves_the_period():
    sends = (TUESDAY_10_PARIS - timedelta(days=6, hours=20), TUESDAY_10_PARIS - timedelta(days=1))
    verdict = check_send(facts(recent_sends=sends), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS)
    assert (verdict.action, verdict.reason) == ("hold", "frequency cap: 2 sends in 7 days")
    assert verdict.until == sends[0] + CAP.period  # 14:00 in Paris, inside the window
    old = (TUESDAY_10_PARIS - timedelta(days=8), TUESDAY_10_PARIS - timedelta(days=1))
    assert check_send(facts(recent_sends=old), window=WINDOW, cap=CAP,
                      now=TUESDAY_10_PARIS).action == "send"


def test_a_cap_that_frees_after_hours_holds_to_the_next_morning():
    sends = (TUESDAY_10_PARIS - timedelta(days=6, hours=16), TUESDAY_10_PARIS)  # frees 18:00 Paris
    verdict = check_send(facts(recent_sends=sends), window=WINDOW, cap=CAP, now=TUESDAY_10_PARIS)
    assert verdict.reason == "frequency cap: 2 sends in 7 days; outside the send window"
    assert verdict.until == datetime(2026, 11, 4, 8, 0, tzinfo=UTC)


def test_suppression_list_is_case_insensitive_and_keeps_the_first_reason(db):
    now = TUESDAY_10_PARIS
    with db.session() as s:
        suppress(session=s, email="Ann@X.example", reason="bounced", source="smtp 550", now=now)
        suppress(session=s, email="ann@x.example", reason="manual", source="admin", now=now)
        assert suppressed_reasons(session=s, emails=["ANN@x.example", "bob@x.example"]) == {
            "ann@x.example": "bounced"}
        with pytest.raises(Invalid, match="unknown suppression reason 'angry'"):
            suppress(session=s, email="c@x.example", reason="angry", source="x", now=now)
