"""duraplan vs a hand-written Temporal workflow: latency and throughput, one server, one worker.

    PYTHONPATH=. .venv/bin/python -m bench.latency [--samples N] [--throughput-runs N] [--quick]
                                                    [--concurrency N] [--json PATH]

Both sides run the same activity (``duraplan.tool`` running ``debug.echo``) N times in a row,
started with eager start, as local activities and as regular activities. Samples of the two sides
are interleaved (ABAB...) so background load hits both alike. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import (
    TEMPORAL_CLI,
    Bench,
    ForeignLoad,
    Sample,
    bench_env,
    chain_plan,
    cores,
    cpu_snapshot,
    run_baseline,
    run_duraplan,
    throughput,
)

SIZES: tuple[int, ...] = (1, 3, 10)  # --sizes changes it
STRATEGIES = ("local", "remote")
TARGET_FIRST_STEP_MS = 10.0
TARGET_THREE_STEP_MS = 30.0
TARGET_RATIO = 1.10

console = Console(width=max(Console().width, 150))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms) if ms else float("nan"),
        "min": min(ms) if ms else float("nan"),
    }


def environment() -> dict[str, Any]:
    usable, total = cores()
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        cli = subprocess.run(
            [str(TEMPORAL_CLI), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cli = "unknown"

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cores_usable": usable,
        "cores_total": total,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": cli,
        "pydantic": version("pydantic"),
        "duraplan": version("duraplan"),
        "loadavg_start": os.getloadavg(),
    }


# ---- measurement -------------------------------------------------------------------------------


async def one(bench: Bench, system: str, steps: int, strategy: str) -> Sample:
    if system == "duraplan":
        return await run_duraplan(bench, chain_plan(steps, strategy))
    return await run_baseline(bench, steps, strategy == "local")


async def warm_up(bench: Bench, runs: int) -> None:
    for strategy in STRATEGIES:
        for steps in SIZES:
            for _ in range(runs):
                await one(bench, "duraplan", steps, strategy)
                await one(bench, "hand-written", steps, strategy)
    # and a short burst, so the concurrent path (pollers, slots, caches) is warm too
    for strategy in STRATEGIES:
        plan = chain_plan(1, strategy)
        await throughput(functools.partial(run_duraplan, bench, plan), 50, 25)
        await throughput(functools.partial(run_baseline, bench, 1, strategy == "local"), 50, 25)


async def latencies(bench: Bench, samples: int) -> dict[str, dict[str, dict[int, list[Sample]]]]:
    """results[system][strategy][steps] = samples; the two systems alternate run by run."""
    out: dict[str, dict[str, dict[int, list[Sample]]]] = {
        s: {st: {n: [] for n in SIZES} for st in STRATEGIES} for s in ("duraplan", "hand-written")
    }
    for strategy in STRATEGIES:
        for steps in SIZES:
            t0 = time.perf_counter()
            for i in range(samples):
                order = ("duraplan", "hand-written") if i % 2 == 0 else ("hand-written", "duraplan")
                for system in order:
                    out[system][strategy][steps].append(await one(bench, system, steps, strategy))
            console.log(f"latency {strategy:6} {steps:>2}-step: {samples} pairs in {time.perf_counter() - t0:.1f}s")
    return out


async def throughputs(bench: Bench, runs: int, concurrency: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per system and strategy: runs/s, and CPU ms per run in this process and in the dev server."""
    out: dict[str, dict[str, dict[str, float]]] = {"duraplan": {}, "hand-written": {}}
    for i, strategy in enumerate(STRATEGIES):
        order = ("hand-written", "duraplan") if i % 2 == 0 else ("duraplan", "hand-written")  # ABBA
        for system in order:
            own0, server0 = cpu_snapshot()
            if system == "duraplan":
                plan = chain_plan(1, strategy)
                rate = await throughput(functools.partial(run_duraplan, bench, plan), runs, concurrency)
            else:
                local = strategy == "local"
                rate = await throughput(functools.partial(run_baseline, bench, 1, local), runs, concurrency)
            own1, server1 = cpu_snapshot()
            out[system][strategy] = {
                "rate": rate,
                "cpu_worker_ms": (own1 - own0) * 1e3 / runs,
                "cpu_server_ms": (server1 - server0) * 1e3 / runs,
            }
            cell = out[system][strategy]
            console.log(
                f"throughput {strategy:6} {system:12}: {rate:.1f} runs/s; CPU per run "
                f"{cell['cpu_worker_ms']:.1f} ms worker+client, {cell['cpu_server_ms']:.1f} ms server"
            )
    return out


# ---- report ------------------------------------------------------------------------------------


