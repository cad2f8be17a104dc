"""Run a dataset: plan each case (live, record or replay), run the plan on the real engine with the
case's scripted tools, judge it if asked, and evaluate. Returns a ``Report``.

The engine is Temporal's time-skipping test server unless a client is given: a plan that sleeps
for days, or waits days for an event, finishes in milliseconds. A case's plan runs once per world
of the case, each run with its own worker and task queue (its tools answer from that world and
record every call in the world's trace), and the world's events are delivered right after its
run starts. The planner is shown only the tools the case's tenant is granted, as in production.
A live or record eval checks the model's credentials before the first case (``preflight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from temporalio.client import Client

from evals.dataset import Case, Dataset
from evals.evaluators import CHECKS, OUTCOME_CHECKS, Outcome, WorldRun, critical_path, discriminating, evaluate
from evals.plan_shape import step_count
from evals.preflight import preflight
from evals.recording import RecordedAnswer, Recorder, Recording, RecordingMissing, ReplayModel, recording_path
from evals.report import CaseResult, CheckResult, Report, WorldResult
from evals.scripted import ScriptedLlm, catalog_registry, engine_registry
from evals.trace import TraceCall
from evals.worlds import ResolvedWorld, resolve_worlds
from executor import Duraplan, DuraplanError, RunFailed, Settings, running_worker
from planner.core import Attempt, PlanResult, parse_answer, plan_goal
from planner.errors import PlannerError, RepairExhausted
from planner.prompt import goal_prompt, repair_prompt, system_prompt
from planner.worker import worker_parts

__all__ = ["DEFAULT_RECORDINGS", "EvalConfig", "Mode", "planner_prompt_sha256", "run_eval"]

Mode = Literal["live", "record", "replay"]
Completion = Callable[..., Awaitable[Any]]
DEFAULT_RECORDINGS = Path(__file__).parent / "recordings"
RUN_TIMEOUT_S = 120.0
JUDGE_PROMPT = """You grade workflow plans. Given a goal, a rubric and a JSON plan, answer only with
a JSON object {{"score": <number from 0 to 1>, "reason": "<one sentence>"}}.

Goal: {goal}
Rubric: {rubric}
Plan:
{plan}"""
GENERIC_RUBRIC = "The plan does what the goal asks, in a sensible order, with no needless steps."


@dataclass
class EvalConfig:
    dataset: Dataset
    model: str
    mode: Mode = "replay"
    recordings: Path = DEFAULT_RECORDINGS
    judge_model: str | None = None
    concurrency: int = 4  # with a client of a real server only; see run_eval
    case_ids: list[str] | None = None
    api_base: str | None = None
    run_timeout_s: float = RUN_TIMEOUT_S
    # Replaces litellm.acompletion for the planner and the judge in live and record modes (tests).
    completion: Completion | None = None
    # Where workers keep their tool store; a temporary directory for the eval when None.
    home: Path | None = None
    cases: list[Case] = field(init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("live", "record", "replay"):
            raise ValueError(f"mode must be live, record or replay, not {self.mode!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.case_ids:
            known = {c.id for c in self.dataset.cases}
            unknown = [i for i in self.case_ids if i not in known]
            if unknown:
                raise ValueError(f"no case {', '.join(map(repr, unknown))} in dataset {self.dataset.name!r}")
            self.cases = [c for c in self.dataset.cases if c.id in self.case_ids]
        else:
            self.cases = list(self.dataset.cases)


def planner_prompt_sha256() -> str:
    """Identifies the planner version: its prompts, rendered without a catalog or goal."""
    text = system_prompt([]) + goal_prompt("") + repair_prompt([])
    return hashlib.sha256(text.encode()).hexdigest()


async def run_eval(
    config: EvalConfig,
    *,
    client: Client | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Evaluate every case; ``on_case`` is called as each finishes (for progress).

    Without ``client``, on a time-skipping test server of its own, one case at a time: skipping
    is server-wide, so one case's days of sleep would time out another's running steps."""
    import litellm  # imported once up front: seconds that are no case's planning time

    litellm.suppress_debug_info = True  # no provider-help banners for recorded model names
    if config.mode != "replay" and config.completion is None:
        # A missing key fails here, naming the variable, not as every case's "Missing credentials".
        await preflight([config.model, *([config.judge_model] if config.judge_model else [])], config.api_base)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # the workers' tool store: a temporary directory unless the config names one
        home = config.home or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="duraplan-eval-")))
        results = await _run_cases(config, client, home, on_case)
    return Report(
        dataset=config.dataset.name,
        model=config.model,
        mode=config.mode,
        planner_prompt_sha256=planner_prompt_sha256(),
        started_at=started_at,
        cases=results,
        timings={"total_ms": round((time.perf_counter() - t0) * 1000, 1)},
    )


