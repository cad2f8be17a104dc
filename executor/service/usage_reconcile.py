"""Folds closed runs' ends into the usage ledger, from Temporal's visibility store.

Runs started at engine version 2 or later record how each segment ended in their memo
(``executor.engine.metering``, key ``meter``): the outcome, the workflow-step counts, whether it
is a subplan's child run. Nothing writes that to the ledger while the run closes (that was a local
activity: ~4 ms of worker CPU per run). Instead a reconciler lists closed ``DuraplanRun``
executions and writes one ``RunEnd`` per execution, with the same keys the activity used (run id +
generation, segment), so reading a run twice, or two reconcilers at once, counts it once.

Where it runs:

- in every worker process with metering on, every ``INTERVAL`` seconds (``Reconciler.run``); a
  lease in the ledger (``usage_reconcile``) lets one process at a time read, the others skip;
- before a usage report is answered (``Duraplan.usage``: Python, HTTP, MCP), for that tenant only,
  so a report right after a run ends counts it. Visibility lags a close by a few to tens of
  milliseconds, so this pass also asks Temporal directly (describe: read from the execution
  itself, not from visibility) about the tenant's runs the ledger still holds open, the
  ``RECHECK`` newest; a run that ended a moment ago is among them unless the tenant has more
  open runs than that, and then the next pass finds it in visibility.

What it reads: the deployment's executions (``DuraplanRun`` on its task queue: a ledger belongs
to the workers of one queue, as the tool store does) that closed since the stored checkpoint (the
latest close time read). Visibility is eventually consistent: a close can show up after later
closes were read, so each pass also covers the ``OVERLAP`` seconds before the checkpoint, and
every ``SWEEP_EVERY``-th pass the ``SWEEP_OVERLAP`` seconds. Listing costs per execution (about
0.1 ms of worker and more of server CPU here), so a process remembers the executions it listed in
that window and first asks visibility to count the window: the same count means nothing showed up
late there (what it remembers came from visibility), and it lists only what closed after the
checkpoint. Otherwise it lists the window again and skips what it wrote (no ledger write for a
re-read run). So each execution is listed about once.

Terminated and timed-out runs cannot record anything (no workflow code runs): a top-level one is
recorded as ``terminated`` / ``timed_out`` from its visibility status (it counts in
``runs_terminated``), its generation from the start memo; its workflow steps since its last
continue-as-new are not counted. A closed run without the ``meter`` memo that is not terminated
is a first segment that had nothing to add to its close status (engine version 3: no step
interpreted by the workflow itself), or was ended by an engine-1 worker whose local activity wrote
the same row: either way its row is derived from the execution (outcome from the status).
Neither could it drop its offloaded continue-as-new carries (``tools.carry_store``): a pass drops
those of every terminated or timed-out execution it lists (subplan runs and restarted generations
included).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from executor.engine.contract import WORKFLOW_NAME
from executor.engine.metering import METER_MEMO
from executor.service.usage import utc_day
from tools.usage import RunEnd, UsageStore

if TYPE_CHECKING:
    from tools.carry_store import CarryStore

__all__ = [
    "INTERVAL",
    "OVERLAP",
    "RECHECK",
    "REPORT_OVERLAP",
    "SWEEP_EVERY",
    "SWEEP_OVERLAP",
    "PassStats",
    "Reconciler",
    "run_end_of",
]

log = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between a worker's passes
# How late a close may show up in visibility and still be read by the next pass. A pass counts
# this window (one call) and lists it again only when the count differs from what it read there.
OVERLAP = 30.0
# Every SWEEP_EVERY-th pass (and the first) checks a longer window the same way, for closes that
# showed up later still (a visibility backlog): lags up to about SWEEP_OVERLAP - SWEEP_EVERY * INTERVAL.
SWEEP_EVERY = 60
SWEEP_OVERLAP = 600.0
# A report's own pass (one tenant, no count to lean on) re-lists only this much before the
# checkpoint: the worker's passes keep the checkpoint seconds behind, and the open-run recheck
# covers a run that ended a moment ago.
REPORT_OVERLAP = 5.0
RECHECK = 100  # open runs a report asks Temporal about directly (see above)
# A tenant's recheck runs at most this often per process: each is up to RECHECK describes, and a
# tenant asking for its usage in a loop must not turn into a flood of them on the Temporal frontend.
RECHECK_INTERVAL = 1.0
FIRST_LOOKBACK = 3600.0  # the first pass ever (no checkpoint): closes from the last hour (engine-2 runs
# close only on workers of this version, which run the reconciler from their start)
SCOPE = "runs"  # the checkpoint's and lease's key in usage_reconcile
# How a segment that upserted no meter memo ended ("": continued as new, no outcome yet).
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "",
}
_TERMINATED = {
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _field(meter: Mapping[str, Any], name: str, kind: type) -> Any:
    value = meter.get(name)
    # bool is an int to isinstance: a flag is never a number here, nor a number a flag
    if type(value) is not kind:
        raise ValueError(f"memo field {name!r} is {value!r}")
    return value


def _run_of(wf: WorkflowExecution, memo: Mapping[str, Any]) -> tuple[str, str] | None:
    """(tenant, run key) of a top-level run, from its workflow id and the generation in ``memo``;
    None: a child run (a step of its parent, not a run), or not started by the start path."""
    tenant, sep, run_id = wf.id.partition("/")
    if wf.parent_id is not None or not sep or not run_id:
        return None
    generation = memo.get("generation", 0)
    return tenant, f"{run_id}/{generation if type(generation) is int else 0}"


def _carry_owner(wf: WorkflowExecution, memo: Mapping[str, Any]) -> tuple[str, str] | None:
    """(tenant, carry owner: ``run_id#generation``, as ``executor.engine.carry`` keys it) of an
    execution that was terminated or timed out, subplan runs included; None otherwise."""
    if wf.status not in _TERMINATED:
        return None
    tenant, sep, run_id = wf.id.partition("/")
    if not sep or not run_id or "/" in run_id:  # not a run's id (a legacy subplan id has a /generation)
        return None
    generation = memo.get("generation", 0)
    return tenant, f"{run_id}#{generation if type(generation) is int else 0}"


def run_end_of(wf: WorkflowExecution, memo: Mapping[str, Any]) -> RunEnd | None:
    """The ledger row of one closed execution (its decoded ``memo``); None: nothing to record here."""
    assert wf.close_time is not None
    day = utc_day(wf.close_time)
    meter = memo.get(METER_MEMO)
    meter = meter if isinstance(meter, dict) else None
    terminated = _TERMINATED.get(wf.status) if wf.status is not None else None
    if terminated is not None:
        # No workflow code ran to record it. The start memo's generation is there (continue-as-new
        # carries the start memo over; a memo upsert it does not, but if a `meter` memo is ever
        # here it names the same run, and its counts were recorded when that segment ended).
        key = _run_of(wf, meter or memo)
        if key is None:
            return None
        # segment -1: no counts, its steps since the last continue-as-new are unknown
        return RunEnd(key[0], key[1], -1, utc_day(wf.start_time), day, terminated)
    if meter is None:
        # An engine-3 first segment that interpreted no step itself (engine.metering): its end
        # follows from the execution. An engine-1 run (its local activity wrote the ledger) reads
        # the same way: the same keys, so this adds nothing to what that activity wrote.
        outcome = _CLOSED.get(wf.status) if wf.status is not None else None
        key = _run_of(wf, memo)
        if outcome is None or key is None:
            return None
        return RunEnd(key[0], key[1], 0, utc_day(wf.start_time), day, outcome or None)
    tenant = _field(meter, "tenant", str)
    if not wf.id.startswith(f"{tenant}/"):
        raise ValueError(f"memo names tenant {tenant!r}, the workflow id is {wf.id!r}")
    child = _field(meter, "child", bool)
    steps = meter.get("workflow_steps") or {}
    return RunEnd(
        tenant=tenant,
        run_key=f"{_field(meter, 'run_id', str)}/{_field(meter, 'generation', int)}",
        segment=_field(meter, "segment", int),
        started_day="" if child else _field(meter, "started_at", str)[:10],
        day=day,
        outcome=None if child else meter.get("outcome"),
        workflow_steps={str(k): v for k, v in steps.items() if type(v) is int},
    )


@dataclass(frozen=True)
class PassStats:
    listed: int  # executions visibility returned
    written: int  # run ends written to the ledger (not written by this process before)
    counted: bool = False  # the overlap was counted, not listed again: nothing in it had shown up late


class Reconciler:
    """Reads closed runs from visibility into ``store``; one per process."""

    def __init__(self, client: Client, store: UsageStore, task_queue: str, *, search_attributes: bool = True) -> None:
        self.client = client
        self.store = store
        self.task_queue = task_queue  # the deployment's runs: its workers' queue (subplans' too)
        self.search_attributes = search_attributes  # False: runs carry no DuraplanTenant to filter by
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # (workflow id, run id) -> close time, of what it listed (and wrote, when there was a run end)
        self._written: dict[tuple[str, str], dt.datetime] = {}
        # it remembers every execution visibility listed to it from here on (the max: nothing yet)
        self._remembered_from = dt.datetime.max.replace(tzinfo=dt.UTC)
        self._lock = asyncio.Lock()  # one pass at a time in this process
        self._rechecked: dict[str, float] = {}  # tenant -> when its last recheck started (monotonic)
        self._carries: CarryStore | None = None  # opened on the first terminated run (_drop_carries)

    async def run(self, interval: float = INTERVAL) -> None:
        """Pass after pass until cancelled (every SWEEP_EVERY-th one, the first included, a sweep);
        a failed pass is logged and the next one tries again."""
        passes = 0
        while True:
            try:
                if await self.store.take_lease(SCOPE, self.holder, interval * 3):
                    await self.reconcile(overlap=SWEEP_OVERLAP if passes % SWEEP_EVERY == 0 else OVERLAP)
                    passes += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage reconcile pass failed")
            await asyncio.sleep(interval)

    async def reconcile(self, tenant: str | None = None, *, overlap: float = OVERLAP) -> PassStats:
        """One pass: closed runs since the checkpoint (minus ``overlap``) into the ledger.
        ``tenant``: that tenant's runs only (the checkpoint stays where it is).

        Re-reading the overlap is what makes a late close safe, and listing costs per execution;
        so when this process remembers every execution it listed in the overlap, it first asks
        visibility to count them (one cheap call): the same number means nothing showed up late
        (what it remembers came from visibility), and only closes after the checkpoint are listed."""
        async with self._lock:
            mark = await self.store.reconciled_until(SCOPE)
            now = dt.datetime.now(dt.UTC)
            mark_at = dt.datetime.fromtimestamp(mark, dt.UTC) if mark is not None else None
            since = (mark_at or now - dt.timedelta(seconds=FIRST_LOOKBACK)) - dt.timedelta(seconds=overlap)
            base = f"WorkflowType = '{WORKFLOW_NAME}' AND TaskQueue = {json.dumps(self.task_queue)}"
            if tenant is not None and self.search_attributes:
                base += f" AND DuraplanTenant = {json.dumps(tenant)}"
            base += " AND ExecutionStatus != 'Running'"
            listed_from = since
            if mark_at is not None and tenant is None and since >= self._remembered_from:
                known = sum(1 for t in self._written.values() if since <= t < mark_at)
                window = f"{base} AND CloseTime >= '{_rfc3339(since)}' AND CloseTime < '{_rfc3339(mark_at)}'"
                if known and (await self.client.count_workflows(window)).count == known:
                    listed_from = mark_at
            newest = mark_at
            written = listed = 0
            page: list[tuple[tuple[str, str], dt.datetime, RunEnd]] = []
            stale: list[tuple[str, str]] = []  # carries of runs that ended without dropping them
            query = f"{base} AND CloseTime >= '{_rfc3339(listed_from)}'"
            async for wf in self.client.list_workflows(query, page_size=1000):
                listed += 1
                closed = wf.close_time
                if closed is None:
                    continue
                newest = closed if newest is None else max(newest, closed)
                key = (wf.id, wf.run_id)
                if key in self._written:
                    continue
                try:
                    memo = await wf.memo()
                    end = run_end_of(wf, memo)
                except Exception as exc:  # a memo this code did not write: skip it, never stop the pass
                    log.warning("usage of workflow %s run %s not readable: %s", wf.id, wf.run_id, exc)
                    memo, end = {}, None
                if (owner := _carry_owner(wf, memo)) is not None:
                    stale.append(owner)
                if end is not None and tenant is not None and end.tenant != tenant:
                    continue  # search attributes off: another tenant's run, left to the worker's pass
                if end is None:
                    self._written[key] = closed
                    continue
                page.append((key, closed, end))
                if len(page) >= 500:
                    written += await self._flush(page)
            written += await self._flush(page)
            await self._drop_carries(stale)
            if tenant is None:
                if newest is not None:
                    await self.store.advance_reconciled(SCOPE, newest.timestamp())
                if listed_from == since:  # everything since `since` listed: remembered from there on
                    self._remembered_from = min(self._remembered_from, since)
            self._forget((newest or now) - dt.timedelta(seconds=SWEEP_OVERLAP))
            return PassStats(listed, written, listed_from > since)

    async def recheck_open(self, tenant: str, limit: int = RECHECK) -> int:
        """Ask Temporal (not visibility) about the tenant's runs the ledger holds open; record those
        that ended. Returns how many it recorded; at most one recheck per tenant and
        ``RECHECK_INTERVAL`` (the report's visibility pass still runs every time)."""
        now = asyncio.get_running_loop().time()
        if now - self._rechecked.get(tenant, -RECHECK_INTERVAL) < RECHECK_INTERVAL:
            return 0
        if len(self._rechecked) > 10_000:
            self._rechecked = {t: at for t, at in self._rechecked.items() if now - at < RECHECK_INTERVAL}
        self._rechecked[tenant] = now
        keys = await self.store.open_runs(tenant, limit)
        gate = asyncio.Semaphore(16)

        async def one(run_key: str) -> tuple[tuple[str, str], dt.datetime, RunEnd] | None:
            run_id = run_key.rpartition("/")[0]
            async with gate:
                try:
                    wf = await self.client.get_workflow_handle(f"{tenant}/{run_id}").describe()
                    if wf.close_time is None:
                        return None
                    end = run_end_of(wf, await wf.memo())
                except Exception as exc:  # gone (retention), unreachable, a memo it did not write
                    log.debug("run %s of tenant %s not rechecked: %s", run_key, tenant, exc)
                    return None
            if end is None or end.tenant != tenant or end.run_key != run_key:
                return None  # still running, ended by an engine-1 activity, or another generation now
            return (wf.id, wf.run_id), wf.close_time, end

        async with self._lock:
            page = [found for found in await asyncio.gather(*(one(k) for k in keys)) if found is not None]
            page = [found for found in page if found[0] not in self._written]
            written = await self._flush(page)
            # a front end only ever runs report passes: what it remembers must not grow forever
            self._forget(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=SWEEP_OVERLAP))
            return written

    async def _drop_carries(self, owners: list[tuple[str, str]]) -> None:
        """Delete the continue-as-new carries (``tools.carry_store``) of runs that were terminated
        or timed out: a run drops its own when it ends, but these ran no code to do it, so a
        terminated long run (or a restarted generation) kept hundreds of KiB in the store forever."""
        if not owners:
            return
        if self._carries is None:
            from tools.carry_store import CarryStore

            self._carries = CarryStore(self.store.database)
        for tenant, owner in owners:
            try:
                await self._carries.drop(tenant, owner)
            except Exception as exc:  # housekeeping: the next sweep lists the run again
                log.warning("carries of run %s of tenant %s not dropped: %s", owner, tenant, exc)

    async def _flush(self, page: list[tuple[tuple[str, str], dt.datetime, RunEnd]]) -> int:
        await self.store.record_run_ends([end for _, _, end in page])
        for key, closed, _ in page:
            self._written[key] = closed
        n = len(page)
        page.clear()
        return n

    def _forget(self, before: dt.datetime) -> None:
        """Drop what no later pass (a sweep included) lists or counts again."""
        if self._written and min(self._written.values()) < before:
            self._written = {k: t for k, t in self._written.items() if t >= before}
        self._remembered_from = max(self._remembered_from, before)
