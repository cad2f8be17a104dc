"""CLI start-up: how long each everyday command takes before it does its work.

For each command, a fresh interpreter imports its entry (``duraplan.cli``; ``duraplan.quick`` for
``validate``, which that module answers before typer loads) plus what the command imports when it
runs, and reports the wall and CPU time of that and the modules' own ``-X importtime`` total
(least disturbed by other processes). ``status``, ``runs`` and ``events send`` are measured on both
of their paths: over Temporal's HTTP API (no Temporal SDK) and over the SDK (when no HTTP endpoint
is known). ``validate`` also runs end to end; the other three do against a Temporal server with a
duraplan worker: ``--dev`` starts one (``duraplan dev`` in a temporary home, whose dev-server
record gives the CLI its HTTP API), or ``--address`` names one (``--http-address`` its HTTP API).
The bench submits one waiting run there and reads it, alternating the two paths. Medians of
``--repeat`` runs, with the load other processes put on the machine. The project's bytecode is
compiled first, as installing a wheel does (with PYTHONDONTWRITEBYTECODE set, as in some shells and
containers, an editable checkout would otherwise compile its sources on every run: ~30 ms).

    PYTHONPATH=. .venv/bin/python -m bench.cli_startup [--dev | --address 127.0.0.1:7233 [--http-address URL]]
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.service.endpoints import DEV_RECORD

# command -> the modules it imports when it runs (beside its entry module, ENTRY)
_HTTP = ["executor.service.endpoints", "executor.service.http_runs"]
COMMANDS: dict[str, list[str]] = {
    # rich only when the output is a terminal (or a line rich would change): not in a pipe
    "validate": ["executor.lang.loader", "executor.lang.validate", "tools"],
    "status (HTTP)": [*_HTTP, "rich.console", "rich.table"],
    "runs (HTTP)": [*_HTTP, "rich.console", "rich.table"],
    "events send (HTTP)": [*_HTTP, "rich.console"],
    "status (SDK)": ["executor.service.client", "rich.console", "rich.table"],
    "runs (SDK)": ["executor.service.client", "rich.console", "rich.table"],
    "events send (SDK)": ["executor.service.client", "rich.console"],
}
ENTRY = {"validate": "duraplan.quick"}  # the others: duraplan.cli
PACKAGES = ("duraplan", "executor", "planner", "schemas", "tools", "evals")
HEAVY = (
    "typer",
    "temporalio",
    "mcp",
    "litellm",
    "evals",
    "planner",
    "httpx",
    "executor.engine.workflow",
    "executor.service.start",
)
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


def import_cost(modules: list[str], entry: str = "duraplan.cli") -> tuple[float, float, float, list[str]]:
    """Wall and CPU seconds of a fresh interpreter importing ``entry`` and ``modules``, the
    ``-X importtime`` total (seconds) and the heavy modules that loaded."""
    code = (
        f"import sys; import {entry}\n"
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


@dataclass(frozen=True)
class Server:
    address: str
    http_home: str | None  # a home whose dev-server record names the HTTP API
    http_address: str | None


def _end_to_end(server: Server | None, plan_file: str, scratch: str) -> dict[str, Callable[[], tuple[float, float]]]:
    env = dict(os.environ)
    commands: dict[str, Callable[[], tuple[float, float]]] = {
        "validate": lambda: command_cost(["validate", plan_file], env)
    }
    if server is None:
        return commands
    # The SDK path: no HTTP address, and a home without a dev-server record.
    sdk = {**env, "DURAPLAN_ADDRESS": server.address, "DURAPLAN_HOME": scratch}
    sdk.pop("DURAPLAN_HTTP_ADDRESS", None)
    http = {**sdk, "DURAPLAN_HOME": server.http_home or scratch}
    if server.http_address:
        http["DURAPLAN_HTTP_ADDRESS"] = server.http_address
    run_id = f"bench-cli-{uuid.uuid4().hex[:8]}"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(WAITING_PLAN, f)
    subprocess.run(
        [sys.executable, "-m", "duraplan.cli", "run", f.name, "--no-wait", "--run-id", run_id],
        check=True,
        capture_output=True,
        env=sdk,
    )
    os.unlink(f.name)
    argv = {
        "status": ["status", run_id],
        "runs": ["runs", "--limit", "10"],
        "events send": ["events", "send", run_id, "go", "--payload", "{}", "--event-id", "bench"],
    }
    for name, args in argv.items():  # HTTP and SDK of one command next to each other
        commands[f"{name} (HTTP)"] = functools.partial(command_cost, args, http)
        commands[f"{name} (SDK)"] = functools.partial(command_cost, args, sdk)
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_dev(home: str) -> tuple[subprocess.Popen[bytes], Server]:
    """``duraplan dev`` (Temporal with its UI, a worker) in ``home``; its dev-server record."""
    args = ["dev", "--port", str(_free_port()), "--api-port", str(_free_port()), "--home", home, "--in-memory"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "duraplan.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    record = Path(home) / DEV_RECORD
    deadline = time.monotonic() + 60
    while not record.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"duraplan dev did not start (exit {proc.poll()})")
        time.sleep(0.1)
    time.sleep(1.0)  # the worker starts polling after the server is up
    return proc, Server(address=json.loads(record.read_text())["address"], http_home=home, http_address=None)


def _compile_project() -> None:
    """Bytecode for the project's modules, as an installed wheel has it."""
    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)


