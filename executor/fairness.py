"""Per-tenant caps on steps running at once in one worker process.

Temporal's fairness keys (one per tenant, set on every run) make the task queue hand out work
round-robin by tenant, but a tenant whose runs fan out can still hold every activity slot of a
worker once its tasks are matched. The gate bounds that: a step of a tenant already at its cap
(``Quotas.max_inflight_steps``) is refused at once with ``TenantBusy``, before it takes any time,
and the workflow re-dispatches it after a short durable timer without counting an attempt. The
refused task frees its slot immediately, so other tenants' tasks get the slots.

The cap is per worker process: N workers admit up to N x cap steps of one tenant.
"""

from __future__ import annotations

__all__ = ["TENANT_BUSY", "TenantGate", "throttle_delay"]

TENANT_BUSY = "TenantBusy"


class TenantGate:
    """Counts running steps per tenant in this process (the event loop's thread: no lock needed)."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def try_enter(self, tenant: str, cap: int | None) -> bool:
        """Take one of ``tenant``'s ``cap`` slots; False when all are taken (None: no cap)."""
        count = self._running.get(tenant, 0)
        if cap is not None and count >= cap:
            return False
        self._running[tenant] = count + 1
        return True

    def leave(self, tenant: str) -> None:
        left = self._running[tenant] - 1
        if left:
            self._running[tenant] = left
        else:
            del self._running[tenant]


def throttle_delay(times: int) -> float:
    """Seconds before the ``times``-th re-dispatch of a refused step: 1, 1.5, 2.25... capped at 5."""
    return float(min(1.5 ** max(times - 1, 0), 5.0))
