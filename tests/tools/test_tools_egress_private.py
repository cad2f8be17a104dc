"""Administrator-named private targets (``HttpPolicy.allowed_private``): exactly that host and port
get through the address checks, nothing else does, and connections stay pinned."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from http_calls import call, expect_error

from executor.service.tenants import TenantRegistry
from tools import HttpPolicy, ToolContext
from tools.egress import parse_private_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from source_servers import Served


async def _resolver_to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [
        ("127.0.0.1:9331", "127.0.0.1:9331"),
        ("127.1:9331", "127.0.0.1:9331"),
        ("[::1]:8080", "[::1]:8080"),
        ("Wiki.Internal.:8443", "wiki.internal:8443"),
    ],
)
def test_entries_are_exact_host_and_port(entry: str, canonical: str) -> None:
    assert parse_private_target(entry) == canonical


@pytest.mark.parametrize("entry", ["127.0.0.1", "http://127.0.0.1:80", "*.internal:443", "10.0.0.0/8:80", ":80", "h:0"])
def test_malformed_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="private target"):
        parse_private_target(entry)


async def test_only_the_named_host_and_port_pass() -> None:
    policy = HttpPolicy(allowed_hosts=frozenset(), allowed_private=frozenset({"127.0.0.1:9331", "wiki.internal:8443"}))
    target = await policy.check("http://127.0.0.1:9331/x")
    assert [str(a) for a in target.addresses] == ["127.0.0.1"]
    assert (await policy.check("http://0x7f.0.0.1:9331/")).port == 9331  # another spelling, same address
    named = HttpPolicy(allowed_private=frozenset({"wiki.internal:8443"}), resolver=_resolver_to_loopback)
    assert [str(a) for a in (await named.check("https://wiki.internal:8443/")).addresses] == ["127.0.0.1"]
    for url in ("http://127.0.0.1:9332/", "http://localhost:9331/", "http://127.0.0.2:9331/", "https://wiki.internal/"):
        with pytest.raises(Exception, match="egress denied"):
            await policy.check(url)
    assert HttpPolicy().allowed_private == frozenset(), "off by default"


def test_tenant_registry_keeps_private_targets_per_tenant(tmp_path: Path) -> None:
    with TenantRegistry(tmp_path / "t.db") as reg:
        reg.create("acme")
        reg.create("globex")
        assert reg.private_egress("acme") == []
        assert reg.set_private_egress("acme", ["127.1:9331", "127.0.0.1:9331"]) == ["127.0.0.1:9331"]
        with pytest.raises(ValueError, match="private target"):
            reg.set_private_egress("acme", ["127.0.0.1"])
        assert reg.private_egress("acme") == ["127.0.0.1:9331"], "a refused update changes nothing"
        assert reg.http_policy("acme").allowed_private == frozenset({"127.0.0.1:9331"})
        assert reg.http_policy("globex").allowed_private == frozenset()
        reg.delete("acme")
        reg.create("acme")
        assert reg.private_egress("acme") == [], "deleted with the tenant"


async def test_http_request_reaches_a_named_local_server(make_ctx: object) -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"pong": True}

    with Served(app) as served:
        ctx: ToolContext = make_ctx()  # type: ignore[operator]
        allowed = HttpPolicy(allowed_hosts=frozenset(), allowed_private=frozenset({f"127.0.0.1:{served.port}"}))
        result = await call(allowed, ctx, url=f"{served.origin}/ping")
        assert result["json"] == {"pong": True}
        error = await expect_error(HttpPolicy(allowed_hosts=frozenset()), ctx, url=f"{served.origin}/ping")
        assert error.error_type == "EgressDenied"
