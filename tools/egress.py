"""Egress policy for tools that make HTTP requests on a plan's behalf.

Plans (and the models that write them) choose URLs, so every URL a tool is about to fetch, and
every redirect hop, is checked here first. A refusal is ``ToolError(error_type="EgressDenied")``,
never retryable: the same URL will be refused again.

``HttpPolicy.check`` resolves the host once and vets every address it gets. ``PinnedTransport``
then connects to exactly those addresses, never resolving the name again, while the name is
still what goes into the Host header, the TLS SNI and certificate verification. So a DNS answer
that changes between check and connect (DNS rebinding) cannot steer a request anywhere the
policy did not see.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from tools.errors import ToolError

if TYPE_CHECKING:  # imported where a URL is parsed: every tool registry builds a policy, few send
    import httpcore
    import httpx

__all__ = [
    "EgressTarget",
    "HttpPolicy",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "parse_ip_literal",
    "parse_private_target",
    "redact_url",
    "resolve_host",
    "why_not_public",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> IP address strings. Injectable so tests can control name resolution.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCT = re.compile(r"0[0-7]*")
_DEC = re.compile(r"[1-9][0-9]*")
_PORT = re.compile(r"[0-9]{1,5}")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (the client may connect to any)."""
    import asyncio  # loaded with the running loop; not at import: every tool registry builds a policy

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
    """A URL that passed the policy, with the addresses that were vetted for it.

    ``addresses`` is empty only when the policy does not vet addresses (``block_private=False``);
    the connection then resolves the name itself.
    """

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class _HostRule:
    """One parsed ``allowed_hosts`` entry; None scheme or port means any."""

    scheme: str | None
    host: str
    wildcard: bool
    port: int | None
    ip: IPAddress | None

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and scheme != self.scheme:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        if self.ip is not None:
            return parse_ip_literal(host) == self.ip
        return host == self.host


def _parse_host_rule(entry: str) -> _HostRule:
    """``[scheme://](host|*.domain)[:port]``; with a scheme and no port, the scheme's default port."""
    text = entry.strip()
    scheme: str | None = None
    if "://" in text:
        given, text = text.split("://", 1)
        scheme = given.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"allowed_hosts entry {entry!r}: scheme must be http or https")
    wildcard = text.startswith("*.")
    if wildcard:
        text = text[2:]
    port_text: str | None = None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"allowed_hosts entry {entry!r} is not [scheme://]host[:port]")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a bare IPv6 address, or a name without a port
    if not host or any(c in host for c in "/?#@*\\ \t") or (port_text is not None and not _PORT.fullmatch(port_text)):
        raise ValueError(f"allowed_hosts entry {entry!r} is not [scheme://]host[:port] or [scheme://]*.domain[:port]")
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"allowed_hosts entry {entry!r}: port out of range")
    if port is None and scheme is not None:
        port = _DEFAULT_PORTS[scheme]
    # Spell the host as check() sees it (lowercase, IDNA decoded, no brackets or trailing dot).
    import httpx

    try:
        normalized = _norm_host(httpx.URL(f"http://[{host}]/" if ":" in host else f"http://{host}/").host)
    except httpx.InvalidURL as exc:
        raise ValueError(f"allowed_hosts entry {entry!r}: {exc}") from exc
    ip = None if wildcard else parse_ip_literal(normalized)
    return _HostRule(scheme=scheme, host=normalized, wildcard=wildcard, port=port, ip=ip)


