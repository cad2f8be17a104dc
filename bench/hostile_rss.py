"""Worker RSS before and after the hostile corpus (issue 11): a worker that served oversized
errors, outputs, inputs, hostile Retry-After values and event floods must give the memory back.

    PYTHONPATH=. .venv/bin/python -m bench.hostile_rss               # 5 rounds of the corpus
    PYTHONPATH=. .venv/bin/python -m bench.hostile_rss --rounds 1    # smoke run, seconds

One dev server, one worker in this process (``running_worker``, as ``duraplan worker`` runs it).
RSS is read from /proc/self/status (VmRSS) after a warm-up round of honest runs (the baseline: the
runtime, the sandbox pool and the caches are then loaded), and again after the hostile rounds
and a garbage collection. Target: after / before <= 1.20. Every run must end in a final state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.hostile_corpus import EVENT_PLAN, FINAL_STATES, HOSTILE_PLANS
from executor import Duraplan, RunFailed, RunHandle, Settings, running_worker
from executor.errors import DuraplanError
from executor.service.devserver import DevServer

HONEST = {
    "name": "honest",
    "steps": [
        {"id": "c", "kind": "code", "code": "sum(range(1000))"},
        {"id": "t", "kind": "tool", "tool": "debug.echo", "args": {"value": "${steps.c.output}"}},
    ],
    "output": "${steps.t.output.value}",
}
TARGET = 1.20


def _malloc_trim() -> bool:
    """Hand freed heap pages back to the OS (glibc): tells retained-but-free memory from a leak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _final(handle: RunHandle) -> str:
    with contextlib.suppress(RunFailed):
        await asyncio.wait_for(handle.result(), 120)
    state: str = (await handle.status())["state"]
    return state


async def _flood(handle: RunHandle) -> None:
    for i in range(12):
        with contextlib.suppress(DuraplanError):
            await handle.send_event("go", {"n": i, "pad": "é" * (200 * 1024)})


async def hostile_round(dp: Duraplan, tenant: str) -> dict[str, str]:
    handles = {name: await dp.submit_plan(plan, tenant=tenant, session="rss") for name, plan in HOSTILE_PLANS.items()}
    waiting = await dp.submit_plan(EVENT_PLAN, tenant=tenant, session="rss")
    await _flood(waiting)
    handles["event_flood"] = waiting
    states = await asyncio.gather(*(_final(h) for h in handles.values()))
    return dict(zip(handles, states, strict=True))


async def honest_round(dp: Duraplan, tenant: str, runs: int) -> None:
    handles = [await dp.submit_plan(HONEST, tenant=tenant, session="warm") for _ in range(runs)]
    await asyncio.gather(*(h.result() for h in handles))


async def main(rounds: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="duraplan-rss-") as tmp:
        home = Path(tmp)
        async with DevServer(home, port=0, ui=False, db_file=home / "temporal.db") as server:
            settings = Settings(home=home, task_queue=f"rss-{uuid.uuid4().hex[:8]}")
            async with running_worker(server.client, settings):
                dp = Duraplan(server.client, settings)
                tenant = f"rss-{uuid.uuid4().hex[:6]}"
                await honest_round(dp, tenant, warmup)
                gc.collect()
                before = rss_mib()
                began = time.perf_counter()
                peak = before
                not_final: list[str] = []
                for _ in range(rounds):
                    states = await hostile_round(dp, tenant)
                    not_final += [name for name, state in states.items() if state not in FINAL_STATES]
                    peak = max(peak, rss_mib())
                await honest_round(dp, tenant, warmup)  # the worker still serves honest runs
                gc.collect()
                after = rss_mib()
                trimmed = _malloc_trim()
                after_trim = rss_mib()
    runs = rounds * (len(HOSTILE_PLANS) + 1)
    return {
        "rounds": rounds,
        "hostile_runs": runs,
        "seconds": round(time.perf_counter() - began, 1),
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_after_mib": round(after, 1),
        "after_over_before": round(after / before, 3),
        "rss_after_malloc_trim_mib": round(after_trim, 1) if trimmed else None,
        "target": TARGET,
        "runs_not_final": not_final,
        "ok": after / before <= TARGET and not not_final,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the whole hostile corpus")
    parser.add_argument("--warmup", type=int, default=20, help="honest runs before measuring (and after)")
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds, args.warmup))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)
