"""What the suggested fixes would buy: duraplan with them prototyped at run time, next to as-is.

    PYTHONPATH=. .venv/bin/python -m bench.whatif [--samples N] [--throughput-runs N]

Nothing in executor/ is edited. The fixes are monkeypatched *inside this process only*, and only
for runs whose run id starts with ``fx<digits>`` (so as-is and fixed runs interleave on one
worker); ``--each`` also measures every fix alone, and ``Settings(search_attributes=False)``:

- F1 ``RunHandle.result()`` without the DescribeWorkflowExecution before the long poll
- F2 the plan's ``inputs`` JSON Schema checked against the metaschema once per distinct schema
- F3 no UpsertWorkflowSearchAttributes(DuraplanStatus) when the run completes
  (ExecutionStatus already says it; ``list_runs`` reads it for closed runs)
- F4 start without the memo and without DuraplanStatus=running (tenant, session, plan hash and
  name stay): what the start RPC costs with fewer start options
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import functools
import json
import statistics
import time
from typing import Any

import jsonschema
from rich.console import Console
from rich.table import Table
from temporalio.client import StartWorkflowInput
from temporalio.common import TypedSearchAttributes

import executor.lang.validate as dp_validate
from bench.harness import (
    MARKS,
    TENANT,
    Bench,
    Sample,
    bench_env,
    chain_plan,
    cpu_snapshot,
    run_baseline,
    run_duraplan,
    throughput,
)
from executor.engine.workflow import PlanWorkflow
from executor.service.client import Duraplan
from executor.service.config import SA_STATUS

console = Console(width=160)
FIXES: contextvars.ContextVar[str] = contextvars.ContextVar("FIXES", default="")
ALL_FIXES = "1234"


def _fixes_of(run_id: str) -> str:
    """Run ids of patched runs start with ``fx<fix digits>-``."""
    tag = run_id.split("-", 1)[0]
    return tag[2:] if tag.startswith("fx") else ""


# ---- the prototyped fixes ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _schema_ok(canonical: str) -> bool:
    try:
        jsonschema.Draft202012Validator.check_schema(json.loads(canonical))
    except jsonschema.SchemaError:
        return False
    return True


def install() -> None:
    checker = dp_validate._Checker
    orig_json_schema = checker._json_schema

    def _json_schema(self: Any, schema: dict[str, Any], ptr: str, sid: str | None) -> None:  # F2
        if "2" in FIXES.get() and _schema_ok(json.dumps(schema, sort_keys=True)):
            return
        orig_json_schema(self, schema, ptr, sid)

    checker._json_schema = _json_schema  # type: ignore[method-assign]

    orig_set_state = PlanWorkflow._set_state

    def _set_state(self: Any, state: str) -> None:  # F3
        if "3" in _fixes_of(self.inp.run_id) and state == "completed":
            self.state = state
            return
        orig_set_state(self, state)

    PlanWorkflow._set_state = _set_state  # type: ignore[method-assign]


def f4_rewrite(input: StartWorkflowInput) -> None:  # F4, as a client interceptor hook
    if "4" not in _fixes_of(input.id.split("/", 1)[-1]):
        return
    input.memo = None
    if input.search_attributes is not None and isinstance(input.search_attributes, TypedSearchAttributes):
        input.search_attributes = TypedSearchAttributes(
            [p for p in input.search_attributes.search_attributes if p.key.name != SA_STATUS.name]
        )


async def run_fixed(bench: Bench, plan: dict[str, Any], fixes: str = ALL_FIXES) -> Sample:
    run_id = bench.run_id(f"fx{fixes}")
    token = FIXES.set(fixes)
    try:
        t0 = time.perf_counter()
        handle = await bench.dp.submit_plan(plan, tenant=TENANT, session="bench", inputs={"x": 1}, run_id=run_id)
        t1 = time.perf_counter()
        if "1" in fixes:
            result = await bench.client.get_workflow_handle(f"{TENANT}/{run_id}").result()  # F1
        else:
            result = await handle.result()
        t2 = time.perf_counter()
    finally:
        FIXES.reset(token)
    assert result == {"value": 1}, result
    marks = MARKS.pop(run_id, None)
    return Sample(t1 - t0, (marks[0] - t0) if marks else float("nan"), t2 - t0)


# ---- measurement -------------------------------------------------------------------------------

SYSTEMS = ("hand-written", "duraplan", "duraplan+fixes")
EACH = ("hand-written", "duraplan", "+F1", "+F2", "+F3", "+F4", "no search attrs", "duraplan+fixes")


async def one(bench: Bench, system: str, steps: int, strategy: str) -> Sample:
    if system == "hand-written":
        return await run_baseline(bench, steps, strategy == "local")
    if system == "duraplan":
        return await run_duraplan(bench, chain_plan(steps, strategy))
    if system == "no search attrs":  # a supported setting, not a patch: no attributes, no upserts
        as_is = bench.dp
        bench.dp = Duraplan(as_is.client, dataclasses.replace(as_is.settings, search_attributes=False), as_is.registry)
        try:
            return await run_duraplan(bench, chain_plan(steps, strategy))
        finally:
            bench.dp = as_is
    fixes = system.removeprefix("+F") if system.startswith("+F") else ALL_FIXES
    return await run_fixed(bench, chain_plan(steps, strategy), fixes)


async def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.whatif")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--throughput-runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2, help="throughput bursts per system and strategy")
    ap.add_argument("--each", action="store_true", help="also each fix alone (local 1-step only)")
    args = ap.parse_args()
    install()
    systems = EACH if args.each else SYSTEMS
    cells = (("local", 1),) if args.each else (("local", 1), ("local", 3), ("remote", 1))
    strategies = ("local",) if args.each else ("local", "remote")
    lat: dict[str, dict[str, list[Sample]]] = {s: {} for s in systems}
    thr: dict[str, dict[str, list[dict[str, float]]]] = {s: {"local": [], "remote": []} for s in systems}
    async with bench_env(intercept=True) as bench:
        bench.probe.rewrite = f4_rewrite
        for strategy, steps in cells:
            cell = f"{strategy}/{steps}"
            for system in systems:
                lat[system][cell] = []
                for _ in range(5):
                    await one(bench, system, steps, strategy)
            for i in range(args.samples):
                order = systems if i % 2 == 0 else tuple(reversed(systems))
                for system in order:
                    lat[system][cell].append(await one(bench, system, steps, strategy))
            console.log(f"latency {cell} done")
        for strategy in strategies:
            for r in range(args.rounds):
                order = systems if r % 2 == 0 else tuple(reversed(systems))
                for system in order:
                    own0, srv0 = cpu_snapshot()
                    rate = await throughput(
                        functools.partial(one, bench, system, 1, strategy), args.throughput_runs, 50
                    )
                    own1, srv1 = cpu_snapshot()
                    n = args.throughput_runs
                    thr[system][strategy].append(
                        {"rate": rate, "own": (own1 - own0) * 1e3 / n, "server": (srv1 - srv0) * 1e3 / n}
                    )
            console.log(f"throughput {strategy} done")

    t = Table(title="as-is vs with fixes F1-F4 (p50 ms; throughput: median of bursts)")
    t.add_column("metric")
    for s in systems:
        t.add_column(s, justify="right")
    t.add_column("fixes/hand-written", justify="right")
    for cell in lat["duraplan"]:
        for field, label in (
            ("submit_s", "submit call"),
            ("first_step_s", "first step running"),
            ("e2e_s", "end-to-end"),
        ):
            vals = [statistics.median(getattr(x, field) for x in lat[s][cell]) * 1e3 for s in systems]
            t.add_row(f"{label}, {cell}", *(f"{v:.1f}" for v in vals), f"{vals[-1] / vals[0]:.2f}")
    for strategy in strategies if args.rounds else ():
        for key, label in (("rate", "runs/s"), ("own", "CPU ms/run worker+client"), ("server", "CPU ms/run server")):
            vals = [statistics.median(x[key] for x in thr[s][strategy]) for s in systems]
            t.add_row(f"{label}, {strategy} 1-step", *(f"{v:.1f}" for v in vals), f"{vals[-1] / vals[0]:.2f}")
    console.print(t)


if __name__ == "__main__":
    asyncio.run(main())
