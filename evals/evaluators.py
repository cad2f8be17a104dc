"""Evaluators: pure functions from a case and what happened to pass / fail / skip with a reason.

Each looks at one property of a planning result: validity (first try, after repair), tool grants,
the step budget, the run's end state on the engine, output assertions, coverage of required tools
and step kinds, and parallelism (critical path against step count). The judge's score is turned
into a check the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import jmespath

from evals.dataset import Case, OutputAssertion
from executor.lang.script import analyse
from executor.lang.validate import step_references
from schemas.plan import (
    ForeachStep,
    Plan,
    Step,
    SubplanStep,
    SwitchStep,
)

__all__ = [
    "CHECKS",
    "Check",
    "Outcome",
    "assertion_failure",
    "critical_path",
    "evaluate",
    "plan_steps",
    "step_count",
]

Status = Literal["pass", "fail", "skip"]
CHECKS = (
    "valid_first_try",
    "valid_after_repair",
    "granted_tools",
    "step_budget",
    "runs_green",
    "output",
    "coverage",
    "parallelism",
    "judge",
)
JUDGE_PASS = 0.5


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str = ""


@dataclass
class Outcome:
    """What happened to one case: planning (attempts' validity), the plan, the run, the judge."""

    attempts_ok: list[bool]
    plan: Plan | None
    planning_error: str | None = None
    run_state: str | None = None
    run_output: Any = None
    run_error: str | None = None
    judge_score: float | None = None
    judge_reason: str | None = None
    judged: bool = False


# ---- plan shape -------------------------------------------------------------------------------


def plan_steps(steps: list[Step]) -> list[Step]:
    """Every step, nested ones and subplans' included."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        match step:
            case ForeachStep():
                out.extend(plan_steps(step.steps))
            case SwitchStep():
                for case in step.cases:
                    out.extend(plan_steps(case.steps))
                out.extend(plan_steps(step.default))
            case SubplanStep():
                out.extend(plan_steps(step.plan.steps))
            case _:
                pass
    return out


def step_count(plan: Plan) -> int:
    return len(plan_steps(plan.steps))


def critical_path(steps: list[Step]) -> int:
    """Longest chain of steps that must run one after another. A step weighs 1; a container weighs
    its inside: a foreach its body (items run in parallel), a switch its longest branch, a subplan
    its own critical path."""
    ids = {s.id for s in steps}
    by_id = {s.id: s for s in steps}
    memo: dict[str, int] = {}

    def weight(step: Step) -> int:
        match step:
            case ForeachStep():
                return critical_path(step.steps)
            case SwitchStep():
                branches = [c.steps for c in step.cases] + [step.default]
                return max((critical_path(b) for b in branches if b), default=1)
            case SubplanStep():
                return critical_path(step.plan.steps)
            case _:
                return 1

    def finish(step_id: str, seen: frozenset[str]) -> int:
        if step_id in memo:
            return memo[step_id]
        step = by_id[step_id]
        deps = (step_references(step) & ids) - {step_id} - seen  # validated plans have no cycles
        value = weight(step) + max((finish(d, seen | {step_id}) for d in deps), default=0)
        memo[step_id] = value
        return value

    return max((finish(s.id, frozenset()) for s in steps), default=0)


# ---- checks -----------------------------------------------------------------------------------


def assertion_failure(assertion: OutputAssertion, output: Any) -> str | None:
    """Why the assertion fails on ``output`` (None: it holds)."""
    try:
        value = jmespath.search(assertion.path, output)
    except jmespath.exceptions.JMESPathError as exc:
        return f"{assertion.path}: {exc}"
    shown = json.dumps(value, default=str)[:200]
    match assertion.test:
        case "equals":
            if value != assertion.equals:
                return f"{assertion.path} is {shown}, expected {json.dumps(assertion.equals, default=str)[:200]}"
        case "contains":
            ok = (isinstance(value, str) and isinstance(assertion.contains, str) and assertion.contains in value) or (
                isinstance(value, list) and assertion.contains in value
            )
            if not ok:
                return f"{assertion.path} is {shown}, which does not contain {json.dumps(assertion.contains)}"
        case "matches":
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if assertion.matches is None or not re.search(assertion.matches, text):
                return f"{assertion.path} is {shown}, which does not match /{assertion.matches}/"
        case "exists":
            if (value is not None) != assertion.exists:
                return f"{assertion.path} is {shown}, expected it {'to exist' if assertion.exists else 'absent'}"
        case "length":
            if not isinstance(value, list | str | dict) or len(value) != assertion.length:
                return f"{assertion.path} is {shown}, expected length {assertion.length}"
    return None


def evaluate(case: Case, outcome: Outcome) -> list[Check]:
    """Every check of ``CHECKS``, in that order."""
    expect = case.expect
    plan = outcome.plan
    checks = [
        _first_try(outcome),
        _after_repair(case, outcome),
    ]
    if plan is None:
        checks += [Check(name, "fail", "no valid plan") for name in CHECKS[2:-1]]
        checks.append(_judge(outcome))
        return checks
    steps = plan_steps(plan.steps)
    used_tools = {s.tool for s in steps if s.kind == "tool"}
    for s in steps:
        if s.kind == "script":  # the tools a script names (literally: the validator insists)
            used_tools |= analyse(s.code).tools
    checks.append(_granted(case, used_tools))
    count = len(steps)
    if expect.max_steps is None:
        checks.append(Check("step_budget", "skip", f"{count} steps; no budget set"))
    else:
        ok = count <= expect.max_steps
        checks.append(Check("step_budget", "pass" if ok else "fail", f"{count} steps, budget {expect.max_steps}"))
    checks.append(_runs_green(case, outcome))
    checks.append(_output(case, outcome))
    checks.append(_coverage(case, used_tools, {s.kind for s in steps}))
    checks.append(_parallelism(case, plan, count))
    checks.append(_judge(outcome))
    return checks


def _first_try(outcome: Outcome) -> Check:
    if not outcome.attempts_ok:
        return Check("valid_first_try", "fail", outcome.planning_error or "no answer")
    return Check("valid_first_try", "pass" if outcome.attempts_ok[0] else "fail", "")


def _after_repair(case: Case, outcome: Outcome) -> Check:
    rounds = len(outcome.attempts_ok)
    if outcome.plan is not None:
        return Check("valid_after_repair", "pass", f"{rounds} round(s)")
    return Check("valid_after_repair", "fail", outcome.planning_error or f"no valid plan in {rounds} round(s)")


def _granted(case: Case, used: set[str]) -> Check:
    denied = sorted(t.name for t in case.tools if not t.granted and t.name in used)
    if denied:
        return Check("granted_tools", "fail", f"uses ungranted {', '.join(denied)}")
    return Check("granted_tools", "pass", f"{len(used)} tool(s), all granted")


def _runs_green(case: Case, outcome: Outcome) -> Check:
    want = case.expect.state
    wanted_error = case.expect.error
    if outcome.run_state == want and wanted_error and wanted_error not in (outcome.run_error or ""):
        return Check("runs_green", "fail", f"{want}, but the error does not say {wanted_error!r}: {outcome.run_error}")
    if outcome.run_state == want:
        detail = f"{want}" + (f" ({outcome.run_error})" if want == "failed" and outcome.run_error else "")
        return Check("runs_green", "pass", detail)
    got = outcome.run_state or "not started"
    return Check(
        "runs_green", "fail", f"{got}, expected {want}" + (f": {outcome.run_error}" if outcome.run_error else "")
    )


def _output(case: Case, outcome: Outcome) -> Check:
    assertions = case.expect.output
    if not assertions:
        return Check("output", "skip", "no assertions")
    if outcome.run_state != "completed":
        return Check("output", "fail", "the run did not complete")
    failures = [f for f in (assertion_failure(a, outcome.run_output) for a in assertions) if f]
    if failures:
        return Check("output", "fail", "; ".join(failures))
    return Check("output", "pass", f"{len(assertions)} assertion(s)")


def _coverage(case: Case, tools: set[str], kinds: set[str]) -> Check:
    expect = case.expect
    if not expect.must_use_tools and not expect.must_use_kinds:
        return Check("coverage", "skip", "nothing required")
    missing = sorted(set(expect.must_use_tools) - tools) + sorted(
        f"kind {k}" for k in set(expect.must_use_kinds) - kinds
    )
    if missing:
        return Check("coverage", "fail", f"missing {', '.join(missing)}")
    return Check("coverage", "pass", "")


def _parallelism(case: Case, plan: Plan, count: int) -> Check:
    path = critical_path(plan.steps)
    ratio = count / path if path else 0.0
    detail = f"critical path {path} of {count} steps ({ratio:.2f}x)"
    expect = case.expect
    if expect.max_critical_path is None and expect.min_parallelism is None:
        return Check("parallelism", "skip", detail)
    too_long = expect.max_critical_path is not None and path > expect.max_critical_path
    too_serial = expect.min_parallelism is not None and ratio < expect.min_parallelism
    if too_long or too_serial:
        want = []
        if expect.max_critical_path is not None:
            want.append(f"critical path <= {expect.max_critical_path}")
        if expect.min_parallelism is not None:
            want.append(f">= {expect.min_parallelism:g}x")
        return Check("parallelism", "fail", f"{detail}; wanted {' and '.join(want)}")
    return Check("parallelism", "pass", detail)


def _judge(outcome: Outcome) -> Check:
    if not outcome.judged:
        return Check("judge", "skip", outcome.judge_reason or "not requested")
    if outcome.judge_score is None:
        return Check("judge", "fail", outcome.judge_reason or "no score")
    status: Status = "pass" if outcome.judge_score >= JUDGE_PASS else "fail"
    return Check("judge", status, f"{outcome.judge_score:.2f}: {outcome.judge_reason or ''}".strip())
