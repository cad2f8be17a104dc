"""Workflow-side CPU per run, without a server: replay recorded histories many times.

    PYTHONPATH=. .venv/bin/python -m bench.replay_cost [--replays N] [--profile]

Records one history per (system, strategy, plan size) on a dev server, stops it, then replays each
history N times (5 blocks; the best block counts) with the worker's sandboxed runner. Replay runs
the activations a live worker runs (sandbox instance creation, input decoding, every workflow
task), so the workflow-thread CPU per replay is the workflow-side cost of one run, free of server
and network. (Wall and process CPU also include the replayer's own per-history cost.)
``--profile`` adds a cProfile of the duraplan and hand-written replays (top functions, own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import time
from collections.abc import AsyncIterator

from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from bench.baseline import BaselineWorkflow
from bench.harness import bench_env, bench_runner, chain_plan, run_baseline, run_duraplan
from bench.overhead import TIMINGS, timing_runner
from executor.engine.workflow import PlanWorkflow

console = Console(width=160)
SIZES: tuple[int, ...] = (1, 3, 10)  # --sizes changes it


async def record() -> dict[str, WorkflowHistory]:
    out: dict[str, WorkflowHistory] = {}
    async with bench_env() as bench:
        for strategy in ("local", "remote"):
            for steps in SIZES:
                for system in ("duraplan", "hand-written"):
                    if system == "duraplan":
                        await run_duraplan(bench, chain_plan(steps, strategy))
                    else:
                        await run_baseline(bench, steps, strategy == "local")
                    handle = bench.client.get_workflow_handle(f"bench/{bench.last_run_id}")
                    out[f"{strategy}/{steps}/{system}"] = await handle.fetch_history()
    return out


async def _repeat(history: WorkflowHistory, n: int) -> AsyncIterator[WorkflowHistory]:
    for _ in range(n):
        yield history


async def replay(history: WorkflowHistory, n: int, replayer: Replayer, blocks: int = 5) -> dict[str, float]:
    """Per replay, the best of ``blocks`` blocks of n/blocks replays (the least disturbed by others)."""
    per = max(n // blocks, 1)
    best: dict[str, float] = {}
    for _ in range(blocks):
        TIMINGS.clear()
        c0, t0 = os.times(), time.perf_counter()
        results = await replayer.replay_workflows(_repeat(history, per))
        wall = time.perf_counter() - t0
        c1 = os.times()
        assert not results.replay_failures, results.replay_failures
        timings = list(TIMINGS.values())
        block = {
            "wall_ms": wall * 1e3 / per,
            "process_cpu_ms": ((c1.user + c1.system) - (c0.user + c0.system)) * 1e3 / per,
            "activation_cpu_ms": statistics.median(t.act_cpu_s for t in timings) * 1e3,
            "create_instance_ms": statistics.median(t.create_s for t in timings) * 1e3,
            "activations": statistics.median(t.activations for t in timings),
        }
        for k, v in block.items():
            best[k] = min(best.get(k, v), v)
    return best


def top(profile: cProfile.Profile, n: int = 30) -> str:
    s = io.StringIO()
    pstats.Stats(profile, stream=s).sort_stats("tottime").print_stats(n)
    return s.getvalue()


async def main() -> None:
    global SIZES
    ap = argparse.ArgumentParser(prog="python -m bench.replay_cost")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sizes", default="1,3,10", help="plan sizes in steps, e.g. 10,100")
    args = ap.parse_args()
    SIZES = tuple(int(n) for n in args.sizes.split(","))
    histories = await record()
    console.log(f"recorded {len(histories)} histories")
    # TimingRunner: the worker's sandboxed runner, with every activation timed in its thread
    replayer = Replayer(workflows=[PlanWorkflow, BaselineWorkflow], workflow_runner=timing_runner())
    # debug mode runs activations on this thread, where cProfile sees them
    plain = Replayer(workflows=[PlanWorkflow, BaselineWorkflow], workflow_runner=bench_runner(), debug_mode=True)
    for h in histories.values():  # warm-up
        await replay(h, 5, replayer)
    table = Table(title=f"workflow-side cost per run, replayed {args.replays}x (ms)")
    for c in (
        "cell",
        "wall / replay",
        "process CPU / replay",
        "workflow-thread CPU",
        "create instance",
        "#activations",
    ):
        table.add_column(c, justify="left" if c == "cell" else "right")
    rows: dict[str, dict[str, float]] = {}
    for key, h in histories.items():
        rows[key] = r = await replay(h, args.replays, replayer)
        table.add_row(
            key,
            f"{r['wall_ms']:.2f}",
            f"{r['process_cpu_ms']:.2f}",
            f"{r['activation_cpu_ms']:.2f}",
            f"{r['create_instance_ms']:.2f}",
            f"{r['activations']:.0f}",
        )
    console.print(table)
    for strategy in ("local", "remote"):
        for steps in SIZES:
            dp, hw = rows[f"{strategy}/{steps}/duraplan"], rows[f"{strategy}/{steps}/hand-written"]
            console.print(
                f"{strategy:6} {steps:>2}-step: duraplan - hand-written = "
                f"{dp['wall_ms'] - hw['wall_ms']:+.2f} ms wall, {dp['process_cpu_ms'] - hw['process_cpu_ms']:+.2f} ms "
                f"process CPU, {dp['activation_cpu_ms'] - hw['activation_cpu_ms']:+.2f} ms workflow-thread CPU per run"
            )
    if args.profile:
        for system in ("duraplan", "hand-written"):
            prof = cProfile.Profile()
            cell = f"local/{max(SIZES)}/{system}"
            h = histories[cell]
            prof.enable()
            await plain.replay_workflows(_repeat(h, args.replays))
            prof.disable()
            console.rule(f"cProfile, {args.replays} replays of {cell} (sorted by own time)")
            print(top(prof))


if __name__ == "__main__":
    asyncio.run(main())
