"""A held run keeps nothing of the protobuf message that started it.

The SDK (temporalio 1.35) keeps three references into a run's first activation for the run's
whole life: the start job's headers (in the workflow input, and copied into ``workflow.info()``),
its last completion result and its continued failure (both sub-messages). With protobuf's upb
backend a sub-message, even an empty map, keeps its whole message's memory (its arena) alive,
so every cached run held its entire start activation: input with the plan, search attributes,
priority. That was about 5-6 KB per waiting duraplan run (a 1.2 KB activation; glibc's bytes in
use, bench/waiting_slope.py), more than duraplan's own Python objects add per run.

Here the worker hands the SDK detached copies instead (each with an arena of its own, empty for a
first run): the runner for what the SDK puts in the instance's details, and after each activation
for what the instance took from it (the workflow input's headers, its internal flags and
deployment version). Nothing a workflow sees changes (same values), so histories replay as before.

Per held run this adds no object of its own where it can share one: an instance class (not a
closure per instance), no interceptor (its coroutine frames stayed suspended as long as the run),
one empty headers mapping, one tuple per set of internal flags, one deployment version message per
value (the worker's build id: the same in every activation), one empty last completion result.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.common import TypedSearchAttributes
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

__all__ = ["DetachedStartRunner", "detach_activation"]

# Shared by every instance: the SDK only reads these (membership tests, field reads).
_NO_HEADERS: Mapping[str, Payload] = types.MappingProxyType({})
_flag_sets: dict[tuple[int, ...], tuple[int, ...]] = {}
_messages: dict[tuple[type, bytes], Any] = {}  # (type, serialized) -> the one copy every run shares


def _copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def detached(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    """Headers as copies; no headers as the one shared empty mapping (nothing changes headers in
    place: interceptors build new ones). Not for the memo, which upsert_memo changes in place."""
    if not headers:
        return _NO_HEADERS
    return {k: _copy(v) for k, v in headers.items()}


def _flags(flags: Any) -> tuple[int, ...]:
    key = tuple(flags)
    hit = _flag_sets.get(key)
    if hit is None:
        if len(_flag_sets) >= 64:  # a handful of distinct sets in practice; bounded regardless
            _flag_sets.clear()
        hit = _flag_sets[key] = key
    return hit


def _shared(message: Any) -> Any:
    """One copy of ``message`` for every run given an equal one (the worker's deployment version,
    the same in every activation; an empty last completion result): the SDK only reads these."""
    key = (type(message), message.SerializeToString(deterministic=True))
    hit = _messages.get(key)
    if hit is None:
        if len(_messages) >= 64:  # a few distinct values in practice; bounded regardless
            _messages.clear()
        hit = _messages[key] = _copy(message)
    return hit


class _DetachedInstance(_Instance):
    """The sandbox's instance, detached from each activation it is given (see detach_activation)."""

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        completion = super().activate(act)
        detach_activation(self)
        return completion


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
                # a restarted run's (generation) memo; a dict of its own: upsert_memo changes it in place
                raw_memo={k: _copy(v) for k, v in det.info.raw_memo.items()},
                search_attributes={},
                typed_search_attributes=TypedSearchAttributes([]),
            ),
            last_completion_result=_shared(det.last_completion_result)
            if not det.last_completion_result.payloads
            else _copy(det.last_completion_result),
            last_failure=None if det.last_failure is None else _copy(det.last_failure),
        )
        # SDK internals (temporalio is pinned): SandboxedWorkflowRunner.create_instance builds this
        return _DetachedInstance(det, self.runner_class, self.restrictions)


def detach_activation(instance: WorkflowInstance) -> bool:
    """After an activation: what the SDK's instance took from it as copies (or shared values), so a
    waiting run does not keep its last activation's message, the start one included: its
    available internal flags (a repeated field), its deployment version (a sub-message) and, from
    the start job, the workflow input's headers (a map). SDK internals (temporalio is pinned):
    False when they are not where this expects them."""
    sandbox = getattr(instance, "globals_and_locals", {}).get("__temporal_in_sandbox")
    impl = getattr(sandbox, "instance", None)
    if impl is None or not hasattr(impl, "_current_internal_flags"):
        return False
    flags = impl._current_internal_flags
    if not isinstance(flags, tuple):
        impl._current_internal_flags = _flags(flags)
    version = getattr(impl, "_deployment_version_for_current_task", None)
    if version is not None and hasattr(version, "CopyFrom"):
        impl._deployment_version_for_current_task = _shared(version)
    start: Any = getattr(impl, "_workflow_input", None)
    headers = getattr(start, "headers", None)
    if headers is not None and not isinstance(headers, dict | types.MappingProxyType):
        # the instance's own workflow input: every interceptor and the run's coroutine hold this
        # object, so replacing its field drops the last reference into the start activation
        start.headers = detached(headers)
    return True
