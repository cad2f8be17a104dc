"""Progress streams: a per-tenant cap on open streams, and polling that slows down while nothing
changes. Twenty idle streams polled the run every 200 ms each (~0.5 CPU-s/s of the server); a
stream now polls every 200 ms while the run moves and backs off to 2 s while it does not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from executor.service.tenants import QuotaExceeded

__all__ = ["MAX_STREAMS_PER_TENANT", "POLL_MAX_S", "POLL_MIN_S", "StreamSlots", "next_poll"]

MAX_STREAMS_PER_TENANT = 8
POLL_MIN_S = 0.2
POLL_MAX_S = 2.0
RETRY_AFTER_S = 5.0


def next_poll(current: float, changed: bool) -> float:
    return POLL_MIN_S if changed else min(current * 1.5, POLL_MAX_S)


class StreamSlots:
    def __init__(self, cap: int = MAX_STREAMS_PER_TENANT) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def check(self, tenant: str) -> None:
        """QuotaExceeded (429, Retry-After) when ``tenant`` has its cap of streams open."""
        if self._open.get(tenant, 0) >= self.cap:
            raise QuotaExceeded(
                "progress_streams", RETRY_AFTER_S, tenant=tenant, detail=f"{self.cap} progress streams already open"
            )

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """Count one open stream of ``tenant`` while the stream runs (entered inside the stream's
        body, so a stream that never starts holds nothing)."""
        self._open[tenant] = self._open.get(tenant, 0) + 1
        try:
            yield
        finally:
            self._open[tenant] -= 1