def build_report(
    env: dict[str, Any],
    lat: dict[str, dict[str, dict[int, list[Sample]]]],
    thr: dict[str, dict[str, dict[str, float]]],
    args: argparse.Namespace,
    eager: dict[str, Any],
    foreign: ForeignLoad,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    def add(metric: str, strategy: str, field: str, steps: int, abs_target: float | None) -> None:
        dp = summary([getattr(s, field) for s in lat["duraplan"][strategy][steps]])
        hw = summary([getattr(s, field) for s in lat["hand-written"][strategy][steps]])
        ratio = dp["p50"] / hw["p50"] if hw["p50"] else float("nan")
        rows.append(
            {
                "metric": metric,
                "strategy": strategy,
                "unit": "ms",
                "duraplan": dp,
                "hand_written": hw,
                "ratio_p50": ratio,
                "ratio_p95": dp["p95"] / hw["p95"] if hw["p95"] else float("nan"),
                "abs_target": f"p50 <= {abs_target:g} ms" if abs_target is not None else None,
                "abs_pass": None if abs_target is None else dp["p50"] <= abs_target,
                "ratio_target": f"p50 ratio <= {TARGET_RATIO:.2f}",
                "ratio_pass": ratio <= TARGET_RATIO,
            }
        )

    for strategy in STRATEGIES:
        local = strategy == "local"
        first = min(SIZES)  # 1 unless --sizes leaves it out
        add("first step running", strategy, "first_step_s", first, TARGET_FIRST_STEP_MS if local else None)
        add("submit call returns", strategy, "submit_s", first, None)
        for steps in SIZES:
            target = TARGET_THREE_STEP_MS if local and steps == 3 else None
            add(f"end-to-end, {steps} step{'s' if steps > 1 else ''}", strategy, "e2e_s", steps, target)
        dp, hw = thr["duraplan"][strategy], thr["hand-written"][strategy]
        ratio = dp["rate"] / hw["rate"] if hw["rate"] else float("nan")
        rows.append(
            {
                "metric": f"throughput, 1-step runs ({args.concurrency} in flight)",
                "strategy": strategy,
                "unit": "runs/s",
                "duraplan": {"rate": dp["rate"]},
                "hand_written": {"rate": hw["rate"]},
                "ratio": ratio,
                "abs_target": None,
                "abs_pass": None,
                "ratio_target": f"ratio >= {1 / TARGET_RATIO:.2f}",
                "ratio_pass": ratio >= 1 / TARGET_RATIO,
            }
        )
        for key, what in (("cpu_worker_ms", "worker+client process"), ("cpu_server_ms", "dev server process")):
            rows.append(
                {
                    "metric": f"  CPU per 1-step run, {what}",
                    "strategy": strategy,
                    "unit": "cpu-ms",
                    "duraplan": {"value": dp[key]},
                    "hand_written": {"value": hw[key]},
                    "ratio": dp[key] / hw[key] if hw[key] else float("nan"),
                    "abs_target": None,
                    "abs_pass": None,
                    "ratio_target": None,
                    "ratio_pass": None,
                }
            )
    env = dict(env, loadavg_end=os.getloadavg(), foreign_cores=round(foreign.cores(), 3))
    return {
        "environment": env,
        "parameters": {
            "samples": args.samples,
            "warmup": args.warmup,
            "throughput_runs": args.throughput_runs,
            "concurrency": args.concurrency,
            "sizes": list(SIZES),
            "server": args.server,
        },
        "eager_start": eager,
        "rows": rows,
        "raw_ms": {
            system: {
                strategy: {
                    str(steps): [{k: round(v * 1000, 3) for k, v in asdict(s).items()} for s in samples]
                    for steps, samples in by_size.items()
                }
                for strategy, by_size in by_strategy.items()
            }
            for system, by_strategy in lat.items()
        },
    }


def _pct(s: dict[str, float]) -> str:
    return f"{s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f}"


def _verdict(ok: bool | None, text: str | None) -> str:
    if ok is None or text is None:
        return "—"
    return f"[green]PASS[/] {text}" if ok else f"[red]MISS[/] {text}"


def _cells(row: dict[str, Any]) -> tuple[str, str, str]:
    if row["unit"] == "runs/s":
        return (
            f"{row['duraplan']['rate']:.1f} runs/s",
            f"{row['hand_written']['rate']:.1f} runs/s",
            f"{row['ratio']:.2f}",
        )
    if row["unit"] == "cpu-ms":
        return (
            f"{row['duraplan']['value']:.1f} CPU ms",
            f"{row['hand_written']['value']:.1f} CPU ms",
            f"{row['ratio']:.2f}",
        )
    return _pct(row["duraplan"]) + " ms", _pct(row["hand_written"]) + " ms", f"{row['ratio_p50']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The results table as GitHub markdown, with the run's environment (for bench/README.md)."""
    env, p = report["environment"], report["parameters"]
    lines = [
        f"{env['cores_usable']} cores ({env['cpu']}), Python {env['python']}, temporalio {env['temporalio']}, "
        f"{env['temporal_cli']}; {env.get('server')}; {p['samples']} interleaved samples per cell, "
        f"throughput {p['throughput_runs']} runs at {p['concurrency']} in flight; other processes kept "
        f"{env['foreign_cores']:.2f} cores busy during the run.",
        "",
        "| metric | strategy | duraplan p50 / p95 / p99 | hand-written p50 / p95 / p99 | ratio "
        "| absolute target | ratio target |",
        "|---|---|---:|---:|---:|---|---|",
    ]

    def verdict(ok: bool | None, text: str | None) -> str:
        return "—" if ok is None or text is None else f"{'PASS' if ok else 'MISS'} ({text})"

    for row in report["rows"]:
        dp, hw, ratio = _cells(row)
        lines.append(
            f"| {row['metric'].strip()} | {row['strategy']} | {dp} | {hw} | {ratio} | "
            f"{verdict(row['abs_pass'], row['abs_target'])} | {verdict(row['ratio_pass'], row['ratio_target'])} |"
        )
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    console.print(
        f"[bold]machine[/]: {env['cores_usable']} usable cores of {env['cores_total']} ({env['cpu']}), "
        f"{env['platform']}; load avg {env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end"
    )
    console.print(f"[bold]server[/]: {env.get('server')}, worker in this process")
    console.print(
        f"[bold]versions[/]: Python {env['python']}, temporalio {env['temporalio']}, {env['temporal_cli']}, "
        f"pydantic {env['pydantic']}, duraplan {env['duraplan']}"
    )
    console.print(
        f"[bold]other load[/]: other processes kept {env['foreign_cores']:.2f} of {env['cores_usable']} cores "
        "busy on average during the run"
    )
    if env["foreign_cores"] > 0.25:
        console.print(
            "[yellow]warning[/]: the machine was busy with other work: absolute latencies are inflated; "
            "the interleaved ratios and the CPU-per-run rows are the robust part. Re-run on a quiet machine."
        )
    p = report["parameters"]
    console.print(
        f"[bold]parameters[/]: {p['samples']} samples per cell (interleaved), {p['warmup']} warm-up runs per cell, "
        f"throughput {p['throughput_runs']} runs at {p['concurrency']} in flight; eager start honoured: "
        + ", ".join(f"{k} {v['eager']}/{v['requested']}" for k, v in report["eager_start"].items())
    )
    table = Table(title="duraplan vs hand-written Temporal workflow (same server, same worker)", show_lines=False)
    table.add_column("metric")
    table.add_column("strategy")
    table.add_column("duraplan p50 / p95 / p99", justify="right")
    table.add_column("hand-written p50 / p95 / p99", justify="right")
    table.add_column("ratio (p50)", justify="right")
    table.add_column("absolute target")
    table.add_column("ratio target")
    for row in report["rows"]:
        dp, hw, ratio = _cells(row)
        table.add_row(
            row["metric"],
            row["strategy"],
            dp,
            hw,
            ratio,
            _verdict(row["abs_pass"], row["abs_target"]),
            _verdict(row["ratio_pass"], row["ratio_target"]),
        )
    console.print(table)


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=None, help="runs per system, strategy and plan size (default 40)")
    ap.add_argument("--throughput-runs", type=int, default=None, help="1-step runs per throughput cell (default 300)")
    ap.add_argument("--concurrency", type=int, default=50, help="runs in flight during throughput (default 50)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up runs per cell (default 5)")
    ap.add_argument("--quick", action="store_true", help="small samples: a smoke run (about a minute)")
    ap.add_argument(
        "--server",
        choices=("devserver", "testing"),
        default="devserver",
        help="devserver: executor.service.devserver.DevServer (default); testing: WorkflowEnvironment.start_local",
    )
    ap.add_argument("--sizes", default=None, help="plan sizes in steps (default 1,3,10; e.g. 1,3,10,100)")
    ap.add_argument("--json", metavar="PATH", help="also write every number (and raw samples) as JSON here")
    ap.add_argument("--markdown", metavar="PATH", help="also write the results table as markdown here")
    args = ap.parse_args(argv)
    quick = args.quick
    args.samples = args.samples or (10 if quick else 40)
    args.throughput_runs = args.throughput_runs or (100 if quick else 300)
    args.warmup = args.warmup if args.warmup is not None else (2 if quick else 5)
    return args


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.sizes:
        global SIZES
        SIZES = tuple(int(n) for n in args.sizes.split(","))
    env = environment()
    t0 = time.perf_counter()
    foreign = ForeignLoad()
    async with bench_env(server=args.server) as bench:
        console.log(f"server up: {bench.server}")
        env["server"] = bench.server
        await warm_up(bench, args.warmup)
        console.log(f"warmed up ({time.perf_counter() - t0:.1f}s)")
        lat = await latencies(bench, args.samples)
        thr = await throughputs(bench, args.throughput_runs, args.concurrency)
        eager = {
            wf: {"requested": bench.probe.requested[wf], "eager": bench.probe.eager[wf]}
            for wf in sorted(bench.probe.requested)
        }
    report = build_report(env, lat, thr, args, eager, foreign)
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print_report(report)
    console.print(f"total {report['elapsed_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        console.print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(report))
        console.print(f"wrote {args.markdown}")
    return report


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
