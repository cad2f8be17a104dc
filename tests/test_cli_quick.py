"""`duraplan validate` answered by the fast path (duraplan.quick) says exactly what the typer command
says: the same stdout, stderr and exit code for valid plans and every kind of problem, in any
console (rich prints the typer command's lines; the fast path writes a line itself only where rich
would print it unchanged), and the shapes the fast path does not take (help, unknown options, a
missing argument) reach typer. Both run in one interpreter per console setting, to keep this fast;
a few runs of the real command check the process around them (exit codes, no typer loaded)."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from duraplan.quick import same_as_rich

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
    code: int | str
    out: str
    err: str


# Runs each argv through the fast path and the typer command in this one interpreter.
HARNESS = """
import contextlib, io, json, os, sys
os.environ["DURAPLAN_CLI_IN_PROCESS"] = "1"  # the fast path raises SystemExit instead of ending
from duraplan import quick
from duraplan.cli import app
results = []
for argv in json.loads(sys.argv[1]):
    row = []
    for typer_only in (False, True):
        quick._console.cache_clear()  # a console reads COLUMNS when made
        out, err, code = io.StringIO(), io.StringIO(), "not answered"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                app(argv, prog_name="duraplan") if typer_only else quick.quick(argv)
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:  # what typer shows as a traceback
                code = f"raised {type(exc).__name__}: {exc}"
        row.append([code, out.getvalue(), err.getvalue()])
    results.append(row)
sys.__stdout__.write(json.dumps(results))
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    steering = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "DURAPLAN_CLI_IN_PROCESS")
    env = {k: v for k, v in os.environ.items() if k not in steering}
    return {**env, "PYTHONPATH": str(ROOT), "TERM": "dumb", **extra}


def _both(argvs: list[list[str]], env: dict[str, str] | None = None) -> list[tuple[Out, Out]]:
    """(fast path, typer command) for each argv."""
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(argvs)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(env or {}),
        stdin=subprocess.DEVNULL,  # no terminal anywhere: rich's width is 80 or COLUMNS
        timeout=120,
    )
    return [(Out(*fast), Out(*slow)) for fast, slow in json.loads(done.stdout)]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=_env(env or {}), timeout=60
    )


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
    files["yaml_example"] = ROOT / "examples" / "approval.yaml"
    return files


@pytest.fixture(scope="module")
def answers(plans: dict[str, Path]) -> dict[tuple[str, bool], Out]:
    """The fast path's answer for each plan, text and --json, each equal to the typer command's."""
    argvs = [["validate", str(path), *(["--json"] if as_json else [])] for path in plans.values() for as_json in (0, 1)]
    found = {}
    for argv, (fast, slow) in zip(argvs, _both(argvs), strict=True):
        assert fast == slow, argv
        name = next(n for n, p in plans.items() if str(p) == argv[1])
        found[name, len(argv) == 3] = fast
    return found


@pytest.mark.parametrize("name", [*PLANS, "odd_path", "missing", "yaml_example"])
def test_fast_path_prints_what_typer_prints(
    answers: dict[tuple[str, bool], Out], plans: dict[str, Path], name: str
) -> None:
    text, as_json = answers[name, False], answers[name, True]
    valid = name in ("valid", "yaml_example")
    assert text.code == as_json.code == (0 if valid else 2), text
    assert json.loads(as_json.out)["valid"] is valid and as_json.err == ""
    if valid:
        assert text.out == f"valid: {plans[name]}\n" and text.err == ""
    else:
        assert text.out == "" and text.err.startswith("invalid: ")
        header = " ".join(text.err.split())  # rich wraps a header longer than the console
        assert f"({len(json.loads(as_json.out)['issues'])} problem(s))" in header


