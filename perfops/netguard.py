"""Outbound calls: the one place that checks a URL before perfops calls it (webhooks, load tests).

A URL is allowed only when its host is on the admin-managed allowlist (`access.AllowedHost`), its
scheme is http or https, it carries no credentials, and every address its host resolves to is public
(not loopback, private, link-local, shared, multicast, reserved or the cloud metadata address),
unless the allowlist entry explicitly allows private addresses. Numeric tricks (decimal, octal or
hex IPs) are caught because the check is made on the resolved addresses; an IPv6 address that carries
an IPv4 one (mapped, compatible, SIIT, 6to4, NAT64) must carry a public one.

`send` connects to the address that was checked (a second DNS answer cannot redirect it: no
rebinding), never follows redirects, and is bounded in time and response size.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 5.0


class UnsafeURL(ValueError):
    """The URL may not be called; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    address: str  # the vetted IP address to connect to


def _host_of(url: str) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UnsafeURL("The URL contains spaces or control characters.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("Only http and https URLs are allowed.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeURL("A URL with credentials (user@host) is not allowed.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURL("The URL has no host.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL("The URL's port is invalid.") from exc
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UnsafeURL("The URL's host name is invalid.") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, path


def _allowlisted(host: str) -> bool | None:
    """None: not on the allowlist; else whether private addresses are allowed for it."""
    from perfops.access.models import AllowedHost

    best: bool | None = None
    for entry in AllowedHost.objects.all():
        if entry.matches(host):
            best = bool(best) or entry.allow_private
    return best


# IPv6 forms whose last 32 bits are an IPv4 address: IPv4-compatible (deprecated), SIIT-translated, and
# the NAT64 well-known prefix (on an IPv6-only network, 64:ff9b::a00:5 reaches 10.0.0.5).
_IPV4_IN_LOW_BITS = tuple(ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Internal by definition, though Python's tables call them global: local-use NAT64 and site-local.
_NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(net) for net in ("64:ff9b:1::/48", "fec0::/10"))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A public unicast address; an IPv6 form that carries an IPv4 address must carry a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _public(address.ipv4_mapped)
        if any(address in net for net in _NOT_PUBLIC_V6):
            return False
        carried = address.sixtofour
        if carried is None and any(address in net for net in _IPV4_IN_LOW_BITS):
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None and not _public(carried):
            return False
    return address.is_global and not address.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The host {host!r} does not resolve.") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, resolve: bool = True) -> Target:
    """The URL's target if perfops may call it; UnsafeURL otherwise (at save and again at send)."""
    scheme, host, port, path = _host_of(url)
    private_ok = _allowlisted(host)
    if private_ok is None:
        raise UnsafeURL(f"The host {host!r} is not on the allowlist of outbound hosts (admin: Allowed hosts).")
    if not resolve:
        return Target(scheme, host, port, path, "")
    addresses = _resolve(host, port)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not private_ok and not _public(address):
            raise UnsafeURL(f"The host {host!r} resolves to a non-public address ({address}).")
    return Target(scheme, host, port, path, addresses[0])


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def send(
    url: str, body: bytes, headers: dict[str, str], *, method: str = "POST", timeout_s: float = DEFAULT_TIMEOUT_S
) -> Response:
    """Call a checked URL once: connect to the vetted address, no redirects, bounded time and size."""
    return send_to(check_url(url), body, headers, method=method, timeout_s=timeout_s)


def send_to(
    target: Target, body: bytes, headers: dict[str, str], *, method: str = "POST", timeout_s: float = DEFAULT_TIMEOUT_S
) -> Response:
    """Call a target `check_url` vetted (a load test checks once, then sends many): same rules as `send`."""
    raw = socket.create_connection((target.address, target.port), timeout=timeout_s)
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        context = ssl.create_default_context()
        wrapped = context.wrap_socket(raw, server_hostname=target.host)
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s, context=context)
        connection.sock = wrapped
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
        connection.sock = raw
    try:
        connection.request(method, target.path, body=body, headers={"Host": target.host, **headers})
        reply = connection.getresponse()
        return Response(reply.status, reply.read(MAX_RESPONSE_BYTES))
    finally:
        connection.close()
