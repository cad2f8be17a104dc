"""The planner may answer with a script step: the prompt describes it, a bad script is repaired
with the validator's line-precise finding, and a good one is accepted."""

from __future__ import annotations

from typing import Any

from planner import plan_goal
from planner.prompt import system_prompt
from planner.testing import ScriptedModel
from tools import ToolRegistry

MODEL = "openai/gpt-4o-mini"


def _script_plan(code: str) -> dict[str, Any]:
    return {
        "name": "count_until",
        "inputs": {"type": "object", "properties": {"limit": {"type": "integer"}}},
        "steps": [{"id": "loop", "kind": "script", "code": code, "inputs": {"limit": "${input.limit}"}}],
        "output": "${steps.loop.output}",
    }


GOOD = _script_plan(
    "n = 0\nwhile n < limit:\n    n = tool('kv.incr', key='n')['value']\n    if n % 10 == 0:\n        sleep('1s')\nn"
)
BAD = _script_plan("n = tool('kv.bump', key='n')\nn")


def test_the_system_prompt_describes_script_steps(registry: ToolRegistry) -> None:
    prompt = system_prompt(registry.catalog())
    assert '- kind: "script"' in prompt
    assert "## Script steps" in prompt
    for host in ("tool(", "llm(", "sleep(", "sleep_until(", "wait_for_event(", "parallel(", "now()", "random()"):
        assert host in prompt, host


async def test_a_script_answer_is_repaired_then_accepted(registry: ToolRegistry) -> None:
    model = ScriptedModel(BAD, GOOD)
    with model:
        result = await plan_goal("count to a limit, pausing every ten", tools=registry, model=MODEL, completion=model)
    assert result.plan_json == GOOD
    repair = model.calls[1].last_user_message
    assert "/steps/0/code (step 'loop'): line 1: unknown tool 'kv.bump'" in repair
