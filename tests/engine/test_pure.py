"""The engine's pure parts, without a server: readiness, backoff, compaction, status assembly, the
state vocabulary, and the error codec."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from executor.engine.models import StepError, StepRecord
from executor.engine.retry import DEFAULT_RETRY, backoff_delay, throttle_delay, to_step_error
from executor.engine.run_status import (
    FINAL_RUN_STATES,
    FINAL_STEP_STATES,
    RUN_STATES,
    STEP_STATES,
    RunStatus,
    child_run_id,
    parent_of,
)
from executor.engine.scheduling import ready
from executor.engine.status import assemble, compact
from executor.errors import (
    InputsInvalid,
    PlanInvalid,
    PlanIssue,
    RunConflict,
    RunNotFound,
    from_failure,
    to_failure,
)
from executor.service.start import check_run_id
from executor.service.tenants import QuotaExceeded
from planner.errors import RateLimited, RepairExhausted
from schemas.plan import Plan, Retry


def activity_failure(cause: BaseException) -> ActivityError:
    """How an activity's failure reaches a workflow: an ActivityError caused by it."""
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="worker",
        activity_type="duraplan.tool",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


# ---- readiness ---------------------------------------------------------------------------------


def test_ready_starts_steps_whose_dependencies_finished_in_plan_order() -> None:
    plan = Plan.model_validate(
        {
            "name": "dag",
            "steps": [
                {"id": "a", "kind": "set", "value": 1},
                {"id": "b", "kind": "set", "value": 1, "depends_on": ["a"]},
                {"id": "c", "kind": "set", "value": 1},
                {"id": "d", "kind": "set", "value": 1, "depends_on": ["b", "c"]},
            ],
        }
    )
    waiting = {s.id: s for s in plan.steps}
    done: set[str] = set()

    def deps(step: Any) -> list[str]:
        return list(step.depends_on)

    assert ready(waiting, deps, done.__contains__) == ["a", "c"]
    done |= {"a"}
    assert ready(waiting, deps, done.__contains__) == ["a", "b", "c"]
    done |= {"b"}
    assert "d" not in ready(waiting, deps, done.__contains__)
    done |= {"c"}
    assert ready(waiting, deps, done.__contains__)[-1] == "d"


