"""SSRF-safe HTTP requests for the link checker.

A link in an uploaded asset is attacker-controlled input: checking it must not let a marketer
(or a hijacked account) probe our own network, cloud metadata (169.254.169.254) or services on
localhost. So, as Mailpit does, each request resolves the host once, refuses when any resolved
address is not publicly routable, and then connects to exactly those checked addresses (a second
DNS lookup could answer differently: DNS rebinding). The Host header and the TLS SNI and
certificate check still use the URL's host name. Redirect hops go through here again.

Ports: only 80 and 443 are fetched, unless an allowlist entry names the host or address (with
no port, or that port). A public address on another port is no risk to our network, but it lets
a link knock on arbitrary services of other hosts, and a marketing link on :8080 is nearly always
a staging URL left behind; the checker reports such links instead of fetching them.

Allowlist entries: a host name ("localhost"), an address ("127.0.0.1", "::1") or a network
("10.0.0.0/8"), each optionally with a port ("localhost:8123", "[::1]:8080").
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SockAddr = tuple[socket.AddressFamily, tuple]

STANDARD_PORTS = frozenset({80, 443})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The guard refused to connect; `kind` is "private-address" or "port"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class AllowEntry:
    host: str | None  # a lower-case host name, or None for an address or network entry
    network: IPNetwork | None
    port: int | None  # None: every port

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        return address is not None and address in self.network


def parse_allow_entry(entry: str) -> AllowEntry:
    text = entry.strip().lower()
    try:
        return AllowEntry(host=None, network=ipaddress.ip_network(text, strict=False), port=None)
    except ValueError:
        pass
    parts = urlsplit(f"//{text}")
    if not parts.hostname:
        raise ValueError(f"allowlist entry {entry!r} names no host")
    port = parts.port  # raises ValueError on a bad port, which is what we want
    try:
        network = ipaddress.ip_network(parts.hostname)
    except ValueError:
        return AllowEntry(host=parts.hostname, network=None, port=port)
    return AllowEntry(host=None, network=network, port=port)


def parse_allowlist(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    return tuple(parse_allow_entry(entry) for entry in entries)


def blocked_reason(address: IPAddress) -> str | None:
    """Why connecting to this address is refused, or None for a public unicast address."""
    if address.version == 6 and address.ipv4_mapped is not None:
        reason = blocked_reason(address.ipv4_mapped)
        return reason and f"{reason}: IPv4-mapped {address.ipv4_mapped}"
    if address.version == 6:
        # 6to4 and NAT64 addresses are routed to the IPv4 address inside them.
        embedded = address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        reason = embedded and blocked_reason(embedded)
        if reason:
            return f"{reason}: IPv4 {embedded} inside"
    checks = [
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT"),
        (address.is_unspecified, "unspecified"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (address.version == 6 and address.is_site_local, "site-local"),
        (not address.is_global, "not publicly routable"),
    ]
    return next((reason for hit, reason in checks if hit), None)


def resolve(host: str, port: int) -> list[SockAddr]:
    """Every address the host resolves to, once (raises socket.gaierror)."""
    seen: dict[str, SockAddr] = {}
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        seen.setdefault(sockaddr[0], (family, sockaddr))
    return list(seen.values())


def _address(sockaddr: tuple) -> IPAddress:
    return ipaddress.ip_address(sockaddr[0].split("%", 1)[0])  # drop an IPv6 zone id


def checked_addresses(host: str, port: int, allow: tuple[AllowEntry, ...]) -> list[SockAddr]:
    """Resolve the host and return its addresses, or raise Refused (see the module doc)."""
    host = host.lower()
    resolved = resolve(host, port)
    addresses = [_address(sockaddr) for _family, sockaddr in resolved]
    for address in addresses:
        reason = blocked_reason(address)
        if reason and not any(entry.matches(host, address, port) for entry in allow):
            raise Refused("private-address", f"{host} resolves to {address} ({reason})")
    if port not in STANDARD_PORTS and not any(
            entry.matches(host, address, port) for entry in allow for address in addresses):
        raise Refused("port", f"port {port} is not 80 or 443 and {host} is not allowlisted")
    return resolved


def _connect(addresses: list[SockAddr], timeout: float) -> socket.socket:
    error: OSError = OSError("no address to connect to")
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to already checked addresses, named by the URL's host."""

    def __init__(self, host: str, port: int, *, addresses: list[SockAddr], timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses
        self.tls = tls
        if tls is not None:
            self.default_port = 443  # so the Host header omits :443, as for HTTPSConnection

    def connect(self) -> None:
        sock = _connect(self.addresses, self.timeout)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # at most the first `read_body` bytes of an error answer


def request(url: str, method: str, *, allow: tuple[AllowEntry, ...], timeout: float,
            tls: ssl.SSLContext, headers: Mapping[str, str], read_body: int = 0) -> Response:
    """One request, no redirects followed. Raises Refused, socket errors or HTTPException."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = checked_addresses(parts.hostname or "", port, allow)
    conn = PinnedConnection(parts.hostname or "", port, addresses=addresses, timeout=timeout,
                            tls=tls if https else None)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, headers={**headers, "Connection": "close"})
        resp = conn.getresponse()
        # Only error answers are read, to recognise challenge pages; HEAD answers have no body.
        body = resp.read(read_body) if read_body and resp.status >= 400 else b""
        return Response(status=resp.status, reason=resp.reason,
                        headers={k.lower(): v for k, v in resp.getheaders()}, body=body)
    finally:
        conn.close()
