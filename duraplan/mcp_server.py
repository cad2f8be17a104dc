"""duraplan as an MCP server: agent frameworks validate, plan, submit and steer runs as MCP tools.

    duraplan mcp --tenant acme                       # stdio (what desktop agents spawn)
    duraplan mcp --tenant acme --transport http      # streamable HTTP on http://127.0.0.1:8765/mcp
    python -m duraplan.mcp_server --tenant acme      # the same without the CLI wiring

One server instance serves one tenant (``--tenant`` or ``DURAPLAN_TENANT``): no tool takes a tenant,
so an agent cannot reach another tenant's runs. Every tool is a thin layer over the Python API
(``Duraplan``, ``RunHandle``, ``check_plan``, ``plan_goal``); expected failures come back as MCP
tool errors (``isError``) with one line of text, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from duraplan.api_models import EventAccepted, Issue, RunList, ValidationResult
from duraplan.mcp_auth import TenantKeyAuth, check_http_auth
from executor.engine.run_status import FINAL_RUN_STATES, RunState, RunStatus
from executor.errors import DuraplanError, InputsInvalid, PlanInvalid, PlanIssue, RunFailed
from executor.lang.model_names import model_problem
from executor.lang.validate import check_plan
from executor.service.client import NAME_PATTERN, Duraplan
from executor.service.config import Settings, connect
from executor.service.process import exit_process

__all__ = ["app", "create_server", "main", "serve"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

P = ParamSpec("P")
R = TypeVar("R")

MAX_WAIT_SECONDS = 300.0

INSTRUCTIONS = """\
duraplan runs plans (JSON workflows of steps: tool, llm, code, sleep, wait_for_event, foreach, switch,
subplan, set, fail) durably on Temporal for tenant {tenant!r}. Typical loop: plan_goal (or write a plan),
validate_plan until valid, submit_plan with a session id, then get_run (wait_seconds to block), send_event
for wait_for_event steps, cancel_run to stop. Plans and expressions: ${{steps.<id>.output}}, ${{input.x}}."""

PlanArg = Annotated[
    dict[str, Any],
    Field(
        description=(
            "The plan as a JSON object: {name, inputs?: JSON Schema, steps: [{id, kind, ...}], output?, limits?}. "
            "Step kinds: tool, llm, code, sleep, wait_for_event, foreach, switch, subplan, set, fail. "
            "Templates are JMESPath in ${...}, e.g. ${input.order_id} or ${steps.fetch.output}."
        )
    ),
]
RunIdArg = Annotated[
    str,
    Field(
        description=f"The run id submit_plan returned (matches {NAME_PATTERN.pattern}), or a subplan step's "
        "child_run_id from get_run."
    ),
]


# ---- results (their JSON Schemas are the tools' output schemas) --------------------------------


class Submitted(BaseModel):
    run_id: str
    tenant: str
    session: str


class Tokens(BaseModel):
    prompt: int
    completion: int
    total: int


class Planned(BaseModel):
    plan: dict[str, Any] = Field(description="The validated plan, ready for submit_plan.")
    model: str
    attempts: list[dict[str, Any]] = Field(
        description="Each model answer: number, ok, issues the validator found, tokens and cost."
    )
    tokens: Tokens
    cost_usd: float


class Cancelled(BaseModel):
    run_id: str
    cancel_requested: bool = Field(description="Cancellation is graceful: compensations run, then state cancelled.")


# ---- errors --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, PlanInvalid):
        return f"plan is invalid ({len(exc.issues)} problem(s)): " + "; ".join(str(i) for i in exc.issues)
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def _tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Expected errors (and any other failure) become an ``isError`` result with one line of text."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except DuraplanError as exc:
            raise ToolError(_one_line(exc)) from None
        except Exception as exc:  # a Temporal RPC error, a lost connection: still one line for the agent
            raise ToolError(f"{type(exc).__name__}: {_one_line(exc)}") from None

    return wrapper


_ARG_ERRORS = re.compile(r"^Error executing tool (\S+): \d+ validation errors? for \S+$")
_SDK_PREFIX = re.compile(r"^Error executing tool \S+: ")
_PYDANTIC_TYPE = re.compile(r"\s*\[type=[^\]]*\]$")


def _flatten(text: str) -> str:
    """One line, without the SDK's ``Error executing tool X:`` prefix; pydantic's argument report flattened."""
    lines = [line for line in text.splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    header = _ARG_ERRORS.match(lines[0]) if lines else None
    if header is None:
        return _SDK_PREFIX.sub("", " ".join(line.strip() for line in lines))
    parts: list[str] = []
    loc: str | None = None
    for line in lines[1:]:
        if not line.startswith(" "):
            loc = line.strip()
            continue
        message = _PYDANTIC_TYPE.sub("", line.strip())
        parts.append(f"{loc}: {message}" if loc else message)
        loc = None
    return f"invalid arguments for {header.group(1)}: " + "; ".join(parts)


class _OneLineErrors:
    """Server middleware: every ``isError`` tool result's text is one line."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/call":
            return result
        if isinstance(result, CallToolResult) and result.is_error:
            result.content = [
                TextContent(type="text", text=_flatten(c.text)) if isinstance(c, TextContent) else c
                for c in result.content
            ]
        elif isinstance(result, dict) and result.get("isError") and isinstance(result.get("content"), list):
            for block in result["content"]:
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    block["text"] = _flatten(block["text"])
        return result


