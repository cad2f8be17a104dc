"""N concurrent waiting runs, duraplan beside hand-written waiters, in one script run.

Each side, in turn, on one dev server (SQLite on disk, WAL):

1. a fresh worker **process** (so its memory is that side's alone) serves the side's workflow;
2. N runs are started (at most ``--in-flight`` start calls at once): the start rate;
3. once every run is waiting and held by the worker (its cache allowing), the worker's RSS (``/proc/<pid>/status``);
4. every run is released (duraplan: an event, an update; hand-written: a signal) and awaited:
   the release rate, and that every run completed with its own payload (none lost).

duraplan's runs are one ``wait_for_event`` step; the hand-written ones a ``workflow.wait_condition``
on a signal. Both workers use the same options (workflow cache size, concurrency). The report
prints the cores other processes kept busy meanwhile: above ~0.25 absolute rates are deflated.

    PYTHONPATH=. .venv/bin/python -m bench.concurrency --n 10000
    PYTHONPATH=. .venv/bin/python -m bench.concurrency --n 200 --quick   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.baseline import RELEASE_SIGNAL, WAITER_WORKFLOW
from bench.harness import _proc_cpu, _server_pids, system_busy_s
from executor.service.client import Duraplan
from executor.service.config import Settings

TENANT = "bench"
PLAN: dict[str, Any] = {
    "name": "bench-waiter",
    "steps": [{"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "2h"}],
    "output": "${steps.go.output}",
}


@dataclass
class SideResult:
    side: str
    n: int
    start_s: float
    starts_per_s: float
    rss_idle_mib: float
    rss_waiting_mib: float
    release_s: float
    released_per_s: float
    completed: int
    lost: int
    worker_cpu_s: float


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- the worker process ------------------------------------------------------------------------


async def serve(side: str, address: str, task_queue: str, home: str, cache: int) -> None:
    """Run one side's worker until stdin closes; prints READY once polling."""
    from temporalio.worker import Worker

    from bench.baseline import WaiterWorkflow
    from bench.harness import bench_runner
    from executor.engine.workflow import PlanWorkflow
    from executor.worker.runner import running_worker

    client = await Client.connect(address)
    options: dict[str, Any] = {"max_cached_workflows": cache, "max_concurrent_workflow_tasks": 100}
    workers: list[Worker] = []
    original_init = Worker.__init__

    def keep(self: Worker, *args: Any, **kwargs: Any) -> None:  # the Worker running_worker builds
        original_init(self, *args, **kwargs)
        workers.append(self)

    Worker.__init__ = keep  # type: ignore[method-assign]
    if side == "duraplan":
        settings = Settings(home=Path(home), task_queue=task_queue)
        async with running_worker(client, settings, **options):
            print("READY", flush=True)
            await answer(workers)
        return
    del PlanWorkflow  # the hand-written side serves only its own workflow
    async with Worker(
        client, task_queue=task_queue, workflows=[WaiterWorkflow], workflow_runner=bench_runner(), **options
    ):
        print("READY", flush=True)
        await answer(workers)


async def answer(workers: list[Any]) -> None:
    """Until stdin closes: each line asks how many runs the worker holds in its cache."""
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        # SDK internals (a benchmark may look): the runs whose first workflow task this worker took
        held = sum(len(w._workflow_worker._running_workflows) for w in workers if w._workflow_worker)
        print(held, flush=True)


