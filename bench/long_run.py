"""Long runs: N steps in one run (continue-as-new as needed), duraplan beside a hand-written loop.

- duraplan: a plan whose ``foreach`` runs ``debug.echo`` (a local tool) once per item, N items,
  ``max_concurrency`` at a time; the engine continues as new whenever history grows.
- hand-written: a workflow that calls the same ``duraplan.tool`` activity as a local activity N
  times, ``--concurrency`` at a time, continuing as new when the server suggests it (or every
  ``HISTORY_LIMIT`` events, duraplan's own threshold).

Both run on one dev server (SQLite on disk, WAL) and one worker in this process. The report gives
wall time, time per step, the number of executions and the largest history of any execution, and
the cores other processes kept busy meanwhile.

    PYTHONPATH=. .venv/bin/python -m bench.long_run --n 100000
    PYTHONPATH=. .venv/bin/python -m bench.long_run --n 2000     # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from executor.engine.models import ToolCall

HISTORY_LIMIT = 8000
LONG_LOOP = "BenchLongLoop"


@dataclass
class LoopInput:
    n: int
    concurrency: int
    done: int = 0
    total: int = 0
    executions: int = 1


@workflow.defn(name=LONG_LOOP)
class LongLoopWorkflow:
    """``n`` local ``debug.echo`` calls, ``concurrency`` at a time, continuing as new as needed."""

    @workflow.run
    async def run(self, inp: LoopInput) -> dict[str, int]:
        once = RetryPolicy(maximum_attempts=1)
        while inp.done < inp.n:
            batch = range(inp.done, min(inp.done + inp.concurrency, inp.n))
            calls = [
                workflow.execute_local_activity(
                    "duraplan.tool",
                    ToolCall("bench", "long", f"each[{i}]", 1, f"bench/long/0/each[{i}]", "debug.echo", {"value": i}),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=once,
                )
                for i in batch
            ]
            for out in await asyncio.gather(*calls):
                inp.total += out["value"]
            inp.done = batch.stop
            info = workflow.info()
            if inp.done < inp.n and (
                info.is_continue_as_new_suggested() or info.get_current_history_length() >= HISTORY_LIMIT
            ):
                inp.executions += 1
                workflow.continue_as_new(inp)
        return {"steps": inp.done, "total": inp.total, "executions": inp.executions}


def duraplan_plan(concurrency: int) -> dict[str, Any]:
    return {
        "name": "bench-long",
        "steps": [
            {"id": "nums", "kind": "code", "code": "list(range(n))", "inputs": {"n": "${input.n}"}},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${steps.nums.output}",
                "max_concurrency": concurrency,
                "steps": [
                    {
                        "id": "echo",
                        "kind": "tool",
                        "tool": "debug.echo",
                        "args": {"value": "${item}"},
                        "execution": "local",
                    }
                ],
                "output": "${steps.echo.output.value}",
            },
            {"id": "total", "kind": "code", "code": "(len(xs), sum(xs))", "inputs": {"xs": "${steps.each.output}"}},
        ],
        "limits": {"max_parallel": concurrency, "max_steps": 1_000_000, "deadline": "2h"},
        "output": "${steps.total.output}",
    }


async def executions(client: Client, workflow_id: str) -> tuple[int, int, int]:
    """(executions, largest history in events, largest history in bytes) of one workflow id's chain."""
    count, most_events, most_bytes = 0, 0, 0
    async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        count += 1
        desc = await client.get_workflow_handle(workflow_id, run_id=wf.run_id).describe()
        most_events = max(most_events, desc.raw_description.workflow_execution_info.history_length)
        most_bytes = max(most_bytes, desc.raw_description.workflow_execution_info.history_size_bytes)
    return count, most_events, most_bytes


async def main(n: int, concurrency: int, out: str | None) -> None:
    from bench.harness import ForeignLoad, bench_env

    async with bench_env(workflows=(LongLoopWorkflow,)) as bench:
        if True:  # one worker serves both sides
            load = ForeignLoad()
            rows: dict[str, dict[str, Any]] = {}
            run_id = bench.run_id("long-hw")
            t0 = time.perf_counter()
            result = await bench.client.execute_workflow(
                LongLoopWorkflow.run,
                LoopInput(n, concurrency),
                id=f"bench/{run_id}",
                task_queue=bench.task_queue,
            )
            wall = time.perf_counter() - t0
            assert result["steps"] == n and result["total"] == n * (n - 1) // 2, result
            execs, events, size = await executions(bench.client, f"bench/{run_id}")
            rows["hand-written"] = {"wall_s": wall, "executions": execs, "max_events": events, "max_bytes": size}

            run_id = bench.run_id("long-dp")
            t0 = time.perf_counter()
            handle = await bench.dp.submit_plan(
                duraplan_plan(concurrency), tenant="bench", session="long", inputs={"n": n}, run_id=run_id
            )
            got = await handle.result(timeout=7200)
            wall = time.perf_counter() - t0
            assert got == [n, n * (n - 1) // 2], got
            execs, events, size = await executions(bench.client, f"bench/{run_id}")
            rows["duraplan"] = {"wall_s": wall, "executions": execs, "max_events": events, "max_bytes": size}
            foreign = load.cores()
    print(f"\n{n} steps per run, {concurrency} at a time; other processes kept {foreign:.2f} cores busy")
    print("| side | wall (s) | per step (ms) | executions | largest history (events / MiB) |")
    print("|---|---:|---:|---:|---:|")
    for side, r in rows.items():
        print(
            f"| {side} | {r['wall_s']:.1f} | {r['wall_s'] / n * 1000:.2f} | {r['executions']} | "
            f"{r['max_events']} / {r['max_bytes'] / 2**20:.2f} |"
        )
    ratio = rows["duraplan"]["wall_s"] / rows["hand-written"]["wall_s"]
    print(f"time per step, duraplan / hand-written: {ratio:.2f}")
    if out:
        with open(out, "w") as f:
            json.dump({"n": n, "concurrency": concurrency, "foreign_cores": foreign, "rows": rows}, f)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.long_run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    asyncio.run(main(args.n, args.concurrency, args.json))
