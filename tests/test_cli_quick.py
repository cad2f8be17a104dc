"""`duraplan validate` answered by the fast path (duraplan.quick) says exactly what the typer command
says: the same stdout, stderr and exit code for valid plans and for every kind of problem, and the
shapes the fast path does not take (help, unknown options, a missing argument) reach typer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = {"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}

# name -> the plan file's text
PLANS: dict[str, str] = {
    "valid": json.dumps({"name": "ok", "steps": [TOOL]}),
    "schema": json.dumps(
        {
            "name": "",
            "steps": [
                {"id": "1a", "kind": "tool"},
                {"id": "b", "kind": "sleep", "duration": "soon"},
                {"id": "c", "kind": "teleport"},
            ],
        }
    ),
    "unknown_tool": json.dumps({"name": "x", "steps": [{**TOOL, "tool": "nope.nope"}]}),
    "tool_args": json.dumps(
        {"name": "x", "steps": [{**TOOL, "tool": "debug.sleep", "args": {"seconds": "long", "extra": 2}}]}
    ),
    "expression": json.dumps(
        {
            "name": "x",
            "steps": [TOOL, {"id": "b", "kind": "tool", "tool": "debug.echo", "args": {"value": "${steps.a.[}"}}],
            "output": "${nowhere.value}",
        }
    ),
    "references": json.dumps(
        {"name": "x", "steps": [{**TOOL, "depends_on": ["b"]}, {**TOOL, "id": "b", "depends_on": ["a", "zz"]}]}
    ),
    "schemas": json.dumps(
        {
            "name": "x",
            "inputs": {"type": "nonsense"},
            "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "payload_schema": {"required": 3}}],
        }
    ),
    "code": json.dumps({"name": "x", "steps": [{"id": "c", "kind": "code", "code": "def ("}]}),
    "not_json": '{"name": "x", "steps": [',
    "not_yaml": "name: [unclosed\nsteps: {",
    "not_a_mapping": "[1, 2]",
    "markup_and_emoji": json.dumps({"name": "x", "steps": [{**TOOL, "tool": "[bold]x[/bold]:smile:"}]}),
}


@dataclass(frozen=True)
class Out:
    code: int
    out: str
    err: str


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR")}
    env.pop("DURAPLAN_CLI_IN_PROCESS", None)
    return {**env, "PYTHONPATH": str(ROOT), "TERM": "dumb"}


def _run(argv: list[str], *, typer_only: bool) -> Out:
    # The typer app on its own: imported, not run as __main__, so the fast path never sees argv.
    entry = (
        ["-c", "from duraplan.cli import app; app(prog_name='python -m duraplan.cli')"]
        if typer_only
        else ["-m", "duraplan.cli"]
    )
    done = subprocess.run(
        [sys.executable, *entry, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return Out(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("plans")
    files = {}
    for name, text in PLANS.items():
        files[name] = base / f"{name}.{'yaml' if name == 'not_yaml' else 'json'}"
        files[name].write_text(text)
    # a name with markup, and one longer than a terminal line: printed as rich prints them
    odd = base / "a [red]dir[/red]" / ("x" * 90)
    odd.mkdir(parents=True)
    files["odd_path"] = odd / "plan.json"
    files["odd_path"].write_text(PLANS["unknown_tool"])
    files["missing"] = base / "missing.json"
    return files


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("name", [*PLANS, "odd_path", "missing", "yaml_example"])
def test_fast_path_prints_what_typer_prints(plans: dict[str, Path], name: str, as_json: bool) -> None:
    path = str(ROOT / "examples" / "approval.yaml") if name == "yaml_example" else str(plans[name])
    argv = ["validate", path, *(["--json"] if as_json else [])]
    fast, slow = _run(argv, typer_only=False), _run(argv, typer_only=True)
    assert fast == slow
    valid = name in ("valid", "yaml_example")
    assert fast.code == (0 if valid else 2), fast
    assert "Traceback" not in fast.err
    if as_json:
        assert json.loads(fast.out)["valid"] is valid
    elif valid:
        assert fast.out == f"valid: {path}\n" and fast.err == ""
    else:
        assert fast.out == "" and fast.err.startswith("invalid: ")


def test_every_kind_of_problem_keeps_its_message(plans: dict[str, Path]) -> None:
    """The messages `duraplan validate` gave before the fast path, one of each kind."""

    def issues(name: str) -> list[tuple[str, str | None, str]]:
        out = _run(["validate", str(plans[name]), "--json"], typer_only=False)
        return [(i["pointer"], i["code"], i["message"]) for i in json.loads(out.out)["issues"]]

    assert issues("schema")[:2] == [
        ("/name", "schema", "String should have at least 1 character"),
        ("/steps/0/id", "schema", "String should match pattern '^[A-Za-z_][A-Za-z0-9_]{0,63}$'"),
    ]
    unknown = issues("unknown_tool")
    assert unknown[0][:2] == ("/steps/0/tool", "unknown_tool")
    assert unknown[0][2].startswith("unknown tool 'nope.nope' (registered: debug.echo, debug.fail, ")
    assert issues("tool_args") == [
        (
            "/steps/0/args",
            "tool_args",
            "tool 'debug.sleep': Additional properties are not allowed ('extra' was unexpected)",
        ),
        ("/steps/0/args/seconds", "tool_args", "tool 'debug.sleep': 'long' is not of type 'number'"),
    ]
    assert [(p, c) for p, c, _ in issues("expression")] == [
        ("/steps/1/args/value", "expression"),
        ("/output", "unknown_reference"),
    ]
    assert issues("schemas") == [
        (
            "/inputs/type",
            "invalid_schema",
            "not a valid JSON Schema: 'nonsense' is not valid under any of the given schemas",
        ),
        ("/steps/0/payload_schema/required", "invalid_schema", "not a valid JSON Schema: 3 is not of type 'array'"),
    ]
    assert issues("code") == [("/steps/0/code", "code_syntax", "Python syntax error at line 1: invalid syntax")]
    assert issues("not_json") == [
        ("", "parse", f"{plans['not_json']}: invalid JSON at line 1, column 25: Expecting value")
    ]
    assert issues("not_a_mapping") == [("", "parse", f"{plans['not_a_mapping']}: a plan is a mapping/object, not list")]


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["validate", "--help"],
        ["validate", "a.json", "b.json"],
        ["validate", "--yaml", "a.json"],
        ["validate", "--json=1", "a.json"],
        ["--help"],
    ],
    ids=["no-plan", "help", "two-plans", "unknown-option", "flag-with-value", "root-help"],
)
def test_other_shapes_reach_typer(argv: list[str]) -> None:
    fast, slow = _run(argv, typer_only=False), _run(argv, typer_only=True)
    assert fast == slow
    assert "Usage:" in fast.out + fast.err or "Error" in fast.err
    assert fast.code == (0 if "--help" in argv else 2)
