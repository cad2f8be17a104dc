"""The ``duraplan`` command line. User errors print one clear line and exit non-zero."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # `python -m duraplan.cli validate ...` is answered before typer loads
    from duraplan.quick import quick

    quick(sys.argv[1:])  # ends the process when it answers the command

import contextlib
import functools
import json
import os
import signal
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from duraplan.lazy import LazyGroup
from executor.engine.states import FINAL_RUN_STATES, RUN_STATES
from executor.errors import DuraplanError, PlanInvalid
from executor.lang.depth import MAX_JSON_DEPTH
from executor.service.config import Settings
from executor.service.process import exit_process

if TYPE_CHECKING:  # what a command needs is imported when it runs (duraplan.lazy says why)
    from rich.console import Console
    from rich.table import Table

    from executor.engine.run_status import RunStatus, RunSummary, StepView
    from executor.service.client import Duraplan, RunHandle
    from executor.service.http_runs import HttpRuns

__all__ = ["app"]

# litellm fetches its model price map from the internet at import unless told otherwise; the
# bundled copy is enough for cost accounting and keeps start-up fast on closed networks.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# plan, chat, eval, eval-compare, tenants, tools, mcp, usage and bulk are imported when used (duraplan.lazy).
app = typer.Typer(
    cls=LazyGroup, help="duraplan: durable execution of runtime-supplied plans on Temporal.", no_args_is_help=True
)
events_app = typer.Typer(help="Send events to runs.", no_args_is_help=True)
app.add_typer(events_app, name="events")


class _Console:
    """A rich ``Console`` made on first use: ``--json`` output never imports rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self._stderr)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    def print_json(self, json: str) -> None:
        self.console.print_json(json)


out = _Console(stderr=False)
err = _Console(stderr=True)


def escape(markup: str) -> str:
    from rich.markup import escape

    return escape(markup)


