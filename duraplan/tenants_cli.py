"""``duraplan tenants``: manage the tenant registry (``<DURAPLAN_HOME>/tenants.db``, or the
PostgreSQL database at ``DURAPLAN_DATABASE_URL``).

User errors print one line on stderr and exit 1. Secrets and API keys are never printed except the
new key from ``issue-key``, once, on stdout alone (so ``KEY=$(duraplan tenants issue-key ...)`` works).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from executor.service.config import Settings
from executor.service.tenants import Quotas, TenantError, TenantRegistry
from tools.database import is_database_error

__all__ = ["app", "registry_path"]

app = typer.Typer(help="Manage tenants: API keys, quotas, tool grants, HTTP egress and secrets.", no_args_is_help=True)
secret_app = typer.Typer(help="Set or remove a tenant's secrets (values are never printed).", no_args_is_help=True)
app.add_typer(secret_app, name="secret")
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")
TenantArg = Annotated[str, typer.Argument(help="Tenant id.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def registry_path() -> str | Path:
    """The registry the CLI opens; a PostgreSQL URL may hold a password, so it is never printed."""
    return Settings.from_env().registry_location()


@contextmanager
def _registry() -> Iterator[TenantRegistry]:
    registry = TenantRegistry(registry_path())
    try:
        yield registry
    finally:
        registry.close()


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Expected errors become one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (TenantError, ValueError, TypeError) as exc:
            raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except OSError as exc:  # also tools.DatabaseUnavailable
            raise _fail(str(exc)) from None
        except Exception as exc:
            if not is_database_error(exc):
                raise
            raise _fail(f"tenant registry: {exc}") from None

    return wrapper


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# ---- tenants -----------------------------------------------------------------------------------


@app.command()
@_user_errors
def create(
    tenant: TenantArg,
    display_name: Annotated[str | None, typer.Option("--display-name", help="Human-readable name.")] = None,
    as_json: JsonOut = False,
) -> None:
    """Create a tenant with default quotas, the default tool grants and no HTTP egress."""
    with _registry() as reg:
        created = reg.create(tenant, display_name=display_name)
    if as_json:
        _print_json(created.to_dict())
    else:
        typer.echo(f"created tenant {created.tenant_id}")


@app.command("list")
@_user_errors
def list_(as_json: JsonOut = False) -> None:
    """List tenants."""
    with _registry() as reg:
        tenants = reg.list()
    if as_json:
        _print_json([t.to_dict() for t in tenants])
        return
    for t in tenants:
        typer.echo(f"{t.tenant_id}\t{t.display_name or ''}\t{_when(t.created_at)}")


@app.command()
@_user_errors
def show(tenant: TenantArg, as_json: JsonOut = False) -> None:
    """A tenant's quotas, tool grants, egress, secret names and API keys (never secrets)."""
    with _registry() as reg:
        info = reg.get(tenant)
        data: dict[str, Any] = {
            **info.to_dict(),
            "quotas": reg.quotas(tenant).to_dict(),
            "tool_grants": reg.granted_tools(tenant),
            "egress": reg.egress(tenant),
            "egress_private": reg.private_egress(tenant),
            "secrets": reg.secret_names(tenant),
            "keys": [k.to_dict() for k in reg.list_keys(tenant)],
        }
    if as_json:
        _print_json(data)
        return
    typer.echo(f"tenant {info.tenant_id}" + (f" ({info.display_name})" if info.display_name else ""))
    typer.echo(f"  created      {_when(info.created_at)}")
    typer.echo("  quotas")
    for name, value in data["quotas"].items():
        typer.echo(f"    {name:<22} {_num(value)}")
    typer.echo(f"  tool grants  {', '.join(data['tool_grants']) or '(none)'}")
    typer.echo(f"  egress       {', '.join(data['egress']) or '(none: all HTTP egress denied)'}")
    typer.echo(f"  secrets      {', '.join(data['secrets']) or '(none)'}")
    typer.echo("  keys" + ("" if data["keys"] else "         (none)"))
    for key in data["keys"]:
        state = "active" if key["active"] else f"revoked {_when(key['revoked_at'])}"
        typer.echo(f"    {key['key_id']}  {key['label']}  created {_when(key['created_at'])}  {state}")


@app.command()
@_user_errors
def delete(
    tenant: TenantArg,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: ends its runs and removes its keys, secrets and data too.")
    ] = False,
) -> None:
    """Delete a tenant and everything of it: keys, quotas, grants, secrets and sources at once, then
    its open runs and planning sessions (terminated) and its kv, effects, outbox and carries in the tool store."""
    if not yes:
        raise ValueError(
            f"deleting tenant {tenant!r} removes its keys, secrets and kv data and ends its runs; pass --yes to confirm"
        )
    with _registry() as reg:
        reg.delete(tenant)
        typer.echo(f"deleted tenant {tenant}")
        _purge(reg, tenant)


