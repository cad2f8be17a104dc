"""The carry activities: keep a long run's continue-as-new state out of history (executor.engine.carry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from executor.engine.carry import CarryLoad, CarrySave, split_text
from executor.engine.contract import CARRY_DROP, CARRY_LOAD, CARRY_SAVE
from tools.carry_store import CarryStore
from tools.store import Store

__all__ = ["CarryActivities"]


class CarryActivities:
    def __init__(self, store: Store) -> None:
        self.carries = CarryStore(store.database)

    def all(self) -> list[Callable[..., Any]]:
        return [self.save, self.load, self.drop]

    @activity.defn(name=CARRY_SAVE)
    async def save(self, call: CarrySave) -> int:
        """Store the carry; returns the number of parts the next execution reads back."""
        parts = split_text(call.text, call.part_chars)
        keep = call.keep
        await self.carries.save(call.tenant, call.run_id, call.key, parts, keep)
        return len(parts)

    @activity.defn(name=CARRY_LOAD)
    async def load(self, call: CarryLoad) -> str:
        body = await self.carries.load(call.tenant, call.run_id, call.key, call.part)
        if body is None:
            # The store lost it (or a different store serves this worker): retrying cannot help.
            raise ApplicationError(
                f"carry {call.key!r} part {call.part} of run {call.run_id!r} is not in the store",
                type="CarryLost",
                non_retryable=True,
            )
        return body

    @activity.defn(name=CARRY_DROP)
    async def drop(self, call: CarryLoad) -> int:
        return await self.carries.drop(call.tenant, call.run_id)
