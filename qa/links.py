"""Link checks: every href and src of a program's emails and pages, statically and over HTTP.

    findings = check_assets({"emails/welcome.html": html}, LinkCheckOptions(cache_path=...))

Static rules need no network: empty and `#` links, `javascript:`, malformed URLs, relative
links with no base, plain http, mailto and tel syntax. Links still holding a Jinja placeholder
are reported as "template" (info): pass HTML rendered for a sample lead to check them.

Web links are deduplicated across all assets and checked once, concurrently (bounded overall
and per host): HEAD first, GET when HEAD is refused (some servers answer HEAD with 405, 501 or
even 404), redirects followed one hop at a time, one retry on 408, 429 and 5xx honouring a short
Retry-After. Bot walls and rate limits are "unverifiable", not broken: they are the usual false
positives. Every hop goes through `qa.netguard`, which refuses private addresses (SSRF).

Only successful checks are cached: a failure is checked again next run, so a fix shows at once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from http.client import HTTPException
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup

from qa.findings import Finding, Severity
from qa.netguard import Refused, Response, parse_allowlist, request

# Which attributes of which elements hold a URL.
_URL_ATTRIBUTES: dict[str, frozenset[str]] = {
    "href": frozenset({"a", "area", "link"}),
    "src": frozenset({"img", "source", "script", "iframe", "embed", "video", "audio", "track",
                      "input"}),
    "srcset": frozenset({"img", "source"}),
    "background": frozenset({"body", "table", "td", "th"}),  # still common in email layouts
    "poster": frozenset({"video"}),
}
_HINT_RELS = frozenset({"preconnect", "dns-prefetch"})  # origins, not documents: nothing to fetch

_TEMPLATE = re.compile(r"\{\{|\{%|%7b%7b|%7b%25", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)
_MISSING_SCHEME = re.compile(r"^(?:https?//|www\.)", re.IGNORECASE)
_INERT_SCHEMES = frozenset({"cid", "data", "sms"})  # valid in email, nothing to check
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$",
                         re.IGNORECASE)
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_PHONE = re.compile(r"^\+?[0-9 ().-]+(?:;ext=[0-9]+)?$", re.IGNORECASE)

_BODY_LIMIT = 32_768
_WALL_HEADERS = ("cf-mitigated", "cf-chl-bypass", "x-datadome", "x-amzn-waf-action")
_WALL_MARKERS = (b"challenge-platform", b"cf-browser-verification", b"just a moment...",
                 b"attention required! | cloudflare", b"_incapsula_resource",
                 b"captcha-delivery.com", b"px-captcha", b"ddos-guard")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class ExtractedLink:
    url: str  # the attribute value as written
    tag: str
    attribute: str
    line: int  # 1-based line in the HTML source


@dataclass(frozen=True)
class Problem:
    code: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class Inspection:
    problems: tuple[Problem, ...] = ()
    fetch: str | None = None  # the normalised absolute URL to check over HTTP, if any


class LinkStatus(StrEnum):
    OK = "ok"
    BROKEN = "broken"
    UNVERIFIABLE = "unverifiable"
    REDIRECT_LOOP = "redirect-loop"
    REDIRECT_CHAIN = "redirect-chain"
    PRIVATE_ADDRESS = "private-address"
    NONSTANDARD_PORT = "nonstandard-port"


@dataclass(frozen=True)
class LinkResult:
    url: str
    status: LinkStatus
    http_status: int | None  # the last answer's status, None when there was no answer
    detail: str
    chain: tuple[str, ...]  # the URL, then every redirect target followed
    elapsed: float  # seconds spent on this link (requests and retry waits, not queueing)
    checked_at: float  # Unix time
    from_cache: bool = False


@dataclass(frozen=True)
class LinkCheckOptions:
    timeout: float = 10.0  # per request: connect, and each read
    max_workers: int = 16
    per_host: int = 4
    max_redirects: int = 5
    retry_delay: float = 1.0  # before the one retry, when the answer gives no Retry-After
    max_retry_after: float = 5.0  # a longer Retry-After is not waited for: unverifiable
    allow_hosts: tuple[str, ...] = ()  # see qa.netguard: "staging.acme.internal", "10.0.0.0/8"
    ca_file: str | None = None  # trust this CA bundle instead of the system's
    cache_path: Path | None = None
    cache_ttl: float = 3600.0
    user_agent: str = "NurtureLinkCheck/0.1 (+https://github.com/nurture)"
    network: bool = True  # False: static rules only
    # Links served by this engine (tracking, unsubscribe, landing pages under the base URL):
    # generated, not written by a marketer, so neither fetched nor judged.
    own_prefixes: tuple[str, ...] = ()


# Extraction


def extract_links(html: str) -> list[ExtractedLink]:
    """Every URL-holding attribute of the document, in source order."""
    soup = BeautifulSoup(html, "html.parser")
    links = []
    for tag in soup.find_all(True):
        if tag.name == "link" and _HINT_RELS.intersection(tag.get("rel") or ()):
            continue
        for attribute, tags in _URL_ATTRIBUTES.items():
            value = tag.get(attribute) if tag.name in tags else None
            for url in _attribute_urls(attribute, value):
                links.append(ExtractedLink(url=url, tag=tag.name, attribute=attribute,
                                           line=tag.sourceline or 0))
    return links


def _attribute_urls(attribute: str, value: str | None) -> list[str]:
    if value is None:
        return []
    if attribute == "srcset":
        return [c.split()[0] for c in value.split(",") if c.strip()]
    return [value]


# Static rules


def _problem(code: str, severity: Severity, message: str) -> Inspection:
    return Inspection(problems=(Problem(code, severity, message),))


def inspect_link(url: str, base_url: str | None = None) -> Inspection:
    """The static problems of one link, and the URL to check over HTTP, if any."""
    value = url.strip()
    if _TEMPLATE.search(value):
        return _problem("link.template", Severity.INFO,
                        "Not checked: the link still holds a template placeholder.")
    if value in ("", "#"):
        what = "empty" if not value else "a bare '#' placeholder"
        return _problem("link.empty", Severity.BLOCKER, f"The link is {what}: it goes nowhere.")
    if value.startswith("#"):
        return Inspection()
    scheme_match = _SCHEME.match(value)
    if scheme_match is None:
        return _relative(value, base_url)
    return _absolute(value, scheme_match.group(1).lower())


def _relative(value: str, base_url: str | None) -> Inspection:
    if _MISSING_SCHEME.match(value):
        return _problem("link.malformed", Severity.BLOCKER,
                        "The link has no scheme: write it as https://...")
    if base_url is None:
        return _problem("link.relative", Severity.BLOCKER,
                        "Relative link: an email has no base address to resolve it against.")
    return _absolute(urljoin(base_url, value), urlsplit(base_url).scheme.lower())


def _absolute(value: str, scheme: str) -> Inspection:
    if scheme == "javascript":
        return _problem("link.javascript", Severity.BLOCKER,
                        "javascript: links do nothing in email clients; link a page instead.")
    if scheme == "mailto":
        reason = mailto_problem(value)
        return _problem("link.mailto-invalid", Severity.BLOCKER, reason) if reason else Inspection()
    if scheme == "tel":
        reason = tel_problem(value)
        return _problem("link.tel-invalid", Severity.BLOCKER, reason) if reason else Inspection()
    if scheme in _INERT_SCHEMES:
        return Inspection()
    if scheme not in ("http", "https"):
        return _problem("link.malformed", Severity.BLOCKER, f"Unknown scheme '{scheme}:'.")
    reason = web_problem(value)
    if reason:
        return _problem("link.malformed", Severity.BLOCKER, reason)
    host = (urlsplit(value).hostname or "").rstrip(".").lower()
    if host.endswith(_PLACEHOLDER_DOMAINS):
        return _problem("link.placeholder", Severity.WARNING,
                        f"'{host}' is a reserved example domain (RFC 2606): not checked; "
                        "replace it with the real address before sending to customers.")
    problems = ()
    if scheme == "http":
        problems = (Problem("link.insecure", Severity.WARNING,
                            "Plain http link: use https (browsers warn, some clients block)."),)
    return Inspection(problems=problems, fetch=normalize_url(value))


_PLACEHOLDER_DOMAINS = (".example", ".test")  # RFC 2606 / 6761: never resolve, by design


def web_problem(url: str) -> str | None:
    """Why an http(s) URL is malformed, or None."""
    if re.search(r"\s", url):
        return "The URL contains spaces: encode them as %20."
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "The URL has an invalid port."
    if not parts.hostname:
        return "The URL has no host."
    if not _valid_host(parts.hostname):
        return f"'{parts.hostname}' is not a valid host name."
    return None


def _valid_host(host: str) -> bool:
    if ":" in host:  # an IPv6 literal: urlsplit already removed the brackets
        return _is_ip(host)
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return all(_LABEL.match(label) for label in ascii_host.split("."))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def mailto_problem(url: str) -> str | None:
    """Why a mailto: link is invalid, or None. Only the addresses are checked, not the query."""
    addresses, _, query = url[len("mailto:"):].partition("?")
    if not addresses.strip():
        return None if "to=" in query.lower() else "The mailto: link names no address."
    for address in unquote(addresses).split(","):
        if not _valid_email(address.strip()):
            return f"'{address.strip()}' is not a valid email address."
    return None


def _valid_email(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL_PART.match(local) or len(local) > 64:
        return False
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return False
    labels = domain.split(".")
    return (len(labels) >= 2 and all(_LABEL.match(label) for label in labels)
            and bool(_TLD.match(labels[-1])))


def tel_problem(url: str) -> str | None:
    """Why a tel: link is invalid, or None."""
    number = unquote(url[len("tel:"):]).strip()
    digits = sum(c.isdigit() for c in number.partition(";")[0])
    if not _PHONE.match(number) or not 3 <= digits <= 15:
        return f"'{number}' is not a phone number (digits, +, spaces, dashes, dots, brackets)."
    return None


def normalize_url(url: str) -> str:
    """One spelling per resource: lower-case scheme and host (IDNA), no default port, no
    fragment or credentials, path and query percent-encoded. Raises ValueError if malformed."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, {"http": 80, "https": 443}.get(scheme)) else f"{host}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return urlunsplit((scheme, netloc, path, query, ""))


