"""Guarantees the suite did not pin down (issue 11 item 17): each of these bugs would have passed."""

from __future__ import annotations

import random

import pytest

from executor import Duraplan
from executor.engine.models import plan_hash
from executor.engine.retry import backoff_delay
from schemas.plan import Retry


async def test_restart_repeats_side_effects_with_the_generation_in_the_key(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "count-once",
        "steps": [{"id": "n", "kind": "tool", "tool": "kv.incr", "args": {"key": "restarts"}}],
        "output": "${steps.n.output.value}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="s")
    assert await handle.result() == 1
    again = await handle.restart()
    assert await again.result() == 2, "a restart is a new run of the plan: its effects happen again"


@pytest.mark.parametrize(
    ("policy", "attempt", "expected"),
    [
        ({"initial_interval": "1s", "backoff": 2.0, "max_interval": "100s"}, 1, 1.0),
        ({"initial_interval": "1s", "backoff": 2.0, "max_interval": "100s"}, 4, 8.0),  # exactly 1 * 2**3
        ({"initial_interval": "1s", "backoff": 2.0, "max_interval": "10s"}, 30, 10.0),  # capped
        ({"initial_interval": "500ms", "backoff": 3.0, "max_interval": "1h"}, 3, 4.5),
    ],
)
def test_backoff_has_exact_exponents_and_upper_bounds(policy: dict[str, object], attempt: int, expected: float) -> None:
    assert backoff_delay(Retry.model_validate(policy), attempt) == pytest.approx(expected)


@pytest.mark.parametrize("retry_after", [float("inf"), 1e300, 100_000.0, 11.0])
def test_retry_after_never_waits_past_max_interval(retry_after: float) -> None:
    policy = Retry.model_validate({"initial_interval": "1s", "max_interval": "10s"})
    assert backoff_delay(policy, 1, retry_after) == 10.0
    assert backoff_delay(policy, 1, 3.0) == 3.0  # within the cap it is honoured
    assert backoff_delay(policy, 1, float("nan")) == 1.0


def test_plan_hash_does_not_depend_on_key_order() -> None:
    plan = {
        "name": "p",
        "version": "1",
        "steps": [{"id": "a", "kind": "set", "value": {"x": 1, "y": [1, {"b": 2, "a": 1}]}}],
        "output": "${steps.a.output}",
    }

    def shuffled(value: object, rng: random.Random) -> object:
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffled(v, rng) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v, rng) for v in value]
        return value

    rng = random.Random(7)
    hashes = {plan_hash(shuffled(plan, rng)) for _ in range(10)}  # type: ignore[arg-type]
    assert hashes == {plan_hash(plan)}
