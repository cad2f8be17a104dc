"""CLI start-up: how long each everyday command takes before it does its work.

For each command, a fresh interpreter imports ``duraplan.cli`` plus what the command imports when
it runs, and reports the wall time of that and of the whole command where it needs no server
(``validate``). Medians of ``--repeat`` runs, with the load other processes put on the machine.

    PYTHONPATH=. .venv/bin/python -m bench.cli_startup
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# command -> the modules it imports when it runs (beside duraplan.cli itself)
COMMANDS: dict[str, list[str]] = {
    "validate": ["executor.lang.loader", "executor.lang.validate", "tools"],
    "status": ["executor.service.client", "rich.table"],
    "runs": ["executor.service.client", "rich.table"],
    "events send": ["executor.service.client"],
}
HEAVY = ("mcp", "litellm", "evals", "planner", "temporalio.client")
PLAN = {"name": "bench-cli", "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]}


def _loadavg() -> float:
    return os.getloadavg()[0]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_cost(modules: list[str]) -> tuple[float, list[str], float]:
    """Wall seconds to import duraplan.cli and ``modules`` in a fresh interpreter, the heavy modules
    that loaded, and the child's whole CPU time (less disturbed by other processes than wall time)."""
    cpu0 = _children_cpu()
    code = (
        "import sys, time; t = time.perf_counter(); import duraplan.cli\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(time.perf_counter() - t); print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    return float(out[0]), [m for m in out[1].split(",") if m], _children_cpu() - cpu0


def validate_wall(path: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "duraplan.cli", "validate", path], capture_output=True, check=True)
    return time.perf_counter() - t


def main(repeat: int) -> None:
    load = _loadavg()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(PLAN, f)
    print("| command | import wall (ms, p50) | interpreter CPU (ms, p50) | heavy modules loaded |")
    print("|---|---:|---:|---|")
    for command, modules in COMMANDS.items():
        runs = [import_cost(modules) for _ in range(repeat)]
        wall_ms = statistics.median(r[0] for r in runs) * 1000
        cpu_ms = statistics.median(r[2] for r in runs) * 1000
        print(f"| {command} | {wall_ms:.0f} | {cpu_ms:.0f} | {', '.join(runs[0][1]) or '-'} |")
    interp = statistics.median(_interpreter() for _ in range(repeat))
    wall = statistics.median(validate_wall(f.name) for _ in range(repeat))
    os.unlink(f.name)
    print(f"`duraplan validate` end to end: {wall * 1000:.0f} ms (a bare interpreter: {interp * 1000:.0f} ms)")
    print(f"load average (1 min) before / after: {load:.1f} / {_loadavg():.1f} on {os.cpu_count()} cores")


def _interpreter() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    main(ap.parse_args().repeat)
