"""Code step start: a one-step code run end to end, minus the same run with a local tool step.

Both plans take ``input.x`` and return ``{"value": x}``: one with ``debug.echo`` as a local tool
step, one with a code step (the sandbox). Runs alternate, one at a time, after a warm-up; the
difference of the p50s is what starting a sandboxed code step costs over calling a tool, warm.

    PYTHONPATH=. .venv/bin/python -m bench.code_step --samples 60
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench.harness import ForeignLoad, bench_env, run_duraplan

TOOL_PLAN: dict[str, Any] = {
    "name": "bench-tool-step",
    "steps": [{"id": "s", "kind": "tool", "tool": "debug.echo", "args": {"value": "${input.x}"}, "execution": "local"}],
    "output": "${steps.s.output}",
}
CODE_PLAN: dict[str, Any] = {
    "name": "bench-code-step",
    "steps": [{"id": "s", "kind": "code", "code": "{'value': x}", "inputs": {"x": "${input.x}"}, "execution": "local"}],
    "output": "${steps.s.output}",
}


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def main(samples: int, warmup: int) -> None:
    async with bench_env() as bench:
        for _ in range(warmup):
            await run_duraplan(bench, TOOL_PLAN)
            await run_duraplan(bench, CODE_PLAN)
        load = ForeignLoad()
        tool: list[float] = []
        code: list[float] = []
        for i in range(samples):
            order = (TOOL_PLAN, CODE_PLAN) if i % 2 == 0 else (CODE_PLAN, TOOL_PLAN)
            for plan in order:
                sample = await run_duraplan(bench, plan)
                (tool if plan is TOOL_PLAN else code).append(sample.e2e_s)
        foreign = load.cores()
    print(f"\n{samples} runs each, one at a time; other processes kept {foreign:.2f} cores busy")
    print("| run | end to end p50 (ms) |")
    print("|---|---:|")
    print(f"| local tool step | {p50_ms(tool):.2f} |")
    print(f"| code step | {p50_ms(code):.2f} |")
    print(f"code step start (code - tool, p50): {p50_ms(code) - p50_ms(tool):.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.code_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main(args.samples, args.warmup))
