"""Per-tenant caps on steps running at once in one worker process.

Temporal's fairness keys (one per tenant, set on every run) make the task queue hand out work
round-robin by tenant, but a tenant whose runs fan out can still hold every activity slot of a
worker once its tasks are matched. Two bounds stop that (``Quotas.max_inflight_steps``):

- in the workflow, a run never has more activity steps in flight than the cap (it lowers the plan's
  ``max_parallel``): one run's fan-out queues inside its own workflow, at no cost;
- in the worker, the ``TenantGate`` admits at most ``cap`` steps of a tenant at once, across its
  runs. A step over the cap waits in a FIFO queue (bounded in length and time) for a slot that a
  finishing step hands over. Only when the queue is full, or the wait runs out, is the step refused
  with ``TenantBusy``; the workflow then dispatches it again after a durable timer, without counting
  an attempt. Waiting in the worker is cheap (no history, no workflow task); the refusal path is the
  exception, for a tenant with far more runs in flight than its cap.

The cap is per worker process: N workers admit up to N x cap steps of one tenant.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from executor.engine.contract import TENANT_BUSY
from executor.engine.retry import throttle_delay

__all__ = ["QUEUE_PER_SLOT", "TENANT_BUSY", "WAIT_SECONDS", "TenantGate", "throttle_delay"]

QUEUE_PER_SLOT = 4  # steps that may wait per slot of the cap; more are refused at once
WAIT_SECONDS = 10.0  # how long a step waits in the worker before it is refused
TICK_SECONDS = 3.0  # heartbeat interval while waiting (the heartbeat timeout is 10 s)


class TenantGate:
    """Counts running steps per tenant in this process (one event loop: no lock needed)."""

    def __init__(self, *, queue_per_slot: int = QUEUE_PER_SLOT, wait_seconds: float = WAIT_SECONDS) -> None:
        self._running: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self.queue_per_slot = queue_per_slot
        self.wait_seconds = wait_seconds

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        return len(self._queues.get(tenant, ()))

    async def enter(
        self,
        tenant: str,
        cap: int | None,
        max_wait: float | None = None,
        tick: Callable[[], None] | None = None,
    ) -> bool:
        """Take one of ``tenant``'s ``cap`` slots, waiting in line if need be (None: no cap), at
        most ``max_wait`` seconds (never over ``wait_seconds``), calling ``tick`` every few seconds
        meanwhile (a heartbeat). False: the line is full, or no slot came free in time."""
        queue = self._queues.get(tenant)
        if cap is None or (self.running(tenant) < cap and not queue):
            self._running[tenant] = self.running(tenant) + 1
            return True
        if queue is None:
            queue = self._queues[tenant] = deque()
        if len(queue) >= cap * self.queue_per_slot:
            return False
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        queue.append(turn)
        deadline = loop.time() + min(self.wait_seconds, max_wait or self.wait_seconds)
        try:
            # ``leave`` hands its slot to the first in line: the running count stays as it is.
            while not turn.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.wait({turn}, timeout=min(remaining, TICK_SECONDS))
                if tick is not None and not turn.done():
                    tick()
            return True
        except BaseException:  # cancelled: a slot handed over meanwhile goes to the next in line
            if turn.done() and not turn.cancelled():
                self.leave(tenant)
            raise
        finally:
            if not turn.done():
                turn.cancel()  # ``leave`` skips it
            if turn in queue:
                queue.remove(turn)
            if not queue and self._queues.get(tenant) is queue:
                del self._queues[tenant]

    def leave(self, tenant: str) -> None:
        for turn in self._queues.get(tenant, ()):
            if not turn.done():  # (a waiter that gave up is skipped)
                turn.set_result(None)
                return
        left = self._running[tenant] - 1
        if left:
            self._running[tenant] = left
        else:
            del self._running[tenant]
