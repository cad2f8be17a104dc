"""What one more waiting run costs a worker, and what releasing one costs it: small N, slopes.

bench.concurrency's figures at 10,000 runs take minutes and most of the machine. The same per-run
costs show at small N as slopes between two counts of held runs, so changes can be compared on a
busy machine without that load. Per side, on a fresh dev server of its own, in a fresh worker
process (bench.concurrency's):

1. ``--n1`` runs started and held (every run waiting, the worker holding it): RSS (and, with
   ``--heap``, a tracemalloc snapshot after a full collection);
2. ``--n2`` runs in all: the same again. The slope between the two is the cost of one more held
   run, the worker's fixed cost (imports, pools, the first run's caches) cancelled out;
3. every run released and awaited: the worker's CPU per release (utime + stime of all its
   threads, the SDK's core included), and that every run completed with its own payload.

Sides: ``handwritten`` (bench.baseline's waiter), ``duraplan``, and with ``--base REF`` also
``base``: duraplan's worker importing executor/schemas/tools/planner from the git commit REF
(extracted to a temporary directory), for a before/after in the same run. ``--rounds`` repeats
the sides in alternating order. With ``--heap`` the biggest per-run allocation sites of each side
are printed (tracemalloc slows the worker ~2x and adds its own memory: its RSS slope is not
comparable with a run without it).

    PYTHONPATH=. .venv/bin/python -m bench.waiting_slope --n1 300 --n2 1300 --base main
    PYTHONPATH=. .venv/bin/python -m bench.waiting_slope --n1 300 --n2 1300 --heap --sides duraplan
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.concurrency import (
    PLAN,
    bounded,
    fresh_server,
    release,
    running_query,
    settle,
    starter,
    wait_all_waiting,
    worker_process,
)
from bench.harness import _proc_cpu, _server_pids, system_busy_s
from executor.service.client import Duraplan
from executor.service.config import Settings

CODE_PACKAGES = ("executor", "schemas", "tools", "planner", "duraplan", "evals")


@dataclass
class Slope:
    side: str
    n1: int
    n2: int
    rss1_mib: float
    rss2_mib: float
    rss_kib_per_run: float
    heap_kib_per_run: float | None
    malloc_kib_per_run: float  # of rss: glibc malloc's bytes in use (Rust core, protobuf, big objects)
    blocks_per_run: float  # Python's allocated blocks
    cpu_ms_per_start: float
    cpu_ms_per_release: float
    server_cpu_ms_per_release: float  # the dev server's, while the runs were released
    released_per_s: float
    lost: int
    top: list[tuple[str, float]] = field(default_factory=list)  # (file:line, bytes per run)


@contextlib.contextmanager
def code_at(ref: str | None) -> Iterator[Path | None]:
    """The duraplan packages as of git ``ref``, in a temporary directory (None: no ref)."""
    if ref is None:
        yield None
        return
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="duraplan-base-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", ref, *CODE_PACKAGES], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def heap_diff(first: Path, second: Path, runs: int, top: int) -> tuple[float, list[tuple[str, float]]]:
    a = tracemalloc.Snapshot.load(str(first))
    b = tracemalloc.Snapshot.load(str(second))
    stats = b.compare_to(a, "lineno")
    total = sum(s.size_diff for s in stats)
    sites = []
    for s in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        frame = s.traceback[0]
        where = frame.filename
        for marker in ("site-packages/", "/executor/", "/schemas/", "/bench/", "/tools/"):
            if marker in where:
                where = (
                    marker.strip("/") + "/" + where.split(marker, 1)[1]
                    if marker != "site-packages/"
                    else where.split(marker, 1)[1]
                )
                break
        sites.append((f"{where}:{frame.lineno}", s.size_diff / runs))
    return total / runs, sites


async def measure(
    side: str, n1: int, n2: int, in_flight: int, code: Path | None, heap: int, top: int, keep: Path | None
) -> Slope:
    worker_side = "duraplan" if side == "base" else side
    async with fresh_server() as server:
        client = server.client
        task_queue = f"slope-{side}-{uuid.uuid4().hex[:6]}"
        prefix = uuid.uuid4().hex[:6]
        ids = [f"{side[:2]}-{prefix}-{i}" for i in range(n2)]
        with tempfile.TemporaryDirectory(prefix="duraplan-slope-") as home:
            async with worker_process(
                worker_side, server.address, task_queue, Path(home), n2, code=code, trace=heap
            ) as worker:
                pid = worker.pid
                start = starter(
                    worker_side, client, Duraplan(client, Settings(home=Path(home), task_queue=task_queue)), task_queue
                )
                query = running_query(task_queue)
                snaps = [Path(home) / "snap1", Path(home) / "snap2"]

                async def hold(upto: int, done: int, snap: Path) -> tuple[list[Any], float, dict[str, int]]:
                    handles = await bounded(ids[done:upto], in_flight, start)
                    await wait_all_waiting(client, query, upto, 600, worker, n2)
                    await worker.snap(snap)
                    rss = await settle(pid)
                    return handles, rss, await worker.memory()

                cpu0 = _proc_cpu(pid)
                handles, rss1, mem1 = await hold(n1, 0, snaps[0])
                more, rss2, mem2 = await hold(n2, n1, snaps[1])
                handles += more
                cpu1 = _proc_cpu(pid)
                server1 = sum(_proc_cpu(p) for p in _server_pids())
                t0 = time.perf_counter()
                results = await bounded(
                    list(zip(ids, handles, strict=True)), in_flight, lambda p: release(worker_side, p)
                )
                release_s = time.perf_counter() - t0
                cpu2 = _proc_cpu(pid)
                server2 = sum(_proc_cpu(p) for p in _server_pids())
                lost = sum(1 for run_id, r in zip(ids, results, strict=True) if r != {"id": run_id})
                per_run, sites = heap_diff(snaps[0], snaps[1], n2 - n1, top) if heap else (None, [])
                if heap and keep is not None:  # for a closer look (e.g. grouped by traceback)
                    keep.mkdir(parents=True, exist_ok=True)
                    for snap in snaps:
                        shutil.copy(snap, keep / f"{side}-{snap.name}")
    return Slope(
        side=side,
        n1=n1,
        n2=n2,
        rss1_mib=round(rss1, 1),
        rss2_mib=round(rss2, 1),
        rss_kib_per_run=round((rss2 - rss1) * 1024 / (n2 - n1), 2),
        heap_kib_per_run=None if per_run is None else round(per_run / 1024, 2),
        malloc_kib_per_run=round((mem2.get("malloc_in_use", 0) - mem1.get("malloc_in_use", 0)) / 1024 / (n2 - n1), 2),
        blocks_per_run=round((mem2["blocks"] - mem1["blocks"]) / (n2 - n1), 1),
        cpu_ms_per_start=round((cpu1 - cpu0) * 1000 / n2, 2),
        cpu_ms_per_release=round((cpu2 - cpu1) * 1000 / n2, 2),
        server_cpu_ms_per_release=round((server2 - server1) * 1000 / n2, 2),
        released_per_s=round(n2 / release_s, 1),
        lost=lost,
        top=[(w, round(b, 1)) for w, b in sites],
    )


async def main(args: argparse.Namespace) -> None:
    if args.plan_pad:  # the plan every duraplan run is started with (bench.concurrency.starter)
        PLAN["steps"][0]["description"] = "x" * args.plan_pad
    sides = args.sides.split(",")
    if args.base and "base" not in sides:
        sides.append("base")
    results: dict[str, list[Slope]] = {s: [] for s in sides}
    busy0, wall0 = system_busy_s(), time.perf_counter()
    with code_at(args.base) as base_code:
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else list(reversed(sides)):
                code = base_code if side == "base" else None
                slope = await measure(side, args.n1, args.n2, args.in_flight, code, args.heap, args.top, args.keep)
                results[side].append(slope)
                print(json.dumps({k: v for k, v in asdict(slope).items() if k != "top"}), flush=True)
    busy = (system_busy_s() - busy0) / (time.perf_counter() - wall0)
    print(f"\nheld runs {args.n1} -> {args.n2}, {args.rounds} round(s); all processes kept {busy:.2f} cores busy")
    cols = [
        "rss_kib_per_run",
        "malloc_kib_per_run",
        "blocks_per_run",
        "heap_kib_per_run",
        "cpu_ms_per_start",
        "cpu_ms_per_release",
        "server_cpu_ms_per_release",
        "released_per_s",
    ]
    print("| side | " + " | ".join(cols) + " | lost |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for side, slopes in results.items():
        cells = []
        for col in cols:
            values = [getattr(s, col) for s in slopes if getattr(s, col) is not None]
            cells.append(f"{statistics.median(values):.2f}" if values else "—")
        print(f"| {side} | " + " | ".join(cells) + f" | {sum(s.lost for s in slopes)} |")
    if args.heap:
        for side, slopes in results.items():
            print(f"\n{side}: bytes per held run by allocation site (last round)")
            for where, size in slopes[-1].top:
                print(f"  {size:9.1f}  {where}")
    if args.json is not None:
        args.json.write_text(json.dumps({s: [asdict(x) for x in v] for s, v in results.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n1", type=int, default=300)
    parser.add_argument("--n2", type=int, default=1300)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--sides", default="handwritten,duraplan")
    parser.add_argument("--base", default=None, help="git ref: also measure duraplan's worker at that commit")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--heap", type=int, nargs="?", const=1, default=0, help="tracemalloc in the worker (frames per allocation)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="with --heap: copy the snapshots here")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--plan-pad",
        type=int,
        default=0,
        help="bytes of step description added to duraplan's plan: what a larger start input costs per held run",
    )
    asyncio.run(main(parser.parse_args()))
