"""The expression language: JMESPath in ``${...}`` templates.

render, evaluate, truthy, references, iter_expressions.
"""

from __future__ import annotations

import random
import string
from typing import Any

import jmespath
import pytest

from executor.engine.frames import Frame, StepsView
from executor.engine.models import StepRecord
from executor.lang.expressions import (
    ExpressionError,
    compile_expression,
    evaluate,
    iter_expressions,
    references,
    render,
    strip_template,
    truthy,
)
from executor.lang.validate import check_plan

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # hypothesis is optional: the seeded test below checks the same property
    given = None  # type: ignore[assignment]

SCOPE: dict[str, Any] = {
    "input": {
        "name": "Ada",
        "count": 3,
        "ratio": 0.5,
        "flag": False,
        "nothing": None,
        "tags": ["x", "y"],
        "user": {"id": 7, "roles": ["admin"]},
    },
    "steps": {"fetch": {"output": {"items": [{"n": 1}, {"n": 2}]}, "status": "completed", "error": None}},
    "run": {"id": "r-1", "tenant": "t", "session": "s", "plan_hash": "abc"},
}


# ---- render -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${input.count}", 3),
        ("${input.ratio}", 0.5),
        ("${input.flag}", False),
        ("${input.nothing}", None),
        ("${input.missing}", None),
        ("${input.tags}", ["x", "y"]),
        ("${input.user}", {"id": 7, "roles": ["admin"]}),
        ("${input.name}", "Ada"),
        ("${steps.fetch.output.items[*].n}", [1, 2]),
        ("${ input.count }", 3),
    ],
)
def test_whole_string_template_keeps_the_type(template: str, expected: Any) -> None:
    result = render(template, SCOPE)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello ${input.name}!", "Hello Ada!"),
        ("n=${input.count}", "n=3"),
        ("${input.count}${input.count}", "33"),
        ("${input.name} has ${input.count}", "Ada has 3"),
        ("flag: ${input.flag}", "flag: false"),
        ("none: ${input.nothing}", "none: null"),
        ("tags: ${input.tags}", 'tags: ["x", "y"]'),
        ("user: ${input.user}", 'user: {"id": 7, "roles": ["admin"]}'),
        ("ratio ${input.ratio}", "ratio 0.5"),
    ],
)
def test_embedded_templates_are_interpolated(template: str, expected: str) -> None:
    assert render(template, SCOPE) == expected


def test_embedded_objects_render_as_sorted_json() -> None:
    scope = {"input": {"obj": {"b": 1, "a": [True, None]}}}
    assert render("v=${input.obj}", scope) == 'v={"a": [true, null], "b": 1}'


def test_render_recurses_through_lists_and_dicts() -> None:
    value = {
        "greeting": "Hi ${input.name}",
        "count": "${input.count}",
        "nested": [{"tags": "${input.tags}"}, "${input.flag}", 5, None, True],
        "plain": "no templates",
        "${input.name}": "keys are not rendered",
    }
    assert render(value, SCOPE) == {
        "greeting": "Hi Ada",
        "count": 3,
        "nested": [{"tags": ["x", "y"]}, False, 5, None, True],
        "plain": "no templates",
        "${input.name}": "keys are not rendered",
    }


def test_render_does_not_mutate_its_input() -> None:
    value = {"a": ["${input.count}"]}
    render(value, SCOPE)
    assert value == {"a": ["${input.count}"]}


@pytest.mark.parametrize("value", [None, True, 0, 1.5, "", "$", "{x}", "$ {input.name}", "cost: $5"])
def test_non_templates_pass_through(value: Any) -> None:
    assert render(value, SCOPE) == value


def test_render_of_a_bad_template_raises_naming_it() -> None:
    with pytest.raises(ExpressionError) as info:
        render({"a": ["ok", "x ${input.[}"]}, SCOPE)
    assert "input.[" in str(info.value)


# ---- evaluate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["input.count", "${input.count}", "  ${input.count}  "])
def test_evaluate_tolerates_template_syntax(expression: str) -> None:
    assert evaluate(expression, SCOPE) == 3


def test_evaluate_full_jmespath() -> None:
    assert evaluate("steps.fetch.output.items[?n > `1`].n | [0]", SCOPE) == 2
    assert evaluate("length(input.tags)", SCOPE) == 2
    assert evaluate("input.missing || 'default'", SCOPE) == "default"
    assert evaluate("{who: input.name, first: input.tags[0]}", SCOPE) == {
        "who": "Ada",
        "first": "x",
    }


