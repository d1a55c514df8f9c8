"""Link checks: extraction, static rules, HTTP checks against a local server, SSRF refusals."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from qa.findings import Severity
from qa.links import (
    LinkCheckOptions,
    LinkResult,
    LinkStatus,
    check_assets,
    check_links,
    extract_links,
    inspect_link,
    link_findings,
    normalize_url,
)
from qa.netguard import blocked_reason, parse_allow_entry

TIMEOUT = 0.5
STAGING = "staging.acme.internal"  # resolves to the test server when a test says so (`dns`)
PUBLIC = "93.184.216.34"  # a public address; `connections` can route it to the test server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, path: str, method: str | None = None) -> int:
        return sum(n for (m, p), n in self.requests.items()
                   if p == path and method in (None, m))

    def handle_error(self, request, client_address) -> None:
        pass  # the client hung up on /slow: expected


def _redirect(location: str) -> tuple[int, dict, bytes]:
    return 302, {"Location": location}, b""


def _route(server: _Server, method: str, target: str) -> tuple[int, dict, bytes]:
    path = urlsplit(target).path
    hits = server.count(target)
    if path == "/ok":
        return 200, {}, b"ok"
    if path in ("/missing", "/gone", "/error"):
        return {"/missing": 404, "/gone": 410, "/error": 500}[path], {}, b"no"
    if path == "/slow":
        time.sleep(TIMEOUT * 2)
        return 200, {}, b"late"
    if path == "/sleep":
        time.sleep(0.2)
        return 200, {}, b"ok"
    if path.startswith("/chain/"):
        hops = int(path.rsplit("/", 1)[1])
        return _redirect(f"/chain/{hops - 1}") if hops else (200, {}, b"end")
    if path == "/loop/a":
        return _redirect("/loop/b")
    if path == "/loop/b":
        return _redirect(f"{server.base}/loop/a")
    if path == "/limited":
        return 429, {"Retry-After": "120"}, b"slow down"
    if path == "/limited-once":
        return (429, {"Retry-After": "1"}, b"") if hits == 1 else (200, {}, b"ok")
    if path == "/flaky":
        return (503, {}, b"") if hits == 1 else (200, {}, b"ok")
    if path == "/no-head":
        return (405, {}, b"") if method == "HEAD" else (200, {}, b"ok")
    if path == "/wall":
        return 403, {"Server": "cloudflare", "cf-mitigated": "challenge"}, b"Just a moment..."
    if path == "/linkedin":
        return 999, {}, b"Request denied"
    if path == "/to-metadata":
        return _redirect("http://169.254.169.254/latest/meta-data/")
    if path == "/to-ten":
        return _redirect("http://10.0.0.1/admin")
    if path == "/to-staging":
        return _redirect(f"http://{STAGING}:{server.server_address[1]}/ok?t=via-public")
    return 404, {}, b"unknown route"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_GET(self) -> None:
        self._answer("GET")

    def _answer(self, method: str) -> None:
        server = self.server
        sleeper = self.path.startswith("/sleep")  # in-flight counts only these (not /slow)
        with server.lock:
            server.requests[(method, self.path)] += 1
            server.in_flight += sleeper
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            status, headers, body = _route(server, method, self.path)
        finally:
            with server.lock:
                server.in_flight -= sleeper
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


def _serve(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    _serve(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def options() -> LinkCheckOptions:
    return LinkCheckOptions(timeout=TIMEOUT, retry_delay=0.05, max_retry_after=1.5,
                            max_redirects=3, allow_hosts=("127.0.0.1",))


def _check(url: str, options: LinkCheckOptions):
    [result] = check_links([url], options=options)
    return result


# Extraction

PAGE = """<html><head>
<link rel="stylesheet" href="https://acme.example/style.css">
<link rel="preconnect" href="https://fonts.example">
</head><body>
<table background="https://acme.example/bg.png"><tr><td>
<a href="https://acme.example/pricing">Pricing</a> <img src="https://acme.example/logo.png"
  alt="Acme">
