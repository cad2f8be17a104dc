"""The shape of a plan: its steps (nested ones included), their count, and its critical path."""

from __future__ import annotations

from executor.lang.validate import step_references
from schemas.plan import ForeachStep, Plan, Step, SubplanStep, SwitchStep

__all__ = ["critical_path", "plan_steps", "step_count"]


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
