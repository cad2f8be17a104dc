"""Plans whose recorded histories are committed in tests/histories and replayed by test_replay.

Re-record after an intentional, versioned change to the interpreter:
``.venv/bin/python tests/replay_plans.py [NAME...]`` (starts its own dev server; only the named
plans when names are given: keep the older histories, they replay the pre-patch branches).

Versions: ``dag_foreach_switch``, ``events_sleep_compensation`` and ``script_host_calls`` were
recorded before the ``status-attribute-waiting`` and ``subplan-child-run-id`` patches;
``subplan_waiting`` after (engine version 1, its end metered by the ``duraplan.meter_run`` local
activity); ``metered_memo`` at engine version 2 (its end in the memo); ``listing_deferred`` at
engine version 5 (no ``running`` upsert when a sleep's end lets the run complete).
"""

from __future__ import annotations

from typing import Any

PLANS: dict[str, tuple[dict[str, Any], dict[str, Any], list[tuple[str, Any]]]] = {
    # name: (plan, inputs, events sent after start)
    "dag_foreach_switch": (
        {
            "name": "replay-dag",
            "steps": [
                {"id": "nums", "kind": "code", "code": "list(range(n))", "inputs": {"n": "${input.n}"}},
                {
                    "id": "loop",
                    "kind": "foreach",
                    "items": "${steps.nums.output}",
                    "max_concurrency": 2,
                    "steps": [
                        {"id": "sq", "kind": "code", "code": "i * i", "inputs": {"i": "${item}"}},
                        {"id": "echo", "kind": "tool", "tool": "debug.echo", "args": {"value": "${steps.sq.output}"}},
                    ],
                    "output": "steps.echo.output.value",
                },
                {
                    "id": "flaky",
                    "kind": "tool",
                    "tool": "debug.flaky",
                    "args": {"fail_times": 1},
                    "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                },
                {
                    "id": "route",
                    "kind": "switch",
                    "cases": [
                        {
                            "when": "length(steps.loop.output) > `2`",
                            "steps": [{"id": "big", "kind": "set", "value": "big"}],
                        }
                    ],
                    "default": [{"id": "small", "kind": "set", "value": "small"}],
                },
                {"id": "skipped", "kind": "set", "value": 1, "when": "input.never"},
                {
                    "id": "bad",
                    "kind": "tool",
                    "tool": "debug.fail",
                    "args": {"message": "nope"},
                    "on_error": "continue",
                },
            ],
            "output": {"loop": "${steps.loop.output}", "route": "${steps.route.output}"},
        },
        {"n": 4},
        [],
    ),
    "events_sleep_compensation": (
        {
            "name": "replay-events",
            "steps": [
                {
                    "id": "hold",
                    "kind": "tool",
                    "tool": "kv.put",
                    "args": {"key": "hold", "value": 1},
                    "compensate": {"tool": "kv.delete", "args": {"key": "hold"}},
                },
                {"id": "nap", "kind": "sleep", "duration": "1s", "depends_on": ["hold"]},
                {
                    "id": "approval",
                    "kind": "wait_for_event",
                    "event": "approval",
                    "timeout": "1h",
                    "depends_on": ["nap"],
                },
                {
                    "id": "deny",
                    "kind": "fail",
                    "message": "denied by ${steps.approval.output.by}",
                    "when": "!(steps.approval.output.ok)",
                },
            ],
        },
        {},
        [("approval", {"ok": False, "by": "ann"})],
    ),
    # The run's open state follows waiting (DuraplanStatus upserts) and the child has its own run id.
    "subplan_waiting": (
        {
            "name": "replay-subplan",
            "steps": [
                {
                    "id": "child",
                    "kind": "subplan",
                    "plan": {"name": "replay-child", "steps": [{"id": "one", "kind": "set", "value": 1}]},
                },
                {"id": "nap", "kind": "sleep", "duration": "200ms", "depends_on": ["child"]},
                {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h", "depends_on": ["nap"]},
            ],
            "output": {"child": "${steps.child.output}", "go": "${steps.go.output}"},
        },
        {},
        [("go", {"ok": True})],
    ),
    "metered_memo": (
        {
            "name": "replay-metered",
            "steps": [
                {"id": "a", "kind": "set", "value": "${input.n}"},
                {
                    "id": "e",
                    "kind": "tool",
                    "tool": "debug.echo",
                    "args": {"value": "${steps.a.output}"},
                    "execution": "local",
                },
            ],
            "output": "${steps.e.output.value}",
        },
        {"n": 7},
        [],
    ),
    # Engine version 5: the run completes right after its sleep, with no `running` upsert between.
    "listing_deferred": (
        {
            "name": "replay-listing-deferred",
            "steps": [
                {"id": "nap", "kind": "sleep", "duration": "200ms"},
                {"id": "fin", "kind": "set", "value": "${input.n}", "depends_on": ["nap"]},
            ],
            "output": "${steps.fin.output}",
        },
        {"n": 3},
        [],
    ),
    "script_host_calls": (
        {
            "name": "replay-script",
            "steps": [
                {
                    "id": "s",
                    "kind": "script",
                    "code": (
                        "tool('kv.put', key='hold', value=1)\n"
                        "compensate('kv.delete', key='hold')\n"
                        "t = now()\n"
                        "r = random()\n"
                        "both = parallel([call('sleep', '1s'), call('tool', 'debug.echo', value=r)])\n"
                        "ok = wait_for_event('approval', timeout='1h')\n"
                        "if not ok['ok']:\n"
                        "    fail('denied by ' + ok['by'], error_type='Denied')\n"
                        "'done'\n"
                    ),
                }
            ],
        },
        {},
        [("approval", {"ok": False, "by": "ann"})],
    ),
}


async def _record(names: list[str]) -> None:
    import contextlib
    import json
    import tempfile
    from pathlib import Path

    from executor import Duraplan, RunFailed, Settings, running_worker
    from executor.service.devserver import DevServer

    out = Path(__file__).with_name("histories")
    with tempfile.TemporaryDirectory() as tmp:
        async with DevServer(tmp, port=0, ui=False, in_memory=True) as server:
            settings = Settings(home=Path(tmp), task_queue="record")
            async with running_worker(server.client, settings):
                dp = Duraplan(server.client, settings)
                for name, (plan, inputs, events) in PLANS.items():
                    if names and name not in names:
                        continue
                    handle = await dp.submit_plan(plan, tenant="replay", session="s", inputs=inputs, run_id=name)
                    for event_type, payload in events:
                        await handle.send_event(event_type, payload)
                    with contextlib.suppress(RunFailed):  # failures are part of what is replayed
                        await handle.result()
                    history = await server.client.get_workflow_handle(handle.workflow_id).fetch_history()
                    (out / f"{name}.json").write_text(json.dumps(history.to_json_dict(), indent=1))
                    print(f"recorded {name}")


if __name__ == "__main__":
    import asyncio
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    asyncio.run(_record(sys.argv[1:]))  # names of the plans to record; all when none
