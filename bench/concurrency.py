"""N concurrent waiting runs, duraplan beside hand-written waiters, in one script run.

Each side, in turn, on a dev server of its own (SQLite on disk, WAL; a fresh one per side, so
neither faces a database already holding the other side's runs):

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
import ctypes
import gc
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
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
TRACE_ENV = "DURAPLAN_BENCH_TRACEMALLOC"  # set: the worker process traces its allocations
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
    worker_cpu_release_s: float  # of worker_cpu_s, while runs were released


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
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

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
    # A plain sandboxed runner with the same modules passed through: what a hand-written worker
    # runs (duraplan's own runner hands its instances copies of the start activation).
    runner = SandboxedWorkflowRunner(restrictions=bench_runner().restrictions)
    async with Worker(client, task_queue=task_queue, workflows=[WaiterWorkflow], workflow_runner=runner, **options):
        print("READY", flush=True)
        await answer(workers)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def memory_use() -> dict[str, int]:
    """Where the worker's memory is: glibc malloc's bytes in use (the SDK's Rust core, protobuf
    messages, Python objects over 512 bytes) and Python's allocated blocks (pymalloc's and not)."""
    out = {"blocks": sys.getallocatedblocks()}
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out.update(malloc_in_use=info.uordblks + info.hblkhd, malloc_free=info.fordblks)
    return out


async def answer(workers: list[Any]) -> None:
    """Until stdin closes: each line asks how many runs the worker holds in its cache, or (``snap
    PATH``, bench.waiting_slope) for a tracemalloc snapshot of its heap written to PATH."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.startswith("snap "):
            gc.collect()
            if tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(line[5:].strip())
        elif line.startswith("mem"):
            print(json.dumps(memory_use()), flush=True)
            continue
        # SDK internals (a benchmark may look): the runs whose first workflow task this worker took
        held = sum(len(w._workflow_worker._running_workflows) for w in workers if w._workflow_worker)
        print(held, flush=True)


class WorkerProcess:
    """A side's worker process, asked over stdin; answers come back on its stdout.

    The SDK's core logs to the same stdout. A thread reads it all the time (answers to a queue,
    the rest to stderr): read only when asking, a pipe filled by the core's log lines (task
    timeouts under load) blocked the core's thread and hung every run the worker held."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.pid = proc.pid
        self.proc = proc
        self.answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line.isdigit() or line.startswith("{"):
                self.answers.put(line)
            elif line:
                print(line, file=sys.stderr, flush=True)
        self.answers.put(None)  # the worker exited

    async def held(self) -> int:
        """How many runs the worker holds (cached workflow instances)."""
        return int(await self._ask("held"))

    async def snap(self, path: Path) -> int:
        """A full collection in the worker, then its tracemalloc snapshot (if tracing) to ``path``."""
        return int(await self._ask(f"snap {path}"))

    async def memory(self) -> dict[str, int]:
        """The worker's ``memory_use()``."""
        return dict(json.loads(await self._ask("mem")))

    async def _ask(self, request: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        answer = await asyncio.to_thread(self.answers.get, True, 600)
        if answer is None:
            raise RuntimeError("worker process exited")
        return answer


@contextlib.asynccontextmanager
async def worker_process(
    side: str, address: str, task_queue: str, home: Path, cache: int, *, code: Path | None = None, trace: int = 0
) -> AsyncIterator[WorkerProcess]:
    """``code``: a tree whose packages (executor, schemas, ...) the worker imports before this
    one's (bench.waiting_slope's A/B against an older commit); ``trace``: tracemalloc frames."""
    here = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": here if code is None else f"{code}:{here}"}
    if trace:
        env[TRACE_ENV] = str(trace)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.concurrency", "--serve", side, address, task_queue, str(home), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=home,  # not this tree: `-m` puts the working directory before PYTHONPATH (and ``code``)
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{side} worker did not start: {line!r}")
    try:
        yield WorkerProcess(proc)
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


def starter(side: str, client: Client, dp: Duraplan, task_queue: str) -> Callable[[str], Awaitable[Any]]:
    """Starts one run of the side by id; returns its handle."""

    async def start(run_id: str) -> Any:
        if side == "duraplan":
            return await dp.submit_plan(PLAN, tenant=TENANT, session="conc", run_id=run_id)
        return await client.start_workflow(
            WAITER_WORKFLOW, id=f"{TENANT}/{run_id}", task_queue=task_queue, request_eager_start=True
        )

    return start


async def release(side: str, pair: tuple[str, Any]) -> Any:
    """Releases one run (duraplan: an event; hand-written: a signal) and returns its result."""
    run_id, handle = pair
    if side == "duraplan":
        await handle.send_event("go", {"id": run_id})
        return await handle.result()
    wf: WorkflowHandle[Any, Any] = handle
    await wf.signal(RELEASE_SIGNAL, {"id": run_id})
    return await wf.result()


def running_query(task_queue: str) -> str:
    return f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"


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
            start = starter(
                side, client, Duraplan(client, Settings(home=Path(home), task_queue=task_queue)), task_queue
            )
            t0 = time.perf_counter()
            handles = await bounded(ids, in_flight, start)
            start_s = time.perf_counter() - t0
            await wait_all_waiting(client, running_query(task_queue), n, 600, worker, cache)
            rss_waiting = await settle(pid)
            cpu1 = _proc_cpu(pid)
            t1 = time.perf_counter()
            results = await bounded(list(zip(ids, handles, strict=True)), in_flight, lambda p: release(side, p))
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
                worker_cpu_release_s=round(_proc_cpu(pid) - cpu1, 1),
            )


