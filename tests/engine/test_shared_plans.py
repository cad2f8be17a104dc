"""Runs of one plan share its parsed model in a worker; a forged or stale hash never maps to another plan.
Runs with the same local tools share one list and one set of them, the secret references
of a plan step's arguments are worked out once, and runs of a shared plan share one root frame."""

from __future__ import annotations

from executor.engine.plans import plan_refs, root_frame, shared_derived, shared_names, shared_plan
from executor.lang.secret_refs import literal_refs


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


def test_equal_local_tool_lists_share_one_list_and_set() -> None:
    names, as_set = shared_names(["kv.get", "kv.put"])
    again, again_set = shared_names(["kv.get", "kv.put"])  # decoded afresh for another run
    assert again is names and again_set is as_set and as_set == {"kv.get", "kv.put"}
    other, other_set = shared_names(["kv.put", "kv.get"])  # another order: passed on as given
    assert other == ["kv.put", "kv.get"] and other_set == as_set


def test_runs_of_a_shared_plan_share_one_root_frame_and_a_revision_gets_its_own() -> None:
    _, plan = shared_plan("sha256:frame", _plan("shared-frame"))
    shared_derived("sha256:frame", plan, lambda p: {})
    frame = root_frame("sha256:frame", plan)
    assert root_frame("sha256:frame", plan) is frame
    assert frame.prefix == "" and frame.visible == {"go": "go"} and frame.extras == {}
    child = frame.child("loop[0].", plan.steps, item=1)  # a nested block's frame is a copy
    assert child.visible == {"go": "loop[0].go"} and frame.visible == {"go": "go"} and frame.extras == {}
    _, revised = shared_plan("sha256:revised", _plan("revised"))  # not the derived entry's plan
    assert root_frame("sha256:frame", revised) is not frame
    assert root_frame("sha256:frame", revised).visible == {"go": "go"}


def test_plan_refs_are_the_literal_refs_of_each_arguments_object() -> None:
    args = {"to": {"$secret": "SMTP"}, "body": "${steps.a.output}", "key": {"$secret": "${input.name}"}}
    first = plan_refs(args)
    assert first == literal_refs(args) == ["/to"]  # a templated name is not honoured
    first.append("/body")  # the caller's own list: the remembered answer is not changed
    assert plan_refs(args) == ["/to"]
    # another object (an equal one, or a different one at a reused address) is worked out anew
    assert plan_refs({"x": {"$secret": "TOKEN"}}) == ["/x"]
    assert plan_refs(dict(args)) == ["/to"]
    assert plan_refs({"plain": [1, "two"]}) == []