# HTTP checks


@dataclass
class _Progress:
    """What one link's check carries from hop to hop."""

    use_get: bool = False  # a server that refused HEAD once gets GET for the rest
    retries_left: int = 1
    queued: float = 0.0  # seconds spent waiting for a per-host slot


class _HostSlots:
    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    @contextmanager
    def hold(self, host: str, progress: _Progress) -> Iterator[None]:
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self._per_host))
        started = time.perf_counter()
        with slot:
            progress.queued += time.perf_counter() - started
            yield


@lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)  # loading CAs costs ~50 ms: once


class _Checker:
    def __init__(self, options: LinkCheckOptions) -> None:
        self.options = options
        self.allow = parse_allowlist(options.allow_hosts)
        self.tls = _tls_context(options.ca_file)
        self.slots = _HostSlots(options.per_host)
        self.headers = {"User-Agent": options.user_agent, "Accept": "*/*"}

    def check(self, url: str) -> LinkResult:
        started = time.perf_counter()
        progress = _Progress()
        chain = [url]
        status, http_status, detail = self._follow(chain, progress)
        elapsed = time.perf_counter() - started - progress.queued
        return LinkResult(url=url, status=status, http_status=http_status, detail=detail,
                          chain=tuple(chain), elapsed=elapsed, checked_at=time.time())

    def _follow(self, chain: list[str], progress: _Progress
                ) -> tuple[LinkStatus, int | None, str]:
        while True:
            try:
                response = self._hop(chain[-1], progress)
                target = _redirect_target(chain[-1], response)
            except Refused as refused:
                status = (LinkStatus.PRIVATE_ADDRESS if refused.kind == "private-address"
                          else LinkStatus.NONSTANDARD_PORT)
                return status, None, refused.detail
            except (OSError, HTTPException, ValueError) as exc:
                return LinkStatus.BROKEN, None, _describe_error(exc, self.options.timeout)
            if target is None:
                return _classify(response)
            if target in chain:
                chain.append(target)
                return LinkStatus.REDIRECT_LOOP, response.status, "redirects in a loop"
            chain.append(target)
            if len(chain) - 1 > self.options.max_redirects:
                return (LinkStatus.REDIRECT_CHAIN, response.status,
                        f"more than {self.options.max_redirects} redirects")

    def _hop(self, url: str, progress: _Progress) -> Response:
        response = self._attempt(url, progress)
        if progress.retries_left and _retryable(response):
            delay = _retry_delay(response, self.options)
            if delay is not None:
                progress.retries_left -= 1
                time.sleep(delay)
                response = self._attempt(url, progress)
        return response

    def _attempt(self, url: str, progress: _Progress) -> Response:
        if not progress.use_get:
            try:
                response = self._request(url, "HEAD", progress)
                if response.status < 400 or response.status == 429:
                    return response
            except (HTTPException, ConnectionResetError):
                pass  # some servers drop the connection on HEAD; GET may still work
            progress.use_get = True
        return self._request(url, "GET", progress)

    def _request(self, url: str, method: str, progress: _Progress) -> Response:
        with self.slots.hold(urlsplit(url).hostname or "", progress):
            return request(url, method, allow=self.allow, timeout=self.options.timeout,
                           tls=self.tls, headers=self.headers, read_body=_BODY_LIMIT)