@app.command()
@_user_errors
def purge(
    tenant: TenantArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: ends its runs and deletes its data.")] = False,
) -> None:
    """Finish a deleted tenant's removal: end its open runs, delete its data in the tool store
    (what `delete` does after the registry; repeatable)."""
    if not yes:
        raise ValueError(f"purging tenant {tenant!r} ends its runs and deletes its kv data; pass --yes to confirm")
    with _registry() as reg:
        _purge(reg, tenant)


def _purge(reg: TenantRegistry, tenant: str) -> None:
    import asyncio

    from executor.service.config import connect
    from executor.service.tenant_purge import purge_tenant

    if not reg.is_retired(tenant):  # before connecting: a live tenant is never purged
        raise TenantError(f"tenant {tenant!r} is not deleted: delete it first (duraplan tenants delete)")
    settings = Settings.from_env()

    async def run() -> Any:
        return await purge_tenant(await connect(settings), settings, reg, tenant)

    try:
        report = asyncio.run(run())
    except TenantError:
        raise
    except Exception as exc:  # Temporal or the tool store unreachable: the registry part is done
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"tenant {tenant!r} is deleted, but its runs and data were not purged ({detail}); "
            f"finish with: duraplan tenants purge {tenant} --yes"
        ) from None
    rows = ", ".join(f"{n} {table}" for table, n in report.rows_deleted.items()) or "no tool store here"
    typer.echo(f"terminated {report.terminated} open run(s) and session(s) of {tenant}; deleted rows: {rows}")


# ---- API keys ----------------------------------------------------------------------------------


@app.command("issue-key")
@_user_errors
def issue_key(
    tenant: TenantArg,
    label: Annotated[str, typer.Option("--label", help="What the key is for (e.g. 'ci', 'agent-prod').")],
    as_json: JsonOut = False,
) -> None:
    """Issue an API key. It is printed once and cannot be shown again: store it now."""
    with _registry() as reg:
        token = reg.issue_key(tenant, label=label)
    key_id = token.split("_", 2)[1]
    if as_json:
        _print_json({"tenant_id": tenant, "key_id": key_id, "label": label, "key": token})
    else:
        typer.echo(token)
        err.print(f"key {key_id} issued for tenant {escape(tenant)}; it will not be shown again", highlight=False)


@app.command("revoke-key")
@_user_errors
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after 'dp_').")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only if the key belongs to this tenant.")] = None,
) -> None:
    """Revoke an API key (idempotent)."""
    with _registry() as reg:
        reg.revoke_key(key_id, tenant_id=tenant)
    typer.echo(f"revoked key {key_id}")


# ---- quotas ------------------------------------------------------------------------------------


def _quota_option(name: str) -> Any:
    return typer.Option(f"--{name.replace('_', '-')}", help=f"Default {_num(getattr(Quotas(), name))}.")


@app.command("set-quota")
@_user_errors
def set_quota(
    tenant: TenantArg,
    runs_per_second: Annotated[float | None, _quota_option("runs_per_second")] = None,
    runs_burst: Annotated[int | None, _quota_option("runs_burst")] = None,
    max_concurrent_runs: Annotated[int | None, _quota_option("max_concurrent_runs")] = None,
    max_steps_per_run: Annotated[int | None, _quota_option("max_steps_per_run")] = None,
    max_step_output_bytes: Annotated[int | None, _quota_option("max_step_output_bytes")] = None,
    max_event_bytes: Annotated[int | None, _quota_option("max_event_bytes")] = None,
    code_cpu_seconds: Annotated[float | None, _quota_option("code_cpu_seconds")] = None,
    code_memory_mb: Annotated[int | None, _quota_option("code_memory_mb")] = None,
    max_inflight_steps: Annotated[int | None, _quota_option("max_inflight_steps")] = None,
    reset: Annotated[
        list[str] | None, typer.Option("--reset", help="Reset a quota (by field name) to its default; repeatable.")
    ] = None,
    as_json: JsonOut = False,
) -> None:
    """Override quotas; unset ones keep their current value."""
    given: dict[str, float | None] = {
        name: value
        for name, value in {
            "runs_per_second": runs_per_second,
            "runs_burst": runs_burst,
            "max_concurrent_runs": max_concurrent_runs,
            "max_steps_per_run": max_steps_per_run,
            "max_step_output_bytes": max_step_output_bytes,
            "max_event_bytes": max_event_bytes,
            "code_cpu_seconds": code_cpu_seconds,
            "code_memory_mb": code_memory_mb,
            "max_inflight_steps": max_inflight_steps,
        }.items()
        if value is not None
    }
    for name in reset or []:
        given[name.replace("-", "_")] = None
    if not given:
        raise ValueError("nothing to change: pass a quota option such as --runs-per-second, or --reset NAME")
    with _registry() as reg:
        quotas = reg.set_quotas(tenant, **given)
    if as_json:
        _print_json(quotas.to_dict())
    else:
        typer.echo(" ".join(f"{k}={_num(v)}" for k, v in quotas.to_dict().items()))


