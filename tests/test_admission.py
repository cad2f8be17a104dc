"""The concurrent-run cap's admission: exact near the cap, free of queries far from it.

The view here is a stand-in for visibility (what the server would count and list); the real
server's side is covered by the burst tests in test_api_hostile and test_tenancy."""

from __future__ import annotations

import asyncio

import pytest

from executor.service.admission import COUNT_TTL_S, MAX_COUNT_TTL_S, Admission, RunningView, count_ttl


class Visibility:
    """Runs visibility counts and lists, lagging behind the starts as the real store does."""

    def __init__(self) -> None:
        self.listed_runs: set[str] = set()
        self.ended: set[str] = set()
        self.counts = 0
        self.lists = 0
        self.describes = 0

    async def count(self) -> int:
        self.counts += 1
        return len(self.listed_runs)

    async def listed(self, ids: list[str]) -> set[str]:
        self.lists += 1
        return self.listed_runs & set(ids)

    async def alive(self, workflow_id: str) -> bool:
        self.describes += 1
        return workflow_id not in self.ended

    def view(self) -> RunningView:
        return RunningView(self.count, self.listed, self.alive)


class Refused(Exception):
    pass


async def _start(admission: Admission, vis: Visibility, cap: int, wid: str) -> bool:
    try:
        async with admission.admit("t", cap, vis.view(), lambda n: Refused(n)) as started:
            await asyncio.sleep(0)  # the start RPC
            started(wid)
            return True
    except Refused:
        return False


async def test_a_burst_is_held_at_the_cap_while_visibility_lags() -> None:
    admission, vis = Admission(), Visibility()
    admitted = await asyncio.gather(*(_start(admission, vis, 3, f"r{i}") for i in range(10)))
    assert sum(admitted) == 3


async def test_far_from_the_cap_a_start_costs_no_query() -> None:
    admission, vis = Admission(), Visibility()
    admitted = await asyncio.gather(*(_start(admission, vis, 10_000, f"r{i}") for i in range(500)))
    assert all(admitted)
    assert (vis.counts, vis.lists, vis.describes) == (1, 0, 0)


async def test_runs_listed_or_ended_stop_counting_twice() -> None:
    admission, vis = Admission(), Visibility()
    assert all([await _start(admission, vis, 2, f"r{i}") for i in range(2)])
    assert not await _start(admission, vis, 2, "r2"), "two recent runs, neither listed yet: at the cap"
    vis.listed_runs.add("r0")  # visibility caught up with one run...
    assert not await _start(admission, vis, 2, "r3"), "...which counts once, not twice"
    vis.ended.add("r1")  # the unlisted one ended: its slot is free
    assert await _start(admission, vis, 2, "r4")
    assert vis.lists >= 2 and vis.describes >= 2


@pytest.mark.parametrize("cap", [1, 5])
async def test_the_exact_check_refuses_with_the_running_count(cap: int) -> None:
    admission, vis = Admission(), Visibility()
    vis.listed_runs = {f"old{i}" for i in range(cap)}
    with pytest.raises(Refused) as info:
        async with admission.admit("t", cap, vis.view(), lambda n: Refused(n)):
            pass
    assert info.value.args == (cap,)


async def test_start_calls_run_in_parallel_and_in_flight_ones_hold_a_slot() -> None:
    admission, vis = Admission(), Visibility()
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(wid: str) -> None:
        async with admission.admit("t", 2, vis.view(), lambda n: Refused(n)) as started:
            inside.set()
            await release.wait()  # the start RPC, still in flight
            started(wid)

    first = asyncio.create_task(slow("r0"))
    await inside.wait()
    # the tenant is not locked while r0's start is in flight: another start is decided now...
    assert await asyncio.wait_for(_start(admission, vis, 2, "r1"), timeout=5)
    # ...and r0's in-flight start holds its slot: a third is refused at cap 2
    assert not await _start(admission, vis, 2, "r2")
    release.set()
    await first


def test_a_count_serves_longer_the_more_headroom_the_rate_quota_leaves() -> None:
    assert count_ttl(headroom=50_000, rate=300, burst=300) == MAX_COUNT_TTL_S
    assert count_ttl(headroom=900, rate=300, burst=300) == 2.0  # 600 runs of room at 300/s
    assert count_ttl(headroom=200, rate=300, burst=300) == COUNT_TTL_S  # a burst could fill it
    assert count_ttl(headroom=50_000, rate=0, burst=0) == COUNT_TTL_S  # no rate quota: no bound


async def test_far_from_the_cap_a_count_is_reused_under_a_rate_quota() -> None:
    admission, vis = Admission(), Visibility()
    for i in range(5):
        async with admission.admit("t", 10_000, vis.view(), lambda n: Refused(n), rate=100, burst=10) as started:
            started(f"r{i}")
    assert vis.counts == 1


async def test_a_start_finishing_during_the_exact_check_still_counts() -> None:
    admission, vis = Admission(), Visibility()
    release, inside = asyncio.Event(), asyncio.Event()

    async def held(wid: str) -> None:
        async with admission.admit("t", 2, vis.view(), lambda n: Refused(n)) as started:
            inside.set()
            await release.wait()
            started(wid)

    assert await _start(admission, vis, 2, "r0")
    first = asyncio.create_task(held("r1"))
    await inside.wait()  # r1's start is in flight: the tenant is at its cap of 2

    slow_listed = vis.listed

    async def listed(ids: list[str]) -> set[str]:
        release.set()  # r1's start returns while the exact check awaits visibility
        await first
        return await slow_listed(ids)

    vis.listed = listed  # type: ignore[method-assign]
    assert not await _start(admission, vis, 2, "r2"), "r1 moved from in flight to recent: still running"
    vis.listed = slow_listed  # type: ignore[method-assign]
    assert not await _start(admission, vis, 2, "r3")