def _redirect_target(url: str, response: Response) -> str | None:
    location = response.headers.get("location")
    if response.status not in _REDIRECTS or not location:
        return None
    target = urljoin(url, location.strip().replace(" ", "%20"))  # as browsers do
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        return None  # e.g. an app store link: nothing more a web check can tell
    if web_problem(target):
        raise ValueError(f"redirects to a malformed address: {location}")
    return normalize_url(target)


def _bot_wall(response: Response) -> str | None:
    if response.status == 999:
        return "LinkedIn-style bot wall (999)"
    if response.status not in (403, 429, 503):
        return None
    if any(name in response.headers for name in _WALL_HEADERS):
        return f"bot protection challenge ({response.status})"
    body = response.body.lower()
    if any(marker in body for marker in _WALL_MARKERS):
        return f"bot protection challenge page ({response.status})"
    return None


def _retryable(response: Response) -> bool:
    status = response.status
    return (status in (408, 429) or 500 <= status < 600) and _bot_wall(response) is None


def _retry_delay(response: Response, options: LinkCheckOptions) -> float | None:
    """Seconds to wait before the retry, or None when the server asks for too long."""
    header = response.headers.get("retry-after")
    if header is None:
        return options.retry_delay
    try:
        delay = float(header)
    except ValueError:
        try:
            delay = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return options.retry_delay
    delay = max(delay, 0.0)
    return delay if delay <= options.max_retry_after else None


