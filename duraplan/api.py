"""The HTTP API: FastAPI over the Python API (``Duraplan``, ``RunHandle``, the planner), per tenant.

Every request authenticates with ``Authorization: Bearer <api key>`` against the tenant registry and
is scoped to that tenant (another tenant's run id is simply not found). Errors are RFC 7807 problem
details (``application/problem+json``) with stable ``type`` URIs under ``PROBLEMS``; a client's
mistake is never a 5xx. ``create_app`` builds the app, ``serve`` runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from duraplan.allow import AllowOptions, allowed_methods
from duraplan.api_models import (
    NAME_REGEX,
    ChatMessageRequest,
    ChatSubmitRequest,
    EventAccepted,
    EventRequest,
    Issue,
    PlanAttempt,
    PlanRequest,
    PlanResponse,
    Problem,
    RevisionResponse,
    RunAction,
    RunCreated,
    RunList,
    RunPlan,
    RunResult,
    RunStatus,
    SubmitRunRequest,
    ValidationResult,
)
from duraplan.api_ops import add_ops_routes
from duraplan.api_sources import add_source_routes
from duraplan.console import mount_console
from duraplan.guards import RequestGuard
from duraplan.streams import DEFAULT_STREAMS_PER_TENANT, StreamSlots
from executor.engine.run_status import FINAL_RUN_STATES, RunState
from executor.errors import (
    DuraplanError,
    RunStateError,
)
from executor.lang.validate import check_plan
from executor.service.client import Duraplan, RunHandle
from executor.service.config import Settings, connect
from executor.service.start import RUN_ID_REGEX, TenantContext, load_context
from executor.service.tenants import (
    AuthenticationFailed,
    Tenant,
    TenantRegistry,
)
from planner.client import ChatSession
from planner.core import plan_goal
from schemas.plan import Plan

__all__ = ["PROBLEMS", "TERMINAL_STATES", "create_app", "problem_response", "serve"]

PROBLEMS = "https://duraplan.dev/problems/"
PROBLEM_JSON = "application/problem+json"
TERMINAL_STATES = FINAL_RUN_STATES
POLL_INTERVAL_S = 0.2
KEY_CHECK_INTERVAL_S = 2.0  # how long a progress stream outlives its key's revocation, at most
Completion = Callable[..., Awaitable[Any]]


# ---- problem details ----------------------------------------------------------------------------


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": PROBLEMS + kind, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(
        {k: v for k, v in body.items() if v is not None}, status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _problem_for(exc: DuraplanError) -> JSONResponse:
    """Every error class describes its own problem (executor.errors.DuraplanError): a lookup."""
    headers: dict[str, str] = {}
    retry = exc.retry_after_seconds()
    if retry:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if exc.status_code() == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(
        exc.status_code(),
        exc.problem_kind(),
        exc.problem_title(),
        str(exc),
        headers=headers or None,
        **exc.problem_extra(),
    )


async def _duraplan_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DuraplanError)
    return _problem_for(exc)


async def _request_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'/'.join(e['loc'])}: {e['msg']}" for e in errors) or "malformed request"
    return problem_response(400, "bad-request", "Malformed request", detail, errors=errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not-found", 405: "method-not-allowed", 401: "authentication"}
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:  # the methods of the routes that really serve this path
        headers = {"Allow": ", ".join(allowed_methods(request.app.routes, request.url.path, NAME_REGEX))}
    return problem_response(exc.status_code, kinds.get(exc.status_code, "http"), str(exc.detail), None, headers=headers)


async def _temporal_error(request: Request, exc: Exception) -> Response:
    """Temporal errors the Python API lets through, e.g. terminating a run that already closed."""
    assert isinstance(exc, RPCError)
    message = str(exc)
    if exc.status == RPCStatusCode.FAILED_PRECONDITION or "already completed" in message:
        return problem_response(409, "run-state", "Operation does not fit the run's state", message)
    if exc.status == RPCStatusCode.NOT_FOUND:
        return problem_response(404, "not-found", "Not found", message)
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return problem_response(400, "bad-request", "Bad request", message)
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED and "larger than max" in message:
        # gRPC's message size limit: the same request can never pass, so not 429 (clients retry those)
        return problem_response(413, "payload-too-large", "Request too large for Temporal", message)
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return problem_response(429, "quota", "Temporal rate limit", message, headers={"Retry-After": "1"})
    return problem_response(503, "unavailable", "Temporal unavailable", message)


# ---- OpenAPI ------------------------------------------------------------------------------------

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# One server-sent event: ``event: status`` with a JSON ``RunStatus`` as its data.
_SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "const": "status"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/RunStatus"},
        },
    },
}
_COMMON = {
    "400": "Malformed request",
    "401": "Missing, invalid or revoked API key",
    "503": "Temporal or the planner is unavailable",
}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's spec, with every error response as ``application/problem+json`` ``Problem``."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schemas["Problem"].pop("$defs", {}))
        for item in spec.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for code, text in _COMMON.items():
                    responses.setdefault(code, {"description": text})
                for code, response in responses.items():
                    if code.startswith(("4", "5")):
                        response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                        if code == "422":
                            response["description"] = "Validation failed (plan, inputs or event)"
                if "429" in responses:
                    responses["429"]["headers"] = {
                        "Retry-After": {
                            "description": "seconds until a retry may succeed",
                            "schema": {"type": "string"},
                        }
                    }
        _reference_plan_schema(spec, schemas)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = spec
        return spec

    return build


_PLAN_REF = {"$ref": "#/components/schemas/Plan"}


def _reference_plan_schema(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Every ``plan`` in the API is the plan JSON Schema (schemas/plan.schema.json), not a free-form
    object: generated clients and fuzzers then produce real plans."""
    plan = Plan.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    defs = plan.pop("$defs", {})
    clash = sorted(name for name in defs if name in schemas and schemas[name] != defs[name])
    assert not clash, f"plan schema definitions {clash} clash with API models"
    schemas.update(defs)
    if "$ref" not in plan:  # (pydantic puts a recursive model's own schema in $defs)
        schemas["Plan"] = plan
    for model in ("SubmitRunRequest", "PlanResponse"):
        props = schemas.get(model, {}).get("properties", {})
        if "plan" in props:
            props["plan"] = {**_PLAN_REF, "description": props["plan"].get("description", "a plan")}
    validate = spec.get("paths", {}).get("/v1/plans:validate", {}).get("post", {})
    content = validate.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        content["schema"] = _PLAN_REF


