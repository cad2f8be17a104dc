"""The tenant's concurrent-run cap, held under bursts, at a cost that does not grow with the cap.

Temporal's visibility store is eventually consistent: a run started a moment ago is not yet
listed as running, so ten submissions at once each counted the same few running runs and all
started (10 with a cap of 3). Here the check is one step per tenant (a lock in this process) that
reserves a slot, starts in flight hold theirs (so the start RPCs themselves run in parallel), and
runs this process started recently count until visibility lists them, or until a describe shows
they already ended. Across several API processes the overshoot is
bounded by the other processes' bursts within the visibility delay (the rate quota bounds that).

Far from the cap a start costs no query at all: the last visibility count plus every run this
process started in the last ``RECENT_S`` is an upper bound on what this process can see running (a
run counted twice or ended since only makes it larger), and below the cap it admits. How long a
count serves depends on the headroom: other processes can start at most ``burst + rate * t`` of the
tenant's runs in ``t`` seconds (the rate quota), so a count is trusted while that cannot fill the
headroom, from ``COUNT_TTL_S`` up to ``MAX_COUNT_TTL_S`` (a count query scans every running run
of the tenant in visibility: at 50,000 runs it is not free).
Only a start that bound does not clear pays for the exact check: a fresh count, which of the
recent runs visibility lists already (a query over their ids, not a listing of every running run),
and a describe of those it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["COUNT_TTL_S", "MAX_COUNT_TTL_S", "RECENT_S", "Admission", "RunningView", "count_ttl"]

RECENT_S = 10.0  # longer than visibility takes to list a started run
COUNT_TTL_S = 1.0  # how long a visibility count of running runs serves the fast path, at least
MAX_COUNT_TTL_S = 30.0  # ... and at most, however large the headroom


def count_ttl(headroom: float, rate: float, burst: int) -> float:
    """Seconds a count leaves ``headroom`` runs below the cap that the tenant's rate quota cannot
    fill from elsewhere: ``(headroom - burst) / rate``, within [COUNT_TTL_S, MAX_COUNT_TTL_S]."""
    if rate <= 0 or headroom <= burst:  # no rate quota bounds the others, or no room to spare
        return COUNT_TTL_S
    return min(max((headroom - burst) / rate, COUNT_TTL_S), MAX_COUNT_TTL_S)


@dataclass(frozen=True)
class RunningView:
    """How a tenant's running runs are seen: a count, and which of some ids are listed."""

    count: Callable[[], Awaitable[int]]
    listed: Callable[[list[str]], Awaitable[set[str]]]  # the ids among these visibility lists as running
    alive: Callable[[str], Awaitable[bool]]  # a describe: still running?


@dataclass
class _Tenant:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # workflow id -> when this process started it, oldest first (pruned from the front: at a few
    # hundred starts/s a rebuild of every recent start on every admit was a thousand entries each)
    recent: OrderedDict[str, float] = field(default_factory=OrderedDict)
    count: int = 0
    counted_at: float = float("-inf")
    starting: int = 0  # admitted starts whose RPC is in flight: they hold a slot


class Admission:
    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    @contextlib.asynccontextmanager
    async def admit(
        self,
        tenant: str,
        cap: int,
        view: RunningView,
        refuse: Callable[[int], BaseException],
        *,
        rate: float = 0.0,
        burst: int = 0,
    ) -> AsyncIterator[Callable[[str], None]]:
        """Admit one start of the tenant's while the caller makes it; ``started(workflow_id)``
        records it. ``refuse(running)`` is raised when the tenant is at ``cap``. ``rate`` and
        ``burst`` are the tenant's run-rate quota (0: none, so a count serves ``COUNT_TTL_S``)."""
        state = self._tenants.setdefault(tenant, _Tenant())
        async with state.lock:
            now = time.monotonic()
            while state.recent and now - next(iter(state.recent.values())) >= RECENT_S:
                state.recent.popitem(last=False)
            known = state.count + len(state.recent) + state.starting
            if now - state.counted_at >= count_ttl(cap - known, rate, burst):
                state.count, state.counted_at = await view.count(), now
            if state.count + len(state.recent) + state.starting >= cap:
                running = await self._exact(state, view, now) + state.starting
                if running >= cap:
                    raise refuse(running)
            state.starting += 1

        def started(workflow_id: str) -> None:
            state.recent[workflow_id] = time.monotonic()
            state.recent.move_to_end(workflow_id)  # a restart of an id already here: now the newest

        try:
            yield started
        finally:
            state.starting -= 1

    @staticmethod
    async def _exact(state: _Tenant, view: RunningView, now: float) -> int:
        """Running runs now: a fresh count plus the recent runs visibility does not list yet and a
        describe finds running. Listed or ended runs leave ``recent`` (the count has them).

        The listing comes first: a run listed then is in the count taken after it, while one listed
        only after the count would be dropped from ``recent`` and counted nowhere (one run over the
        cap in a burst). A run that becomes visible in between counts twice: that errs on the safe side."""
        ids = list(state.recent)
        listed = await view.listed(ids) if ids else set()
        state.count, state.counted_at = await view.count(), now
        unseen = [k for k in ids if k not in listed]
        alive = await asyncio.gather(*map(view.alive, unseen))
        # Removed one by one, not rebuilt: starts that finished while this awaited are in
        # ``recent`` now and nowhere else.
        for k, ok in [*((k, False) for k in listed), *zip(unseen, alive, strict=True)]:
            if not ok:
                state.recent.pop(k, None)
        return state.count + len(state.recent)
