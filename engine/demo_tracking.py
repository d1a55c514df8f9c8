"""The demo's people: they open and click the emails that reach the sink, over HTTP, through
the real tracking endpoints served by the real app (on the demo's simulated clock), and one
mail scanner clicks everything at once. Their events go through the Redis buffer and the
drainer, then scoring routes the hottest leads to sales."""

from __future__ import annotations

import http.client
import http.cookiejar
import random
import threading
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from typing import Self
from urllib.parse import urlencode, urlsplit

from bs4 import BeautifulSoup
from werkzeug.serving import WSGIRequestHandler, make_server

from engine.sending.inbox import StoredMessage, read_message

BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link scanner)"


class TrackingServer:
    """The app on a local port, in a thread (werkzeug's threaded server)."""

    def __init__(self, app, port: int):
        self.server = make_server("127.0.0.1", port, app, threaded=True,
                                  request_handler=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join()


class Audience:
    """Who does what: a few leads are hot (open and click everything, landing pages included),
    more are warm (open, sometimes click), the rest ignore the email; the first email is
    clicked through by a mail scanner the moment it lands."""

    def __init__(self, emails: list[str], seed: int = 11):
        rng = random.Random(seed)
        self.rng = rng
        self.hot = set(rng.sample(emails, max(1, len(emails) // 25)))
        self.warm = set(rng.sample(sorted(set(emails) - self.hot), max(1, len(emails) // 5)))
        self.scanned = False
        self.requests = 0

    def react(self, stored: StoredMessage, directory, at: Callable[[timedelta], None]) -> None:
        """Act on one delivered email; `at(offset)` sets the clock to delivery time + offset."""
        lead = stored.rcpt_tos[0].lower()
        html = read_message(directory, stored).get_body(("html",)).get_content()
        links, pixel = _tracked(html)
        if not self.scanned and links:
            self.scanned = True
            for url in links:  # a scanner: every link, the moment the email lands
                self._get(url, SCANNER)
            return
        if lead in self.hot or (lead in self.warm and self.rng.random() < 0.7):
            offset = timedelta(minutes=self.rng.randint(20, 180))
            at(offset)
            for url in pixel:
                self._get(url, BROWSER)
            chosen = self._choose(links, hot=lead in self.hot)
            for url in chosen:
                offset += timedelta(minutes=self.rng.randint(1, 4))
                at(offset)
                self._click(url)

    def _choose(self, links: list[str], *, hot: bool) -> list[str]:
        """A hot lead reads everything (pricing included, when the email links it); a warm
        one sometimes clicks one link."""
        if hot or not links:
            return links
        return self.rng.sample(links, 1) if self.rng.random() < 0.3 else []

    def _click(self, url: str) -> None:
        status, location = self._get(url, BROWSER)
        if status == 302 and location and _same_origin(location, url):
            self._get(location, BROWSER)  # a landing page of ours: the visit is tracked too

    def _get(self, url: str, agent: str) -> tuple[int, str | None]:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"User-Agent": agent})
            response = connection.getresponse()
            response.read()
            self.requests += 1
            return response.status, response.getheader("Location")
        finally:
            connection.close()


# People who find the demo page through an ad, a partner's listing or a post, and ask for a
# demo: each becomes a lead with the source of its visit and the consent it gave.
VISITORS = (
    ({"utm_source": "linkedin", "utm_medium": "social", "utm_campaign": "q4-demo"},
     {"first_name": "Mira", "last_name": "Kovac", "company": "Northwind",
      "job_title": "Head of IT Operations", "team_size": "14", "news": "yes"}),
    ({"utm_source": "g2", "utm_medium": "review-site", "utm_campaign": "cloud-compare"},
     {"first_name": "Tomas", "last_name": "Berg", "company": "Fabrikam",
      "job_title": "CFO", "team_size": "3"}),
    ({"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand"},
     {"first_name": "Lena", "last_name": "Ortiz", "company": "Contoso",
      "job_title": "Infrastructure Manager", "team_size": "40", "news": "yes"}),
)


def fill_demo_forms(base_url: str, program: str) -> list[str]:
    """Each visitor opens the demo page from its campaign link (a browser of its own, with
    cookies) and posts the form with the page's CSRF token. Returns the emails captured."""
    captured = []
    for params, fields in VISITORS:
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        url = f"{base_url}/p/{program}/demo?{urlencode(params)}"
        page = browser.open(urllib.request.Request(url, headers={"User-Agent": BROWSER}),
                            timeout=10).read().decode()
        token = BeautifulSoup(page, "html.parser").find("input", {"name": "csrf_token"})["value"]
        email = f"{fields['first_name'].lower()}@{fields['company'].lower()}.example"
        body = urlencode({"csrf_token": token, "email": email, **fields}).encode()
        browser.open(urllib.request.Request(url, data=body, headers={"User-Agent": BROWSER}),
                     timeout=10).read()
        captured.append(email)
    return captured


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args) -> None:  # the demo prints its own summary
        pass


def _tracked(html: str) -> tuple[list[str], list[str]]:
    """The click links a person can see (not the hidden honeypot) and the open pixel."""
    soup = BeautifulSoup(html, "html.parser")
    links = [a["href"] for a in soup.find_all("a", href=True)
             if "/c/" in a["href"] and a.get("aria-hidden") != "true"]
    pixels = [img["src"] for img in soup.find_all("img", src=True) if "/o/" in img["src"]]
    return links, pixels


def _same_origin(a: str, b: str) -> bool:
    return urlsplit(a).netloc == urlsplit(b).netloc


class Reviewer:
    """A QA reviewer: opens each proof's Approve link, and approves on the page (a GET shows
    the proof; the POST, with the page's CSRF token and cookie, records the decision)."""

    def __init__(self) -> None:
        self.approved = 0

    def approve(self, stored: StoredMessage, directory) -> bool:
        html = read_message(directory, stored).get_body(("html",)).get_content()
        links = [a["href"] for a in BeautifulSoup(html, "html.parser").find_all("a", href=True)
                 if "/review/" in a["href"] and "decision=approve" in a["href"]]
        if not links:
            return False
        parts = urlsplit(links[0])
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request("GET", f"{parts.path}?{parts.query}", headers={"User-Agent": BROWSER})
            page = connection.getresponse()
            body = page.read().decode()
            cookie = (page.getheader("Set-Cookie") or "").split(";")[0]
            field = BeautifulSoup(body, "html.parser").find("input", {"name": "csrf_token"})
            if page.status != 200 or field is None:
                return False
            form = urlencode({"csrf_token": field["value"], "decision": "approve"})
            connection.request("POST", parts.path, body=form, headers={
                "User-Agent": BROWSER, "Cookie": cookie,
                "Content-Type": "application/x-www-form-urlencoded"})
            answer = connection.getresponse()
            answer.read()
        finally:
            connection.close()
        self.approved += answer.status == 200
        return answer.status == 200