# ---- tool grants and egress --------------------------------------------------------------------


@app.command()
@_user_errors
def grant(
    tenant: TenantArg,
    patterns: Annotated[list[str], typer.Argument(help="Tool names or patterns: kv.*, http.request, '*'.")],
) -> None:
    """Grant tools to a tenant."""
    with _registry() as reg:
        reg.grant_tools(tenant, patterns)
        _echo_grants(reg, tenant)


@app.command()
@_user_errors
def revoke(
    tenant: TenantArg,
    patterns: Annotated[list[str], typer.Argument(help="Patterns exactly as granted.")],
) -> None:
    """Revoke tool grant patterns from a tenant."""
    with _registry() as reg:
        reg.revoke_tools(tenant, patterns)
        _echo_grants(reg, tenant)


def _echo_grants(reg: TenantRegistry, tenant: str) -> None:
    typer.echo(f"tool grants of {tenant}: {', '.join(reg.granted_tools(tenant)) or '(none)'}")


@app.command()
@_user_errors
def egress(
    tenant: TenantArg,
    entries: Annotated[
        list[str] | None,
        typer.Argument(help="[scheme://](host|*.domain)[:port], e.g. https://api.example.com '*.example.com:443'."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every entry (denies all HTTP egress).")] = False,
    as_json: JsonOut = False,
) -> None:
    """Replace a tenant's HTTP egress allowlist with ENTRY...; without entries, show it."""
    if clear and entries:
        raise ValueError("give entries or --clear, not both")
    with _registry() as reg:
        current = reg.set_egress(tenant, entries or []) if (entries or clear) else reg.egress(tenant)
    if as_json:
        _print_json(current)
    else:
        typer.echo(f"egress of {tenant}: {', '.join(current) or '(none: all HTTP egress denied)'}")


@app.command("egress-private")
@_user_errors
def egress_private(
    tenant: TenantArg,
    targets: Annotated[
        list[str] | None, typer.Argument(help="Exact host:port targets, e.g. 127.0.0.1:9331 wiki.internal:8443.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every target (the default: none).")] = False,
    as_json: JsonOut = False,
) -> None:
    """Administrators only: let a tenant reach named loopback/private host:port targets (off by default).

    Replaces the list with TARGET...; without targets, shows it. Each target admits that host on
    that port only, despite the address checks; connections are still pinned to what was resolved."""
    if clear and targets:
        raise ValueError("give targets or --clear, not both")
    with _registry() as reg:
        current = reg.set_private_egress(tenant, targets or []) if (targets or clear) else reg.private_egress(tenant)
    if as_json:
        _print_json(current)
    else:
        typer.echo(f"private egress of {tenant}: {', '.join(current) or '(none)'}")


# ---- secrets -----------------------------------------------------------------------------------


def _read_value(value: str | None, value_file: Path | None) -> str:
    if value is not None and value_file is not None:
        raise ValueError("give --value or --value-file, not both")
    if value is not None:
        return value
    if value_file is not None and str(value_file) != "-":
        text = value_file.read_text()
    elif sys.stdin.isatty():
        text = str(typer.prompt("secret value", hide_input=True, err=True))
    else:
        text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


@secret_app.command("set")
@_user_errors
def secret_set(
    tenant: TenantArg,
    name: Annotated[str, typer.Argument(help="Secret name.")],
    value_file: Annotated[
        Path | None, typer.Option("--value-file", help="Read the value from this file ('-': stdin).")
    ] = None,
    value: Annotated[
        str | None,
        typer.Option("--value", help="The value itself. Avoid: it lands in shell history and `ps`; prefer stdin."),
    ] = None,
) -> None:
    """Set a secret; the value comes from stdin (a hidden prompt on a terminal) unless --value-file is given.

    One trailing newline is dropped, so `printf` and `echo` both work.
    """
    secret = _read_value(value, value_file)
    with _registry() as reg:
        reg.set_secret(tenant, name, secret)
    typer.echo(f"secret {name} set for tenant {tenant}")


@secret_app.command("rm")
@_user_errors
def secret_rm(tenant: TenantArg, name: Annotated[str, typer.Argument(help="Secret name.")]) -> None:
    """Remove a secret."""
    with _registry() as reg:
        reg.delete_secret(tenant, name)
    typer.echo(f"secret {name} removed from tenant {tenant}")
