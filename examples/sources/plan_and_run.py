"""Plan a goal over tenant acme's tools (its MCP source included) and run the plan durably.

    python examples/sources/plan_and_run.py                  # offline: a scripted stand-in for the model
    python examples/sources/plan_and_run.py openai/gpt-4o-mini   # a real model (OPENAI_API_KEY)

Needs the README's setup: `duraplan dev` running with DURAPLAN_TENANCY=1 and the shop source
registered and granted for acme.
"""

import asyncio
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from executor import Duraplan
from executor.service.process import exit_process
from planner import plan_goal
from planner.testing import ScriptedModel

GOAL = "Add 19 and 23, then open a support ticket titled 'restock' and report both."
# What a model answers for GOAL (used when no model is named): a plan over the source's tools.
SCRIPTED = {
    "name": "sum_and_ticket",
    "steps": [
        {"id": "sum", "kind": "tool", "tool": "shop.add", "args": {"a": 19, "b": 23}},
        {"id": "ticket", "kind": "tool", "tool": "shop.create_ticket", "args": {"title": "restock"}},
    ],
    "output": {"sum": "${steps.sum.output.sum}", "ticket": "${steps.ticket.output.ticket}"},
}


async def main(model: str | None) -> None:
    dp = await Duraplan.connect()  # DURAPLAN_TENANCY=1: the tenant registry under DURAPLAN_HOME
    tools = dp.tools_for("acme")  # what acme may use: granted built-ins and source tools
    completion = None if model else ScriptedModel(SCRIPTED)
    planned = await plan_goal(GOAL, tools=tools, model=model or "openai/gpt-4o-mini", completion=completion)
    print("plan:", json.dumps(planned.plan_json))
    run = await dp.submit_plan(planned.plan_json, tenant="acme", session="readme")
    print("result:", json.dumps(await run.result(timeout=60)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
    exit_process(0)  # like the CLI: the Temporal runtime's threads may crash interpreter shutdown
