"""The tenant's concurrent-run cap, held under bursts.

Temporal's visibility store is eventually consistent: a run started a moment ago is not yet
listed as running, so ten submissions at once each counted the same few running runs and all
started (10 with a cap of 3). Here the check and the start are one step per tenant (a lock in
this process), and runs this process started recently count until visibility lists them, or
until a describe shows they already ended. Across several API processes the overshoot is
bounded by the other processes' bursts within the visibility delay (the rate quota bounds that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["RECENT_S", "Admission"]

RECENT_S = 10.0  # longer than visibility takes to list a started run


class Admission:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: dict[str, dict[str, float]] = {}

    @contextlib.asynccontextmanager
    async def admit(
        self,
        tenant: str,
        cap: int,
        visible_running: Callable[[int], Awaitable[set[str]]],
        still_running: Callable[[str], Awaitable[bool]],
        refuse: Callable[[int], BaseException],
    ) -> AsyncIterator[Callable[[str], None]]:
        """Hold the tenant's admission while the caller starts a run; ``started(workflow_id)``
        records it. ``refuse(running)`` is raised when the tenant is at ``cap``."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            recent = {k: t for k, t in self._recent.get(tenant, {}).items() if now - t < RECENT_S}
            visible = await visible_running(cap + len(recent))
            unseen = [k for k in recent if k not in visible]
            alive = [k for k, ok in zip(unseen, await asyncio.gather(*map(still_running, unseen)), strict=True) if ok]
            self._recent[tenant] = {k: recent[k] for k in alive}  # listed or ended: visibility has it
            running = len(visible) + len(alive)
            if running >= cap:
                raise refuse(running)

            def started(workflow_id: str) -> None:
                self._recent[tenant][workflow_id] = time.monotonic()

            yield started
