"""Scheduling: a block of sibling steps runs as a DAG, each step through its life cycle.

Pure helpers (``ready``) are separate from the mixin so they can be unit-tested without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from temporalio import workflow

from executor.engine.base import EngineBase
from executor.engine.clock import now_iso
from executor.engine.frames import Drained, Frame, StepFailed
from executor.engine.models import TERMINAL_STATES, CompensationCall, StepError, StepRecord, StepState
from executor.lang.expressions import ExpressionError, truthy
from executor.lang.secret_refs import literal_refs
from executor.lang.validate import step_references
from schemas.plan import CodeStep, LlmStep, Step, ToolStep

__all__ = ["SchedulingMixin", "blocked_by", "cancel_all", "ready"]


def ready(waiting: dict[str, Step], deps: Callable[[Step], Iterable[str]], done: Callable[[str], bool]) -> list[str]:
    """Ids of waiting steps whose dependencies have all finished, in plan order."""
    return [sid for sid, step in waiting.items() if all(done(d) for d in deps(step))]


def blocked_by(steps: list[Step], deps: Callable[[Step], Iterable[str]]) -> dict[str, list[str]]:
    """Step id -> ids of the steps that wait for it."""
    out: dict[str, list[str]] = {}
    for step in steps:
        for dep in deps(step):
            out.setdefault(dep, []).append(step.id)
    return out


async def cancel_all(tasks: Any) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    for t in pending:
        with contextlib.suppress(BaseException):  # the first failure is already propagating
            await t


# (sibling ids, id -> ids of the steps that wait for it, id -> plan order, ids that wait for none)
BlockShape = tuple[set[str], dict[str, list[str]], dict[str, int], tuple[str, ...]]


class SchedulingMixin(EngineBase):
    def _run_block(self, steps: list[Step], frame: Frame) -> Awaitable[None]:
        """Run a block of sibling steps as a DAG: every ready step starts at once. To be awaited
        at once (or handed to one awaiting it, as a deadline does).

        A block of one step (a one-step plan, a foreach body, a switch branch) is that step:
        its coroutine is handed over as it is, not awaited by a DAG loop that would hold its own
        suspended frame and bookkeeping (sets, dicts: ~1 KB) while the step waits, which
        thousands of waiting runs add up. Same steps, same order, same commands as the loop,
        which awaits a lone ready step directly too (engine version 1 on); a draining block
        still goes through the loop (it raises Drained without starting the step)."""
        if len(steps) == 1 and self.inp.engine >= 1 and not self._draining:
            return self._run_step(steps[0], frame)
        return self._run_dag(steps, frame)

    async def _run_dag(self, steps: list[Step], frame: Frame) -> None:
        ids, dependents, order, roots = self._shape(steps)
        waiting = {s.id: s for s in steps}
        running: dict[str, asyncio.Task[None]] = {}
        candidates: dict[str, Step] | None = None  # None: every waiting step (the first pass)
        try:
            while waiting or running:
                finished: set[str] = set()
                starting: list[str] = []
                if candidates is None and not self.records and not self._draining:
                    starting = list(roots)  # nothing ran yet anywhere: what ``ready`` would find
                elif not self._draining:
                    pool = waiting if candidates is None else candidates
                    starting = ready(pool, lambda s: self._deps(s, ids), lambda d: self._done(frame.visible[d]))
                if len(starting) == 1 and not running and self.inp.engine >= 1:
                    # One step and nothing beside it (a chain): awaited here, not as a task the
                    # loop waits on, which costs each step of a chain a task and a wait.
                    # Runs before engine version 1 keep the task: their histories have its order.
                    sid = starting[0]
                    await self._run_step(waiting.pop(sid), frame)
                    finished.update(dependents.get(sid, ()))
                else:
                    for sid in starting:
                        running[sid] = asyncio.create_task(self._run_step(waiting.pop(sid), frame))
                    if not running:
                        if not self._draining:  # unreachable for validated plans (no cycles)
                            raise StepFailed(
                                frame.prefix or "(plan)",
                                StepError("Deadlock", f"steps {sorted(waiting)} can never start"),
                            )
                        raise Drained()
                    done, _ = await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                    for sid, task in list(running.items()):
                        if task in done:
                            del running[sid]
                            task.result()
                            finished.update(dependents.get(sid, ()))
                candidates = {sid: waiting[sid] for sid in sorted(finished & waiting.keys(), key=order.__getitem__)}
        except GeneratorExit:
            raise  # the worker drops this run from its cache: nothing may be awaited any more
        except BaseException:
            await cancel_all(running.values())
            raise

    def _shape(self, steps: list[Step]) -> BlockShape:
        """What a block's scheduling derives from its steps alone, once per block of the plan (kept
        beside the steps' dependencies, under the block's negated id: the plan holds the list)."""
        key = ~id(steps)
        shape: BlockShape | None = self._deps_cache.get(key)
        if shape is None:
            ids = {s.id for s in steps}
            # Only the dependents of steps that just finished can have become ready: checking those
            # (in plan order, as before) instead of every waiting step keeps a long block linear.
            dependents = blocked_by(steps, lambda s: self._deps(s, ids))
            order = {s.id: i for i, s in enumerate(steps)}
            roots = tuple(s.id for s in steps if not self._deps(s, ids))
            shape = self._deps_cache[key] = (ids, dependents, order, roots)
        return shape

    def _deps(self, step: Step, siblings: set[str]) -> set[str]:
        key = id(step)
        deps: set[str] | None = self._deps_cache.get(key)
        if deps is None:
            deps = self._deps_cache[key] = (step_references(step) & siblings) - {step.id}
        return deps

    def _done(self, path: str) -> bool:
        rec = self.records.get(path)
        return rec is not None and rec.state in TERMINAL_STATES

    async def _run_step(self, step: Step, frame: Frame) -> None:
        path = frame.prefix + step.id
        rec = self.records.get(path)
        if rec is not None and rec.state in TERMINAL_STATES:
            return  # ran before continue-as-new
        rec = self.records.setdefault(path, StepRecord())
        try:
            if step.when is not None and not truthy(self._eval(step.when, frame, "/when")):
                rec.state, rec.ended_at = "skipped", now_iso()
                return
            if self.paused:
                await workflow.wait_condition(lambda: not self.paused or self._draining)
            if self._draining:
                raise Drained()
            if not isinstance(step, ToolStep | CodeStep | LlmStep):  # those start when they get a slot
                rec.started_at = rec.started_at or now_iso()
                rec.state = "running"
            rec.output = await self._execute(step, path, frame, rec)
        except StepFailed as failure:
            if step.on_error == "continue":
                self._finish(rec, "failed", failure.error, step.kind)
                return
            self._finish(rec, "failed", failure.error, step.kind)
            raise
        except ExpressionError as exc:
            error = StepError("ExpressionError", str(exc))
            self._finish(rec, "failed", error, step.kind)
            if step.on_error == "continue":
                return
            raise StepFailed(path, error) from None
        self._finish(rec, "completed", None, step.kind)
        if step.compensate is not None:
            c = step.compensate
            self.compensations.append(
                CompensationCall(
                    path=path,
                    tool=c.tool,
                    args=self._render(c.args, frame, "/compensate/args"),
                    code=c.code,
                    inputs=self._render(c.inputs, frame, "/compensate/inputs"),
                    secrets=literal_refs(c.args) if c.tool else None,
                )
            )
        if self._should_continue_as_new():
            self._draining = True

    def _finish(self, rec: StepRecord, state: StepState, error: StepError | None, kind: str) -> None:
        rec.state, rec.error, rec.ended_at = state, error, now_iso()
        self._meter.step_finished(kind)

    def _parallel_limit(self) -> int:
        """The plan's max_parallel; with quotas, never above the tenant's in-flight cap, so one
        run's fan-out queues in its own workflow instead of at the worker's gate."""
        if self._quotas is None:
            return self.plan.limits.max_parallel
        return min(self.plan.limits.max_parallel, self._quotas.max_inflight_steps)

    def _count_step(self, path: str) -> None:
        self.executed += 1
        if self.executed > self.plan.limits.max_steps:
            raise StepFailed(
                path,
                StepError("StepBudgetExceeded", f"run exceeded limits.max_steps={self.plan.limits.max_steps}"),
            )
        if self._quotas is not None and self.executed > self._quotas.max_steps:
            raise StepFailed(
                path,
                StepError(
                    "StepBudgetExceeded",
                    f"run exceeded the tenant's quota max_steps_per_run={self._quotas.max_steps}",
                ),
            )

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self.inp.history_limit