@pytest.mark.parametrize(
    "env",
    [
        {"COLUMNS": "40"},
        {"COLUMNS": "250"},
        {"FORCE_COLOR": "1", "TERM": "xterm"},
        {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"},
    ],
    ids=["narrow", "wide", "force-color", "not-tty-compatible"],
)
def test_fast_path_prints_what_typer_prints_in_any_console(plans: dict[str, Path], env: dict[str, str]) -> None:
    argvs = [["validate", str(plans[n])] for n in ("valid", "schema", "markup_and_emoji", "odd_path")]
    for argv, (fast, slow) in zip(argvs, _both(argvs, env), strict=True):
        assert fast == slow, argv
        colours = "FORCE_COLOR" in env and "TTY_COMPATIBLE" not in env
        assert ("\x1b[" in fast.out + fast.err) is colours


def test_every_kind_of_problem_keeps_its_message(answers: dict[tuple[str, bool], Out], plans: dict[str, Path]) -> None:
    """The messages `duraplan validate` gave before the fast path, one of each kind."""

    def issues(name: str) -> list[tuple[str, str | None, str]]:
        return [(i["pointer"], i["code"], i["message"]) for i in json.loads(answers[name, True].out)["issues"]]

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


def test_other_shapes_reach_typer() -> None:
    argvs = [
        ["validate"],
        ["validate", "--help"],
        ["validate", "a.json", "b.json"],
        ["validate", "--yaml", "a.json"],
        ["validate", "--json=1", "a.json"],
        ["--help"],
        ["runs", "--help"],
    ]
    for argv, (fast, slow) in zip(argvs, _both(argvs), strict=True):
        assert fast == Out("not answered", "", ""), argv
        assert slow.code == (0 if "--help" in argv else 2), (argv, slow)
        assert "Usage:" in slow.out + slow.err or "Error" in slow.err


def test_an_error_it_does_not_expect_is_left_to_typer(plans: dict[str, Path]) -> None:
    """A tool module that cannot be imported: the fast path steps aside and the typer command fails
    as it always did (a traceback, exit 1), not with a traceback of the fast path's own."""
    argv = ["validate", str(plans["valid"])]
    [(fast, slow)] = _both([argv], {"DURAPLAN_TOOL_MODULES": "no_such_tool_module"})
    assert fast == Out("not answered", "", "")
    assert slow.code == "raised ModuleNotFoundError: No module named 'no_such_tool_module'"


def test_ctrl_c_ends_it_as_typer_does(
    plans: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Interrupted while it validates: exit 130 and nothing printed, as the typer command ends."""
    from duraplan import quick

    monkeypatch.setattr(gc, "disable", lambda: None)  # the fast path's, for its own process only

    def interrupted(plan: Path) -> list[object]:
        raise KeyboardInterrupt

    monkeypatch.setattr(quick, "check_file", interrupted)
    monkeypatch.setenv("DURAPLAN_CLI_IN_PROCESS", "1")
    with pytest.raises(SystemExit) as fast:
        quick.quick(["validate", str(plans["valid"])])
    from duraplan.cli import app

    with pytest.raises(SystemExit) as slow:
        app(["validate", str(plans["valid"])], prog_name="duraplan")
    assert fast.value.code == slow.value.code == 130
    assert capsys.readouterr() == ("", "")


PROBE = """
import runpy, sys
sys.argv[0] = "duraplan"
try:
    runpy.run_module("duraplan.cli", run_name="__main__")
finally:
    print("typer loaded:", "typer" in sys.modules, file=sys.stderr)
"""


def test_the_command_as_a_user_runs_it(plans: dict[str, Path]) -> None:
    """`python -m duraplan.cli validate` ends with the verdict's exit code and never loads typer; a
    shape it does not answer still gets typer's usage error."""
    for name, code in (("valid", 0), ("schema", 2)):
        done = _cli("-m", "duraplan.cli", "validate", str(plans[name]), "--json")
        assert done.returncode == code and json.loads(done.stdout)["valid"] is (code == 0), done
    done = _cli("-c", PROBE, "validate", str(plans["valid"]), env={"DURAPLAN_CLI_IN_PROCESS": "1"})
    assert (done.returncode, done.stdout, done.stderr) == (0, f"valid: {plans['valid']}\n", "typer loaded: False\n")
    done = _cli("-m", "duraplan.cli", "validate")
    assert done.returncode == 2 and "Missing argument" in done.stderr


TEXTS = [
    "valid: plans/a.json",
    "invalid: a b.json (3 problem(s))",
    "  /steps/0/tool (step 'a'): unknown tool 'x' (registered: debug.echo, kv.get) [unknown_tool]",
    "trailing space ",
    " leading  and  double  spaces",
    "a:b and c:d",
    "time 10:30:00",
    "an :smile: here",
    ":x:",
    "tab\there",
    "caf\u00e9",
    "wide \u4e2d",
    "[bold]tag[/bold]",
    "escaped \\[b]",
    "",
    "word " * 30,
    "/" + "x" * 120,
]


@pytest.mark.parametrize("width", [10, 41, 80, 200])
def test_lines_written_directly_are_what_rich_prints(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line the fast path writes without rich is byte for byte what rich prints there."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    texts = [*TEXTS, *("x" * n for n in (width - 1, width, width + 1))]
    direct = 0
    for text in texts:
        for wraps in (True, False):
            if not same_as_rich(text, wraps, width):
                continue
            direct += 1
            out = io.StringIO()
            console = Console(file=out, width=width)  # a StringIO is no terminal
            if wraps:  # a line with markup (rich wraps it)
                console.print(text, highlight=False)
            else:  # an issue line: soft-wrapped, no markup
                console.print(text, highlight=False, markup=False, soft_wrap=True)
            assert out.getvalue() == text + "\n", (text, wraps)
    assert direct >= len(texts) // 2  # most lines do not need rich