T = TypeVar("T")
Tenant = Annotated[str, typer.Option("--tenant", "-t", envvar="DURAPLAN_TENANT", help="Tenant the run belongs to.")]
Session = Annotated[str, typer.Option("--session", "-s", envvar="DURAPLAN_SESSION", help="Agent session.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Address = Annotated[str | None, typer.Option("--address", help="Temporal address (DURAPLAN_ADDRESS).")]
Namespace = Annotated[str | None, typer.Option("--namespace", help="Temporal namespace.")]
FINAL = FINAL_RUN_STATES


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def command(fn: Callable[..., Coroutine[Any, Any, None] | None]) -> Callable[..., None]:
    """Run a command; turn expected errors into one line and an exit code. A command returning a
    coroutine (an ``async def`` one, or one that falls back to the SDK) runs it on an event loop.

    The process ends through ``executor.service.process.exit_process`` (why: see there)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        code = 0
        try:
            pending = fn(*args, **kwargs)
            if isinstance(pending, types.CoroutineType):
                import asyncio  # here, not at the top: `validate` and the HTTP path run no event loop

                asyncio.run(pending)
        except typer.Exit as exc:
            code = exc.exit_code
        except _Terminated:
            code = 143
        except PlanInvalid as exc:
            err.print(f"[red]error:[/red] plan is invalid ({len(exc.issues)} problem(s))", highlight=False)
            for issue in exc.issues:
                err.print(f"  {issue}", highlight=False, markup=False, soft_wrap=True)
            code = 2
        except DuraplanError as exc:
            code = _fail(str(exc)).exit_code
        except ConnectionError as exc:  # tools.DatabaseUnavailable: the message names the database
            code = _fail(str(exc)).exit_code
        except RuntimeError as exc:
            if _is_dev_server_error(exc):  # e.g. the port is taken: one line, not a traceback
                code = _fail(str(exc).splitlines()[0]).exit_code
            elif "connect" in str(exc).lower():
                code = _fail(f"cannot reach Temporal: {exc} (start one with `duraplan dev`)").exit_code
            else:
                raise
        except KeyboardInterrupt:
            code = 130
        exit_process(code)

    return wrapper


class _Terminated(KeyboardInterrupt):
    """The command was stopped by SIGTERM (exit status 143), after unwinding."""


@contextlib.contextmanager
def _sigterm_cancels_this_task() -> Iterator[None]:
    """SIGTERM cancels the running command at its next ``await``, so every ``finally`` and
    ``async with`` runs, then the command exits with 143. (A handler raising wherever the signal
    landed, inside a print or half-way through the event loop, could leave a lock held: `duraplan
    dev` then hung with its Temporal server still running.) uvicorn's own SIGTERM handling, while
    the API serves, stops the server and raises the signal again, which lands here."""
    import asyncio

    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        yield
    except asyncio.CancelledError:
        if stopped:
            raise _Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _over_http(address: str | None, namespace: str | None, call: Callable[[HttpRuns], T]) -> T | None:
    """``call``'s result over Temporal's HTTP API, which needs no Temporal SDK (0.3 s of start-up);
    None when no HTTP endpoint is known (``executor.service.endpoints``) or it gave no answer: the
    caller then takes the SDK path, with the same results, errors and exit codes."""
    from executor.service.endpoints import http_address

    settings = Settings.from_env(address=address, namespace=namespace)
    url = http_address(settings, address_given=address is not None)
    if url is None:
        return None
    from executor.service.http_runs import HttpRuns, HttpUnavailable

    try:
        runs = HttpRuns.open(settings, url)
    except ValueError:  # a record naming no http(s) URL: as if there were none
        return None
    try:
        return call(runs)
    except HttpUnavailable:
        return None
    finally:
        runs.close()


async def _dp(address: str | None, namespace: str | None) -> Duraplan:
    from executor.service.client import Duraplan

    return await Duraplan.connect(Settings.from_env(address=address, namespace=namespace))


def _check_locally(plan: Path, address: str | None, namespace: str | None) -> None:
    """PlanInvalid for a plan that can never run, before any connection is tried (tool grants
    are the server's to check)."""
    from executor.lang.loader import load_plan
    from executor.lang.validate import check_plan
    from tools import default_registry

    settings = Settings.from_env(address=address, namespace=namespace)
    _, issues = check_plan(load_plan(plan), tools=default_registry(extra_modules=settings.tool_modules))
    if issues:
        raise PlanInvalid(issues)


def _json_arg(text: str, what: str) -> Any:
    """``text`` parsed, or a one-line error naming ``what``: JSON nested past the parser's stack and
    integers of thousands of digits raised RecursionError / ValueError (a traceback)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise _fail(f"{what} nests too deep (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise _fail(f"{what} is not usable JSON: {str(exc).split(';')[0]}") from None


def _parse_inputs(pairs: list[str], inputs_json: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if inputs_json:
        text = Path(inputs_json[1:]).read_text() if inputs_json.startswith("@") else inputs_json
        loaded = _json_arg(text, "--inputs")
        if not isinstance(loaded, dict):
            raise _fail("--inputs must be a JSON object")
        values.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--input {pair!r} is not KEY=VALUE")
        try:
            json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw  # plain text is a string
            continue
        except (RecursionError, ValueError):
            pass  # JSON, but not usable: _json_arg says why
        values[key] = _json_arg(raw, f"--input {key}")
    return values


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(value), indent=2, default=str) + "\n")


def _is_dev_server_error(exc: BaseException) -> bool:
    from executor.service.devserver import DevServerError

    return isinstance(exc, DevServerError)


def _jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# ---- progress ----------------------------------------------------------------------------------


def _steps_table(status: RunStatus) -> Table:
    from rich.table import Table

    title = f"{status.plan_name}  run {status.run_id}  ({status.state})"
    table = Table(title=escape(title))
    for col in ("step", "kind", "state", "tries", "detail"):
        table.add_column(col)
    colors = {
        "completed": "green",
        "failed": "red",
        "running": "cyan",
        "retrying": "yellow",
        "throttled": "yellow",
        "waiting": "magenta",
        "cancelled": "red",
    }

    def add(step: StepView, depth: int) -> None:
        detail = ""
        if step.error:
            detail = f"{step.error.type}: {step.error.message}"
        elif step.progress:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(step.progress.counts.items()))
            detail = f"{step.progress.done}/{step.progress.total} items ({counts})"
        elif step.child_run_id:
            detail = f"child run {step.child_run_id}"
        elif step.output_preview:
            detail = step.output_preview
        table.add_row(
            escape("  " * depth + step.id),
            step.kind,
            f"[{colors.get(step.state, 'white')}]{step.state}[/]",
            str(step.attempts or ""),
            escape(detail[:100]),
        )
        for inner in step.steps:
            add(inner, depth + 1)
        for item in step.items or []:
            table.add_row(escape("  " * (depth + 1) + f"[{item.index}]"), "item", item.state, "", "")
            for inner in item.steps:
                add(inner, depth + 2)

    for step in status.steps:
        add(step, 0)
    return table


async def _follow(handle: RunHandle, live_output: bool) -> RunStatus:
    """Show live step progress until the run ends; the final status."""
    import asyncio

    status = await handle.status()
    if not live_output:
        while status["state"] not in FINAL:
            await asyncio.sleep(0.2)
            status = await handle.status()
        return status
    from rich.live import Live

    with Live(_steps_table(status), console=out.console, refresh_per_second=8) as live:
        while status["state"] not in FINAL:
            await asyncio.sleep(0.2)
            status = await handle.status()
            live.update(_steps_table(status))
    out.print()
    return status


async def _finish(handle: RunHandle, as_json: bool) -> None:
    status = await _follow(handle, live_output=not as_json)
    result: Any = None
    if status["state"] == "completed":
        result = await handle.result()
    if as_json:
        _print_json({"status": status, "result": result})
    elif status["state"] == "completed":
        out.print("[green]completed[/green] result:")
        out.print_json(json.dumps(result, default=str))
    else:
        error = status.get("error") or {}
        raise _fail(f"run {status['state']}: {error.get('type', '')} {error.get('message', '')}".strip())
    if status["state"] != "completed":
        raise typer.Exit(1)


# ---- commands ----------------------------------------------------------------------------------


@app.command()
def validate(plan: Annotated[Path, typer.Argument(help="Plan file (JSON or YAML).")], as_json: JsonOut = False) -> None:
    """Check a plan without running it; lists every problem and exits non-zero if there are any."""
    from duraplan.quick import check_file, report  # `duraplan validate PLAN` usually runs there

    code = report(plan, check_file(plan), as_json, rich_only=True)
    if code:
        raise typer.Exit(code)


@app.command()
@command
async def run(
    plan: Annotated[Path, typer.Argument(help="Plan file (JSON or YAML).")],
    input: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="KEY=VALUE (VALUE parsed as JSON if it is).")
    ] = None,
    inputs: Annotated[str | None, typer.Option("--inputs", help="All inputs as a JSON object, or @file.json.")] = None,
    tenant: Tenant = "default",
    session: Session = "default",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Idempotency: the same id returns the same run.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow progress until the run ends.")] = True,
    as_json: JsonOut = False,
    address: Address = None,
    namespace: Namespace = None,
) -> None:
    """Submit a plan and (by default) follow its steps live until it ends."""
    values = _parse_inputs(input or [], inputs)
    _check_locally(plan, address, namespace)  # the plan's problems first, with or without a server
    dp = await _dp(address, namespace)
    handle = await dp.submit_plan(plan, tenant=tenant, session=session, inputs=values, run_id=run_id)
    if not wait:
        if as_json:
            _print_json({"run_id": handle.run_id, "tenant": tenant})
        else:
            out.print(f"started run [bold]{handle.run_id}[/bold] (tenant {tenant})")
        return
    await _finish(handle, as_json)


@app.command()
@command
def status(
    run_id: Annotated[str, typer.Argument(help="A run id, or a subplan step's child run id.")],
    tenant: Tenant = "default",
    items: Annotated[bool, typer.Option("--items", help="Show each foreach item's steps.")] = False,
    as_json: JsonOut = False,
    address: Address = None,
    namespace: Namespace = None,
) -> Coroutine[Any, Any, None] | None:
    """Show a run's state and each step's state (nested ones too), attempts, timings, error and output."""
    st = _over_http(address, namespace, lambda runs: runs.status(run_id, tenant=tenant, items=items))
    if st is None:
        return _status_sdk(run_id, tenant, items, as_json, address, namespace)
    _show_status(st, as_json)
    return None


async def _status_sdk(
    run_id: str, tenant: str, items: bool, as_json: bool, address: str | None, namespace: str | None
) -> None:
    dp = await _dp(address, namespace)
    _show_status(await dp.get_run(run_id, tenant=tenant).status(items=items), as_json)


def _show_status(st: RunStatus, as_json: bool) -> None:
    if as_json:
        _print_json(st)
        return
    out.print(_steps_table(st))
    out.print(f"plan hash {st.plan_hash}  executed steps {st.executed_steps}", highlight=False)
    if st.error:
        out.print(f"[red]error[/red] {st.error.type}: {st.error.message}", highlight=False)


@app.command()
@command
def runs(
    tenant: Tenant = "default",
    session: Annotated[str | None, typer.Option("--session", "-s", help="Only this session.")] = None,
    state: Annotated[
        str | None, typer.Option("--status", help=", ".join(RUN_STATES) + " (of the current generation)")
    ] = None,
    limit: int = 50,
    as_json: JsonOut = False,
    address: Address = None,
    namespace: Namespace = None,
) -> Coroutine[Any, Any, None] | None:
    """List a tenant's runs, newest first."""
    rows = _over_http(
        address, namespace, lambda r: r.list_runs(tenant=tenant, session=session, status=state, limit=limit)
    )
    if rows is None:
        return _runs_sdk(tenant, session, state, limit, as_json, address, namespace)
    _show_runs(rows, as_json)
    return None


async def _runs_sdk(
    tenant: str,
    session: str | None,
    state: str | None,
    limit: int,
    as_json: bool,
    address: str | None,
    namespace: str | None,
) -> None:
    dp = await _dp(address, namespace)
    _show_runs(await dp.list_runs(tenant=tenant, session=session, status=state, limit=limit), as_json)


def _show_runs(rows: list[RunSummary], as_json: bool) -> None:
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table()
    for col in ("run", "session", "plan", "state", "gen", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r.run_id), r.session or "", r.plan_name or "", r.state, str(r.generation), (r.started_at or "")[:19]
        )
    out.print(table)


@events_app.command("send")
@command
def send_event(
    run_id: str,
    event_type: Annotated[str, typer.Argument(metavar="TYPE")],
    payload: Annotated[str | None, typer.Option("--payload", help="JSON payload.")] = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="Deduplication id.")] = None,
    tenant: Tenant = "default",
    as_json: JsonOut = False,
    address: Address = None,
    namespace: Namespace = None,
) -> Coroutine[Any, Any, None] | None:
    """Send an event to a run; kept until a wait_for_event step takes it."""
    value = _json_arg(payload, "--payload") if payload is not None else None
    result = _over_http(
        address,
        namespace,
        lambda runs: runs.send_event(run_id, tenant=tenant, type=event_type, payload=value, event_id=event_id),
    )
    if result is None:
        return _send_event_sdk(run_id, event_type, value, event_id, tenant, as_json, address, namespace)
    _show_event(result, event_type, as_json)
    return None


