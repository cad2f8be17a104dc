"""``duraplan tenants source ...`` and ``duraplan tools list``: a tenant's tool sources and catalog.

    duraplan tenants source add acme github --mcp-url https://mcp.example.com/mcp \\
        --header "Authorization: Bearer {$secret: GH_TOKEN}"
    duraplan tenants source add acme files --mcp-command "python -m files_server"   # DURAPLAN_MCP_STDIO=1
    duraplan tenants source add acme billing --openapi https://billing.example.com/openapi.json
    duraplan tenants source list|refresh|remove acme [NAME]
    duraplan tools list --tenant acme

User errors print one line on stderr and exit 1, like the rest of ``duraplan tenants``.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Annotated, Any

import typer

from duraplan.tenants_cli import JsonOut, TenantArg, _print_json, _registry, _user_errors
from duraplan.tenants_cli import app as tenants_app
from executor.service.config import Settings
from executor.service.sources import ToolSources, describe
from tools import builtin_tools, default_registry
from tools.errors import ToolError
from tools.sources.catalog import SourceKind, SourceSpec
from tools.sources.store import UnknownSource

__all__ = ["source_app", "tenants_app", "tools_app"]

source_app = typer.Typer(help="A tenant's tool sources: MCP servers and OpenAPI services.", no_args_is_help=True)
tools_app = typer.Typer(help="The tool catalog.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="Source name: the prefix of its tools (github -> github.create_issue).")]


def _sources(reg: Any) -> ToolSources:
    settings = Settings.from_env()
    base = default_registry(extra_modules=settings.tool_modules)
    reserved = frozenset(n.split(".", 1)[0] for n in base.names())
    return ToolSources(reg, reserved=reserved, allow_stdio=settings.mcp_stdio)


def _run(work: Any) -> Any:
    try:
        return asyncio.run(work)
    except ToolError as exc:  # an unreachable, refused or malformed source: a user-facing error
        raise ValueError(f"{exc.error_type}: {exc.message}") from None
    except UnknownSource as exc:
        raise ValueError(str(exc)) from None


def _headers(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {value!r} must be 'Name: value'")
        out[name.strip()] = text.strip()
    return out


def _echo_source(info: dict[str, Any]) -> None:
    where = info["url"] or " ".join(shlex.quote(c) for c in info["command"])
    typer.echo(f"{info['name']}\t{info['kind']}\t{where}\t{info['catalog_hash'][:19]}\t{len(info['tools'])} tools")
    for name in info["tools"]:
        typer.echo(f"  {name}")
    for why in info["skipped"]:
        typer.echo(f"  skipped: {why}")


@source_app.command("add")
@_user_errors
def add(
    tenant: TenantArg,
    name: NameArg,
    mcp_url: Annotated[str | None, typer.Option("--mcp-url", help="An MCP server's streamable HTTP endpoint.")] = None,
    mcp_command: Annotated[
        str | None,
        typer.Option("--mcp-command", help="A stdio MCP server's command line (needs DURAPLAN_MCP_STDIO=1)."),
    ] = None,
    openapi: Annotated[str | None, typer.Option("--openapi", help="The URL of an OpenAPI 3 document (JSON).")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="'Name: value', repeatable; value may hold {$secret: NAME}.")
    ] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAPI: where operations go.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per call and per fetch.")] = 30.0,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a source of that name.")] = False,
    as_json: JsonOut = False,
) -> None:
    """Register a source and fetch its catalog (through the tenant's egress policy)."""
    given = [v for v in (mcp_url, mcp_command, openapi) if v]
    if len(given) != 1:
        raise ValueError("give exactly one of --mcp-url, --mcp-command and --openapi")
    kind: SourceKind = "mcp" if mcp_url else "mcp_stdio" if mcp_command else "openapi"
    command = tuple(shlex.split(mcp_command)) if mcp_command else ()
    spec = SourceSpec(name, kind, mcp_url or openapi, command, _headers(header or []), base_url, timeout)
    with _registry() as reg:
        _run(_sources(reg).add(tenant, spec, replace=replace))
        info = describe(*reg.sources.get(tenant, name))
    if as_json:
        _print_json(info)
    else:
        _echo_source(info)


@source_app.command("list")
@_user_errors
def list_(tenant: TenantArg, as_json: JsonOut = False) -> None:
    """A tenant's sources with their tools and catalog hashes (header templates only, never secrets)."""
    with _registry() as reg:
        infos = _sources(reg).list(tenant)
    if as_json:
        _print_json(infos)
        return
    for info in infos:
        _echo_source(info)
    if not infos:
        typer.echo(f"tenant {tenant} has no tool sources")


@source_app.command("refresh")
@_user_errors
def refresh(tenant: TenantArg, name: NameArg, as_json: JsonOut = False) -> None:
    """Fetch a source's catalog again (runs planned before keep their pins)."""
    with _registry() as reg:
        _run(_sources(reg).refresh(tenant, name))
        info = describe(*reg.sources.get(tenant, name))
    if as_json:
        _print_json(info)
    else:
        _echo_source(info)


@source_app.command("remove")
@_user_errors
def remove(tenant: TenantArg, name: NameArg) -> None:
    """Remove a source; plans that use its tools no longer validate, runs that do fail their calls."""
    with _registry() as reg:
        try:
            _sources(reg).remove(tenant, name)
        except UnknownSource as exc:
            raise ValueError(str(exc)) from None
    typer.echo(f"removed tool source {name} of tenant {tenant}")


@tools_app.command("list")
@_user_errors
def tools_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Include this tenant's sources and show its grants.")
    ] = None,
    as_json: JsonOut = False,
) -> None:
    """Every tool with where it comes from (builtin, module, source:<name>) and, per tenant, if granted."""
    settings = Settings.from_env()
    base = default_registry(extra_modules=settings.tool_modules)
    builtin = {t.name for t in builtin_tools()}
    rows = [{**e, "origin": "builtin" if e["name"] in builtin else "module"} for e in base.catalog()]
    if tenant is not None:
        with _registry() as reg:
            sources = _sources(reg)
            rows += [{**e, "origin": f"source:{e['source']} ({e['source_kind']})"} for e in sources.entries(tenant)]
            for row in rows:
                row["granted"] = reg.is_tool_granted(tenant, row["name"])
    rows.sort(key=lambda r: r["name"])
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        granted = "" if tenant is None else ("granted" if row["granted"] else "not granted")
        effects = "side effects" if row["side_effects"] else "read-only"
        typer.echo(f"{row['name']}\t{row['origin']}\t{effects}\t{granted}".rstrip())


tenants_app.add_typer(source_app, name="source")  # `duraplan tenants source add|list|refresh|remove`
