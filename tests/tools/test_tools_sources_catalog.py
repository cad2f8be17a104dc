"""Catalog entries from MCP listings and OpenAPI documents: names, schemas, hashes, header templates."""

from __future__ import annotations

import pytest

from tools.sources.catalog import Catalog, CatalogTool, SourceSpec, local_name, render_headers
from tools.sources.openapi import operations

DOC = {
    "openapi": "3.1.0",
    "paths": {
        "/items/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "getItem", "summary": "Read an item."},
            "put": {
                "operationId": "putItem",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}},
                },
            },
        },
        "/cookies": {"get": {"parameters": [{"name": "c", "in": "cookie"}]}},
    },
    "components": {
        "schemas": {
            "Item": {"type": "object", "properties": {"tag": {"$ref": "#/components/schemas/Tag"}}},
            "Tag": {"type": "string"},
        }
    },
}


def test_remote_names_become_catalog_names() -> None:
    assert [local_name(n) for n in ("createIssue", "Create-Issue", "list files", "2fa")] == [
        "create_issue",
        "create_issue",
        "list_files",
        "t_2fa",
    ]


def test_openapi_operations_with_refs_and_side_effects() -> None:
    tools, skipped = operations(DOC, "inv", "https://inv.example/api")
    by_name = {t.name: t for t in tools}
    get, put = by_name["inv.get_item"], by_name["inv.put_item"]
    assert get.side_effects is False and put.side_effects is True
    assert put.args_schema["required"] == ["body", "id"]
    assert "Idempotency-Key" not in put.args_schema["properties"], "duraplan sends its own key"
    assert put.args_schema["$defs"] == {
        "Item": {"type": "object", "properties": {"tag": {"$ref": "#/$defs/Tag"}}},
        "Tag": {"type": "string"},
    }
    assert put.route == {
        "method": "PUT",
        "path": "/items/{id}",
        "params": {"id": "path"},
        "body": True,
        "base_url": "https://inv.example/api",
    }
    assert skipped == ("get_/cookies: parameter 'c' in 'cookie' is not supported",)


def test_hashes_follow_the_schema_not_its_key_order() -> None:
    a = CatalogTool.build(
        "s", "t", "d", {"type": "object", "properties": {"x": {"type": "string"}}}, side_effects=False
    )
    b = CatalogTool.build(
        "s", "t", "other text", {"properties": {"x": {"type": "string"}}, "type": "object"}, side_effects=False
    )
    c = CatalogTool.build(
        "s", "t", "d", {"type": "object", "properties": {"x": {"type": "integer"}}}, side_effects=False
    )
    assert a.schema_hash == b.schema_hash != c.schema_hash
    assert Catalog("s", (a,), 0).hash != Catalog("s", (c,), 0).hash
    with pytest.raises(ValueError, match="larger than"):
        CatalogTool.build("s", "t", "d", {"type": "object", "description": "x" * 70_000})


def test_header_templates_hold_secret_names_never_values() -> None:
    spec = SourceSpec("gh", "mcp", "https://mcp.example/mcp", headers={"Authorization": "Bearer {$secret: GH_TOKEN}"})
    headers, used = render_headers(spec.headers, {"GH_TOKEN": "ghp_1"}.__getitem__)
    assert headers == {"Authorization": "Bearer ghp_1"} and used == ["ghp_1"]
    assert "ghp_1" not in str(spec.to_dict())
    for bad in (
        {"kind": "mcp", "url": "file:///etc/passwd"},
        {"kind": "mcp_stdio", "url": "https://x"},
        {"kind": "mcp", "url": "https://x", "headers": {"X": "a\r\nB: c"}},
    ):
        with pytest.raises(ValueError):
            SourceSpec("gh", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source name"):
        SourceSpec("Git-Hub", "mcp", "https://x")
