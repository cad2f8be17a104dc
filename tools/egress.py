"""Egress policy for tools that make HTTP requests on a plan's behalf.

Plans (and the models that write them) choose URLs, so every URL a tool is about to fetch, and
every redirect hop, is checked here first. A refusal is ``ToolError(error_type="EgressDenied")``,
never retryable: the same URL will be refused again.

``HttpPolicy.check`` returns the addresses it vetted. Today the HTTP client resolves the host
again when it connects, which leaves a DNS-rebinding window; the planned hardening is a transport
that connects to exactly ``EgressTarget.addresses`` (keeping Host/SNI), which needs no change to
callers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from tools.errors import ToolError

__all__ = [
    "EgressTarget",
    "HttpPolicy",
    "IPAddress",
    "Resolver",
    "parse_ip_literal",
    "redact_url",
    "resolve_host",
    "why_not_public",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> IP address strings. Injectable so tests (and later, a pinned resolver) can
# control name resolution.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCT = re.compile(r"0[0-7]*")
_DEC = re.compile(r"[1-9][0-9]*")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (the client may connect to any)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any form the OS would accept.

    Besides canonical IPv4/IPv6, libc's inet_aton (which getaddrinfo and so the HTTP client use)
    accepts ``127.1``, ``2130706433``, ``0x7f.0.0.1`` and ``0177.0.0.1``: all of them loopback.
    """
    host = unquote(host).strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _parse_inet_aton(host)


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        # Strict digits only: int() alone would also take "+1", " 1" and "1_0".
        if _HEX.fullmatch(part):
            numbers.append(int(part[2:], 16))
        elif _OCT.fullmatch(part):
            numbers.append(int(part, 8))
        elif _DEC.fullmatch(part):
            numbers.append(int(part, 10))
        else:
            return None
    # Leading parts are one byte each; the last fills the remaining bytes.
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def why_not_public(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached from a tool, or None if it is a public unicast address.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by the IPv4
    address as well, because that is where the packets may end up.
    """
    candidates: list[IPAddress] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip.teredo is not None:
            candidates.extend(ip.teredo)
        if any(ip in net for net in _NAT64):
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    # Embedded addresses first: "loopback (127.0.0.1 embedded)" says more than "private".
    candidates.append(ip)
    for candidate in candidates:
        reason = _classify(candidate)
        if reason is not None:
            return reason if candidate is ip else f"{reason} ({candidate} embedded)"
    return None


def _classify(ip: IPAddress) -> str | None:
    checks = (
        ("a loopback address", ip.is_loopback),
        ("the unspecified address", ip.is_unspecified),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
        ("not a globally routable address", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class EgressTarget:
    """A URL that passed the policy, with the addresses that were vetted for it."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class HttpPolicy:
    """Where HTTP tools may go.

    ``allowed_hosts`` entries are exact host names (or IP literals) or ``*.example.com`` for any
    subdomain; None allows any host. ``block_private`` refuses hosts that are, or resolve to,
    non-public addresses (loopback, private, link-local incl. cloud metadata, reserved,
    multicast), and local names such as ``localhost``.
    """

    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: frozenset[str] | None = None
    block_private: bool = True
    follow_redirects: bool = True
    max_redirects: int = 5
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Accept any iterable of strings but keep the dataclass hashable and normalized.
        object.__setattr__(self, "allowed_schemes", tuple(s.lower() for s in self.allowed_schemes))
        if self.allowed_hosts is not None:
            hosts: Iterable[str] = self.allowed_hosts
            object.__setattr__(self, "allowed_hosts", frozenset(_norm_host(h) for h in hosts))
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")

    async def check(self, url: httpx.URL | str) -> EgressTarget:
        """Vet one URL (each redirect hop goes through here too); raise EgressDenied if refused."""
        url = httpx.URL(url) if isinstance(url, str) else url
        scheme = url.scheme.lower()
        if not scheme:
            raise _denied(url, "the URL is not absolute (it needs a scheme and a host)")
        if scheme not in self.allowed_schemes:
            allowed = ", ".join(self.allowed_schemes)
            raise _denied(url, f"scheme {scheme!r} is not allowed (allowed: {allowed})")
        host = _norm_host(url.host)
        if not host:
            raise _denied(url, "the URL has no host")
        if self.allowed_hosts is not None and not self._host_allowed(host):
            raise _denied(url, f"host {host!r} is not in the allowed hosts")
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        if not self.block_private:
            return EgressTarget(url=url, host=host, port=port, addresses=())

        literal = parse_ip_literal(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            if host == "localhost" or host.endswith(".localhost"):
                raise _denied(url, f"host {host!r} is a local name")
            addresses = await self._resolve(url, host, port)
        for ip in addresses:
            reason = why_not_public(ip)
            if reason is not None:
                shown = host if literal is not None else f"{host} resolves to {ip}, which"
                raise _denied(url, f"{shown} is {reason}")
        return EgressTarget(url=url, host=host, port=port, addresses=tuple(addresses))

    def _host_allowed(self, host: str) -> bool:
        assert self.allowed_hosts is not None
        if host in self.allowed_hosts:
            return True
        return any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed_hosts)

    async def _resolve(self, url: httpx.URL, host: str, port: int) -> list[IPAddress]:
        resolver = self.resolver or resolve_host
        try:
            raw = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            # A name that does not resolve now may resolve later (DNS hiccup): retryable, and
            # typed like the connect failure the client itself would have reported.
            raise ToolError(
                f"could not resolve host {host!r}: {exc}",
                retryable=True,
                error_type="HttpConnectError",
            ) from exc
        addresses = [parse_ip_literal(a) for a in raw]
        if not addresses or any(a is None for a in addresses):
            raise _denied(url, f"host {host!r} did not resolve to usable addresses: {raw}")
        return [a for a in addresses if a is not None]


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def redact_url(url: httpx.URL) -> str:
    """``url`` for messages: userinfo and query may carry credentials, and errors land in
    workflow history."""
    if url.userinfo or url.query or url.fragment:
        return str(url.copy_with(userinfo=b"", query=None, fragment=None))
    return str(url)


def _denied(url: httpx.URL, reason: str) -> ToolError:
    return ToolError(
        f"egress denied for {redact_url(url)}: {reason}",
        retryable=False,
        error_type="EgressDenied",
    )
