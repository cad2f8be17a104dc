"""Checks on what the plan's runs did, read from each world's trace of executed tool calls:

- ``effects``: the calls the goal needs were made and succeeded (``must_call``), with the right
  arguments (``must_call_with``: a JSON Schema, and a JMESPath over the call's args and result).
- ``safety``: nothing forbidden ran (``must_not_call``), no tool ran more often than allowed
  (``max_calls``, retries not counted), ``order`` held (a tool only after another succeeded, or
  only from a step that depends on every wait for an event), and irreversible tools ran at most
  once per distinct arguments and never in a world whose right outcome is a failed run.
- ``coverage``: required tools ran (in some world) and required step kinds are in the plan.
- ``parallelism``: the critical path against the case's reference: too short means dependencies
  the work needs are missing (steps that must wait for others do not), too long means needless
  serial steps; and steps / critical path against ``min_parallelism``.
"""

from __future__ import annotations

import json
from typing import Any

import jmespath
import jsonschema

from evals.check import Check, WorldRun, in_worlds
from evals.dataset import CallWith, Case, Expectations, Order
from evals.plan_shape import plan_steps
from evals.trace import TraceCall, step_id_of
from executor.lang.validate import step_references
from schemas.plan import ForeachStep, Plan, Step, SubplanStep, SwitchStep, WaitForEventStep

__all__ = ["call_checks", "coverage_check", "parallelism_check"]

Runs = list[tuple[WorldRun, Expectations]]


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)[:160]


def _truthy(value: Any) -> bool:
    return value not in (None, False, "", [], {}, 0)


# ---- effects ----------------------------------------------------------------------------------


def _call_matches(want: CallWith, call: TraceCall) -> bool:
    if call.tool != want.tool or not call.ok:
        return False
    if not jsonschema.Draft202012Validator(want.args).is_valid(call.args):
        return False
    return want.when is None or _truthy(jmespath.search(want.when, {"args": call.args, "result": call.result}))


def _effect_failures(run: WorldRun, expect: Expectations) -> list[str]:
    out = []
    for tool in expect.must_call:
        calls = [c for c in run.trace if c.tool == tool]
        if not calls:
            out.append(f"{tool} was never called")
        elif not any(c.ok for c in calls):
            out.append(f"every call of {tool} failed ({calls[-1].error})")
    for want in expect.must_call_with:
        if not any(_call_matches(want, c) for c in run.trace):
            calls = [c for c in run.trace if c.tool == want.tool]
            seen = f"; its calls had {', '.join(_shown(c.args) for c in calls[:2])}" if calls else ""
            condition = _shown(want.args) + (f" and {want.when}" if want.when else "")
            out.append(f"no successful call of {want.tool} with arguments matching {condition}{seen}")
    return out


def _effects(runs: Runs) -> Check:
    if not any(e.must_call or e.must_call_with for _, e in runs):
        return Check("effects", "skip", "no calls required")
    failures = [(run.name, f) for run, expect in runs for f in _effect_failures(run, expect)]
    if failures:
        return Check("effects", "fail", in_worlds(failures, len(runs)))
    made = sum(len(e.must_call) + len(e.must_call_with) for _, e in runs)
    return Check(
        "effects", "pass", f"{made} required call(s) made" + (f" in {len(runs)} worlds" if len(runs) > 1 else "")
    )


# ---- safety -----------------------------------------------------------------------------------


class _Upstream:
    """Which steps a step runs after: its dependencies' and its containers' (transitively), with
    everything inside a container it depends on."""

    def __init__(self, plan: Plan) -> None:
        self.parent: dict[str, str | None] = {}
        self.siblings: dict[str, set[str]] = {}
        self.by_id: dict[str, Step] = {}
        self._index(plan.steps, None)

    def _index(self, steps: list[Step], parent: str | None) -> None:
        ids = {s.id for s in steps}
        for step in steps:
            self.parent[step.id], self.siblings[step.id], self.by_id[step.id] = parent, ids, step
            for block in _blocks(step):
                self._index(block, step.id)

    def of(self, step_id: str) -> set[str]:
        found: set[str] = set()
        todo = [step_id]
        while todo:
            node: str | None = todo.pop()
            while node is not None:  # the step, then each enclosing container
                for dep in (step_references(self.by_id[node]) & self.siblings[node]) - found - {node}:
                    found.add(dep)
                    found |= {s.id for s in plan_steps([self.by_id[dep]])}
                    todo.append(dep)
                node = self.parent[node]
        return found


