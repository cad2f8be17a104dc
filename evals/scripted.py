"""A case's scripted world: its tools as a registry that answers from the world (keyed on the
arguments) and records every call in a trace, and its llm steps' answers as a completion function,
so a plan's run is deterministic and what it did is on record."""

from __future__ import annotations

import json
from typing import Any

import jmespath
import jsonschema

from evals.dataset import Case, CaseTool, LlmScript, Rule, ToolBehaviour
from evals.trace import TraceCall
from evals.worlds import ResolvedWorld
from planner.provider import text_response
from tools.errors import ToolError
from tools.registry import Tool, ToolContext, ToolRegistry

__all__ = ["ScriptedLlm", "catalog_registry", "engine_registry"]


def _matches(rule: Rule, scope: dict[str, Any]) -> bool:
    if rule.match is not None:
        return jsonschema.Draft202012Validator(rule.match).is_valid(scope["args"])
    return rule.when is not None and _truthy(jmespath.search(rule.when, scope))


def _answer(name: str, behaviour: ToolBehaviour, args: dict[str, Any], call: int, tries: int) -> Any:
    if tries <= behaviour.fail_times:
        raise ToolError(f"{name}: scripted transient failure {tries}", error_type="Transient", retryable=True)
    scope = {"args": args, "call": call}
    for rule in behaviour.rules:
        if _matches(rule, scope):
            if rule.error is not None:
                raise ToolError(rule.error.message, error_type=rule.error.type, retryable=rule.error.retryable)
            return rule.returns
    if behaviour.strict:
        shown = json.dumps(args, sort_keys=True, default=str)[:200]
        raise ToolError(f"{name}: nothing found for {shown}", error_type="NotFound", retryable=False)
    if behaviour.error is not None:
        error = behaviour.error
        raise ToolError(error.message, error_type=error.type, retryable=error.retryable)
    return behaviour.returns


def _handler(spec: CaseTool, behaviour: ToolBehaviour, calls: dict[str, int], trace: list[TraceCall]) -> Any:
    async def handler(args: dict[str, Any], ctx: ToolContext) -> Any:
        # Calls are counted per run and tool, so retries and re-runs of one case see the same script.
        key = f"{ctx.tenant}/{ctx.run_id}/{spec.name}"
        calls[key] = call = calls.get(key, 0) + 1
        # Transient failures are counted per step path (a loop's items are distinct paths): which
        # parallel call fails is then the same in every replay, so the trace is too.
        at_step = f"{key}@{ctx.step_path}"
        calls[at_step] = tries = calls.get(at_step, 0) + 1
        entry = TraceCall(
            seq=len(trace) + 1, tool=spec.name, args=args, attempt=ctx.attempt, step=ctx.step_path, ok=False
        )
        trace.append(entry)
        try:
            result = _answer(spec.name, behaviour, args, call, tries)
        except ToolError as exc:
            entry.error = f"{exc.error_type}: {exc}"
            raise
        entry.ok, entry.result = True, result
        return result

    return handler


def _truthy(value: Any) -> bool:
    return value not in (None, False, "", [], {}, 0)


def catalog_registry(case: Case) -> ToolRegistry:
    """The tools the case's tenant is granted: what the planner is shown, as production's
    ``tools_for`` does (an ungranted tool is not offered, and a plan naming it does not validate)."""
    return ToolRegistry(
        Tool(t.name, t.description, t.args_schema, _handler(t, t.behaviour, {}, []), side_effects=t.side_effects)
        for t in case.tools
        if t.granted
    )


def engine_registry(case: Case, world: ResolvedWorld, trace: list[TraceCall]) -> ToolRegistry:
    """The granted tools answering from ``world``, each call appended to ``trace``."""
    calls: dict[str, int] = {}
    return ToolRegistry(
        Tool(
            t.name,
            t.description,
            t.args_schema,
            _handler(t, world.behaviours[t.name], calls, trace),
            side_effects=t.side_effects,
        )
        for t in case.tools
        if t.granted
    )


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
