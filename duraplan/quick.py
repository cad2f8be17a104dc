"""``duraplan validate`` answered before typer loads: the console entry point's fast path.

Validating a plan is what an editor or a pre-commit hook runs on every save, and typer (built on
pydantic, with its own click, turning every parameter of every command into a pydantic adapter) cost
about as much as the validation itself. ``main`` recognises the plain shape of the command
(``validate PLAN [--json]``) and runs it here; anything else (``--help``, an unknown option, a
missing argument, shell completion) goes to the typer app in ``duraplan.cli``, which explains.
Both paths print through ``report`` below, so their output and exit codes are the same
(tests/test_cli_quick.py compares them), and an error this path does not expect (a broken tool
module, bad settings) is left to the typer app too, which shows it as before.
"""

from __future__ import annotations

import json
import os
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


def quick(argv: list[str]) -> None:
    """Run ``argv`` and end the process when it is a command answered here; else return."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return  # click's shell completion (_DURAPLAN_COMPLETE and the like) is the typer app's
    if argv[:1] != ["validate"]:
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
    try:
        issues = check_file(path)
    except Exception:
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


def report(plan: Path, issues: list[PlanIssue], as_json: bool) -> int:
    """Print the verdict as ``duraplan validate`` does; its exit code (2: invalid)."""
    if as_json:
        body: dict[str, Any] = {"valid": not issues, "issues": [i.to_dict() for i in issues]}
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    elif issues:
        err = _console(stderr=True)
        err.print(f"[red]invalid:[/red] {plan} ({len(issues)} problem(s))", highlight=False)
        for issue in issues:
            err.print(f"  {issue}", highlight=False, markup=False, soft_wrap=True)
    else:
        _console(stderr=False).print(f"[green]valid:[/green] {plan}", highlight=False)
    return 2 if issues else 0


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
