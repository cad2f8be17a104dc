"""Tenant tool sources: MCP servers and OpenAPI services whose tools plans call like built-ins.

| module | what |
| --- | --- |
| ``catalog.py`` | ``SourceSpec``, ``CatalogTool``, ``Catalog``: what a source is and offers, with hashes |
| ``mcp.py`` | ``McpConnection``, ``mcp_catalog``: MCP over streamable HTTP or stdio |
| ``openapi.py`` | ``OpenApiClient``, ``openapi_catalog``: one tool per OpenAPI operation |
| ``store.py`` | ``SourceStore``: sources and catalogs in the tenant registry's database |
| ``pool.py`` | ``SourcePool``: open sources per worker and tenant; pins checked at call time |
"""

from __future__ import annotations

from tools.sources.catalog import Catalog, CatalogTool, SourceError, SourceKind, SourceSpec
from tools.sources.mcp import McpConnection, mcp_catalog
from tools.sources.openapi import OpenApiClient, openapi_catalog
from tools.sources.pool import SourcePool
from tools.sources.store import SourceStore, UnknownSource

__all__ = [
    "Catalog",
    "CatalogTool",
    "McpConnection",
    "OpenApiClient",
    "SourceError",
    "SourceKind",
    "SourcePool",
    "SourceSpec",
    "SourceStore",
    "UnknownSource",
    "mcp_catalog",
    "openapi_catalog",
]
