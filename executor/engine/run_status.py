"""The one run status every surface shows, and the one vocabulary of run and step states.

``RunStatus`` is produced by the workflow's ``status`` query (``executor.engine.status.assemble``)
and used unchanged by the Python client, the HTTP API (its OpenAPI schema), the MCP tools (their
output schema) and the CLI. Every ``--status`` filter takes a ``RunState``; every step shows a
``StepState``. Nothing else in the code base spells these lists (the vocabulary itself lives in
``executor.engine.states``, which has no pydantic, and is re-exported here).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from executor.engine.states import (
    FINAL_RUN_STATES,
    FINAL_STEP_STATES,
    OPEN_RUN_STATES,
    RUN_STATES,
    STEP_STATES,
    RunState,
    StepState,
)

__all__ = [
    "FINAL_RUN_STATES",
    "FINAL_STEP_STATES",
    "OPEN_RUN_STATES",
    "RUN_STATES",
    "STEP_STATES",
    "ForeachItemView",
    "ForeachProgress",
    "RevisionView",
    "RunState",
    "RunStatus",
    "RunSummary",
    "StepErrorView",
    "StepState",
    "StepView",
    "child_run_id",
    "parent_of",
    "settle_step",
]


class _Mapping(BaseModel):
    """Item access (``status["state"]``, ``.get``) for callers written against the old dicts."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, default)
        return default if value is None else value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dict):  # a view equals its JSON form
            return self.model_dump() == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


class StepErrorView(_Mapping):
    type: str
    message: str


class ForeachProgress(_Mapping):
    done: int = Field(description="items completed")
    total: int
    counts: dict[str, int] = Field(default_factory=dict, description="items by step state")


class ForeachItemView(_Mapping):
    index: int
    state: StepState
    steps: list[StepView] = Field(default_factory=list)


class StepView(_Mapping):
    """One step; containers nest their steps. ``path`` is the step's record path (``each[3].fetch``)."""

    id: str
    kind: str
    path: str
    state: StepState
    name: str | None = Field(default=None, description="a script's host call: the tool or event it names")
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    error: StepErrorView | None = None
    output_preview: str | None = None
    detail: dict[str, Any] | None = None
    progress: ForeachProgress | None = Field(default=None, description="foreach: items done, by state")
    branch: int | None = Field(default=None, description="switch: the taken case (-1: default)")
    steps: list[StepView] = Field(
        default_factory=list,
        description="nested steps: a switch's branch steps (untaken: skipped); host calls of future step kinds",
    )
    items: list[ForeachItemView] | None = Field(default=None, description="foreach: each item's steps, on request")
    child_run_id: str | None = Field(default=None, description="subplan: the child run (open it like any run)")
    calls: list[StepView] | None = Field(default=None, description="script: its host calls (the newest kept)")


class RevisionView(_Mapping):
    revision: int
    plan_hash: str
    reason: str | None = None
    at: str


class RunStatus(_Mapping):
    """A run's status: state, each step (nested ones included), the plan's hash and revisions."""

    # A newer worker's extra fields do not make an older client fall back to describe alone.
    model_config = ConfigDict(extra="ignore")

    run_id: str
    tenant: str
    session: str | None = None
    state: RunState
    plan_name: str | None = None
    plan_version: str | None = None
    plan_hash: str | None = None
    revision: int = 1
    revisions: list[RevisionView] = Field(default_factory=list)
    replan_errors: list[dict[str, str]] = Field(default_factory=list)
    paused: bool = False
    started_at: str | None = None
    started_at_server: str | None = None
    closed_at: str | None = None
    executed_steps: int = 0
    continued_as_new: int = 0
    generation: int = 0
    parent_run_id: str | None = Field(default=None, description="for a subplan's child run: its parent")
    buffered_events: int = 0
    error: StepErrorView | None = None
    failed_step: str | None = None
    compensation_errors: list[dict[str, str]] = Field(default_factory=list)
    steps: list[StepView] = Field(default_factory=list)
    result: Any = Field(default=None, description="MCP get_run: the plan's output once completed")

    def settled(self, state: str) -> RunStatus:
        """This status in ``state``; in a final state no step is left open (see ``settle_step``)."""
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        steps = [settle_step(s) for s in self.steps] if state in FINAL_RUN_STATES else self.steps
        return self.model_copy(update={"state": state, "steps": steps})


class RunSummary(_Mapping):
    """One row of a run listing: the run's current generation."""

    run_id: str
    tenant: str | None = None
    session: str | None = None
    plan_name: str | None = None
    plan_hash: str | None = None
    state: RunState
    generation: int = 0
    parent_run_id: str | None = None
    started_at: str | None = None
    closed_at: str | None = None


def parent_of(run_id: str) -> str | None:
    """The parent of a subplan's child run (``<parent>~<step path>~<generation>``); None for a top-level run."""
    return run_id.rsplit("~", 2)[0] if "~" in run_id else None


def child_run_id(parent: str, path: str, generation: int) -> str:
    """A subplan step's child run id: ``~`` never occurs in a submitted run id, so no run id collides."""
    return f"{parent}~{path}~{generation}"


def settle_state(state: str) -> StepState:
    """A step's state once its run has ended: never started is skipped, in flight is cancelled."""
    if state in FINAL_STEP_STATES:
        return state  # type: ignore[return-value]
    return "skipped" if state == "pending" else "cancelled"


def settle_step(view: StepView) -> StepView:
    items = None
    if view.items is not None:
        items = [
            i.model_copy(update={"state": settle_state(i.state), "steps": [settle_step(s) for s in i.steps]})
            for i in view.items
        ]
    progress = view.progress
    if progress is not None:
        counts: dict[str, int] = {}
        for state, n in progress.counts.items():
            counts[settle_state(state)] = counts.get(settle_state(state), 0) + n
        progress = progress.model_copy(update={"counts": counts})
    return view.model_copy(
        update={
            "state": settle_state(view.state),
            "steps": [settle_step(s) for s in view.steps],
            "calls": None if view.calls is None else [settle_step(c) for c in view.calls],
            "items": items,
            "progress": progress,
        }
    )


ForeachItemView.model_rebuild()
StepView.model_rebuild()
