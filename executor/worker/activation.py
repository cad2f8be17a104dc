"""A held run keeps nothing of the protobuf message that started it.

The SDK (temporalio 1.35) keeps three references into a run's first activation for the run's
whole life: the start job's headers (in the workflow input, and copied into ``workflow.info()``),
its last completion result and its continued failure (both sub-messages). With protobuf's upb
backend a sub-message, even an empty map, keeps its whole message's memory (its arena) alive,
so every cached run held its entire start activation: input with the plan, search attributes,
priority. That was about 5-6 KB per waiting duraplan run (a 1.2 KB activation; glibc's bytes in
use, bench/waiting_slope.py), more than duraplan's own Python objects add per run.

Here the worker hands the SDK detached copies instead (each with an arena of its own, empty for a
first run): the runner for what the SDK puts in the instance's details, a workflow interceptor for
the headers of the workflow input, which the SDK builds inside the instance. Nothing a workflow
sees changes (same values), so histories replay as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.common import TypedSearchAttributes
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

__all__ = ["DetachStartHeaders", "DetachedStartRunner", "detach_activation"]


def _copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def detached(headers: Mapping[str, Payload]) -> dict[str, Payload]:
    return {k: _copy(v) for k, v in headers.items()}


@dataclasses.dataclass(frozen=True)
class DetachedStartRunner(SandboxedWorkflowRunner):
    """The sandboxed runner, handing each instance copies of the start activation's parts."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        det = dataclasses.replace(
            det,
            # Not the start's search attributes: no duraplan workflow reads its own (they are for
            # listing), and decoded twice (the untyped map and the typed list) they were ~1.4 KB
            # of every held run. Fresh containers: upserts update them in place.
            info=dataclasses.replace(
                det.info,
                headers=detached(det.info.headers),
                raw_memo=detached(det.info.raw_memo),  # a restarted run's (generation) memo
                search_attributes={},
                typed_search_attributes=TypedSearchAttributes([]),
            ),
            last_completion_result=_copy(det.last_completion_result),
            last_failure=None if det.last_failure is None else _copy(det.last_failure),
        )
        instance = super().create_instance(det)
        activate = instance.activate

        def activate_detached(act: WorkflowActivation) -> WorkflowActivationCompletion:
            completion = activate(act)
            detach_activation(instance)
            return completion

        instance.activate = activate_detached  # type: ignore[method-assign]
        return instance


def detach_activation(instance: WorkflowInstance) -> bool:
    """After an activation: the two fields the SDK's instance sets from every activation (its
    available internal flags, a repeated field; its deployment version, a sub-message) as copies,
    so a waiting run does not keep its last activation's message, the start one included.
    SDK internals (temporalio is pinned): False when they are not where this expects them."""
    sandbox = getattr(instance, "globals_and_locals", {}).get("__temporal_in_sandbox")
    impl = getattr(sandbox, "instance", None)
    if impl is None or not hasattr(impl, "_current_internal_flags"):
        return False
    flags = impl._current_internal_flags
    if not isinstance(flags, list):
        impl._current_internal_flags = list(flags)
    version = getattr(impl, "_deployment_version_for_current_task", None)
    if version is not None and hasattr(version, "CopyFrom"):
        impl._deployment_version_for_current_task = _copy(version)
    return True


class _DetachHeaders(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        # ``input`` is the instance's own workflow input: the copy replaces its reference.
        input.headers = detached(input.headers)
        return await super().execute_workflow(input)


class DetachStartHeaders(Interceptor):
    """Worker interceptor: the workflow input's headers as copies (see the module docstring)."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _DetachHeaders
