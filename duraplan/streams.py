"""Per-tenant bounds on long-lived HTTP streams (the API's server-sent events).

Each open stream holds a polling loop and a Temporal query every poll interval, so one tenant
opening thousands of them (a console left open in many tabs, or a hostile client) would starve the
others. ``StreamSlots`` caps the streams open at once per tenant; the API answers 429 past the cap.
"""

from __future__ import annotations

import threading
from collections import Counter

from executor.service.tenants import QuotaExceeded

__all__ = ["DEFAULT_STREAMS_PER_TENANT", "StreamSlot", "StreamSlots"]

# Enough for a few console tabs each watching a run and the runs list; a client needing more polls.
DEFAULT_STREAMS_PER_TENANT = 16


class StreamSlot:
    """One held slot; ``release`` is idempotent (the stream's end and the response's cleanup both call it)."""

    def __init__(self, slots: StreamSlots, tenant: str) -> None:
        self._slots = slots
        self._tenant = tenant
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._tenant)


class StreamSlots:
    def __init__(self, per_tenant: int = DEFAULT_STREAMS_PER_TENANT) -> None:
        if per_tenant < 1:
            raise ValueError(f"per_tenant must be at least 1, not {per_tenant!r}")
        self.per_tenant = per_tenant
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> StreamSlot:
        """A slot for one stream of ``tenant``; ``QuotaExceeded`` (429) when all are in use."""
        with self._lock:
            if self._open[tenant] >= self.per_tenant:
                detail = f"{self.per_tenant} event streams are open for this tenant; close one or poll instead"
                raise QuotaExceeded("event_streams", 1.0, tenant=tenant, detail=detail)
            self._open[tenant] += 1
        return StreamSlot(self, tenant)

    def open_streams(self, tenant: str) -> int:
        with self._lock:
            return self._open[tenant]

    def _release(self, tenant: str) -> None:
        with self._lock:
            self._open[tenant] -= 1
            if self._open[tenant] <= 0:
                del self._open[tenant]