def test_evaluate_missing_names_are_null() -> None:
    assert evaluate("input.no.such.path", SCOPE) is None


def test_evaluate_type_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("length(input.count)", SCOPE)
    assert info.value.expression == "length(input.count)"


def test_strip_template() -> None:
    assert strip_template("${a.b}") == "a.b"
    assert strip_template("  ${a.b} ") == "a.b"
    assert strip_template("a.b") == "a.b"
    assert strip_template("${a} ${b}") == "${a} ${b}"


# ---- truthy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, False, "", [], {}])
def test_falsy_values(value: Any) -> None:
    assert truthy(value) is False


@pytest.mark.parametrize("value", [True, 1, -1, 0.5, "0", "false", " ", [0], [None], {"a": None}])
def test_truthy_values(value: Any) -> None:
    assert truthy(value) is True


@pytest.mark.parametrize("value", [0, 0.0])
def test_zero_is_truthy_like_in_jmespath(value: Any) -> None:
    # JMESPath itself agrees: `0 || 'x'` is 0 and a filter on 0 keeps the element
    assert evaluate("`0` || 'fallback'", {}) == 0
    assert truthy(value) is True


# ---- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "roots", "steps"),
    [
        ("steps.a.output", {"steps"}, {"a"}),
        ("${steps.a.output}", {"steps"}, {"a"}),
        ("steps.a", {"steps"}, {"a"}),
        ("steps.a.output.items[0].name", {"steps"}, {"a"}),
        ("steps.a.output[0]", {"steps"}, {"a"}),
        ("steps.a.output[0][1]", {"steps"}, {"a"}),
        ("steps.a.output[1:]", {"steps"}, {"a"}),
        ("steps.a.status == 'failed'", {"steps"}, {"a"}),
        ("length(steps.a.output)", {"steps"}, {"a"}),
        ("join(', ', steps.a.output[*].name)", {"steps"}, {"a"}),
        ("max_by(steps.a.output, &score)", {"steps"}, {"a"}),
        ("{x: steps.a.output, y: steps.b.status}", {"steps"}, {"a", "b"}),
        ("[steps.a.output, input.x]", {"steps", "input"}, {"a"}),
        ("input.x || steps.c.output", {"input", "steps"}, {"c"}),
        ("input.x == steps.e.output && !(steps.f.output)", {"input", "steps"}, {"e", "f"}),
        ("(steps.a.output).x", {"steps"}, {"a"}),
        ("item.name", {"item"}, set()),
        ("index", {"index"}, set()),
        ("run.tenant", {"run"}, set()),
        ("@", set(), set()),
        ("`1`", set(), set()),
        ("'text'", set(), set()),
        ("steps", {"steps"}, set()),
    ],
)
def test_references(expression: str, roots: set[str], steps: set[str]) -> None:
    assert references(expression) == (roots, steps)


@pytest.mark.parametrize(
    ("expression", "roots", "steps"),
    [
        ("input.xs[*].bar", {"input"}, set()),
        ("input.xs[].bar.baz", {"input"}, set()),
        ("input.m.*.bar", {"input"}, set()),
        ("input.xs[?price > `10`].name", {"input"}, set()),
        ("steps.a.output[?name == other].id", {"steps"}, {"a"}),
        # inside a filter, `steps.b` is a field of each element, not the scope's steps
        ("steps.a.output[?id == steps.b.output]", {"steps"}, {"a"}),
        ("sort_by(input.xs, &name)", {"input"}, set()),
        ("max_by(input.xs, &steps.zz)", {"input"}, set()),
        ("input.m.{k: q, r: [s, t]}", {"input"}, set()),
        ("input.m.[a, b]", {"input"}, set()),
        ("steps.a.output.items[*].{n: name}", {"steps"}, {"a"}),
    ],
)
def test_identifiers_inside_projections_and_filters_are_not_roots(
    expression: str, roots: set[str], steps: set[str]
) -> None:
    assert references(expression) == (roots, steps)


@pytest.mark.parametrize(
    ("expression", "roots", "steps"),
    [
        ("steps.a.output | k", {"steps"}, {"a"}),
        ("input.x | steps.b.output", {"input"}, set()),
    ],
)
def test_right_side_of_a_pipe_is_not_a_root(expression: str, roots: set[str], steps: set[str]) -> None:
    assert references(expression) == (roots, steps)


def test_pipe_with_a_current_node_expression() -> None:
    assert references("steps.a.output | [0]") == ({"steps"}, {"a"})
    assert references("steps.a.output | length(@)") == ({"steps"}, {"a"})


