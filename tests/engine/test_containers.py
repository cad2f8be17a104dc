"""Containers: foreach, switch and subplan."""

from __future__ import annotations

from typing import Any

import pytest

from executor import Duraplan, RunNotFound

from .conftest import max_overlap, run_failure, step_records, steps_by_id, ts, wait_for

# ---- foreach -----------------------------------------------------------------------------------


async def test_foreach_bounded_concurrency_keeps_item_order(dp: Duraplan, tenant: str) -> None:
    # Early items sleep longest, so completion order is not item order.
    plan = {
        "name": "foreach",
        "inputs": {"type": "object"},
        "steps": [
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "max_concurrency": 2,
                "steps": [
                    {"id": "work", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": "${item.s}"}},
                    {"id": "tag", "kind": "set", "value": "${item.name}", "depends_on": ["work"]},
                ],
            }
        ],
        "output": "${steps.each.output}",
    }
    items = [{"name": f"i{n}", "s": s} for n, s in enumerate([0.6, 0.4, 0.2, 0.6, 0.2, 0.2])]
    handle = await dp.submit_plan(plan, tenant=tenant, session="fe", inputs={"items": items})
    assert await handle.result() == [i["name"] for i in items]
    records = await step_records(handle)
    intervals = [
        (ts(records[f"each[{i}].work"]["started_at"]), ts(records[f"each[{i}].work"]["ended_at"])) for i in range(6)
    ]
    assert max_overlap(intervals) == 2  # bounded, and the bound was actually used
    each = steps_by_id(await handle.status())["each"]
    assert each["state"] == "completed"
    assert each["progress"] == {"done": 6, "total": 6, "counts": {"completed": 6}}


async def test_foreach_output_expression_per_item(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "foreach-output",
        "steps": [
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.words}",
                "output": "{word: item, position: index, echoed: steps.say.output.value}",
                "steps": [{"id": "say", "kind": "tool", "tool": "debug.echo", "args": {"value": "${item}!"}}],
            }
        ],
        "output": "${steps.each.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="fe", inputs={"words": ["a", "b", "c"]})
    assert await handle.result() == [
        {"word": "a", "position": 0, "echoed": "a!"},
        {"word": "b", "position": 1, "echoed": "b!"},
        {"word": "c", "position": 2, "echoed": "c!"},
    ]


async def test_foreach_nested_step_reads_an_outer_step(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "foreach-outer",
        "steps": [
            {"id": "prefix", "kind": "tool", "tool": "debug.echo", "args": {"value": "pre"}},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "steps": [
                    {"id": "join", "kind": "set", "value": "${steps.prefix.output.value}-${item}-${index}"},
                ],
            },
        ],
        "output": "${steps.each.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="fe", inputs={"items": ["x", "y"]})
    assert await handle.result() == ["pre-x-0", "pre-y-1"]
    steps = steps_by_id(await handle.status())
    assert ts(steps["each"]["started_at"]) >= ts(steps["prefix"]["ended_at"])


# ---- switch ------------------------------------------------------------------------------------


def switch_plan() -> dict[str, Any]:
    def branch(name: str) -> list[dict[str, Any]]:
        return [
            {"id": f"{name}_mark", "kind": "tool", "tool": "kv.put", "args": {"key": f"ran:{name}", "value": True}},
            {"id": f"{name}_out", "kind": "set", "value": f"{name}:${{input.n}}", "depends_on": [f"{name}_mark"]},
        ]

    return {
        "name": "switch",
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "steps": [
            {
                "id": "route",
                "kind": "switch",
                "cases": [
                    {"when": "${input.n > `10`}", "steps": branch("big")},
                    {"when": "${input.n > `5`}", "steps": branch("medium")},
                ],
                "default": branch("small"),
            }
        ],
        "output": "${steps.route.output}",
    }


@pytest.mark.parametrize(("n", "chosen"), [(20, "big"), (7, "medium"), (1, "small")])
async def test_switch_runs_first_matching_case_or_default(
    dp: Duraplan, tenant: str, worker_deps: Any, n: int, chosen: str
) -> None:
    handle = await dp.submit_plan(switch_plan(), tenant=tenant, session="sw", inputs={"n": n})
    # The output is the chosen branch's last step output.
    assert await handle.result() == f"{chosen}:{n}"
    store = worker_deps.store
    assert await store.kv_list(tenant, "ran:") == [f"ran:{chosen}"]
    records = await step_records(handle)
    ran = {path for path in records if path.startswith("route.")}
    assert ran == {f"route.{chosen}_mark", f"route.{chosen}_out"}
    route = steps_by_id(await handle.status())["route"]
    assert route["detail"]["branch"] == {"big": 0, "medium": 1, "small": -1}[chosen]


