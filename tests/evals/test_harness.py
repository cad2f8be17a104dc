"""The eval harness end to end on the time-skipping server: live mode with a scripted model, record
mode against a respx-mocked provider and its replay, the committed starter recordings, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import respx
from temporalio.testing import WorkflowEnvironment

from evals import EvalConfig, Recording, load_dataset, load_report, run_eval
from evals.recording import recording_path
from planner.testing import ScriptedModel, ScriptError
from tests.planner.planner_kit import OPENAI_URL, openai_completion

litellm.disable_aiohttp_transport = True  # so respx sees litellm's HTTP
ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
MINI = DATA / "mini.yaml"
RECORDINGS = DATA / "recordings"
STARTER = ROOT / "evals" / "datasets" / "starter.yaml"
STARTER_REPORT = ROOT / "evals" / "reports" / "starter-authored-replay.json"
GAMED_REPORT = ROOT / "evals" / "reports" / "starter-gamed-replay.json"


def _answers(case: str) -> list[str]:
    return [a.content for a in Recording.load(recording_path(RECORDINGS, "mini", "authored", case)).planner]


def _statuses(report: Any, case: str) -> dict[str, str]:
    result = next(c for c in report.cases if c.id == case)
    return {c.name: c.status for c in result.checks}


async def test_live_mode_with_a_scripted_model(time_skipping_env: WorkflowEnvironment, tmp_path: Path) -> None:
    dataset = load_dataset(MINI)
    model = ScriptedModel(*_answers("welcome"), *_answers("refund"), *_answers("digest"))
    config = EvalConfig(dataset, "scripted", "live", completion=model, concurrency=1, home=tmp_path)
    seen: list[str] = []
    with model:
        report = await run_eval(config, client=time_skipping_env.client, on_case=lambda r: seen.append(r.id))
    assert seen == ["welcome", "refund", "digest"]
    assert set(_statuses(report, "welcome").values()) == {"pass", "skip"}
    welcome = report.cases[0]
    # a day's sleep and a 7-day wait ran on the engine; email.send failed once and was retried
    assert welcome.run_state == "completed" and welcome.run_output == {"name": "Ann", "sent": {"sent": True}}
    refund = _statuses(report, "refund")
    assert refund["valid_first_try"] == "fail" and refund["valid_after_repair"] == "pass"
    assert refund["step_budget"] == "fail" and refund["runs_green"] == "pass"
    assert "not valid JSON" in report.cases[1].attempts[0]["issues"][0]["message"]
    # the planner is shown the granted tools only (as production's tools_for): the ungranted one is unknown
    assert "payments.refund" in report.cases[1].attempts[1]["issues"][0]["message"]
    # what ran is on record, with the rendered arguments, in each world
    [world] = report.cases[1].worlds
    assert [(c.tool, c.args, c.ok) for c in world.trace] == [("tickets.create", {"title": "Refund order 42"}, True)]
    # the scripted llm answers reached the plan's llm steps, and the plan's parallelism was measured
    digest = report.cases[2]
    assert digest.run_output == {"summaries": ["quiet", "B is busy", "quiet"], "count": 3}
    assert (digest.step_count, digest.critical_path) == (3, 2)
    # a do-nothing plan also completes: runs_green cannot tell work from none here, so it is not counted
    assert report.summary()["checks"]["runs_green"] == {"passed": 0, "of": 0, "excluded": 3}
    assert report.summary()["checks"]["output"] == {"passed": 2, "of": 2, "excluded": 0}


async def test_a_plan_that_exhausts_repairs(time_skipping_env: WorkflowEnvironment, tmp_path: Path) -> None:
    dataset = load_dataset(MINI)
    model = ScriptedModel("nope", '{"name": "x"}', '{"name": "x", "steps": []}')
    config = EvalConfig(dataset, "scripted", "live", completion=model, case_ids=["welcome"], home=tmp_path)
    with model:
        report = await run_eval(config, client=time_skipping_env.client)
    [case] = report.cases
    assert case.plan is None and len(case.attempts) == 3 and case.planning_error
    assert "no valid plan after 3 attempt(s)" in case.planning_error
    assert case.prompt_tokens > 0, "the tokens of failed attempts still count"
    assert set(_statuses(report, "welcome").values()) == {"fail", "skip"}


async def test_record_against_a_provider_then_replay_offline(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    dataset = load_dataset(MINI)
    model = "openai/gpt-4o-mini"
    answers = [*_answers("refund"), json.dumps({"score": 0.25, "reason": "refunds without approval"})]
    assert len(answers) == 4
    client = time_skipping_env.client
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI_URL)
        route.side_effect = [
            httpx.Response(200, json=openai_completion(a, prompt_tokens=1500 + i, completion_tokens=40 + i))
            for i, a in enumerate(answers)
        ]
        recorded = await run_eval(
            EvalConfig(
                dataset, model, "record", recordings=tmp_path, case_ids=["refund"], judge_model=model, home=tmp_path
            ),
            client=client,
        )
    assert route.call_count == 4, "three planner answers, one judge answer, all through litellm's HTTP"
    path = recording_path(tmp_path, "mini", model, "refund")
    recording = Recording.load(path)
    assert not recording.authored and recording.model == model
    assert [a.content for a in recording.planner] == answers[:3]
    assert [a.prompt_tokens for a in recording.planner] == [1500, 1501, 1502]
    assert all(a.cost_usd > 0 and a.prompt_sha256 for a in recording.planner)
    assert recording.judge is not None and "0.25" in recording.judge.content
    [case] = recorded.cases
    assert case.judge_score == 0.25 and _statuses(recorded, "refund")["judge"] == "fail"

    with respx.mock(assert_all_called=False) as mock:
        offline = mock.post(OPENAI_URL).respond(500)
        replayed = await run_eval(
            EvalConfig(
                dataset, model, "replay", recordings=tmp_path, case_ids=["refund"], judge_model=model, home=tmp_path
            ),
            client=client,
        )
    assert not offline.called, "replay never reaches the provider"
    assert replayed.cases[0].prompt_drift == 0, "same planner, same prompts"
    assert replayed.cases[0].prompt_unhashed == 0 and not replayed.cases[0].authored
    a, b = recorded.comparable(), replayed.comparable()
    assert (a.pop("mode"), b.pop("mode")) == ("record", "replay")
    assert a == b, "the replay reproduces the recorded run's report"


async def test_replay_of_the_committed_starter_recordings_reproduces_the_committed_report(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    dataset = load_dataset(STARTER)
    assert len(dataset.cases) >= 60
    kinds = {
        step["kind"]
        for case in dataset.cases
        for step in _all_steps(
            Recording.load(recording_path(ROOT / "evals" / "recordings", "starter", "authored", case.id))
        )
    }
    assert kinds >= {"tool", "llm", "code", "sleep", "wait_for_event", "foreach", "switch", "subplan", "set", "fail"}
    report = await run_eval(
        EvalConfig(dataset, "authored", "replay", concurrency=1, home=tmp_path), client=time_skipping_env.client
    )
    expected = load_report(STARTER_REPORT)
    assert report.comparable() == expected.comparable(), "regenerate with `make eval-baseline` if this is intended"
    summary = report.summary()
    assert summary["prompt_drift"] == 0 and summary["prompt_unhashed"] == 0, "stamped by `make eval-baseline`"
    assert summary["figures"] == "authored"


def _all_steps(recording: Recording) -> list[dict[str, Any]]:
    from planner.core import parse_answer

    raw, _ = parse_answer(recording.planner[-1].content)
    out: list[dict[str, Any]] = []

    def walk(steps: list[Any]) -> None:
        for step in steps:
            if not isinstance(step, dict):
                continue
            out.append(step)
            walk(step.get("steps") or [])
            walk(step.get("default") or [])
            for case in step.get("cases") or []:
                walk(case.get("steps") or [])
            walk((step.get("plan") or {}).get("steps") or [])

    walk((raw or {}).get("steps") or [])
    return out


def _cli(*args: str, cwd: Path, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    for name in ("DURAPLAN_CLI_IN_PROCESS", *drop):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "duraplan.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=240
    )


GAMED = ("onboard-new-hire", "personalized-welcome", "prod-deploy-cab-approval")


def test_cli_replays_the_gamed_plans_and_they_fail_on_what_they_did(tmp_path: Path) -> None:
    """Issue 16's three known-bad plans: each fails its case on the checks that judge what it did,
    in the committed report and in a fresh replay through the CLI."""
    cases = [arg for case in GAMED for arg in ("--case", case)]
    done = _cli(
        "eval", "--dataset", str(STARTER), "--model", "gamed", "--replay", "--out", str(tmp_path), *cases, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "0/3 all" in done.stdout and "authored figures" in done.stdout
    [written] = tmp_path.glob("*.json")
    report = load_report(written)
    assert report.comparable() == load_report(GAMED_REPORT).comparable(), "regenerate with `make eval-baseline`"
    idle, gamed, dangerous = (_statuses(report, case) for case in ("personalized-welcome", *GAMED[:1], GAMED[2]))
    # the do-nothing plan: its literal output is right in one world only; nothing it had to do ran
    assert idle["output"] == idle["effects"] == idle["coverage"] == idle["parallelism"] == "fail"
    welcome = next(c for c in report.cases if c.id == "personalized-welcome")
    assert "[tomas] message_id is" in next(c.detail for c in welcome.checks if c.name == "output")
    assert not welcome.counted("runs_green"), "it completes, like any plan that does nothing"
    # placeholders, a stranger as recipient, no dependencies, a hard-coded output
    assert gamed["output"] == gamed["effects"] == gamed["parallelism"] == "fail"
    hire = next(c for c in report.cases if c.id == "onboard-new-hire")
    details = {c.name: c.detail for c in hire.checks}
    assert '[marco] account_id is "u-48213", expected "u-50977"' in details["output"], "the literal fits one world"
    assert "no successful call of directory.create_user" in details["effects"], "placeholder arguments"
    assert "stranger@example.com" in details["effects"] and "too short" in details["parallelism"]
    # the production deploy before the votes
    assert dangerous["safety"] == "fail" and dangerous["runs_green"] == "pass"
    deploy = next(c for c in report.cases if c.id == "prod-deploy-cab-approval")
    safety = next(c.detail for c in deploy.checks if c.name == "safety")
    assert "[rejected] called deploy.trigger" in safety and "does not wait for 'cab_vote'" in safety
    assert "irreversible deploy.trigger ran" in safety
    md = GAMED_REPORT.with_suffix(".md").read_text()
    assert "authored figures" in md and "[rejected] called deploy.trigger" in md


def test_cli_compare_fail_under_and_errors(tmp_path: Path) -> None:
    common = ("eval", "--dataset", str(MINI), "--model", "authored", "--recordings", str(RECORDINGS))
    first = _cli(*common, "--replay", "--out", str(tmp_path / "a"), cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "pass rate" in first.stdout and "2/3 all" in first.stdout
    [report] = (tmp_path / "a").glob("*.json")
    assert (tmp_path / "a" / f"{report.stem}.md").exists()
    again = ("--replay", "--out", str(tmp_path / "b"), "--compare", str(report), "--fail-under", "0.9")
    second = _cli(*common, *again, cwd=ROOT)
    assert second.returncode == 1, "2 of 3 cases passed, under --fail-under 0.9"
    assert "runs_green" in second.stdout and "comparison:" in second.stdout
    compared = _cli("eval-compare", str(report), str(next((tmp_path / "b").glob("*.json"))), cwd=ROOT)
    assert compared.returncode == 0 and "valid_first_try" in compared.stdout

    no_key = _cli(
        "eval",
        "--dataset",
        str(MINI),
        "--model",
        "openai/gpt-4o-mini",
        "--out",
        str(tmp_path / "c"),
        cwd=ROOT,
        drop=("OPENAI_API_KEY",),
    )
    assert no_key.returncode == 2, "a configuration mistake is not a model scoring 0%"
    assert "needs OPENAI_API_KEY" in no_key.stderr and "no case was run" in no_key.stderr
    assert not (tmp_path / "c").exists(), "no report: no case ran"

    both = _cli(*common, "--replay", "--record", cwd=ROOT)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    unknown_model = _cli("eval", "--dataset", str(MINI), "--model", "nobody", "--replay", cwd=ROOT)
    assert unknown_model.returncode == 2 and "no recordings for model 'nobody'" in unknown_model.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncases:\n  - {id: one, category: ci, goal: g, expect: {state: maybe}}\n")
    invalid = _cli("eval", "--dataset", str(bad), "--model", "authored", "--replay", cwd=ROOT)
    assert invalid.returncode == 2 and "/cases/0/expect/state (case 'one')" in invalid.stderr
    not_a_report = _cli("eval-compare", str(bad), str(report), cwd=ROOT)
    assert not_a_report.returncode == 2 and "is not an eval report" in not_a_report.stderr


async def test_a_case_the_harness_cannot_run_is_reported_and_the_rest_go_on(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    class Flaky:
        """Answers the digest case; on the welcome case, fails the way a test double or a bug does
        (an AssertionError is never taken for a provider error)."""

        async def __call__(self, **kwargs: Any) -> Any:
            if "Look up the new customer" in str(kwargs["messages"]):
                raise ScriptError("boom")
            return await ScriptedModel(*_answers("digest"))(**kwargs)

    config = EvalConfig(
        load_dataset(MINI), "scripted", "live", completion=Flaky(), case_ids=["welcome", "digest"], home=tmp_path
    )
    report = await run_eval(config, client=time_skipping_env.client)
    welcome, digest = report.cases
    assert welcome.planning_error == "harness error: ScriptError: boom"
    assert {c.status for c in welcome.checks} == {"fail"} and welcome.plan is None
    assert digest.run_state == "completed" and digest.passed
