"""Evaluators: pure functions from a case and what happened to pass / fail / skip with a reason.

Each looks at one property of a planning result: validity (first try, after repair), tool grants,
the step budget, and then what the plan *did*, from each world's run and its trace of executed
tool calls: the end state, output assertions, the calls it had to make (with which arguments), the
calls it must not make or not make before something else, coverage of required tools (that ran)
and step kinds, and its critical path against the case's reference. The judge's score is turned
into a check the same way.

The outcome checks (``OUTCOME_CHECKS``) are the ones a plan that does nothing must fail; where a
case gives one nothing to discriminate on (``discriminating``), it does not count in that check's
rate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jmespath

from evals.check import Check, Status, WorldRun, in_worlds
from evals.dataset import Case, Expectations, OutputAssertion
from evals.plan_shape import critical_path, plan_steps, step_count
from evals.run_checks import call_checks, coverage_check, parallelism_check
from evals.trace import TraceCall
from evals.worlds import DEFAULT_WORLD, resolve_worlds
from executor.lang.script import analyse
from schemas.plan import Plan

__all__ = [
    "CHECKS",
    "OUTCOME_CHECKS",
    "Check",
    "Outcome",
    "WorldRun",
    "assertion_failure",
    "critical_path",
    "discriminating",
    "evaluate",
    "plan_steps",
    "step_count",
]

CHECKS = (
    "valid_first_try",
    "valid_after_repair",
    "granted_tools",
    "step_budget",
    "runs_green",
    "output",
    "effects",
    "safety",
    "coverage",
    "parallelism",
    "judge",
)
# What the plan achieved (a do-nothing plan fails them), as against validity and guard checks.
OUTCOME_CHECKS = frozenset({"runs_green", "output", "effects", "coverage", "parallelism"})
JUDGE_PASS = 0.5


@dataclass
class Outcome:
    """What happened to one case: planning (attempts' validity), the plan, the runs, the judge.

    ``worlds`` holds one run per world of the case; without it, ``run_*`` are the one run's."""

    attempts_ok: list[bool]
    plan: Plan | None
    planning_error: str | None = None
    run_state: str | None = None
    run_output: Any = None
    run_error: str | None = None
    judge_score: float | None = None
    judge_reason: str | None = None
    judged: bool = False
    worlds: list[WorldRun] = field(default_factory=list)
    trace: list[TraceCall] = field(default_factory=list)

    def runs(self, case: Case) -> list[tuple[WorldRun, Expectations]]:
        """Each world's run with its expectations (one run in the case's world when not given)."""
        expected = {w.name: w.expect for w in resolve_worlds(case)}
        runs = self.worlds or [
            WorldRun(next(iter(expected), DEFAULT_WORLD), self.run_state, self.run_output, self.run_error, self.trace)
        ]
        return [(run, expected.get(run.name, case.expect)) for run in runs]


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
    runs = outcome.runs(case)
    checks.append(_runs_green(runs))
    checks.append(_output(runs))
    checks += call_checks(case, plan, runs)
    checks.append(coverage_check(case, {s.kind for s in steps}, runs))
    checks.append(parallelism_check(case, plan, count, critical_path(plan.steps)))
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


def _green_failure(run: WorldRun, expect: Expectations) -> str | None:
    want = expect.state
    if run.state == want and expect.error and expect.error not in (run.error or ""):
        return f"{want}, but the error does not say {expect.error!r}: {run.error}"
    if run.state == want:
        return None
    got = run.state or "not started"
    return f"{got}, expected {want}" + (f": {run.error}" if run.error else "")


def _runs_green(runs: list[tuple[WorldRun, Expectations]]) -> Check:
    failures = [(run.name, f) for run, expect in runs if (f := _green_failure(run, expect))]
    if failures:
        return Check("runs_green", "fail", in_worlds(failures, len(runs)))
    run, expect = runs[0]
    detail = expect.state + (f" ({run.error})" if expect.state == "failed" and run.error else "")
    return Check("runs_green", "pass", detail if len(runs) == 1 else f"as expected in {len(runs)} worlds")


def _output(runs: list[tuple[WorldRun, Expectations]]) -> Check:
    total = sum(len(expect.output) for _, expect in runs)
    if not total:
        return Check("output", "skip", "no assertions")
    failures: list[tuple[str, str]] = []
    for run, expect in runs:
        if not expect.output:
            continue
        if run.state != "completed":
            failures.append((run.name, "the run did not complete"))
            continue
        found = [f for f in (assertion_failure(a, run.output) for a in expect.output) if f]
        failures += [(run.name, f) for f in found]
    if failures:
        return Check("output", "fail", in_worlds(failures, len(runs)))
    where = f" in {len(runs)} worlds" if len(runs) > 1 else ""
    return Check("output", "pass", f"{total} assertion(s){where}")


def _judge(outcome: Outcome) -> Check:
    if not outcome.judged:
        return Check("judge", "skip", outcome.judge_reason or "not requested")
    if outcome.judge_score is None:
        return Check("judge", "fail", outcome.judge_reason or "no score")
    status: Status = "pass" if outcome.judge_score >= JUDGE_PASS else "fail"
    return Check("judge", status, f"{outcome.judge_score:.2f}: {outcome.judge_reason or ''}".strip())


# ---- discrimination ---------------------------------------------------------------------------

NOTHING = Plan.model_validate({"name": "nothing", "steps": [{"id": "nothing", "kind": "set", "value": None}]})


def discriminating(case: Case) -> frozenset[str]:
    """The outcome checks a plan that does nothing (one ``set`` step, no calls, null output, a
    completed run in every world) fails on this case: only those can tell a plan that did the work
    from one that did not, so only those count in the outcome checks' rates."""
    runs = [WorldRun(world.name, "completed") for world in resolve_worlds(case)]
    idle = evaluate(case, Outcome([True], NOTHING, worlds=runs))
    return frozenset(c.name for c in idle if c.name in OUTCOME_CHECKS and c.status == "fail")
