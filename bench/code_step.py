"""Code step start: a one-step code run end to end, minus the same run with a local tool step.

Both plans take ``input.x`` and return ``{"value": x}``: one with ``debug.echo`` as a local tool
step, one with a code step (the sandbox). Runs alternate, one at a time, after a warm-up, each
once the worker's sandbox has settled (spares started, the last step's process gone); the
difference of the p50s is what starting a sandboxed code step costs over calling a tool, warm.

End to end is what the target is stated in, and on a shared machine it is noisy (the sandbox's
worker processes start and exit on the same cores). So the bench also prints the two activities'
own wall time (a worker interceptor, same runs), which isolates the step from everything around it,
and the CPU the sandbox's processes used per code step (started ahead or not, each step costs one).

    PYTHONPATH=. .venv/bin/python -m bench.code_step --samples 60
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections import defaultdict
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from bench.harness import ForeignLoad, bench_env, run_duraplan

TOOL_PLAN: dict[str, Any] = {
    "name": "bench-tool-step",
    "steps": [{"id": "s", "kind": "tool", "tool": "debug.echo", "args": {"value": "${input.x}"}, "execution": "local"}],
    "output": "${steps.s.output}",
}
CODE_PLAN: dict[str, Any] = {
    "name": "bench-code-step",
    "steps": [{"id": "s", "kind": "code", "code": "{'value': x}", "inputs": {"x": "${input.x}"}, "execution": "local"}],
    "output": "${steps.s.output}",
}


class ActivityTimer(Interceptor):
    """Wall time of each activity execution, by activity type (local activities included)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TimedActivity(next, self)


class _TimedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, timer: ActivityTimer) -> None:
        super().__init__(next)
        self.timer = timer

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute_activity(input)
        finally:
            self.timer.seconds[activity.info().activity_type].append(time.perf_counter() - started)


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: the sandbox's workers
    return usage.ru_utime + usage.ru_stime


async def main(samples: int, warmup: int) -> None:
    timer = ActivityTimer()
    async with bench_env(worker_options={"interceptors": [timer]}) as bench:
        for _ in range(warmup):
            await run_duraplan(bench, TOOL_PLAN)
            await run_duraplan(bench, CODE_PLAN)
        timer.seconds.clear()
        load = ForeignLoad()
        host_cpu, sandbox_cpu = time.process_time(), children_cpu()
        tool: list[float] = []
        code: list[float] = []
        for i in range(samples):
            order = (TOOL_PLAN, CODE_PLAN) if i % 2 == 0 else (CODE_PLAN, TOOL_PLAN)
            for plan in order:
                # Warm: each run finds the worker settled (the last code step's process retired and
                # its replacement spare started), as a worker between requests does.
                assert bench.sandbox is not None
                await bench.sandbox.settled()
                sample = await run_duraplan(bench, plan)
                (tool if plan is TOOL_PLAN else code).append(sample.e2e_s)
        foreign = load.cores()
        host_cpu, sandbox_cpu = time.process_time() - host_cpu, children_cpu() - sandbox_cpu
    tool_activity, code_activity = timer.seconds["duraplan.tool"], timer.seconds["duraplan.code"]
    print(f"\n{samples} runs each, one at a time; other processes kept {foreign:.2f} cores busy")
    print("| run | end to end p50 (ms) | its activity p50 (ms) |")
    print("|---|---:|---:|")
    print(f"| local tool step | {p50_ms(tool):.2f} | {p50_ms(tool_activity):.2f} |")
    print(f"| code step | {p50_ms(code):.2f} | {p50_ms(code_activity):.2f} |")
    print(f"code step start (code - tool, p50): {p50_ms(code) - p50_ms(tool):.2f} ms end to end, ", end="")
    print(f"{p50_ms(code_activity) - p50_ms(tool_activity):.2f} ms in the activity")
    print(f"CPU: sandbox processes {sandbox_cpu / samples * 1000:.2f} ms per code step; ", end="")
    print(f"this process {host_cpu / samples / 2 * 1000:.2f} ms per run")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.code_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main(args.samples, args.warmup))
