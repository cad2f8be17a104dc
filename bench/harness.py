"""Shared set-up for the benchmarks: one dev server, one client, one worker, two kinds of runs.

- The dev server is the Temporal CLI's, on SQLite in WAL mode on disk (as the reference numbers).
- One worker in this process serves both duraplan's ``PlanWorkflow`` and the hand-written
  ``BaselineWorkflow``, with duraplan's own activities, workflow runner and sandbox pool
  (mirroring ``executor.worker.runner.running_worker``), on one task queue: eager start reaches it.
- ``debug.echo`` is wrapped so each call stamps ``time.perf_counter()`` per run: that is
  "first step running" for both sides, measured inside the same activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.baseline import BASELINE_WORKFLOW, BaselineInput, BaselineWorkflow
from executor.engine.workflow import WORKFLOW_NAME, PlanWorkflow
from executor.service.client import Duraplan
from executor.service.config import SEARCH_ATTRIBUTES, Settings
from executor.service.usage_reconcile import Reconciler
from executor.worker.activities import StepActivities
from executor.worker.metering import Meter
from executor.worker.runner import workflow_runner
from executor.worker.sandbox import Sandbox
from tools import Store, ToolContext, ToolRegistry, builtin_tools
from tools.usage import UsageStore

ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_CLI = ROOT / ".venv" / "bin" / "temporal"
TENANT = "bench"

# run id -> perf_counter() of each debug.echo call, in order
MARKS: dict[str, list[float]] = {}


# ---- timing hook -------------------------------------------------------------------------------


def timed_registry() -> ToolRegistry:
    """The built-in tools, with ``debug.echo`` stamping the time it starts running."""
    tools = []
    for tool in builtin_tools():
        if tool.name == "debug.echo":
            inner = tool.handler

            async def handler(args: dict[str, Any], ctx: ToolContext, _inner: Any = inner) -> Any:
                MARKS.setdefault(ctx.run_id, []).append(time.perf_counter())
                return await _inner(args, ctx)

            tool = dataclasses.replace(tool, handler=handler)
        tools.append(tool)
    return ToolRegistry(tools)


# ---- eager-start probe -------------------------------------------------------------------------


class EagerProbe(Interceptor):
    """Counts, per workflow type, how many eager-start requests the server honoured."""

    def __init__(self) -> None:
        self.requested: Counter[str] = Counter()
        self.eager: Counter[str] = Counter()
        # workflow id -> (perf_counter entering, leaving) client.start_workflow: the start RPC
        self.rpc: dict[str, tuple[float, float]] = {}
        # bench.whatif: may rewrite a start request before it is sent
        self.rewrite: Callable[[StartWorkflowInput], None] | None = None

    def count(self, workflow: str, handle: Any) -> None:
        """One eager-start request, honoured if the SDK (or duraplan's direct start) marked it so."""
        self.requested[workflow] += 1
        if getattr(handle, "__temporal_eagerly_started", False):
            self.eager[workflow] += 1

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _EagerOutbound(next, self)


class _EagerOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, probe: EagerProbe) -> None:
        super().__init__(next)
        self._probe = probe

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        if self._probe.rewrite is not None:
            self._probe.rewrite(input)
        t0 = time.perf_counter()
        handle = await super().start_workflow(input)
        if len(self._probe.rpc) > 10_000:
            self._probe.rpc.clear()
        self._probe.rpc[input.id] = (t0, time.perf_counter())
        if input.request_eager_start:
            self._probe.count(input.workflow, handle)
        return handle


# ---- server + worker ---------------------------------------------------------------------------


@dataclass
class Bench:
    client: Client
    dp: Duraplan
    task_queue: str
    probe: EagerProbe
    server: str
    sandbox: Sandbox | None = None  # the worker's: code steps run there
    reconciler: Reconciler | None = None  # metering on: folds run ends into the ledger, as a worker does
    intercepted: bool = False  # the probe is the client's interceptor (else starts count themselves)
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _seq: int = 0
    last_run_id: str = ""

    def run_id(self, tag: str) -> str:
        self._seq += 1
        self.last_run_id = f"{tag}-{self.prefix}-{self._seq}"
        return self.last_run_id


