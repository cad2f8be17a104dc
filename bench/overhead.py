"""Where duraplan's time goes, next to the hand-written floor: an investigation helper.

    PYTHONPATH=. .venv/bin/python -m bench.overhead [--runs N] [--json PATH]

Part 1 (no server): CPU cost of each phase of ``Duraplan.submit_plan`` and of decoding the
workflow input, for 1/3/10-step plans.

Part 2 (dev server): runs of four variants, interleaved, with the workflow runner wrapped so every
workflow task activation is timed (wall and thread CPU) and sandbox instance creation is timed:

- ``hw``     hand-written workflow, plain start (the floor)
- ``hw+attrs`` (CPU part only) the same, started with duraplan's memo + 5 search attributes +
             id policies
- ``hw+sa``  the same, and upserting the status search attribute at the end as duraplan does
- ``dp``     duraplan: ``submit_plan`` + ``RunHandle.result()``
- ``dp-raw`` duraplan: ``submit_plan`` + the raw Temporal handle's ``result()`` (no describe)

plus each variant's history (events, bytes) and the time inside the start RPC.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import threading
import time
import timeit
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from rich.console import Console
from rich.table import Table
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.converter import DataConverter
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.baseline import BaselineInput, BaselineWorkflow
from bench.harness import (
    MARKS,
    TENANT,
    Bench,
    bench_env,
    bench_runner,
    chain_plan,
    cpu_snapshot,
    run_duraplan,
    throughput,
    timed_registry,
)
from executor.engine.models import RunInput, plan_hash
from executor.lang.loader import load_plan
from executor.lang.validate import validate_plan
from executor.service.config import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_STATUS, SA_TENANT
from executor.service.start import _digest
from schemas.plan import Plan

console = Console(width=160)


# ---- part 1: CPU cost of submit and of the workflow's input ------------------------------------


def _us(fn: Any, number: int = 200) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def submit_phases() -> list[dict[str, Any]]:
    reg = timed_registry()
    pc = DataConverter.default.payload_converter
    out = []
    for n in (1, 3, 10):
        plan = chain_plan(n, "local")
        parsed = validate_plan(load_plan(plan), tools=reg)
        body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        run_input = RunInput(
            plan=body,
            plan_hash=plan_hash(body),
            tenant=TENANT,
            session="bench",
            run_id="r",
            inputs={"x": 1},
            local_tools=[t for t in reg.names() if reg.get(t).local],
        )
        dp_payload = pc.to_payloads([run_input])
        hw_payload = pc.to_payloads([BaselineInput(TENANT, "r", n, True, 1)])
        out.append(
            {
                "steps": n,
                "validate_plan_us": _us(lambda p=plan: validate_plan(load_plan(p), tools=reg)),
                "  of which check_schema(inputs)_us": _us(
                    lambda pp=parsed: jsonschema.Draft202012Validator.check_schema(pp.inputs)
                ),
                "  of which Plan.model_validate_us": _us(lambda p=plan: Plan.model_validate(p)),
                "model_dump_us": _us(lambda pp=parsed: pp.model_dump(mode="json", by_alias=True, exclude_unset=True)),
                "inputs_jsonschema_us": _us(
                    lambda pp=parsed: list(jsonschema.Draft202012Validator(pp.inputs).iter_errors({"x": 1}))
                ),
                "plan_hash+inputs_digest_us": _us(lambda b=body: (plan_hash(b), _digest({"x": 1}))),
                "wf: decode RunInput_us": _us(lambda p=dp_payload: pc.from_payloads(p, [RunInput])),
                "wf: decode BaselineInput_us": _us(lambda p=hw_payload: pc.from_payloads(p, [BaselineInput])),
                "wf: Plan.model_validate(body)_us": _us(lambda b=body: Plan.model_validate(b)),
                "input bytes duraplan": dp_payload[0].ByteSize(),
                "input bytes hand-written": hw_payload[0].ByteSize(),
            }
        )
    return out


# ---- part 2: timed workflow tasks --------------------------------------------------------------


@dataclass
class WfTiming:
    wf_type: str
    create_s: float = 0.0
    activations: int = 0
    act_wall_s: float = 0.0
    act_cpu_s: float = 0.0
    first_act_wall_s: float = 0.0
    created_at: float = 0.0  # perf_counter when the instance was created
    first_act_start: float = 0.0
    first_act_end: float = 0.0
    jobs: list[str] = field(default_factory=list)


TIMINGS: dict[str, WfTiming] = {}
_lock = threading.Lock()


class _TimedInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, timing: WfTiming) -> None:
        self._inner = inner
        self._t = timing

    def activate(self, act: Any) -> Any:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self._inner.activate(act)
        finally:
            w, c = time.perf_counter() - w0, time.thread_time() - c0
            with _lock:
                if self._t.activations == 0:
                    self._t.first_act_wall_s = w
                    self._t.first_act_start, self._t.first_act_end = w0, w0 + w
                self._t.activations += 1
                self._t.act_wall_s += w
                self._t.act_cpu_s += c
                self._t.jobs.append("+".join(j.WhichOneof("variant") or "?" for j in act.jobs))

    def get_serialization_context(self, command_info: Any) -> Any:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TimingRunner(SandboxedWorkflowRunner):
    """duraplan's sandboxed runner, timing instance creation and every activation."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        t0 = time.perf_counter()
        inner = super().create_instance(det)
        timing = WfTiming(det.defn.name or "?", create_s=time.perf_counter() - t0, created_at=t0)
        if det.info.workflow_id != "fake":
            TIMINGS[det.info.workflow_id] = timing
        return _TimedInstance(inner, timing)