async def _send_event_sdk(
    run_id: str,
    event_type: str,
    value: Any,
    event_id: str | None,
    tenant: str,
    as_json: bool,
    address: str | None,
    namespace: str | None,
) -> None:
    dp = await _dp(address, namespace)
    result = await dp.get_run(run_id, tenant=tenant).send_event(event_type, value, event_id=event_id)
    _show_event(result, event_type, as_json)


def _show_event(result: dict[str, Any], event_type: str, as_json: bool) -> None:
    if as_json:
        _print_json(result)
    else:
        out.print("duplicate (already delivered)" if result["duplicate"] else f"event {event_type!r} accepted")


def _control(
    name: str,
    doc: str,
    action: Callable[[RunHandle], Awaitable[Any]],
    over_http: Callable[[HttpRuns, str, str], Any] | None = None,
) -> None:
    """A run control command; ``over_http``: the same action over Temporal's HTTP API."""

    @command
    def control(
        run_id: str, tenant: Tenant = "default", address: Address = None, namespace: Namespace = None
    ) -> Coroutine[Any, Any, None] | None:
        def act(runs: HttpRuns) -> bool:
            assert over_http is not None
            over_http(runs, run_id, tenant)
            return True

        if over_http is None or _over_http(address, namespace, act) is None:
            return _control_sdk(run_id, tenant, address, namespace)
        out.print(f"{name}: {run_id}")
        return None

    async def _control_sdk(run_id: str, tenant: str, address: str | None, namespace: str | None) -> None:
        dp = await _dp(address, namespace)
        await action(dp.get_run(run_id, tenant=tenant))
        out.print(f"{name}: {run_id}")

    control.__doc__ = doc
    app.command(name)(control)


