"""Plan validation: each class of invalid plan gets its own issue (code, JSON pointer, step id),
every problem in a plan is reported at once, and valid plans (the examples included) pass."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from executor import PlanInvalid, PlanIssue, check_plan, load_plan, validate_plan
from schemas.plan import Plan
from tools import ToolRegistry, default_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(ROOT.glob("examples/*.yaml"))
REGISTRY = default_registry()


# ---- helpers ----------------------------------------------------------------------------------


def plan(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "test", "steps": list(steps), **fields}


def set_step(sid: str, value: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "set", "value": value, **fields}


def tool_step(sid: str, tool: str, args: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "tool", "tool": tool, "args": args, **fields}


def foreach(sid: str, items: str, *steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "foreach", "items": items, "steps": list(steps), **fields}


TRANSFORM_ARGS = {"data": [1, 2], "expression": "length(@)"}


def issues_of(raw: dict[str, Any], *, tools: ToolRegistry | None = REGISTRY) -> list[PlanIssue]:
    _, issues = check_plan(raw, tools=tools)
    return issues


def only_issue(raw: dict[str, Any], *, tools: ToolRegistry | None = REGISTRY) -> PlanIssue:
    issues = issues_of(raw, tools=tools)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def assert_issue(
    issue: PlanIssue, *, code: str, pointer: str, step: str | None, mentions: tuple[str, ...] = ()
) -> None:
    assert (issue.code, issue.pointer, issue.step) == (code, pointer, step), str(issue)
    for text in mentions:
        assert text in issue.message, f"{text!r} not in {issue.message!r}"


def schema_issue_at(raw: dict[str, Any], pointer: str) -> PlanIssue:
    issues = issues_of(raw)
    assert issues, "expected schema issues"
    # (semantic issues of the rest of the plan come in the same pass: issue 11 item 14)
    at = [i for i in issues if i.pointer == pointer and i.code == "schema"]
    assert at, f"no issue at {pointer!r}: " + "; ".join(map(str, issues))
    return at[0]


# ---- schema errors ----------------------------------------------------------------------------


def test_missing_name() -> None:
    issue = schema_issue_at({"steps": [set_step("a")]}, "/name")
    assert issue.step is None
    assert "required" in issue.message.lower()


def test_not_an_object() -> None:
    _, issues = check_plan(["not", "a", "plan"])  # type: ignore[arg-type]
    assert [(i.code, i.pointer) for i in issues] == [("schema", "")]
    assert "list" in issues[0].message


def test_empty_steps() -> None:
    issue = schema_issue_at(plan(), "/steps")
    assert issue.step is None
    assert "at least 1" in issue.message


def test_unknown_step_kind() -> None:
    issue = schema_issue_at(plan({"id": "a", "kind": "teleport"}), "/steps/0")
    assert issue.step == "a"
    assert "'teleport'" in issue.message


def test_missing_kind() -> None:
    issue = schema_issue_at(plan({"id": "a", "value": 1}), "/steps/0")
    assert issue.step == "a"
    assert "kind" in issue.message


def test_bad_id_pattern() -> None:
    issue = schema_issue_at(plan(set_step("1st-step")), "/steps/0/id")
    assert issue.step == "1st-step"
    assert "pattern" in issue.message


def test_extra_field_on_a_step() -> None:
    issue = schema_issue_at(plan(set_step("a", colour="blue")), "/steps/0/colour")
    assert issue.step == "a"
    assert "Extra inputs" in issue.message


def test_extra_field_at_top_level() -> None:
    issue = schema_issue_at(plan(set_step("a"), colour="blue"), "/colour")
    assert issue.step is None


def test_missing_required_step_field() -> None:
    issue = schema_issue_at(plan({"id": "a", "kind": "tool"}), "/steps/0/tool")
    assert issue.step == "a"
    assert "required" in issue.message.lower()


def test_bad_duration_string() -> None:
    raw = plan({"id": "nap", "kind": "sleep", "duration": "5 fortnights"})
    issue = schema_issue_at(raw, "/steps/0/duration")
    assert issue.step == "nap"
    assert "'5 fortnights' is not a duration" in issue.message


def test_bad_timeout_string() -> None:
    issue = schema_issue_at(plan(set_step("a", timeout="soon")), "/steps/0/timeout")
    assert issue.step == "a"


def test_wrong_type_pointer_has_no_discriminator_tag() -> None:
    raw = plan(tool_step("call", "transform", ["not", "a", "dict"]))  # type: ignore[arg-type]
    issue = schema_issue_at(raw, "/steps/0/args")
    assert issue.step == "call"
    assert "dictionary" in issue.message
    assert "/tool/" not in issue.pointer


def test_wrong_type_of_an_integer_field() -> None:
    raw = plan(foreach("loop", "input.xs", set_step("x"), max_concurrency="lots"))
    issue = schema_issue_at(raw, "/steps/0/max_concurrency")
    assert issue.step == "loop"
    assert "integer" in issue.message


def test_out_of_range_retry() -> None:
    raw = plan(set_step("a", retry={"max_attempts": 0}))
    issue = schema_issue_at(raw, "/steps/0/retry/max_attempts")
    assert issue.step == "a"


@pytest.mark.parametrize(
    ("raw", "pointer", "step"),
    [
        (
            plan(foreach("loop", "input.xs", set_step("inner", zz=1))),
            "/steps/0/steps/0/zz",
            "inner",
        ),
        (
            plan(
                {
                    "id": "sw",
                    "kind": "switch",
                    "cases": [{"when": "input.x", "steps": [set_step("c", zz=1)]}],
                }
            ),
            "/steps/0/cases/0/steps/0/zz",
            "c",
        ),
        (
            plan(
                {
                    "id": "sub",
                    "kind": "subplan",
                    "plan": {"name": "child", "steps": [set_step("c", zz=1)]},
                }
            ),
            "/steps/0/plan/steps/0/zz",
            "c",
        ),
        (
            plan(tool_step("a", "transform", TRANSFORM_ARGS, compensate={"tool": "kv.delete", "zz": 1})),
            "/steps/0/compensate/zz",
            "a",
        ),
    ],
    ids=["foreach", "switch", "subplan", "compensation"],
)
def test_nested_schema_error_points_at_the_innermost_step(raw: dict[str, Any], pointer: str, step: str) -> None:
    issue = schema_issue_at(raw, pointer)
    assert issue.step == step
    assert not any(f"/{kind}/" in issue.pointer for kind in ("set", "foreach", "switch", "subplan", "tool"))


def test_several_schema_errors_at_once() -> None:
    raw = {"steps": [set_step("1bad"), set_step("ok", colour="red"), {"id": "x", "kind": "nope"}]}
    pointers = {i.pointer for i in issues_of(raw)}
    assert {"/name", "/steps/0/id", "/steps/1/colour", "/steps/2"} <= pointers


def test_numeric_duration_is_accepted() -> None:
    assert issues_of(plan({"id": "nap", "kind": "sleep", "duration": 90})) == []


def test_negative_numeric_duration_is_a_schema_issue() -> None:
    issue = schema_issue_at(plan({"id": "nap", "kind": "sleep", "duration": -5}), "/steps/0/duration")
    assert issue.step == "nap"


def test_union_member_label_not_in_pointer() -> None:
    issues = issues_of(plan({"id": "nap", "kind": "sleep", "duration": [1]}))
    assert issues
    assert {i.pointer for i in issues} == {"/steps/0/duration"}


# ---- duplicate ids ----------------------------------------------------------------------------


def test_duplicate_ids() -> None:
    issue = only_issue(plan(set_step("a"), set_step("a")))
    assert_issue(issue, code="duplicate_id", pointer="/steps/1/id", step="a", mentions=("'a'", "/steps/0"))


def test_duplicate_id_nested_in_foreach() -> None:
    issue = only_issue(plan(set_step("a"), foreach("loop", "input.xs", set_step("a"))))
    assert_issue(issue, code="duplicate_id", pointer="/steps/1/steps/0/id", step="a", mentions=("'a'",))


def test_duplicate_id_across_switch_branches() -> None:
    switch = {
        "id": "sw",
        "kind": "switch",
        "cases": [{"when": "input.x", "steps": [set_step("b")]}],
        "default": [set_step("b")],
    }
    issue = only_issue(plan(switch))
    assert_issue(
        issue,
        code="duplicate_id",
        pointer="/steps/0/default/0/id",
        step="b",
        mentions=("'b'", "/steps/0/cases/0/steps/0"),
    )


def test_duplicate_of_a_container_id_inside_it() -> None:
    issue = only_issue(plan(foreach("loop", "input.xs", set_step("loop"))))
    assert_issue(issue, code="duplicate_id", pointer="/steps/0/steps/0/id", step="loop")


# ---- references -------------------------------------------------------------------------------


def test_unknown_step_in_a_template() -> None:
    issue = only_issue(plan(set_step("a", "${steps.nope.output}")))
    assert_issue(issue, code="unknown_reference", pointer="/steps/0/value", step="a", mentions=("'nope'",))


def test_unknown_step_deep_inside_a_value() -> None:
    issue = only_issue(plan(set_step("a", {"list": [1, {"x": "hi ${steps.nope.output}"}]})))
    assert_issue(
        issue,
        code="unknown_reference",
        pointer="/steps/0/value/list/1/x",
        step="a",
        mentions=("'nope'",),
    )


def test_unknown_root_name() -> None:
    issue = only_issue(plan(set_step("a", "hello ${foo.bar}")))
    assert_issue(issue, code="unknown_reference", pointer="/steps/0/value", step="a", mentions=("'foo'",))


def test_unknown_root_name_in_a_when() -> None:
    issue = only_issue(plan(set_step("a", when="inputs.flag")))
    assert_issue(issue, code="unknown_reference", pointer="/steps/0/when", step="a", mentions=("'inputs'",))


@pytest.mark.parametrize("name", ["item", "index"])
def test_loop_variable_outside_a_foreach(name: str) -> None:
    issue = only_issue(plan(set_step("a", f"${{{name}}}")))
    assert_issue(
        issue,
        code="unknown_reference",
        pointer="/steps/0/value",
        step="a",
        mentions=(f"'{name}'", "foreach"),
    )


def test_item_in_the_foreach_items_itself_is_outside_the_loop() -> None:
    issue = only_issue(plan(foreach("loop", "item.children", set_step("x"))))
    assert_issue(issue, code="unknown_reference", pointer="/steps/0/items", step="loop", mentions=("'item'",))


def test_item_in_the_plan_output() -> None:
    issue = only_issue(plan(set_step("a"), output="${item}"))
    assert_issue(issue, code="unknown_reference", pointer="/output", step=None, mentions=("'item'",))


def test_unknown_step_in_the_plan_output() -> None:
    issue = only_issue(plan(set_step("a"), output={"x": "${steps.b.output}"}))
    assert_issue(issue, code="unknown_reference", pointer="/output/x", step=None, mentions=("'b'",))


def test_nested_step_not_visible_from_outside() -> None:
    raw = plan(
        foreach("loop", "input.xs", set_step("inner", "${item}")),
        set_step("after", "${steps.inner.output}"),
    )
    issue = only_issue(raw)
    assert_issue(issue, code="not_visible", pointer="/steps/1/value", step="after", mentions=("'inner'",))


def test_nested_step_not_visible_from_a_sibling_branch() -> None:
    switch = {
        "id": "sw",
        "kind": "switch",
        "cases": [{"when": "input.x", "steps": [set_step("yes")]}],
        "default": [set_step("no", "${steps.yes.output}")],
    }
    issue = only_issue(plan(switch))
    assert_issue(
        issue,
        code="not_visible",
        pointer="/steps/0/default/0/value",
        step="no",
        mentions=("'yes'",),
    )


def test_nested_step_not_visible_from_the_plan_output() -> None:
    raw = plan(foreach("loop", "input.xs", set_step("inner")), output="${steps.inner.output}")
    issue = only_issue(raw)
    assert_issue(issue, code="not_visible", pointer="/output", step=None, mentions=("'inner'",))


def test_depends_on_a_nested_step_is_not_visible() -> None:
    raw = plan(foreach("loop", "input.xs", set_step("inner")), set_step("after", depends_on=["inner"]))
    issue = only_issue(raw)
    assert_issue(
        issue,
        code="not_visible",
        pointer="/steps/1/depends_on/0",
        step="after",
        mentions=("'inner'",),
    )


def test_subplan_cannot_see_parent_steps() -> None:
    sub = {
        "id": "sub",
        "kind": "subplan",
        "plan": {"name": "child", "steps": [set_step("c", "${steps.a.output}")]},
    }
    issue = only_issue(plan(set_step("a"), sub))
    assert_issue(
        issue,
        code="unknown_reference",
        pointer="/steps/1/plan/steps/0/value",
        step="c",
        mentions=("'a'",),
    )


def test_depends_on_unknown() -> None:
    issue = only_issue(plan(set_step("a"), set_step("b", depends_on=["a", "ghost"])))
    assert_issue(
        issue,
        code="unknown_reference",
        pointer="/steps/1/depends_on/1",
        step="b",
        mentions=("'ghost'",),
    )


def test_depends_on_itself() -> None:
    issue = only_issue(plan(set_step("a", depends_on=["a"])))
    assert_issue(issue, code="cycle", pointer="/steps/0/depends_on/0", step="a", mentions=("itself",))


def test_references_its_own_output() -> None:
    issue = only_issue(plan(set_step("a", "${steps.a.output}")))
    assert_issue(issue, code="cycle", pointer="/steps/0/value", step="a", mentions=("'a'",))


def _cycle_in(issue: PlanIssue) -> list[str]:
    prefix = "dependency cycle: "
    assert issue.message.startswith(prefix), issue.message
    return issue.message.removeprefix(prefix).split(" -> ")


def test_cycle_of_two() -> None:
    raw = plan(set_step("a", "${steps.b.output}"), set_step("b", depends_on=["a"]))
    issue = only_issue(raw)
    assert issue.code == "cycle"
    cycle = _cycle_in(issue)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b"], issue.message
    assert issue.pointer == {"a": "/steps/0", "b": "/steps/1"}[issue.step or ""]


def test_cycle_of_three() -> None:
    # a needs c, c needs b, b needs a
    raw = plan(
        set_step("a", "${steps.c.output}"),
        set_step("b", {"x": "${steps.a.output}"}),
        set_step("c", depends_on=["b"]),
        set_step("free"),
    )
    issue = only_issue(raw)
    assert issue.code == "cycle"
    cycle = _cycle_in(issue)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"], issue.message
    needs = {("a", "c"), ("c", "b"), ("b", "a")}
    pairs = set(itertools.pairwise(cycle))
    assert pairs in (needs, {(y, x) for x, y in needs}), issue.message
    assert issue.pointer == {"a": "/steps/0", "b": "/steps/1", "c": "/steps/2"}[issue.step or ""]


def test_cycle_through_a_container() -> None:
    # the foreach waits for what its insides need: `after`, which waits for the foreach
    raw = plan(
        foreach("loop", "input.xs", set_step("inner", "${steps.after.output}")),
        set_step("after", depends_on=["loop"]),
    )
    issue = only_issue(raw)
    assert issue.code == "cycle"
    assert sorted(_cycle_in(issue)[:-1]) == ["after", "loop"]


def test_cycle_inside_a_nested_block() -> None:
    raw = plan(foreach("loop", "input.xs", set_step("x", depends_on=["y"]), set_step("y", "${steps.x.output}")))
    issue = only_issue(raw)
    assert issue.code == "cycle"
    assert issue.pointer in ("/steps/0/steps/0", "/steps/0/steps/1")
    assert sorted(_cycle_in(issue)[:-1]) == ["x", "y"]


def test_every_independent_cycle_is_reported() -> None:
    raw = plan(
        set_step("a", depends_on=["b"]),
        set_step("b", depends_on=["a"]),
        set_step("c", depends_on=["d"]),
        set_step("d", depends_on=["c"]),
    )
    cycles = [sorted(_cycle_in(i)[:-1]) for i in issues_of(raw) if i.code == "cycle"]
    assert sorted(cycles) == [["a", "b"], ["c", "d"]]


def test_nested_step_referencing_its_container_is_a_cycle() -> None:
    issues = issues_of(plan(foreach("loop", "input.xs", set_step("inner", "${steps.loop.output}"))))
    assert [(i.code, i.step) for i in issues] == [("cycle", "inner")]


# ---- tools ------------------------------------------------------------------------------------


def test_unknown_tool_lists_the_registered_tools() -> None:
    issue = only_issue(plan(tool_step("call", "http.fetch", {"url": "https://example.com"})))
    assert_issue(issue, code="unknown_tool", pointer="/steps/0/tool", step="call", mentions=("'http.fetch'",))
    for name in REGISTRY.names():
        assert name in issue.message


def test_tools_are_not_checked_without_a_registry() -> None:
    assert issues_of(plan(tool_step("call", "no.such.tool", {"x": 1})), tools=None) == []


def test_missing_required_tool_argument() -> None:
    issue = only_issue(plan(tool_step("t", "transform", {"data": [1]})))
    assert_issue(
        issue,
        code="tool_args",
        pointer="/steps/0/args",
        step="t",
        mentions=("'transform'", "'expression'"),
    )


def test_literal_tool_argument_of_the_wrong_type() -> None:
    issue = only_issue(plan(tool_step("get", "http.request", {"url": 123})))
    assert_issue(
        issue,
        code="tool_args",
        pointer="/steps/0/args/url",
        step="get",
        mentions=("'http.request'", "123"),
    )


def test_unexpected_tool_argument() -> None:
    issue = only_issue(plan(tool_step("get", "kv.get", {"key": "k", "colour": "red"})))
    assert_issue(issue, code="tool_args", pointer="/steps/0/args", step="get", mentions=("'colour'",))


def test_templated_tool_arguments_are_not_type_checked() -> None:
    args = {
        "url": "${input.url}",
        "timeout_s": "${input.timeout}",
        "max_bytes": "${input.limit}",
        "headers": "${input.headers}",
        "method": "${input.method}",
    }
    assert issues_of(plan(tool_step("get", "http.request", args))) == []


def test_templated_argument_does_not_excuse_a_missing_one() -> None:
    issue = only_issue(plan(tool_step("t", "transform", {"data": "${input.data}"})))
    assert_issue(issue, code="tool_args", pointer="/steps/0/args", step="t", mentions=("'expression'",))


def test_tool_argument_pointer_escapes_slashes() -> None:
    args = {"url": "https://example.com", "headers": {"x/y": 5}}
    issue = only_issue(plan(tool_step("get", "http.request", args)))
    assert issue.pointer == "/steps/0/args/headers/x~1y"


def test_compensation_with_both_tool_and_code() -> None:
    comp = {"tool": "kv.delete", "args": {"key": "k"}, "code": "1"}
    issue = only_issue(plan(tool_step("t", "transform", TRANSFORM_ARGS, compensate=comp)))
    assert_issue(
        issue,
        code="invalid_value",
        pointer="/steps/0/compensate",
        step="t",
        mentions=("tool", "code"),
    )


def test_compensation_with_neither_tool_nor_code() -> None:
    issue = only_issue(plan(tool_step("t", "transform", TRANSFORM_ARGS, compensate={})))
    assert_issue(issue, code="invalid_value", pointer="/steps/0/compensate", step="t")


def test_unknown_compensation_tool() -> None:
    comp = {"tool": "kv.undo", "args": {"key": "k"}}
    issue = only_issue(plan(tool_step("t", "transform", TRANSFORM_ARGS, compensate=comp)))
    assert_issue(
        issue,
        code="unknown_tool",
        pointer="/steps/0/compensate/tool",
        step="t",
        mentions=("'kv.undo'", "kv.delete"),
    )


def test_compensation_tool_arguments_are_checked() -> None:
    comp = {"tool": "kv.delete", "args": {}}
    issue = only_issue(plan(tool_step("t", "transform", TRANSFORM_ARGS, compensate=comp)))
    assert_issue(issue, code="tool_args", pointer="/steps/0/compensate/args", step="t", mentions=("'key'",))


def test_compensation_code_syntax() -> None:
    comp = {"code": "undo(("}
    issue = only_issue(plan(tool_step("t", "transform", TRANSFORM_ARGS, compensate=comp)))
    assert_issue(issue, code="code_syntax", pointer="/steps/0/compensate/code", step="t")


# ---- expressions and code ---------------------------------------------------------------------


def test_bad_jmespath_in_a_template() -> None:
    issue = only_issue(plan(set_step("a", "${input.items[}")))
    assert_issue(issue, code="expression", pointer="/steps/0/value", step="a", mentions=("input.items[",))


@pytest.mark.parametrize(
    ("raw", "pointer", "step", "text"),
    [
        (plan(set_step("a", when="input.x ==")), "/steps/0/when", "a", "input.x =="),
        (plan(foreach("loop", "input.[", set_step("x"))), "/steps/0/items", "loop", "input.["),
        (
            plan({"id": "sw", "kind": "switch", "cases": [{"when": "a[?", "steps": [set_step("x")]}]}),
            "/steps/0/cases/0/when",
            "sw",
            "a[?",
        ),
        (
            plan(foreach("loop", "input.xs", set_step("x"), output="item.(")),
            "/steps/0/output",
            None,
            "item.(",
        ),
    ],
    ids=["when", "items", "case-when", "foreach-output"],
)
def test_bad_jmespath_in_a_bare_expression(raw: dict[str, Any], pointer: str, step: str | None, text: str) -> None:
    issue = only_issue(raw)
    assert issue.code == "expression" and issue.pointer == pointer, str(issue)
    if step is not None:
        assert issue.step == step
    assert text in issue.message


def test_bare_expression_field_with_embedded_template() -> None:
    issue = only_issue(plan(set_step("a", when="input.x == ${input.y}")))
    assert_issue(issue, code="expression", pointer="/steps/0/when", step="a", mentions=("${",))


def test_code_syntax_error() -> None:
    raw = plan({"id": "py", "kind": "code", "code": "x = 1\ndef broken(:\n    pass"})
    issue = only_issue(raw)
    assert_issue(issue, code="code_syntax", pointer="/steps/0/code", step="py", mentions=("line 2",))


def test_code_input_name_must_be_an_identifier() -> None:
    raw = plan({"id": "py", "kind": "code", "code": "1", "inputs": {"not-valid": 1}})
    issue = only_issue(raw)
    assert_issue(
        issue,
        code="invalid_value",
        pointer="/steps/0/inputs/not-valid",
        step="py",
        mentions=("'not-valid'",),
    )


# ---- sleep, wait and limits -------------------------------------------------------------------


def test_sleep_with_both_duration_and_until() -> None:
    raw = plan({"id": "nap", "kind": "sleep", "duration": "1m", "until": "2030-01-01T00:00:00Z"})
    issue = only_issue(raw)
    assert_issue(issue, code="invalid_value", pointer="/steps/0", step="nap", mentions=("duration", "until"))


def test_sleep_with_neither_duration_nor_until() -> None:
    issue = only_issue(plan({"id": "nap", "kind": "sleep"}))
    assert_issue(issue, code="invalid_value", pointer="/steps/0", step="nap", mentions=("duration", "until"))


def test_sleep_longer_than_a_year() -> None:
    issue = only_issue(plan({"id": "nap", "kind": "sleep", "duration": "366d"}))
    assert_issue(issue, code="limit", pointer="/steps/0/duration", step="nap", mentions=("'366d'", "365"))


def test_sleep_of_exactly_a_year_is_fine() -> None:
    assert issues_of(plan({"id": "nap", "kind": "sleep", "duration": "365d"})) == []


def test_zero_sleep() -> None:
    issue = only_issue(plan({"id": "nap", "kind": "sleep", "duration": "0s"}))
    assert_issue(issue, code="invalid_value", pointer="/steps/0/duration", step="nap", mentions=("'0s'",))


def test_wait_for_event_longer_than_a_year() -> None:
    raw = plan({"id": "w", "kind": "wait_for_event", "event": "ok", "timeout": "53w"})
    issue = only_issue(raw)
    assert_issue(issue, code="limit", pointer="/steps/0/timeout", step="w", mentions=("'53w'",))


def test_deadline_longer_than_a_year() -> None:
    issue = only_issue(plan(set_step("a"), limits={"deadline": "400d"}))
    assert_issue(issue, code="limit", pointer="/limits/deadline", step=None, mentions=("'400d'",))


def test_step_timeout_over_a_day() -> None:
    issue = only_issue(plan(tool_step("a", "debug.echo", {"value": 1}, timeout="2d")))
    assert_issue(issue, code="limit", pointer="/steps/0/timeout", step="a", mentions=("'2d'",))


def test_retry_intervals_out_of_order() -> None:
    issue = only_issue(plan(tool_step("a", "debug.echo", {}, retry={"initial_interval": "1m", "max_interval": "10s"})))
    assert_issue(
        issue,
        code="invalid_value",
        pointer="/steps/0/retry",
        step="a",
        mentions=("initial_interval",),
    )


@pytest.mark.parametrize(
    ("step", "option"),
    [
        (set_step("a", retry={"max_attempts": 2}), "retry"),
        (set_step("a", timeout="5s"), "timeout"),
        ({"id": "a", "kind": "sleep", "duration": "1s", "execution": "remote"}, "execution"),
        ({"id": "a", "kind": "subplan", "plan": {"name": "c", "steps": [set_step("x")]}, "timeout": "1m"}, "timeout"),
        ({"id": "a", "kind": "subplan", "plan": {"name": "c", "steps": [set_step("x")]}, "retry": {}}, "retry"),
    ],
)
def test_activity_options_on_other_kinds_are_errors_not_dropped(step: dict[str, Any], option: str) -> None:
    issue = only_issue(plan(step))
    assert_issue(issue, code="not_applicable", pointer=f"/steps/0/{option}", step="a", mentions=(option,))


def test_a_wait_for_event_timeout_is_its_own_and_fine() -> None:
    assert issues_of(plan({"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"})) == []


def test_until_without_timezone() -> None:
    issue = only_issue(plan({"id": "nap", "kind": "sleep", "until": "2030-01-01T09:00:00"}))
    assert_issue(
        issue,
        code="invalid_value",
        pointer="/steps/0/until",
        step="nap",
        mentions=("2030-01-01T09:00:00", "timezone"),
    )


def test_until_not_a_timestamp() -> None:
    issue = only_issue(plan({"id": "nap", "kind": "sleep", "until": "next tuesday"}))
    assert_issue(
        issue,
        code="invalid_value",
        pointer="/steps/0/until",
        step="nap",
        mentions=("next tuesday",),
    )


@pytest.mark.parametrize("until", ["2030-01-01T09:00:00Z", "2030-01-01T09:00:00+02:00", "${input.when}"])
def test_until_fine(until: str) -> None:
    assert issues_of(plan({"id": "nap", "kind": "sleep", "until": until})) == []


# ---- JSON Schemas inside plans ----------------------------------------------------------------


def test_invalid_payload_schema() -> None:
    raw = plan({"id": "w", "kind": "wait_for_event", "event": "ok", "payload_schema": {"type": "objekt"}})
    issue = only_issue(raw)
    assert_issue(
        issue,
        code="invalid_schema",
        pointer="/steps/0/payload_schema/type",
        step="w",
        mentions=("objekt",),
    )


def test_invalid_output_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number", "minimum": "zero"}}}
    issue = only_issue(plan({"id": "ask", "kind": "llm", "prompt": "hi", "output_schema": schema}))
    assert issue.code == "invalid_schema" and issue.step == "ask", str(issue)
    assert issue.pointer == "/steps/0/output_schema/properties/n/minimum"
    assert "zero" in issue.message


def test_invalid_inputs_schema() -> None:
    issue = only_issue(plan(set_step("a"), inputs={"type": "object", "required": "name"}))
    assert_issue(issue, code="invalid_schema", pointer="/inputs/required", step=None, mentions=("name",))


def test_invalid_subplan_inputs_schema() -> None:
    sub = {
        "id": "sub",
        "kind": "subplan",
        "plan": {"name": "c", "inputs": {"type": 7}, "steps": [set_step("c")]},
    }
    issue = only_issue(plan(sub))
    assert issue.code == "invalid_schema"
    assert issue.pointer == "/steps/0/plan/inputs/type"


# ---- everything at once -----------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    raw = plan(
        set_step("a"),
        set_step("a"),
        set_step("b", "${steps.nope.output}"),
        set_step("c", "${foo}"),
        tool_step("d", "no.such.tool", {}),
        tool_step("e", "transform", {"data": 1}),
        {"id": "f", "kind": "code", "code": "def ("},
        {"id": "g", "kind": "sleep"},
        set_step("h", when="a[?"),
        set_step("i", depends_on=["ghost"]),
        {"id": "j", "kind": "wait_for_event", "event": "x", "payload_schema": {"type": 1}},
        inputs={"type": "nothing"},
    )
    found = {(i.code, i.pointer, i.step) for i in issues_of(raw)}
    expected = {
        ("duplicate_id", "/steps/1/id", "a"),
        ("unknown_reference", "/steps/2/value", "b"),
        ("unknown_reference", "/steps/3/value", "c"),
        ("unknown_tool", "/steps/4/tool", "d"),
        ("tool_args", "/steps/5/args", "e"),
        ("code_syntax", "/steps/6/code", "f"),
        ("invalid_value", "/steps/7", "g"),
        ("expression", "/steps/8/when", "h"),
        ("unknown_reference", "/steps/9/depends_on/0", "i"),
        ("invalid_schema", "/steps/10/payload_schema/type", "j"),
        ("invalid_schema", "/inputs/type", None),
    }
    assert expected <= found, sorted(expected - found)

    with pytest.raises(PlanInvalid) as info:
        validate_plan(raw, tools=REGISTRY)
    assert {(i.code, i.pointer, i.step) for i in info.value.issues} == found
    text = str(info.value)
    assert f"({len(found)} problem(s))" in text
    assert "/steps/4/tool (step 'd')" in text


def test_validate_plan_raises_schema_issues() -> None:
    with pytest.raises(PlanInvalid) as info:
        validate_plan({"steps": []})
    assert {i.pointer for i in info.value.issues} == {"/name", "/steps"}


# ---- valid plans ------------------------------------------------------------------------------

EVERY_KIND = """
name: every-kind
inputs:
  type: object
  required: [orders]
  properties:
    orders: {type: array, items: {type: object}}
    url: {type: string}