def _issues(issues: Sequence[PlanIssue]) -> list[Issue]:
    return [Issue(pointer=i.pointer, step=i.step, code=i.code, message=i.message) for i in issues]


# ---- the server ---------------------------------------------------------------------------------


def create_server(
    dp: Duraplan,
    *,
    tenant: str,
    completion: Callable[..., Awaitable[Any]] | None = None,
    name: str = "duraplan",
) -> MCPServer:
    """An MCP server exposing ``dp`` for one ``tenant``.

    ``completion`` replaces ``litellm.acompletion`` for ``plan_goal`` (tests pass a
    ``planner.testing.ScriptedModel``)."""
    if not NAME_PATTERN.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} must match {NAME_PATTERN.pattern}")
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS.format(tenant=tenant), middleware=[_OneLineErrors()])
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def validate_plan(plan: PlanArg) -> ValidationResult:
        """Check a plan without running it. Returns every problem at once, each with a JSON pointer and step id:
        schema errors, duplicate ids, unknown references, dependency cycles, unknown or ungranted tools,
        bad tool arguments, expression and code syntax, durations and limits."""
        context = await dp.context(tenant)  # the tenant's grants, read once, off the event loop
        _, issues = check_plan(plan, tools=dp.registry_for(tenant), granted=context.is_granted)
        return ValidationResult(valid=not issues, issues=_issues(issues))

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
    @_tool_errors
    async def submit_plan(
        plan: PlanArg,
        session: Annotated[
            str, Field(description=f"The agent session the run belongs to (matches {NAME_PATTERN.pattern}).")
        ],
        inputs: Annotated[
            dict[str, Any] | None, Field(description="Run inputs; must satisfy the plan's `inputs` JSON Schema.")
        ] = None,
        run_id: Annotated[
            str | None,
            Field(
                description="Idempotency key: the same run_id with the same plan and inputs returns the same run; "
                "with different ones it is an error. Generated when omitted."
            ),
        ] = None,
    ) -> Submitted:
        """Validate a plan and start it as a durable run. Returns at once with the run_id; follow it with get_run.
        An invalid plan is rejected with every problem listed (JSON pointer, step id) and nothing is started."""
        context = await dp.context(tenant)
        handle = await dp.submit_plan(
            plan, tenant=tenant, session=session, inputs=inputs, run_id=run_id, context=context
        )
        return Submitted(run_id=handle.run_id, tenant=tenant, session=session)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    @_tool_errors
    async def plan_goal(
        goal: Annotated[
            str, Field(min_length=1, max_length=20_000, description="What the plan should do, in natural language.")
        ],
        model: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="litellm model, e.g. openai/gpt-4o-mini; defaults to the server's DURAPLAN_MODEL.",
            ),
        ] = None,
    ) -> Planned:
        """Turn a natural-language goal into a validated plan (not started): the model sees this tenant's tool
        catalog and repairs its answer from the validator's findings, a bounded number of times."""
        from planner.core import plan_goal as plan

        if model is not None and (problem := model_problem(model)) is not None:
            raise InputsInvalid("model", [problem])

        tools = (await dp.context(tenant)).tools(dp.registry)  # the model sees, and may use, granted tools only
        result = await plan(goal, tools=tools, model=model, completion=completion)
        return Planned(
            plan=result.plan_json,
            model=result.model,
            attempts=[a.to_dict() for a in result.attempts],
            tokens=Tokens(prompt=result.prompt_tokens, completion=result.completion_tokens, total=result.total_tokens),
            cost_usd=result.cost_usd,
        )

    @server.tool(annotations=read_only)
    @_tool_errors
    async def get_run(
        run_id: RunIdArg,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_SECONDS,
                description="Wait up to this long for the run to finish before answering (0: answer now).",
            ),
        ] = 0,
        items: Annotated[bool, Field(description="Include each foreach item's steps.")] = False,
    ) -> RunStatus:
        """A run's state (running, waiting, paused, replanning, compensating, completed, failed, cancelled,
        terminated), each step's state, attempts, timings, error and output preview, nested steps (switch branches,
        foreach item counts, a subplan's child_run_id, which get_run opens too), the plan hash and revisions;
        `result` holds the plan's output once the run completed, `error` says why it failed."""
        handle = dp.get_run(run_id, tenant=tenant)
        status = await handle.status(items=items)
        if wait_seconds > 0 and status.state not in FINAL_RUN_STATES:
            with contextlib.suppress(TimeoutError, RunFailed):
                await asyncio.wait_for(handle.result(), wait_seconds)
            status = await handle.status(items=items)
        if status.state == "completed":
            status = status.model_copy(update={"result": await handle.result()})
        return status

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
    @_tool_errors
    async def send_event(
        run_id: RunIdArg,
        type: Annotated[
            str, Field(min_length=1, max_length=200, description="Event type a wait_for_event step waits for.")
        ],
        payload: Annotated[
            Any, Field(description="Any JSON value; checked against the step's payload_schema. At most 1 MiB.")
        ] = None,
        event_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="Deduplication id: an event_id is delivered once, however often sent.",
            ),
        ] = None,
    ) -> EventAccepted:
        """Deliver an event to a running run. Events sent before a step waits for them are kept."""
        answer = await dp.get_run(run_id, tenant=tenant).send_event(type, payload, event_id=event_id)
        return EventAccepted(**answer, run_id=run_id, type=type)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
    @_tool_errors
    async def cancel_run(run_id: RunIdArg) -> Cancelled:
        """Cancel a run gracefully: running steps are cancelled and compensations run in reverse order."""
        await dp.get_run(run_id, tenant=tenant).cancel()
        return Cancelled(run_id=run_id, cancel_requested=True)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_runs(
        session: Annotated[str | None, Field(description="Only runs of this agent session.")] = None,
        status: Annotated[RunState | None, Field(description="Only runs in this state.")] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many runs.")] = 50,
    ) -> RunList:
        """This tenant's runs, newest first."""
        return RunList(runs=await dp.list_runs(tenant=tenant, session=session, status=status, limit=limit))

    return server


