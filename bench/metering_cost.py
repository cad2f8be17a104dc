"""What recording a run's end costs, A/B in one process: engine 1 (a local activity,
``duraplan.meter_run``, in the run's last workflow task) against engine 2 (a memo upsert riding the
final command, folded into the ledger by the reconciler from visibility).

    PYTHONPATH=. .venv/bin/python -m bench.metering_cost [--sizes 1,10] [--runs N] [--rounds N]

Metering on. Each round runs ``--runs`` sequential runs per side and size, sides interleaved
(ABBA...), and reads CPU seconds, not wall time: this process's (worker + client,
``time.process_time``) and the dev server's (``/proc/<pid>/stat``). Side B also pays for the
reconciler: the pass after its block, which lists its runs (and counts the overlap window before
the checkpoint) and writes them, as a worker's pass every few seconds would. Every run end must
be in the ledger at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from rich.console import Console
from rich.table import Table

import executor.service.start as start_path
from bench.harness import TENANT, Bench, bench_env, chain_plan
from bench.harness import cpu_snapshot as _ticks
from executor.service.usage import utc_day


def cpu_snapshot() -> tuple[float, float]:
    """(this process's CPU seconds by ``time.process_time``, finer than os.times' ticks; the dev server's)."""
    return time.process_time(), _ticks()[1]


async def _block(bench: Bench, plan: dict[str, Any], runs: int, engine: int) -> tuple[float, float, float, float]:
    """CPU ms per run (this process, dev server; and of that, the reconciler's) for ``runs`` runs
    started at ``engine``; engine 2 with the reconcile pass that reads them into the ledger."""
    vars(start_path)["ENGINE_VERSION"] = engine  # what the start path stamps on new runs (RunInput.engine)
    assert bench.reconciler is not None
    cpu0, srv0 = cpu_snapshot()
    for _ in range(runs):
        run_id = bench.run_id(f"e{engine}")
        handle = await bench.dp.submit_plan(plan, tenant=TENANT, session="bench", inputs={"x": 1}, run_id=run_id)
        assert await handle.result() == {"value": 1}
    cpu1, srv1 = cpu_snapshot()
    # A pass after every block: engine 1's, not counted, moves the checkpoint past its runs (an
    # engine-1 deployment has no reconciler), so engine 2's pass lists its own runs only.
    stats = await bench.reconciler.reconcile()
    cpu2, srv2 = cpu_snapshot()
    if engine < 2:
        return (cpu1 - cpu0) * 1000 / runs, (srv1 - srv0) * 1000 / runs, 0.0, 0.0
    assert stats.listed > 0, stats
    worker_rec, server_rec = (cpu2 - cpu1) * 1000 / runs, (srv2 - srv1) * 1000 / runs
    return (cpu2 - cpu0) * 1000 / runs, (srv2 - srv0) * 1000 / runs, worker_rec, server_rec


async def main(sizes: list[int], runs: int, rounds: int) -> None:
    console = Console()
    async with bench_env(reconcile_in_background=False) as bench:
        assert bench.reconciler is not None, "metering is off (DURAPLAN_METERING=0): nothing to compare"
        results: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
        for size in sizes:
            plan = chain_plan(size, "local")
            for engine in (1, 2):  # warm-up: imports, caches, the sandbox
                await _block(bench, plan, max(3, runs // 5), engine)
        ledger_before = await bench.dp.usage(tenant=TENANT)
        t0 = time.perf_counter()
        for r in range(rounds):
            for size in sizes:
                plan = chain_plan(size, "local")
                order = (1, 2) if r % 2 == 0 else (2, 1)
                for engine in order:
                    results.setdefault((size, engine), []).append(await _block(bench, plan, runs, engine))
        report = await bench.dp.usage(tenant=TENANT)
        done = report.total.runs_completed - ledger_before.total.runs_completed
        assert done == rounds * len(sizes) * 2 * runs, f"ledger has {done} run ends"
        table = Table(title=f"run-end metering, CPU ms per run ({rounds} rounds x {runs} runs, {utc_day()})")
        for col in ("local steps", "side", "worker+client", "of which reconciler", "dev server", "of which reconciler"):
            table.add_column(col)

        def median(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        for size in sizes:
            a, b = results[(size, 1)], results[(size, 2)]
            # per side: worker, its reconciler share, server, its reconciler share
            cols = [[median([row[i] for row in side]) for i in (0, 2, 1, 3)] for side in (a, b)]
            table.add_row(str(size), "engine 1 (local activity)", *(f"{v:.2f}" for v in cols[0]))
            table.add_row(str(size), "engine 2 (memo + reconciler)", *(f"{v:.2f}" for v in cols[1]))
            table.add_row(
                str(size),
                "ratio 2/1",
                f"{cols[1][0] / cols[0][0]:.2f}",
                "",
                f"{cols[1][2] / cols[0][2]:.2f}",  # server
                "",
            )
        console.print(table)
        console.print(
            "medians of per-round means; engine 2 includes the reconcile pass after its block; "
            f"every run end in the ledger ({done}); {time.perf_counter() - t0:.1f} s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.runs, args.rounds))
