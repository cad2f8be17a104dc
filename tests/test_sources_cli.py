"""``duraplan tenants source ...``, ``duraplan tenants egress-private`` and ``duraplan tools list``
against a real MCP server: one-line errors, no secrets printed, origins shown."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from duraplan.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
from source_servers import Seen, Served, build_mcp


@pytest.fixture
def duraplan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("DURAPLAN_HOME", str(tmp_path))
    monkeypatch.delenv("DURAPLAN_MCP_STDIO", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    yield invoke


def test_register_list_refresh_remove_an_mcp_source(duraplan: object) -> None:
    run = duraplan  # type: ignore[assignment]
    seen = Seen()
    with Served(build_mcp(seen).streamable_http_app()) as served:
        url = f"{served.origin}/mcp"
        assert run("tenants", "create", "acme").exit_code == 0
        assert run("tenants", "secret", "set", "acme", "SHOP_TOKEN", input="tok-123\n").exit_code == 0
        header = "Authorization: Bearer {$secret: SHOP_TOKEN}"

        # Loopback is refused until an administrator names the exact target.
        refused = run("tenants", "source", "add", "acme", "shop", "--mcp-url", url, "--header", header)
        assert refused.exit_code == 1 and "EgressDenied" in refused.stderr and len(refused.stderr.splitlines()) == 1
        assert run("tenants", "egress-private", "acme", f"127.0.0.1:{served.port}").exit_code == 0

        added = run("tenants", "source", "add", "acme", "shop", "--mcp-url", url, "--header", header, "--json")
        assert added.exit_code == 0, added.stderr
        info = json.loads(added.stdout)
        assert info["headers"] == {"Authorization": "Bearer {$secret: SHOP_TOKEN}"} and "shop.add" in info["tools"]

        again = run("tenants", "source", "add", "acme", "shop", "--mcp-url", url)
        assert again.exit_code == 1 and "already has a tool source 'shop'" in again.stderr
        taken = run("tenants", "source", "add", "acme", "kv", "--mcp-url", url)
        assert taken.exit_code == 1 and "taken by built-in" in taken.stderr
        stdio = run("tenants", "source", "add", "acme", "local", "--mcp-command", "python server.py")
        assert stdio.exit_code == 1 and "DURAPLAN_MCP_STDIO" in stdio.stderr

        listed = run("tenants", "source", "list", "acme")
        assert listed.exit_code == 0 and "shop\tmcp\t" in listed.stdout and "tok-123" not in listed.stdout
        assert run("tenants", "source", "refresh", "acme", "shop").exit_code == 0

        tools = run("tools", "list", "--tenant", "acme")
        assert tools.exit_code == 0
        lines = dict(line.split("\t", 1) for line in tools.stdout.splitlines())
        assert lines["shop.add"] == "source:shop (mcp)\tread-only\tnot granted"
        assert lines["kv.get"] == "builtin\tread-only\tgranted"
        assert run("tenants", "grant", "acme", "shop.*").exit_code == 0
        granted = json.loads(run("tools", "list", "--tenant", "acme", "--json").stdout)
        assert {r["name"]: r["granted"] for r in granted}["shop.create_ticket"] is True

        assert run("tenants", "source", "remove", "acme", "shop").exit_code == 0
        gone = run("tenants", "source", "remove", "acme", "shop")
        assert gone.exit_code == 1 and "no tool source 'shop'" in gone.stderr
