"""Shared fixtures for the tools tests: an in-memory store and a context factory."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The project is not installed into the venv; make `import tools` work however pytest is run.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tools import HttpPolicy, Store, ToolContext  # noqa: E402
from tools.egress import Resolver  # noqa: E402

PUBLIC_IP = "93.184.216.34"

ContextFactory = Callable[..., ToolContext]


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture
def make_ctx(store: Store) -> ContextFactory:
    def make(
        *,
        tenant: str = "acme",
        attempt: int = 1,
        idempotency_key: str = "run-1/step-a",
        run_id: str = "run-1",
        step_path: str = "step-a",
    ) -> ToolContext:
        return ToolContext(
            tenant=tenant,
            run_id=run_id,
            step_path=step_path,
            attempt=attempt,
            idempotency_key=idempotency_key,
            store=store,
        )

    return make


def _fake_resolver(table: dict[str, list[str]]) -> Resolver:
    """Resolve from a table; anything else fails like an unknown name (no real DNS in tests)."""

    async def resolve(host: str, port: int) -> list[str]:
        try:
            return table[host]
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    return resolve


@pytest.fixture
def fake_resolver() -> Callable[[dict[str, list[str]]], Resolver]:
    return _fake_resolver


@pytest.fixture
def policy() -> HttpPolicy:
    """The default policy (private addresses blocked) with deterministic name resolution."""
    return HttpPolicy(
        resolver=_fake_resolver(
            {
                "api.example.com": [PUBLIC_IP],
                "other.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
                "rebind.example.com": [PUBLIC_IP, "10.1.2.3"],
                "metadata.example.com": ["169.254.169.254"],
            }
        )
    )