def _responses(*codes: int, **extra: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The documented problem responses (``extra``: more responses, keyed ``s200`` etc.)."""
    text = {
        404: "Not found (also another tenant's run)",
        409: "Conflict with the run's id or state",
        422: "Validation failed",
        413: "Event payload over the tenant's max_event_bytes quota",
        429: "Quota exceeded",
        403: "Tool not granted",
    }
    out: dict[int | str, dict[str, Any]] = {int(k[1:]): v for k, v in extra.items()}
    out.update({code: {"description": text.get(code, "Problem")} for code in codes})
    return out


# ---- the app ------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer dp_<key_id>_<secret>`")


async def _authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Tenant:
    if credentials is None:
        raise AuthenticationFailed()
    registry: TenantRegistry = request.app.state.tenants
    return await asyncio.to_thread(registry.authenticate, credentials.credentials)  # SQLite: off the loop


TenantDep = Annotated[Tenant, Depends(_authenticate)]


async def _context(request: Request, tenant: TenantDep) -> TenantContext:
    """The tenant's grants and quotas, read once per request and passed down to the start path."""
    return await load_context(request.app.state.tenants, tenant.tenant_id)


ContextDep = Annotated[TenantContext, Depends(_context)]
RunId = Annotated[
    str, Path(pattern=RUN_ID_REGEX, description="a run id of the authenticated tenant (or a subplan's child_run_id)")
]
SessionId = Annotated[str, Path(pattern=NAME_REGEX, description="an agent session of the authenticated tenant")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=NAME_REGEX, description="the run id: a retried request, the same run"),
]