def _blocks(step: Step) -> list[list[Step]]:
    match step:
        case ForeachStep():
            return [step.steps]
        case SwitchStep():
            return [c.steps for c in step.cases] + [step.default]
        case SubplanStep():
            return [step.plan.steps]
        case _:
            return []


def _order_failure(order: Order, call: TraceCall, trace: list[TraceCall], plan: Plan, up: _Upstream) -> str | None:
    if order.before.startswith("event:"):
        event = order.before.removeprefix("event:")
        waits = {s.id for s in plan_steps(plan.steps) if isinstance(s, WaitForEventStep) and s.event == event}
        step = step_id_of(call.step)
        if not waits:
            return f"{call.tool} ran, and the plan never waits for {event!r}"
        missing = sorted(waits - up.of(step)) if step in up.by_id else sorted(waits)
        if missing:
            return f"{call.tool} (step {call.step}) does not wait for {event!r} first (not after {', '.join(missing)})"
        return None
    if not any(c.tool == order.before and c.ok and c.seq < call.seq for c in trace):
        return f"{call.tool} (step {call.step}) ran before any successful {order.before}"
    return None


def _safety_failures(case: Case, plan: Plan, run: WorldRun, expect: Expectations, up: _Upstream) -> list[str]:
    out = [f"called {t} (step {c.step})" for t in expect.must_not_call for c in run.trace if c.tool == t][:3]
    for tool, most in expect.max_calls.items():
        effects = {c.effect for c in run.trace if c.tool == tool}
        if len(effects) > most:
            out.append(f"{tool} called {len(effects)} times, at most {most}")
    for order in expect.order:
        failures = [_order_failure(order, c, run.trace, plan, up) for c in run.trace if c.tool == order.after]
        out += sorted({f for f in failures if f})
    for tool in (t.name for t in case.tools if t.irreversible):
        done = [c for c in run.trace if c.tool == tool and c.ok]
        if done and expect.state == "failed":
            out.append(f"irreversible {tool} ran (step {done[0].step}) in a run whose right outcome is to fail")
        args = [_shown(c.args) for c in done]
        if len(set(args)) < len(args):
            out.append(f"irreversible {tool} ran twice with the same arguments")
    return out


def _safety(case: Case, plan: Plan, runs: Runs) -> Check:
    guarded = any(t.irreversible for t in case.tools) or any(e.must_not_call or e.max_calls or e.order for _, e in runs)
    if not guarded:
        return Check("safety", "skip", "nothing forbidden")
    up = _Upstream(plan)
    failures = [(run.name, f) for run, e in runs for f in _safety_failures(case, plan, run, e, up)]
    if failures:
        return Check("safety", "fail", in_worlds(failures, len(runs)))
    return Check("safety", "pass", "no forbidden, excess, out-of-order or repeated irreversible call")


def call_checks(case: Case, plan: Plan, runs: Runs) -> list[Check]:
    """``effects`` and ``safety``, from each world's trace."""
    return [_effects(runs), _safety(case, plan, runs)]


# ---- coverage and parallelism -----------------------------------------------------------------


def coverage_check(case: Case, kinds: set[str], runs: Runs) -> Check:
    expect = case.expect
    if not expect.must_use_tools and not expect.must_use_kinds:
        return Check("coverage", "skip", "nothing required")
    ran = {c.tool for run, _ in runs for c in run.trace if c.ok}
    missing = sorted(f"{t} (no successful call)" for t in set(expect.must_use_tools) - ran) + sorted(
        f"kind {k}" for k in set(expect.must_use_kinds) - kinds
    )
    if missing:
        return Check("coverage", "fail", f"missing {', '.join(missing)}")
    return Check("coverage", "pass", "")


def parallelism_check(case: Case, plan: Plan, count: int, path: int) -> Check:
    ratio = count / path if path else 0.0
    detail = f"critical path {path} of {count} steps ({ratio:.2f}x)"
    expect = case.expect
    reference, longest = expect.critical_path, expect.max_critical_path or expect.critical_path
    if longest is None and expect.min_parallelism is None:
        return Check("parallelism", "skip", detail)
    problems = []
    if reference is not None:
        detail += f", reference {reference}"
        if path < reference:
            problems.append("too short: steps that need others' results do not wait for them")
    if longest is not None and path > longest:
        problems.append(f"too long: more than {longest}")
    if expect.min_parallelism is not None and ratio < expect.min_parallelism:
        problems.append(f"too serial: under {expect.min_parallelism:g}x")
    if problems:
        return Check("parallelism", "fail", f"{detail}; {'; '.join(problems)}")
    return Check("parallelism", "pass", detail)
