"""Tell people from machines. Mail security scanners (Safe Links, Mimecast, Barracuda,
Proofpoint) click every link within seconds of delivery; Apple Mail Privacy Protection fetches
every image; link previewers and scripts announce themselves. A filtered event is stored with
its reason and never scores or moves a journey. Pure: the caller supplies what it knows."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.tracking.links import HONEYPOT

CLICK_AFTER_DELIVERY = timedelta(seconds=10)  # a person cannot read and click this fast
LINKS_AT_ONCE = timedelta(seconds=5)  # distinct links of one email clicked this close together

_SCANNERS = re.compile(
    r"bot\b|crawler|spider|preview|scanner|barracuda|mimecast|proofpoint|safelinks|"
    r"symantec|messagelabs|forcepoint|trendmicro|sophos|fireeye|ironport|zscaler|"
    r"python-|curl/|wget/|go-http-client|java/|okhttp|libwww|httpclient|headlesschrome|"
    r"phantomjs|facebookexternalhit|slackbot|linkedinbot|twitterbot|whatsapp|skypeuripreview|"
    r"googlebot|google-safety|bingpreview|yandex|baiduspider",
    re.IGNORECASE)
# Apple's proxy fetches images from Apple's own network with a bare "Mozilla/5.0".
_APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")


@dataclass(frozen=True)
class Hit:
    kind: str  # open, click, view, page_view
    at: datetime
    user_agent: str = ""
    ip: str = ""
    link_index: int | None = None
    sent_at: datetime | None = None  # when its email was sent, if known
    # Earlier clicks on links of the same email: (when, link index).
    other_clicks: tuple[tuple[datetime, int], ...] = field(default_factory=tuple)


def bot_reason(hit: Hit) -> str | None:
    """Why this hit is not a person, or None."""
    agent = (hit.user_agent or "").strip()
    if hit.kind == "click" and hit.link_index == HONEYPOT:
        return "followed the hidden honeypot link"
    if not agent:
        return "no user agent"
    if match := _SCANNERS.search(agent):
        return f"scanner or preview user agent ({match.group(0).strip()})"
    if hit.kind == "open" and _apple_proxy(agent, hit.ip):
        return "Apple Mail Privacy Protection prefetch"
    if hit.kind == "click":
        return _click_timing(hit)
    return None


def _apple_proxy(agent: str, ip: str) -> bool:
    if agent == "Mozilla/5.0":
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:17.x.x.x from a dual-stack server
    return (mapped or address) in _APPLE_NETWORK


def _click_timing(hit: Hit) -> str | None:
    # A click stamped before sent_at came between the SMTP accept and the worker recording it.
    if hit.sent_at is not None and hit.at - hit.sent_at < CLICK_AFTER_DELIVERY:
        seconds = max(int((hit.at - hit.sent_at).total_seconds()), 0)
        return f"clicked {seconds} s after delivery"
    for at, index in hit.other_clicks:
        if index != hit.link_index and abs(hit.at - at) < LINKS_AT_ONCE:
            return "several links of one email clicked within seconds"
    return None
