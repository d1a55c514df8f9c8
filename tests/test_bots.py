"""Telling people from machines (engine/tracking/bots.py): each rule and its boundaries.

A filtered hit is stored but never scores or moves a journey, so a false positive loses a real
lead's response and a false negative lets a mail scanner qualify a lead for sales.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.tracking.bots import CLICK_AFTER_DELIVERY, LINKS_AT_ONCE, Hit, bot_reason
from engine.tracking.links import HONEYPOT

SENT = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
LATER = SENT + timedelta(hours=1)
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
SAFARI_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)"
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
               "(via ggpht.com GoogleImageProxy)")
PERSON_IP = "203.0.113.7"


def click(at: datetime = LATER, *, index: int = 0, agent: str = CHROME, ip: str = PERSON_IP,
          sent_at: datetime | None = SENT, others: tuple = ()) -> Hit:
    return Hit(kind="click", at=at, user_agent=agent, ip=ip, link_index=index, sent_at=sent_at,
               other_clicks=others)


def hit_open(agent: str = CHROME, ip: str = PERSON_IP, at: datetime = LATER) -> Hit:
    return Hit(kind="open", at=at, user_agent=agent, ip=ip, sent_at=SENT)


# -- people ---------------------------------------------------------------------------------

@pytest.mark.parametrize("agent", [CHROME, SAFARI_IOS, OUTLOOK])
@pytest.mark.parametrize("kind", ["open", "click", "view", "page_view"])
def test_a_person_in_a_browser_or_mail_client_is_a_person(kind, agent):
    hit = Hit(kind=kind, at=LATER, user_agent=agent, ip=PERSON_IP,
              link_index=0 if kind == "click" else None, sent_at=SENT)
    assert bot_reason(hit) is None


def test_gmail_image_proxy_open_is_the_person_opening_it():
    """Gmail fetches images when its user opens the email: that open is real."""
    assert bot_reason(hit_open(GMAIL_PROXY, ip="66.249.84.1")) is None


# -- user agents ----------------------------------------------------------------------------

@pytest.mark.parametrize(("agent", "named"), [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Barracuda", "Barracuda"),
    ("python-requests/2.31.0", "python-"),
    ("curl/8.4.0", "curl/"),
    ("Wget/1.21.4", "Wget/"),
    ("Go-http-client/1.1", "Go-http-client"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
    ("facebookexternalhit/1.1", "facebookexternalhit"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36",
     "HeadlessChrome"),
    ("Mimecast URL Protect", "Mimecast"),
    ("Proofpoint URL Defense", "Proofpoint"),
])
@pytest.mark.parametrize("kind", ["open", "click", "view", "page_view"])
def test_scanner_and_script_user_agents_are_bots_with_the_agent_named(kind, agent, named):
    hit = Hit(kind=kind, at=LATER, user_agent=agent, ip=PERSON_IP,
              link_index=0 if kind == "click" else None, sent_at=SENT)
    reason = bot_reason(hit)
    assert reason is not None and reason.startswith("scanner or preview user agent")
    assert named.lower() in reason.lower()


@pytest.mark.parametrize("agent", ["", "   ", "\t"])
@pytest.mark.parametrize("kind", ["open", "click", "view", "page_view"])
def test_no_user_agent_is_a_bot(kind, agent):
    hit = Hit(kind=kind, at=LATER, user_agent=agent, link_index=0 if kind == "click" else None,
              sent_at=SENT)
    assert bot_reason(hit) == "no user agent"


# -- honeypot -------------------------------------------------------------------------------

def test_the_honeypot_link_is_a_bot_whatever_else_looks_human():
    hit = click(SENT + timedelta(days=2), index=HONEYPOT)
    assert bot_reason(hit) == "followed the hidden honeypot link"


def test_the_honeypot_reason_wins_over_the_user_agent():
    hit = click(index=HONEYPOT, agent="python-requests/2.31")
    assert bot_reason(hit) == "followed the hidden honeypot link"


# -- Apple Mail Privacy Protection ------------------------------------------------------------

@pytest.mark.parametrize("agent", ["Mozilla/5.0", " Mozilla/5.0 "])
def test_an_open_with_the_bare_apple_proxy_agent_is_mpp(agent):
    assert bot_reason(hit_open(agent)) == "Apple Mail Privacy Protection prefetch"


@pytest.mark.parametrize("ip", ["17.0.0.0", "17.58.101.12", "17.255.255.255"])
def test_an_open_from_apples_network_is_mpp(ip):
    assert bot_reason(hit_open(CHROME, ip)) == "Apple Mail Privacy Protection prefetch"


@pytest.mark.parametrize("ip", ["16.255.255.255", "18.0.0.0", "170.1.2.3", "117.1.2.3"])
def test_an_open_just_outside_apples_network_is_a_person(ip):
    assert bot_reason(hit_open(CHROME, ip)) is None


def test_mpp_is_an_open_rule_a_click_from_apples_network_is_a_person():
    """Apple's proxy prefetches images, not links: an Apple employee's click is a click."""
    assert bot_reason(click(ip="17.58.101.12")) is None
    assert bot_reason(click(agent="Mozilla/5.0")) is None


@pytest.mark.parametrize("ip", [
    "2001:db8::1", "::1", "fe80::1%eth0", "not-an-ip", "17.0.0.0/8", "999.1.1.1", "17.1.1",
    "17.1.1.1, 10.0.0.1", "", " ", "17.1.1.1\x00", "१७.1.1.1", "x" * 64,
])
def test_ipv6_and_garbage_addresses_never_raise(ip):
    assert bot_reason(hit_open(CHROME, ip)) is None
    assert bot_reason(click(ip=ip)) is None


def test_an_open_from_apples_network_seen_as_ipv4_mapped_ipv6_is_mpp():
    """What a dual-stack server reports for an IPv4 client."""
    assert bot_reason(hit_open(CHROME, "::ffff:17.58.101.12")) == (
        "Apple Mail Privacy Protection prefetch")


# -- time since delivery --------------------------------------------------------------------

@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=3),
                                   CLICK_AFTER_DELIVERY - timedelta(microseconds=1)])
def test_a_click_within_10_seconds_of_delivery_is_a_scanner(after):
    reason = bot_reason(click(SENT + after))
    assert reason == f"clicked {int(after.total_seconds())} s after delivery"


@pytest.mark.parametrize("after", [CLICK_AFTER_DELIVERY, timedelta(minutes=1), timedelta(days=30)])
def test_a_click_10_seconds_or_more_after_delivery_is_a_person(after):
    assert CLICK_AFTER_DELIVERY == timedelta(seconds=10)
    assert bot_reason(click(SENT + after)) is None


def test_an_unknown_delivery_time_is_no_evidence():
    assert bot_reason(click(SENT + timedelta(seconds=1), sent_at=None)) is None


def test_time_since_delivery_is_a_click_rule_not_an_open_rule():
    """A person may open an email the second it arrives."""
    assert bot_reason(hit_open(at=SENT + timedelta(seconds=1))) is None


@pytest.mark.parametrize("before", [timedelta(milliseconds=200), timedelta(seconds=2)])
def test_a_click_stamped_just_before_the_recorded_delivery_is_a_scanner(before):
    """sent_at is stamped after the SMTP accept: a scanner may click in between (or on a host
    whose clock is a second behind)."""
    assert bot_reason(click(SENT - before)) == "clicked 0 s after delivery"


# -- several links at once ------------------------------------------------------------------

AT_ONCE = "several links of one email clicked within seconds"


@pytest.mark.parametrize("gap", [timedelta(0), timedelta(seconds=2),
                                 LINKS_AT_ONCE - timedelta(microseconds=1)])
@pytest.mark.parametrize("direction", [-1, 1])
def test_another_link_of_the_email_clicked_within_5_seconds_is_a_scanner(gap, direction):
    """Either order: the drainer may store the later click first."""
    other = (LATER + direction * gap, 1)
    assert bot_reason(click(index=0, others=(other,))) == AT_ONCE


@pytest.mark.parametrize("direction", [-1, 1])
def test_another_link_clicked_5_seconds_apart_or_more_is_a_person(direction):
    assert LINKS_AT_ONCE == timedelta(seconds=5)
    for gap in (LINKS_AT_ONCE, timedelta(seconds=30)):
        assert bot_reason(click(index=0, others=((LATER + direction * gap, 1),))) is None


def test_the_same_link_clicked_twice_in_a_row_is_a_person_double_clicking():
    others = ((LATER - timedelta(seconds=1), 0), (LATER - timedelta(milliseconds=300), 0))
    assert bot_reason(click(index=0, others=others)) is None


def test_a_click_right_after_the_honeypot_was_hit_is_a_scanner():
    others = ((LATER - timedelta(seconds=1), HONEYPOT),)
    assert bot_reason(click(index=2, others=others)) == AT_ONCE


def test_the_delivery_rule_is_checked_before_the_links_rule():
    hit = click(SENT + timedelta(seconds=4), others=((SENT + timedelta(seconds=3), 1),))
    assert bot_reason(hit) == "clicked 4 s after delivery"
