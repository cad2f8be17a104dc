"""The eval dataset format: cases of a goal, a scripted tool catalog and expectations.

A dataset is a YAML file with a ``$schema`` (``evals/datasets/dataset.schema.json``, generated from
these models by ``make schema``). Each case is what one planning request needs (the goal and the
tenant's tools), what makes its run deterministic (scripted tool behaviours, llm step answers,
events to deliver, run inputs) and what a good plan must satisfy.

Scripted tools answer from their ``behaviour``: the first rule whose ``when`` (a JMESPath
expression over ``{"args": ..., "call": n}``) is truthy, or whose ``match`` (a JSON Schema) the
arguments satisfy, gives the result or error; otherwise ``returns``. A tool with rules and no
``returns`` or ``error`` of its own fails an unmatched call as ``NotFound``, as a real service does
for an entity it does not know: the answer follows from the arguments, so a plan must pass the
right ones. ``fail_times`` fails each step's first calls with a retryable error (to exercise retries).

A case may declare ``worlds`` (see ``evals/worlds.py``): the same plan runs once per world, with
the world's inputs, tool behaviours, events and expectations, so an output that is a literal
rather than computed from the world fails in one of them.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import jmespath
import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.plan import Step
from tools.registry import TOOL_NAME_PATTERN

__all__ = [
    "CATEGORIES",
    "STEP_KINDS",
    "CallWith",
    "Case",
    "CaseEvent",
    "CaseTool",
    "Dataset",
    "DatasetInvalid",
    "Expectations",
    "LlmRule",
    "LlmScript",
    "Order",
    "OutputAssertion",
    "Rule",
    "ScriptedError",
    "ToolBehaviour",
    "World",
    "WorldExpect",
    "load_dataset",
]

Category = Literal["onboarding", "approvals", "fan-out", "etl", "ci", "incident", "support"]
CATEGORIES: tuple[str, ...] = typing.get_args(Category)
# Read from the plan schema, so a new step kind is usable in datasets as soon as plans have it.
STEP_KINDS: tuple[str, ...] = tuple(
    typing.get_args(model.model_fields["kind"].annotation)[0] for model in typing.get_args(typing.get_args(Step)[0])
)
StepKind = Literal[STEP_KINDS]  # type: ignore[valid-type]
WorldName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
CaseId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")]


class DatasetInvalid(ValueError):
    """A dataset file that does not load; the message names the file, case and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_jmespath(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"invalid JMESPath {expression!r}: {exc}") from None
    return expression


class ScriptedError(_Model):
    type: str = Field("ScriptedError", description="Error type (what plans name in retry.non_retryable).")
    message: str = Field(description="Error message.")
    retryable: bool = False


def _check_optional_jmespath(expression: str | None) -> str | None:
    return None if expression is None else _check_jmespath(expression)


def _check_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON Schema: {exc.message}") from None
    return schema


class Rule(_Model):
    when: str | None = Field(None, description='JMESPath over {"args": ..., "call": n}: applies when truthy.')
    match: dict[str, Any] | None = Field(None, description="JSON Schema: applies when the arguments satisfy it.")
    returns: Any = None
    error: ScriptedError | None = None

    _when = field_validator("when")(_check_optional_jmespath)
    _match = field_validator("match")(_check_schema)

    @model_validator(mode="after")
    def _one_condition(self) -> Rule:
        if (self.when is None) == (self.match is None):
            raise ValueError("give exactly one of when (JMESPath) or match (JSON Schema)")
        return self


class ToolBehaviour(_Model):
    returns: Any = Field(None, description="Result when no rule applies.")
    rules: list[Rule] = Field(default_factory=list)
    error: ScriptedError | None = Field(None, description="Fail every call with this (when no rule applies).")
    fail_times: int = Field(
        0, ge=0, le=10, description="Fail the first N calls of each step (each loop item) with a retryable error."
    )

    @property
    def strict(self) -> bool:
        """Rules and no fallback: a call no rule matches fails as NotFound (an unknown entity)."""
        return bool(self.rules) and not {"returns", "error"} & self.model_fields_set


