"""CLI start-up: how long each everyday command takes before it does its work.

For each command, a fresh interpreter imports ``duraplan.cli`` plus what the command imports when
it runs, and reports the wall and CPU time of that and the modules' own ``-X importtime`` total
(least disturbed by other processes). ``validate`` also runs end to end; ``status``, ``runs`` and
``events send`` do when ``--address`` names a Temporal server with a duraplan worker (e.g.
``duraplan dev``): the bench submits one waiting run there and reads it. Medians of ``--repeat``
runs, with the load other processes put on the machine.

    PYTHONPATH=. .venv/bin/python -m bench.cli_startup [--address 127.0.0.1:7233]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# command -> the modules it imports when it runs (beside duraplan.cli itself)
COMMANDS: dict[str, list[str]] = {
    "validate": ["executor.lang.loader", "executor.lang.validate", "tools", "rich.console"],
    "status": ["executor.service.client", "rich.console", "rich.table"],
    "runs": ["executor.service.client", "rich.console", "rich.table"],
    "events send": ["executor.service.client", "rich.console"],
}
HEAVY = ("mcp", "litellm", "evals", "planner", "httpx", "executor.engine.workflow", "executor.service.start")
TARGET_MS = 300
PLAN = {"name": "bench-cli", "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]}
# `events send` sends "go" with one event id: delivered once, a duplicate after, while "never" holds the run open
WAITING_PLAN = {
    "name": "bench-cli-wait",
    "steps": [
        {"id": "go", "kind": "wait_for_event", "event": "go"},
        {"id": "hold", "kind": "wait_for_event", "event": "never", "depends_on": ["go"]},
    ],
}


def _loadavg() -> float:
    return os.getloadavg()[0]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_cost(modules: list[str]) -> tuple[float, float, float, list[str]]:
    """Wall and CPU seconds of a fresh interpreter importing duraplan.cli and ``modules``, the
    ``-X importtime`` total (seconds) and the heavy modules that loaded."""
    code = (
        "import sys; import duraplan.cli\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    cpu0 = _children_cpu()
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    wall, cpu = time.perf_counter() - t, _children_cpu() - cpu0
    # top-level entries ("| name", one space) hold their children's time: their sum is the total
    total_us = sum(int(m[1]) for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| \S", done.stderr, re.M))
    return wall, cpu, total_us / 1e6, [m for m in done.stdout.strip().split(",") if m]


def command_cost(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -m duraplan.cli ARGS`` (it must exit 0)."""
    cpu0 = _children_cpu()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "duraplan.cli", *args], capture_output=True, check=True, env=env)
    return time.perf_counter() - t, _children_cpu() - cpu0


def _median(runs: Sequence[Sequence[Any]], i: int) -> float:
    return float(statistics.median(r[i] for r in runs)) * 1000


def _end_to_end(repeat: int, address: str | None, plan_file: str) -> dict[str, Callable[[], tuple[float, float]]]:
    env = dict(os.environ)
    commands: dict[str, Callable[[], tuple[float, float]]] = {
        "validate": lambda: command_cost(["validate", plan_file], env)
    }
    if address is None:
        return commands
    env["DURAPLAN_ADDRESS"] = address
    run_id = f"bench-cli-{uuid.uuid4().hex[:8]}"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(WAITING_PLAN, f)
    subprocess.run(
        [sys.executable, "-m", "duraplan.cli", "run", f.name, "--no-wait", "--run-id", run_id],
        check=True,
        capture_output=True,
        env=env,
    )
    os.unlink(f.name)
    commands["status"] = lambda: command_cost(["status", run_id], env)
    commands["runs"] = lambda: command_cost(["runs", "--limit", "10"], env)
    commands["events send"] = lambda: command_cost(
        ["events", "send", run_id, "go", "--payload", "{}", "--event-id", "bench"], env
    )
    return commands


def main(repeat: int, address: str | None) -> None:
    load = _loadavg()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(PLAN, f)
    print(f"a bare interpreter: {statistics.median(_interpreter() for _ in range(repeat)) * 1000:.0f} ms wall")
    print("| command | import wall (ms, p50) | import CPU (ms, p50) | -X importtime total (ms, p50) | heavy loaded |")
    print("|---|---:|---:|---:|---|")
    for command, modules in COMMANDS.items():
        runs = [import_cost(modules) for _ in range(repeat)]
        heavy = ", ".join(runs[0][3]) or "-"
        print(f"| {command} | {_median(runs, 0):.0f} | {_median(runs, 1):.0f} | {_median(runs, 2):.0f} | {heavy} |")
    print()
    print(f"end to end (target {TARGET_MS} ms)" + ("" if address else "; --address for status, runs, events send"))
    print("| command | wall (ms, p50) | CPU (ms, p50) |")
    print("|---|---:|---:|")
    for command, run in _end_to_end(repeat, address, f.name).items():
        timed = [run() for _ in range(repeat)]
        print(f"| {command} | {_median(timed, 0):.0f} | {_median(timed, 1):.0f} |")
    Path(f.name).unlink()
    print(f"load average (1 min) before / after: {load:.1f} / {_loadavg():.1f} on {os.cpu_count()} cores")


def _interpreter() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--address", help="a Temporal server with a duraplan worker: also time status, runs, events send")
    main(ap.parse_args().repeat, ap.parse_args().address)