def _classify(response: Response) -> tuple[LinkStatus, int, str]:
    status = response.status
    wall = _bot_wall(response)
    if wall:
        return LinkStatus.UNVERIFIABLE, status, wall
    if status == 429:
        after = response.headers.get("retry-after")
        return (LinkStatus.UNVERIFIABLE, status,
                "rate limited (429)" + (f", retry after {after}" if after else ""))
    if status < 400:
        return LinkStatus.OK, status, f"{status} {response.reason}".strip()
    return LinkStatus.BROKEN, status, f"{status} {response.reason}".strip()


def _describe_error(exc: Exception, timeout: float) -> str:
    if isinstance(exc, socket.gaierror):
        return "host not found (DNS)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return str(exc) if isinstance(exc, ValueError) else f"connection failed: {exc!r}"


# Cache


class _Cache:
    """Successful results by URL in a JSON file, valid for `ttl` seconds under one policy (an
    allowlist change must not let a cached result skip the address check)."""

    def __init__(self, options: LinkCheckOptions) -> None:
        self.path = options.cache_path
        self.ttl = options.cache_ttl
        self.policy = json.dumps([sorted(options.allow_hosts), options.ca_file])
        self.entries: dict[str, dict] = self._load() if self.path else {}

    def _load(self) -> dict[str, dict]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def get(self, url: str, now: float) -> LinkResult | None:
        entry = self.entries.get(url)
        if not entry or entry.get("policy") != self.policy:
            return None
        if now - entry.get("checked_at", 0) > self.ttl:
            return None
        return LinkResult(url=url, status=LinkStatus(entry["status"]),
                          http_status=entry["http_status"], detail=entry["detail"],
                          chain=tuple(entry["chain"]), elapsed=entry["elapsed"],
                          checked_at=entry["checked_at"], from_cache=True)

    def save(self, results: Iterable[LinkResult], now: float) -> None:
        if self.path is None:
            return
        for result in results:
            if result.status is LinkStatus.OK:
                entry = asdict(result) | {"policy": self.policy, "chain": list(result.chain)}
                entry.pop("from_cache")
                self.entries[result.url] = entry
        fresh = {url: e for url, e in self.entries.items()
                 if now - e.get("checked_at", 0) <= self.ttl}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".links-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(fresh, out)
        os.replace(tmp, self.path)  # readers never see a half-written file


# Public API