def test_references_of_bad_syntax_names_the_expression() -> None:
    with pytest.raises(ExpressionError) as info:
        references("steps.a.[")
    assert info.value.expression == "steps.a.["
    assert "'steps.a.['" in str(info.value)


# ---- syntax errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["foo[", "a.", "a[?", "{a: }", "`unclosed", "a ||", ")"])
def test_bad_syntax_is_an_expression_error_naming_the_expression(expression: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(expression)
    assert info.value.expression == expression
    assert repr(expression) in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ExpressionError):
        evaluate(expression, SCOPE)


# ---- iter_expressions -------------------------------------------------------------------------


def test_iter_expressions_gives_pointers() -> None:
    value = {
        "a": "x ${input.a} ${input.b}",
        "l": [1, "${steps.s.output}"],
        "k/~": "${run.id}",
        "n": 5,
    }
    assert list(iter_expressions(value, "/args")) == [
        ("/args/a", "input.a"),
        ("/args/a", "input.b"),
        ("/args/l/1", "steps.s.output"),
        ("/args/k~1~0", "run.id"),
    ]


def test_iter_expressions_multiselect_hash() -> None:
    assert list(iter_expressions("${{a: input.x}}")) == [("", "{a: input.x}")]


@pytest.mark.parametrize("template", ["${input.x || `{}`}", "${ {a: input.x} }", "${input.x || '}'}"])
def test_validation_sees_the_expression_render_evaluates(template: str) -> None:
    render(template, SCOPE)  # fine
    for _, expression in iter_expressions(template):
        compile_expression(expression)


# ---- property: template-free JSON renders unchanged ---------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(10**12), 10**12)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "str":
        # "$", "{" and "}" included, just never "${"
        return _random_text(rng).replace("${", "$ {")
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    # keys are never rendered, so they may even look like templates
    return {f"{_random_text(rng)}{i}": _random_json(rng, depth + 1) for i in range(rng.randint(0, 4))}


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(string.printable + "$${}é☃") for _ in range(rng.randint(0, 12)))


def test_template_free_json_renders_unchanged_seeded() -> None:
    rng = random.Random(20240611)
    for _ in range(500):
        value = _random_json(rng)
        assert render(value, SCOPE) == value


if given is not None:
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text().filter(lambda s: "${" not in s),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )

    @given(json_values)
    def test_template_free_json_renders_unchanged(value: Any) -> None:
        assert render(value, SCOPE) == value

else:

    def test_template_free_json_renders_unchanged() -> None:
        pytest.skip("hypothesis is not installed (the seeded variant above checks the property)")


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 3000 + "input" + ")" * 3000,
        "!" * 5000 + "input",
        "|".join(["input"] * 500),
        "input[?" + "a && " * 500 + "a]",
    ],
    ids=["parens", "not", "pipe", "and"],
)
def test_expressions_nested_too_deep_are_refused_not_a_recursion_error(expression: str) -> None:
    """jmespath's parser recursed once per level: a few hundred levels were a RecursionError (a 500
    from /v1/plans:validate and /v1/runs)."""
    with pytest.raises(ExpressionError, match="nests more than 100 levels deep"):
        compile_expression(expression)
    _, issues = check_plan({"name": "p", "steps": [{"id": "a", "kind": "set", "value": "${" + expression + "}"}]})
    assert [(i.pointer, i.code) for i in issues] == [("/steps/0/value", "expression")], issues
    assert len(issues[0].message) < 400, "the expression is shown cut"
    assert evaluate("(" * 90 + "input.a" + ")" * 90, {"input": {"a": 1}}) == 1


@pytest.mark.parametrize(
    "expression",
    ["a", "a.b", "a.b.c", '"a.b".c', "a.list", "a.list.x", "a.text.x", "a.n.x", "a.none.x", "missing.x", "a.b.c.d"],
)
def test_field_chains_evaluate_as_jmespath_does(expression: str) -> None:
    """A chain of fields takes a shortcut past JMESPath's interpreter: same answers, every kind of value."""
    view = StepsView({"s": StepRecord(state="completed", output={"v": [1]})}.get, Frame("", {"s": "s"}))
    scope = {
        "a": {"b": {"c": 0}, "list": [{"x": 1}], "text": "str", "n": 5, "none": None},
        "a.b": {"c": False},
        "steps": view,
    }
    assert evaluate(expression, scope) == jmespath.search(expression, scope)
    assert evaluate("steps.s.output.v", scope) == [1] == jmespath.search("steps.s.output.v", scope)
    assert evaluate("steps.nope.output", scope) is None