# ---- serving --------------------------------------------------------------------------------------


async def serve(
    transport: Literal["stdio", "http"],
    *,
    tenant: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: Settings | None = None,
    no_auth: bool = False,
) -> None:
    """Serve until the transport closes (``Settings`` from the environment). Temporal is reached
    lazily: with it down, validate_plan still answers and the other tools say why they cannot.
    Over HTTP every request needs an API key of ``tenant`` unless ``no_auth`` (loopback only)."""
    settings = settings or Settings.from_env()
    registry = settings.tenant_registry()
    if transport == "http":
        check_http_auth(host, registry, no_auth)
    dp = Duraplan(await connect(settings, lazy=True), settings, tenants=registry)
    dp.registry.names()  # DURAPLAN_TOOL_MODULES load now: a broken one fails the start, not a call
    server = create_server(dp, tenant=tenant)
    if transport == "stdio":
        await server.run_stdio_async()
        return
    import uvicorn

    app: Any = server.streamable_http_app(host=host)
    if not no_auth:
        assert registry is not None  # check_http_auth
        app = TenantKeyAuth(app, registry, tenant)
    await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()


app = typer.Typer(help="Serve duraplan to agents over MCP.", no_args_is_help=False, add_completion=False)


@app.command("mcp")
def mcp_command(
    tenant: Annotated[
        str, typer.Option("--tenant", "-t", envvar="DURAPLAN_TENANT", help="The one tenant this server serves.")
    ] = "default",
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (spawned by the agent) or http (streamable HTTP at /mcp).")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="HTTP bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8765,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="HTTP without API keys: loopback development only.")
    ] = False,
) -> None:
    """Serve the duraplan tools (validate, plan, submit, status, events, cancel, list) over MCP."""
    if transport not in ("stdio", "http"):
        typer.echo(f"error: --transport must be stdio or http, not {transport!r}", err=True)
        raise typer.Exit(2)
    if not NAME_PATTERN.fullmatch(tenant):
        typer.echo(f"error: --tenant {tenant!r} must match {NAME_PATTERN.pattern}", err=True)
        raise typer.Exit(2)
    code = 0
    try:
        kind: Literal["stdio", "http"] = "stdio" if transport == "stdio" else "http"
        asyncio.run(serve(kind, tenant=tenant, host=host, port=port, no_auth=no_auth))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # cannot connect to Temporal, port in use, ...: one line, no traceback
        hint = " (start one with `duraplan dev`)" if "connect" in str(exc).lower() else ""
        typer.echo(f"error: {_one_line(exc)}{hint}", err=True)
        code = 1
    exit_process(code)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m duraplan.mcp_server [--tenant T] [--transport stdio|http] [--host H] [--port P]``."""
    typer.main.get_command(app).main(args=list(argv) if argv is not None else None, prog_name="duraplan mcp")


if __name__ == "__main__":
    main(sys.argv[1:])