_control(
    "cancel",
    "Cancel gracefully: running steps stop, compensations run.",
    lambda h: h.cancel(),
    lambda r, run_id, tenant: r.cancel(run_id, tenant=tenant),
)
_control(
    "pause",
    "Pause: no new step starts; running steps finish.",
    lambda h: h.pause(),
    lambda r, run_id, tenant: r.pause(run_id, tenant=tenant),
)
_control(
    "resume",
    "Resume a paused run.",
    lambda h: h.resume(),
    lambda r, run_id, tenant: r.resume(run_id, tenant=tenant),
)
_control(
    "terminate",
    "Terminate at once: nothing more runs, not even compensations.",
    lambda h: h.terminate(),
    lambda r, run_id, tenant: r.terminate(run_id, tenant=tenant),
)
_control("restart", "Start the run afresh with the same plan and inputs.", lambda h: h.restart())  # the start path: SDK


@app.command()
@command
async def worker(address: Address = None, namespace: Namespace = None) -> None:
    """Run a worker against an existing Temporal cluster (DURAPLAN_ADDRESS, _NAMESPACE, _API_KEY, _TLS*)."""
    from duraplan.worker import running_worker
    from executor.service.config import connect

    settings = Settings.from_env(address=address, namespace=namespace)
    client = await connect(settings)
    # SIGTERM (a deployment stopping the worker) shuts the worker down as Ctrl-C does: no new
    # tasks polled, the ones in flight given their grace period, then exit 143.
    with _sigterm_cancels_this_task():
        async with running_worker(client, settings, tenants=settings.tenant_registry()):
            import asyncio

            out.print(f"worker polling task queue {settings.task_queue!r} on {settings.address} ({settings.namespace})")
            await asyncio.Event().wait()