<picture><source srcset="https://acme.example/a.webp 1x, https://acme.example/b.webp 2x"></picture>
<a href="{{ links.unsubscribe }}">Unsubscribe</a>
<map><area href="https://acme.example/area"></map>
<script src="https://acme.example/app.js"></script><iframe src="https://acme.example/v"></iframe>
<a name="no-href">anchor</a>
</td></tr></table></body></html>"""


def test_extract_links_names_element_attribute_and_line():
    found = [(link.tag, link.attribute, link.url, link.line) for link in extract_links(PAGE)]
    assert found == [
        ("link", "href", "https://acme.example/style.css", 2),
        ("table", "background", "https://acme.example/bg.png", 5),
        ("a", "href", "https://acme.example/pricing", 6),
        ("img", "src", "https://acme.example/logo.png", 6),
        ("source", "srcset", "https://acme.example/a.webp", 8),
        ("source", "srcset", "https://acme.example/b.webp", 8),
        ("a", "href", "{{ links.unsubscribe }}", 9),
        ("area", "href", "https://acme.example/area", 10),
        ("script", "src", "https://acme.example/app.js", 11),
        ("iframe", "src", "https://acme.example/v", 11),
    ]


@pytest.mark.parametrize("url", ["{{ links.unsubscribe }}", "{{ links.page('pricing') }}",
                                 "https://acme.example/{{ lead.id }}", "{{%20links.x%20}}"])
def test_template_links_are_reported_as_such_and_not_fetched(url):
    inspection = inspect_link(url)
    assert [(p.code, p.severity) for p in inspection.problems] == [("link.template",
                                                                     Severity.INFO)]
    assert inspection.fetch is None


# Static rules

@pytest.mark.parametrize(("url", "code"), [
    ("", "link.empty"),
    ("   ", "link.empty"),
    ("#", "link.empty"),
    ("javascript:void(0)", "link.javascript"),
    ("JavaScript:alert(1)", "link.javascript"),
    ("https://acme.example/a page", "link.malformed"),
    ("https://", "link.malformed"),
    ("https:///pricing", "link.malformed"),
    ("http:acme.example", "link.malformed"),
    ("htps://acme.example", "link.malformed"),
    ("https://acme.example:99999/", "link.malformed"),
    ("https://-acme-.example/", "link.malformed"),
    ("https://acme_corp.example/", "link.malformed"),
    ("www.acme.example/pricing", "link.malformed"),
    ("https//acme.example", "link.malformed"),
    ("pricing.html", "link.relative"),
    ("/p/acme/pricing", "link.relative"),
    ("mailto:", "link.mailto-invalid"),
    ("mailto:jane", "link.mailto-invalid"),
    ("mailto:jane@acme", "link.mailto-invalid"),
    ("mailto:jane.@acme.example", "link.mailto-invalid"),
    ("mailto:jane@@acme.example", "link.mailto-invalid"),
    ("mailto:jane@acme.example,not an address", "link.mailto-invalid"),
    ("tel:", "link.tel-invalid"),
    ("tel:555-CALL-NOW", "link.tel-invalid"),
    ("tel:1+555", "link.tel-invalid"),
    ("tel:12", "link.tel-invalid"),
    ("tel:+1234567890123456", "link.tel-invalid"),
])
def test_static_rule_flags_bad_link(url, code):
    inspection = inspect_link(url)
    assert [p.code for p in inspection.problems] == [code]
    assert inspection.problems[0].severity is Severity.BLOCKER
    assert inspection.fetch is None


@pytest.mark.parametrize("url", [
    "mailto:jane@acme.example",
    "mailto:jane.doe+news@mail.acme.example?subject=Hello%20there&body=Hi",
    "mailto:jane@acme.example,%20bob@acme.example",
    "mailto:?to=jane@acme.example",
    "MAILTO:Jane@Acme.Example",
    "tel:+1 (555) 010-9999",
    "tel:+33.1.23.45.67.89",
    "tel:0123456789;ext=12",
    "tel:+44%2020%207946%200000",
    "cid:logo@acme",
    "data:image/png;base64,iVBORw0KGgo=",
    "#pricing",
])
def test_valid_non_web_links_have_no_problem_and_are_not_fetched(url):
    assert inspect_link(url).problems == ()
    assert inspect_link(url).fetch is None


def test_plain_http_is_a_warning_and_still_checked():
    inspection = inspect_link("http://acme.com/pricing")
    assert [(p.code, p.severity) for p in inspection.problems] == [("link.insecure",
                                                                     Severity.WARNING)]
    assert inspection.fetch == "http://acme.com/pricing"


def test_https_link_is_fetched_normalised():
    inspection = inspect_link(" HTTPS://Acme.Com:443/caf%C3%A9?x=1&y=2#top ")
    assert inspection.problems == ()
    assert inspection.fetch == "https://acme.com/caf%C3%A9?x=1&y=2"
    assert normalize_url("https://bücher.de") == "https://xn--bcher-kva.de/"
    assert normalize_url("http://[::1]:8080/a") == "http://[::1]:8080/a"


def test_relative_link_resolves_against_a_page_base_url():
    inspection = inspect_link("demo", "https://acme.example/p/acme-nurture/pricing")
    assert inspection == inspect_link("https://acme.example/p/acme-nurture/demo")


# HTTP checks

@pytest.mark.parametrize(("path", "status", "http_status"), [
    ("/ok", LinkStatus.OK, 200),
    ("/missing", LinkStatus.BROKEN, 404),
    ("/gone", LinkStatus.BROKEN, 410),
    ("/error", LinkStatus.BROKEN, 500),
    ("/no-head", LinkStatus.OK, 200),
    ("/wall", LinkStatus.UNVERIFIABLE, 403),
    ("/linkedin", LinkStatus.UNVERIFIABLE, 999),
    ("/limited", LinkStatus.UNVERIFIABLE, 429),
    ("/flaky", LinkStatus.OK, 200),
])
def test_http_answers_are_classified(server, options, path, status, http_status):
    result = _check(f"{server.base}{path}?t=classify", options)
    assert (result.status, result.http_status) == (status, http_status)


def test_head_refused_falls_back_to_get(server, options):
    assert _check(f"{server.base}/no-head?t=fallback", options).status is LinkStatus.OK
    assert server.count("/no-head?t=fallback", "HEAD") == 1
    assert server.count("/no-head?t=fallback", "GET") == 1


def test_server_error_is_retried_once_then_broken(server, options):
    result = _check(f"{server.base}/error?t=retry", options)
    assert result.status is LinkStatus.BROKEN and "500" in result.detail
    assert server.count("/error?t=retry", "GET") == 2  # GET after the failed HEAD, one retry


def test_retry_after_is_honoured(server, options):
    started = time.perf_counter()
    result = _check(f"{server.base}/limited-once?t=honour", options)
    assert result.status is LinkStatus.OK
    assert time.perf_counter() - started >= 1.0
    assert server.count("/limited-once?t=honour", "HEAD") == 2


def test_long_retry_after_is_not_waited_for(server, options):
    started = time.perf_counter()
    result = _check(f"{server.base}/limited?t=long", options)
    assert result.status is LinkStatus.UNVERIFIABLE and "retry after 120" in result.detail
    assert time.perf_counter() - started < 1.0
    assert server.count("/limited?t=long") == 1


def test_slow_link_times_out_as_broken(server, options):
    started = time.perf_counter()
    result = _check(f"{server.base}/slow?t=timeout", options)
    assert result.status is LinkStatus.BROKEN and "no answer within 0.5 s" in result.detail
    assert time.perf_counter() - started < TIMEOUT * 2
    assert server.count("/slow?t=timeout", "GET") == 0  # a timeout is not retried with GET


def test_redirect_chain_within_the_limit_is_followed(server, options):
    result = _check(f"{server.base}/chain/3?t=ok", options)
    assert result.status is LinkStatus.OK
    assert [urlsplit(url).path for url in result.chain] == [
        "/chain/3", "/chain/2", "/chain/1", "/chain/0"]


def test_over_long_redirect_chain_is_reported_with_the_chain(server, options):
    result = _check(f"{server.base}/chain/9", options)
    assert result.status is LinkStatus.REDIRECT_CHAIN
    assert [urlsplit(url).path for url in result.chain] == [
        "/chain/9", "/chain/8", "/chain/7", "/chain/6", "/chain/5"]
    assert server.count("/chain/5") == 0  # the hop past the limit is named, not fetched


def test_redirect_loop_is_reported(server, options):
    result = _check(f"{server.base}/loop/a", options)
    assert result.status is LinkStatus.REDIRECT_LOOP
    assert [urlsplit(url).path for url in result.chain] == ["/loop/a", "/loop/b", "/loop/a"]


def test_refused_connection_and_unknown_host_are_broken(options):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = _check(f"http://127.0.0.1:{port}/", options)
    assert (refused.status, refused.detail) == (LinkStatus.BROKEN, "connection refused")
    unknown = _check("https://nurture-link-check.invalid/", options)
    assert (unknown.status, unknown.detail) == (LinkStatus.BROKEN, "host not found (DNS)")


def test_a_url_used_three_times_is_fetched_once(server, options):
    url = f"{server.base}/ok?t=dedup"
    results = check_links([url, url, f"{url}#section"], options=options)
    assert len(results) == 1
    assert server.count("/ok?t=dedup") == 1


def test_check_is_concurrent_and_bounded_per_host(server, options):
    server.max_in_flight = 0
    urls = [f"{server.base}/sleep?i={i}" for i in range(6)]
    started = time.perf_counter()
    check_links(urls, options=replace(options, per_host=2))
    assert server.max_in_flight == 2
    assert time.perf_counter() - started >= 0.6  # 6 links of 0.2 s, 2 at a time

    server.max_in_flight = 0
    urls = [f"{server.base}/sleep?j={i}" for i in range(6)]
    started = time.perf_counter()
    results = check_links(urls, options=replace(options, per_host=6))
    assert time.perf_counter() - started < 0.6 and server.max_in_flight > 2
    assert all(result.status is LinkStatus.OK for result in results)


# Cache

def test_second_run_within_ttl_comes_from_the_cache(server, options, tmp_path):
    cached = replace(options, cache_path=tmp_path / "links.json")
    url = f"{server.base}/ok?t=cache"
    assert not _check(url, cached).from_cache
    again = _check(url, cached)
    assert again.from_cache and again.status is LinkStatus.OK
    assert server.count("/ok?t=cache") == 1
    assert url in json.loads((tmp_path / "links.json").read_text())


def test_cache_misses_after_ttl_policy_change_and_for_failures(server, options, tmp_path):
    path = tmp_path / "links.json"
    cached = replace(options, cache_path=path)
    expiring = replace(cached, cache_ttl=0.0)
    ok, missing = f"{server.base}/ok?t=ttl", f"{server.base}/missing?t=ttl"
    check_links([ok, missing], options=cached)
    check_links([ok, missing], options=cached)
    assert server.count("/ok?t=ttl") == 1 and server.count("/missing?t=ttl") == 4  # HEAD+GET x2
    time.sleep(0.01)
    check_links([ok], options=expiring)
    assert server.count("/ok?t=ttl") == 2
    # Without the allowlist that let it through, a cached result must not skip the refusal.
    unlisted = replace(cached, allow_hosts=())
    assert _check(ok, unlisted).status is LinkStatus.PRIVATE_ADDRESS


# SSRF

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/ok",
    "http://localhost:{port}/ok",
    "http://[::ffff:127.0.0.1]:{port}/ok",
    "http://2130706433:{port}/ok",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://0.0.0.0:{port}/ok",
    "http://[::1]:{port}/ok",
    "http://[fe80::1]/",
])
def test_private_addresses_are_refused_without_a_request(server, url):
    before = sum(server.requests.values())
    options = LinkCheckOptions(timeout=TIMEOUT)
    result = _check(url.format(port=server.server_address[1]), options)
    assert result.status is LinkStatus.PRIVATE_ADDRESS
    assert sum(server.requests.values()) == before


def test_allowlist_by_host_and_port(server):
    port = server.server_address[1]
    url = f"http://localhost:{port}/ok?t=allow"
    allowed = LinkCheckOptions(timeout=TIMEOUT, allow_hosts=(f"localhost:{port}",))
    other_port = LinkCheckOptions(timeout=TIMEOUT, allow_hosts=(f"localhost:{port + 1}",))
    assert _check(url, allowed).status is LinkStatus.OK
    assert _check(url, other_port).status is LinkStatus.PRIVATE_ADDRESS
    assert server.count("/ok?t=allow") == 1


@pytest.mark.parametrize(("path", "target"), [
    ("/to-metadata", "http://169.254.169.254/latest/meta-data/"),
    ("/to-ten", "http://10.0.0.1/admin"),
])
def test_redirect_from_an_allowed_host_to_a_private_one_is_refused(server, options, path, target):
    result = _check(f"{server.base}{path}", options)
    assert result.status is LinkStatus.PRIVATE_ADDRESS
    assert result.chain == (f"{server.base}{path}", target)
    assert target.split("/")[2] in result.detail


def test_public_address_on_another_port_is_not_fetched():
    result = _check("http://93.184.216.34:8080/", LinkCheckOptions(timeout=TIMEOUT))
    assert result.status is LinkStatus.NONSTANDARD_PORT and "8080" in result.detail


@pytest.mark.parametrize(("address", "blocked"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("240.0.0.1", True), ("::1", True), ("::", True), ("fe80::1", True), ("fc00::1", True),
    ("ff02::1", True), ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", True),
    ("2002:7f00:1::", True), ("64:ff9b::a9fe:a9fe", True), ("fd00:ec2::254", True),
    ("100.100.100.200", True), ("168.63.129.16", True), ("::ffff:169.254.169.254", True),
    ("93.184.216.34", False), ("8.8.8.8", False), ("2606:4700::1111", False),
    ("::ffff:8.8.8.8", False),
])
def test_blocked_reason(address, blocked):
    assert (blocked_reason(ipaddress.ip_address(address)) is not None) is blocked


def test_allowlist_entries_parse():
    assert parse_allow_entry("localhost:8123").host == "localhost"
    assert parse_allow_entry("localhost:8123").port == 8123
    assert parse_allow_entry("127.0.0.1").network == ipaddress.ip_network("127.0.0.1/32")
    assert parse_allow_entry("[::1]:8080").port == 8080
    assert parse_allow_entry("10.0.0.0/8").network.num_addresses == 2 ** 24
    assert parse_allow_entry(" Staging.ACME.internal. ").host == STAGING  # as URLs spell it
    assert parse_allow_entry("bücher.acme.internal").host == "xn--bcher-kva.acme.internal"


@pytest.mark.parametrize(("entry", "message"), [
    ("localhost:http", "bad port"),
    ("localhost:99999", "bad port"),
    ("*.acme.internal", "wildcards are not supported"),
    ("*", "wildcards are not supported"),
    ("http://staging.acme.internal/", "not a host name, an address or a network"),
    ("staging.acme.internal/path", "not a host name, an address or a network"),
    ("user@staging.acme.internal", "not a host name, an address or a network"),
    ("", "names no host"),
    (":8080", "names no host"),
    ("stag ing.acme.internal", "not a host name"),
    (".acme.internal", "not a host name"),
    ("169.254.169.254", "never fetched"),
    ("169.254.0.0/16", "never fetched"),
    ("[fd00:ec2::254]:80", "never fetched"),
    ("fe80::1", "never fetched"),
    ("168.63.129.16", "never fetched"),
])
def test_bad_allowlist_entries_are_refused_naming_the_entry(entry, message):
    with pytest.raises(ValueError) as error:
        parse_allow_entry(entry)
    assert message in str(error.value) and repr(entry) in str(error.value)


# Allowed internal hosts. `dns` answers for the names a test gives it through the guard's real
# resolution path (socket.getaddrinfo); `connections` records every connect() made.

@pytest.fixture
def dns(monkeypatch) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
                if ":" in address else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def connections(monkeypatch, server) -> list[tuple]:
    """Every address connected to; PUBLIC:80 is routed to the test server."""
    made: list[tuple] = []
    real = socket.socket.connect

    def connect(sock, address):
        made.append(address)
        if address[:2] == (PUBLIC, 80):
            address = server.server_address
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return made


@pytest.mark.parametrize("addresses", [
    [PUBLIC, "10.0.0.1"],
    ["10.0.0.1", PUBLIC],
    [PUBLIC, "127.0.0.1"],
    [PUBLIC, "100.64.0.1"],
    [PUBLIC, "169.254.169.254"],
    ["2606:4700::1111", "fd12:3456::1"],
    ["2606:4700::1111", "::ffff:192.168.1.1"],
    ["2606:4700::1111", "::1", PUBLIC],
])
def test_a_host_resolving_to_public_and_private_addresses_is_refused_unconnected(
        dns, connections, addresses):
    dns["www.acme-cloud.com"] = addresses
    result = _check("http://www.acme-cloud.com/pricing", LinkCheckOptions(timeout=TIMEOUT))
    assert result.status is LinkStatus.PRIVATE_ADDRESS
    [private] = [ip for a in addresses if blocked_reason(ip := ipaddress.ip_address(a))]
    assert f"resolves to {private} " in result.detail
    assert connections == []  # not even to the public address


def test_an_allowed_internal_host_is_fetched_and_every_other_stays_refused(
        server, dns, connections):
    port = server.server_address[1]
    dns[STAGING] = ["127.0.0.1"]
    dns["wiki.acme.internal"] = ["10.0.0.7"]
    ok, missing = f"http://{STAGING}:{port}/ok?t=staging", f"http://{STAGING}:{port}/missing"
    refused = _check(ok, LinkCheckOptions(timeout=TIMEOUT))
    assert refused.status is LinkStatus.PRIVATE_ADDRESS and "--allow-host" in refused.detail
    assert connections == [] and server.count("/ok?t=staging") == 0

    allowed = LinkCheckOptions(timeout=TIMEOUT, allow_hosts=("Staging.Acme.Internal.",))
    assert _check(ok, allowed).status is LinkStatus.OK  # any port: the entry names none
    assert server.count("/ok?t=staging") == 1
    broken = _check(missing, allowed)
    assert (broken.status, broken.http_status) == (LinkStatus.BROKEN, 404)
    assert _check("http://wiki.acme.internal/", allowed).status is LinkStatus.PRIVATE_ADDRESS
    assert _check(f"http://127.0.0.1:{port}/ok", allowed).status is LinkStatus.PRIVATE_ADDRESS
    assert {address[0] for address in connections} == {"127.0.0.1"}


@pytest.mark.parametrize(("path", "target"), [
    ("/to-metadata", "http://169.254.169.254/latest/meta-data/"),
    ("/to-ten", "http://10.0.0.1/admin"),
])
def test_an_allowed_host_may_not_redirect_to_another_private_one(server, dns, path, target):
    dns[STAGING] = ["127.0.0.1"]
    url = f"http://{STAGING}:{server.server_address[1]}{path}"
    result = _check(url, LinkCheckOptions(timeout=TIMEOUT, allow_hosts=(STAGING,)))
    assert result.status is LinkStatus.PRIVATE_ADDRESS and result.chain == (url, target)


def test_a_public_page_may_redirect_to_an_allowed_host(server, dns, connections):
    dns[STAGING] = ["127.0.0.1"]
    dns["www.acme-cloud.com"] = [PUBLIC]
    url = "http://www.acme-cloud.com/to-staging"
    refused = _check(url, LinkCheckOptions(timeout=TIMEOUT))
    assert refused.status is LinkStatus.PRIVATE_ADDRESS and STAGING in refused.detail
    result = _check(url, LinkCheckOptions(timeout=TIMEOUT, allow_hosts=(STAGING,)))
    assert result.status is LinkStatus.OK
    assert result.chain == (url, f"http://{STAGING}:{server.server_address[1]}/ok?t=via-public")
    assert server.count("/ok?t=via-public") == 1


@pytest.mark.parametrize("addresses", [
    ["169.254.169.254"], ["127.0.0.1", "169.254.169.254"], ["fd00:ec2::254"], ["fe80::1"],
    ["::ffff:169.254.169.254"], ["100.100.100.200"], ["168.63.129.16"],
])
@pytest.mark.parametrize("entry", [STAGING, "0.0.0.0/0", "::/0", f"{STAGING}:80"])
def test_link_local_and_metadata_addresses_stay_refused_for_an_allowed_host(
        dns, connections, addresses, entry):
    dns[STAGING] = addresses
    options = LinkCheckOptions(timeout=TIMEOUT, allow_hosts=(entry,))
    result = _check(f"http://{STAGING}/latest/meta-data/", options)
    assert result.status is LinkStatus.PRIVATE_ADDRESS
    assert "never fetched, even for an allowed host" in result.detail
    assert connections == []


# TLS: connecting to the checked address still verifies the URL's host name

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = _Server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    _serve(srv)
    yield srv, str(cert)
    srv.shutdown()
    srv.server_close()


def test_https_checks_the_certificate_for_the_url_host(tls_server):
    srv, cert = tls_server
    port = srv.server_address[1]
    allow = ("127.0.0.1",)
    trusted = LinkCheckOptions(timeout=TIMEOUT, allow_hosts=allow, ca_file=cert)
    assert _check(f"https://localhost:{port}/ok", trusted).status is LinkStatus.OK
    assert srv.count("/ok") == 1
    untrusted = _check(f"https://localhost:{port}/ok",
                       LinkCheckOptions(timeout=TIMEOUT, allow_hosts=allow))
    assert untrusted.status is LinkStatus.BROKEN and "certificate" in untrusted.detail
    wrong_name = _check(f"https://127.0.0.1:{port}/ok", trusted)  # cert names localhost only
    assert wrong_name.status is LinkStatus.BROKEN and "certificate" in wrong_name.detail


# Findings

def test_findings_name_asset_line_and_url_once_per_occurrence(server, options):
    missing = f"{server.base}/missing?t=findings"
    email = f'<p>\n<a href="{missing}">a</a>\n<a href="#">b</a>\n<img src="{missing}">\n</p>'
    page = f'<a href="{missing}">c</a><a href="http://10.0.0.1/">d</a>'
    findings = check_assets({"emails/welcome.mjml": email, "pages/pricing.html": page}, options)
    insecure = [f for f in findings if f.code == "link.insecure"]  # every test link is http
    assert [f.severity for f in insecure] == [Severity.WARNING] * 4
    assert sorted((f.code, f.severity, f.asset, f.location) for f in findings
                  if f not in insecure) == sorted([
        ("link.broken", Severity.BLOCKER, "emails/welcome.mjml", f"line 2: {missing}"),
        ("link.empty", Severity.BLOCKER, "emails/welcome.mjml", "line 3: #"),
        ("link.broken", Severity.BLOCKER, "emails/welcome.mjml", f"line 4: {missing}"),
        ("link.broken", Severity.BLOCKER, "pages/pricing.html", f"line 1: {missing}"),
        ("link.private-address", Severity.BLOCKER, "pages/pricing.html",
         "line 1: http://10.0.0.1/"),
    ])
    assert server.count("/missing?t=findings") == 2  # one HEAD and one GET for three uses
    broken = next(f for f in findings if f.code == "link.broken")
    assert "404" in broken.message


def test_redirect_findings_carry_the_chain(server, options):
    html = f'<a href="{server.base}/loop/a">x</a>\n<a href="{server.base}/chain/9">y</a>'
    findings = {f.code: f for f in check_assets({"emails/x.mjml": html}, options)}
    assert set(findings) == {"link.redirect-loop", "link.redirect-chain", "link.insecure"}
    assert findings["link.redirect-loop"].severity is Severity.BLOCKER
    assert "/loop/b -> " in findings["link.redirect-loop"].message
    assert "/chain/5" in findings["link.redirect-chain"].message


def test_without_network_only_static_rules_run(server, options):
    offline = replace(options, network=False)
    html = f'<a href="{server.base}/missing?t=offline">x</a><a href="javascript:go()">y</a>'
    findings = check_assets({"emails/x.mjml": html}, offline)
    assert [f.code for f in findings] == ["link.insecure", "link.javascript"]
    assert server.count("/missing?t=offline") == 0


def test_link_findings_use_results_by_normalised_url():
    links = extract_links('<a href="https://Acme.Com/gone#top">x</a>')
    assert link_findings("emails/x.mjml", links, {}) == []  # not checked: nothing to say
    gone = LinkResult(url="https://acme.com/gone", status=LinkStatus.BROKEN, http_status=410,
                      detail="410 Gone", chain=("https://acme.com/gone",), elapsed=0.1,
                      checked_at=0.0)
    [finding] = link_findings("emails/x.mjml", links, {gone.url: gone})
    assert (finding.code, finding.severity) == ("link.broken", Severity.BLOCKER)
    assert finding.location == "line 1: https://Acme.Com/gone#top"
    assert finding.message == "Broken link: 410 Gone."


def test_reserved_example_domains_are_placeholders_not_fetched():
    inspection = inspect_link("https://www.acme.example/pricing")
    assert inspection.fetch is None
    [problem] = inspection.problems
    assert (problem.code, problem.severity) == ("link.placeholder", Severity.WARNING)
    assert "acme.example" in problem.message
    assert inspect_link("https://shop.test/").problems[0].code == "link.placeholder"
    assert inspect_link("https://example.com/").problems == ()  # a real, resolvable domain


def test_links_under_the_engines_own_prefixes_are_neither_fetched_nor_judged(server, options):
    html = (f'<a href="http://localhost:5000/u/TOKEN">unsubscribe</a>'
            f'<a href="{server.base}/missing?t=own">gone</a>')
    findings = check_assets({"emails/x.mjml": html},
                            replace(options, own_prefixes=("http://localhost:5000/",)))
    assert sorted(f.code for f in findings) == ["link.broken", "link.insecure"]  # the server's
    assert all("localhost:5000" not in f.location for f in findings)