@dataclass
class WorkerProcess:
    pid: int
    proc: subprocess.Popen[str]

    async def held(self) -> int:
        """How many runs the worker holds (cached workflow instances)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("held\n")
        self.proc.stdin.flush()
        while True:  # the SDK core may log to the same stdout
            line = (await asyncio.to_thread(self.proc.stdout.readline)).strip()
            if line.isdigit():
                return int(line)
            if not line and self.proc.poll() is not None:
                raise RuntimeError("worker process exited")


@contextlib.asynccontextmanager
async def worker_process(
    side: str, address: str, task_queue: str, home: Path, cache: int
) -> AsyncIterator[WorkerProcess]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.concurrency", "--serve", side, address, task_queue, str(home), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{side} worker did not start: {line!r}")
    try:
        yield WorkerProcess(proc.pid, proc)
    finally:
        proc.stdin.close()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- driving one side --------------------------------------------------------------------------


async def bounded(items: list[Any], in_flight: int, fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(in_flight)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


async def wait_all_waiting(
    client: Client, query: str, n: int, timeout: float, worker: WorkerProcess, cache: int
) -> None:
    """Until the server's visibility counts ``n`` running executions of the side's type and the
    worker holds all ``n`` (their first workflow task done): the server counts a run as soon as it
    is started, long before a busy worker has taken it, and RSS measured then misses those runs."""
    deadline = time.monotonic() + timeout
    count = held = 0
    while time.monotonic() < deadline:
        count = (await client.count_workflows(query)).count
        held = await worker.held()
        if count >= n and held >= min(n, cache):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{count} of {n} runs reached the server, the worker holds {held}, within {timeout} s")


async def settle(pid: int) -> float:
    """The worker's RSS once it stops moving (its cache is filled)."""
    last = rss_mib(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_mib(pid)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


async def run_side(side: str, client: Client, address: str, n: int, in_flight: int, cache: int) -> SideResult:
    task_queue = f"conc-{side}-{uuid.uuid4().hex[:6]}"
    prefix = uuid.uuid4().hex[:6]
    ids = [f"{side[:2]}-{prefix}-{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="duraplan-conc-") as home:
        async with worker_process(side, address, task_queue, Path(home), cache) as worker:
            pid = worker.pid
            await asyncio.sleep(1.0)
            rss_idle = rss_mib(pid)
            cpu0 = _proc_cpu(pid)
            dp = Duraplan(client, Settings(home=Path(home), task_queue=task_queue))

            async def start(run_id: str) -> Any:
                if side == "duraplan":
                    return await dp.submit_plan(PLAN, tenant=TENANT, session="conc", run_id=run_id)
                return await client.start_workflow(
                    WAITER_WORKFLOW, id=f"{TENANT}/{run_id}", task_queue=task_queue, request_eager_start=True
                )

            t0 = time.perf_counter()
            handles = await bounded(ids, in_flight, start)
            start_s = time.perf_counter() - t0
            await wait_all_waiting(
                client, f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'", n, 600, worker, cache
            )
            rss_waiting = await settle(pid)

            async def release(pair: tuple[str, Any]) -> Any:
                run_id, handle = pair
                if side == "duraplan":
                    await handle.send_event("go", {"id": run_id})
                    return await handle.result()
                wf: WorkflowHandle[Any, Any] = handle
                await wf.signal(RELEASE_SIGNAL, {"id": run_id})
                return await wf.result()

            t1 = time.perf_counter()
            results = await bounded(list(zip(ids, handles, strict=True)), in_flight, release)
            release_s = time.perf_counter() - t1
            completed = sum(1 for run_id, r in zip(ids, results, strict=True) if r == {"id": run_id})
            return SideResult(
                side=side,
                n=n,
                start_s=round(start_s, 2),
                starts_per_s=round(n / start_s, 1),
                rss_idle_mib=round(rss_idle, 1),
                rss_waiting_mib=round(rss_waiting, 1),
                release_s=round(release_s, 2),
                released_per_s=round(n / release_s, 1),
                completed=completed,
                lost=n - completed,
                worker_cpu_s=round(_proc_cpu(pid) - cpu0, 1),
            )


async def main(n: int, in_flight: int, cache: int, out: Path | None) -> None:
    from executor.service.devserver import DevServer

    with tempfile.TemporaryDirectory(prefix="duraplan-conc-server-") as tmp:
        async with DevServer(Path(tmp), port=0, ui=False, db_file=Path(tmp) / "temporal.db") as server:
            busy0, wall0 = system_busy_s(), time.perf_counter()
            own0 = os.times()
            server_cpu0 = sum(_proc_cpu(p) for p in _server_pids())
            results = []
            for side in ("handwritten", "duraplan"):
                results.append(await run_side(side, server.client, server.address, n, in_flight, cache))
                print(json.dumps(asdict(results[-1])), flush=True)
            wall = time.perf_counter() - wall0
            own = sum(os.times()[:2]) - sum(own0[:2])
            server_cpu = sum(_proc_cpu(p) for p in _server_pids()) - server_cpu0
            workers = sum(r.worker_cpu_s for r in results)
            foreign = max(system_busy_s() - busy0 - own - server_cpu - workers, 0.0) / wall
    hw, dp = results
    print(f"\n{n} concurrent waiting runs; other processes kept {foreign:.2f} cores busy during the run")
    print("| metric | hand-written | duraplan | ratio |")
    print("|---|---:|---:|---:|")
    rows = [
        ("starts/s", hw.starts_per_s, dp.starts_per_s),
        ("worker RSS waiting (MiB)", hw.rss_waiting_mib, dp.rss_waiting_mib),
        ("worker RSS growth (MiB)", hw.rss_waiting_mib - hw.rss_idle_mib, dp.rss_waiting_mib - dp.rss_idle_mib),
        ("released/s (signal vs event)", hw.released_per_s, dp.released_per_s),
        ("worker CPU (s)", hw.worker_cpu_s, dp.worker_cpu_s),
    ]
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a if a else float('nan'):.2f} |")
    print(f"| completed / lost | {hw.completed} / {hw.lost} | {dp.completed} / {dp.lost} | |")
    if out is not None:
        out.write_text(json.dumps({"n": n, "foreign_cores": round(foreign, 2), "sides": [asdict(r) for r in results]}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        side, address, queue, home, cache = sys.argv[2:7]
        asyncio.run(serve(side, address, queue, home, int(cache)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=200, help="start/release calls at once")
    parser.add_argument("--cache", type=int, default=10_000, help="max_cached_workflows of each worker")
    parser.add_argument("--quick", action="store_true", help="n=200")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(main(200 if args.quick else args.n, args.in_flight, args.cache, args.json))
