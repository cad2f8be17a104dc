"""Noisy neighbour: tenant A floods at 10x its run quota while tenant B runs steady 3-step plans.

    PYTHONPATH=. .venv/bin/python -m bench.noisy_neighbour [--quick] [--rounds N] [--block S]
                                                           [--b-rate R] [--flood-factor F] [--out PATH]

Acceptance item: B's p95 submit-to-result latency while A floods stays within 20% of B's p95 alone.

Four processes, as in a deployment: the dev server (``executor.service.devserver.DevServer``, fairness on),
one ``duraplan worker`` (``DURAPLAN_TENANCY=1``), tenant A's flood (its own process, its own client)
and this one (tenant B's client, the measurement). A's quota is small (0.5 runs/s, burst 1, 4 steps in
flight on the worker); A tries 10x that rate with 16-item fan-outs of ``debug.sleep`` and ignores
``retry_after``. B submits ``debug.echo`` -> code -> ``debug.echo`` plans open-loop at a fixed rate.

After a warm-up, blocks alternate (the order reversed every other round, so load from other work
on the machine hits them alike): B alone; B while A submits at exactly its quota (what A is
allowed); B while A floods at 10x (the acceptance item); B while A floods with only its in-flight
cap lifted (what the cap buys). A last, shorter block lifts all of A's quotas (what they buy).
Each block also records the cores each process kept busy. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from bench.harness import system_busy_s
from bench.latency import environment, percentile, summary
from executor.errors import RunFailed
from executor.service.client import Duraplan
from executor.service.config import Settings, connect
from executor.service.devserver import DevServer
from executor.service.tenants import QuotaExceeded, Quotas, TenantRegistry
from tools import default_registry

ROOT: Final = Path(__file__).resolve().parent.parent
TENANT_A: Final = "tenant-a"  # the noisy one
TENANT_B: Final = "tenant-b"  # the steady one
GRANTS: Final = ("debug.*",)  # both plans use debug.echo / debug.sleep; code steps need no grant
TARGET_P95_RATIO: Final = 1.20
NO_LIMIT: Final = 100_000


@dataclass(frozen=True)
class Phase:
    """What A does while B runs: ``factor`` x its rate quota (0: nothing), with some quotas overridden."""

    name: str
    factor: float | None  # None: --flood-factor
    overrides: dict[str, float] = field(default_factory=dict)


ALONE: Final = Phase("B alone", 0.0)
AT_QUOTA: Final = Phase("B + A at 1x its quota", 1.0)
FLOOD: Final = Phase("B + A flooding (quotas on)", None)
NO_CAP: Final = Phase("B + A flooding (in-flight cap lifted)", None, {"max_inflight_steps": NO_LIMIT})
LIFTED: Final = Phase(
    "B + A flooding (quotas lifted)",
    None,
    {"runs_per_second": NO_LIMIT, "runs_burst": NO_LIMIT, "max_inflight_steps": NO_LIMIT},
)
PHASES: Final = (ALONE, AT_QUOTA, FLOOD, NO_CAP, LIFTED)
_TICK: Final = os.sysconf("SC_CLK_TCK")

console = Console(width=max(Console().width, 150))


# ---- the two tenants' plans --------------------------------------------------------------------


def steady_plan() -> dict[str, Any]:
    """B's plan: tool -> code -> tool, each step taking the previous one's output."""
    return {
        "name": "steady-3-step",
        "steps": [
            {"id": "fetch", "kind": "tool", "tool": "debug.echo", "args": {"value": "${input.x}"}},
            {"id": "compute", "kind": "code", "code": "x * 2 + 1", "inputs": {"x": "${steps.fetch.output.value}"}},
            {"id": "store", "kind": "tool", "tool": "debug.echo", "args": {"value": "${steps.compute.output}"}},
        ],
        "output": "${steps.store.output.value}",
    }


def fanout_plan(items: int, sleep_s: float) -> dict[str, Any]:
    """A's plan: ``items`` ``debug.sleep`` steps at once (regular activities: they hold worker slots)."""
    return {
        "name": "noisy-fanout",
        "steps": [
            {
                "id": "fan",
                "kind": "foreach",
                "items": "input.items",
                "max_concurrency": items,
                "steps": [{"id": "nap", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": sleep_s}}],
            }
        ],
        "output": "${steps.fan.output}",
    }


# ---- statistics --------------------------------------------------------------------------------


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """``bench.latency.summary`` (n, p50, p95, p99, mean in ms) plus the maximum."""
    out = summary(values_s)
    out["max"] = max(values_s) * 1000.0 if values_s else math.nan
    return out


def bootstrap_ratio(num: list[float], den: list[float], q: float, rounds: int = 1000) -> tuple[float, float]:
    """90% percentile-bootstrap interval of percentile(num, q) / percentile(den, q)."""
    if len(num) < 10 or len(den) < 10:
        return math.nan, math.nan
    rng = random.Random(1)
    ratios = []
    for _ in range(rounds):
        a = percentile(rng.choices(num, k=len(num)), q)
        b = percentile(rng.choices(den, k=len(den)), q)
        if b > 0:
            ratios.append(a / b)
    return percentile(ratios, 5), percentile(ratios, 95)


# ---- CPU accounting over the process trees -----------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return out


def _stat_cpu(pid: int, with_children: bool) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime stime [cutime cstime]: reaped children's time lands in the parent's c* fields
    ticks = sum(int(x) for x in fields[11 : 15 if with_children else 13])
    return ticks / _TICK


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and all its descendants (live ones, and reaped ones via c*time)."""
    if pid is None:
        return 0.0
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _stat_cpu(p, with_children=True)
        todo.extend(_children(p))
    return total


@dataclass
class CpuProbe:
    """Cores kept busy, per process, over a window: server, worker, A's flood, B (this process), other."""

    pids: dict[str, int | None]

    def snapshot(self) -> dict[str, float]:
        snap = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        snap["bench (B)"] = _stat_cpu(os.getpid(), with_children=False)
        snap["_all"] = system_busy_s()
        snap["_wall"] = time.perf_counter()
        return snap

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        wall = after["_wall"] - before["_wall"]
        out = {k: max(after[k] - before[k], 0.0) / wall for k in before if not k.startswith("_")}
        out["other"] = max((after["_all"] - before["_all"]) / wall - sum(out.values()), 0.0)
        return {k: round(v, 3) for k, v in out.items()}


# ---- tenant A's flood: its own process ---------------------------------------------------------


@dataclass(frozen=True)
class FloodConfig:
    address: str
    namespace: str
    task_queue: str
    home: str
    items: int
    sleep_s: float
    max_pending: int  # submit calls in flight at once; beyond that a tick is counted as skipped


def flood_child(conn: Connection, cfg: FloodConfig) -> None:
    """Entry point of A's process (multiprocessing, spawn): serve flood commands until "quit"."""
    code = 0
    try:
        asyncio.run(_flood_serve(conn, cfg))
    except BaseException:  # report it to the parent, whatever it was
        code = 1
        with contextlib.suppress(OSError):
            conn.send({"error": traceback.format_exc()})
    with contextlib.suppress(OSError):
        conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the Temporal runtime's threads can crash a finalizing interpreter


async def _flood_serve(conn: Connection, cfg: FloodConfig) -> None:
    settings = Settings(
        address=cfg.address, namespace=cfg.namespace, task_queue=cfg.task_queue, home=Path(cfg.home), tenancy=True
    )
    tenants = TenantRegistry(Path(cfg.home) / "tenants.db")
    dp = Duraplan(await connect(settings), settings, default_registry(), tenants)
    conn.send({"ready": True})
    while True:
        msg: dict[str, Any] = await asyncio.to_thread(conn.recv)
        if msg["cmd"] == "quit":
            break
        conn.send(await flood(dp, cfg, rate=msg["rate"], seconds=msg["seconds"], drain=msg["drain"]))
    tenants.close()


async def flood(dp: Duraplan, cfg: FloodConfig, *, rate: float, seconds: float, drain: float) -> dict[str, Any]:
    """Try ``rate`` fan-out runs per second for ``seconds``, ignoring QuotaExceeded.retry_after_s.

    Then wait up to ``drain`` seconds for accepted runs to finish and terminate the rest, so the
    next block starts quiet."""
    plan = fanout_plan(cfg.items, cfg.sleep_s)
    inputs = {"items": list(range(cfg.items))}
    prefix = uuid.uuid4().hex[:8]
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    running: dict[str, Any] = {}  # run id -> handle, while its result is awaited
    pending = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        nonlocal pending
        t0 = time.perf_counter()
        run_id = f"a-{prefix}-{i}"
        try:
            handle = await dp.submit_plan(plan, tenant=TENANT_A, session="flood", inputs=inputs, run_id=run_id)
        except QuotaExceeded as exc:
            counts["rejected"] += 1
            counts[f"rejected {exc.limit}"] += 1
            return
        except Exception as exc:
            counts[f"submit error {type(exc).__name__}"] += 1
            return
        finally:
            pending -= 1
        counts["accepted"] += 1
        running[run_id] = handle
        try:
            await handle.result()
        except RunFailed as exc:
            counts[f"run {exc.status}"] += 1
        except Exception as exc:
            counts[f"result error {type(exc).__name__}"] += 1
        else:
            counts["completed"] += 1
            latencies.append(time.perf_counter() - t0)
        finally:
            running.pop(run_id, None)

    t0 = time.perf_counter()
    i = 0
    while (due := t0 + i / rate) < t0 + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        i += 1
        counts["attempted"] += 1
        if pending >= cfg.max_pending:  # this client cannot keep up: say so rather than queue
            counts["skipped (client behind)"] += 1
            continue
        pending += 1  # until its submit call returns
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    t1 = time.perf_counter()
    if tasks:
        await asyncio.wait(set(tasks), timeout=drain)
    leftover = list(running.values())
    if leftover:
        sem = asyncio.Semaphore(16)

        async def stop(handle: Any) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await handle.terminate("noisy-neighbour block over")

        await asyncio.gather(*(stop(h) for h in leftover))
    if tasks:
        await asyncio.wait(set(tasks), timeout=30)
    return {
        "offered_per_s": counts["attempted"] / seconds,
        "accepted_per_s": counts["accepted"] / seconds,
        "counts": dict(counts),
        "terminated_after_drain": len(leftover),
        "drain_s": round(time.perf_counter() - t1, 2),
        "a_run_ms": summary_ms(latencies),
    }


# ---- tenant B: steady runs from this process ---------------------------------------------------


@dataclass
class Block:
    phase: str
    round: int
    b_ms: list[float] = field(default_factory=list)  # submit -> result, per run
    b_submit_ms: list[float] = field(default_factory=list)  # the submit_plan call alone
    b_errors: dict[str, int] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)
    a: dict[str, Any] | None = None


async def steady(dp: Duraplan, rate: float, seconds: float) -> tuple[list[tuple[float, float]], dict[str, int]]:
    """B's runs, open loop: one every 1/rate s for ``seconds``, whatever the previous ones do.

    Per run: (submit -> result, submit call) in seconds."""
    plan = steady_plan()
    errors: Counter[str] = Counter()

    async def one(x: int) -> tuple[float, float] | None:
        t0 = time.perf_counter()
        try:
            handle = await dp.submit_plan(plan, tenant=TENANT_B, session="steady", inputs={"x": x})
            t1 = time.perf_counter()
            result = await handle.result()
        except Exception as exc:
            errors[type(exc).__name__] += 1
            return None
        if result != x * 2 + 1:
            errors["wrong result"] += 1
            return None
        return time.perf_counter() - t0, t1 - t0

    tasks = []
    t0 = time.perf_counter()
    i = 0
    while (due := t0 + i / rate) < t0 + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
        i += 1
    done = await asyncio.gather(*tasks)
    return [d for d in done if d is not None], dict(errors)


# ---- processes ---------------------------------------------------------------------------------


def _worker_command() -> list[str]:
    beside = Path(sys.executable).parent / "duraplan"
    return [str(beside), "worker"] if beside.is_file() else [sys.executable, "-m", "duraplan.cli", "worker"]


@contextlib.asynccontextmanager
async def worker_process(home: Path, address: str, task_queue: str) -> AsyncIterator[int]:
    """``duraplan worker`` in its own process group, tenancy on; yields its pid once it polls."""
    log_path = home / "worker.log"
    env = dict(
        os.environ,
        DURAPLAN_TENANCY="1",
        DURAPLAN_HOME=str(home),
        DURAPLAN_ADDRESS=address,
        DURAPLAN_TASK_QUEUE=task_queue,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _worker_command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "worker polling" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start (exit {proc.poll()}); log:\n{_tail(log_path)}")
            await asyncio.sleep(0.1)
        yield proc.pid
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early ({proc.returncode}); log:\n{_tail(log_path)}")
    finally:
        await _stop_group(proc)


async def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a graceful worker shutdown), SIGKILL the whole group after 10 s, and reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers too: the sandbox pool
    await asyncio.to_thread(proc.wait)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


class FloodProcess:
    """Tenant A's process: start, send flood commands, collect its counts, stop."""

    def __init__(self, cfg: FloodConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=flood_child, args=(child, cfg), name="tenant-a-flood", daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    async def recv(self, timeout: float) -> dict[str, Any]:
        ready = await asyncio.to_thread(self.conn.poll, timeout)
        if not ready:
            raise RuntimeError(f"tenant A's process did not answer within {timeout:.0f}s")
        msg: dict[str, Any] = self.conn.recv()
        if "error" in msg:
            raise RuntimeError(f"tenant A's process failed:\n{msg['error']}")
        return msg

    def start_flood(self, rate: float, seconds: float, drain: float) -> None:
        self.conn.send({"cmd": "flood", "rate": rate, "seconds": seconds, "drain": drain})

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send({"cmd": "quit"})
        await asyncio.to_thread(self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.kill()
            await asyncio.to_thread(self.proc.join, 5)
        self.conn.close()


@contextlib.contextmanager
def temp_home(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="duraplan-noisy-"))
        console.log(f"keeping {path} (server, worker logs, registry)")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="duraplan-noisy-") as tmp:
        yield Path(tmp)


# ---- the benchmark -----------------------------------------------------------------------------


@dataclass
class Env:
    dp: Duraplan
    tenants: TenantRegistry
    flood: FloodProcess
    cpu: CpuProbe
    args: argparse.Namespace
    quotas_a: dict[str, float]


async def run_block(env: Env, phase: Phase, rnd: int, seconds: float | None = None) -> Block:
    """One measured block: B for ``--block`` s, alone or while A floods (started ``--ramp`` s before).

    A's quota overrides apply to the runs it submits in this block (quotas are pinned per run at
    submission); its runs still going at the end are terminated, and the quotas restored."""
    a = env.args
    seconds = seconds or a.block
    factor = a.flood_factor if phase.factor is None else phase.factor
    if phase.overrides:
        env.tenants.set_quotas(TENANT_A, **phase.overrides)
    try:
        if factor:
            env.flood.start_flood(a.a_rate * factor, a.ramp + seconds, a.drain)
            await asyncio.sleep(a.ramp)
        before = env.cpu.snapshot()
        b_s, errors = await steady(env.dp, a.b_rate, seconds)
        cores = env.cpu.cores(before, env.cpu.snapshot())
        block = Block(phase.name, rnd, [round(e * 1000, 3) for e, _ in b_s], [round(s * 1000, 3) for _, s in b_s])
        block.b_errors, block.cores = errors, cores
        if factor:
            block.a = await env.flood.recv(timeout=a.ramp + seconds + a.drain + 120)
    finally:
        if phase.overrides:
            env.tenants.set_quotas(TENANT_A, **env.quotas_a)
    await asyncio.sleep(a.settle)
    p = summary_ms([e for e, _ in b_s])
    extra = ""
    if block.a is not None:
        c = block.a["counts"]
        extra = (
            f"; A offered {block.a['offered_per_s']:.1f}/s, accepted {c.get('accepted', 0)}, "
            f"rejected {c.get('rejected', 0)}, completed {c.get('completed', 0)}, "
            f"terminated {block.a['terminated_after_drain']}"
        )
    console.log(
        f"round {rnd} {phase.name:38} B {p['n']:>4} runs p50 {p['p50']:6.1f} p95 {p['p95']:6.1f} ms"
        f"{' errors ' + str(errors) if errors else ''}{extra}"
    )
    return block


async def warm_up(env: Env) -> None:
    a = env.args
    await steady(env.dp, a.b_rate, a.warmup)
    env.flood.start_flood(a.a_rate * a.flood_factor, a.warmup, a.drain)
    await steady(env.dp, a.b_rate, a.warmup)
    await env.flood.recv(timeout=a.warmup + a.drain + 120)
    await asyncio.sleep(a.settle)


async def measure(args: argparse.Namespace) -> tuple[list[Block], dict[str, Any]]:
    info: dict[str, Any] = {}
    with temp_home(args.keep_home) as home:
        tenants = TenantRegistry(home / "tenants.db")
        for tenant in (TENANT_A, TENANT_B):
            tenants.create(tenant)
            tenants.grant_tools(tenant, GRANTS)
        quotas_a: dict[str, float] = {
            "runs_per_second": args.a_rate,
            "runs_burst": args.a_burst,
            "max_inflight_steps": args.a_inflight,
        }
        info["quotas"] = {TENANT_A: tenants.set_quotas(TENANT_A, **quotas_a).to_dict(), TENANT_B: Quotas().to_dict()}
        task_queue = f"noisy-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        async with DevServer(home, port=0, ui=False) as server:
            cfg = FloodConfig(server.address, server.namespace, task_queue, str(home), args.items, args.sleep, 64)
            flood_proc = FloodProcess(cfg)  # starts (imports) while the worker does
            try:
                async with worker_process(home, server.address, task_queue) as worker_pid:
                    await flood_proc.recv(timeout=90)
                    info["startup_s"] = round(time.perf_counter() - t0, 1)
                    console.log(f"server {server.address}, worker pid {worker_pid}, up in {info['startup_s']} s")
                    settings = Settings(address=server.address, task_queue=task_queue, home=home, tenancy=True)
                    dp = Duraplan(server.client, settings, default_registry(), tenants)
                    probe = CpuProbe({"server": server.pid, "worker": worker_pid, "flood (A)": flood_proc.pid})
                    env = Env(dp, tenants, flood_proc, probe, args, quotas_a)
                    await warm_up(env)
                    console.log(f"warmed up ({time.perf_counter() - t0:.1f} s)")
                    blocks = []
                    order = [ALONE, *([AT_QUOTA] if args.at_quota else []), FLOOD, *([NO_CAP] if args.uncapped else [])]
                    for rnd in range(args.rounds):
                        for phase in order if rnd % 2 == 0 else order[::-1]:
                            blocks.append(await run_block(env, phase, rnd))
                    if args.lifted:  # last and shorter: A's unthrottled backlog takes a while to clear
                        blocks.append(await run_block(env, LIFTED, args.rounds, min(args.block, 8.0)))
            finally:
                await flood_proc.close()
        tenants.close()
    return blocks, info


# ---- report ------------------------------------------------------------------------------------


def build_report(
    blocks: list[Block], info: dict[str, Any], args: argparse.Namespace, env: dict[str, Any]
) -> dict[str, Any]:
    phases: dict[str, dict[str, Any]] = {}
    alone = [x / 1000 for b in blocks if b.phase == ALONE.name for x in b.b_ms]
    alone_p = summary_ms(alone)
    for spec in PHASES:
        phase = spec.name
        mine = [b for b in blocks if b.phase == phase]
        if not mine:
            continue
        lat = [x / 1000 for b in mine for x in b.b_ms]
        p = summary_ms(lat)
        a_counts: Counter[str] = Counter()
        for b in mine:
            if b.a is not None:
                a_counts.update(b.a["counts"])
        errors: Counter[str] = Counter()
        for b in mine:
            errors.update(b.b_errors)
        cores: dict[str, float] = {}
        for b in mine:
            for k, v in b.cores.items():
                cores[k] = cores.get(k, 0.0) + v / len(mine)
        row: dict[str, Any] = {
            "a_factor": args.flood_factor if spec.factor is None else spec.factor,
            "a_quota_overrides": spec.overrides,
            "blocks": len(mine),
            "b": p,
            "b_submit": summary_ms([x / 1000 for b in mine for x in b.b_submit_ms]),
            "b_errors": dict(errors),
            "ratio_p95": p["p95"] / alone_p["p95"],
            "ratio_p50": p["p50"] / alone_p["p50"],
            "ratio_p95_ci90": None,
            "per_block_p95": [round(summary_ms([x / 1000 for x in b.b_ms])["p95"], 1) for b in mine],
            "per_block_other_cores": [b.cores.get("other", 0.0) for b in mine],
            "a": dict(a_counts) if spec.factor != 0 else None,
            "a_offered_per_s": _mean([b.a["offered_per_s"] for b in mine if b.a]),
            "a_accepted_per_s": _mean([b.a["accepted_per_s"] for b in mine if b.a]),
            "a_run_p50_ms": _mean([b.a["a_run_ms"]["p50"] for b in mine if b.a]),
            "cores": {k: round(v, 2) for k, v in cores.items()},
            "target": None,
            "pass": None,
        }
        if spec != ALONE:
            row["ratio_p95_ci90"] = bootstrap_ratio(lat, alone, 95)
        if spec == FLOOD:
            row["target"] = f"p95 ratio <= {TARGET_P95_RATIO:.2f}"
            row["pass"] = row["ratio_p95"] <= TARGET_P95_RATIO
        phases[phase] = row
    return {
        "benchmark": "noisy_neighbour",
        "environment": dict(env, loadavg_end=os.getloadavg()),
        "parameters": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "block",
                "warmup",
                "ramp",
                "drain",
                "settle",
                "b_rate",
                "a_rate",
                "a_burst",
                "a_inflight",
                "flood_factor",
                "items",
                "sleep",
                "at_quota",
                "uncapped",
                "lifted",
                "quick",
            )
        },
        "tenants": info,
        "target": f"B p95 with A flooding at {args.flood_factor:g}x its quota <= {TARGET_P95_RATIO:.2f} x B p95 alone",
        "phases": phases,
        "blocks": [asdict(b) for b in blocks],
    }


