"""A case's worlds resolved: each with its own inputs, tool behaviours, events, llm answers and
expectations, the case's own filling whatever a world does not give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evals.dataset import Case, CaseEvent, Expectations, LlmScript, ToolBehaviour, World

__all__ = ["DEFAULT_WORLD", "ResolvedWorld", "resolve_worlds", "world_expect"]

DEFAULT_WORLD = "default"


@dataclass(frozen=True)
class ResolvedWorld:
    name: str
    inputs: dict[str, Any]
    behaviours: dict[str, ToolBehaviour]
    events: list[CaseEvent]
    llm: LlmScript
    expect: Expectations


def world_expect(case: Case, world: World | None) -> Expectations:
    if world is None:
        return case.expect
    given = {name: getattr(world.expect, name) for name in world.expect.model_fields_set}
    return case.expect.model_copy(update=given)


def resolve_worlds(case: Case) -> list[ResolvedWorld]:
    behaviours = {t.name: t.behaviour for t in case.tools}
    if not case.worlds:
        return [ResolvedWorld(DEFAULT_WORLD, case.inputs, behaviours, case.events, case.llm, case.expect)]
    return [
        ResolvedWorld(
            world.name,
            case.inputs if world.inputs is None else world.inputs,
            {**behaviours, **world.tools},
            case.events if world.events is None else world.events,
            case.llm if world.llm is None else world.llm,
            world_expect(case, world),
        )
        for world in case.worlds
    ]
