"""A run's start request, built for this one workflow instead of by the SDK's generic path.

``Client.start_workflow`` builds every request from scratch: it encodes the run's input through
the composite payload converter (the whole plan, on every start of the same plan) and each
search attribute through it too, then fills the request field by field — about three times what
a bare start costs the client, on the path that bounds how fast runs start (bench/start_rate.py).
Here the request is built from parts kept between starts: the plan's JSON once per plan (it is
most of the input), each search attribute's payload once per value.

Only where nothing could tell the difference: the client has no interceptors (they see, and may
change, each start: tracing puts its context in the headers) and writes payloads with duraplan's
own converter, which has no codec (``executor.service.converter``). Otherwise the SDK's path is
taken. Both send the same request (tests/test_start_request.py compares what the server kept).
What the SDK adds only inside a Nexus operation handler (links and callbacks to the caller) is
left out: no duraplan start runs in one.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import temporalio.api.common.v1 as common
import temporalio.api.errordetails.v1 as errordetails
import temporalio.api.workflowservice.v1 as workflowservice
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.converter import encode_typed_search_attribute_value
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.models import RunInput
from executor.service.converter import UTF8_DATA_CONVERTER, Utf8Encoder

__all__ = ["can_start_directly", "direct_start", "encode_run_input", "plan_json"]

# What the JSON payload converter writes (JSONPlainPayloadConverter.to_payload): the same
# encoder class, separators and key order, so a payload built here is byte for byte the SDK's.
_ENCODER = Utf8Encoder(separators=(",", ":"), sort_keys=True)
_JSON_PLAIN = b"json/plain"
_RUN_FIELDS = tuple(sorted(f.name for f in dataclasses.fields(RunInput)))
_BEFORE_PLAN = tuple(name for name in _RUN_FIELDS if name < "plan")
_AFTER_PLAN = tuple(name for name in _RUN_FIELDS if name > "plan")

_SA_CACHE_SIZE = 4096
_sa_payloads: dict[tuple[str, str], common.Payload] = {}
_sa_lock = threading.Lock()


def plan_json(plan: Mapping[str, Any]) -> str:
    """The plan's part of a run input's payload: its JSON as the payload converter writes it."""
    return _ENCODER.encode(plan)


def encode_run_input(arg: RunInput, plan: str) -> common.Payload:
    """``arg`` as the payload converter encodes it, its plan taken as the JSON ``plan`` (``plan_json``
    of ``arg.plan``): the input's other fields are small. Keys are sorted at every level, so the
    plan goes between the fields that sort before it and those after (``plan_hash`` first)."""
    before = _ENCODER.encode({name: getattr(arg, name) for name in _BEFORE_PLAN})
    after = _ENCODER.encode({name: getattr(arg, name) for name in _AFTER_PLAN})
    data = f'{before[:-1]},"plan":{plan},{after[1:]}'
    return common.Payload(metadata={"encoding": _JSON_PLAIN}, data=data.encode())


def _attribute(key: SearchAttributeKey[str], value: str) -> common.Payload:
    """The search attribute's payload, encoded by the SDK once per value (tenants, sessions, plan
    hashes and names repeat from start to start)."""
    cache_key = (key.name, value)
    payload = _sa_payloads.get(cache_key)
    if payload is None:
        payload = encode_typed_search_attribute_value(key, value)
        with _sa_lock:
            if len(_sa_payloads) >= _SA_CACHE_SIZE:
                _sa_payloads.clear()
            _sa_payloads[cache_key] = payload
    return payload


def can_start_directly(client: Client) -> bool:
    """Nothing between ``start_workflow`` and the wire could see the difference (module doc)."""
    return client.data_converter is UTF8_DATA_CONVERTER and not client.config()["interceptors"]


async def direct_start(
    client: Client,
    *,
    workflow: str,
    workflow_id: str,
    task_queue: str,
    payload: common.Payload,
    attributes: list[tuple[SearchAttributeKey[str], str]],
    memo: Mapping[str, Any] | None,
    fairness_key: str,
    restart: bool,
    task_timeout: timedelta,
) -> WorkflowHandle[Any, Any]:
    """``client.start_workflow`` as duraplan calls it (executor.service.start), with ``payload``
    the encoded run input; eager start requested (the SDK's core still decides whether a worker
    of this client takes it)."""
    req = workflowservice.StartWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_id=workflow_id,
        identity=client.identity,
        request_id=str(uuid.uuid4()),
        request_eager_execution=True,
        workflow_id_reuse_policy=int(
            WorkflowIDReusePolicy.ALLOW_DUPLICATE if restart else WorkflowIDReusePolicy.REJECT_DUPLICATE
        ),  # type: ignore[arg-type]
        workflow_id_conflict_policy=int(
            WorkflowIDConflictPolicy.TERMINATE_EXISTING if restart else WorkflowIDConflictPolicy.FAIL
        ),  # type: ignore[arg-type]
    )
    req.workflow_type.name = workflow
    req.task_queue.name = task_queue
    req.input.payloads.append(payload)
    req.workflow_task_timeout.FromTimedelta(task_timeout)
    fields = req.search_attributes.indexed_fields
    for key, value in attributes:
        fields[key.name].CopyFrom(_attribute(key, value))
    if memo:
        for name, value in memo.items():
            req.memo.fields[name].CopyFrom(UTF8_DATA_CONVERTER.payload_converter.to_payloads([value])[0])
    req.priority.fairness_key = fairness_key
    try:
        resp = await client.workflow_service.start_workflow_execution(req, retry=True)
    except RPCError as err:
        # As the SDK does: an id in use is WorkflowAlreadyStartedError, not an RPC error.
        if err.status == RPCStatusCode.ALREADY_EXISTS and err.grpc_status.details:
            details = errordetails.WorkflowExecutionAlreadyStartedFailure()
            if err.grpc_status.details[0].Unpack(details):
                raise WorkflowAlreadyStartedError(
                    workflow_id, workflow, run_id=details.run_id, first_run_id=details.first_execution_run_id or None
                ) from None
        raise
    handle: WorkflowHandle[Any, Any] = WorkflowHandle(
        client,
        workflow_id,
        result_run_id=resp.run_id,
        first_execution_run_id=resp.first_execution_run_id or resp.run_id,
        start_workflow_response=resp,
    )
    setattr(handle, "__temporal_eagerly_started", resp.HasField("eager_workflow_task"))  # as the SDK marks it
    return handle