@dataclass(frozen=True)
class HttpPolicy:
    """Where HTTP tools may go.

    ``allowed_hosts`` (None allows any host) entries are ``[scheme://]host[:port]`` where host is
    a name, an IP literal, or ``*.example.com`` for any subdomain (not the apex). A missing scheme
    allows http and https; a missing port allows any port, except that an entry with a scheme
    and no port means that scheme's default port (``https://api.example.com`` is port 443 only).

    ``block_private`` refuses hosts that are, or resolve to, non-public addresses (loopback,
    private, link-local incl. cloud metadata, reserved, multicast, CGNAT), and local names such as
    ``localhost``. ``allowed_networks`` (CIDR strings) are non-public networks it lets through
    anyway, e.g. a tenant's internal API; connections to them are still pinned.

    ``allowed_private`` (exact ``host:port`` entries, off by default) are named targets an
    administrator lets through although they are local or private, e.g. ``127.0.0.1:9331`` or
    ``wiki.internal:8443``: that host on that port passes the allowlist and the address checks,
    and the connection is still pinned to the addresses just resolved. Nothing else on that
    host, and no other port, is admitted by such an entry.

    ``resolver`` and ``network_backend`` replace name resolution and the socket layer (tests).
    """

    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: frozenset[str] | None = None
    block_private: bool = True
    allowed_networks: frozenset[str] = frozenset()
    follow_redirects: bool = True
    max_redirects: int = 5
    allowed_private: frozenset[str] = frozenset()
    resolver: Resolver | None = field(default=None, compare=False, repr=False)
    network_backend: httpcore.AsyncNetworkBackend | None = field(default=None, compare=False, repr=False)
    _host_rules: tuple[_HostRule, ...] = field(default=(), init=False, compare=False, repr=False)
    _networks: tuple[IPNetwork, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Accept any iterable of strings but keep the dataclass hashable and normalized.
        object.__setattr__(self, "allowed_schemes", tuple(s.lower() for s in self.allowed_schemes))
        if self.allowed_hosts is not None:
            hosts: Iterable[str] = self.allowed_hosts
            if isinstance(hosts, str):
                raise TypeError("allowed_hosts must be a collection of entries, not one string")
            entries = frozenset(h.strip().lower() for h in hosts)
            object.__setattr__(self, "allowed_hosts", entries)
            object.__setattr__(self, "_host_rules", tuple(_parse_host_rule(h) for h in sorted(entries)))
        networks: Iterable[str] = self.allowed_networks
        if isinstance(networks, str):
            raise TypeError("allowed_networks must be a collection of CIDR strings, not one string")
        parsed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)
        object.__setattr__(self, "allowed_networks", frozenset(str(n) for n in parsed))
        object.__setattr__(self, "_networks", parsed)
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        if isinstance(self.allowed_private, str):
            raise TypeError("allowed_private must be a collection of host:port entries, not one string")
        object.__setattr__(self, "allowed_private", frozenset(parse_private_target(e) for e in self.allowed_private))

    def _private_ok(self, host: str, port: int) -> bool:
        """Whether an administrator named exactly this host and port as a local/private target."""
        if not self.allowed_private:
            return False
        literal = parse_ip_literal(host)
        spelled = str(literal) if literal is not None else host
        return f"{spelled}:{port}" in self.allowed_private or f"[{spelled}]:{port}" in self.allowed_private

    def precheck(self, url: str) -> None:
        """The checks that need no DNS, on a URL as given, before the HTTP client parses it.

        httpx turns ``file:///etc/passwd`` into the relative ``/etc/passwd`` and rejects
        ``http://0177.0.0.1/`` outright; both should be reported as what they are, an attempt
        to leave the policy (EgressDenied). A URL that httpx cannot parse and this policy has no
        objection to raises ``httpx.InvalidURL``.
        """
        import httpx

        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            self._precheck_unparsable(url)
            raise
        self._vet_form(parsed)

    def _precheck_unparsable(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = _norm_host(parts.hostname or "")
        except ValueError:
            return
        scheme = parts.scheme.lower()
        if scheme and scheme not in self.allowed_schemes:
            raise _denied_host(host, f"scheme {scheme!r} is not allowed")
        if not self.block_private or not host:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise _denied_host(host, "it is a local name")
        literal = parse_ip_literal(host)
        if literal is not None and not self._address_allowed(literal):
            raise _denied_host(host, f"it is {why_not_public(literal)}")

    def _vet_form(self, url: httpx.URL) -> tuple[str, str, int, IPAddress | None]:
        """Scheme, host, allowed hosts, local names and IP literals: (scheme, host, port, literal)."""
        scheme = url.scheme.lower()
        if not scheme:
            raise _denied(url, "the URL is not absolute (it needs a scheme and a host)")
        if scheme not in self.allowed_schemes:
            allowed = ", ".join(self.allowed_schemes)
            raise _denied(url, f"scheme {scheme!r} is not allowed (allowed: {allowed})")
        host = _norm_host(url.host)
        if not host:
            raise _denied(url, "the URL has no host")
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        literal = parse_ip_literal(host)
        if self._private_ok(host, port):
            return scheme, host, port, literal
        if self.allowed_hosts is not None and not any(r.matches(scheme, host, port) for r in self._host_rules):
            raise _denied(url, f"{scheme}://{host}:{port} is not in the allowed hosts")
        if self.block_private:
            if literal is None and (host == "localhost" or host.endswith(".localhost")):
                raise _denied(url, f"host {host!r} is a local name")
            if literal is not None and not self._address_allowed(literal):
                raise _denied(url, f"{host} is {why_not_public(literal)}")
        if not 0 < port <= 65535:  # httpx parses 99999; the socket layer would crash on it
            raise _denied(url, f"port {port} is out of range")
        return scheme, host, port, literal

    async def check(self, url: httpx.URL | str) -> EgressTarget:
        """Vet one URL (each redirect hop goes through here too); raise EgressDenied if refused.

        The host is resolved once and every address must pass; the returned target carries
        them for ``PinnedTransport.pin``.
        """
        import httpx

        url = httpx.URL(url) if isinstance(url, str) else url
        _, host, port, literal = self._vet_form(url)
        private_ok = self._private_ok(host, port)
        if not self.block_private and not private_ok:
            return EgressTarget(url=url, host=host, port=port, addresses=())
        if literal is not None:
            return EgressTarget(url=url, host=host, port=port, addresses=(literal,))
        addresses = await self._resolve(url, host, port)
        if private_ok:  # named by an administrator: any address, but pinned to what was resolved
            return EgressTarget(url=url, host=host, port=port, addresses=tuple(addresses))
        for ip in addresses:
            if not self._address_allowed(ip):
                raise _denied(url, f"{host} resolves to {ip}, which is {why_not_public(ip)}")
        return EgressTarget(url=url, host=host, port=port, addresses=tuple(addresses))

    def _address_allowed(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks) or why_not_public(ip) is None

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
        # Deduplicated, order kept: getaddrinfo lists each address once per socket type.
        return list(dict.fromkeys(a for a in addresses if a is not None))


def parse_private_target(entry: str) -> str:
    """An ``allowed_private`` entry in canonical form: ``host:port`` (``[v6]:port``), exact, no
    wildcard and no scheme; ValueError otherwise."""
    text = entry.strip().lower()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if sep and rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(f"private target {entry!r} must be host:port with an exact host and port, e.g. 127.0.0.1:9331")
    if any(c in host for c in "/?#@*\\ \t") or "://" in text:
        raise ValueError(f"private target {entry!r} must be host:port (no scheme, path or wildcard)")
    literal = parse_ip_literal(host)
    if literal is not None:
        return f"[{literal}]:{port_text}" if literal.version == 6 else f"{literal}:{port_text}"
    return f"{_norm_host(host)}:{port_text}"


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def redact_url(url: httpx.URL) -> str:
    """``url`` for messages: userinfo and query may carry credentials, and errors land in
    workflow history."""
    if url.userinfo or url.query or url.fragment:
        return str(url.copy_with(userinfo=b"", query=None, fragment=None))
    return str(url)


def _denied_host(host: str, reason: str) -> ToolError:
    # For URLs httpx cannot parse: name only the host, the rest may carry credentials.
    return ToolError(f"egress denied for host {host!r}: {reason}", retryable=False, error_type="EgressDenied")


def _denied(url: httpx.URL, reason: str) -> ToolError:
    return ToolError(
        f"egress denied for {redact_url(url)}: {reason}",
        retryable=False,
        error_type="EgressDenied",
    )
