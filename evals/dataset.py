"""The eval dataset format: cases of a goal, a scripted tool catalog and expectations.

A dataset is a YAML file with a ``$schema`` (``evals/datasets/dataset.schema.json``, generated from
these models by ``make schema``). Each case is what one planning request needs (the goal and the
tenant's tools), what makes its run deterministic (scripted tool behaviours, llm step answers,
events to deliver, run inputs) and what a good plan must satisfy.

Scripted tools answer from their ``behaviour``: the first rule whose ``when`` (a JMESPath
expression over ``{"args": ..., "call": n}``) is truthy gives the result or error; otherwise
``returns``. ``fail_times`` fails the first calls with a retryable error (to exercise retries).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import jmespath
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tools.registry import TOOL_NAME_PATTERN

__all__ = [
    "CATEGORIES",
    "Case",
    "CaseEvent",
    "CaseTool",
    "Dataset",
    "DatasetInvalid",
    "Expectations",
    "LlmRule",
    "LlmScript",
    "OutputAssertion",
    "Rule",
    "ScriptedError",
    "ToolBehaviour",
    "load_dataset",
]

Category = Literal["onboarding", "approvals", "fan-out", "etl", "ci", "incident", "support"]
CATEGORIES: tuple[str, ...] = typing.get_args(Category)
StepKind = Literal[
    "tool", "llm", "code", "script", "sleep", "wait_for_event", "foreach", "switch", "subplan", "set", "fail"
]
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


class Rule(_Model):
    when: str = Field(description='JMESPath over {"args": ..., "call": n}; the first truthy rule applies.')
    returns: Any = None
    error: ScriptedError | None = None

    _when = field_validator("when")(_check_jmespath)


class ToolBehaviour(_Model):
    returns: Any = Field(None, description="Result when no rule applies.")
    rules: list[Rule] = Field(default_factory=list)
    error: ScriptedError | None = Field(None, description="Fail every call with this (when no rule applies).")
    fail_times: int = Field(0, ge=0, le=10, description="Fail the first N calls with a retryable error.")


class CaseTool(_Model):
    name: str = Field(pattern=TOOL_NAME_PATTERN.pattern)
    description: str = Field(min_length=1)
    args_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    side_effects: bool = False
    granted: bool = Field(True, description="False: in the catalog, but the tenant may not use it.")
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


class Expectations(_Model):
    state: Literal["completed", "failed"] = Field("completed", description="How the run should end.")
    error: str | None = Field(None, description="Text the run's error must contain (with state: failed).")
    max_steps: int | None = Field(None, ge=1, description="Step budget: steps in the plan, nested ones included.")
    must_use_tools: list[str] = Field(default_factory=list)
    must_use_kinds: list[StepKind] = Field(default_factory=list)
    max_critical_path: int | None = Field(
        None, ge=1, description="Longest chain of dependent steps a plan may have (the work is parallel)."
    )
    min_parallelism: float | None = Field(None, gt=0, description="Step count / critical path, at least.")
    output: list[OutputAssertion] = Field(default_factory=list)
    rubric: str | None = Field(None, description="What a model-as-judge scores the plan against.")


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

    @model_validator(mode="after")
    def _unique_tools(self) -> Case:
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tools listed twice: {', '.join(dupes)}")
        unknown = sorted(set(self.expect.must_use_tools) - set(names))
        if unknown:
            raise ValueError(f"expect.must_use_tools names tools not in the catalog: {', '.join(unknown)}")
        return self


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
