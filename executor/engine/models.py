"""Data that crosses the Temporal boundary: workflow and activity inputs, step records, events.

Plain dataclasses so Temporal's default JSON converter carries them; the plan itself travels as
its JSON dict and is parsed into ``schemas.plan.Plan`` inside the workflow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from executor.engine.run_status import FINAL_STEP_STATES, StepState

__all__ = [
    "ENGINE_VERSION",
    "TERMINAL_STATES",
    "Carry",
    "CodeCall",
    "CompensationCall",
    "EventRecord",
    "LlmCall",
    "ReplanRequest",
    "Revision",
    "RunInput",
    "RunQuotas",
    "ScriptSegment",
    "SendEventResult",
    "StartRunRequest",
    "StartRunResult",
    "StepError",
    "StepQuota",
    "StepRecord",
    "StepState",
    "ToolCall",
    "plan_hash",
    "record_from_json",
    "record_to_json",
]

# The engine's "done" is a final step state (the one list lives in executor.engine.run_status).
TERMINAL_STATES: frozenset[str] = FINAL_STEP_STATES


def plan_hash(plan: dict[str, Any]) -> str:
    """Content hash pinned to every run: sha256 of the canonical JSON of the plan."""
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)  # no __dict__: every run holds some (thousands of waiting runs)
class StepError:
    type: str
    message: str
    retryable: bool = False


@dataclass(slots=True)  # no __dict__: every run holds some (thousands of waiting runs)
class StepRecord:
    state: StepState = "pending"
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    error: StepError | None = None
    output: Any = None
    # foreach: number of items; switch: chosen branch; sleep: wake-up time (ISO).
    detail: dict[str, Any] | None = None


@dataclass
class EventRecord:
    type: str
    payload: Any
    event_id: str | None
    received_at: str


@dataclass
class CompensationCall:
    path: str
    tool: str | None
    args: dict[str, Any]
    code: str | None
    inputs: dict[str, Any]
    # ToolCall.secrets for the compensation's call (None: recorded before it existed).
    secrets: list[str] | None = None


def record_to_json(rec: StepRecord) -> dict[str, Any]:
    """Compact plain-JSON form: tens of thousands of these cross continue-as-new, and plain dicts
    decode an order of magnitude faster than dataclasses inside the workflow sandbox."""
    out: dict[str, Any] = {"s": rec.state}
    if rec.attempts:
        out["a"] = rec.attempts
    if rec.started_at:
        out["t0"] = rec.started_at
    if rec.ended_at:
        out["t1"] = rec.ended_at
    if rec.error is not None:
        out["e"] = [rec.error.type, rec.error.message, rec.error.retryable]
    if rec.output is not None:
        out["o"] = rec.output
    if rec.detail is not None:
        out["d"] = rec.detail
    return out


def record_from_json(data: dict[str, Any]) -> StepRecord:
    error = data.get("e")
    return StepRecord(
        state=data["s"],
        attempts=data.get("a", 0),
        started_at=data.get("t0"),
        ended_at=data.get("t1"),
        error=StepError(error[0], error[1], error[2]) if error else None,
        output=data.get("o"),
        detail=data.get("d"),
    )


@dataclass
class Carry:
    """State handed to the next run on continue-as-new: nothing executed is executed again."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> record_to_json
    events: list[EventRecord] = field(default_factory=list)
    seen_event_ids: list[str] = field(default_factory=list)
    compensations: list[CompensationCall] = field(default_factory=list)
    executed_steps: int = 0
    paused: bool = False
    started_at: str | None = None
    continued: int = 0
    # Finished items of running foreach loops, packed (executor.engine.carry): path -> runs.
    items: dict[str, list[list[Any]]] = field(default_factory=dict)
    # Set when the carry was too large for history: the rest is read from the worker's store.
    ref: str | None = None
    parts: int = 0


@dataclass
class RunQuotas:
    """The submitting tenant's limits, resolved from the registry at submit and pinned to the run
    (child runs and continued runs keep them): a quota change applies to runs started after it."""

    max_steps: int
    max_step_output_bytes: int
    max_event_bytes: int
    code_cpu_seconds: float
    code_memory_mb: int
    max_inflight_steps: int


@dataclass
class StepQuota:
    """What an activity enforces for one step: the tenant's in-flight cap and output size limit."""

    max_inflight: int | None = None
    max_output_bytes: int | None = None


# The engine version new runs start under (RunInput.engine). A behaviour change that must not
# alter runs already in flight takes a new ``workflow.patched`` id; when a release gathers such ids,
# bump this and let ``EngineBase._since`` treat them as given for runs started at the new version.
# 2: a run segment's end is recorded in the run's memo, not by a local activity (engine.metering);
#    a workflow task full of local activities is cut by one empty regular activity (TASK_CUT),
#    not by sending every further step of the task to a regular activity (engine.steps).
# 3: a first segment with no workflow-interpreted steps upserts no memo at its end: the reconciler
#    reads its outcome from the execution's close status (engine.metering, service.usage_reconcile).
# 4: a subplan's inputs are checked by executor.lang.json_schema's validator (RE2 patterns, local
#    references only), whose answer can differ from plain jsonschema's (\w, \d, $ before a newline).
# 5: a step that stops sleeping or waiting leaves the run's listing (DuraplanStatus) to the loop's
#    next turn, so a run an event lets complete upserts no `running` first (engine.steps._park).
# 6: a worker lost under a script's segment or host call, or under a compensation, is not an
#    attempt (as for a step since PATCH_WORKER_LOSS): re-dispatched, up to MAX_WORKER_LOSSES times.
ENGINE_VERSION = 6


