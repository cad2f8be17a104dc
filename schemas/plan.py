"""Plan format v1: the typed model every duraplan plan is parsed into.

A plan is data, written by a person, a pipeline config or a model. The model here is the single
definition: ``schemas/plan.schema.json`` is generated from it (``make schema``) and a drift test
keeps the two equal. Semantic checks that JSON Schema cannot express (references, cycles, tool
arguments, limits) live in ``executor.lang.validate``.

Steps are a tagged union on ``kind``; the interpreter matches on it exhaustively.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DURATION_PATTERN",
    "MAX_SCRIPT_BYTES",
    "STEP_ID_PATTERN",
    "Case",
    "CodeStep",
    "Compensation",
    "Duration",
    "FailStep",
    "ForeachStep",
    "LlmStep",
    "Plan",
    "PlanLimits",
    "Replan",
    "Retry",
    "ScriptStep",
    "SetStep",
    "SleepStep",
    "Step",
    "SubplanStep",
    "SwitchStep",
    "ToolStep",
    "WaitForEventStep",
    "parse_duration",
]

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# "90", "1.5s", "250ms", "10m", "2h", "3d", "1d12h30m": seconds when unitless.
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$|^\s*\d+(\.\d+)?\s*$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Duration = Annotated[
    Annotated[str, Field(pattern=DURATION_PATTERN)] | Annotated[float, Field(ge=0)],
    Field(description='A duration: seconds as a number, or "250ms", "30s", "10m", "2h", "3d", "1d12h".'),
]
Expression = Annotated[
    str,
    Field(description="A JMESPath expression, with or without a surrounding ${...}.", min_length=1),
]
StepId = Annotated[str, Field(pattern=STEP_ID_PATTERN, description="Unique across the whole plan.")]


def parse_duration(value: str | float) -> float:
    """Seconds in a duration; raises ValueError on anything the schema would reject."""
    if isinstance(value, int | float):
        # NaN passes every comparison a caller bounds it with, then breaks timedelta() in workflow
        # code (a script's sleep(float('nan')) failed every workflow task: the run hung).
        try:
            seconds = float(value)
        except OverflowError:  # an int of hundreds of digits
            raise ValueError(f"duration {str(value)[:40]}... is too long") from None
        if not math.isfinite(seconds):
            raise ValueError(f"duration {value!r} is not a finite number")
        if seconds < 0:
            raise ValueError(f"duration {value!r} is negative")
        return seconds
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"duration {value!r} is not like 30s, 10m, 2h, 3d or 1d12h")
    total = 0.0
    for amount, unit in _DURATION_PART.findall(value.replace(" ", "")):
        total += float(amount) * _UNIT_SECONDS[unit or "s"]
    if not math.isfinite(total):  # hundreds of digits: float() says inf
        raise ValueError(f"duration {value[:40]!r}... is too long")
    return total


class _Model(BaseModel):
    # defer_build: a model's validator is built when first used, once for the whole tree. Built at
    # import, the models naming ``Step`` before it exists failed, then were rebuilt one by one, each
    # rebuild redoing the tree (~10 ms of every `duraplan validate` and process start).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Retry(_Model):
    """How a failed attempt is retried. Defaults are bounded: nothing retries forever."""

    max_attempts: int = Field(3, ge=1, le=100, description="Attempts in all, the first included.")
    initial_interval: Duration = "1s"
    backoff: float = Field(2.0, ge=1.0, le=10.0, description="Multiplier between intervals.")
    max_interval: Duration = "60s"
    non_retryable: list[str] = Field(
        default_factory=list,
        description="Error types (e.g. ValueError, HttpStatus404) that fail the step at once.",
    )


class Compensation(_Model):
    """An action undone in reverse completion order when the run fails or is cancelled."""

    tool: str | None = Field(None, description="A registered tool to call.")
    args: dict[str, Any] = Field(default_factory=dict, description="Tool arguments (templates).")
    code: str | None = Field(None, description="A sandboxed Python snippet to run instead.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Named inputs for `code`.")


class _StepBase(_Model):
    id: StepId
    description: str | None = None
    depends_on: list[StepId] = Field(
        default_factory=list,
        description="Steps that must finish first, besides those this step's templates reference.",
    )
    when: Expression | None = Field(None, description="Run only when this is truthy; else skipped.")
    retry: Retry | None = Field(
        None,
        description="Retry policy of tool, llm, code and script steps (a script: of each host call); "
        "an error on other kinds.",
    )
    timeout: Duration | None = Field(
        None,
        description="Per-attempt time limit of tool, llm and code steps, and of each segment of a script "
        "(wait_for_event: how long to wait).",
    )
    on_error: Literal["fail", "continue"] = Field(
        "fail", description="continue: record the error, output null, and go on."
    )
    compensate: Compensation | None = None
    execution: Literal["auto", "local", "remote"] = Field(
        "auto",
        description="Tool, llm, code and script steps: local: a Temporal local activity (no server round trip, "
        "for short steps); remote: a regular activity; auto: local for code and short tools, and for scripts "
        "that call only short tools.",
    )


class ToolStep(_StepBase):
    kind: Literal["tool"]
    tool: str = Field(description="Name of a registered tool.")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments; values may be templates.")


class LlmStep(_StepBase):
    kind: Literal["llm"]
    prompt: str = Field(description="User prompt template.")
    system: str | None = Field(None, description="System prompt template.")
    model: str | None = Field(None, description="litellm model name; the worker's default when absent.")
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the answer must satisfy; the answer is then parsed JSON."
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=200_000)


class CodeStep(_StepBase):
    kind: Literal["code"]
    code: str = Field(description="Python snippet; the value of its last expression is the output.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Globals bound before the snippet runs (templates)."
    )
    memory_mb: int | None = Field(None, ge=1, le=1024)
    cpu_seconds: float | None = Field(None, gt=0, le=300)


MAX_SCRIPT_BYTES = 64 * 1024  # a script's source: a program, not a data set (pass data in `inputs`)


class ScriptStep(_StepBase):
    kind: Literal["script"]
    code: str = Field(
        min_length=1,
        max_length=MAX_SCRIPT_BYTES,
        description="Python run in the sandbox; every host-function call (tool, llm, sleep, sleep_until, "
        "wait_for_event, parallel, now, random, compensate, fail) is a durable step of the run. The value of "
        "its last expression is the output.",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Globals bound before the script runs (templates)."
    )
    memory_mb: int | None = Field(None, ge=1, le=1024, description="Heap limit of each segment between host calls.")
    cpu_seconds: float | None = Field(
        None, gt=0, le=300, description="CPU time limit of each segment between host calls."
    )


class SleepStep(_StepBase):
    kind: Literal["sleep"]
    duration: Duration | None = None
    until: str | None = Field(None, description="ISO-8601 timestamp, or a template giving one.")


class WaitForEventStep(_StepBase):
    kind: Literal["wait_for_event"]
    event: str = Field(min_length=1, max_length=200, description="Event type to wait for.")
    timeout: Duration | None = Field("24h", description="How long to wait.")
    payload_schema: dict[str, Any] | None = Field(None, description="JSON Schema for the payload.")
    on_timeout: Literal["fail", "continue"] = Field("fail", description="continue: output is null and the run goes on.")


class ForeachStep(_StepBase):
    kind: Literal["foreach"]
    items: Expression = Field(description="Expression giving the list to iterate.")
    steps: list[Step] = Field(min_length=1, description="Run per item with `item` and `index`.")
    max_concurrency: int = Field(10, ge=1, le=1000)
    output: Expression | None = Field(None, description="Per-item output; the last nested step's output when absent.")


class Case(_Model):
    when: Expression
    steps: list[Step] = Field(min_length=1)


class SwitchStep(_StepBase):
    kind: Literal["switch"]
    cases: list[Case] = Field(min_length=1, description="The first case whose `when` holds runs.")
    default: list[Step] = Field(default_factory=list)


class SubplanStep(_StepBase):
    kind: Literal["subplan"]
    plan: Plan = Field(description="The child plan, run as its own durable run.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Child inputs (templates).")


class SetStep(_StepBase):
    kind: Literal["set"]
    value: Any = Field(description="A template or any JSON value with templates inside.")


class FailStep(_StepBase):
    kind: Literal["fail"]
    message: str = Field(description="Error message template.")
    error_type: str = "PlanFailed"


Step = Annotated[
    ToolStep
    | LlmStep
    | CodeStep
    | ScriptStep
    | SleepStep
    | WaitForEventStep
    | ForeachStep
    | SwitchStep
    | SubplanStep
    | SetStep
    | FailStep,
    Field(discriminator="kind"),
]


class PlanLimits(_Model):
    max_parallel: int = Field(10, ge=1, le=1000, description="Steps running at once.")
    # Above the reference product's 25,000: continue-as-new bounds history; tenants cap it by quota.
    max_steps: int = Field(10_000, ge=1, le=1_000_000, description="Executed steps per run.")
    deadline: Duration | None = Field(None, description="Wall-clock limit for the whole run.")


class Replan(_Model):
    """Opt-in durable replanning: when the run fails terminally, the planner revises the rest."""

    max_revisions: int = Field(2, ge=1, le=10, description="Revisions allowed per run.")
    goal: str | None = Field(None, description="What the plan is for; the description when absent.")
    model: str | None = Field(None, description="litellm model for replanning; the worker's default when absent.")


class Plan(_Model):
    schema_: str | None = Field(None, alias="$schema")
    name: str = Field(min_length=1, max_length=200)
    version: str = "1"
    description: str | None = None
    inputs: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema that run inputs must satisfy.",
    )
    steps: list[Step] = Field(min_length=1)
    output: Any = Field(None, description="The run's result: a template or JSON with templates.")
    limits: PlanLimits = Field(default_factory=lambda: PlanLimits.model_validate({}))
    replan: Replan | None = Field(
        None,
        description="Revise the plan on terminal failure; completed steps (by id) are reused, never re-run.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)
