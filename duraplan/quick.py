"""``duraplan validate`` answered before typer loads: the console entry point's fast path.

Validating a plan is what an editor or a pre-commit hook runs on every save, and typer (built on
pydantic, with its own click, turning every parameter of every command into a pydantic adapter) cost
about as much as the validation itself. ``main`` recognises the plain shape of the command
(``validate PLAN [--json]``) and runs it here; anything else (``--help``, an unknown option, a
missing argument, shell completion) goes to the typer app in ``duraplan.cli``, which explains.
Both paths print through ``report`` below, so their output and exit codes are the same
(tests/test_cli_quick.py compares them), and an error this path does not expect (a broken tool
module, bad settings) is left to the typer app too, which shows it as before. The other one-answer
commands (``status``, ``runs``, ``events send``) still go to typer, without cycle collection.
"""

from __future__ import annotations

import builtins
import functools
import gc
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from executor.errors import PlanIssue

__all__ = ["check_file", "main", "quick", "report"]


def main() -> None:  # pragma: no cover - the console script (pyproject's [project.scripts])
    quick(sys.argv[1:])
    from duraplan.cli import app

    app()


# Commands that read or send one thing and end (typer runs them): no cycle collection either.
_ONE_ANSWER = frozenset({"status", "runs", "events"})


def quick(argv: list[str]) -> None:
    """Run ``argv`` and end the process when it is a command answered here; else return."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return  # click's shell completion (_DURAPLAN_COMPLETE and the like) is the typer app's
    if argv[:1] != ["validate"]:
        if argv[:1] and argv[0] in _ONE_ANSWER:
            gc.disable()  # as below: these print one answer and end
        return
    plan: str | None = None
    as_json = False
    for arg in argv[1:]:
        if arg == "--json":
            as_json = True
        elif arg.startswith("-") or plan is not None:
            return  # an option the typer command may know or reject, or a second argument
        else:
            plan = arg
    if plan is None:
        return
    path = Path(plan)  # what typer makes of the argument
    # No cycle collection in a process this short: loading pydantic and jsonschema and building the
    # plan's validator allocate enough to run it dozens of times over objects that all stay alive
    # (~7% of the start-up; a 10,000-step plan validates in 3 s instead of 5, in the same memory).
    gc.disable()
    try:
        issues = check_file(path)
    except KeyboardInterrupt:
        _end(130)  # as typer ends on Ctrl-C: no traceback
    except Exception:
        gc.enable()
        return  # the typer command runs it again and shows the error its way
    _end(report(path, issues, as_json))


def check_file(plan: Path) -> list[PlanIssue]:
    """Every problem of the plan in the file ``plan``; none when it is valid."""
    from executor.errors import PlanInvalid
    from executor.lang.loader import load_plan

    try:
        raw = load_plan(plan)
    except PlanInvalid as exc:
        return exc.issues
    from executor.lang.validate import check_plan
    from executor.service.config import Settings
    from tools import default_registry

    _, issues = check_plan(raw, tools=default_registry(extra_modules=Settings.from_env().tool_modules))
    return issues


def report(plan: Path, issues: list[PlanIssue], as_json: bool, *, rich_only: bool = False) -> int:
    """Print the verdict as ``duraplan validate`` does; its exit code (2: invalid). Lines that rich
    would print unchanged are written directly, unless ``rich_only``: loading rich costs as much as
    reading a plan, and a script or an editor reading the output sees no difference."""
    if as_json:
        body: dict[str, Any] = {"valid": not issues, "issues": [i.to_dict() for i in issues]}
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    elif issues:
        header = f"{plan} ({len(issues)} problem(s))"
        _print(True, f"invalid: {header}", f"[red]invalid:[/red] {header}", rich_only)
        for issue in issues:
            _print(True, f"  {issue}", None, rich_only)
    else:
        _print(False, f"valid: {plan}", f"[green]valid:[/green] {plan}", rich_only)
    return 2 if issues else 0


def _print(stderr: bool, text: str, markup: str | None, rich_only: bool) -> None:
    """``text``, or ``markup`` (rich markup giving ``text``; None: ``text`` soft-wrapped, no
    markup), as rich's Console prints it."""
    stream = sys.stderr if stderr else sys.stdout
    if not rich_only and same_as_rich(text, markup is not None, _plain_width(stream)):
        stream.write(text + "\n")
    elif markup is None:
        _console(stderr).print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        _console(stderr).print(markup, highlight=False)


# rich replaces :name: by an emoji (also without markup), e.g. in an issue naming a tool ':smile:'
_EMOJI_CODE = re.compile(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)")


def same_as_rich(text: str, wraps: bool, width: int | None) -> bool:
    """Whether rich, writing to something that is not a terminal ``width`` columns wide (None: a
    terminal, which gets colours), prints ``text`` unchanged: printable ASCII (one column a
    character, no tabs or control codes), no markup tag, no emoji code, and when the line wraps
    (it is not soft-wrapped), no wider than the console."""
    if width is None or not (text.isascii() and text.isprintable()) or _EMOJI_CODE.search(text):
        return False
    return not wraps or ("[" not in text and len(text) <= width)


def _plain_width(stream: Any) -> int | None:
    """The width rich gives a console on ``stream`` when it is no terminal; None when it is one
    (rich's Console.is_terminal, size and width, with the environment that steers them)."""
    env = os.environ
    if hasattr(builtins, "get_ipython") or sys.platform == "win32":
        return None  # IPython or Jupyter, and Windows consoles: rich has rules of its own there
    if env.get("TTY_COMPATIBLE") == "1" or env.get("FORCE_COLOR"):
        return None
    if env.get("TTY_COMPATIBLE") != "0" and "FORCE_COLOR" not in env:
        try:
            if stream.isatty():
                return None
        except (AttributeError, ValueError):
            pass
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns) or None  # a width of 0: leave it to rich
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except (AttributeError, ValueError, OSError):
            continue
    return 80


@functools.cache
def _console(stderr: bool) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


def _end(code: int) -> NoReturn:
    """End the process as the typer command would (its exit code), without the interpreter's
    teardown of everything loaded (nothing is left to clean up). Tests that run the CLI in-process
    (DURAPLAN_CLI_IN_PROCESS) get the SystemExit the typer app would raise."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("DURAPLAN_CLI_IN_PROCESS"):
        raise SystemExit(code)
    os._exit(code)