def bench_runner(extra_passthrough: tuple[str, ...] = ("bench",)) -> SandboxedWorkflowRunner:
    """duraplan's own workflow runner, with the benchmark's module passed through as well."""
    base = workflow_runner()
    return dataclasses.replace(base, restrictions=base.restrictions.with_passthrough_modules(*extra_passthrough))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Point fd 1 at /dev/null while a child process is spawned (it keeps that stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.asynccontextmanager
async def dev_server(
    home: Path, interceptors: list[Interceptor], kind: str = "devserver"
) -> AsyncIterator[tuple[Client, str, int | None]]:
    """A Temporal CLI dev server on SQLite (WAL) under ``home``: (client, description, pid).

    ``devserver`` is duraplan's own ``executor.service.devserver.DevServer`` (what ``duraplan dev`` runs);
    ``testing`` is ``temporalio.testing.WorkflowEnvironment.start_local`` with only the WAL pragma.
    """
    if kind == "devserver":
        from executor.service.devserver import DevServer

        async with DevServer(home, port=0, ui=False, db_file=home / "temporal.db") as server:
            config = server.client.config()
            config["interceptors"] = interceptors
            yield (
                Client(**config),
                "executor.service.devserver.DevServer (SQLite on disk, WAL)",
                server.pid,
            )
        return
    with _quiet_stdout():  # the CLI prints a banner to the stdout it inherits
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(TEMPORAL_CLI),
            dev_server_database_filename=str(home / "temporal.db"),
            dev_server_extra_args=["--sqlite-pragma", "journal_mode=WAL"],
            search_attributes=SEARCH_ATTRIBUTES,
            interceptors=interceptors,
        )
    try:
        yield env.client, "WorkflowEnvironment.start_local (SQLite on disk, WAL)", None
    finally:
        await env.shutdown()


@contextlib.asynccontextmanager
async def bench_env(
    *,
    server: str = "devserver",
    runner: SandboxedWorkflowRunner | None = None,
    worker_options: dict[str, Any] | None = None,
    workflows: tuple[type, ...] = (),
    sandbox_options: dict[str, Any] | None = None,
    reconcile_in_background: bool = True,
    intercept: bool = False,
) -> AsyncIterator[Bench]:
    """``reconcile_in_background``: metering on, run the usage reconciler's passes every few
    seconds as a worker does (bench.metering_cost runs them itself, to account for them apart).
    ``intercept``: the client gets ``EagerProbe`` as an interceptor (its start RPC timings, and
    bench.whatif's rewrites). Off by default: with any client interceptor duraplan's start takes
    the SDK's generic path (executor.service.start_request), which a deployment without tracing
    does not; eager starts are then counted from the handles (``run_duraplan``, ``run_baseline``)."""
    probe = EagerProbe()
    with tempfile.TemporaryDirectory(prefix="duraplan-bench-") as tmp:
        home = Path(tmp)
        async with dev_server(home, [probe] if intercept else [], server) as (client, label, _pid):
            task_queue = f"bench-{uuid.uuid4().hex[:8]}"
            metering = os.environ.get("DURAPLAN_METERING", "1") != "0"  # metered as a deployed worker is
            settings = Settings(home=home, task_queue=task_queue, metering=metering)
            registry = timed_registry()
            store = Store(home / "store.db")
            usage = UsageStore(home / "store.db")
            try:
                async with Sandbox(**(sandbox_options or {})) as sandbox:
                    meter = Meter(usage if metering else None)
                    activities = StepActivities(registry, store, sandbox, default_model=None, meter=meter)
                    worker = Worker(
                        client,
                        task_queue=task_queue,
                        workflows=[PlanWorkflow, BaselineWorkflow, *workflows],
                        activities=activities.all(),
                        workflow_runner=runner or bench_runner(),
                        **(worker_options or {}),
                    )
                    reconciler = Reconciler(client, usage, task_queue) if metering else None
                    passes = (
                        asyncio.create_task(reconciler.run())
                        if reconciler is not None and reconcile_in_background
                        else None
                    )
                    try:
                        async with worker:
                            dp = Duraplan(client, settings, registry, usage=usage if metering else None)
                            yield Bench(client, dp, task_queue, probe, label, sandbox, reconciler, intercept)
                    finally:
                        if passes is not None:
                            passes.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await passes
            finally:
                usage.close()
                store.close()