@app.command()
@command
async def dev(
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int | None, typer.Option(help="Temporal UI port (default port+1000).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data directory (DURAPLAN_HOME, default ./.duraplan).")] = None,
    in_memory: Annotated[bool, typer.Option(help="Keep nothing on disk.")] = False,
    api_port: Annotated[int, typer.Option(help="HTTP API port (served unless --run is given).")] = 8000,
    run_plan: Annotated[Path | None, typer.Option("--run", help="Run this plan to completion, then exit.")] = None,
    input: Annotated[list[str] | None, typer.Option("--input", "-i", help="KEY=VALUE inputs for --run.")] = None,
    tenant: Tenant = "default",
    session: Session = "default",
) -> None:
    """Start the embedded Temporal dev server (SQLite, WAL) and a worker; prints the UI address."""
    # SIGTERM unwinds: the `async with` blocks close, so the dev server stops its Temporal process
    # instead of this process dying with its child still holding the ports.
    with _sigterm_cancels_this_task():
        await _dev(port, ui_port, home, in_memory, api_port, run_plan, input, tenant, session)


async def _dev(
    port: int,
    ui_port: int | None,
    home: Path | None,
    in_memory: bool,
    api_port: int,
    run_plan: Path | None,
    input: list[str] | None,
    tenant: str,
    session: str,
) -> None:
    from duraplan.worker import running_worker
    from executor.service.client import Duraplan
    from executor.service.devserver import DevServer
    from executor.service.telemetry import configure_telemetry

    settings = Settings.from_env(home=home)
    settings.home.mkdir(parents=True, exist_ok=True)
    # Before the dev server's client connects: it (and the worker on it) then traces and serves
    # SDK metrics when DURAPLAN_OTLP_ENDPOINT / DURAPLAN_PROMETHEUS_ADDRESS ask for it.
    configure_telemetry(settings)
    async with DevServer(
        home=settings.home, port=port, ui_port=ui_port, db_file=None if in_memory else settings.home / "temporal.db"
    ) as server:
        settings = Settings.from_env(home=home, address=server.address)
        out.print(f"Temporal {server.address}   UI {server.ui_url}   data {settings.home}", highlight=False)
        async with running_worker(server.client, settings, tenants=settings.tenant_registry()):
            if run_plan is None:
                import asyncio

                from duraplan.api import serve

                api = asyncio.create_task(serve(settings, host="127.0.0.1", port=api_port, log_level="warning"))
                out.print(
                    f"HTTP API http://127.0.0.1:{api_port}   docs http://127.0.0.1:{api_port}/docs   "
                    f"OpenAPI http://127.0.0.1:{api_port}/openapi.json   console http://127.0.0.1:{api_port}/ui/",
                    highlight=False,
                )
                out.print("worker ready; Ctrl-C to stop")
                await api  # serves until interrupted
                return
            dp = Duraplan(server.client, settings, tenants=settings.tenant_registry())
            values = _parse_inputs(input or [], None)
            handle = await dp.submit_plan(run_plan, tenant=tenant, session=session, inputs=values)
            out.print(f"run {handle.run_id} started (tenant {tenant}, session {session})", highlight=False)
            await _finish(handle, as_json=False)


@app.command()
@command
async def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    address: Address = None,
    namespace: Namespace = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) against a Temporal cluster."""
    from duraplan.api import serve

    await serve(Settings.from_env(address=address, namespace=namespace), host=host, port=port)


def main() -> None:  # pragma: no cover - console script entry
    from duraplan.quick import main

    main()


if __name__ == "__main__":
    app()  # duraplan.quick had its turn at the top of this module
