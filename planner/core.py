"""Goal in, validated plan out: ask the model, validate, feed the problems back, bounded.

``plan_goal`` holds one conversation: the system prompt (format, tools, rules), the goal (or, for
a revision, the current plan and the request), then for each invalid answer the answer itself and
a repair prompt listing the validator's findings. ``executor.lang.validate.check_plan`` is the judge; an
answer that is not JSON is a finding too. Every attempt is recorded with its findings, tokens and
cost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from executor.errors import PlanIssue
from executor.lang.depth import MAX_JSON_DEPTH
from executor.lang.validate import check_plan
from planner import provider
from planner.errors import BudgetExhausted, RepairExhausted
from planner.prompt import goal_prompt, repair_prompt, revision_prompt, system_prompt
from planner.provider import Completion
from schemas.plan import Plan
from tools.registry import ToolRegistry

__all__ = ["Attempt", "PlanResult", "parse_answer", "plan_goal"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Attempt:
    """One model answer: what the validator found in it (nothing: the plan was accepted), and its cost."""

    number: int
    issues: list[PlanIssue]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "ok": self.ok,
            "issues": [i.to_dict() for i in self.issues],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    plan_json: dict[str, Any]
    model: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(a.prompt_tokens for a in self.attempts)

    @property
    def completion_tokens(self) -> int:
        return sum(a.completion_tokens for a in self.attempts)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    def summary(self) -> str:
        """``planned in 2 attempt(s) with M: 1200 prompt + 300 completion tokens, $0.000450``."""
        return (
            f"planned in {len(self.attempts)} attempt(s) with {self.model}: {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens, ${self.cost_usd:.6f}"
        )


def parse_answer(text: str) -> tuple[dict[str, Any] | None, list[PlanIssue]]:
    """The JSON object in a model's answer (```json fences and surrounding prose tolerated)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    reason: str | None = None
    for candidate in candidates:
        try:
            value = json.loads(candidate.strip())
        except json.JSONDecodeError as exc:
            reason = reason or f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            continue
        # A model's answer is as hostile as any input: JSON nested past the parser's stack, or an
        # integer of thousands of digits, raised out of plan_goal (a 500 from POST /v1/plan).
        except RecursionError:
            reason = reason or f"it nests more than {MAX_JSON_DEPTH} levels deep"
            continue
        except ValueError as exc:
            reason = reason or str(exc).split(";")[0]
            continue
        if isinstance(value, dict):
            return value, []
        return None, [PlanIssue("", f"the answer is JSON but not an object ({type(value).__name__})", code="json")]
    return None, [PlanIssue("", f"the answer is not valid JSON: {reason or 'empty answer'}", code="json")]


async def plan_goal(
    goal: str,
    *,
    tools: ToolRegistry,
    model: str | None = None,
    max_attempts: int = 3,
    completion: Completion | None = None,
    budget_usd: float | None = None,
    previous: dict[str, Any] | None = None,
    api_base: str | None = None,
) -> PlanResult:
    """A plan for ``goal`` (or, with ``previous``, that plan revised as ``goal`` asks), validated.

    ``model`` defaults to ``DURAPLAN_MODEL``. ``completion`` replaces ``litellm.acompletion`` (same
    signature; tests pass a ``planner.testing.ScriptedModel``); with litellm itself, the provider
    key is checked first. Raises ``RepairExhausted`` when ``max_attempts`` answers were all invalid,
    ``BudgetExhausted`` when the attempts cost ``budget_usd`` before a valid plan came back, and
    the provider errors of ``planner.errors``.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    model = provider.resolve_model(model)
    if completion is None:
        provider.check_environment(model)
    if budget_usd is not None and budget_usd <= 0:
        raise BudgetExhausted(0.0, budget_usd, 0)
    request = goal_prompt(goal) if previous is None else revision_prompt(previous, goal)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(tools.catalog())},
        {"role": "user", "content": request},
    ]
    extra: dict[str, Any] = {"api_base": api_base} if api_base else {}
    fmt = provider.response_format(model)
    attempts: list[Attempt] = []
    issues: list[PlanIssue] = []
    for number in range(1, max_attempts + 1):
        response = await provider.call_model(
            completion, model=model, messages=list(messages), response_format=fmt, **extra
        )
        text = _content(response)
        usage = provider.usage_of(response, model)
        raw, issues = parse_answer(text)
        parsed: Plan | None = None
        if raw is not None:
            parsed, issues = check_plan(raw, tools=tools)
        attempts.append(Attempt(number, issues, usage.prompt_tokens, usage.completion_tokens, usage.cost_usd))
        if parsed is not None and not issues:
            body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
            return PlanResult(parsed, body, model, attempts)
        spent = sum(a.cost_usd for a in attempts)
        if number < max_attempts and budget_usd is not None and spent >= budget_usd:
            raise BudgetExhausted(spent, budget_usd, number)
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": repair_prompt(issues)})
    raise RepairExhausted(max_attempts, issues, attempts)


def _content(response: Any) -> str:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""