# ---- the two kinds of runs ---------------------------------------------------------------------


def chain_plan(steps: int, execution: str) -> dict[str, Any]:
    """``steps`` debug.echo tool steps, each taking the previous one's output by reference."""
    plan_steps = []
    for i in range(steps):
        value = "${input.x}" if i == 0 else f"${{steps.s{i - 1}.output.value}}"
        plan_steps.append(
            {"id": f"s{i}", "kind": "tool", "tool": "debug.echo", "args": {"value": value}, "execution": execution}
        )
    return {
        "name": f"bench-chain-{steps}-{execution}",
        "steps": plan_steps,
        "output": f"${{steps.s{steps - 1}.output}}",
    }


@dataclass
class Sample:
    submit_s: float  # time spent in the submit call (validation + start RPC incl. eager task)
    first_step_s: float  # submit -> first debug.echo running
    e2e_s: float  # submit -> result received


async def run_duraplan(bench: Bench, plan: dict[str, Any], *, wait_result: bool = True) -> Sample:
    run_id = bench.run_id("dp")
    t0 = time.perf_counter()
    handle = await bench.dp.submit_plan(plan, tenant=TENANT, session="bench", inputs={"x": 1}, run_id=run_id)
    t1 = time.perf_counter()
    if not bench.intercepted:
        bench.probe.count(WORKFLOW_NAME, handle._started)
    result = await handle.result() if wait_result else None
    t2 = time.perf_counter()
    if wait_result:
        assert result == {"value": 1}, result
    return _sample(run_id, t0, t1, t2)


async def run_baseline(bench: Bench, steps: int, local: bool, *, wait_result: bool = True) -> Sample:
    run_id = bench.run_id("hw")
    t0 = time.perf_counter()
    handle = await bench.client.start_workflow(
        BaselineWorkflow.run,
        BaselineInput(TENANT, run_id, steps, local, 1),
        id=f"{TENANT}/{run_id}",
        task_queue=bench.task_queue,
        request_eager_start=True,
    )
    t1 = time.perf_counter()
    if not bench.intercepted:
        bench.probe.count(BASELINE_WORKFLOW, handle)
    result = await handle.result() if wait_result else None
    t2 = time.perf_counter()
    if wait_result:
        assert result == {"value": 1}, result
    return _sample(run_id, t0, t1, t2)


def _sample(run_id: str, t0: float, t1: float, t2: float) -> Sample:
    marks = MARKS.pop(run_id, None)
    first = marks[0] - t0 if marks else float("nan")
    return Sample(t1 - t0, first, t2 - t0)


async def throughput(make_run: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> float:
    """Runs completed per second, ``total`` runs with at most ``concurrency`` in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await make_run()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - t0)


def cores() -> tuple[int, int]:
    """(CPUs this process may use, CPUs on the machine)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return usable, os.cpu_count() or 1


# ---- CPU accounting ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _server_pids() -> list[int]:
    """Child processes of this one that are the Temporal CLI (not the code-step sandbox pool)."""
    pids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip().startswith("temporal"):
                    out.append(pid)
        except OSError:
            pass
    return out


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_snapshot() -> tuple[float, float]:
    """(CPU seconds used by this process — worker and client —, by its children — the dev server)."""
    t = os.times()
    return t.user + t.system, sum(_proc_cpu(p) for p in _server_pids())


def system_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / _TICK


class ForeignLoad:
    """How many cores other processes (not this one, not its dev server) kept busy meanwhile."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._sys0 = system_busy_s()
        self._own0 = sum(cpu_snapshot())

    def cores(self) -> float:
        wall = time.perf_counter() - self._t0
        foreign = (system_busy_s() - self._sys0) - (sum(cpu_snapshot()) - self._own0)
        return max(foreign, 0.0) / wall if wall > 0 else float("nan")
