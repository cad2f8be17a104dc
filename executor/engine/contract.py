"""What the engine and the worker agree on: activity and workflow names, search attributes, timeouts.

The workflow dispatches activities by name, so it never imports the worker side (which does I/O);
the worker registers its activities under these names.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

from executor.engine.names import (
    ATTR_PLAN_HASH,
    ATTR_PLAN_NAME,
    ATTR_SESSION,
    ATTR_STATUS,
    ATTR_TENANT,
    WORKFLOW_NAME,
)

__all__ = [
    "CARRY_DROP",
    "CARRY_LOAD",
    "CARRY_SAVE",
    "CODE_CPU_SECONDS",
    "CODE_MEMORY_MB",
    "HEARTBEAT_TIMEOUT",
    "METER_RUN",
    "RUN_CODE",
    "RUN_LLM",
    "RUN_REPLAN",
    "RUN_SCRIPT",
    "RUN_TOOL",
    "SA_PLAN_HASH",
    "SA_PLAN_NAME",
    "SA_SESSION",
    "SA_STATUS",
    "SA_TENANT",
    "SCRIPT_SNAPSHOT_BYTES",
    "SEARCH_ATTRIBUTES",
    "START_RUN",
    "TASK_CUT",
    "TENANT_BUSY",
    "WORKFLOW_NAME",
]

RUN_TOOL = "duraplan.tool"
RUN_CODE = "duraplan.code"
RUN_LLM = "duraplan.llm"
RUN_SCRIPT = "duraplan.script"  # one segment of a script step, up to and including its next host call
RUN_REPLAN = "duraplan.replan"  # registered by the planner's worker parts, not by executor.worker
START_RUN = "duraplan.start_run"  # a workflow starting a run (a chat session's submit): the start path
METER_RUN = "duraplan.meter_run"  # records how a run segment ended (executor.engine.metering)
CARRY_SAVE = "duraplan.carry.save"  # a continue-as-new carry too large for history, kept by the worker
CARRY_LOAD = "duraplan.carry.load"
CARRY_DROP = "duraplan.carry.drop"
# Does nothing: its completion starts a new workflow task (engine.steps: a task full of local activities).
TASK_CUT = "duraplan.task_cut"

HEARTBEAT_TIMEOUT = 10.0  # a killed worker is noticed in seconds, not after the step's timeout

TENANT_BUSY = "TenantBusy"  # error type of a step the worker refused before running it (not an attempt)

CODE_MEMORY_MB = 64  # a code step's sandbox limits when neither the step nor a quota sets them
CODE_CPU_SECONDS = 5.0
SCRIPT_SNAPSHOT_BYTES = 256 * 1024  # a script's compressed sandbox state, carried in history between calls

SA_TENANT = SearchAttributeKey.for_keyword(ATTR_TENANT)
SA_SESSION = SearchAttributeKey.for_keyword(ATTR_SESSION)
SA_STATUS = SearchAttributeKey.for_keyword(ATTR_STATUS)
SA_PLAN_HASH = SearchAttributeKey.for_keyword(ATTR_PLAN_HASH)
SA_PLAN_NAME = SearchAttributeKey.for_keyword(ATTR_PLAN_NAME)
SEARCH_ATTRIBUTES = (SA_TENANT, SA_SESSION, SA_STATUS, SA_PLAN_HASH, SA_PLAN_NAME)