class CaseTool(_Model):
    name: str = Field(pattern=TOOL_NAME_PATTERN.pattern)
    description: str = Field(min_length=1)
    args_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    side_effects: bool = False
    granted: bool = Field(True, description="False: in the catalog, but the tenant may not use it.")
    irreversible: bool = Field(
        False,
        description="An effect that cannot be undone: at most one call per distinct arguments, and none in a "
        "world whose right outcome is a failed run.",
    )
    behaviour: ToolBehaviour = Field(default_factory=lambda: ToolBehaviour.model_validate({}))


class LlmRule(_Model):
    contains: str = Field(min_length=1, description="Applies when the step's prompt contains this text.")
    answer: Any = Field(description="The model's answer (a string, or JSON for steps with an output_schema).")


class LlmScript(_Model):
    """Answers for the plan's llm steps at run time (the planner's own answers live in recordings)."""

    rules: list[LlmRule] = Field(default_factory=list)
    default: Any = "ok"


class CaseEvent(_Model):
    type: str = Field(min_length=1)
    payload: Any = None


_TESTS = ("equals", "contains", "matches", "exists", "length")


class OutputAssertion(_Model):
    """One check on the run's output: ``path`` (JMESPath, ``@`` for all of it) then exactly one test."""

    path: str = "@"
    equals: Any = Field(None, description="The value equals this.")
    contains: Any = Field(None, description="A string containing this text, or a list containing this item.")
    matches: str | None = Field(None, description="A regular expression the value (as JSON text) must match.")
    exists: bool | None = Field(None, description="The path gives a value (not null), or not.")
    length: int | None = Field(None, ge=0, description="A list, string or object of this length.")

    _path = field_validator("path")(_check_jmespath)

    @model_validator(mode="after")
    def _one_test(self) -> OutputAssertion:
        given = [name for name in _TESTS if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_TESTS)} (got {', '.join(given) or 'none'})")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.matches!r}: {exc}") from None
        return self

    @property
    def test(self) -> str:
        return next(name for name in _TESTS if name in self.model_fields_set)


class CallWith(_Model):
    """At least one successful call of ``tool`` whose arguments satisfy ``args`` (and ``when``)."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict, description="JSON Schema the call's arguments satisfy.")
    when: str | None = Field(None, description='JMESPath over {"args": ..., "result": ...}, truthy.')

    _when = field_validator("when")(_check_optional_jmespath)
    _args = field_validator("args")(_check_schema)


class Order(_Model):
    """Every call of ``after`` comes after ``before``: a tool (a successful call of it earlier in the
    trace), or ``event:<type>`` (the calling step depends on every wait for that event)."""

    before: str = Field(pattern=r"^(event:.+|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*)$")
    after: str = Field(pattern=TOOL_NAME_PATTERN.pattern)


class WorldExpect(_Model):
    """What a run must do; a world overrides the case's fields it gives."""

    state: Literal["completed", "failed"] = Field("completed", description="How the run should end.")
    error: str | None = Field(None, description="Text the run's error must contain (with state: failed).")
    output: list[OutputAssertion] = Field(default_factory=list)
    must_call: list[str] = Field(default_factory=list, description="Tools the run must call successfully.")
    must_not_call: list[str] = Field(default_factory=list, description="Tools the run must never call.")
    must_call_with: list[CallWith] = Field(default_factory=list)
    max_calls: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Most calls of a tool (retries not counted)."
    )
    order: list[Order] = Field(default_factory=list)


class Expectations(WorldExpect):
    max_steps: int | None = Field(None, ge=1, description="Step budget: steps in the plan, nested ones included.")
    must_use_tools: list[str] = Field(default_factory=list)
    must_use_kinds: list[StepKind] = Field(default_factory=list)
    max_critical_path: int | None = Field(
        None, ge=1, description="Longest chain of dependent steps a plan may have (the work is parallel)."
    )
    min_parallelism: float | None = Field(None, gt=0, description="Step count / critical path, at least.")
    critical_path: int | None = Field(
        None,
        ge=1,
        description="The reference plan's critical path: shorter means dependencies it needs are missing; longer "
        "(past max_critical_path, or this when that is not set) means needless serial steps.",
    )
    rubric: str | None = Field(None, description="What a model-as-judge scores the plan against.")