@contextlib.asynccontextmanager
async def fresh_server() -> AsyncIterator[Any]:
    """A dev server of its own (SQLite on disk, WAL) for one side: neither side runs on a database
    already holding the other's runs (the side that ran second used to)."""
    from executor.service.devserver import DevServer

    with tempfile.TemporaryDirectory(prefix="duraplan-conc-server-") as tmp:
        async with DevServer(Path(tmp), port=0, ui=False, db_file=Path(tmp) / "temporal.db") as server:
            yield server


async def main(n: int, in_flight: int, cache: int, out: Path | None) -> None:
    busy0, wall0 = system_busy_s(), time.perf_counter()
    own0 = os.times()
    server_cpu = 0.0
    results = []
    for side in ("handwritten", "duraplan"):
        async with fresh_server() as server:
            server_cpu0 = sum(_proc_cpu(p) for p in _server_pids())
            results.append(await run_side(side, server.client, server.address, n, in_flight, cache))
            server_cpu += sum(_proc_cpu(p) for p in _server_pids()) - server_cpu0
        print(json.dumps(asdict(results[-1])), flush=True)
    wall = time.perf_counter() - wall0
    own = sum(os.times()[:2]) - sum(own0[:2])
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
        ("worker CPU per release (ms)", hw.worker_cpu_release_s / n * 1000, dp.worker_cpu_release_s / n * 1000),
    ]
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a if a else float('nan'):.2f} |")
    print(f"| completed / lost | {hw.completed} / {hw.lost} | {dp.completed} / {dp.lost} | |")
    if out is not None:
        out.write_text(json.dumps({"n": n, "foreign_cores": round(foreign, 2), "sides": [asdict(r) for r in results]}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        side, address, task_queue, home, cache = sys.argv[2:7]
        if os.environ.get(TRACE_ENV):  # bench.waiting_slope --heap: frames per allocation traced
            tracemalloc.start(int(os.environ[TRACE_ENV]))
        asyncio.run(serve(side, address, task_queue, home, int(cache)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=200, help="start/release calls at once")
    parser.add_argument("--cache", type=int, default=10_000, help="max_cached_workflows of each worker")
    parser.add_argument("--quick", action="store_true", help="n=200")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(main(200 if args.quick else args.n, args.in_flight, args.cache, args.json))
