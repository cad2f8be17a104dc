"""Shared data for the planner tests: a valid plan on built-in tools and real provider response shapes."""

from __future__ import annotations

import copy
from typing import Any

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"

# A valid plan on built-in tools: two independent steps, then a join that uses both outputs.
GOOD_PLAN: dict[str, Any] = {
    "name": "echo_and_count",
    "steps": [
        {"id": "greet", "kind": "tool", "tool": "debug.echo", "args": {"value": "hello"}},
        {"id": "count", "kind": "tool", "tool": "transform", "args": {"data": [1, 2, 3], "expression": "length(@)"}},
        {"id": "join", "kind": "set", "value": {"said": "${steps.greet.output.value}", "n": "${steps.count.output}"}},
    ],
    "output": "${steps.join.output}",
}
GOOD_OUTPUT = {"said": "hello", "n": 3}


def good_plan(**changes: Any) -> dict[str, Any]:
    plan = copy.deepcopy(GOOD_PLAN)
    plan.update(changes)
    return plan


def openai_completion(
    content: str, *, prompt_tokens: int = 1200, completion_tokens: int = 300, model: str = "gpt-4o-mini-2024-07-18"
) -> dict[str, Any]:
    """The body of a real OpenAI chat completion."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(plan: dict[str, Any], *, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    """The body of a real Anthropic message answering litellm's forced ``json_tool_call``."""
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "tool_use", "id": "toolu_test", "name": "json_tool_call", "input": plan}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 1500, "output_tokens": 400},
    }
