"""Tool sources stored with the tenant registry, on both backends: isolation per tenant, replace
rules, and deletion with the tenant."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.service.tenants import TenantRegistry
from tools.sources import Catalog, CatalogTool, SourceSpec, UnknownSource


def _catalog(source: str, required: list[str]) -> Catalog:
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in required}, "required": required}
    return Catalog(source, (CatalogTool.build(source, "add", "Add.", schema, side_effects=False),), 1.0)


def test_sources_per_tenant_on_both_backends(db_location: str | Path) -> None:
    with TenantRegistry(db_location) as reg:
        reg.create("acme")
        reg.create("globex")
        spec = SourceSpec("shop", "mcp", "https://mcp.example/mcp", headers={"Authorization": "Bearer {$secret: T}"})
        reg.sources.put("acme", spec, _catalog("shop", ["a", "b"]), replace=False)
        with pytest.raises(ValueError, match="already has a tool source 'shop'"):
            reg.sources.put("acme", spec, _catalog("shop", ["a"]), replace=False)
        assert reg.sources.list("globex") == []
        with pytest.raises(UnknownSource):
            reg.sources.get("globex", "shop")

        reg.sources.put("acme", spec, _catalog("shop", ["a", "b", "c"]), replace=True)
        stored_spec, catalog = reg.sources.get("acme", "shop")
        assert stored_spec == spec and catalog.tools[0].args_schema["required"] == ["a", "b", "c"]
        assert catalog.hash != _catalog("shop", ["a", "b"]).hash

        reg.delete("acme")  # the tenant's sources go with it (its name is retired, not reusable)
        assert reg.sources.list("acme") == []
        with pytest.raises(UnknownSource):
            reg.sources.remove("acme", "shop")
