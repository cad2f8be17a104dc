"""CPU per run, duraplan vs the hand-written workflow: worker and client in this process.

    PYTHONPATH=. .venv/bin/python -m bench.run_cpu [--runs N] [--rounds N] [--sizes 1,10]
                                                   [--profile PATH] [--profile-side dp|hw]

Runs one at a time (as bench.latency's end-to-end cells do), local tool steps (``debug.echo``),
the two sides in alternating bursts (ABBA) on one dev server and one worker. CPU, not wall time
(the machine is shared): this process's CPU per run, split by thread — the event loop thread
(client, activities, the worker's Python side), the workflow threads (activations), the SDK core's
threads (Rust) — and the dev server's. ``--profile``: cProfile of the event loop thread and of the
workflow activations for one side's runs, written as a pstats file per thread group.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import time
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails

from bench.harness import (
    Bench,
    bench_env,
    bench_runner,
    chain_plan,
    cpu_snapshot,
    run_baseline,
    run_duraplan,
)
from executor.worker.activation import DetachedStartRunner

console = Console(width=150)
_TICK = os.sysconf("SC_CLK_TCK")
SIDES = ("dp", "hw")


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by group: loop (the main thread), core (tokio), other."""
    out: dict[str, float] = defaultdict(float)
    pid = os.getpid()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        group = "loop" if int(tid) == pid else "core" if comm.startswith("tokio") else "other"
        out[group] += cpu
    return out


# workflow type -> per run: [create instance, first activation, other activations..., ] thread CPU seconds
ACTIVATIONS: dict[str, list[list[float]]] = defaultdict(list)


class _Profiled:
    """Wraps a workflow instance: each activation runs under one shared profiler (runs go one at a
    time), or, without one, has its thread CPU time recorded."""

    profiler: cProfile.Profile | None = None

    def __init__(self, inner: WorkflowInstance, times: list[float]) -> None:
        self._inner = inner
        self._times = times

    def activate(self, act: Any) -> Any:
        prof = _Profiled.profiler
        if prof is None:
            t0 = time.thread_time()
            try:
                return self._inner.activate(act)
            finally:
                self._times.append(time.thread_time() - t0)
        prof.enable()
        try:
            return self._inner.activate(act)
        finally:
            prof.disable()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ProfilingRunner(DetachedStartRunner):
    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        # (not profiled: it runs on the event loop thread, which has a profiler of its own)
        t0 = time.thread_time()
        inner = super().create_instance(det)
        times = [time.thread_time() - t0]
        if det.info.workflow_id != "fake":
            ACTIVATIONS[det.defn.name or "?"].append(times)
        return _Profiled(inner, times)  # type: ignore[return-value]


async def one(bench: Bench, side: str, steps: int) -> float:
    """One run; its end-to-end wall seconds."""
    if side == "dp":
        return (await run_duraplan(bench, chain_plan(steps, "local"))).e2e_s
    return (await run_baseline(bench, steps, True)).e2e_s


