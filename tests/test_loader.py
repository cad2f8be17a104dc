"""Loading plans from JSON or YAML text, files and mappings; parse errors are PlanInvalid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from executor import PlanInvalid
from executor.lang.loader import load_plan

PLAN = {
    "name": "loaded",
    "steps": [{"id": "a", "kind": "set", "value": {"n": 1, "s": "${input.x}"}}],
}
YAML_TEXT = """\
# a comment
name: loaded
steps:
  - id: a
    kind: set
    value:
      n: 1
      s: ${input.x}
"""


def only_issue(info: pytest.ExceptionInfo[PlanInvalid]) -> str:
    issues = info.value.issues
    assert len(issues) == 1
    assert issues[0].code == "parse"
    assert issues[0].pointer == ""
    return issues[0].message


def line_and_column(message: str) -> tuple[int, int]:
    match = re.search(r"line (\d+), column (\d+)", message)
    assert match, message
    return int(match.group(1)), int(match.group(2))


# ---- text -------------------------------------------------------------------------------------


def test_json_text() -> None:
    assert load_plan(json.dumps(PLAN)) == PLAN


def test_pretty_json_text() -> None:
    assert load_plan(json.dumps(PLAN, indent=2)) == PLAN


def test_yaml_text() -> None:
    assert load_plan(YAML_TEXT) == PLAN


def test_mapping_is_copied() -> None:
    loaded = load_plan(PLAN)
    assert loaded == PLAN
    assert loaded is not PLAN


def test_invalid_json_gives_line_and_column() -> None:
    text = '{\n  "name": "x",\n  "steps": [1,, 2]\n}'
    with pytest.raises(PlanInvalid) as info:
        load_plan(text)
    message = only_issue(info)
    assert "invalid JSON" in message
    assert "<text>" in message
    assert line_and_column(message) == (3, 15)  # the second comma


def test_invalid_yaml_gives_line_and_column() -> None:
    text = "name: x\nsteps:\n  - id: a\n    kind: [set\n"
    with pytest.raises(PlanInvalid) as info:
        load_plan(text)
    message = only_issue(info)
    assert "invalid YAML" in message
    line, _ = line_and_column(message)
    assert line >= 4


def test_yaml_bad_indentation() -> None:
    with pytest.raises(PlanInvalid) as info:
        load_plan("name: x\n  steps: 1\n bad: 2\n")
    line, column = line_and_column(only_issue(info))
    assert (line, column) >= (2, 1)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- 1\n- 2\n", "list"),
        ("just text", "str"),
        ("42", "int"),
        ("", "NoneType"),
        ("[1, 2]", "list"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    with pytest.raises(PlanInvalid) as info:
        load_plan(text)
    message = only_issue(info)
    assert "mapping" in message
    assert kind in message


def test_parse_error_is_a_duraplan_error() -> None:
    from executor import DuraplanError

    with pytest.raises(DuraplanError):
        load_plan("{")


def test_long_single_line_json_text() -> None:
    plan = {**PLAN, "description": "x" * 400}
    assert load_plan(json.dumps(plan)) == plan


def test_yaml_flow_mapping() -> None:
    assert load_plan('{name: loaded, steps: [{id: a, kind: set, value: {n: 1, s: "${input.x}"}}]}') == PLAN


# ---- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_path(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"plan{suffix}"
    path.write_text(json.dumps(PLAN) if suffix == ".json" else YAML_TEXT, encoding="utf-8")
    assert load_plan(path) == PLAN
    assert load_plan(str(path)) == PLAN


def test_file_without_a_known_suffix(tmp_path: Path) -> None:
    path = tmp_path / "plan.txt"
    path.write_text(YAML_TEXT, encoding="utf-8")
    assert load_plan(str(path)) == PLAN
    assert load_plan(path) == PLAN


def test_json_file_with_yaml_suffix(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(PLAN, indent=2), encoding="utf-8")
    assert load_plan(path) == PLAN


def test_invalid_json_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n "steps": ]}', encoding="utf-8")
    with pytest.raises(PlanInvalid) as info:
        load_plan(path)
    message = only_issue(info)
    assert str(path) in message
    assert line_and_column(message) == (2, 11)


def test_invalid_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsteps: [a, b\n", encoding="utf-8")
    with pytest.raises(PlanInvalid) as info:
        load_plan(str(path))
    message = only_issue(info)
    assert str(path) in message
    assert "invalid YAML" in message
    line_and_column(message)


def test_non_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(PlanInvalid) as info:
        load_plan(path)
    message = only_issue(info)
    assert str(path) in message and "list" in message


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_missing_file(tmp_path: Path, as_str: bool) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PlanInvalid) as info:
        load_plan(str(path) if as_str else path)
    message = only_issue(info)
    assert str(path) in message
    assert "No such file" in message


def test_directory_is_not_a_plan(tmp_path: Path) -> None:
    with pytest.raises(PlanInvalid) as info:
        load_plan(tmp_path)
    assert str(tmp_path) in only_issue(info)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PlanInvalid) as info:
        load_plan(path)
    assert str(path) in only_issue(info)


def test_an_endless_or_oversized_plan_file_is_refused_not_read_whole() -> None:
    """`duraplan validate /dev/zero` read until memory ran out; a file is read up to a bound."""
    with pytest.raises(PlanInvalid, match=r"larger than 16777216 bytes"):
        load_plan(Path("/dev/zero"))


def test_a_yaml_alias_bomb_and_nesting_past_the_stack_are_parse_problems(tmp_path: Path) -> None:
    """A few hundred bytes of YAML aliases expand to 10^9 values (duraplan validate ran for ever),
    and [[[[... thousands deep was a RecursionError traceback."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join([*lines, "name: bomb", "steps: [{id: s, kind: set, value: *a8}]"])
    deep = "name: d\nsteps: [{id: s, kind: set, value: " + "[" * 5000 + "]" * 5000 + "}]"
    for text, says in ((bomb, "once YAML aliases are expanded"), (deep, "nested too deeply"), ("[" * 5000, "nested")):
        path = tmp_path / "plan.yaml"
        path.write_text(text)
        with pytest.raises(PlanInvalid, match=says):
            load_plan(path)
