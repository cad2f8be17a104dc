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

A/B in one run: ``--variants native,bash+cold --rounds 2`` measures each variant (the launcher form,
executor/worker/launcher.py; ``+cold``: spares not warmed up, executor/worker/spares.py) in turn, the
whole list ``--rounds`` times over, and ends with one row per variant (the median of its rounds).
``--sandbox-only`` measures ``Sandbox.run`` alone the same way, without a server (steadier on a busy
machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from bench.harness import ForeignLoad, bench_env, run_duraplan
from executor.worker import spares
from executor.worker.sandbox import Sandbox, SandboxLimits

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


@dataclass(frozen=True)
class Result:
    e2e_ms: float  # code - tool, p50
    activity_ms: float  # the same, inside the activities
    sandbox_cpu_ms: float  # the sandbox's processes, per code step
    host_cpu_ms: float  # this process, a code run's CPU minus a tool run's
    foreign_cores: float


@contextlib.contextmanager
def _variant(name: str) -> Iterator[dict[str, Any]]:
    """Sandbox options (and the spares' warm-up switch) for a variant named ``<launcher>[+cold]``."""
    launcher, _, cold = name.partition("+")
    if launcher not in ("native", "bash", "sh", "default") or cold not in ("", "cold"):
        raise SystemExit(f"unknown variant {name!r}: <native|bash|sh|default>[+cold]")
    saved = spares.WARM_UP
    spares.WARM_UP = not cold
    try:
        yield {} if launcher == "default" else {"launcher": launcher}
    finally:
        spares.WARM_UP = saved


async def main(samples: int, warmup: int, variant: str = "default") -> Result:
    timer = ActivityTimer()
    with _variant(variant) as options:
        return await _measure(samples, warmup, timer, options)


async def _measure(samples: int, warmup: int, timer: ActivityTimer, options: dict[str, Any]) -> Result:
    async with bench_env(worker_options={"interceptors": [timer]}, sandbox_options=options) as bench:
        assert bench.sandbox is not None
        print(f"\nlauncher: {bench.sandbox.launcher}; spares warmed up: {spares.WARM_UP}")
        for _ in range(warmup):
            await run_duraplan(bench, TOOL_PLAN)
            await run_duraplan(bench, CODE_PLAN)
        timer.seconds.clear()
        load = ForeignLoad()
        sandbox_cpu = children_cpu()
        tool: list[float] = []
        code: list[float] = []
        host_cpu = {"tool": 0.0, "code": 0.0}  # this process, per kind of run
        for i in range(samples):
            order = (TOOL_PLAN, CODE_PLAN) if i % 2 == 0 else (CODE_PLAN, TOOL_PLAN)
            for plan in order:
                # Warm: each run finds the worker settled (the last code step's process retired and
                # its replacement spare started), as a worker between requests does.
                assert bench.sandbox is not None
                await bench.sandbox.settled()
                started = time.process_time()
                sample = await run_duraplan(bench, plan)
                # The code step's worker retired and its replacement started: that CPU is the step's too.
                await bench.sandbox.settled()
                host_cpu["tool" if plan is TOOL_PLAN else "code"] += time.process_time() - started
                (tool if plan is TOOL_PLAN else code).append(sample.e2e_s)
        foreign = load.cores()
        sandbox_cpu = children_cpu() - sandbox_cpu
        host_tool_ms, host_code_ms = (host_cpu[k] / samples * 1000 for k in ("tool", "code"))
    tool_activity, code_activity = timer.seconds["duraplan.tool"], timer.seconds["duraplan.code"]
    print(f"\n{samples} runs each, one at a time; other processes kept {foreign:.2f} cores busy")
    print("| run | end to end p50 (ms) | its activity p50 (ms) |")
    print("|---|---:|---:|")
    print(f"| local tool step | {p50_ms(tool):.2f} | {p50_ms(tool_activity):.2f} |")
    print(f"| code step | {p50_ms(code):.2f} | {p50_ms(code_activity):.2f} |")
    print(f"code step start (code - tool, p50): {p50_ms(code) - p50_ms(tool):.2f} ms end to end, ", end="")
    print(f"{p50_ms(code_activity) - p50_ms(tool_activity):.2f} ms in the activity")
    print(f"CPU: sandbox processes {sandbox_cpu / samples * 1000:.2f} ms per code step; this process ", end="")
    print(
        f"{host_tool_ms:.2f} ms per tool run, {host_code_ms:.2f} ms per code run ({host_code_ms - host_tool_ms:+.2f})"
    )
    return Result(
        p50_ms(code) - p50_ms(tool),
        p50_ms(code_activity) - p50_ms(tool_activity),
        sandbox_cpu / samples * 1000,
        host_code_ms - host_tool_ms,
        foreign,
    )


async def sandbox_only(samples: int, variants: list[str], rounds: int) -> None:
    """``Sandbox.run`` alone, no server: the step's path inside the activity, and the CPU per step of
    the sandbox's processes and of this one (the worker's spawn, retirement and refill included)."""
    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for _ in range(rounds):
        for variant in variants:
            with _variant(variant) as options:
                async with Sandbox(**options) as sandbox:
                    await sandbox.settled()
                    times: list[float] = []
                    sandbox_cpu, host_cpu = children_cpu(), time.process_time()
                    for i in range(samples):
                        await sandbox.settled()
                        started = time.perf_counter()
                        await sandbox.run("{'value': x}", {"x": i}, SandboxLimits())
                        times.append(time.perf_counter() - started)
                    await sandbox.settled()
                    sandbox_cpu, host_cpu = children_cpu() - sandbox_cpu, time.process_time() - host_cpu
            rows[variant].append((p50_ms(times), sandbox_cpu / samples * 1000, host_cpu / samples * 1000))
    print(f"\nSandbox.run alone, {rounds} round(s) of {samples} steps per variant, medians over the rounds")
    print(
        "| variant | Sandbox.run p50 (ms) | sandbox processes' CPU per step (ms) | this process's CPU per step (ms) |"
    )
    print("|---|---:|---:|---:|")
    for variant, results in rows.items():
        cells = [statistics.median(r[i] for r in results) for i in range(3)]
        print(f"| {variant} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


async def compare(samples: int, warmup: int, variants: list[str], rounds: int) -> None:
    results: dict[str, list[Result]] = defaultdict(list)
    for _ in range(rounds):
        for variant in variants:
            results[variant].append(await main(samples, warmup, variant))
    if len(variants) * rounds == 1:
        return
    print(f"\n{rounds} round(s) of {samples} runs per variant, medians over the rounds")
    print("| variant | code step start, end to end (ms) | in the activity (ms) | sandbox CPU per step (ms) ", end="")
    print("| host CPU, code run - tool run (ms) | other processes (cores) |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, rows in results.items():
        fields = ("e2e_ms", "activity_ms", "sandbox_cpu_ms", "host_cpu_ms")
        cells = [statistics.median(getattr(r, field) for r in rows) for field in fields]
        foreign = statistics.median(r.foreign_cores for r in rows)
        print(f"| {variant} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {foreign:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.code_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", default="default", help="comma-separated <native|bash|sh|default>[+cold]")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sandbox-only", action="store_true", help="Sandbox.run alone, without a server")
    args = ap.parse_args()
    if args.sandbox_only:
        asyncio.run(sandbox_only(args.samples, args.variants.split(","), args.rounds))
    else:
        asyncio.run(compare(args.samples, args.warmup, args.variants.split(","), args.rounds))