def _mean(values: list[float]) -> float | None:
    xs = [v for v in values if not math.isnan(v)]
    return sum(xs) / len(xs) if xs else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    env, p = report["environment"], report["parameters"]
    console.print(
        f"[bold]machine[/]: {env['cores_usable']} usable cores ({env['cpu']}); load avg "
        f"{env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end; Python {env['python']}, "
        f"temporalio {env['temporalio']}, {env['temporal_cli']}"
    )
    qa = report["tenants"]["quotas"][TENANT_A]
    console.print(
        f"[bold]set-up[/]: dev server (fairness on) + 1 `duraplan worker` process (tenancy on) + A's flood process "
        f"+ B in this process. A: quota {qa['runs_per_second']:g} runs/s, burst {qa['runs_burst']}, "
        f"{qa['max_inflight_steps']} steps in flight; tries {p['a_rate'] * p['flood_factor']:g} runs/s of "
        f"{p['items']}-item fan-outs of debug.sleep {p['sleep']:g}s. B: {p['b_rate']:g} runs/s open loop of "
        f"echo -> code -> echo. {p['rounds']} rounds of {p['block']:g} s blocks (order reversed each round), "
        f"warm-up {p['warmup']:g} s x2."
    )
    table = Table(title=f"tenant B's submit-to-result latency (target: {report['target']})")
    for col, just in (
        ("phase", "left"),
        ("B runs", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("p99 ms", "right"),
        ("p95 / alone", "right"),
        ("90% CI", "right"),
        ("submit p95", "right"),
        ("A tried/s", "right"),
        ("A accepted", "right"),
        ("A rejected", "right"),
        ("verdict", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for phase, row in report["phases"].items():
        b, a = row["b"], row["a"] or {}
        ci = row["ratio_p95_ci90"]
        verdict = "—" if row["pass"] is None else ("[green]PASS[/]" if row["pass"] else "[red]MISS[/]")
        table.add_row(
            phase,
            f"{b['n']}" + (f" ({sum(row['b_errors'].values())} err)" if row["b_errors"] else ""),
            _fmt(b["p50"]),
            _fmt(b["p95"]),
            _fmt(b["p99"]),
            _fmt(row["ratio_p95"], ".2f"),
            f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "—",
            _fmt(row["b_submit"]["p95"]),
            _fmt(row["a_offered_per_s"]),
            str(a.get("accepted", 0)) if a else "—",
            str(a.get("rejected", 0)) if a else "—",
            verdict,
        )
    console.print(table)
    busy = 0.0
    for phase, row in report["phases"].items():
        cores = ", ".join(f"{k} {v:.2f}" for k, v in row["cores"].items())
        blocks = ", ".join(
            f"{p95:.0f} ({other:.2f})"
            for p95, other in zip(row["per_block_p95"], row["per_block_other_cores"], strict=True)
        )
        busy = max(busy, *row["per_block_other_cores"])
        extra = ""
        if row["a"]:
            a = row["a"]
            extra = (
                f"; A runs completed {a.get('completed', 0)}, terminated {a.get('run terminated', 0)}, "
                f"A run p50 {_fmt(row['a_run_p50_ms'], '.0f')} ms"
            )
        console.print(f"  {phase}: per-block p95 ms (other load, cores): {blocks}; mean cores busy: {cores}{extra}")
    if busy > 0.25:
        console.print(
            f"[yellow]warning[/]: other processes kept up to {busy:.2f} cores busy during some blocks: with A's "
            "load on top the machine saturates and those blocks' latencies are inflated; re-run on a quiet machine."
        )


def markdown(report: dict[str, Any]) -> str:
    env, p = report["environment"], report["parameters"]
    lines = [
        f"{env['cores_usable']} cores ({env['cpu']}), Python {env['python']}, temporalio {env['temporalio']}, "
        f"{env['temporal_cli']}; {p['rounds']} rounds of {p['block']:g} s blocks, B {p['b_rate']:g} runs/s; "
        f"load avg {env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end.",
        "",
        "| phase | B runs | B p50 / p95 / p99 (ms) | p95 / alone (90% CI) | B submit p95 (ms) | A tried/s "
        "| A accepted / rejected | cores: server / worker / other | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for phase, row in report["phases"].items():
        b, a, ci, c = row["b"], row["a"] or {}, row["ratio_p95_ci90"], row["cores"]
        verdict = "—" if row["pass"] is None else ("PASS" if row["pass"] else "MISS") + f" ({row['target']})"
        counts = f"{a.get('accepted', 0)} / {a.get('rejected', 0)}" if a else "—"
        lines.append(
            f"| {phase} | {b['n']} | {_fmt(b['p50'])} / {_fmt(b['p95'])} / {_fmt(b['p99'])} | "
            f"{_fmt(row['ratio_p95'], '.2f')}{f' ({ci[0]:.2f}-{ci[1]:.2f})' if ci else ''} | "
            f"{_fmt(row['b_submit']['p95'])} | {_fmt(row['a_offered_per_s'])} | {counts} | "
            f"{c['server']:.2f} / {c['worker']:.2f} / {c['other']:.2f} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.noisy_neighbour", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 s blocks, no uncapped/lifted blocks: smoke run, ~65 s")
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of alone / at-quota / flood blocks, order reversed every other round (default 2)",
    )
    ap.add_argument(
        "--block", type=float, default=None, help="seconds per measured block (default 14; quick 6; lifted: at most 8)"
    )
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds, alone then flooding (default 5; 3)")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds A floods before B's block starts (default 2)")
    ap.add_argument(
        "--drain",
        type=float,
        default=1.0,
        help="seconds A's runs may finish after a block, then the rest are terminated (default 1)",
    )
    ap.add_argument("--settle", type=float, default=1.0, help="quiet seconds between blocks (default 1)")
    ap.add_argument("--b-rate", type=float, default=5.0, help="B's runs per second, open loop (default 5)")
    # A's default quota is sized to this 2-core machine: its allowed load (8 steps/s) leaves room for
    # B. At 2 runs/s (32 steps/s) A's *allowed* work alone saturates the box (see bench/README.md).
    ap.add_argument("--a-rate", type=float, default=0.5, help="A's runs_per_second quota (default 0.5)")
    ap.add_argument("--a-burst", type=int, default=1, help="A's runs_burst quota (default 1)")
    ap.add_argument("--a-inflight", type=int, default=4, help="A's max_inflight_steps quota (default 4)")
    ap.add_argument("--flood-factor", type=float, default=10.0, help="A tries this many times its rate (default 10)")
    ap.add_argument("--items", type=int, default=16, help="debug.sleep steps per A run, all at once (default 16)")
    ap.add_argument("--sleep", type=float, default=0.1, help="seconds each of A's steps sleeps (default 0.1)")
    ap.add_argument(
        "--at-quota",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure B while A submits at exactly its quota (default on)",
    )
    ap.add_argument(
        "--uncapped",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure B while A floods with only its in-flight cap lifted (default on; off with --quick)",
    )
    ap.add_argument(
        "--lifted",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="end with a block where A floods with its quotas lifted (default on; off with --quick)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "noisy_neighbour.json",
        help="write every number and raw sample here as JSON (default bench/results/noisy_neighbour.json)",
    )
    ap.add_argument("--markdown", type=Path, help="also write the results table as markdown here")
    ap.add_argument("--keep-home", action="store_true", help="keep the temp dir (server and worker logs)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or 2
    args.block = args.block or (6.0 if args.quick else 14.0)
    args.warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 5.0)
    args.lifted = (not args.quick) if args.lifted is None else args.lifted
    args.uncapped = (not args.quick) if args.uncapped is None else args.uncapped
    if args.quick:
        args.ramp = min(args.ramp, 1.0)
    return args


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    t0 = time.perf_counter()
    blocks, info = await measure(args)
    report = build_report(blocks, info, args, env)
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print_report(report)
    console.print(f"total {report['elapsed_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    console.print(f"wrote {args.out}")
    if args.markdown:
        args.markdown.write_text(markdown(report))
        console.print(f"wrote {args.markdown}")
    return report


def _run() -> None:
    code = 0
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the Temporal runtime's native threads can crash a finalizing interpreter


if __name__ == "__main__":
    _run()
