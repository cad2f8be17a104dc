"""SSRF corpus for the HTTP tools: every way of naming an internal address is refused before a
byte is sent, connections go to the address that was vetted (DNS rebinding), redirects are
re-vetted and re-pinned, and the response size cap holds for plain and compressed bodies.

No traffic leaves the machine: an autouse guard refuses any socket connect to a non-loopback
address and any system DNS lookup of a name, and records what was attempted so tests can
assert that nothing was. Real servers run on 127.0.0.1; a test that needs to reach one lets
that address through with ``HttpPolicy(allowed_networks=...)``.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import pytest
import respx

from tests.tools.http_calls import call, expect_error, tool_named
from tools import HttpPolicy, ToolContext, ToolError
from tools.egress import parse_ip_literal
from tools.transport import PinnedTransport

ContextFactory = Callable[..., ToolContext]

PUBLIC_IP = "93.184.216.34"
MIB = 1024 * 1024
LOOPBACK_ONLY = frozenset({"127.0.0.1/32"})


# -- helpers -------------------------------------------------------------------------------------


def assert_denied(err: ToolError) -> None:
    assert (err.error_type, err.retryable) == ("EgressDenied", False), err.message
    assert "egress denied" in err.message


class ScriptedResolver:
    """Answers lookups from a script, one answer per lookup (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        script = self.answers.get(host)
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return script.pop(0) if len(script) > 1 else script[0]


def table(mapping: dict[str, list[str]]) -> ScriptedResolver:
    return ScriptedResolver({host: [addresses] for host, addresses in mapping.items()})


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Wraps a network backend and records every (host, port) it is asked to connect to."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets here")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@dataclass
class NetLog:
    connects: list[Any] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetLog]:
    """Refuse (and record) socket connects off loopback and system DNS lookups of names."""
    log = NetLog()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        log.connects.append(address)
        host = address[0] if isinstance(address, tuple) else None
        if not isinstance(host, str) or not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise OSError(errno.ENETUNREACH, f"test guard: no connections to {address!r}")
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        log.lookups.append(name)
        try:
            ipaddress.ip_address(name.split("%")[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "test guard: no DNS lookups in tests") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield log


def http_response(status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records what reaches it."""

    def __init__(self, routes: dict[str, bytes | Handler] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, bytes | Handler] = dict(routes or {})
        self.seen: list[Seen] = []
        self.tls = tls
        self.port = 0

    def url(self, host: str, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("content-length", "0") != "0":
                await reader.readexactly(int(headers["content-length"]))
            self.seen.append(Seen(method, target, headers))
            route = self.routes.get(target.split("?", 1)[0], http_response(404))
            if isinstance(route, bytes):
                writer.write(route)
            else:
                await route(writer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up (e.g. it stopped reading at the size cap)
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


@dataclass
class Streamer:
    """A body with no Content-Length, written until the client hangs up or total is reached."""

    total: int
    chunk: int = 64 * 1024
    sent: int = 0

    async def __call__(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n")
        block = b"x" * self.chunk
        while self.sent < self.total:
            writer.write(block)
            await writer.drain()
            self.sent += len(block)


def raw_response(body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A mocked response whose body is sent as is (respx would decode content= up front)."""
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


@cache
def gzip_bomb(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)


# -- the corpus: blocked before anything is sent ----------------------------------------------------

CORPUS_NAMES = {
    "api.example.com": [PUBLIC_IP],
    "metadata.example.com": ["169.254.169.254"],
    "private.example.com": ["10.0.0.5"],
    "rebind.example.com": [PUBLIC_IP, "10.1.2.3"],
    "ula.example.com": ["2606:2800:220:1:248:1893:25c8:1946", "fd00::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "cgnat.example.com": ["100.64.1.1"],
    "zero.example.com": ["0.0.0.0"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
}

# (url, a fragment of the reason the denial must give)
CORPUS: list[tuple[str, str]] = [
    # loopback, private, link-local and cloud metadata, literally
    ("http://127.0.0.1/", "loopback"),
    ("http://127.255.255.254:8080/admin", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.0.1/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://169.254.169.254/computeMetadata/v1/", "link-local"),
    # IPv6: loopback, unspecified, link-local, ULA, and IPv4 embedded in IPv6
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fd00::1]/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[::ffff:127.0.0.1]/", "(127.0.0.1 embedded)"),
    ("http://[::ffff:7f00:1]/", "(127.0.0.1 embedded)"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "(127.0.0.1 embedded)"),
    ("http://[::ffff:a9fe:a9fe]/", "169.254.169.254 embedded"),
    ("http://[2002:7f00:1::]/", "127.0.0.1 embedded"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254 embedded"),  # NAT64
    # inet_aton spellings: decimal, octal, hex, short forms
    ("http://2130706433/", "loopback"),
    ("http://2852039166/", "link-local"),  # 169.254.169.254
    ("http://0177.0.0.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.0x0.0x0.0x1/", "loopback"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "link-local"),
    ("http://127.1/", "loopback"),
    ("http://10.1/", "private"),
    ("http://%31%32%37.0.0.1/", "loopback"),  # percent-encoded
    ("http://127。0。0。1/", "loopback"),  # fullwidth dots, IDNA-normalized
    ("http://127.0.0.1./", "loopback"),  # trailing dot
    # unspecified, multicast, broadcast, CGNAT, reserved
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250:1900/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "255.255.255.255"),
    ("http://100.64.0.1/", "not a globally routable address"),
    ("http://100.127.255.254/", "not a globally routable address"),
    ("http://240.0.0.1/", "240.0.0.1 is"),  # reserved (class E)
    # local names
    ("http://localhost/", "local name"),
    ("http://LOCALHOST./", "local name"),
    ("http://localhost:8080/admin", "local name"),
    ("http://app.localhost/", "local name"),
    ("http://a.b.localhost:9000/", "local name"),
    # names that resolve to blocked addresses (any one of them is enough)
    ("http://metadata.example.com/latest/meta-data/", "resolves to 169.254.169.254"),
    ("http://private.example.com/", "resolves to 10.0.0.5"),
    ("http://rebind.example.com/", "resolves to 10.1.2.3"),
    ("https://ula.example.com/", "resolves to fd00::1"),
    ("http://mapped.example.com/", "127.0.0.1 embedded"),
    ("http://cgnat.example.com/", "resolves to 100.64.1.1"),
    ("http://zero.example.com/", "resolves to 0.0.0.0"),
    ("http://127.0.0.1.nip.io/", "resolves to 127.0.0.1"),
    # userinfo and fragment tricks: the host is what follows the last @ before the path
    ("http://evil@127.0.0.1/", "loopback"),
    ("http://api.example.com@127.0.0.1/", "loopback"),
    ("http://user:hunter2@169.254.169.254/", "link-local"),
    ("http://127.0.0.1#@api.example.com/", "loopback"),
    ("HTTP://127.0.0.1/", "loopback"),
    # schemes other than http(s), and URLs without a scheme or host
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1:70/_GET%20/", "scheme 'gopher'"),
    ("gopher://api.example.com/", "scheme 'gopher'"),
    ("ftp://api.example.com/file", "scheme 'ftp'"),
    ("dict://127.0.0.1:11211/stats", "scheme 'dict'"),
    ("ws://api.example.com/socket", "scheme 'ws'"),
    ("//127.0.0.1/", "not absolute"),
    ("/relative/path", "not absolute"),
    ("http:/127.0.0.1/", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), CORPUS)
async def test_corpus_denied_before_sending(url: str, reason: str, net: NetLog, make_ctx: ContextFactory) -> None:
    """Through http.request with respx in place: no route is hit, no socket is opened."""
    resolver = table(CORPUS_NAMES)
    policy = HttpPolicy(resolver=resolver)
    with respx.mock:
        catch_all = respx.route().respond(200)
        err = await expect_error(policy, make_ctx(), url=url)
    assert_denied(err)
    assert reason in err.message
    assert "hunter2" not in err.message
    assert not catch_all.called
    assert net.connects == [] and net.lookups == []
    if parse_host_is_literal(url):
        assert resolver.calls == []  # IP literals are judged as written, never looked up


def parse_host_is_literal(url: str) -> bool:
    host = (urlsplit(url).hostname or "").rstrip(".")
    return bool(host) and parse_ip_literal(host) is not None


@pytest.mark.parametrize(("url", "reason"), CORPUS[::4])
async def test_corpus_denied_on_the_real_stack(url: str, reason: str, net: NetLog, make_ctx: ContextFactory) -> None:
    """The same without respx: the real transport, and the guard sees no connect attempt."""
    err = await expect_error(HttpPolicy(resolver=table(CORPUS_NAMES)), make_ctx(), url=url)
    assert_denied(err)
    assert reason in err.message
    assert net.connects == [] and net.lookups == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/hook", "http://2130706433/", "http://private.example.com/x"])
async def test_notify_webhook_corpus(url: str, net: NetLog, make_ctx: ContextFactory) -> None:
    tool = tool_named(HttpPolicy(resolver=table(CORPUS_NAMES)), "notify")
    args = {"channel": "ops", "message": "hi", "webhook_url": url}
    with pytest.raises(ToolError) as info:
        await tool.handler(args, make_ctx())
    assert_denied(info.value)
    assert net.connects == []


def test_corpus_size() -> None:
    assert len(CORPUS) >= 30


# -- pinning: the connection goes to the vetted address -----------------------------------------


async def test_rebinding_connects_to_the_first_vetted_answer(net: NetLog, make_ctx: ContextFactory) -> None:
    """The resolver answers public first, then loopback: the connection goes to the public
    address that was vetted, and the name is never looked up again."""
    resolver = ScriptedResolver({"rebind.test": [[PUBLIC_IP], ["127.0.0.1"]]})
    backend = RecordingBackend(httpcore.AsyncMockBackend([b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n", b"ok"]))
    policy = HttpPolicy(resolver=resolver, network_backend=backend)
    out = await call(policy, make_ctx(), url="http://rebind.test/data")
    assert out["text"] == "ok"
    assert backend.connects == [(PUBLIC_IP, 80)]
    assert resolver.calls == ["rebind.test"]
    assert net.lookups == [] and net.connects == []


async def test_rebinding_against_a_real_server(net: NetLog, make_ctx: ContextFactory) -> None:
    """A real server on 127.0.0.1 (let through for this test) gets the request for the vetted
    address, with the original Host; the next lookup's answer is vetted again and refused."""
    resolver = ScriptedResolver({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY)
    async with LocalServer(
        {"/data": http_response(200, b'{"ok": true}', [("Content-Type", "application/json")])}
    ) as srv:
        out = await call(policy, make_ctx(), url=srv.url("rebind.test", "/data"))
        assert out["json"] == {"ok": True}
        assert [(s.method, s.target, s.headers["host"]) for s in srv.seen] == [
            ("GET", "/data", f"rebind.test:{srv.port}")
        ]
        assert resolver.calls == ["rebind.test"]  # resolved once: the client did not look again
        assert net.connects == [("127.0.0.1", srv.port)]
        assert "rebind.test" not in net.lookups

        # The name now answers 127.0.0.2, which this policy does not allow: refused, unsent.
        err = await expect_error(policy, make_ctx(), url=srv.url("rebind.test", "/data"))
        assert_denied(err)
        assert "resolves to 127.0.0.2" in err.message
        assert len(srv.seen) == 1
        assert net.connects == [("127.0.0.1", srv.port)]


async def test_each_vetted_address_is_tried_in_order(net: NetLog, make_ctx: ContextFactory) -> None:
    resolver = table({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=frozenset({"127.0.0.0/8"}))
    async with LocalServer({"/": http_response(200, b"hi")}) as srv:
        out = await call(policy, make_ctx(), url=srv.url("multi.test"))
    assert out["text"] == "hi"
    # Nothing listens on 127.0.0.2: refused, then the second vetted address.
    assert net.connects == [("127.0.0.2", srv.port), ("127.0.0.1", srv.port)]
    assert srv.seen[0].headers["host"] == f"multi.test:{srv.port}"


async def test_transport_refuses_a_host_that_was_not_pinned(net: NetLog) -> None:
    policy = HttpPolicy(resolver=table({"a.test": ["127.0.0.1"]}), allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/": http_response(200)}) as srv:
        transport = PinnedTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(ToolError) as info:
                await client.get(srv.url("a.test"))  # nothing pinned yet
            assert_denied(info.value)
            transport.pin(await policy.check(srv.url("a.test")))
            with pytest.raises(ToolError) as info:
                await client.get(srv.url("b.test"))  # pinned for a.test, not b.test
            assert_denied(info.value)
            with pytest.raises(ToolError) as info:
                await client.get(f"http://a.test:{srv.port + 1}/")  # nor another port
            assert_denied(info.value)
            assert (await client.get(srv.url("a.test"))).status_code == 200
    assert len(srv.seen) == 1
    assert net.connects == [("127.0.0.1", srv.port)]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=pinned.test"]
    command += ["-addext", "subjectAltName=DNS:pinned.test"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        env={**os.environ, "OPENSSL_CONF": os.devnull},
    )
    return cert, key


async def test_tls_keeps_sni_and_verifies_the_host_name(tls_files: tuple[Path, Path], net: NetLog) -> None:
    """Pinned to 127.0.0.1, TLS still sends SNI pinned.test and checks the certificate against
    that name: the right name succeeds, another name pinned to the same address fails."""
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,func-returns-value]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    policy = HttpPolicy(
        resolver=table({"pinned.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]}), allowed_networks=LOOPBACK_ONLY
    )
    async with LocalServer({"/hello": http_response(200, b"secure")}, tls=server_ctx) as srv:
        transport = PinnedTransport(verify=client_ctx)
        async with httpx.AsyncClient(transport=transport) as client:
            url = srv.url("pinned.test", "/hello", scheme="https")
            transport.pin(await policy.check(url))
            response = await client.get(url)
            assert (response.status_code, response.text) == (200, "secure")

            url = srv.url("wrong.test", "/hello", scheme="https")
            transport.pin(await policy.check(url))
            with pytest.raises(httpx.ConnectError, match=r"certificate verify failed|CERTIFICATE_VERIFY_FAILED"):
                await client.get(url)
    assert sni == ["pinned.test", "wrong.test"]
    assert [(s.target, s.headers["host"]) for s in srv.seen] == [("/hello", f"pinned.test:{srv.port}")]
    assert net.connects == [("127.0.0.1", srv.port)] * 2


# -- redirects: every hop re-vetted and re-pinned ---------------------------------------------------


async def test_redirect_hops_are_each_resolved_and_pinned(net: NetLog, make_ctx: ContextFactory) -> None:
    resolver = table({"first.test": ["127.0.0.1"], "second.test": ["127.0.0.1"]})
    backend = RecordingBackend(httpcore.AnyIOBackend())
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY, network_backend=backend)
    async with LocalServer() as srv:
        srv.routes["/a"] = http_response(302, headers=[("Location", srv.url("second.test", "/b"))])
        srv.routes["/b"] = http_response(200, b"landed")
        out = await call(policy, make_ctx(), url=srv.url("first.test", "/a"))
    assert out["text"] == "landed"
    assert resolver.calls == ["first.test", "second.test"]
    # A new connection per hop (nothing kept alive), each to its hop's vetted address.
    assert backend.connects == [("127.0.0.1", srv.port), ("127.0.0.1", srv.port)]
    assert [(s.target, s.headers["host"]) for s in srv.seen] == [
        ("/a", f"first.test:{srv.port}"),
        ("/b", f"second.test:{srv.port}"),
    ]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("http://internal.test/admin", "resolves to 10.0.0.7"),
        ("http://localhost/admin", "local name"),
        ("http://127.0.0.2:{port}/", "loopback"),  # loopback, but not the address let through
        ("http://[::ffff:169.254.169.254]/", "169.254.169.254 embedded"),
        ("file:///etc/passwd", "scheme 'file'"),
    ],
)
async def test_redirect_to_internal_address_from_a_real_server(
    location: str, reason: str, net: NetLog, make_ctx: ContextFactory
) -> None:
    resolver = table({"public.test": ["127.0.0.1"], "internal.test": ["10.0.0.7"]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY)
    async with LocalServer() as srv:
        srv.routes["/go"] = http_response(302, headers=[("Location", location.format(port=srv.port))])
        err = await expect_error(policy, make_ctx(), url=srv.url("public.test", "/go"))
    assert_denied(err)
    assert reason in err.message
    assert [s.target for s in srv.seen] == ["/go"]
    assert net.connects == [("127.0.0.1", srv.port)]  # the first hop only


@pytest.mark.parametrize(
    "location", ["http://169.254.169.254/latest/meta-data/", "http://internal.test/", "http://0x7f000001/"]
)
async def test_redirect_to_internal_address_with_respx(location: str, make_ctx: ContextFactory) -> None:
    policy = HttpPolicy(resolver=table({"api.example.com": [PUBLIC_IP], "internal.test": ["10.0.0.7"]}))
    with respx.mock:
        hop = respx.get("https://api.example.com/go").respond(302, headers={"Location": location})
        target = respx.get(location).respond(200)
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/go")
    assert_denied(err)
    assert hop.called and not target.called


# -- response size cap --------------------------------------------------------------------------


@pytest.fixture
def api() -> HttpPolicy:
    return HttpPolicy(resolver=table({"api.example.com": [PUBLIC_IP]}))


def too_large(err: ToolError) -> None:
    assert (err.error_type, err.retryable) == ("HttpResponseTooLarge", False), err.message


async def test_plain_body_capped_exactly(api: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        respx.get("https://api.example.com/exact").respond(200, content=b"a" * 1000)
        out = await call(api, make_ctx(), url="https://api.example.com/exact", max_bytes=1000)
        assert len(out["text"]) == 1000
        too_large(await expect_error(api, make_ctx(), url="https://api.example.com/exact", max_bytes=999))


async def test_streamed_body_from_a_real_server_stops_at_the_cap(net: NetLog, make_ctx: ContextFactory) -> None:
    policy = HttpPolicy(resolver=table({"big.test": ["127.0.0.1"]}), allowed_networks=LOOPBACK_ONLY)
    body = Streamer(total=256 * MIB)
    async with LocalServer({"/big": body}) as srv:
        err = await expect_error(policy, make_ctx(), url=srv.url("big.test", "/big"), max_bytes=100_000)
        too_large(err)
    assert body.sent < body.total  # the client hung up instead of reading on


async def test_declared_content_length_over_cap_is_refused_unread(net: NetLog, make_ctx: ContextFactory) -> None:
    policy = HttpPolicy(resolver=table({"big.test": ["127.0.0.1"]}), allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/big": http_response(200, b"z" * 5000)}) as srv:
        too_large(await expect_error(policy, make_ctx(), url=srv.url("big.test", "/big"), max_bytes=4999))
        out = await call(policy, make_ctx(), url=srv.url("big.test", "/big"), max_bytes=5000)
    assert len(out["text"]) == 5000


async def test_gzip_bomb_is_refused(api: HttpPolicy, make_ctx: ContextFactory) -> None:
    bomb = gzip_bomb(32 * MIB)
    assert len(bomb) < 64 * 1024  # small on the wire
    with respx.mock:
        route = respx.get("https://api.example.com/bomb").mock(
            return_value=raw_response(bomb, {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        )
        err = await expect_error(api, make_ctx(), url="https://api.example.com/bomb", max_bytes=MIB)
    assert route.called
    too_large(err)


async def test_gzip_bomb_from_a_real_server_uses_no_more_memory_than_the_cap(
    net: NetLog, make_ctx: ContextFactory
) -> None:
    bomb = gzip_bomb(32 * MIB)
    policy = HttpPolicy(resolver=table({"bomb.test": ["127.0.0.1"]}), allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/bomb": http_response(200, bomb, [("Content-Encoding", "gzip")])}) as srv:
        tracemalloc.start()
        try:
            err = await expect_error(policy, make_ctx(), url=srv.url("bomb.test", "/bomb"), max_bytes=MIB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    too_large(err)
    assert peak < 8 * MIB, peak  # inflating it all would take 32 MiB


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", lambda data: gzip.compress(data)),
        ("x-gzip", lambda data: gzip.compress(data)),
        ("deflate", lambda data: zlib.compress(data)),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
    ],
)
async def test_compressed_body_capped_exactly_after_decoding(
    encoding: str, compress: Callable[[bytes], bytes], api: HttpPolicy, make_ctx: ContextFactory
) -> None:
    data = b"0123456789" * 1000  # 10 000 bytes, compresses to far less
    with respx.mock:
        respx.get("https://api.example.com/z").respond(
            200, content=compress(data), headers={"Content-Encoding": encoding}
        )
        out = await call(api, make_ctx(), url="https://api.example.com/z", max_bytes=len(data))
        assert out["text"] == data.decode()
        too_large(await expect_error(api, make_ctx(), url="https://api.example.com/z", max_bytes=len(data) - 1))


async def test_nested_gzip_bomb_is_refused(api: HttpPolicy, make_ctx: ContextFactory) -> None:
    double = gzip.compress(gzip_bomb(32 * MIB))
    with respx.mock:
        respx.get("https://api.example.com/bomb2").mock(
            return_value=raw_response(double, {"Content-Encoding": "gzip, gzip"})
        )
        too_large(await expect_error(api, make_ctx(), url="https://api.example.com/bomb2", max_bytes=MIB))


async def test_received_bytes_count_too(api: HttpPolicy, make_ctx: ContextFactory) -> None:
    """Incompressible data grows when gzipped: under the cap decoded, over it as received."""
    data = os.urandom(4000)
    wire = gzip.compress(data)
    assert len(wire) > len(data)
    with respx.mock:
        respx.get("https://api.example.com/r").respond(200, content=wire, headers={"Content-Encoding": "gzip"})
        too_large(await expect_error(api, make_ctx(), url="https://api.example.com/r", max_bytes=len(data)))
        out = await call(api, make_ctx(), url="https://api.example.com/r", max_bytes=len(wire))
    assert len(out["text"]) > 0


async def test_corrupt_compressed_body_is_a_permanent_error(api: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        respx.get("https://api.example.com/bad").mock(
            return_value=raw_response(b"definitely not gzip", {"Content-Encoding": "gzip"})
        )
        err = await expect_error(api, make_ctx(), url="https://api.example.com/bad")
    assert (err.error_type, err.retryable) == ("HttpError", False)


async def test_unknown_coding_passes_through_and_accept_encoding_is_bounded(
    api: HttpPolicy, make_ctx: ContextFactory
) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/br").respond(
            200, content=b"opaque", headers={"Content-Encoding": "br"}
        )
        out = await call(api, make_ctx(), url="https://api.example.com/br")
    assert out["text"] == "opaque"
    assert route.calls.last.request.headers["accept-encoding"] == "gzip, deflate"


async def test_unvetted_policy_still_only_connects_to_the_checked_origin(net: NetLog, make_ctx: ContextFactory) -> None:
    """block_private=False vets names, not addresses: the connection resolves the name itself,
    and still only for the host and port that were checked."""
    policy = HttpPolicy(block_private=False, allowed_hosts=frozenset({"127.0.0.1"}))
    async with LocalServer({"/": http_response(200, b"open")}) as srv:
        out = await call(policy, make_ctx(), url=srv.url("127.0.0.1"))
        err = await expect_error(policy, make_ctx(), url=srv.url("localhost"))
    assert out["text"] == "open"
    assert_denied(err)
    assert net.connects == [("127.0.0.1", srv.port)]


# -- hostile headers and redirects (issue 11): malformed is permanent, secrets never quoted ----------


@pytest.mark.parametrize(
    "value",
    # non-ASCII: a UnicodeEncodeError escaped the tool, a retryable tool bug tried again
    ["tok\r\nX-Injected: 1", "tok\nX-Injected: 1", "tok\rX-Injected: 1", "tok\x00nul", "tök"],
    ids=["crlf", "lf", "cr", "nul", "non-ascii"],
)
async def test_header_with_control_characters_is_a_permanent_error_and_never_sent(
    value: str, net: NetLog, make_ctx: ContextFactory
) -> None:
    resolver = table({"public.test": ["127.0.0.1"]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/x": http_response(200)}) as srv:
        err = await expect_error(policy, make_ctx(), url=srv.url("public.test", "/x"), headers={"Authorization": value})
    assert (err.error_type, err.retryable) == ("HttpRequestInvalid", False), err.message
    assert srv.seen == []


@pytest.mark.parametrize("location", ["http://[::1", "http://public.test:99999/"], ids=["bracket", "port"])
async def test_unparsable_redirect_is_a_permanent_error(location: str, net: NetLog, make_ctx: ContextFactory) -> None:
    resolver = table({"public.test": ["127.0.0.1"]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/go": http_response(302, headers=[("Location", location)])}) as srv:
        err = await expect_error(policy, make_ctx(), url=srv.url("public.test", "/go"))
    assert not err.retryable, err.message
    assert err.error_type in ("HttpBadRedirect", "EgressDenied", "ToolArgumentsError"), err.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("-5", None),
        ("1e300", 86400.0),
        ("100000", 86400.0),
        ("7", 7.0),
    ],
)
async def test_hostile_retry_after_becomes_a_finite_delay(
    header: str, expected: float | None, net: NetLog, make_ctx: ContextFactory
) -> None:
    resolver = table({"public.test": ["127.0.0.1"]})
    policy = HttpPolicy(resolver=resolver, allowed_networks=LOOPBACK_ONLY)
    async with LocalServer({"/busy": http_response(503, headers=[("Retry-After", header)])}) as srv:
        err = await expect_error(policy, make_ctx(), url=srv.url("public.test", "/busy"))
    assert (err.error_type, err.retryable, err.retry_after) == ("HttpStatus503", True, expected)