def create_app(
    dp: Duraplan,
    tenants: TenantRegistry,
    *,
    completion: Completion | None = None,
    model: str | None = None,
    run_task_queue: str | None = None,
    max_streams_per_tenant: int = DEFAULT_STREAMS_PER_TENANT,
) -> FastAPI:
    """The HTTP API over ``dp`` for the tenants of ``tenants``.

    ``completion`` replaces ``litellm.acompletion`` for ``POST /v1/plan`` (tests pass a
    ``planner.testing.ScriptedModel``; chat sessions plan on the worker, which has its own);
    ``model`` is the planner's default model (else ``dp.settings.default_model``, else
    ``DURAPLAN_MODEL``); ``run_task_queue`` is where chat sessions start their runs;
    ``max_streams_per_tenant`` caps each tenant's open server-sent event streams (429 past it).
    The web console is mounted at ``/ui`` (``duraplan.console``)."""
    if dp.tenants is not tenants:  # quotas and tool grants are enforced by the Python API itself
        dp = Duraplan(dp.client, dp.settings, dp.registry, tenants)
    default_model = model or dp.settings.default_model
    app = FastAPI(
        title="duraplan",
        version="1",
        description="Durable execution of runtime plans on Temporal, per tenant. Errors are RFC 7807 problems.",
    )
    app.state.tenants = tenants
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.add_exception_handler(DuraplanError, _duraplan_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RPCError, _temporal_error)
    app.add_middleware(RequestGuard)
    app.add_middleware(AllowOptions, name_regex=NAME_REGEX)
    streams = StreamSlots(max_streams_per_tenant)
    mount_console(app)

    def run_of(tenant: Tenant, run_id: str) -> RunHandle:
        return dp.get_run(run_id, tenant=tenant.tenant_id)

    def chat_of(context: TenantContext, session: str, model: str | None = None) -> ChatSession:
        return ChatSession(
            dp,
            tenant=context.tenant,
            session=session,
            model=model or default_model,
            run_task_queue=run_task_queue,
            catalog=dp.catalog_for(context.tenant),  # granted tools only; source tools with their schema hash
        )

    def run_id_for(body_id: str | None, key: str | None) -> str | None:
        if body_id and key and body_id != key:
            raise DuraplanError(f"Idempotency-Key {key!r} and run_id {body_id!r} differ")
        return body_id or key

    # -- plans --

    @app.post("/v1/plans:validate", response_model=ValidationResult, tags=["plans"], responses=_responses())
    async def validate_plan(
        context: ContextDep,
        plan: Annotated[dict[str, Any], Body(description="a plan object (schemas/plan.schema.json)")],
    ) -> ValidationResult:
        """Validate a plan against the tenant's tools and grants; every problem at once."""
        tools = dp.registry_for(context.tenant)
        # Off the event loop, as submitting does: a large plan is half a second of CPU.
        _, issues = await asyncio.to_thread(check_plan, plan, tools=tools, granted=context.is_granted)
        return ValidationResult(valid=not issues, issues=[Issue(**i.to_dict()) for i in issues])

    @app.post("/v1/plan", response_model=PlanResponse, tags=["plans"], responses=_responses(422))
    async def plan(context: ContextDep, body: PlanRequest) -> PlanResponse:
        """Plan a goal: the model's plan, validated and repaired, with attempts, tokens and cost."""
        result = await plan_goal(
            body.goal,
            tools=context.tools(dp.registry_for(context.tenant)),  # the model sees, and may use, granted tools only
            model=body.model or default_model,
            max_attempts=body.max_attempts,
            budget_usd=body.budget_usd,
            completion=completion,
        )
        return PlanResponse(
            plan=result.plan_json,
            model=result.model,
            attempts=[PlanAttempt.model_validate(a.to_dict()) for a in result.attempts],
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.total_tokens,
            cost_usd=result.cost_usd,
        )

    add_source_routes(app, dp, TenantDep)

    # -- runs --

    @app.post(
        "/v1/runs",
        status_code=201,
        response_model=RunCreated,
        tags=["runs"],
        responses=_responses(
            409, 422, 429, s200={"description": "An existing run (same id, plan and inputs)", "model": RunCreated}
        ),
    )
    async def submit_run(
        context: ContextDep, body: SubmitRunRequest, response: Response, idempotency_key: IdempotencyKey = None
    ) -> RunCreated:
        """Validate and start a run; ``Idempotency-Key`` (or ``run_id``) makes retries return the same run."""
        handle = await dp.submit_plan(
            body.plan,
            tenant=context.tenant,
            session=body.session,
            inputs=body.inputs,
            run_id=run_id_for(body.run_id, idempotency_key),
            context=context,
        )
        created = handle._started is not None  # set only when this request started the workflow
        response.status_code = 201 if created else 200
        response.headers["Location"] = f"/v1/runs/{handle.run_id}"
        return RunCreated(run_id=handle.run_id, tenant=context.tenant, session=body.session, created=created)

    @app.get("/v1/runs", response_model=RunList, tags=["runs"], responses=_responses(422))
    async def list_runs(
        tenant: TenantDep,
        session: Annotated[str | None, Query(pattern=NAME_REGEX)] = None,
        status: Annotated[RunState | None, Query(description="the current generation's state")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RunList:
        """The tenant's runs, newest first."""
        return RunList(runs=await dp.list_runs(tenant=tenant.tenant_id, session=session, status=status, limit=limit))

    @app.get("/v1/runs/{run_id}", response_model=RunStatus, tags=["runs"], responses=_responses(404))
    async def run_status(
        tenant: TenantDep,
        run_id: RunId,
        items: Annotated[bool, Query(description="include each foreach item's steps")] = False,
    ) -> RunStatus:
        return await run_of(tenant, run_id).status(items=items)

    @app.get("/v1/runs/{run_id}/plan", response_model=RunPlan, tags=["runs"], responses=_responses(404))
    async def run_plan(tenant: TenantDep, run_id: RunId) -> RunPlan:
        """The plan the run executes now (its latest revision) and every step record by path, nested ones included."""
        return RunPlan.model_validate(await run_of(tenant, run_id).plan())

    @app.get("/v1/runs/{run_id}/result", response_model=RunResult, tags=["runs"], responses=_responses(404, 409))
    async def run_result(tenant: TenantDep, run_id: RunId) -> RunResult:
        """The output of a completed run; 409 run-state while it runs, 409 run-failed when it did not complete."""
        handle = run_of(tenant, run_id)
        state = (await handle.status()).state
        if state not in TERMINAL_STATES:
            raise RunStateError(f"run {run_id!r} is {state}; its result is not there yet")
        return RunResult(run_id=run_id, state="completed", output=await handle.result())

    @app.get(
        "/v1/runs/{run_id}/progress",
        tags=["runs"],
        response_class=StreamingResponse,
        responses=_responses(
            404,
            429,
            s200={
                "description": "Server-sent events: a `status` event (a RunStatus) on every change, the last one final "
                "(at most max_streams_per_tenant open per tenant: 429 past it); it ends early, with no final "
                "event, once its API key is revoked or its tenant deleted",
                "content": {"text/event-stream": {"schema": _SSE_EVENT}},
            },
        ),
    )
    async def run_progress(
        request: Request,
        tenant: TenantDep,
        run_id: RunId,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> StreamingResponse:
        handle = run_of(tenant, run_id)
        registry: TenantRegistry = request.app.state.tenants
        token = credentials.credentials if credentials is not None else ""
        slot = streams.acquire(tenant.tenant_id)  # 429 before any query: a tenant at its cap costs nothing more
        try:
            first = await handle.status()  # 404 before the stream starts
        except BaseException:
            slot.release()
            raise

        async def events() -> AsyncIterator[str]:
            try:
                async for event in changes():
                    yield event
            finally:
                slot.release()

        async def key_valid() -> bool:
            try:
                return (await asyncio.to_thread(registry.authenticate, token)).tenant_id == tenant.tenant_id
            except AuthenticationFailed:
                return False

        async def changes() -> AsyncIterator[str]:
            # A run may wait for days: the key is checked again while the stream is open, so a
            # revoked key (or a deleted tenant) stops reading the run within KEY_CHECK_INTERVAL_S.
            snapshot: RunStatus | None = first
            last = None
            loop = asyncio.get_running_loop()
            checked = loop.time()
            while True:
                if snapshot is None:
                    await asyncio.sleep(POLL_INTERVAL_S)
                    if loop.time() - checked >= KEY_CHECK_INTERVAL_S:
                        if not await key_valid():
                            return
                        checked = loop.time()
                    snapshot = await handle.status()
                text = snapshot.model_dump_json()
                if text != last:
                    last = text
                    yield f"event: status\ndata: {text}\n\n"
                if snapshot.state in TERMINAL_STATES:
                    return
                snapshot = None

        # The background task also releases the slot when the client left before the stream began.
        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
            background=BackgroundTask(slot.release),
        )

    @app.post(
        "/v1/runs/{run_id}/events",
        response_model=EventAccepted,
        tags=["runs"],
        responses=_responses(404, 409, 413, 422),
    )
    async def send_event(tenant: TenantDep, run_id: RunId, body: EventRequest) -> EventAccepted:
        """Deliver an event; kept if no step waits yet; the same ``event_id`` twice counts once."""
        result = await run_of(tenant, run_id).send_event(body.type, body.payload, body.event_id)
        return EventAccepted(**result, run_id=run_id, type=body.type)

    action_responses = _responses(404, 409)

    @app.post("/v1/runs/{run_id}:pause", response_model=RunAction, tags=["runs"], responses=action_responses)
    async def pause_run(tenant: TenantDep, run_id: RunId) -> RunAction:
        """No new step starts; running steps finish."""
        return RunAction(run_id=run_id, action="pause", state=await run_of(tenant, run_id).pause())

    @app.post("/v1/runs/{run_id}:resume", response_model=RunAction, tags=["runs"], responses=action_responses)
    async def resume_run(tenant: TenantDep, run_id: RunId) -> RunAction:
        return RunAction(run_id=run_id, action="resume", state=await run_of(tenant, run_id).resume())

    @app.post("/v1/runs/{run_id}:cancel", response_model=RunAction, tags=["runs"], responses=action_responses)
    async def cancel_run(tenant: TenantDep, run_id: RunId) -> RunAction:
        """Graceful: running steps are cancelled and compensations run in reverse order."""
        await run_of(tenant, run_id).cancel()
        return RunAction(run_id=run_id, action="cancel")

    @app.post("/v1/runs/{run_id}:terminate", response_model=RunAction, tags=["runs"], responses=action_responses)
    async def terminate_run(tenant: TenantDep, run_id: RunId) -> RunAction:
        """Immediate: nothing more runs, compensations included."""
        await run_of(tenant, run_id).terminate()
        return RunAction(run_id=run_id, action="terminate")

    @app.post("/v1/runs/{run_id}:restart", response_model=RunAction, tags=["runs"], responses=action_responses)
    async def restart_run(tenant: TenantDep, run_id: RunId) -> RunAction:
        """A fresh run of the same plan and inputs under the same id (a running one is terminated)."""
        await run_of(tenant, run_id).restart()
        return RunAction(run_id=run_id, action="restart", state="running")

    add_ops_routes(app, dp, TenantDep, _responses)  # GET /v1/usage, POST /v1/runs:bulk

    # -- chat sessions --

    @app.post(
        "/v1/chats/{session}/messages",
        response_model=RevisionResponse,
        tags=["chats"],
        responses=_responses(409, 422),
    )
    async def chat_message(context: ContextDep, session: SessionId, body: ChatMessageRequest) -> RevisionResponse:
        """Plan (first message) or revise the session's plan: the new revision and its diff."""
        revision = await chat_of(context, session, body.model).send(body.text)
        return RevisionResponse(session=session, **asdict(revision))

    @app.post(
        "/v1/chats/{session}/submit",
        status_code=201,
        response_model=RunCreated,
        tags=["chats"],
        responses=_responses(409, 422, 429),
    )
    async def chat_submit(
        context: ContextDep,
        session: SessionId,
        body: Annotated[ChatSubmitRequest | None, Body()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> RunCreated:
        """Run the session's latest revision (the same run id again: the same run)."""
        body = body or ChatSubmitRequest()
        handle = await chat_of(context, session).submit(body.inputs, run_id=run_id_for(body.run_id, idempotency_key))
        return RunCreated(run_id=handle.run_id, tenant=context.tenant, session=session, created=True)

    return app


async def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    tenants: TenantRegistry | None = None,
    log_level: str = "info",
) -> None:
    """Connect to Temporal and serve the API with uvicorn until interrupted.

    The tenant registry is ``tenants``, else ``<home>/tenants.db`` (created if missing)."""
    import uvicorn

    registry = tenants or settings.tenant_registry() or TenantRegistry(settings.registry_location())
    dp = Duraplan(await connect(settings), settings, tenants=registry)
    dp.registry.names()  # DURAPLAN_TOOL_MODULES load now: a broken one fails the start, not a request
    app = create_app(dp, registry)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    try:
        await server.serve()
    finally:
        if tenants is None:
            registry.close()