# ---- backoff -----------------------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_lengthened_by_retry_after() -> None:
    policy = Retry.model_validate({"initial_interval": "1s", "backoff": 2, "max_interval": "5s"})
    assert [backoff_delay(policy, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert backoff_delay(policy, 1, retry_after=3.5) == 3.5
    assert backoff_delay(policy, 3, retry_after=1.0) == 4.0
    assert backoff_delay(DEFAULT_RETRY, 1) > 0


def test_throttle_delay_grows_and_is_capped() -> None:
    assert [throttle_delay(n) for n in (1, 2, 3)] == [1.0, 1.5, 2.25]
    assert throttle_delay(50) == 5.0


def test_a_failure_chain_becomes_the_steps_error_with_its_retry_after() -> None:
    cause = ApplicationError("slow down", {"retry_after": 2.0}, type="Throttled")
    chain = activity_failure(cause)
    error, retry_after = to_step_error(chain)
    assert (error.type, error.message, error.retryable, retry_after) == ("Throttled", "slow down", True, 2.0)


# ---- compaction --------------------------------------------------------------------------------


def test_compaction_keeps_what_the_next_run_needs() -> None:
    records = {
        "each": StepRecord(state="completed", detail={"items": 2}),
        "each[0]": StepRecord(state="completed", output=1),
        "each[0].inner": StepRecord(state="completed", output=1),
        "loop": StepRecord(state="running", detail={"items": 2}),
        "loop[0]": StepRecord(state="completed", output=1),
        "loop[0].inner": StepRecord(state="completed", output=1),
        "loop[1].inner": StepRecord(state="running"),
        "later": StepRecord(state="pending"),
    }
    assert sorted(compact(records)) == ["each", "loop", "loop[0]", "loop[1].inner"]


# ---- status assembly ---------------------------------------------------------------------------

NESTED = Plan.model_validate(
    {
        "name": "nested",
        "steps": [
            {
                "id": "route",
                "kind": "switch",
                "cases": [{"when": "${`true`}", "steps": [{"id": "yes", "kind": "set", "value": 1}]}],
                "default": [{"id": "no", "kind": "set", "value": 0}],
            },
            {
                "id": "each",
                "kind": "foreach",
                "items": "${`[1, 2, 3]`}",
                "steps": [{"id": "work", "kind": "set", "value": "${item}"}],
            },
            {
                "id": "sub",
                "kind": "subplan",
                "plan": {"name": "child", "steps": [{"id": "x", "kind": "set", "value": 1}]},
            },
            {"id": "wait", "kind": "wait_for_event", "event": "go", "depends_on": ["route", "each", "sub"]},
            {"id": "after", "kind": "set", "value": 1, "depends_on": ["wait"]},
        ],
    }
)
RECORDS = {
    "route": StepRecord(state="completed", detail={"branch": 0}),
    "route.yes": StepRecord(state="completed", output=1),
    "each": StepRecord(state="running", detail={"items": 3}),
    "each[0]": StepRecord(state="completed", output=1),
    "each[0].work": StepRecord(state="completed", output=1),
    "each[1].work": StepRecord(state="failed", error=StepError("Boom", "no")),
    "each[2].work": StepRecord(state="running"),
    "sub": StepRecord(state="running", detail={"child_run_id": "r1~sub~0"}),
    "wait": StepRecord(state="waiting"),
}
RUN = {"run_id": "r1", "tenant": "t", "session": "s", "plan_hash": "sha256:x"}


def test_status_shows_switch_branches_foreach_items_and_the_child_run() -> None:
    status = assemble(run=RUN, plan=NESTED, records=RECORDS, state="running", items=True)
    steps = {s.id: s for s in status.steps}
    assert [(s.path, s.state) for s in steps["route"].steps] == [("route.yes", "completed"), ("route.no", "skipped")]
    assert steps["route"].branch == 0
    each = steps["each"]
    assert each.progress is not None
    assert (each.progress.done, each.progress.total) == (1, 3)
    assert each.progress.counts == {"completed": 1, "failed": 1, "running": 1}
    assert each.items is not None and [i.steps[0].path for i in each.items] == [f"each[{i}].work" for i in range(3)]
    assert steps["sub"].child_run_id == "r1~sub~0"
    assert (steps["wait"].state, steps["after"].state) == ("waiting", "pending")
    assert assemble(run=RUN, plan=NESTED, records=RECORDS, state="running").steps[1].items is None


def test_an_undecided_switch_shows_its_branches_pending() -> None:
    status = assemble(run=RUN, plan=NESTED, records={}, state="running")
    assert [s.state for s in status.steps[0].steps] == ["pending", "pending"]


@pytest.mark.parametrize("final", sorted(FINAL_RUN_STATES))
def test_an_ended_run_leaves_no_step_open(final: str) -> None:
    status = assemble(run=RUN, plan=NESTED, records=RECORDS, state="running", items=True).settled(final)
    states: list[str] = []

    def walk(views: Any) -> None:
        for v in views:
            states.append(v.state)
            walk(v.steps)
            for item in v.items or []:
                states.append(item.state)
                walk(item.steps)

    walk(status.steps)
    assert set(states) <= FINAL_STEP_STATES
    steps = {s.id: s for s in status.steps}
    assert (steps["wait"].state, steps["after"].state, steps["sub"].state) == ("cancelled", "skipped", "cancelled")
    assert steps["each"].progress is not None and steps["each"].progress.counts == {
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }


def test_the_state_vocabulary_is_one_list() -> None:
    assert "waiting" in RUN_STATES and set(RUN_STATES) >= FINAL_RUN_STATES
    assert set(STEP_STATES) >= FINAL_STEP_STATES
    assert RunStatus.model_json_schema()["properties"]["state"]["enum"] == list(RUN_STATES)
    with pytest.raises(ValueError):
        RunStatus(run_id="r", tenant="t", state="running").settled("sleeping")


def test_child_run_ids_open_like_run_ids_and_name_their_parent() -> None:
    child = child_run_id("order-1", "each[2].charge", 3)
    assert child == "order-1~each[2].charge~3"
    assert parent_of(child) == "order-1" and parent_of(child_run_id(child, "inner", 0)) == child
    assert parent_of("order-1") is None
    assert check_run_id(child) == child
    for bad in ("order-1~x", "a/b", "~x~0", "order-1~x~0/1"):
        with pytest.raises(InputsInvalid):
            check_run_id(bad)


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        PlanInvalid([PlanIssue("/steps/0", "bad", "a", "schema")]),
        InputsInvalid("run inputs", ["/x: required"]),
        RunNotFound("t", "r"),
        RunConflict("run 'r' already exists"),
        QuotaExceeded("runs_per_second", 1.5, tenant="t", detail="rate"),
        QuotaExceeded("max_steps_per_run", None, tenant="t", detail="too many"),
        RateLimited("429", retry_after=3.0),
        RepairExhausted(2, [PlanIssue("", "no steps")]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_round_trip_through_temporal(error: Any) -> None:
    failure = to_failure(error)
    assert failure.type == error.type_name
    assert failure.non_retryable is (not error.retryable)
    back = from_failure(activity_failure(failure))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back is not None and back.status_code() == error.status_code()


def test_errors_describe_their_problem() -> None:
    assert QuotaExceeded("max_event_bytes", None).status_code() == 413
    assert QuotaExceeded("runs_per_second", 1.0).status_code() == 429
    assert QuotaExceeded("runs_per_second", 1.0).retryable
    assert not QuotaExceeded("max_steps_per_run", None).retryable
    assert (RunNotFound.http_status, RunNotFound.problem) == (404, "not-found")
    assert from_failure(ApplicationError("no such", type="SomethingElse")) is None
    # the workflow's own refusals are looked up too
    assert isinstance(from_failure(ApplicationError("bad payload", type="EventPayloadInvalid")), InputsInvalid)
    too_large = from_failure(ApplicationError("too big", type="EventTooLarge"))
    assert isinstance(too_large, QuotaExceeded) and too_large.limit == "max_event_bytes"