async def _run_cases(
    config: EvalConfig, client: Client | None, home: Path, on_case: Callable[[CaseResult], None] | None
) -> list[CaseResult]:
    async with _engine(client) as engine:
        gate = asyncio.Semaphore(config.concurrency if client is not None else 1)
        tenant = f"eval-{uuid.uuid4().hex[:12]}"  # runs of two evals on one server never meet

        async def one(case: Case) -> CaseResult:
            async with gate:
                try:
                    result = await _run_case(config, case, engine, tenant, home)
                except Exception as exc:  # one case's harness failure is that case's result, not the eval's end
                    result = _crashed(case, exc)
            if on_case is not None:
                on_case(result)
            return result

        return list(await asyncio.gather(*(one(c) for c in config.cases)))


@contextlib.asynccontextmanager
async def _engine(client: Client | None) -> AsyncIterator[Client]:
    if client is not None:
        yield client
        return
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    from executor.service.devserver import shutdown_env, start_time_skipping

    # The test server lacks a capability the SDK core warns about on every worker: errors only.
    quiet = TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")))
    env = await start_time_skipping(runtime=Runtime(telemetry=quiet))
    try:
        yield env.client
    finally:
        await shutdown_env(env)


# ---- one case ---------------------------------------------------------------------------------


@dataclass
class _Planned:
    result: PlanResult | None
    attempts: list[Attempt]
    error: str | None
    answers: list[RecordedAnswer]
    drift: int
    unhashed: int = 0


async def _run_case(config: EvalConfig, case: Case, client: Client, tenant: str, home: Path) -> CaseResult:
    timings: dict[str, float] = {}
    recording = _load_recording(config, case)
    t = time.perf_counter()
    planned = await _plan(config, case, recording)
    timings["planning_ms"] = round((time.perf_counter() - t) * 1000, 1)
    plan = planned.result.plan if planned.result else None
    outcome = Outcome(
        attempts_ok=[a.ok for a in planned.attempts],
        plan=plan,
        planning_error=planned.error,
    )
    judge_answer: RecordedAnswer | None = None
    if planned.result is not None:
        t = time.perf_counter()
        for world in resolve_worlds(case):
            outcome.worlds.append(await _execute(config, case, world, planned.result.plan_json, client, tenant, home))
        first = outcome.worlds[0]
        outcome.run_state, outcome.run_output, outcome.run_error = first.state, first.output, first.error
        timings["run_ms"] = round((time.perf_counter() - t) * 1000, 1)
        if config.judge_model is not None:
            outcome.judged = True
            judge_answer = await _judge(config, case, planned.result.plan_json, recording, outcome)
    if config.mode == "record":
        Recording(
            case=case.id,
            model=config.model,
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            planner=planned.answers,
            judge=judge_answer,
        ).dump(recording_path(config.recordings, config.dataset.name, config.model, case.id))
    checks = evaluate(case, outcome)
    telling = discriminating(case)
    return CaseResult(
        id=case.id,
        category=case.category,
        goal=case.goal,
        checks=[
            CheckResult(
                name=c.name, status=c.status, detail=c.detail, counted=c.name not in OUTCOME_CHECKS or c.name in telling
            )
            for c in checks
        ],
        plan=planned.result.plan_json if planned.result else None,
        attempts=[a.to_dict() for a in planned.attempts],
        planning_error=planned.error,
        run_state=outcome.run_state,
        run_output=outcome.run_output,
        run_error=outcome.run_error,
        step_count=step_count(plan) if plan else None,
        critical_path=critical_path(plan.steps) if plan else None,
        prompt_tokens=sum(a.prompt_tokens for a in planned.attempts),
        completion_tokens=sum(a.completion_tokens for a in planned.attempts),
        cost_usd=round(sum(a.cost_usd for a in planned.attempts), 8),
        model_latency_ms=round(sum(a.latency_ms for a in planned.answers), 1),
        prompt_drift=planned.drift,
        prompt_unhashed=planned.unhashed,
        authored=recording is not None and recording.authored,
        judge_score=outcome.judge_score,
        worlds=[
            WorldResult(name=w.name, run_state=w.state, run_output=w.output, run_error=w.error, trace=w.trace)
            for w in outcome.worlds
        ],
        timings=timings,
    )


def _crashed(case: Case, exc: Exception) -> CaseResult:
    error = f"harness error: {type(exc).__name__}: {exc}"
    return CaseResult(
        id=case.id,
        category=case.category,
        goal=case.goal,
        checks=[CheckResult(name=name, status="fail", detail=error) for name in CHECKS],
        planning_error=error,
    )


def _load_recording(config: EvalConfig, case: Case) -> Recording | None:
    if config.mode != "replay":
        return None
    try:
        return Recording.load(recording_path(config.recordings, config.dataset.name, config.model, case.id))
    except RecordingMissing:
        return None  # reported by _plan as this case's planning error


