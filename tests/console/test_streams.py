"""StreamSlots: the per-tenant cap on open event streams (pure, no server)."""

from __future__ import annotations

import pytest

from duraplan.streams import StreamSlots
from executor.service.tenants import QuotaExceeded


def test_slots_are_capped_per_tenant_and_released_once() -> None:
    slots = StreamSlots(per_tenant=2)
    first, second = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(QuotaExceeded) as raised:
        slots.acquire("a")
    assert raised.value.limit == "event_streams" and raised.value.retry_after_s == 1.0
    other = slots.acquire("b")  # another tenant's streams are counted apart
    first.release()
    first.release()  # idempotent: the stream's end and the response's cleanup both release
    assert slots.open_streams("a") == 1
    third = slots.acquire("a")
    for slot in (second, third, other):
        slot.release()
    assert slots.open_streams("a") == slots.open_streams("b") == 0


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_tenant"):
        StreamSlots(per_tenant=0)
