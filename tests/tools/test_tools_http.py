"""http.request and the egress policy, against respx-mocked HTTP (no network)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from tests.tools.http_calls import call, expect_error, tool_named
from tools import HttpPolicy, ToolArgumentsError, ToolContext, ToolError
from tools.egress import Resolver, parse_ip_literal, resolve_host, why_not_public

ContextFactory = Callable[..., ToolContext]


async def test_get_json(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/items", params={"page": "2"}).respond(
            200, json={"items": [1, 2]}, headers={"X-Total": "2"}
        )
        out = await call(
            policy,
            make_ctx(),
            url="https://api.example.com/items",
            params={"page": 2},
            headers={"Accept": "application/json"},
        )
    assert route.called
    assert out["status"] == 200
    assert out["json"] == {"items": [1, 2]}
    assert out["text"] is None
    assert out["headers"]["x-total"] == "2"
    sent = route.calls.last.request
    assert sent.headers["accept"] == "application/json"
    assert "idempotency-key" not in sent.headers  # reads don't need one


async def test_text_response(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/page").respond(
            200, text="<h1>hi</h1>", headers={"Content-Type": "text/html; charset=utf-8"}
        )
        out = await call(policy, make_ctx(), url="https://api.example.com/page")
    assert route.called
    assert out["json"] is None
    assert out["text"] == "<h1>hi</h1>"


async def test_post_sends_json_and_idempotency_key(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.post("https://api.example.com/orders").respond(201, json={"id": 7})
        out = await call(
            policy,
            make_ctx(idempotency_key="run-9/charge"),
            method="POST",
            url="https://api.example.com/orders",
            json={"amount": 5},
            # A plan-supplied key is replaced: only the step's key is stable across retries.
            headers={"idempotency-key": "made-up"},
        )
    assert route.called
    assert out == {
        "status": 201,
        "headers": out["headers"],
        "json": {"id": 7},
        "text": None,
    }
    sent = route.calls.last.request
    assert sent.headers.get_list("idempotency-key") == ["run-9/charge"]
    assert json.loads(sent.content) == {"amount": 5}


async def test_raw_body(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.put("https://api.example.com/doc").respond(204)
        out = await call(policy, make_ctx(), method="PUT", url="https://api.example.com/doc", body="plain é")
    assert route.called
    assert out["status"] == 204
    assert route.calls.last.request.content == "plain é".encode()
    assert route.calls.last.request.headers["idempotency-key"] == "run-1/step-a"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_429_and_5xx_are_retryable(status: int, policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/x").respond(status, text="busy", headers={"Retry-After": "7"})
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/x")
    assert route.called
    assert err.retryable is True
    assert err.error_type == f"HttpStatus{status}"
    assert err.retry_after == 7.0
    assert "busy" in err.message


async def test_retry_after_http_date_is_ignored(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/x").respond(
            503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
        )
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/x")
    assert route.called
    assert err.retryable and err.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_are_not_retryable(status: int, policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/x").respond(status, json={"error": "no"})
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/x?token=s3cret")
    assert route.called
    assert err.retryable is False
    assert err.error_type == f"HttpStatus{status}"
    assert "s3cret" not in err.message  # query strings stay out of error messages


async def test_connect_and_timeout_errors_are_retryable(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/down").mock(side_effect=httpx.ConnectError("connection refused"))
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/down")
        assert route.called
        assert (err.retryable, err.error_type) == (True, "HttpConnectError")

        route = respx.get("https://api.example.com/slow").mock(side_effect=httpx.ReadTimeout("read timed out"))
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/slow")
        assert route.called
        assert (err.retryable, err.error_type) == (True, "HttpTimeout")

        route = respx.get("https://api.example.com/drop").mock(
            side_effect=httpx.RemoteProtocolError("peer closed connection")
        )
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/drop")
        assert route.called
        assert (err.retryable, err.error_type) == (True, "HttpTransportError")


async def test_unresolvable_host_is_a_retryable_connect_error(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        catch_all = respx.route().respond(200)
        err = await expect_error(policy, make_ctx(), url="https://nxdomain.example.com/")
    assert not catch_all.called
    assert (err.retryable, err.error_type) == (True, "HttpConnectError")


class Chunks(httpx.AsyncByteStream):
    """A body with no Content-Length, so only counting while streaming can enforce the cap."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size, self.sent = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.sent += 1
            yield b"x" * self.size