async def _plan(config: EvalConfig, case: Case, recording: Recording | None) -> _Planned:
    completion: Completion | None
    replay: ReplayModel | None = None
    recorder: Recorder | None = None
    if config.mode == "replay":
        if recording is None:
            path = recording_path(config.recordings, config.dataset.name, config.model, case.id)
            return _Planned(None, [], f"no recording at {path}; run with --record first", [], 0)
        replay = ReplayModel(recording.planner, config.model, f"case {case.id!r}")
        completion = replay
    else:
        recorder = Recorder(config.completion or _litellm())
        completion = recorder
    result: PlanResult | None = None
    attempts: list[Attempt] = []
    error: str | None = None
    try:
        result = await plan_goal(
            case.goal,
            tools=catalog_registry(case),
            model=config.model,
            max_attempts=case.max_attempts,
            completion=completion,
            api_base=config.api_base,
        )
        attempts = result.attempts
    except RepairExhausted as exc:
        attempts, error = exc.history, str(exc).splitlines()[0]
    except PlannerError as exc:
        error = str(exc)
    answers = replay.used if replay is not None else recorder.answers if recorder is not None else []
    if not attempts and answers:  # a provider error after some answers: keep their cost visible
        attempts = _attempts_of(answers, case)
    return _Planned(result, attempts, error, answers, replay.drift if replay else 0, replay.unhashed if replay else 0)


def _attempts_of(answers: list[RecordedAnswer], case: Case) -> list[Attempt]:
    from executor.lang.validate import check_plan

    out = []
    for number, answer in enumerate(answers, 1):
        raw, issues = parse_answer(answer.content)
        if raw is not None:
            _, issues = check_plan(raw, tools=catalog_registry(case))
        out.append(Attempt(number, issues, answer.prompt_tokens, answer.completion_tokens, answer.cost_usd))
    return out


def _litellm() -> Completion:
    import litellm

    completion: Completion = litellm.acompletion
    return completion


async def _execute(
    config: EvalConfig, case: Case, world: ResolvedWorld, plan: dict[str, Any], client: Client, tenant: str, home: Path
) -> WorldRun:
    """The plan's run on the engine in one scripted world: end state, output, error and trace."""
    settings = Settings(
        home=home,
        task_queue=f"eval-{case.id}-{uuid.uuid4().hex[:8]}",
        search_attributes=False,
        default_model="scripted",
    )
    trace: list[TraceCall] = []
    registry = engine_registry(case, world, trace)
    # The case id as run id (under a tenant of this eval's own): reports name no random ids.
    run_id = case.id if len(case.worlds) < 2 else f"{case.id}.{world.name}"
    async with running_worker(
        client, settings, registry=registry, completion=ScriptedLlm(world.llm), parts=[worker_parts]
    ):
        dp = Duraplan(client, settings, registry)
        try:
            handle = await dp.submit_plan(plan, tenant=tenant, session=case.id, inputs=world.inputs, run_id=run_id)
        except DuraplanError as exc:
            return WorldRun(world.name, "not started", None, str(exc), trace)
        rejected = []
        for i, event in enumerate(world.events):
            try:
                await handle.send_event(event.type, event.payload, event_id=f"{run_id}-{i}")
            except DuraplanError as exc:
                rejected.append(f"event {event.type!r} rejected: {exc}")
        try:
            output = await asyncio.wait_for(handle.result(), config.run_timeout_s)
        except RunFailed as exc:
            return WorldRun(world.name, exc.status, None, "; ".join([str(exc), *rejected]), trace)
        except TimeoutError:
            with contextlib.suppress(DuraplanError):
                await handle.terminate("eval run timed out")
            return WorldRun(world.name, "timed_out", None, f"no result within {config.run_timeout_s:g}s", trace)
        return WorldRun(world.name, "completed", output, "; ".join(rejected) or None, trace)


async def _judge(
    config: EvalConfig, case: Case, plan: dict[str, Any], recording: Recording | None, outcome: Outcome
) -> RecordedAnswer | None:
    """Ask the judge model for a score; in replay, its recorded answer."""
    assert config.judge_model is not None
    from planner.provider import call_model

    prompt = JUDGE_PROMPT.format(
        goal=case.goal, rubric=case.expect.rubric or GENERIC_RUBRIC, plan=json.dumps(plan, indent=1)
    )
    messages = [{"role": "user", "content": prompt}]
    answer: RecordedAnswer | None = None
    try:
        if config.mode == "replay":
            if recording is None or recording.judge is None:
                outcome.judged = False  # nothing to replay: skipped, not failed
                outcome.judge_reason = "no recorded judge answer"
                return None
            answer = recording.judge
            text = answer.content
        else:
            recorder = Recorder(config.completion or _litellm())
            response = await call_model(
                recorder, model=config.judge_model, messages=messages, response_format={"type": "json_object"}
            )
            text = str(response.choices[0].message.content or "")
            answer = recorder.answers[-1]
    except PlannerError as exc:
        outcome.judge_reason = f"judge call failed: {exc}"
        return None
    raw, _ = parse_answer(text)
    score = raw.get("score") if raw else None
    if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 1:
        outcome.judge_score = float(score)
        outcome.judge_reason = str(raw.get("reason", "")) if raw else None
    else:
        outcome.judge_reason = f"judge answer has no score from 0 to 1: {text[:200]!r}"
    return answer
