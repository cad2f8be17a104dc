"""``duraplan eval`` and ``duraplan eval-compare``: a typer app whose commands join the main CLI.

    duraplan eval --dataset evals/datasets/starter.yaml --model authored --replay
    duraplan eval --dataset D --model openai/gpt-4o-mini --record        # live, and keep the answers
    duraplan eval --dataset D --model M --replay --compare OTHER.json    # and compare with a report
    duraplan eval-compare A.json B.json

Exit codes: 0 when the eval ran (whatever the pass rate, unless ``--fail-under``), 1 when fewer
cases than ``--fail-under`` passed, 2 for bad input (dataset, report, options) and for a live eval
whose model lacks credentials or whose endpoint does not answer (checked before the first case).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evals.dataset import DatasetInvalid, load_dataset
from evals.preflight import EvalNotConfigured
from evals.recording import model_slug
from evals.report import CaseResult, Report, compare, compare_markdown, load_report, print_compare
from evals.runner import DEFAULT_RECORDINGS, EvalConfig, Mode, run_eval
from executor.service.process import exit_process

__all__ = ["app"]

app = typer.Typer(help="Evaluate planning models and planner versions.", no_args_is_help=True)
# Reports are wide (a column per check): a pipe or a CI log gets the full table, not 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    exit_process(code)


def _load(path: Path) -> Report:
    try:
        return load_report(path)
    except OSError as exc:
        _fail(f"cannot read report {path}: {exc.strerror or exc}")
    except ValueError as exc:  # JSON or model errors
        _fail(f"{path} is not an eval report: {str(exc).splitlines()[0]}")


@app.command("eval")
def eval_command(
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="Dataset YAML file.")],
    model: Annotated[str, typer.Option("--model", "-m", help="litellm model (or a recording's model, e.g. authored).")],
    record: Annotated[bool, typer.Option("--record", help="Call the model live and store its answers.")] = False,
    replay: Annotated[bool, typer.Option("--replay", help="Answer from stored recordings; no model calls.")] = False,
    compare_to: Annotated[
        Path | None, typer.Option("--compare", help="A previous JSON report to compare this one with.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the JSON and Markdown reports go.")] = Path(
        "eval-reports"
    ),
    name: Annotated[
        str | None, typer.Option("--name", help="Report file name, no extension (default: dataset-model-mode-time).")
    ] = None,
    recordings: Annotated[Path, typer.Option("--recordings", help="Recordings directory.")] = DEFAULT_RECORDINGS,
    judge: Annotated[str | None, typer.Option("--judge", help="A model to score each plan against its rubric.")] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Only this case (repeatable).")] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="OpenAI-compatible endpoint.")] = None,
    fail_under: Annotated[
        float | None, typer.Option("--fail-under", min=0.0, max=1.0, help="Exit 1 if fewer cases pass (0-1).")
    ] = None,
) -> None:
    """Plan every case of DATASET with MODEL, run the plans on the engine, and report."""
    if record and replay:
        _fail("--record and --replay exclude each other (neither: live calls, nothing stored)")
    mode: Mode = "record" if record else "replay" if replay else "live"
    try:
        data = load_dataset(dataset)
    except DatasetInvalid as exc:
        _fail(str(exc))
    other = _load(compare_to) if compare_to is not None else None
    if mode == "replay" and not (recordings / data.name / model_slug(model)).is_dir():
        _fail(f"no recordings for model {model!r} under {recordings / data.name}; record them with --record first")
    # Step failures are part of an eval (scripted errors, retries): the report shows them, not logs.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    if mode != "replay":
        from planner.cli import _quiet_litellm

        _quiet_litellm()
    try:
        config = EvalConfig(
            data,
            model,
            mode,
            recordings=recordings,
            judge_model=judge,
            case_ids=case,
            api_base=api_base,
        )
    except ValueError as exc:
        _fail(str(exc))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{data.name} · {model} · {mode}", total=len(config.cases), last="")

        def done(result: CaseResult) -> None:
            mark = "[green]✓[/]" if result.passed else "[red]✗[/]"
            progress.update(task, advance=1, last=f"{mark} {result.id}")

        try:
            report = asyncio.run(run_eval(config, on_case=done))
        except EvalNotConfigured as exc:
            progress.stop()
            _fail(str(exc))
    report.print_summary(out)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path, md_path = report.write(out_dir, name or f"{data.name}-{model_slug(model)}-{mode}-{stamp}")
    out.print(f"reports: {json_path} {md_path}", highlight=False)
    if other is not None:
        diff = compare(other, report)
        print_compare(diff, out)
        cmp_path = out_dir / f"{json_path.stem}-vs-{compare_to.stem if compare_to else 'other'}.md"
        cmp_path.write_text(compare_markdown(diff), encoding="utf-8")
        out.print(f"comparison: {cmp_path}", highlight=False)
    passed = sum(c.passed for c in report.cases) / len(report.cases)
    if fail_under is not None and passed < fail_under:
        err.print(f"{passed:.0%} of cases passed every check; --fail-under is {fail_under:.0%}", highlight=False)
        exit_process(1)
    exit_process(0)


@app.command("eval-compare")
def eval_compare(
    a: Annotated[Path, typer.Argument(help="Report A (JSON).")],
    b: Annotated[Path, typer.Argument(help="Report B (JSON).")],
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the comparison here.")] = None,
) -> None:
    """Compare two eval reports side by side: pass rates, totals, and the cases that changed."""
    diff = compare(_load(a), _load(b))
    print_compare(diff, out)
    if markdown is not None:
        markdown.write_text(compare_markdown(diff), encoding="utf-8")
    exit_process(0)
