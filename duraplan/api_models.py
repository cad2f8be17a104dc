"""Request and response models of the interfaces (HTTP API, MCP tools, CLI ``--json``): one shape each.

``RunStatus`` and ``RunSummary`` are the engine's own (``executor.engine.run_status``): the workflow
query produces them and every surface shows them unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from executor.engine.run_status import RunStatus, RunSummary
from executor.lang.model_names import model_problem
from executor.service.client import NAME_PATTERN

__all__ = [
    "NAME_REGEX",
    "ChatMessageRequest",
    "ChatSubmitRequest",
    "EventAccepted",
    "EventRequest",
    "Issue",
    "PlanAttempt",
    "PlanRequest",
    "PlanResponse",
    "Problem",
    "RevisionResponse",
    "RunAction",
    "RunCreated",
    "RunList",
    "RunPlan",
    "RunResult",
    "RunStatus",
    "RunSummary",
    "SubmitRunRequest",
    "ValidationResult",
]

NAME_REGEX = NAME_PATTERN.pattern


def _chosen_model(model: str) -> str:
    problem = model_problem(model)
    if problem is not None:
        raise ValueError(problem)
    return model


# A model a client chooses: a name, never an endpoint (executor.lang.model_names).
ChosenModel = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_chosen_model)]
JsonObject = dict[str, Any]


class Issue(BaseModel):
    """One problem in a plan (or in run inputs): where, which step, and what."""

    pointer: str = Field(description="JSON pointer into the plan, e.g. /steps/1/args; '' for the whole plan.")
    message: str
    step: str | None = Field(default=None, description="Id of the step the problem is in, if any.")
    code: str = Field(default="invalid", description="Problem class, e.g. schema, unknown_reference, tool_args, cycle.")


class Problem(BaseModel):
    """An RFC 7807 problem detail (``application/problem+json``); extension members vary by ``type``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a stable URI, e.g. https://duraplan.dev/problems/not-found")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    issues: list[Issue] | None = Field(default=None, description="validation problems (type .../validation)")
    errors: list[JsonObject] | None = Field(default=None, description="malformed request parts (.../bad-request)")
    limit: str | None = Field(default=None, description="the exceeded quota (.../quota)")
    retry_after_s: float | None = Field(default=None, description="seconds until a retry may succeed (.../quota)")


class ValidationResult(BaseModel):
    valid: bool
    issues: list[Issue] = Field(description="Every problem found (empty when valid).")


class SubmitRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: JsonObject = Field(description="the plan (schemas/plan.schema.json)")
    session: str = Field(pattern=NAME_REGEX, description="the agent session the run belongs to")
    inputs: JsonObject = Field(default_factory=dict, description="run inputs, checked against the plan's inputs schema")
    run_id: str | None = Field(
        default=None, pattern=NAME_REGEX, description="idempotency: the same id, plan and inputs give the same run"
    )


class RunCreated(BaseModel):
    run_id: str
    tenant: str
    session: str | None = None
    created: bool = Field(description="false when an existing run with the same id, plan and inputs was returned")


class RunList(BaseModel):
    runs: list[RunSummary] = Field(description="Newest first: one row per run id (its current generation).")


class RunPlan(BaseModel):
    """The plan a run executes now and its step records keyed by path (``loop[0].inner``, ``branch.step``)."""

    run_id: str
    plan: JsonObject | None = Field(description="the latest revision; null when no worker answers")
    plan_hash: str | None = None
    revision: int | None = None
    records: dict[str, JsonObject] = Field(default_factory=dict)


class RunResult(BaseModel):
    run_id: str
    state: str
    output: Any = None


class EventRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, description="the event type a wait_for_event step waits for")
    payload: Any = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200, description="delivered once per id")


class EventAccepted(BaseModel):
    accepted: bool
    duplicate: bool = Field(description="True when this event_id was already delivered (counted once).")
    buffered: int = Field(description="Events the run holds that no step has taken yet.")
    run_id: str | None = None
    type: str | None = Field(default=None, description="the event type")


class RunAction(BaseModel):
    run_id: str
    action: str
    state: str | None = Field(default=None, description="the run's state after pause/resume, when known")


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=20_000)
    model: ChosenModel | None = Field(default=None, description="default: DURAPLAN_MODEL")
    max_attempts: int = Field(default=3, ge=1, le=10)
    budget_usd: float | None = Field(default=None, gt=0)


class PlanAttempt(BaseModel):
    number: int
    ok: bool
    issues: list[Issue]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class PlanResponse(BaseModel):
    plan: JsonObject
    model: str
    attempts: list[PlanAttempt]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class ChatMessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    model: ChosenModel | None = Field(default=None, description="used when the session starts")


class RevisionResponse(BaseModel):
    session: str
    revision: int
    plan: JsonObject
    diff: str = Field(description="unified diff against the previous revision")
    plan_hash: str
    message: str = ""
    model: str = ""
    attempts: list[JsonObject] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    runs: list[str] = Field(default_factory=list)


class ChatSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: JsonObject = Field(default_factory=dict)
    run_id: str | None = Field(default=None, pattern=NAME_REGEX)
