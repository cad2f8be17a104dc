"""Parsed plans shared by the runs of one worker.

Thousands of runs of one plan each held their own parsed ``Plan`` and their own decoded plan JSON:
a waiting run's largest part after the SDK's own. Runs with the same plan hash and an equal plan
body share one of each instead. Safe to share because the plan model is frozen (no run changes
its plan; a revision is parsed apart) and deterministic because the parse is a pure function of
the body, which is compared in full, so a wrong or forged hash only misses the cache. The module
is passed through the workflow sandbox, so the cache is one per worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor.engine.frames import Frame
from executor.lang.secret_refs import literal_refs
from schemas.plan import Plan

__all__ = [
    "MAX_REMEMBERED_ARGS",
    "MAX_SHARED_PLANS",
    "PlanDerived",
    "plan_refs",
    "root_frame",
    "shared_derived",
    "shared_names",
    "shared_plan",
]

MAX_SHARED_PLANS = 512  # distinct plans kept; past it the cache starts over (runs keep theirs)

_parsed: dict[str, tuple[dict[str, Any], Plan]] = {}
_names: dict[tuple[str, ...], tuple[list[str], frozenset[str]]] = {}


@dataclass(slots=True)
class PlanDerived:
    """What the interpreter derives from a plan alone, shared like the plan: the event types its
    steps wait for (with their payload schemas) and, filled as blocks run, each step's
    dependencies among its siblings (keyed by the step object's id: the plan, held here and by
    every run of it, keeps those objects alive)."""

    plan: Plan
    event_schemas: dict[str, list[dict[str, Any]]]
    deps: dict[int, Any] = field(default_factory=dict)  # and each block's shape (scheduling._shape)
    root: Frame | None = None  # root_frame's, made on first use


_derived: dict[str, PlanDerived] = {}
# id(arguments) -> (the arguments, their literal secret references): see ``plan_refs``
_refs: dict[int, tuple[Any, list[str]]] = {}
MAX_REMEMBERED_ARGS = 4096


def shared_plan(digest: str, body: dict[str, Any]) -> tuple[dict[str, Any], Plan]:
    """``(body, parsed)``: the body and model already held for an equal plan, else ``body`` parsed."""
    hit = _parsed.get(digest)
    if hit is not None and hit[0] == body:
        return hit
    entry = (body, Plan.model_validate(body))
    if len(_parsed) >= MAX_SHARED_PLANS:
        _parsed.clear()
    _parsed[digest] = entry
    return entry


def shared_names(names: list[str]) -> tuple[list[str], frozenset[str]]:
    """``(names, as a set)`` already held for an equal list (a run's local tools: the same few
    names in every run of a worker), else ``names`` and a new set. The list is passed on (to
    children and continue-as-new), never changed."""
    key = tuple(names)
    hit = _names.get(key)
    if hit is None:
        if len(_names) >= MAX_SHARED_PLANS:
            _names.clear()
        hit = _names[key] = (names, frozenset(key))
    return hit


def shared_derived(
    digest: str, plan: Plan, event_schemas: Callable[[Plan], dict[str, list[dict[str, Any]]]]
) -> PlanDerived:
    """The derived parts of ``plan`` (a shared one: ``shared_plan``'s), computed once per plan
    object. Deterministic: ``event_schemas`` and the dependencies are pure functions of the plan."""
    hit = _derived.get(digest)
    if hit is not None and hit.plan is plan:
        return hit
    if len(_derived) >= MAX_SHARED_PLANS:
        _derived.clear()
    entry = _derived[digest] = PlanDerived(plan, event_schemas(plan))
    return entry


def root_frame(digest: str, plan: Plan) -> Frame:
    """The frame a run's top block starts in: each of the plan's steps visible by its own id, no
    extras. Nothing changes a frame (a nested block's is a copy: ``Frame.child``), so the runs of
    a shared plan share one (``shared_derived``'s), held for the run's whole life; any other plan
    (a revision) gets its own."""
    hit = _derived.get(digest)
    if hit is None or hit.plan is not plan:
        return Frame("", {s.id: s.id for s in plan.steps})
    if hit.root is None:
        hit.root = Frame("", {s.id: s.id for s in plan.steps})
    return hit.root


def plan_refs(args: Any) -> list[str]:
    """``literal_refs(args)`` for a plan's own step arguments, worked out once per arguments object
    in this worker instead of at every dispatch of the step. Only for arguments of a parsed plan,
    which no one changes (the model is frozen; rendering copies): the answer is a pure function of
    them, so deterministic. Keyed by identity; the entry holds the object, so its id is not reused."""
    hit = _refs.get(id(args))
    if hit is not None and hit[0] is args:
        return list(hit[1])  # the caller's own list (it goes into the activity's input)
    refs = literal_refs(args)
    if len(_refs) >= MAX_REMEMBERED_ARGS:
        _refs.clear()
    _refs[id(args)] = (args, refs)
    return list(refs)