def timing_runner() -> TimingRunner:
    base = bench_runner()
    return TimingRunner(restrictions=base.restrictions)


VARIANTS = ("hw", "hw+sa", "dp", "dp-raw")
CPU_VARIANTS = ("hw", "hw+attrs", "hw+sa", "dp-raw", "dp")
# What duraplan starts a run with, for the hand-written variants that carry the same.
DP_MEMO = {"plan_hash": "sha256:" + "0" * 64, "inputs_hash": "sha256:" + "1" * 64, "plan_name": "bench"}
DP_ATTRIBUTES = TypedSearchAttributes(
    [
        SearchAttributePair(SA_TENANT, TENANT),
        SearchAttributePair(SA_SESSION, "bench"),
        SearchAttributePair(SA_STATUS, "running"),
        SearchAttributePair(SA_PLAN_HASH, "sha256:" + "0" * 64),
        SearchAttributePair(SA_PLAN_NAME, "bench"),
    ]
)


async def run_variant(bench: Bench, variant: str, steps: int, strategy: str) -> dict[str, Any]:
    local = strategy == "local"
    run_id = bench.run_id(variant.replace("+", "-"))
    wid = f"{TENANT}/{run_id}"
    t0 = time.perf_counter()
    if variant.startswith("dp"):
        handle = await bench.dp.submit_plan(
            chain_plan(steps, strategy), tenant=TENANT, session="bench", inputs={"x": 1}, run_id=run_id
        )
        t1 = time.perf_counter()
        if variant == "dp":
            result = await handle.result()
        else:
            result = await bench.client.get_workflow_handle(wid).result()
    else:
        kwargs: dict[str, Any] = {}
        if variant in ("hw+sa", "hw+attrs"):
            kwargs = dict(
                memo=DP_MEMO,
                search_attributes=DP_ATTRIBUTES,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        hw_handle = await bench.client.start_workflow(
            BaselineWorkflow.run,
            BaselineInput(TENANT, run_id, steps, local, 1, upsert_status=variant == "hw+sa"),
            id=wid,
            task_queue=bench.task_queue,
            request_eager_start=True,
            **kwargs,
        )
        t1 = time.perf_counter()
        result = await hw_handle.result()
    t2 = time.perf_counter()
    assert result == {"value": 1}, result
    marks = MARKS.pop(run_id, [])
    timing = TIMINGS.pop(wid, None)
    nan = float("nan")
    rpc0, rpc1 = bench.probe.rpc.pop(wid, (nan, nan))
    timeline = {
        "client prep (validate, encode)": rpc0 - t0,
        "start RPC (eager)": rpc1 - rpc0,
        "RPC return -> instance created": (timing.created_at - rpc1) if timing else nan,
        "create instance": timing.create_s if timing else nan,
        "-> first activation starts": (timing.first_act_start - timing.created_at - timing.create_s) if timing else nan,
        "first activation": (timing.first_act_end - timing.first_act_start) if timing else nan,
        "-> first step running": (marks[0] - timing.first_act_end) if timing and marks else nan,
    }
    return {
        "wid": wid,
        "timeline_ms": {k: v * 1e3 for k, v in timeline.items()},
        "submit_ms": (t1 - t0) * 1e3,
        "start_rpc_ms": (rpc1 - rpc0) * 1e3,
        "first_step_ms": (marks[0] - t0) * 1e3 if marks else float("nan"),
        "e2e_ms": (t2 - t0) * 1e3,
        "create_instance_ms": timing.create_s * 1e3 if timing else float("nan"),
        "activations": timing.activations if timing else 0,
        "activation_wall_ms": timing.act_wall_s * 1e3 if timing else float("nan"),
        "activation_cpu_ms": timing.act_cpu_s * 1e3 if timing else float("nan"),
        "first_activation_ms": timing.first_act_wall_s * 1e3 if timing else float("nan"),
        "jobs": timing.jobs if timing else [],
    }


async def cpu_per_run(rounds: int, burst: int, concurrency: int) -> dict[str, Any]:
    """CPU ms per 1-step run, this process and the dev server, bursts of each variant in turn."""
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    async with bench_env(runner=timing_runner(), intercept=True) as bench:
        for strategy in ("local", "remote"):
            cells = out.setdefault(strategy, {v: [] for v in CPU_VARIANTS})
            for v in CPU_VARIANTS:  # warm-up
                await throughput(functools.partial(run_variant, bench, v, 1, strategy), 30, concurrency)
            for r in range(rounds):
                order = CPU_VARIANTS if r % 2 == 0 else tuple(reversed(CPU_VARIANTS))
                for v in order:
                    own0, srv0 = cpu_snapshot()
                    rate = await throughput(functools.partial(run_variant, bench, v, 1, strategy), burst, concurrency)
                    own1, srv1 = cpu_snapshot()
                    cells[v].append(
                        {"rate": rate, "own_ms": (own1 - own0) * 1e3 / burst, "server_ms": (srv1 - srv0) * 1e3 / burst}
                    )
            console.log(f"cpu per run, {strategy} done")
    TIMINGS.clear()
    return out


def report_cpu(data: dict[str, Any]) -> None:
    t = Table(title="CPU per 1-step run (median of bursts; ms of CPU)")
    for c in ("strategy", "variant", "runs/s", "worker+client CPU", "server CPU", "total CPU"):
        t.add_column(c, justify="left" if c in ("strategy", "variant") else "right")
    for strategy, cells in data.items():
        for v, rows in cells.items():
            own, srv = statistics.median(r["own_ms"] for r in rows), statistics.median(r["server_ms"] for r in rows)
            t.add_row(
                strategy,
                v,
                f"{statistics.median(r['rate'] for r in rows):.1f}",
                f"{own:.2f}",
                f"{srv:.2f}",
                f"{own + srv:.2f}",
            )
    console.print(t)


RPC_VARIANTS = (
    "plain",
    "memo",
    "search attrs",
    "memo+attrs",
    "reuse policy REJECT_DUPLICATE",
    "conflict policy FAIL",
    "memo+attrs+policies",
    "padded input 1.5KB",
    "duraplan",
)


async def start_rpc(rounds: int) -> dict[str, list[float]]:
    """Time inside the start RPC (eager) per start option, 1-step local runs, interleaved."""
    memo, attrs = DP_MEMO, DP_ATTRIBUTES
    out: dict[str, list[float]] = {v: [] for v in RPC_VARIANTS}
    async with bench_env(runner=timing_runner(), intercept=True) as bench:
        for r in range(rounds + 3):
            order = RPC_VARIANTS if r % 2 == 0 else tuple(reversed(RPC_VARIANTS))
            for v in order:
                if v == "duraplan":
                    await run_duraplan(bench, chain_plan(1, "local"))
                    wid = f"{TENANT}/{bench.last_run_id}"
                else:
                    run_id = bench.run_id("rpc")
                    wid = f"{TENANT}/{run_id}"
                    kwargs: dict[str, Any] = {}
                    if "memo" in v:
                        kwargs["memo"] = memo
                    if "attrs" in v:
                        kwargs["search_attributes"] = attrs
                    if "policies" in v or "REJECT_DUPLICATE" in v:
                        kwargs["id_reuse_policy"] = WorkflowIDReusePolicy.REJECT_DUPLICATE
                    if "policies" in v or "conflict" in v:
                        kwargs["id_conflict_policy"] = WorkflowIDConflictPolicy.FAIL
                    value: Any = "x" * 1400 if v.startswith("padded") else 1
                    handle = await bench.client.start_workflow(
                        BaselineWorkflow.run,
                        BaselineInput(TENANT, run_id, 1, True, value),
                        id=wid,
                        task_queue=bench.task_queue,
                        request_eager_start=True,
                        **kwargs,
                    )
                    await handle.result()
                    MARKS.pop(run_id, None)
                t0, t1 = bench.probe.rpc.pop(wid)
                TIMINGS.pop(wid, None)
                if r >= 3:  # the first rounds warm up
                    out[v].append((t1 - t0) * 1e3)
    return out


def report_rpc(data: dict[str, list[float]]) -> None:
    t = Table(title="start RPC (eager) by start option, 1-step local runs (ms)")
    for c in ("option", "p50", "p95", "mean", "n"):
        t.add_column(c, justify="left" if c == "option" else "right")
    for v, xs in data.items():
        qs = statistics.quantiles(xs, n=20)
        t.add_row(v, f"{statistics.median(xs):.2f}", f"{qs[18]:.2f}", f"{statistics.mean(xs):.2f}", str(len(xs)))
    console.print(t)


async def history_of(bench: Bench, wid: str) -> dict[str, Any]:
    events = [e async for e in bench.client.get_workflow_handle(wid).fetch_history_events()]
    kinds: dict[str, int] = defaultdict(int)
    for e in events:
        kinds[e.WhichOneof("attributes") or "?"] += 1
    return {"events": len(events), "bytes": sum(e.ByteSize() for e in events), "kinds": dict(kinds)}


async def live(runs: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    histories: dict[str, Any] = {}
    async with bench_env(runner=timing_runner(), intercept=True) as bench:
        for strategy in ("local", "remote"):
            for steps in sizes:
                for v in VARIANTS:  # warm-up
                    for _ in range(3):
                        await run_variant(bench, v, steps, strategy)
                for i in range(runs):
                    order = VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS))
                    for v in order:
                        r = await run_variant(bench, v, steps, strategy)
                        results[f"{strategy}/{steps}/{v}"].append(r)
                for v in VARIANTS:
                    histories[f"{strategy}/{steps}/{v}"] = await history_of(
                        bench, results[f"{strategy}/{steps}/{v}"][-1]["wid"]
                    )
                console.log(f"{strategy} {steps}-step done")
    return {"runs": results, "histories": histories}


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def report(phases: list[dict[str, Any]], data: dict[str, Any]) -> None:
    t = Table(title="submit_plan and workflow-input CPU cost (µs, min of 5 repeats)")
    t.add_column("phase")
    for p in phases:
        t.add_column(f"{p['steps']} step(s)", justify="right")
    for key in phases[0]:
        if key == "steps":
            continue
        t.add_row(key.removesuffix("_us"), *(f"{p[key]:.0f}" for p in phases))
    console.print(t)

    t = Table(title="per-run medians (ms) — variants interleaved on one server and worker")
    for c in (
        "cell",
        "submit",
        "start RPC",
        "first step",
        "e2e",
        "create inst.",
        "#act",
        "act wall",
        "act CPU",
        "1st act",
        "hist events",
        "hist bytes",
    ):
        t.add_column(c, justify="right" if c != "cell" else "left")
    for cell, rows in data["runs"].items():
        h = data["histories"][cell]
        t.add_row(
            cell,
            *(
                f"{med(rows, k):.1f}"
                for k in ("submit_ms", "start_rpc_ms", "first_step_ms", "e2e_ms", "create_instance_ms")
            ),
            f"{med(rows, 'activations'):.0f}",
            *(f"{med(rows, k):.2f}" for k in ("activation_wall_ms", "activation_cpu_ms", "first_activation_ms")),
            str(h["events"]),
            str(h["bytes"]),
        )
    console.print(t)
    t = Table(title="submit -> first step running, medians per phase (ms)")
    t.add_column("phase")
    cells = [c for c in data["runs"] if c.split("/")[1] == "1"]
    for c in cells:
        t.add_column(c, justify="right")
    if cells:
        for phase in data["runs"][cells[0]][0]["timeline_ms"]:
            t.add_row(
                phase, *(f"{statistics.median(r['timeline_ms'][phase] for r in data['runs'][c]):.2f}" for c in cells)
            )
        t.add_row("= first step running", *(f"{med(data['runs'][c], 'first_step_ms'):.2f}" for c in cells))
    console.print(t)
    for cell in data["histories"]:
        if cell.endswith("/dp") or cell.endswith("/hw"):
            jobs = data["runs"][cell][-1]["jobs"]
            console.print(f"{cell}: activations {jobs}; history {data['histories'][cell]['kinds']}")


async def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.overhead")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sizes", default="1,3,10")
    ap.add_argument("--cpu-rounds", type=int, default=4, help="bursts per variant for CPU per run (0: skip)")
    ap.add_argument("--cpu-burst", type=int, default=150)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--rpc-rounds", type=int, default=0, help="rounds of the start-RPC experiment (0: skip)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    phases = submit_phases()
    data: dict[str, Any] = {"runs": {}, "histories": {}}
    if not args.skip_latency:
        data = await live(args.runs, tuple(int(s) for s in args.sizes.split(",")))
    cpu = await cpu_per_run(args.cpu_rounds, args.cpu_burst, 50) if args.cpu_rounds else {}
    rpc = await start_rpc(args.rpc_rounds) if args.rpc_rounds else {}
    report(phases, data)
    if cpu:
        report_cpu(cpu)
    if rpc:
        report_rpc(rpc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"submit_phases": phases, **data, "cpu_per_run": cpu, "start_rpc_ms": rpc}, f, indent=1, default=str
            )


if __name__ == "__main__":
    asyncio.run(main())
