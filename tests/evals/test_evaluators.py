"""Every evaluator on a passing and a failing case; the critical path of every container kind;
the dataset loader's errors; report summaries and comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evals.dataset import Case, DatasetInvalid, OutputAssertion, load_dataset
from evals.evaluators import Check, Outcome, assertion_failure, critical_path, evaluate
from evals.report import CaseResult, CheckResult, Report, compare, compare_markdown, load_report
from evals.schema import SCHEMA_PATH, render
from evals.trace import TraceCall
from schemas.plan import Plan

TOOLS = [
    {"name": "crm.lookup", "description": "Find a customer."},
    {"name": "email.send", "description": "Send an email."},
    {"name": "payments.refund", "description": "Refund.", "granted": False},
]


def case(**expect: Any) -> Case:
    return Case.model_validate({"id": "c", "category": "support", "goal": "g", "tools": TOOLS, "expect": expect or {}})


def plan(*steps: dict[str, Any], **extra: Any) -> Plan:
    return Plan.model_validate({"name": "p", "steps": list(steps), **extra})


def tool(step_id: str, name: str = "crm.lookup", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "tool", "tool": name, **extra}


def check(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


GOOD = plan(tool("a"), tool("b", "email.send", depends_on=["a"]))


def call(
    seq: int, name: str, args: dict[str, Any], *, step: str = "s", ok: bool = True, result: Any = None
) -> TraceCall:
    return TraceCall(seq=seq, tool=name, args=args, attempt=1, step=step, ok=ok, result=result)


def test_validity_first_try_and_after_repair() -> None:
    first = evaluate(case(), Outcome([True], GOOD, run_state="completed"))
    assert check(first, "valid_first_try").status == "pass"
    assert check(first, "valid_after_repair") == Check("valid_after_repair", "pass", "1 round(s)")
    repaired = evaluate(case(), Outcome([False, True], GOOD, run_state="completed"))
    assert check(repaired, "valid_first_try").status == "fail"
    assert check(repaired, "valid_after_repair") == Check("valid_after_repair", "pass", "2 round(s)")
    exhausted = evaluate(case(), Outcome([False] * 3, None, planning_error="no valid plan after 3 attempt(s)"))
    assert [c.status for c in exhausted] == ["fail"] * 10 + ["skip"]
    assert "3 attempt" in check(exhausted, "valid_after_repair").detail


def test_granted_tools() -> None:
    assert check(evaluate(case(), Outcome([True], GOOD)), "granted_tools").status == "pass"
    refund = plan(tool("r", "payments.refund"))
    failed = check(evaluate(case(), Outcome([True], refund)), "granted_tools")
    assert failed == Check("granted_tools", "fail", "uses ungranted payments.refund")
    nested = plan({"id": "each", "kind": "foreach", "items": "[`1`]", "steps": [tool("r", "payments.refund")]})
    assert check(evaluate(case(), Outcome([True], nested)), "granted_tools").status == "fail"
    script = plan({"id": "s", "kind": "script", "code": "tool('payments.refund', amount=1)"})
    assert check(evaluate(case(), Outcome([True], script)), "granted_tools").status == "fail"


def test_step_budget_counts_nested_steps() -> None:
    nested = plan({"id": "each", "kind": "foreach", "items": "[`1`]", "steps": [tool("x"), tool("y")]})
    assert check(evaluate(case(max_steps=3), Outcome([True], nested)), "step_budget").status == "pass"
    over = check(evaluate(case(max_steps=2), Outcome([True], nested)), "step_budget")
    assert over == Check("step_budget", "fail", "3 steps, budget 2")
    assert check(evaluate(case(), Outcome([True], nested)), "step_budget").status == "skip"


def test_runs_green_and_expected_failure() -> None:
    assert check(evaluate(case(), Outcome([True], GOOD, run_state="completed")), "runs_green").status == "pass"
    failed = check(evaluate(case(), Outcome([True], GOOD, run_state="failed", run_error="boom")), "runs_green")
    assert failed.status == "fail" and "boom" in failed.detail
    expects_failure = case(state="failed")
    assert check(evaluate(expects_failure, Outcome([True], GOOD, run_state="failed")), "runs_green").status == "pass"
    assert check(evaluate(expects_failure, Outcome([True], GOOD, run_state="completed")), "runs_green").status == "fail"
    with_reason = case(state="failed", error="rejected by")
    rejected = Outcome([True], GOOD, run_state="failed", run_error="change rejected by ann")
    assert check(evaluate(with_reason, rejected), "runs_green").status == "pass"
    crashed = Outcome([True], GOOD, run_state="failed", run_error="KeyError: x")
    assert "does not say 'rejected by'" in check(evaluate(with_reason, crashed), "runs_green").detail


@pytest.mark.parametrize(
    ("assertion", "output", "holds"),
    [
        ({"path": "a", "equals": 1}, {"a": 1}, True),
        ({"path": "a", "equals": 1}, {"a": 2}, False),
        ({"path": "a", "equals": None}, {"a": 1}, False),
        ({"path": "a", "contains": "ell"}, {"a": "hello"}, True),
        ({"path": "a", "contains": 3}, {"a": [1, 2]}, False),
        ({"path": "a", "matches": "^T-\\d+$"}, {"a": "T-12"}, True),
        ({"path": "a", "matches": "^T-\\d+$"}, {"a": "X"}, False),
        ({"path": "a", "exists": True}, {"a": 0}, True),
        ({"path": "b", "exists": True}, {"a": 0}, False),
        ({"path": "a", "length": 2}, {"a": [1, 2]}, True),
        ({"length": 3}, [1], False),
    ],
)
def test_output_assertions(assertion: dict[str, Any], output: Any, holds: bool) -> None:
    failure = assertion_failure(OutputAssertion.model_validate(assertion), output)
    assert (failure is None) == holds, failure


def test_output_check() -> None:
    expect = {"output": [{"path": "sent", "equals": True}, {"path": "name", "equals": "Ann"}]}
    ok = Outcome([True], GOOD, run_state="completed", run_output={"sent": True, "name": "Ann"})
    assert check(evaluate(case(**expect), ok), "output").status == "pass"
    wrong = Outcome([True], GOOD, run_state="completed", run_output={"sent": True, "name": "Bo"})
    failed = check(evaluate(case(**expect), wrong), "output")
    assert failed.status == "fail" and 'name is "Bo", expected "Ann"' in failed.detail
    not_run = Outcome([True], GOOD, run_state="failed")
    assert check(evaluate(case(**expect), not_run), "output").detail == "the run did not complete"
    assert check(evaluate(case(), ok), "output").status == "skip"


def test_coverage_of_tools_that_ran_and_kinds() -> None:
    want = {"must_use_tools": ["email.send"], "must_use_kinds": ["tool"]}
    ran = Outcome([True], GOOD, run_state="completed", trace=[call(1, "email.send", {"to": "x"})])
    assert check(evaluate(case(**want), ran), "coverage").status == "pass"
    named_only = check(evaluate(case(**want), Outcome([True], GOOD, run_state="completed")), "coverage")
    assert named_only == Check("coverage", "fail", "missing email.send (no successful call)"), "named is not done"
    sleepy = {"must_use_tools": ["email.send"], "must_use_kinds": ["sleep"]}
    failed = check(evaluate(case(**sleepy), Outcome([True], plan(tool("a")))), "coverage")
    assert failed == Check("coverage", "fail", "missing email.send (no successful call), kind sleep")


def test_critical_path_of_every_container() -> None:
    assert critical_path(plan(tool("a"), tool("b"), tool("c")).steps) == 1
    assert critical_path(GOOD.steps) == 2
    # references count as dependencies, like depends_on
    chained = plan(tool("a"), tool("b", args={"x": "${steps.a.output}"}), tool("c", depends_on=["b"]))
    assert critical_path(chained.steps) == 3
    fan = plan(
        tool("list"),
        {
            "id": "each",
            "kind": "foreach",
            "items": "${steps.list.output}",
            "steps": [tool("x"), tool("y", depends_on=["x"])],
        },
        tool("sum", depends_on=["each"]),
    )
    assert critical_path(fan.steps) == 1 + 2 + 1
    switch = plan(
        {
            "id": "s",
            "kind": "switch",
            "cases": [
                {"when": "`true`", "steps": [tool("x"), tool("y", depends_on=["x"]), tool("z", depends_on=["y"])]}
            ],
            "default": [tool("d")],
        }
    )
    assert critical_path(switch.steps) == 3
    sub = plan(
        {"id": "child", "kind": "subplan", "plan": {"name": "c", "steps": [tool("x"), tool("y", depends_on=["x"])]}}
    )
    assert critical_path(sub.steps) == 2


def test_parallelism_check() -> None:
    parallel = plan(tool("a"), tool("b"), tool("c"), tool("sum", depends_on=["a", "b", "c"]))
    serial = plan(tool("a"), tool("b", depends_on=["a"]), tool("c", depends_on=["b"]), tool("sum", depends_on=["c"]))
    assert check(evaluate(case(max_critical_path=2), Outcome([True], parallel)), "parallelism").status == "pass"
    failed = check(evaluate(case(max_critical_path=2), Outcome([True], serial)), "parallelism")
    assert failed.status == "fail" and "critical path 4 of 4 steps" in failed.detail
    assert check(evaluate(case(min_parallelism=2.0), Outcome([True], parallel)), "parallelism").status == "pass"
    assert check(evaluate(case(min_parallelism=2.0), Outcome([True], serial)), "parallelism").status == "fail"
    assert check(evaluate(case(), Outcome([True], serial)), "parallelism").status == "skip"


def test_judge_check() -> None:
    assert check(evaluate(case(), Outcome([True], GOOD)), "judge").status == "skip"
    good = Outcome([True], GOOD, judged=True, judge_score=0.9, judge_reason="fine")
    assert check(evaluate(case(), good), "judge") == Check("judge", "pass", "0.90: fine")
    bad = Outcome([True], GOOD, judged=True, judge_score=0.2, judge_reason="no approval step")
    assert check(evaluate(case(), bad), "judge").status == "fail"
    broken = Outcome([True], GOOD, judged=True, judge_reason="judge answer has no score")
    assert check(evaluate(case(), broken), "judge").status == "fail"


def test_dataset_errors_name_the_case_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        "name: d\ncases:\n"
        "  - {id: ok, category: ci, goal: g}\n"
        "  - {id: bad, category: nope, goal: g, expect: {max_steps: 0, output: [{path: a, equals: 1, exists: true}]}}\n"
    )
    with pytest.raises(DatasetInvalid) as invalid:
        load_dataset(path)
    text = str(invalid.value)
    assert "/cases/1/category (case 'bad')" in text
    assert "/cases/1/expect/max_steps (case 'bad')" in text
    assert "exactly one of" in text
    path.write_text("name: d\ncases:\n  - {id: a, category: ci, goal: g}\n  - {id: a, category: ci, goal: g}\n")
    with pytest.raises(DatasetInvalid, match="case ids listed twice: a"):
        load_dataset(path)
    path.write_text("cases: [")
    with pytest.raises(DatasetInvalid, match="not YAML"):
        load_dataset(path)


def test_dataset_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text() == render(), "run `make schema`"


def _report(model: str, statuses: dict[str, str]) -> Report:
    return Report(
        dataset="d",
        model=model,
        mode="replay",
        planner_prompt_sha256="0" * 64,
        started_at="now",
        cases=[
            CaseResult(id=cid, category="ci", goal="g", checks=[CheckResult(name="runs_green", status=s)])
            for cid, s in statuses.items()
        ],
    )


def test_summary_compare_and_round_trip(tmp_path: Path) -> None:
    a = _report("m1", {"x": "pass", "y": "fail", "z": "pass"})
    b = _report("m2", {"x": "pass", "y": "pass", "w": "pass"})
    assert a.rate("runs_green") == (2, 3) and a.rate("output") == (0, 0)
    json_path, md_path = a.write(tmp_path, "a")
    assert load_report(json_path).comparable() == a.comparable()
    assert "| runs_green | 2 | 3 | 67% |  |" in md_path.read_text()
    diff = compare(a, b)
    assert diff["rates"]["runs_green"] == {"a": (2, 3), "b": (3, 3)}
    assert diff["changed"] == [{"case": "y", "changes": {"runs_green": ("fail", "pass")}}]
    assert (diff["only_in_a"], diff["only_in_b"]) == (["z"], ["w"])
    assert "| runs_green | 2/3 67% | 3/3 100% | +33 pts |" in compare_markdown(diff)