steps:
  - id: fetch
    kind: tool
    tool: http.request
    args: {url: "${input.url}", method: GET, timeout_s: 10}
    retry: {max_attempts: 2, initial_interval: 1s, max_interval: 10s, non_retryable: [Http404]}
    timeout: 30s
  - id: summarize
    kind: llm
    system: Be brief.
    prompt: "Summarize: ${steps.fetch.output.body}"
    temperature: 0.2
    output_schema:
      type: object
      required: [summary]
      properties: {summary: {type: string}}
  - id: score
    kind: code
    code: |
      total = sum(o.get("amount", 0) for o in orders)
      total * 2
    inputs: {orders: "${input.orders}"}
  - id: each
    kind: foreach
    items: input.orders
    max_concurrency: 4
    output: "{position: index, stored: steps.store.output, order: item}"
    steps:
      - id: tag
        kind: set
        value: {order: "${item}", position: "${index}", label: "order #${index}"}
      - id: store
        kind: tool
        tool: kv.put
        args: {key: "order-${index}", value: "${steps.tag.output}"}
        compensate: {tool: kv.delete, args: {key: "order-${index}"}}
  - id: route
    kind: switch
    cases:
      - when: "steps.score.output > `100`"
        steps:
          - {id: big, kind: set, value: "${steps.score.output}"}
    default:
      - {id: small, kind: set, value: small}
  - id: approval
    kind: wait_for_event
    event: approved
    timeout: 2h
    on_timeout: continue
    depends_on: [route]
    payload_schema:
      type: object
      properties: {ok: {type: boolean}, resume_at: {type: string}}
  - id: pause
    kind: sleep
    until: "${steps.approval.output.resume_at}"
  - id: nap
    kind: sleep
    duration: 1m
    depends_on: [pause]
  - id: child
    kind: subplan
    inputs: {text: "${steps.summarize.output.summary}"}
    plan:
      name: child
      inputs: {type: object, properties: {text: {type: string}}}
      steps:
        - {id: echo, kind: tool, tool: debug.echo, args: {value: "${input.text}"}}
      output: "${steps.echo.output.value}"
  - id: reject
    kind: fail
    when: "steps.approval.output.ok == `false`"
    message: "rejected by ${run.session}: ${steps.approval.output}"
    error_type: Rejected
