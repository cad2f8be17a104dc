"""The HTTP API's tool-source routes: a tenant registers its MCP servers and OpenAPI services.

``GET /v1/tools`` (the tenant's granted catalog, each tool with its origin), ``GET /v1/sources``,
``POST /v1/sources``, ``POST /v1/sources/{name}:refresh``, ``DELETE /v1/sources/{name}``.
Stdio MCP servers cannot be added here: they run a command on the workers (CLI, operator only).
An unreachable or malformed source is 502 (the upstream failed), a refused URL 403 (egress).
"""

# No "from __future__ import annotations": FastAPI resolves the route annotations at runtime,
# and the tenant dependency is a local name.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from executor.service.client import Duraplan
from tools.errors import ToolError
from tools.sources.catalog import SourceSpec
from tools.sources.store import UnknownSource

__all__ = ["SourceBody", "add_source_routes"]

T = TypeVar("T")
SourceName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="a tool source of the tenant")]


class SourceBody(BaseModel):
    """A source to register: exactly one of ``mcp_url`` and ``openapi_url``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,62}$", description="the tools' prefix (github -> github.create_issue)"
    )
    mcp_url: str | None = Field(None, description="an MCP server's streamable HTTP endpoint")
    openapi_url: str | None = Field(None, description="an OpenAPI 3 document (JSON)")
    base_url: str | None = Field(None, description="OpenAPI: where operations go (default: the document's server)")
    headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every request; values may hold {$secret: NAME}"
    )
    timeout_s: float = Field(30.0, gt=0, le=600)
    replace: bool = Field(False, description="replace a source of that name")

    def spec(self) -> SourceSpec:
        if (self.mcp_url is None) == (self.openapi_url is None):
            raise ValueError("give exactly one of mcp_url and openapi_url")
        kind: Literal["mcp", "openapi"] = "mcp" if self.mcp_url else "openapi"
        url = self.mcp_url or self.openapi_url
        return SourceSpec(self.name, kind, url, (), self.headers, self.base_url, self.timeout_s)


def _problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    from duraplan.api import problem_response

    return problem_response(status, kind, title, detail, **extra)


async def _guard(work: Callable[[], Awaitable[T]]) -> T | JSONResponse:
    try:
        return await work()
    except UnknownSource as exc:
        return _problem(404, "not-found", "Not found", str(exc))
    except ToolError as exc:
        if exc.error_type == "EgressDenied":
            return _problem(403, "egress-denied", "Egress denied", exc.message)
        return _problem(502, "source-unavailable", "Tool source failed", exc.message, error=exc.error_type)
    except ValueError as exc:
        return _problem(422, "validation", "Source invalid", str(exc))


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The source's URL is refused by the tenant's egress policy"},
    404: {"description": "No such source"},
    422: {"description": "The source is invalid"},
    502: {"description": "The source could not be reached, listed or understood"},
}


def add_source_routes(app: FastAPI, dp: Duraplan, tenant_dep: Any) -> None:
    """Mount the routes on ``app``; ``tenant_dep`` is the API's authenticated-tenant dependency."""

    @app.get("/v1/tools", tags=["tools"])
    async def list_tools(tenant: tenant_dep) -> list[dict[str, Any]]:
        """The tools the tenant may use: built-ins, loaded modules' and its sources' (with ``source``)."""
        return dp.catalog_for(tenant.tenant_id)

    @app.get("/v1/sources", tags=["tools"], responses=_PROBLEMS)
    async def list_sources(tenant: tenant_dep) -> list[dict[str, Any]]:
        """The tenant's sources: spec (header templates, never secret values), catalog hash, tools."""
        return dp.sources.list(tenant.tenant_id)

    @app.post("/v1/sources", status_code=201, tags=["tools"], response_model=None, responses=_PROBLEMS)
    async def add_source(tenant: tenant_dep, body: SourceBody) -> dict[str, Any] | Response:
        """Register a source: its catalog is fetched now (through the tenant's egress policy)."""

        async def work() -> dict[str, Any]:
            spec = body.spec()
            await dp.sources.add(tenant.tenant_id, spec, replace=body.replace)
            return _described(dp, tenant.tenant_id, spec.name)

        return await _guard(work)

    @app.post("/v1/sources/{name}:refresh", tags=["tools"], response_model=None, responses=_PROBLEMS)
    async def refresh_source(tenant: tenant_dep, name: SourceName) -> dict[str, Any] | Response:
        """Fetch the catalog again; runs planned before keep their pins."""

        async def work() -> dict[str, Any]:
            await dp.sources.refresh(tenant.tenant_id, name)
            return _described(dp, tenant.tenant_id, name)

        return await _guard(work)

    @app.delete("/v1/sources/{name}", status_code=204, tags=["tools"], response_model=None, responses=_PROBLEMS)
    async def remove_source(tenant: tenant_dep, name: SourceName) -> Response:
        async def work() -> Response:
            dp.sources.remove(tenant.tenant_id, name)
            return Response(status_code=204)

        return await _guard(work)


def _described(dp: Duraplan, tenant: str, name: str) -> dict[str, Any]:
    from executor.service.sources import describe

    spec, catalog = dp.sources.get(tenant, name)
    return describe(spec, catalog)