async def burst(bench: Bench, side: str, steps: int, runs: int) -> dict[str, float]:
    threads0, (own0, srv0) = thread_cpu(), cpu_snapshot()
    walls = [await one(bench, side, steps) for _ in range(runs)]
    threads1, (own1, srv1) = thread_cpu(), cpu_snapshot()
    out = {f"{k}_ms": (threads1[k] - threads0[k]) * 1e3 / runs for k in ("loop", "other", "core")}
    out["wall_p50_ms"] = statistics.median(walls) * 1e3
    out["process_ms"] = (own1 - own0) * 1e3 / runs
    out["server_ms"] = (srv1 - srv0) * 1e3 / runs
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sizes = tuple(int(s) for s in args.sizes.split(","))
    base = bench_runner()
    runner = ProfilingRunner(restrictions=base.restrictions) if args.profile or args.activations else base
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    async with bench_env(runner=runner) as bench:
        for steps in sizes:  # warm-up: caches, sandbox, pollers
            for side in SIDES:
                for _ in range(args.warmup):
                    await one(bench, side, steps)
        if args.profile:
            side = args.profile_side
            wf, loop = cProfile.Profile(), cProfile.Profile()
            _Profiled.profiler = wf
            loop.enable()
            for steps in sizes:
                for _ in range(args.runs):
                    await one(bench, side, steps)
            loop.disable()
            _Profiled.profiler = None
            wf.dump_stats(f"{args.profile}.workflow")
            loop.dump_stats(f"{args.profile}.loop")
            console.print(f"wrote {args.profile}.workflow and {args.profile}.loop ({side}, sizes {sizes})")
            return {}
        if args.activations:
            for steps in sizes:
                ACTIVATIONS.clear()
                for i in range(args.runs):
                    for side in SIDES if i % 2 == 0 else tuple(reversed(SIDES)):
                        await one(bench, side, steps)
                report_activations(steps)
            return {}
        for steps in sizes:
            cells = results.setdefault(str(steps), {s: [] for s in SIDES})
            for r in range(args.rounds):
                order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
                for side in order:
                    cells[side].append(await burst(bench, side, steps, args.runs))
            console.log(f"{steps}-step done")
    return results


def report_activations(steps: int) -> None:
    t = Table(title=f"workflow thread CPU per run (µs, median), {steps}-step runs: create, activations in order")
    t.add_column("workflow")
    t.add_column("runs", justify="right")
    t.add_column("create", justify="right")
    t.add_column("activations (each)", justify="left")
    t.add_column("total", justify="right")
    rows: dict[str, tuple[list[float], float]] = {}
    for wf, runs in sorted(ACTIVATIONS.items()):
        n = statistics.median(len(r) for r in runs)
        same = [r for r in runs if len(r) == n]
        cols = [statistics.median(r[i] for r in same) * 1e6 for i in range(int(n))]
        total = statistics.median(sum(r) for r in runs) * 1e6
        rows[wf] = cols, total
        t.add_row(wf, str(len(runs)), f"{cols[0]:.0f}", " ".join(f"{c:.0f}" for c in cols[1:]), f"{total:.0f}")
    dp, hw = rows.get("DuraplanRun"), rows.get("BenchBaseline")
    if dp and hw and len(dp[0]) == len(hw[0]):
        diff = [a - b for a, b in zip(dp[0], hw[0], strict=True)]
        t.add_row("dp - hw", "", f"{diff[0]:+.0f}", " ".join(f"{c:+.0f}" for c in diff[1:]), f"{dp[1] - hw[1]:+.0f}")
    console.print(t)


def report(results: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    t = Table(title="CPU ms per run (median of bursts), runs one at a time, local tool steps")
    for c in ("steps", "side", "wall p50", "process", "loop thread", "workflow threads", "core threads", "dev server"):
        t.add_column(c, justify="left" if c in ("steps", "side") else "right")
    for steps, cells in results.items():
        med: dict[str, dict[str, float]] = {}
        for side, rows in cells.items():
            med[side] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            m = med[side]
            t.add_row(
                steps,
                side,
                *(f"{m[k]:.2f}" for k in ("wall_p50_ms", "process_ms", "loop_ms", "other_ms", "core_ms", "server_ms")),
            )
        d, h = med["dp"], med["hw"]
        t.add_row(
            steps,
            "dp - hw",
            *(
                f"{d[k] - h[k]:+.2f}"
                for k in ("wall_p50_ms", "process_ms", "loop_ms", "other_ms", "core_ms", "server_ms")
            ),
        )
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.run_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="runs per burst (default 100)")
    ap.add_argument("--rounds", type=int, default=4, help="bursts per side and size, ABBA (default 4)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sizes", default="1,10")
    ap.add_argument("--profile", metavar="PATH", help="profile instead: pstats files PATH.workflow, PATH.loop")
    ap.add_argument("--activations", action="store_true", help="instead: workflow thread CPU per activation")
    ap.add_argument("--profile-side", choices=SIDES, default="dp")
    args = ap.parse_args()
    results = asyncio.run(measure(args))
    if results:
        report(results)


if __name__ == "__main__":
    main()