output:
  summary: "${steps.summarize.output.summary}"
  route: "${steps.route.output}"
  each: "${steps.each.output}"
  child: "${steps.child.output}"
"""


def test_plan_using_every_step_kind_is_valid() -> None:
    raw = yaml.safe_load(EVERY_KIND)
    parsed = validate_plan(raw, tools=REGISTRY)
    assert isinstance(parsed, Plan)
    assert {s.kind for s in parsed.steps} == {
        "tool", "llm", "code", "foreach", "switch", "wait_for_event", "sleep", "subplan", "fail",
    }  # fmt: skip
    # set appears nested; check_plan agrees and does not mutate its input
    before = copy.deepcopy(raw)
    assert check_plan(raw, tools=REGISTRY)[1] == []
    assert raw == before


def test_parsed_plan_is_accepted_as_is() -> None:
    parsed = Plan.model_validate(yaml.safe_load(EVERY_KIND))
    assert validate_plan(parsed, tools=REGISTRY) is parsed


def test_loop_variables_in_nested_loops_and_switches() -> None:
    inner_switch = {
        "id": "sw",
        "kind": "switch",
        "cases": [{"when": "item.vip", "steps": [set_step("vip", "${item.name}")]}],
        "default": [set_step("normal", "${index}")],
    }
    raw = plan(
        foreach(
            "outer",
            "input.groups",
            foreach("inner", "item.members", set_step("member", "${item}")),
            inner_switch,
            set_step("uses_outer", "${steps.inner.output}"),
        )
    )
    assert issues_of(raw) == []


def test_inner_step_sees_enclosing_blocks() -> None:
    raw = plan(set_step("top"), foreach("loop", "input.xs", set_step("inner", "${steps.top.output}")))
    assert issues_of(raw) == []


def test_pipe_right_side_is_not_a_root() -> None:
    assert issues_of(plan(set_step("a", {"k": 1}), set_step("b", "${steps.a.output | k}"))) == []


@pytest.mark.parametrize("path", EXAMPLES or [None], ids=lambda p: p.name if p else "none")
def test_example_plan_validates(path: Path | None) -> None:
    if path is None:
        pytest.skip("no example plans in examples/ yet")
    parsed = validate_plan(load_plan(path), tools=REGISTRY)
    assert parsed.name


def test_schema_and_semantic_problems_are_reported_in_one_pass() -> None:
    """Issue 11 item 14: a bad duration hid five semantic problems (and was reported twice)."""
    from tools import default_registry

    plan = {
        "name": "p",
        "steps": [
            {"id": "a", "kind": "sleep", "duration": "5 parsecs"},
            {"id": "b", "kind": "tool", "tool": "no.such", "args": {}},
            {"id": "c", "kind": "set", "value": "${steps.zzz.output}"},
            {"id": "d", "kind": "set", "value": "${steps.d.output}"},
        ],
    }
    _, issues = check_plan(plan, tools=default_registry())
    assert [(i.pointer, i.code) for i in issues] == [
        ("/steps/0/duration", "schema"),
        ("/steps/1/tool", "unknown_tool"),
        ("/steps/2/value", "unknown_reference"),
        ("/steps/3/value", "cycle"),
    ]
    assert "not a duration" in issues[0].message and "^" not in issues[0].message


@pytest.mark.parametrize(
    ("step", "pointer"),
    [
        ({"id": "c", "kind": "code", "code": "x = 1" + "+1" * 30000 + "\nx"}, "/steps/0/code"),
        ({"id": "c", "kind": "script", "code": "x = " + "-" * 30000 + "1\nx"}, "/steps/0/code"),
        ({"id": "c", "kind": "script", "code": "x = " + "1 if 1 else " * 5000 + "1\nx"}, "/steps/0/code"),
        (
            {"id": "c", "kind": "set", "value": 1, "compensate": {"code": "1" + "+1" * 30000}},
            "/steps/0/compensate/code",
        ),
    ],
    ids=["code-sum", "script-negations", "script-conditionals", "compensation-sum"],
)
def test_code_nested_too_deep_to_parse_is_a_syntax_problem_not_a_crash(step: dict[str, Any], pointer: str) -> None:
    """CPython's parser raised RecursionError or MemoryError on such sources (within the 64 KiB cap):
    a 500 from /v1/plans:validate and /v1/runs."""
    _, issues = check_plan({"name": "p", "steps": [step]})
    assert [(i.pointer, i.code) for i in issues] == [(pointer, "code_syntax")], issues
    assert "nests too deeply" in issues[0].message


@pytest.mark.parametrize(
    "model", ["huggingface/https://collector.example/v1", "ollama/llama3", "lemonade/x", "llamafile/x", "gpt 4"]
)
def test_a_plan_chooses_a_model_by_name_never_an_endpoint(model: str) -> None:
    """litellm posts to a URL given as a Hugging Face model, and ollama/lemonade/llamafile models to
    servers on the worker's own host (lemonade: localhost:8000, duraplan's API port)."""
    llm = {"id": "l", "kind": "llm", "prompt": "hi", "model": model}
    script = {"id": "s", "kind": "script", "code": f"llm('hi', model={model!r})"}
    _, issues = check_plan({"name": "p", "steps": [llm, script]})
    assert [(i.pointer, i.code) for i in issues] == [
        ("/steps/0/model", "invalid_value"),
        ("/steps/1/code", "invalid_value"),
    ]
    _, fine = check_plan({"name": "p", "steps": [{**llm, "model": "openai/gpt-4o-mini"}]})
    assert fine == []
    _, replan = check_plan({"name": "p", "replan": {"model": model}, "steps": [{"id": "a", "kind": "set", "value": 1}]})
    assert [(i.pointer, i.code) for i in replan] == [("/replan/model", "invalid_value")]


@pytest.mark.parametrize(
    "retry, pointer",
    [
        # 1e300 seconds is a float; the workflow's backoff timer overflowed converting it, failing
        # every workflow task (the run hung); hundreds of digits were inf, or a ValueError (a 500)
        ({"initial_interval": "1" + "0" * 300 + "s", "max_interval": "1" + "0" * 300 + "s"}, "initial_interval"),
        ({"initial_interval": "1s", "max_interval": "9" * 400 + "s"}, "max_interval"),
        ({"initial_interval": "1s", "max_interval": 1e300}, "max_interval"),
        ({"initial_interval": "1s", "max_interval": "366d"}, "max_interval"),
    ],
)
def test_retry_intervals_are_bounded(retry: dict[str, Any], pointer: str) -> None:
    issues = issues_of(plan(tool_step("a", "debug.echo", {}, retry=retry)))
    assert f"/steps/0/retry/{pointer}" in [i.pointer for i in issues], issues
    assert all(i.code == "limit" and len(i.message) < 200 for i in issues), issues
    longest = {"initial_interval": "0s", "max_interval": "365d"}
    assert issues_of(plan(tool_step("a", "debug.echo", {}, retry=longest))) == []


def test_a_duration_is_a_finite_number_of_seconds() -> None:
    from schemas.plan import parse_duration

    for bad in (float("nan"), float("inf"), 10**400, "9" * 400 + "s", -1):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("1d12h") == 129600.0 and parse_duration(2) == 2.0
    assert issues_of(plan({"id": "z", "kind": "sleep", "duration": "9" * 400 + "s"}))[0].code == "limit"
