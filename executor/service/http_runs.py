"""Reading runs, sending them events and steering them over Temporal's HTTP API, without the SDK.

The same operations as ``Duraplan.list_runs`` and ``RunHandle.status``, ``send_event``, ``pause``,
``resume``, ``cancel`` and ``terminate`` (``executor.service.client``), with the same results and errors: both build on
``executor.service.run_queries``. A run of ``tenant`` is the workflow ``<tenant>/<run_id>``, so
another tenant's run id is not found here either. ``HttpUnavailable`` means this path got no
answer from Temporal; the caller then takes the SDK path (which reports an unreachable server its
own way). See ``executor.service.temporal_http`` for which servers route which calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from executor.engine.models import EventRecord, SendEventResult
from executor.engine.run_status import RunStatus, RunSummary
from executor.errors import RunNotFound, RunStateError, error_type
from executor.service.names import check_name, check_run_id
from executor.service.run_queries import (
    CLOSED_FILTER,
    CLOSED_STATES,
    VERIFY_BATCH,
    check_event,
    current_runs_query,
    describe_only_status,
    list_query,
    run_summary,
)
from executor.service.temporal_http import (
    NOT_FOUND,
    HttpEndpoint,
    HttpUnavailable,
    TemporalHttp,
    TemporalHttpError,
    decode_payload,
    parse_timestamp,
)

if TYPE_CHECKING:
    from executor.errors import DuraplanError
    from executor.service.config import Settings
    from executor.service.tenants import TenantRegistry

__all__ = ["HttpRuns", "HttpUnavailable"]

_RUNNING = "RUNNING"
_STATUS_PREFIX = "WORKFLOW_EXECUTION_STATUS_"


class HttpRuns:
    """A tenant-scoped reader and event sender over one ``TemporalHttp``."""

    def __init__(self, api: TemporalHttp, settings: Settings, tenants: TenantRegistry | None = None) -> None:
        self.api = api
        self.settings = settings
        self.tenants = tenants

    @classmethod
    def open(cls, settings: Settings, url: str) -> HttpRuns:
        """A reader of ``url`` with the settings' namespace and credentials (API key, TLS files)."""
        endpoint = HttpEndpoint(
            url=url,
            namespace=settings.namespace,
            api_key=settings.api_key,
            tls_ca=settings.tls_ca,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
        )
        return cls(TemporalHttp(endpoint), settings, settings.tenant_registry())

    def close(self) -> None:
        self.api.close()
        if self.tenants is not None:
            self.tenants.close()

    # -- one run --

    def _describe(self, tenant: str, run_id: str) -> dict[str, Any]:
        try:
            return self.api.describe(f"{tenant}/{run_id}")
        except TemporalHttpError as exc:
            if exc.code == NOT_FOUND:
                raise RunNotFound(tenant, run_id) from None
            raise HttpUnavailable(f"describe: {exc}") from None

    def status(self, run_id: str, *, tenant: str, items: bool = False) -> RunStatus:
        """As ``RunHandle.status``."""
        tenant, run_id = check_name("tenant", tenant), check_run_id(run_id)
        info = self._describe(tenant, run_id).get("workflowExecutionInfo") or {}
        try:
            status = RunStatus.model_validate(self.api.query(f"{tenant}/{run_id}", "status", items))
        except HttpUnavailable:
            raise
        except Exception:  # no worker to answer: describe alone still tells the state
            status = describe_only_status(run_id, tenant, _attributes(info))
        closed = CLOSED_STATES.get(_status_name(info))
        if closed is not None:
            status = status.settled(closed)  # Temporal's word on a closed run is final
        return status.model_copy(
            update={
                "started_at_server": parse_timestamp(info.get("startTime")),
                "closed_at": parse_timestamp(info.get("closeTime")),
            }
        )

    def send_event(
        self, run_id: str, *, tenant: str, type: str, payload: Any = None, event_id: str | None = None
    ) -> dict[str, Any]:
        """As ``RunHandle.send_event``."""
        tenant, run_id = check_name("tenant", tenant), check_run_id(run_id)
        check_event(type, payload, tenant, self.tenants, event_id)
        event = asdict(EventRecord(type=type, payload=payload, event_id=event_id, received_at=""))
        result = self._update(tenant, run_id, "send_event", event)
        return asdict(SendEventResult(**result))

    def pause(self, run_id: str, *, tenant: str) -> str:
        """As ``RunHandle.pause``."""
        return str(self._update(check_name("tenant", tenant), check_run_id(run_id), "pause"))

    def resume(self, run_id: str, *, tenant: str) -> str:
        """As ``RunHandle.resume``."""
        return str(self._update(check_name("tenant", tenant), check_run_id(run_id), "resume"))

    def cancel(self, run_id: str, *, tenant: str) -> None:
        """As ``RunHandle.cancel``."""
        tenant, run_id = check_name("tenant", tenant), check_run_id(run_id)
        self._running(tenant, run_id, "cancel")
        try:
            self.api.request_cancel(f"{tenant}/{run_id}")
        except TemporalHttpError as exc:  # e.g. it ended in between: the SDK path tells it its way
            raise HttpUnavailable(f"cancel: {exc}") from None

    def terminate(self, run_id: str, *, tenant: str, reason: str = "terminated by user") -> None:
        """As ``RunHandle.terminate``."""
        tenant, run_id = check_name("tenant", tenant), check_run_id(run_id)
        self._running(tenant, run_id, "terminate")
        try:
            self.api.terminate(f"{tenant}/{run_id}", reason)
        except TemporalHttpError as exc:
            raise HttpUnavailable(f"terminate: {exc}") from None

    def _running(self, tenant: str, run_id: str, operation: str) -> None:
        """As ``RunHandle._running``: RunNotFound, or RunStateError for a run that has ended."""
        state = _status_name(self._describe(tenant, run_id).get("workflowExecutionInfo") or {})
        if state != _RUNNING:
            raise RunStateError(f"run {run_id!r} is {CLOSED_STATES.get(state, 'closed')}; nothing to {operation}")

    def _update(self, tenant: str, run_id: str, name: str, *args: Any) -> Any:
        """As ``RunHandle._update``: the update is the check; only a refusal is explained by a
        describe (RunNotFound, or RunStateError for a closed run); a NOT_FOUND of a running run
        (it continued as new in between) is tried once more, on its next run."""
        workflow_id = f"{tenant}/{run_id}"
        for attempt in range(2):
            try:
                outcome = self.api.update(workflow_id, name, args, update_id=str(uuid.uuid4()))
            except TemporalHttpError as exc:
                info = self._describe(tenant, run_id).get("workflowExecutionInfo") or {}
                state = _status_name(info)
                if state != _RUNNING:
                    raise RunStateError(f"run {run_id!r} is {CLOSED_STATES.get(state, 'closed')}") from None
                if exc.code == NOT_FOUND and not attempt:
                    continue
                raise RunStateError(f"run {run_id!r} did not accept the request: {exc}") from None
            if "failure" in outcome:
                raise _refusal(outcome["failure"], tenant)
            payloads = (outcome.get("success") or {}).get("payloads") or []
            return decode_payload(payloads[0]) if payloads else None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- listing --

    def list_runs(
        self, *, tenant: str, session: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """As ``Duraplan.list_runs``."""
        if not self.settings.search_attributes:
            raise RunStateError("listing runs needs search attributes (Settings.search_attributes)")
        query = list_query(tenant, session, status)
        out: list[RunSummary] = []
        seen: set[str] = set()
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            rows = batch[:]
            batch.clear()
            if status in CLOSED_FILTER:  # an older generation may match where the current one does not
                current = self._current_runs([_execution(wf)[0] for wf in rows])
                rows = [wf for wf in rows if current.get(_execution(wf)[0]) == _execution(wf)[1]]
            for wf in rows:
                if len(out) < limit:
                    out.append(_summary(wf))

        try:
            self._list_into(query, limit, seen, batch, flush, out)
        except TemporalHttpError as exc:  # e.g. no such search attribute: the SDK path reports it its way
            raise HttpUnavailable(f"list: {exc}") from None
        flush()
        return out

    def _list_into(
        self,
        query: str,
        limit: int,
        seen: set[str],
        batch: list[dict[str, Any]],
        flush: Callable[[], None],
        out: list[RunSummary],
    ) -> None:
        for wf in self.api.list(query, page_size=min(max(limit, 10), 1000)):
            workflow_id = _execution(wf)[0]
            if workflow_id in seen:
                continue  # an older generation of a run already listed (newest come first)
            seen.add(workflow_id)
            batch.append(wf)
            if len(batch) >= VERIFY_BATCH:
                flush()
                if len(out) >= limit:
                    return

    def _current_runs(self, workflow_ids: list[str]) -> dict[str, str]:
        if not workflow_ids:
            return {}
        newest: dict[str, str] = {}
        for wf in self.api.list(current_runs_query(workflow_ids), page_size=1000):
            workflow_id, temporal_run_id = _execution(wf)
            newest.setdefault(workflow_id, temporal_run_id)
        return newest


def _execution(wf: dict[str, Any]) -> tuple[str, str]:
    execution = wf.get("execution") or {}
    return str(execution.get("workflowId", "")), str(execution.get("runId", ""))


def _status_name(info: dict[str, Any]) -> str:
    return str(info.get("status", "")).removeprefix(_STATUS_PREFIX)


def _attributes(info: dict[str, Any]) -> dict[str, Any]:
    fields = (info.get("searchAttributes") or {}).get("indexedFields") or {}
    return {name: decode_payload(payload) for name, payload in fields.items()}


def _summary(wf: dict[str, Any]) -> RunSummary:
    memo = (wf.get("memo") or {}).get("fields") or {}
    generation = decode_payload(memo["generation"]) if "generation" in memo else None
    return run_summary(
        _execution(wf)[0],
        _status_name(wf) or None,
        _attributes(wf),
        generation,
        parse_timestamp(wf.get("startTime")) or "",
        parse_timestamp(wf.get("closeTime")),
    )


def _refusal(failure: dict[str, Any], tenant: str) -> DuraplanError:
    """The typed error a workflow refused an update with (``executor.errors.from_failure`` for the
    failure's JSON form), else a RunStateError with its message."""
    # Its failure types (QuotaExceeded, EventTooLarge) register with executor.errors when it loads.
    from executor.service.tenants import QuotaExceeded

    cause: dict[str, Any] | None = failure
    while cause is not None:
        info = cause.get("applicationFailureInfo")
        if info is not None:
            factory = error_type(info.get("type"))
            if factory is not None:
                payloads = (info.get("details") or {}).get("payloads") or []
                first = decode_payload(payloads[0]) if payloads else None
                error = factory(str(cause.get("message", "")), first if isinstance(first, dict) else {})
                if isinstance(error, QuotaExceeded) and error.tenant is None:
                    error = QuotaExceeded(error.limit, error.retry_after_s, tenant=tenant, detail=error.detail)
                return error
        cause = cause.get("cause")
    return RunStateError(str(failure.get("message", "")))
