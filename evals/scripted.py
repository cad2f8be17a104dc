"""A case's scripted world: its tools as a registry that answers from the case, and its llm steps'
answers as a completion function, so a plan's run is deterministic."""

from __future__ import annotations

import json
from typing import Any

import jmespath

from evals.dataset import Case, CaseTool, LlmScript
from planner.provider import text_response
from tools.errors import ToolError
from tools.registry import Tool, ToolContext, ToolRegistry

__all__ = ["ScriptedLlm", "catalog_registry", "engine_registry"]


def _handler(spec: CaseTool, calls: dict[str, int]) -> Any:
    behaviour = spec.behaviour

    async def handler(args: dict[str, Any], ctx: ToolContext) -> Any:
        # Calls are counted per run and tool, so retries and re-runs of one case see the same script.
        key = f"{ctx.tenant}/{ctx.run_id}/{spec.name}"
        calls[key] = call = calls.get(key, 0) + 1
        if call <= behaviour.fail_times:
            raise ToolError(f"{spec.name}: scripted transient failure {call}", error_type="Transient", retryable=True)
        scope = {"args": args, "call": call}
        for rule in behaviour.rules:
            if _truthy(jmespath.search(rule.when, scope)):
                if rule.error is not None:
                    raise ToolError(rule.error.message, error_type=rule.error.type, retryable=rule.error.retryable)
                return rule.returns
        if behaviour.error is not None:
            error = behaviour.error
            raise ToolError(error.message, error_type=error.type, retryable=error.retryable)
        return behaviour.returns

    return handler


def _truthy(value: Any) -> bool:
    return value not in (None, False, "", [], {}, 0)


def _registry(case: Case, *, granted_only: bool) -> ToolRegistry:
    calls: dict[str, int] = {}
    return ToolRegistry(
        Tool(
            spec.name,
            spec.description,
            spec.args_schema,
            _handler(spec, calls),
            side_effects=spec.side_effects,
        )
        for spec in case.tools
        if spec.granted or not granted_only
    )


def catalog_registry(case: Case) -> ToolRegistry:
    """Every tool of the case: what the planner is shown (ungranted ones included)."""
    return _registry(case, granted_only=False)


def engine_registry(case: Case) -> ToolRegistry:
    """The granted tools only: what the worker runs; a plan using another one does not start."""
    return _registry(case, granted_only=True)


class ScriptedLlm:
    """Answers llm steps: the first rule whose text the prompt contains, else the default."""

    def __init__(self, script: LlmScript) -> None:
        self._script = script
        self.prompts: list[str] = []

    async def __call__(self, **kwargs: Any) -> Any:
        messages = kwargs.get("messages") or []
        prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        self.prompts.append(prompt)
        answer = next((r.answer for r in self._script.rules if r.contains in prompt), self._script.default)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return text_response(text, str(kwargs.get("model", "scripted")), len(prompt) // 4 + 1, len(text) // 4 + 1)