async def test_response_size_cap_when_streaming(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    stream = Chunks(count=100, size=1000)
    with respx.mock:
        route = respx.get("https://api.example.com/big").mock(return_value=httpx.Response(200, stream=stream))
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/big", max_bytes=2500)
    assert route.called
    assert (err.retryable, err.error_type) == (False, "HttpResponseTooLarge")
    assert stream.sent == 3  # stopped reading right after passing the cap


async def test_response_size_cap_from_content_length(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.get("https://api.example.com/big").respond(200, content=b"y" * 5000)
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/big", max_bytes=4999)
        assert route.called
        assert err.error_type == "HttpResponseTooLarge"
        out = await call(policy, make_ctx(), url="https://api.example.com/big", max_bytes=5000)
        assert len(out["text"]) == 5000


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, IPv4-mapped in hex
        "http://[fe80::1%25eth0]/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://app.localhost/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/",
        "http://127.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://metadata.example.com/",  # a name that resolves to the metadata address
        "http://rebind.example.com/",  # one public and one private address
        "ftp://api.example.com/file",
        "file:///etc/passwd",
        "/relative/path",
    ],
)
async def test_egress_denied(url: str, policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        catch_all = respx.route().respond(200)
        err = await expect_error(policy, make_ctx(), url=url)
    assert not catch_all.called
    assert err.error_type == "EgressDenied"
    assert err.retryable is False
    assert "egress denied" in err.message


async def test_redirect_to_private_ip_is_denied(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        hop = respx.get("https://api.example.com/go").respond(
            302, headers={"Location": "http://169.254.169.254/latest/meta-data/iam"}
        )
        metadata = respx.get("http://169.254.169.254/latest/meta-data/iam").respond(200)
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/go")
    assert hop.called
    assert not metadata.called
    assert err.error_type == "EgressDenied"
    assert "169.254.169.254" in err.message


async def test_redirects_are_followed_and_rechecked(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        first = respx.post("https://api.example.com/a").respond(
            303, headers={"Location": "https://other.example.com/b"}
        )
        second = respx.get("https://other.example.com/b").respond(200, json={"ok": True})
        out = await call(policy, make_ctx(), method="POST", url="https://api.example.com/a")
    assert first.called and second.called
    assert out["json"] == {"ok": True}


async def test_too_many_redirects(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        loop = respx.get("https://api.example.com/loop").respond(302, headers={"Location": "/loop"})
        err = await expect_error(policy, make_ctx(), url="https://api.example.com/loop")
    assert loop.call_count == policy.max_redirects + 1
    assert (err.retryable, err.error_type) == (False, "HttpTooManyRedirects")


async def test_redirects_not_followed_when_disabled(
    fake_resolver: Callable[[dict[str, list[str]]], Resolver], make_ctx: ContextFactory
) -> None:
    policy = HttpPolicy(follow_redirects=False, resolver=fake_resolver({"api.example.com": ["93.184.216.34"]}))
    with respx.mock:
        route = respx.get("https://api.example.com/go").respond(302, headers={"Location": "http://10.0.0.1/"})
        out = await call(policy, make_ctx(), url="https://api.example.com/go")
    assert route.called
    assert out["status"] == 302


async def test_allowed_hosts(
    fake_resolver: Callable[[dict[str, list[str]]], Resolver], make_ctx: ContextFactory
) -> None:
    policy = HttpPolicy(
        allowed_hosts=frozenset({"api.example.com", "*.trusted.dev"}),
        resolver=fake_resolver(
            {
                "api.example.com": ["93.184.216.34"],
                "eu.trusted.dev": ["93.184.216.35"],
                "other.example.com": ["93.184.216.36"],
            }
        ),
    )
    with respx.mock:
        ok = respx.get("https://api.example.com/").respond(200)
        sub = respx.get("https://eu.trusted.dev/").respond(200)
        other = respx.get("https://other.example.com/").respond(200)
        await call(policy, make_ctx(), url="https://API.example.com/")
        await call(policy, make_ctx(), url="https://eu.trusted.dev/")
        err = await expect_error(policy, make_ctx(), url="https://other.example.com/")
        apex = await expect_error(policy, make_ctx(), url="https://trusted.dev/")
    assert ok.called and sub.called and not other.called
    assert err.error_type == apex.error_type == "EgressDenied"
    assert "not in the allowed hosts" in err.message


async def test_private_addresses_allowed_when_policy_says_so(make_ctx: ContextFactory) -> None:
    policy = HttpPolicy(block_private=False)
    with respx.mock:
        route = respx.get("http://localhost:8080/health").respond(200, text="ok")
        out = await call(policy, make_ctx(), url="http://localhost:8080/health")
    assert route.called
    assert out["text"] == "ok"


async def test_forbidden_headers_and_bad_urls(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        catch_all = respx.route().respond(200)
        with pytest.raises(ToolArgumentsError, match="Host"):
            await call(policy, make_ctx(), url="https://api.example.com/", headers={"Host": "x"})
        with pytest.raises(ToolArgumentsError, match="invalid URL"):
            await call(policy, make_ctx(), url="http://1.2.3.999/")
    assert not catch_all.called


def test_http_request_argument_validation(policy: HttpPolicy) -> None:
    tool = tool_named(policy, "http.request")
    assert tool.local is False and tool.side_effects is True
    tool.check_args({"url": "https://x.example"})
    bad: list[dict[str, Any]] = [
        {},
        {"url": "https://x.example", "method": "TRACE"},
        {"url": "https://x.example", "timeout_s": 301},
        {"url": "https://x.example", "timeout_s": 0},
        {"url": "https://x.example", "max_bytes": 10 * 1024 * 1024 + 1},
        {"url": "https://x.example", "json": {}, "body": "x"},
        {"url": "https://x.example", "headers": {"X": 1}},
        {"url": "https://x.example", "surprise": True},
    ]
    for args in bad:
        with pytest.raises(ToolArgumentsError):
            tool.check_args(args)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.0.258", "10.0.1.2"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
        ("+1", None),
        ("1_0", None),
        ("09", None),
    ],
)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed is not None else None) == expected


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 wrapping 169.254.169.254
        ("::", False),
        ("ff02::1", False),
        ("fc00::1", False),
    ],
)
def test_why_not_public(ip: str, public: bool) -> None:
    assert (why_not_public(ipaddress.ip_address(ip)) is None) is public


