"""``duraplan usage`` and ``duraplan bulk``: a tenant's metering and bulk operations on its runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from executor.errors import DuraplanError
from executor.service.bulk import BULK_ACTIONS
from executor.service.client import Duraplan
from executor.service.config import Settings
from executor.service.usage import UsageReport, usage_report
from tools.usage import UsageStore

__all__ = ["app", "register"]

out = Console()
Tenant = Annotated[str, typer.Option("--tenant", "-t", envvar="DURAPLAN_TENANT", help="The tenant.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Command = Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]
Connect = Callable[[str | None, str | None], Awaitable[Duraplan]]


def _usage_table(report: UsageReport) -> Table:
    table = Table(title=f"usage of {report.tenant}, {report.first_day} .. {report.last_day} (UTC)")
    for col in ("day", "steps", "attempts", "activity s", "code cpu s", "tokens in/out", "cost $", "runs s/c/f/x/t"):
        table.add_column(col)
    for d in [*report.days, report.total]:
        table.add_row(
            d.day,
            ", ".join(f"{k} {n}" for k, n in sorted(d.steps.items())),
            ", ".join(f"{k} {n}" for k, n in sorted(d.attempts.items())),
            f"{d.activity_seconds:.3f}",
            f"{d.code_cpu_seconds:.3f}",
            f"{d.llm_prompt_tokens}/{d.llm_completion_tokens}",
            f"{d.llm_cost_usd:.6f}",
            f"{d.runs_started}/{d.runs_completed}/{d.runs_failed}/{d.runs_cancelled}/{d.runs_terminated}",
        )
    return table


def register(app: typer.Typer, command: Command, connect: Connect) -> None:
    """Add the commands to ``app``; ``command`` is the CLI's error-handling async wrapper."""

    @app.command()
    @command
    async def usage(
        tenant: Tenant = "default",
        day: Annotated[str | None, typer.Option("--day", help="One UTC day, YYYY-MM-DD (default today).")] = None,
        first: Annotated[str | None, typer.Option("--from", help="First UTC day.")] = None,
        last: Annotated[str | None, typer.Option("--to", help="Last UTC day (inclusive).")] = None,
        as_json: JsonOut = False,
    ) -> None:
        """A tenant's usage per day: steps by kind, attempts, seconds, tokens, cost, runs (from <home>/store.db)."""
        settings = Settings.from_env()
        location = settings.store_location()
        if not settings.database_url and not (settings.home / "store.db").exists():
            raise DuraplanError(f"no usage ledger at {location}: set DURAPLAN_HOME to the worker's data directory")
        store = UsageStore(location)
        try:
            report = await usage_report(store, tenant, day=day, first=first, last=last)
        finally:
            store.close()
        if as_json:
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        else:
            out.print(_usage_table(report))

    @app.command()
    @command
    async def bulk(
        action: Annotated[str, typer.Argument(help=" | ".join(BULK_ACTIONS))],
        tenant: Tenant = "default",
        session: Annotated[str | None, typer.Option("--session", "-s", help="Only this session's runs.")] = None,
        plan_hash: Annotated[str | None, typer.Option("--plan-hash", help="Only runs of this plan hash.")] = None,
        state: Annotated[str | None, typer.Option("--status", help="running (all open runs) or paused.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count the runs it would reach.")] = False,
        as_json: JsonOut = False,
        address: Annotated[str | None, typer.Option("--address", help="Temporal address.")] = None,
        namespace: Annotated[str | None, typer.Option("--namespace", help="Temporal namespace.")] = None,
    ) -> None:
        """Cancel, terminate, pause or resume every open run of a tenant matching the filter."""
        dp = await connect(address, namespace)
        result = await dp.bulk(
            action, tenant=tenant, session=session, plan_hash=plan_hash, state=state, dry_run=dry_run
        )
        if as_json:
            sys.stdout.write(json.dumps(result.model_dump(), indent=2) + "\n")
        elif dry_run:
            out.print(f"{action} would reach {result.matched} run(s) of tenant {tenant}", highlight=False)
        else:
            out.print(
                f"{action}: {result.affected} of {result.matched} run(s) ({result.failed} failed, "
                f"{result.strategy}, {result.state})",
                highlight=False,
            )


# `duraplan usage` and `duraplan bulk`, loaded when used (duraplan.lazy): wired to the CLI's
# error-handling wrapper and connection, which are loaded by then.
app = typer.Typer()


def _wire() -> None:
    from duraplan.cli import _dp, command

    register(app, command, _dp)


_wire()
