"""Runs of one plan share its parsed model in a worker; a forged or stale hash never maps to another plan."""

from __future__ import annotations

from executor.engine.plans import shared_plan


def _plan(name: str) -> dict[str, object]:
    return {"name": name, "steps": [{"id": "go", "kind": "wait_for_event", "event": "go"}]}


def test_equal_plans_share_one_parsed_model() -> None:
    first_body, first = shared_plan("sha256:same", _plan("shared-a"))
    body, parsed = shared_plan("sha256:same", _plan("shared-a"))  # a fresh, equal body (another run)
    assert parsed is first and body is first_body


def test_a_hash_reused_for_another_body_parses_that_body() -> None:
    shared_plan("sha256:forged", _plan("shared-b"))
    body, parsed = shared_plan("sha256:forged", _plan("shared-c"))
    assert parsed.name == "shared-c" and body == _plan("shared-c")
