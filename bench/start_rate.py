"""Start rate: runs started per second, duraplan's ``submit_plan`` beside a hand-written start.

One dev server (SQLite on disk, WAL), no worker (a start is the server accepting the run), at most
``--in-flight`` start calls at once, rounds interleaved so both sides see the same load:

- hand-written: ``client.start_workflow`` of a one-signal waiter with an id and a task queue;
- duraplan: ``Duraplan.submit_plan`` of a one-step ``wait_for_event`` plan (validation, hashing,
  inputs schema, search attributes), without tenancy and with a tenant registry (SQLite) on;
- ``--attributes``: also the hand-written start with the four search attributes duraplan indexes a
  run by (tenant, session, plan hash, plan name), and duraplan with ``search_attributes=False``
  (no listing, no bulk): what indexing runs costs by itself, on each side. A start with any search
  attribute costs the dev server about as much more as one with four (0, 1, 2 and 4 attributes,
  10 interleaved rounds: 5.28, 5.78, 5.50, 5.80 ms of server CPU per start; the visibility row's
  SQLite insert is not where it goes: in C SQLite it costs the same with or without them).

Each cell also prints CPU per start: this process's (the client: Python and the SDK's threads) and
the dev server's (``/proc``), which load from other processes skews far less than starts/s.

``--profile`` prints where the duraplan side's own time goes (cProfile, in-process).

    PYTHONPATH=. .venv/bin/python -m bench.start_rate --n 400 [--attributes]
    PYTHONPATH=. .venv/bin/python -m bench.start_rate --n 100 --rounds 1 --profile   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.baseline import WAITER_WORKFLOW
from bench.harness import ForeignLoad, cpu_snapshot, dev_server
from executor.engine.contract import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_TENANT
from executor.service.client import Duraplan
from executor.service.config import Settings
from executor.service.tenants import TenantRegistry

TENANT = "bench"
PLAN: dict[str, Any] = {
    "name": "bench-waiter",
    "steps": [{"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "2h"}],
    "output": "${steps.go.output}",
}


async def rate(n: int, in_flight: int, start: Callable[[str], Awaitable[Any]]) -> tuple[float, float, float]:
    """(starts per second, client CPU ms per start, dev server CPU ms per start)."""
    sem = asyncio.Semaphore(in_flight)
    prefix = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        async with sem:
            await start(f"sr-{prefix}-{i}")

    client0, server0 = cpu_snapshot()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    client1, server1 = cpu_snapshot()
    return n / wall, (client1 - client0) * 1000 / n, (server1 - server0) * 1000 / n


async def main(n: int, in_flight: int, rounds: int, profile: bool, attributes: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="duraplan-start-") as tmp:
        home = Path(tmp)
        async with dev_server(home, []) as (client, label, _pid):
            queue = f"start-{uuid.uuid4().hex[:6]}"
            settings = Settings(home=home, task_queue=queue)
            registry = TenantRegistry(home / "tenants.db")
            registry.create(TENANT)
            plain = Duraplan(client, settings)
            tenanted = Duraplan(client, settings, tenants=registry)
            unindexed = Duraplan(client, Settings(home=home, task_queue=queue, search_attributes=False))

            async def hand_written(run_id: str) -> Any:
                return await client.start_workflow(WAITER_WORKFLOW, id=f"{TENANT}/{run_id}", task_queue=queue)

            indexed = TypedSearchAttributes(
                [
                    SearchAttributePair(SA_TENANT, TENANT),
                    SearchAttributePair(SA_SESSION, "start"),
                    SearchAttributePair(SA_PLAN_HASH, "sha256:" + "0" * 64),
                    SearchAttributePair(SA_PLAN_NAME, PLAN["name"]),
                ]
            )

            async def hand_written_indexed(run_id: str) -> Any:
                return await client.start_workflow(
                    WAITER_WORKFLOW, id=f"{TENANT}/{run_id}", task_queue=queue, search_attributes=indexed
                )

            def duraplan_side(dp: Duraplan) -> Callable[[str], Awaitable[Any]]:
                async def start(run_id: str) -> Any:
                    return await dp.submit_plan(PLAN, tenant=TENANT, session="start", run_id=run_id)

                return start

            sides = {
                "hand-written": hand_written,
                **({"hand-written + 4 search attributes": hand_written_indexed} if attributes else {}),
                "duraplan": duraplan_side(plain),
                "duraplan + tenancy": duraplan_side(tenanted),
                **({"duraplan without search attributes": duraplan_side(unindexed)} if attributes else {}),
            }
            for start in sides.values():  # warm the connection, the server and each side's caches
                await rate(20, in_flight, start)
            results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in sides}
            profiler = cProfile.Profile() if profile else None
            load = ForeignLoad()
            for _ in range(rounds):
                for side, start in sides.items():
                    if profiler is not None and side.startswith("duraplan"):
                        profiler.enable()
                    results[side].append(await rate(n, in_flight, start))
                    if profiler is not None:
                        profiler.disable()
            foreign = load.cores()
            registry.close()

    def p50(side: str, i: int) -> float:
        return statistics.median(r[i] for r in results[side])

    hw = p50("hand-written", 0)
    print(f"\n{label}; {n} starts per cell, {in_flight} in flight, {rounds} round(s)")
    print("| side | starts/s (p50 of rounds) | ratio to hand-written | client CPU ms/start | server CPU ms/start |")
    print("|---|---:|---:|---:|---:|")
    for side in results:
        print(f"| {side} | {p50(side, 0):.0f} | {p50(side, 0) / hw:.2f} | {p50(side, 1):.2f} | {p50(side, 2):.2f} |")
    print(f"other processes kept {foreign:.2f} cores busy meanwhile")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.start_rate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--in-flight", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--attributes", action="store_true", help="also hand-written starts with duraplan's search attributes"
    )
    args = ap.parse_args()
    asyncio.run(main(args.n, args.in_flight, args.rounds, args.profile, args.attributes))
