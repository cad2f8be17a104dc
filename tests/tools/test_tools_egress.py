"""HttpPolicy configuration: per-tenant allowed hosts (scheme/host/port), allowed networks, and
the checks made on a URL as given, before the HTTP client parses it. No network: name
resolution is a table, and policies are checked directly."""

from __future__ import annotations

import socket

import httpx
import pytest

from tools import HttpPolicy, ToolError

PUBLIC_IP = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


async def resolve_public(host: str, port: int) -> list[str]:
    if host.endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return {"private.example.com": ["10.0.0.5"], "loop.example.com": ["127.0.0.1"]}.get(host, [PUBLIC_IP])


async def allowed(policy: HttpPolicy, url: str) -> bool:
    try:
        await policy.check(url)
    except ToolError as exc:
        assert (exc.error_type, exc.retryable) == ("EgressDenied", False)
        return False
    return True


TENANT_HOSTS = frozenset(
    {
        "https://api.example.com:443",
        "*.example.org",
        "https://*.cdn.example.net",
        "http://internal.example.net:8080",
        "plain.example.com",
        "hooks.example.com:8443",
        PUBLIC_IP,
        f"[{PUBLIC_V6}]:8443",
        "https://bücher.de",
    }
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # scheme + host + explicit port
        ("https://api.example.com/", True),
        ("https://api.example.com:443/v1", True),
        ("https://API.Example.COM./v1", True),
        ("http://api.example.com/", False),
        ("https://api.example.com:8443/", False),
        ("https://api.example.com.evil.test/", False),
        ("https://api.example.com@evil.test/", False),
        ("https://evil.test/?u=https://api.example.com", False),
        # wildcard: any subdomain, any scheme and port; never the apex or a lookalike
        ("https://a.example.org/", True),
        ("http://a.b.example.org:81/", True),
        ("https://example.org/", False),
        ("https://evilexample.org/", False),
        # wildcard with a scheme: that scheme's default port
        ("https://img.cdn.example.net/", True),
        ("https://img.cdn.example.net:8443/", False),
        ("http://img.cdn.example.net/", False),
        # http on a non-default port
        ("http://internal.example.net:8080/", True),
        ("http://internal.example.net/", False),
        ("https://internal.example.net:8080/", False),
        # host only: any scheme and port; host:port: any scheme, that port
        ("http://plain.example.com:1234/", True),
        ("https://plain.example.com/", True),
        ("https://hooks.example.com:8443/", True),
        ("http://hooks.example.com:8443/", True),
        ("https://hooks.example.com/", False),
        # IP literals, matched by address whatever the spelling
        (f"http://{PUBLIC_IP}/", True),
        ("http://0x5db8d822/", True),
        ("http://93.184.216.35/", False),
        (f"https://[{PUBLIC_V6}]:8443/", True),
        (f"https://[{PUBLIC_V6}]/", False),
        # internationalized names, either spelling
        ("https://bücher.de/", True),
        ("https://xn--bcher-kva.de/", True),
        ("http://bücher.de/", False),
    ],
)
async def test_allowed_hosts_scheme_host_port(url: str, expected: bool) -> None:
    policy = HttpPolicy(allowed_hosts=TENANT_HOSTS, resolver=resolve_public)
    assert await allowed(policy, url) is expected


async def test_allowed_hosts_denial_names_the_origin() -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"https://api.example.com"}), resolver=resolve_public)
    with pytest.raises(ToolError) as info:
        await policy.check("http://api.example.com/x?token=secret")
    assert "http://api.example.com:80 is not in the allowed hosts" in info.value.message
    assert "secret" not in info.value.message


async def test_allowed_host_that_resolves_private_is_still_denied() -> None:
    policy = HttpPolicy(
        allowed_hosts=frozenset({"private.example.com", "localhost", "127.0.0.1"}), resolver=resolve_public
    )
    for url in ("https://private.example.com/", "http://localhost/", "http://127.0.0.1/"):
        assert not await allowed(policy, url)


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "*.",
        "ftp://files.example.com",
        "https://api.example.com/path",
        "https://api.example.com?q=1",
        "user@api.example.com",
        "api.example.com:",
        "api.example.com:0",
        "api.example.com:65536",
        "api.example.com:https",
        "*.*.example.com",
        "api example.com",
        "https://[2606:2800::1",
        "https://[2606:2800::1]x",
    ],
)
def test_bad_allowed_hosts_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts entry"):
        HttpPolicy(allowed_hosts=frozenset({entry}))


def test_allowed_hosts_must_be_a_collection() -> None:
    with pytest.raises(TypeError):
        HttpPolicy(allowed_hosts="api.example.com")  # type: ignore[arg-type]


def test_policies_stay_comparable_and_hashable() -> None:
    a = HttpPolicy(allowed_hosts=frozenset({"API.example.com ", "*.x.org"}), allowed_networks=frozenset({"10.1.2.3/8"}))
    b = HttpPolicy(allowed_hosts=frozenset({"api.example.com", "*.x.org"}), allowed_networks=frozenset({"10.0.0.0/8"}))
    assert a == b and hash(a) == hash(b)
    assert a.allowed_networks == frozenset({"10.0.0.0/8"})
    assert a != HttpPolicy()


async def test_allowed_networks_let_only_those_networks_through() -> None:
    policy = HttpPolicy(allowed_networks=frozenset({"10.0.0.0/8"}), resolver=resolve_public)
    target = await policy.check("http://private.example.com:8080/")
    assert [str(a) for a in target.addresses] == ["10.0.0.5"]
    assert await allowed(policy, "http://10.200.0.1/")
    for url in (
        "http://loop.example.com/",
        "http://127.0.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/",
        "http://[::ffff:10.0.0.1]/",  # v6 spelling: not inside the v4 network as written
        "http://localhost/",  # local names stay refused
    ):
        assert not await allowed(policy, url), url


@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8,192.168.0.0/16"])
def test_bad_allowed_networks_are_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        HttpPolicy(allowed_networks=frozenset({value}))


def test_allowed_networks_must_be_a_collection() -> None:
    with pytest.raises(TypeError):
        HttpPolicy(allowed_networks="10.0.0.0/8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "scheme 'file'"),  # httpx would make this the relative "/etc/passwd"
        ("gopher:///x", "scheme 'gopher'"),
        ("http://0177.0.0.1/", "loopback"),  # httpx rejects leading zeros; libc reads octal
        ("http://127.000.000.001/", "loopback"),
        ("http://user:secret@0177.0.0.1:80/", "loopback"),
        ("http://localhost:99999/", "local name"),
        ("http:/127.0.0.1/", "no host"),
        ("//127.0.0.1/", "not absolute"),
    ],
)
def test_precheck_denies_what_httpx_would_mangle(url: str, fragment: str) -> None:
    with pytest.raises(ToolError) as info:
        HttpPolicy().precheck(url)
    assert (info.value.error_type, info.value.retryable) == ("EgressDenied", False)
    assert fragment in info.value.message
    assert "secret" not in info.value.message


def test_precheck_leaves_other_invalid_urls_to_the_caller() -> None:
    with pytest.raises(httpx.InvalidURL):
        HttpPolicy().precheck("http://1.2.3.999/")
    HttpPolicy().precheck("https://api.example.com/ok")  # no DNS, no error


async def test_unresolvable_name_is_retryable() -> None:
    with pytest.raises(ToolError) as info:
        await HttpPolicy(resolver=resolve_public).check("https://nothing.invalid/")
    assert (info.value.error_type, info.value.retryable) == ("HttpConnectError", True)