def check_links(urls: Iterable[str], *, options: LinkCheckOptions | None = None
                ) -> list[LinkResult]:
    """Check absolute http(s) URLs: one result per distinct normalised URL, in first-seen order.
    Raises ValueError on a malformed URL (run inspect_link first)."""
    options = options or LinkCheckOptions()
    unique = list(dict.fromkeys(normalize_url(url) for url in urls))
    cache = _Cache(options)
    now = time.time()
    cached = {url: hit for url in unique if (hit := cache.get(url, now))}
    pending = [url for url in unique if url not in cached]
    checker = _Checker(options)
    with ThreadPoolExecutor(max_workers=max(1, min(options.max_workers, len(pending)))) as pool:
        fresh = dict(zip(pending, pool.map(checker.check, pending), strict=True))
    cache.save(fresh.values(), time.time())
    return [cached.get(url) or fresh[url] for url in unique]


_RESULT_PROBLEMS: dict[LinkStatus, tuple[str, Severity, str]] = {
    LinkStatus.BROKEN: ("link.broken", Severity.BLOCKER, "Broken link: {detail}{via}."),
    LinkStatus.UNVERIFIABLE: ("link.unverifiable", Severity.WARNING,
                              "Could not verify: {detail}{via}; open it in a browser."),
    LinkStatus.REDIRECT_LOOP: ("link.redirect-loop", Severity.BLOCKER, "Redirect loop: {chain}."),
    LinkStatus.REDIRECT_CHAIN: ("link.redirect-chain", Severity.WARNING,
                                "Too many redirects ({detail}): {chain}; link the final page."),
    LinkStatus.PRIVATE_ADDRESS: ("link.private-address", Severity.BLOCKER,
                                 "Not checked: {detail}{via}; recipients cannot reach it."),
    LinkStatus.NONSTANDARD_PORT: ("link.nonstandard-port", Severity.WARNING,
                                  "Not checked: {detail}{via}."),
}


def result_problem(result: LinkResult) -> Problem | None:
    """The problem an HTTP check found, or None when the link works."""
    if result.status is LinkStatus.OK:
        return None
    code, severity, template = _RESULT_PROBLEMS[result.status]
    chain = " -> ".join(result.chain)
    via = f" (via {chain})" if len(result.chain) > 1 else ""
    return Problem(code, severity, template.format(detail=result.detail, via=via, chain=chain))


def link_findings(asset: str, links: Sequence[ExtractedLink],
                  results: Mapping[str, LinkResult], *, base_url: str | None = None
                  ) -> list[Finding]:
    """Findings for one asset's links: static problems, then the HTTP result of each link
    (looked up by normalised URL; a link without a result was not checked)."""
    findings: dict[str, Finding] = {}
    for link in links:
        inspection = inspect_link(link.url, base_url)
        problems = list(inspection.problems)
        result = results.get(inspection.fetch) if inspection.fetch else None
        if result and (problem := result_problem(result)):
            problems.append(problem)
        for problem in problems:
            finding = Finding(severity=problem.severity, code=problem.code, asset=asset,
                              location=f"line {link.line}: {link.url}", message=problem.message)
            findings.setdefault(finding.key, finding)
    return list(findings.values())


def _own(url: str, base_url: str | None, prefixes: tuple[str, ...]) -> bool:
    """Whether a link (resolved against its page's address) is served by this engine."""
    return bool(prefixes) and urljoin(base_url or "", url.strip()).startswith(prefixes)


def check_assets(assets: Mapping[str, str], options: LinkCheckOptions | None = None, *,
                 base_urls: Mapping[str, str] | None = None) -> list[Finding]:
    """Link findings for every asset (path -> HTML), each distinct URL fetched once.
    `base_urls` gives a page's public URL, against which its relative links resolve."""
    options = options or LinkCheckOptions()
    bases = base_urls or {}
    extracted = {asset: [link for link in extract_links(html)
                         if not _own(link.url, bases.get(asset), options.own_prefixes)]
                 for asset, html in assets.items()}
    to_fetch = [inspection.fetch for asset, links in extracted.items() for link in links
                if (inspection := inspect_link(link.url, bases.get(asset))).fetch]
    results: dict[str, LinkResult] = {}
    if options.network and to_fetch:
        results = {result.url: result for result in check_links(to_fetch, options=options)}
    return [finding for asset, links in extracted.items()
            for finding in link_findings(asset, links, results, base_url=bases.get(asset))]