@dataclass
class RunInput:
    plan: dict[str, Any]
    plan_hash: str
    tenant: str
    session: str
    run_id: str
    inputs: dict[str, Any] = field(default_factory=dict)
    # Tools the submitter's registry marks short and bounded: run as local activities.
    local_tools: list[str] = field(default_factory=list)
    generation: int = 0
    carry: Carry | None = None
    # Continue-as-new once history reaches this many events (the server also suggests it).
    history_limit: int = 8000
    search_attributes: bool = True
    revisions: list[Revision] = field(default_factory=list)
    # None without tenancy: plan limits and built-in defaults only.
    quotas: RunQuotas | None = None
    # Source tool name -> its catalog schema hash when the plan was made: a call to a tool that
    # changed since fails (ToolSchemaChanged) instead of sending arguments for another schema.
    tool_pins: dict[str, str] = field(default_factory=dict)
    # A carry whose JSON is longer than this goes to the worker's store (executor.engine.carry).
    carry_limit: int = 256 * 1024
    # The engine behaviour the run was started under (ENGINE_VERSION). 0: runs started before
    # versions existed, which ask ``workflow.patched`` at each change point; 1 or later take every
    # change up to that version as given (each patched() call costs every new run a marker and a
    # TemporalChangeVersion search-attribute upsert). Kept across continue-as-new and subplans.
    engine: int = 0
    # False: the deployment meters nothing (Settings.metering), so no run-end metering activity.
    metered: bool = True


@dataclass
class ToolCall:
    tenant: str
    run_id: str
    step_path: str
    attempt: int
    idempotency_key: str
    tool: str
    args: dict[str, Any]
    quota: StepQuota | None = None
    pin: str | None = None  # RunInput.tool_pins[tool], for source tools
    # JSON pointers in ``args`` of the {"$secret": NAME} references the plan itself wrote (or the
    # script's code built): only these are resolved, one arriving as data is refused
    # (executor.lang.secret_refs). None: scheduled by a worker before this field (all resolved).
    secrets: list[str] | None = None


@dataclass
class CodeCall:
    tenant: str
    run_id: str
    step_path: str
    code: str
    inputs: dict[str, Any]
    memory_mb: int | None = None
    cpu_seconds: float | None = None
    quota: StepQuota | None = None
    # The step's identity for metering (a retried step counts once, each attempt separately).
    generation: int = 0
    attempt: int = 0


@dataclass
class LlmCall:
    tenant: str
    run_id: str
    step_path: str
    prompt: str
    system: str | None = None
    model: str | None = None
    output_schema: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    quota: StepQuota | None = None
    generation: int = 0
    attempt: int = 0


@dataclass
class ScriptSegment:
    """One segment of a script step: resume the sandbox from ``snapshot`` (None: start the script)
    with ``resume`` (the last host call's outcome) and run to its next host call; a ``tool`` or
    ``llm`` call there is performed in the same activity (call number ``index``, ``attempt``)."""

    tenant: str
    run_id: str
    step_path: str
    code: str
    inputs: dict[str, Any]
    index: int  # number of host calls completed before this segment
    attempt: int
    idempotency_key: str  # of the script step; a call's key is this plus "#<index>"
    snapshot: str | None = None  # base64 of the compressed sandbox dump
    resume: dict[str, Any] | None = None  # {"value": ...} or {"error": [exception type, message]}
    memory_mb: int | None = None
    cpu_seconds: float | None = None
    max_snapshot_bytes: int | None = None
    quota: StepQuota | None = None
    # Host calls the run may still make (max_steps): a tool or llm call beyond it is not performed.
    calls_left: int | None = None


@dataclass
class ReplanRequest:
    tenant: str
    run_id: str
    goal: str
    plan: dict[str, Any]
    failed_step: str
    error: StepError
    completed: dict[str, Any]  # step path -> output of every completed step
    revision: int
    model: str | None = None
    # The run's pinned quotas: a revision must meet them (checked by the replan activity).
    quotas: RunQuotas | None = None


@dataclass(slots=True)  # no __dict__: every run holds some (thousands of waiting runs)
class Revision:
    revision: int
    plan_hash: str
    reason: str | None
    at: str


@dataclass
class SendEventResult:
    accepted: bool
    duplicate: bool
    buffered: int


@dataclass
class StartRunRequest:
    """Input of the ``duraplan.start_run`` activity: a run to start through the start path."""

    tenant: str
    session: str
    plan: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    task_queue: str | None = None  # the worker's own when None
    tool_pins: dict[str, str] = field(default_factory=dict)  # source tool -> catalog schema hash


@dataclass
class StartRunResult:
    run_id: str
    created: bool
