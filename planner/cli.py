"""``duraplan plan`` and ``duraplan chat``: a typer app whose commands join the main CLI.

    duraplan plan "GOAL" [-o plan.json] [--model M]     plan locally; the plan to stdout or a file
    duraplan chat [--tenant T] [--session S]           a durable planning session, one line per message

Errors print one line (plus the validator's findings when repairs ran out) and exit non-zero:
1 for configuration and provider errors, 2 when no valid plan came back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from executor.errors import DuraplanError
from executor.service.config import Settings
from planner.errors import RepairExhausted

__all__ = ["app"]

app = typer.Typer(help="Plan from a goal with a model.", no_args_is_help=True)

Model = Annotated[
    str | None, typer.Option("--model", "-m", help="litellm model, e.g. openai/gpt-4o-mini (DURAPLAN_MODEL).")
]
SUBMIT_WORDS = ("submit", "/submit", "run", "/run")
QUIT_WORDS = ("quit", "exit", "/quit", "/exit")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _quiet_litellm() -> None:
    """litellm prints help banners and warnings of its own; the CLI's output is its own lines only."""
    import logging

    import litellm

    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fail(exc: BaseException) -> typer.Exit:
    """One line for the error (and its findings when repairs ran out); the exit code."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    _say(f"error: {lines[0]}")
    if isinstance(exc, RepairExhausted):
        for line in lines[1:]:
            _say(line)
        return typer.Exit(2)
    return typer.Exit(1)


@app.command()
def plan(
    goal: Annotated[str, typer.Argument(help="What the plan should do.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the plan here (JSON).")] = None,
    model: Model = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=10, help="Answers to try.")] = 3,
    budget: Annotated[float | None, typer.Option("--budget", help="Stop once the attempts cost this (USD).")] = None,
) -> None:
    """Write a plan for GOAL with a model; validated (and repaired) against your tools."""
    from planner.core import plan_goal
    from planner.provider import resolve_model
    from tools import default_registry

    settings = Settings.from_env()
    try:
        chosen = resolve_model(model or settings.default_model)  # fails fast, before importing litellm
        _quiet_litellm()
        result = asyncio.run(
            plan_goal(
                goal,
                tools=default_registry(extra_modules=settings.tool_modules),
                model=chosen,
                max_attempts=max_attempts,
                budget_usd=budget,
            )
        )
    except DuraplanError as exc:
        raise _fail(exc) from None
    text = json.dumps(result.plan_json, indent=2, ensure_ascii=False)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        _say(f"wrote {output}")
    for attempt in result.attempts:
        found = f"{len(attempt.issues)} problem(s)" if attempt.issues else "valid"
        _say(
            f"  attempt {attempt.number}: {found}; {attempt.prompt_tokens}+{attempt.completion_tokens} tokens, "
            f"${attempt.cost_usd:.6f}"
        )
    _say(result.summary())


@app.command()
def chat(
    tenant: Annotated[str, typer.Option("--tenant", "-t", envvar="DURAPLAN_TENANT", help="Tenant.")] = "default",
    session: Annotated[
        str, typer.Option("--session", "-s", envvar="DURAPLAN_SESSION", help="Planning session.")
    ] = "default",
    model: Model = None,
    inputs: Annotated[str | None, typer.Option("--inputs", help="Run inputs for submit (JSON object).")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Temporal address (DURAPLAN_ADDRESS).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Temporal namespace.")] = None,
) -> None:
    """Plan in conversation: each line plans or revises (shows the diff); "submit" runs the plan."""
    try:
        values: dict[str, Any] = json.loads(inputs) if inputs else {}
    except json.JSONDecodeError as exc:
        raise _fail(ValueError(f"--inputs is not JSON: {exc}")) from None
    except (RecursionError, ValueError) as exc:  # nested past the parser's stack; a 5,000-digit integer
        reason = "it nests too deep" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise _fail(ValueError(f"--inputs is not usable JSON: {reason}")) from None
    if not isinstance(values, dict):
        raise _fail(ValueError("--inputs must be a JSON object"))
    settings = Settings.from_env(address=address, namespace=namespace)
    try:
        asyncio.run(_chat(settings, tenant, session, model, values))
    except DuraplanError as exc:
        raise _fail(exc) from None
    except RuntimeError as exc:
        if "connect" in str(exc).lower():
            raise _fail(RuntimeError(f"cannot reach Temporal: {exc} (start one with `duraplan dev`)")) from None
        raise


async def _chat(settings: Settings, tenant: str, session: str, model: str | None, inputs: dict[str, Any]) -> None:
    from executor.service.client import Duraplan
    from planner.client import ChatSession

    dp = await Duraplan.connect(settings)
    chat = ChatSession(dp, tenant=tenant, session=session, model=model)
    await chat.start()
    interactive = sys.stdin.isatty()
    _say(f'planning session {chat.workflow_id}: type a goal, then changes; "submit" runs the plan, "quit" ends.')
    while True:
        if interactive:
            typer.echo("> ", err=True, nl=False)
        line = sys.stdin.readline()
        if not line:
            return
        text = line.strip()
        if not text:
            continue
        if text.lower() in QUIT_WORDS:
            return
        try:
            if text.lower() in SUBMIT_WORDS:
                handle = await chat.submit(inputs)
                typer.echo(
                    f"started run {handle.run_id} (tenant {tenant}); follow it with: duraplan status {handle.run_id}"
                )
                continue
            revision = await chat.send(text)
        except DuraplanError as exc:
            lines = str(exc).splitlines()
            _say(f"error: {lines[0]}")
            for extra in lines[1:]:
                _say(extra)
            continue  # the session goes on: say it differently, or submit the last good revision
        typer.echo(
            f"v{revision.revision}: {revision.plan.get('name')} ({len(revision.attempts)} attempt(s), "
            f"{revision.prompt_tokens}+{revision.completion_tokens} tokens, ${revision.cost_usd:.6f})"
        )
        typer.echo(revision.diff)