class World(_Model):
    """One variant of the case's world: what it gives replaces the case's (tools: per tool)."""

    name: WorldName
    inputs: dict[str, Any] | None = None
    tools: dict[str, ToolBehaviour] = Field(default_factory=dict, description="Behaviours replacing the case's.")
    events: list[CaseEvent] | None = None
    llm: LlmScript | None = None
    expect: WorldExpect = Field(
        default_factory=lambda: WorldExpect.model_validate({}), description="Fields given replace the case's."
    )


class Case(_Model):
    id: CaseId
    category: Category
    goal: str = Field(min_length=1)
    tools: list[CaseTool] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict, description="Run inputs.")
    events: list[CaseEvent] = Field(default_factory=list, description="Delivered to the run right after it starts.")
    llm: LlmScript = Field(default_factory=lambda: LlmScript.model_validate({}))
    max_attempts: int = Field(3, ge=1, le=10, description="Planner attempts (first try plus repairs).")
    expect: Expectations = Field(default_factory=lambda: Expectations.model_validate({}))
    worlds: list[World] = Field(
        default_factory=list, description="Run the plan once per world (none: once, in the case's own)."
    )

    @model_validator(mode="after")
    def _unique_tools(self) -> Case:
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tools listed twice: {', '.join(dupes)}")
        worlds = [w.name for w in self.worlds]
        if len(set(worlds)) != len(worlds):
            raise ValueError(f"worlds named twice: {', '.join(sorted({w for w in worlds if worlds.count(w) > 1}))}")
        for where, expect in [("expect", self.expect)] + [(f"worlds/{w.name}/expect", w.expect) for w in self.worlds]:
            unknown = sorted(_named_tools(expect) - set(names))
            if unknown:
                raise ValueError(f"{where} names tools not in the catalog: {', '.join(unknown)}")
        for world in self.worlds:
            unknown = sorted(set(world.tools) - set(names))
            if unknown:
                raise ValueError(f"worlds/{world.name}/tools names tools not in the catalog: {', '.join(unknown)}")
        return self


def _named_tools(expect: WorldExpect) -> set[str]:
    named = {*expect.must_call, *expect.must_not_call, *expect.max_calls, *(c.tool for c in expect.must_call_with)}
    named |= {o.after for o in expect.order} | {o.before for o in expect.order if not o.before.startswith("event:")}
    if isinstance(expect, Expectations):
        named |= set(expect.must_use_tools)
    return named


class Dataset(_Model):
    schema_: str | None = Field(None, alias="$schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")
    description: str | None = None
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Dataset:
        ids = [c.id for c in self.cases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"case ids listed twice: {', '.join(dupes)}")
        return self

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)


def load_dataset(path: str | Path) -> Dataset:
    """Parse and validate a dataset file; ``DatasetInvalid`` lists every problem with its location."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DatasetInvalid(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DatasetInvalid(f"{path}: not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetInvalid(f"{path}: a dataset is a mapping with name and cases")
    try:
        return Dataset.model_validate(raw)
    except ValidationError as exc:
        problems = [f"  {_where(raw, list(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise DatasetInvalid(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems)) from None


def _where(raw: dict[str, Any], loc: list[Any]) -> str:
    """``/cases/3/expect/max_steps (case 'ci-basic')``: the pointer, with the case named."""
    pointer = "/" + "/".join(str(p) for p in loc)
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = raw.get("cases")
        if isinstance(cases, list) and loc[1] < len(cases) and isinstance(cases[loc[1]], dict):
            return f"{pointer} (case {cases[loc[1]].get('id')!r})"
    return pointer
