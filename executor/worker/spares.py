"""Spare sandbox workers: processes started ahead of the steps that will use them.

Starting a sandbox worker (the launcher, then monty) takes 5-20 ms, and no worker ever serves two steps,
so a step that started its own would pay that every time. The sandbox keeps a few spares instead: each
is a one-worker ``AsyncMonty`` pool whose process was spawned in the background, handed whole to exactly
one step, which closes it (killing its worker) when it is done; taking one starts its replacement.

What a spare is, and is not:

* one process for one step: a spare pool is never returned to this list, and serves one checkout;
* no one's data: it was started by the same launcher as any worker (empty environment, no inherited
  descriptors, the ceilings' rlimits) and has run no code; the step that takes it lowers its rlimits to
  its own budget before its code runs (``Sandbox._tighten``, as for a worker started on demand);
* never dead when handed out: the pool checks its idle worker at checkout and starts a new one in its
  place if it died (a cold start for that step, nothing worse);
* reaped at shutdown: ``close`` waits for spares being started and closes every pool it holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

import pydantic_monty

__all__ = ["Spares", "close_pool"]

log = logging.getLogger(__name__)


async def close_pool(pool: pydantic_monty.AsyncMonty) -> None:
    """Close a one-worker pool: its worker, idle or done, is killed and reaped."""
    with contextlib.suppress(Exception):  # a pool that failed half-way has nothing left to close
        await pool.__aexit__(None, None, None)


class Spares:
    """Up to ``count`` started one-worker pools, kept topped up in the background.

    ``start`` makes and enters one pool (spawning its worker); it raises if the worker cannot be spawned.
    """

    def __init__(self, start: Callable[[], Awaitable[pydantic_monty.AsyncMonty]], count: int) -> None:
        if count < 0:
            raise ValueError(f"spares must be >= 0, got {count}")
        self.count = count
        self._start = start
        self._ready: collections.deque[pydantic_monty.AsyncMonty] = collections.deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """Spares started and waiting for a step."""
        return len(self._ready)

    async def take(self) -> pydantic_monty.AsyncMonty:
        """A started pool for one step: a spare when one is ready, else one started now. Either way a
        replacement is started in the background. The caller owns the pool and closes it."""
        if self._closed:
            raise RuntimeError("the sandbox's spares are closed")
        pool = self._ready.popleft() if self._ready else None
        self.top_up()
        return pool if pool is not None else await self._start()

    def top_up(self) -> None:
        """Start as many spares as are missing (ready or starting)."""
        for _ in range(self.count - len(self._ready) - len(self._starting)):
            task = asyncio.get_running_loop().create_task(self._refill())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def settled(self) -> None:
        """Wait until the spares being started are ready (or failed to start)."""
        while self._starting:
            await asyncio.wait(set(self._starting))  # (not gather: a cancelled wait must not cancel them)

    async def _refill(self) -> None:
        try:
            pool = await self._start()
        except Exception as exc:  # the next take starts its own worker, and reports why it cannot
            log.warning("could not start a spare sandbox worker: %s", exc)
            return
        if self._closed:
            await close_pool(pool)
        else:
            self._ready.append(pool)

    async def close(self) -> None:
        """Stop starting spares and close every one held. Spares being started are waited for, not
        cancelled: a pool cancelled half-way could leave its worker to the garbage collector."""
        self._closed = True
        await self.settled()
        while self._ready:
            await close_pool(self._ready.popleft())
