"""Tools for the worker-kill test, loaded into a worker subprocess via DURAPLAN_TOOL_MODULES."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tools import Tool, ToolContext, ToolRegistry


async def charge_then_hold(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Take effect once (idempotent on the step's key), then hold until a release file appears:
    the test kills the worker while this step is in flight."""
    total = await ctx.store.kv_incr(ctx.tenant, args["key"], idempotency_key=ctx.idempotency_key)
    if "attempt_key" in args:  # where a caller that does not see the answer (an undo) reads the attempt
        await ctx.store.kv_put(ctx.tenant, args["attempt_key"], ctx.attempt)
    release = Path(args["release_file"])
    while not release.exists():
        await asyncio.sleep(0.05)
    return {"total": total, "attempt": ctx.attempt}


async def count_execution(args: dict[str, Any], ctx: ToolContext) -> int:
    """Count every execution, deliberately without an idempotency key: shows a step ran again."""
    return await ctx.store.kv_incr(ctx.tenant, args["key"])


async def hold_local(args: dict[str, Any], ctx: ToolContext) -> str:
    """A local step that says it started, then holds until a release file appears."""
    Path(args["started_file"]).touch()
    release = Path(args["release_file"])
    while not release.exists():
        await asyncio.sleep(0.05)
    return "released"


async def kv_view(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The tenant's whole kv as this worker's store sees it, and which worker (home) looked."""
    keys = await ctx.store.kv_list(ctx.tenant)
    return {"home": os.environ.get("DURAPLAN_HOME"), "kv": {k: await ctx.store.kv_get(ctx.tenant, k) for k in keys}}


def register(registry: ToolRegistry) -> None:
    registry.register(
        Tool(
            name="test.count_local",
            description="Count executions of this step (no idempotency key: every execution counts).",
            args_schema={
                "type": "object",
                "required": ["key"],
                "additionalProperties": False,
                "properties": {"key": {"type": "string"}},
            },
            handler=count_execution,
            local=True,
        )
    )
    registry.register(
        Tool(
            name="test.hold_local",
            description="Touch a file, then wait for another (a local activity in flight).",
            args_schema={
                "type": "object",
                "required": ["started_file", "release_file"],
                "additionalProperties": False,
                "properties": {"started_file": {"type": "string"}, "release_file": {"type": "string"}},
            },
            handler=hold_local,
            local=True,
        )
    )
    registry.register(
        Tool(
            name="test.charge_then_hold",
            description="Increment a counter once per idempotency key, then wait for a file.",
            args_schema={
                "type": "object",
                "required": ["key", "release_file"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "release_file": {"type": "string"},
                    "attempt_key": {"type": "string"},
                },
            },
            handler=charge_then_hold,
            side_effects=True,
            local=False,
        )
    )
    registry.register(
        Tool(
            name="test.kv_view",
            description="Return the tenant's kv and the worker's home.",
            args_schema={"type": "object", "additionalProperties": False, "properties": {}},
            handler=kv_view,
            local=False,  # a regular activity: any worker polling the queue may run it
        )
    )