async def test_default_resolver_handles_numeric_hosts() -> None:
    assert "127.0.0.1" in await resolve_host("127.0.0.1", 80)


async def test_denial_messages_explain_why(policy: HttpPolicy) -> None:
    cases = {
        "http://[::ffff:127.0.0.1]/": "a loopback address (127.0.0.1 embedded)",
        "http://metadata.example.com/x?key=secret": "resolves to 169.254.169.254",
        "http://localhost/": "is a local name",
        "gopher://api.example.com/": "scheme 'gopher' is not allowed",
    }
    for url, fragment in cases.items():
        with pytest.raises(ToolError) as info:
            await policy.check(url)
        assert fragment in info.value.message
        assert "secret" not in info.value.message
    target = await policy.check("https://api.example.com:8443/x")
    assert (target.host, target.port) == ("api.example.com", 8443)
    assert [str(a) for a in target.addresses] == ["93.184.216.34"]


async def test_head_ignores_content_length(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        route = respx.head("https://api.example.com/file").respond(
            200, headers={"Content-Length": str(50 * 1024 * 1024)}
        )
        out = await call(policy, make_ctx(), method="HEAD", url="https://api.example.com/file")
    assert route.called
    assert out["status"] == 200
    assert out["headers"]["content-length"] == str(50 * 1024 * 1024)
    assert "idempotency-key" not in route.calls.last.request.headers