def main(repeat: int, server: Server | None, dev: bool) -> None:
    _compile_project()
    load = _loadavg()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(PLAN, f)
    print("the project's bytecode compiled first (as a wheel install has it)")
    print(f"a bare interpreter: {statistics.median(_interpreter() for _ in range(repeat)) * 1000:.0f} ms wall")
    print("| command | import wall (ms, p50) | import CPU (ms, p50) | -X importtime total (ms, p50) | heavy loaded |")
    print("|---|---:|---:|---:|---|")
    for command, modules in COMMANDS.items():
        runs = [import_cost(modules, ENTRY.get(command, "duraplan.cli")) for _ in range(repeat)]
        heavy = ", ".join(runs[0][3]) or "-"
        print(f"| {command} | {_median(runs, 0):.0f} | {_median(runs, 1):.0f} | {_median(runs, 2):.0f} | {heavy} |")
    print()
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryDirectory() as dev_home:
        proc = None
        if dev:
            proc, server = _start_dev(dev_home)
        try:
            _print_end_to_end(repeat, server, f.name, scratch)
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)  # `duraplan dev` stops its Temporal server on SIGTERM
                proc.wait(timeout=30)
    Path(f.name).unlink()
    print(f"load average (1 min) before / after: {load:.1f} / {_loadavg():.1f} on {os.cpu_count()} cores")


def _print_end_to_end(repeat: int, server: Server | None, plan_file: str, scratch: str) -> None:
    note = "" if server else "; --dev or --address for status, runs, events send"
    print(f"end to end (target {TARGET_MS} ms){note}")
    print("| command | wall (ms, p50) | CPU (ms, p50) |")
    print("|---|---:|---:|")
    commands = _end_to_end(server, plan_file, scratch)
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeat):  # interleaved: load changes hit every command alike
        for name, run in commands.items():
            timed[name].append(run())
    for name, runs in timed.items():
        print(f"| {name} | {_median(runs, 0):.0f} | {_median(runs, 1):.0f} |")


def _interpreter() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dev", action="store_true", help="start `duraplan dev` to time status, runs, events send")
    ap.add_argument("--address", help="a Temporal server with a duraplan worker: also time status, runs, events send")
    ap.add_argument("--http-address", help="its HTTP API (the UI server's, e.g. http://127.0.0.1:8233)")
    ns = ap.parse_args()
    given = Server(ns.address, None, ns.http_address) if ns.address else None
    main(ns.repeat, given, ns.dev)
