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

The allowlist (`nurture qa run --allow-host`, NURTURE_QA_ALLOW_HOSTS) lets staging and intranet
hosts be checked. Each entry is one of:
- a host name ("staging.acme.internal"): exactly that name (any case, a trailing dot ignored;
  no wildcards, so `*.acme.internal` is refused: name each host, or allow their network), which
  may then resolve to private, loopback or other non-public addresses;
- an address or a network ("127.0.0.1", "::1", "10.20.0.0/16"): any host resolving there;
each optionally with a port ("localhost:8123", "[::1]:8080") to allow that port only; without
one, every port of the entry is allowed. Link-local and cloud metadata addresses (`_NEVER_FETCHED`)
are refused even for an allowed host: no staging site lives there, and they hand out cloud
credentials. Every redirect hop is checked on its own: a public page may redirect to an allowed
host (linking it directly is allowed too), an allowed host may not redirect to another private one.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
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
# Never fetched, whatever the allowlist says.
_NEVER_FETCHED: dict[IPNetwork, str] = {
    ipaddress.ip_network(network): reason for network, reason in (
        ("169.254.0.0/16", "link-local, home of cloud metadata"),  # AWS, GCP, Azure, OCI
        ("fe80::/10", "link-local"),
        ("fd00:ec2::/32", "AWS metadata, DNS and time services"),
        ("100.100.100.200/32", "Alibaba Cloud metadata"),
        ("168.63.129.16/32", "Azure host services"),  # a public address, reachable only inside
    )}
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")


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
    """One allowlist entry (see the module doc); ValueError says what is wrong with it."""
    text = entry.strip().lower()
    network, port = _network(text), None
    if network is None:
        parts = urlsplit(f"//{text}")
        if parts.path or parts.query or parts.fragment or parts.username is not None:
            raise ValueError(f"allowlist entry {entry!r} is not a host name, an address or a "
                             "network (with an optional :port)")
        if not parts.hostname:
            raise ValueError(f"allowlist entry {entry!r} names no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"allowlist entry {entry!r} has a bad port") from None
        network = _network(parts.hostname)
        if network is None:
            return AllowEntry(host=_host_name(entry, parts.hostname), network=None, port=port)
    for never, reason in _NEVER_FETCHED.items():
        if network.version == never.version and network.subnet_of(never):
            raise ValueError(f"allowlist entry {entry!r} is never fetched ({reason})")
    return AllowEntry(host=None, network=network, port=port)


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _host_name(entry: str, host: str) -> str:
    """The entry's host as link URLs spell it (lower case, IDNA, no trailing dot)."""
    if "*" in host:
        raise ValueError(f"allowlist entry {entry!r}: wildcards are not supported; name each "
                         "host, or allow the network their addresses are in (10.20.0.0/16)")
    try:
        name = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    if not _HOST_NAME.match(name):
        raise ValueError(f"allowlist entry {entry!r} is not a host name")
    return name


def parse_allowlist(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    return tuple(parse_allow_entry(entry) for entry in entries)


def _inner_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address is routed to: IPv4-mapped, 6to4 or NAT64."""
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None or address.sixtofour is not None:
        return address.ipv4_mapped or address.sixtofour
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None


def never_fetched(address: IPAddress) -> str | None:
    """Why an address is refused even for an allowed host, or None."""
    inner = _inner_ipv4(address)
    reason = next((reason for network, reason in _NEVER_FETCHED.items() if address in network),
                  None)
    return reason or (inner and never_fetched(inner))


def blocked_reason(address: IPAddress) -> str | None:
    """Why connecting to this address is refused, or None for a public unicast address."""
    inner = _inner_ipv4(address)
    if inner is not None:
        reason = blocked_reason(inner)
        if reason or address.ipv4_mapped is not None:  # ::ffff:8.8.8.8 is 8.8.8.8
            return reason and f"{reason}: IPv4 {inner} inside"
    never = never_fetched(address)
    if never:
        return never
    checks = [
        (address.is_loopback, "loopback"),
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
    # Every address counts: a single one that is not public refuses the host.
    for address in addresses:
        if never_fetched(address):
            raise Refused("private-address", f"{host} resolves to {address} "
                          f"({blocked_reason(address)}), never fetched, even for an allowed host")
    for address in addresses:
        reason = blocked_reason(address)
        if reason and not any(entry.matches(host, address, port) for entry in allow):
            raise Refused("private-address", f"{host} resolves to {address} ({reason}) and "
                                             "is not an allowed host (--allow-host)")
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
