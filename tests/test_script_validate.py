"""Script steps are checked before start: syntax, unknown host functions, literal host-call
arguments, tools (known, granted), source size; the source is part of the plan hash."""

from __future__ import annotations

from typing import Any

import pytest

from executor.engine.models import plan_hash
from executor.lang.script import analyse
from executor.lang.validate import check_plan
from schemas.plan import MAX_SCRIPT_BYTES
from tools import default_registry

REGISTRY = default_registry()


def _issues(code: str, granted: Any = None, **step: Any) -> list[tuple[str, str, str]]:
    plan = {"name": "p", "steps": [{"id": "s", "kind": "script", "code": code, **step}]}
    _, issues = check_plan(plan, tools=REGISTRY, granted=granted)
    return [(i.pointer, i.code, i.message) for i in issues]


def test_a_valid_script_has_no_issues() -> None:
    code = (
        "r = tool('kv.put', key='k', value=1)\n"
        "ev = wait_for_event('approval', timeout='2d')\n"
        "sleep('1h')\n"
        "sleep_until('2030-01-01T00:00:00Z')\n"
        "xs = parallel([call('tool', 'kv.get', key='k'), call('sleep', 1)])\n"
        "compensate('kv.delete', key='k')\n"
        "def helper(v):\n"
        "    return len(v)\n"
        "helper([now(), random()])\n"
    )
    assert _issues(code) == []


@pytest.mark.parametrize(
    ("code", "code_kind", "fragment"),
    [
        ("x = (", "code_syntax", "line 1: Python syntax error"),
        ("launch_missiles()", "script", "unknown function 'launch_missiles'"),
        ("tool('no.such.tool')", "unknown_tool", "line 1: unknown tool 'no.such.tool'"),
        ("\n\ntool('kv.put', key='k')", "tool_args", "line 3: tool 'kv.put': 'value' is a required property"),
        ("tool('kv.put', key=1, value=2)", "tool_args", "1 is not of type 'string'"),
        ("sleep('soon')", "invalid_value", "line 1: sleep(): duration 'soon'"),
        ("sleep('400d')", "limit", "exceeds the limit"),
        ("wait_for_event(kind)", "script", "literal string"),
        ("wait_for_event('a', timeot='1h')", "script", "unexpected keyword argument"),
        ("sleep_until('tomorrow')", "invalid_value", "not an ISO-8601 timestamp"),
        ("now(1)", "script", "takes 0 positional argument"),
        ("parallel([call('fail', 'x')])", "script", "call() describes a call for parallel()"),
        ("tool = 1\ntool('kv.get', key='k')", "script", "host function and cannot be redefined"),
        ("llm('hi', output_schema={'type': 'nope'})", "invalid_schema", "not a valid JSON Schema"),
    ],
)
def test_static_problems_name_the_step_and_line(code: str, code_kind: str, fragment: str) -> None:
    issues = _issues(code)
    assert any(kind == code_kind and fragment in message for _, kind, message in issues), issues
    assert all(pointer == "/steps/0/code" for pointer, _, _ in issues)


def test_computed_arguments_are_checked_when_the_call_runs() -> None:
    assert _issues("v = 1\ntool('kv.put', key='k', value=v)") == []
    assert _issues("name = 'kv.get'\ntool(name, key='k')") == []


def test_tools_the_tenant_is_not_granted_are_rejected() -> None:
    issues = _issues("tool('kv.get', key='k')\ncompensate('http.request', url='https://x')", lambda t: t == "kv.get")
    message = "line 2: tool 'http.request' is not granted to this tenant"
    assert [(c, m) for _, c, m in issues] == [("tool_not_granted", message)]


def test_source_size_and_inputs() -> None:
    big = "x = 1\n" * (MAX_SCRIPT_BYTES // 6 + 1)
    assert any(code == "schema" for _, code, _ in _issues(big))
    assert any("not a Python identifier" in m for _, _, m in _issues("1", inputs={"not ok": 1}))


def test_retry_timeout_execution_apply_to_scripts() -> None:
    assert _issues("1", retry={"max_attempts": 2}, timeout="10s", execution="remote") == []


def test_source_is_part_of_the_plan_hash() -> None:
    a = {"name": "p", "steps": [{"id": "s", "kind": "script", "code": "1"}]}
    b = {"name": "p", "steps": [{"id": "s", "kind": "script", "code": "2"}]}
    assert plan_hash(a) != plan_hash(b)


def test_analysis_finds_tools_and_events() -> None:
    info = analyse("tool('kv.get', key='k')\nparallel([call('tool', 'debug.echo', value=1)])\nwait_for_event('go')")
    assert info.tools == {"kv.get", "debug.echo"}
    assert info.events == {"go"}
    assert not info.dynamic_tools and not info.uses_llm