async def test_switch_without_match_or_default_outputs_null(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "switch-none",
        "steps": [
            {
                "id": "route",
                "kind": "switch",
                "cases": [{"when": "${input.go}", "steps": [{"id": "x", "kind": "set", "value": 1}]}],
            }
        ],
        "output": {"route": "${steps.route.output}", "status": "${steps.route.status}"},
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="sw", inputs={"go": False})
    assert await handle.result() == {"route": None, "status": "completed"}
    assert "route.x" not in await step_records(handle)


# ---- subplan -----------------------------------------------------------------------------------


CHILD = {
    "name": "child",
    "inputs": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    "steps": [
        {"id": "double", "kind": "code", "code": "x * 2", "inputs": {"x": "${input.x}"}},
    ],
    "output": {"doubled": "${steps.double.output}"},
}


async def test_subplan_gets_inputs_and_returns_its_output(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "parent",
        "steps": [
            {"id": "base", "kind": "set", "value": 21},
            {"id": "child", "kind": "subplan", "plan": CHILD, "inputs": {"x": "${steps.base.output}"}},
        ],
        "output": "${steps.child.output.doubled}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="sub")
    assert await handle.result() == 42
    child = steps_by_id(await handle.status())["child"]
    assert child["state"] == "completed"
    assert child["output_preview"] == '{"doubled": 42}'


def failing_child_plan(on_error: str) -> dict[str, Any]:
    child = {
        "name": "failing-child",
        "steps": [
            {
                "id": "bad",
                "kind": "tool",
                "tool": "debug.fail",
                "args": {"message": "child broke", "error_type": "ChildBroke"},
            }
        ],
    }
    return {
        "name": "parent",
        "steps": [
            {"id": "child", "kind": "subplan", "plan": child, "on_error": on_error},
            {
                "id": "after",
                "kind": "set",
                "value": {"status": "${steps.child.status}", "error": "${steps.child.error.type}"},
                "depends_on": ["child"],
            },
        ],
        "output": "${steps.after.output}",
    }


async def test_failing_subplan_fails_the_parent(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(failing_child_plan("fail"), tenant=tenant, session="sub")
    failure = await run_failure(handle)
    assert failure.details["step"] == "child"
    assert failure.details["type"] == "ChildBroke"
    steps = steps_by_id(await handle.status())
    assert steps["child"]["state"] == "failed"
    assert steps["child"]["error"]["type"] == "ChildBroke"
    assert steps["after"]["state"] == "skipped"  # the run failed before it could start


async def test_failing_subplan_with_on_error_continue(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(failing_child_plan("continue"), tenant=tenant, session="sub")
    assert await handle.result() == {"status": "failed", "error": "ChildBroke"}


async def test_subplan_child_run_is_opened_and_listed_like_any_run(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "parent", "steps": [{"id": "child", "kind": "subplan", "plan": CHILD, "inputs": {"x": 1}}]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="sub")
    await handle.result()
    child_id = steps_by_id(await handle.status())["child"]["child_run_id"]
    assert child_id == f"{handle.run_id}~child~0"
    child = await dp.get_run(child_id, tenant=tenant).status()
    assert (child.state, child.plan_name, child.parent_run_id) == ("completed", "child", handle.run_id)
    assert await dp.get_run(child_id, tenant=tenant).result() == {"doubled": 2}
    with pytest.raises(RunNotFound):  # another tenant cannot open it
        await dp.get_run(child_id, tenant=f"{tenant}-b").status()

    async def listed() -> dict[str, str | None] | None:
        rows = {r.run_id: r.parent_run_id for r in await dp.list_runs(tenant=tenant, status="completed")}
        return rows if len(rows) == 2 else None

    assert await wait_for(listed, timeout=15) == {handle.run_id: None, child_id: handle.run_id}


async def test_subplan_with_a_null_literal_runs(dp: Duraplan, tenant: str) -> None:
    child = {"name": "null-child", "steps": [{"id": "nothing", "kind": "set", "value": None}], "output": {"ok": True}}
    plan = {
        "name": "parent",
        "steps": [{"id": "child", "kind": "subplan", "plan": child}],
        "output": "${steps.child.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="sub")
    try:

        async def done() -> bool:
            return (await handle.status())["state"] == "completed"

        await wait_for(done, timeout=5)
        assert await handle.result() == {"ok": True}
    finally:
        if (await handle.status())["state"] not in ("completed", "failed"):
            await handle.terminate("stuck subplan")  # the child is terminated with its parent
