"""A script's per-host-call overhead against an equivalent plan of tool steps, one server, one run.

    PYTHONPATH=. .venv/bin/python -m bench.script_overhead [--calls N] [--runs R] [--json PATH]

Both sides call the same tool (``debug.echo``, the value of one call passed to the next) N times
in a row, all ``execution: local`` and then all ``execution: remote``; runs alternate (plan,
script, plan, script...) so background load hits both alike. The per-call time is the interval
between consecutive ``debug.echo`` starts inside one run (stamped in the tool, bench/harness.py),
so it holds everything between two calls: the workflow's turn, the activity round trip and, for
the script, the sandbox segment (load snapshot, resume, run, dump). The difference of the p50s is what
a script's host call costs over an equivalent tool step (the same measure as bench/code_step.py's for a
code step); the CPU per call of each side (this process, and the sandbox's workers) is printed too.

Then, without a server: the sandbox part alone (snapshot size and time per segment), and the
alternative to carrying snapshots, re-executing the script against the recorded results of its
earlier calls, whose cost per call grows with the number of calls before it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import time
from typing import Any

import pydantic_monty

from bench.harness import MARKS, TENANT, Bench, bench_env, chain_plan
from bench.latency import percentile
from executor.engine.models import ScriptSegment
from executor.worker.sandbox import Sandbox
from executor.worker.script import run_segment

SCRIPT = """
v = x
for i in range(n):
    v = tool('debug.echo', value=v)['value']
{'value': v}
"""


def script_plan(calls: int, execution: str) -> dict[str, Any]:
    step = {"id": "s", "kind": "script", "code": SCRIPT, "inputs": {"x": "${input.x}", "n": calls}}
    return {
        "name": f"bench-script-{calls}-{execution}",
        "steps": [{**step, "execution": execution}],
        "limits": {"max_steps": 20_000},
        "output": "${steps.s.output}",
    }


def _cpu() -> tuple[float, float]:
    """CPU seconds so far: this process (worker, server client, bench), and its reaped children (the
    sandbox's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


async def _intervals(bench: Bench, plan: dict[str, Any], cpu: list[float] | None = None) -> list[float]:
    """The intervals between consecutive tool calls of one run; ``cpu`` (host, sandbox) gains the CPU
    seconds the run used."""
    run_id = bench.run_id("sc")
    before = _cpu()
    handle = await bench.dp.submit_plan(plan, tenant=TENANT, session="bench", inputs={"x": 1}, run_id=run_id)
    assert await handle.result() == {"value": 1}
    if bench.sandbox is not None:
        await bench.sandbox.settled()  # the run's sandbox workers retired: their CPU is counted
    if cpu is not None:
        after = _cpu()
        cpu[0] += after[0] - before[0]
        cpu[1] += after[1] - before[1]
    marks = MARKS.pop(run_id)
    return [b - a for a, b in itertools.pairwise(marks)]


async def engine(calls: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with bench_env() as bench:
        for execution in ("local", "remote"):
            plan, script = chain_plan(calls, execution), script_plan(calls, execution)
            await _intervals(bench, plan)  # warm-up
            await _intervals(bench, script)
            per: dict[str, list[float]] = {"plan": [], "script": []}
            cpu: dict[str, list[float]] = {"plan": [0.0, 0.0], "script": [0.0, 0.0]}
            for _ in range(runs):
                per["plan"] += await _intervals(bench, plan, cpu["plan"])
                per["script"] += await _intervals(bench, script, cpu["script"])
            p50 = {k: percentile(v, 50) * 1000 for k, v in per.items()}
            p95 = {k: percentile(v, 95) * 1000 for k, v in per.items()}
            ratio = p50["script"] / p50["plan"]
            # CPU per call (per tool step on the plan's side): the whole run's, divided by its calls
            cpu_ms = {
                k: {"host": h / (runs * calls) * 1000, "sandbox": c / (runs * calls) * 1000}
                for k, (h, c) in cpu.items()
            }
            out[execution] = {
                "p50_ms": p50,
                "p95_ms": p95,
                "ratio_p50": ratio,
                "host_call_over_tool_step_ms_p50": p50["script"] - p50["plan"],
                "cpu_ms_per_call": cpu_ms,
                "n": len(per["plan"]),
            }
    return out


async def sandbox_only(calls: int) -> dict[str, Any]:
    """Carrying snapshots (one segment per call) vs re-executing against recorded results."""

    async def echo(fn: str, args: list[Any], kwargs: dict[str, Any], index: int) -> Any:
        return {"value": kwargs["value"]}

    async with Sandbox() as sandbox:
        seg = ScriptSegment("t", "r", "s", SCRIPT, {"x": 1, "n": calls}, 0, 1, "k")
        times, sizes = [], []
        while True:
            t0 = time.perf_counter()
            result = await run_segment(sandbox, seg, echo)
            times.append(time.perf_counter() - t0)
            if "done" in result:
                break
            sizes.append(len(result["snapshot"]))
            seg.snapshot, seg.resume, seg.index = result["snapshot"], result["outcome"], seg.index + 1
        replay = {k: await _replay_cost(sandbox, k) for k in (10, 100, 1000) if k <= 1000}
    return {
        "segment_ms_p50": percentile(times, 50) * 1000,
        "segment_ms_p95": percentile(times, 95) * 1000,
        "snapshot_bytes_p50": percentile([float(s) for s in sizes], 50),
        "snapshot_bytes_max": max(sizes),
        "reexecute_ms_for_call_k": replay,
    }


async def _replay_cost(sandbox: Sandbox, k: int) -> float:
    """Time to reach call k by re-running the script from the start, answering the k earlier calls
    from a record (what a re-executing design pays for every call)."""
    from executor.worker.sandbox import SandboxLimits

    async with sandbox.session(SandboxLimits(), max_suspensions=k + 10) as session:
        t0 = time.perf_counter()
        snap: Any = await session.feed_start(SCRIPT, inputs={"x": 1, "n": k + 1})
        for _ in range(k):
            snap = await snap.resume({"return_value": {"value": 1}})
        assert isinstance(snap, pydantic_monty.AsyncFunctionSnapshot)
        return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    engine_result = asyncio.run(engine(args.calls, args.runs))
    load_after = os.getloadavg()
    result = {
        "load_before": load,
        "cpus": os.cpu_count(),
        "engine": engine_result,
        "sandbox": asyncio.run(sandbox_only(args.calls)),
        "load_after": load_after,
    }
    print(json.dumps(result, indent=2))
    print("\n| execution | tool step p50 (ms) | script host call p50 (ms) | host call - tool step (ms) ", end="")
    print("| CPU per tool step: host / sandbox (ms) | CPU per host call: host / sandbox (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for execution, row in engine_result.items():
        cpu = row["cpu_ms_per_call"]
        print(
            f"| {execution} | {row['p50_ms']['plan']:.2f} | {row['p50_ms']['script']:.2f} "
            f"| {row['host_call_over_tool_step_ms_p50']:+.2f} "
            f"| {cpu['plan']['host']:.2f} / {cpu['plan']['sandbox']:.2f} "
            f"| {cpu['script']['host']:.2f} / {cpu['script']['sandbox']:.2f} |"
        )
    print(f"load average before/after: {load[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
