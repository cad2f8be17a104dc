"""A script survives SIGKILLed workers: killed between two host calls (while it waits for an event)
and during one (a tool in flight). The run completes and every side effect happened once."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from test_worker_kill import _kill_client, _start_worker, _stop, _until

from executor.service.devserver import DevServer
from tools import Store

CODE = """
before = tool('kv.incr', key='before')['value']
go = wait_for_event('go')
charge = tool('test.charge_then_hold', key='charges', release_file=release)
after = tool('kv.incr', key='after')['value']
{'before': before, 'go': go, 'charge': charge, 'after': after}
"""


def _calls(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list(status["steps"][0].get("calls") or [])


async def test_killed_between_and_during_host_calls(dev_server: DevServer, tmp_path: Path) -> None:
    dp, queue, release = _kill_client(dev_server, tmp_path, "script-kill")
    plan = {
        "name": "script-after-crash",
        "steps": [
            {
                "id": "s",
                "kind": "script",
                "code": CODE,
                "inputs": {"release": str(release)},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
            }
        ],
        "output": "${steps.s.output}",
    }
    store = Store(tmp_path / "store.db")
    workers = [_start_worker(dev_server, tmp_path, queue)]
    try:
        handle = await dp.submit_plan(plan, tenant="acme", session="s1")

        async def waiting() -> bool:
            return any(c["kind"] == "wait_for_event" and c["state"] == "waiting" for c in _calls(await handle.status()))

        # Between host calls: the first tool call is done, the script waits for its event.
        await _until(waiting, timeout=60)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=10)
        workers.append(_start_worker(dev_server, tmp_path, queue))
        await handle.send_event("go", {"n": 1}, event_id="go-1")
        # During a host call: the charge has taken effect and its tool is holding.
        await _until(lambda: store.kv_get("acme", "charges"), timeout=60)
        os.killpg(workers[1].pid, signal.SIGKILL)
        workers[1].wait(timeout=10)
        release.touch()
        workers.append(_start_worker(dev_server, tmp_path, queue))
        out = await handle.result(timeout=120)
        status = await handle.status()
        before = await store.kv_get("acme", "before")
    finally:
        store.close()
        _stop(workers)
    assert out["before"] == 1 and out["after"] == 1 and out["go"] == {"n": 1}
    # re-dispatched on the new worker, not a new attempt (a lost worker is not the call's fault)
    assert out["charge"] == {"total": 1, "attempt": 1}, "the in-flight call ran again and did not charge again"
    assert before == 1, "a completed call never runs again"
    calls = _calls(status)
    assert [c["kind"] for c in calls] == ["tool", "wait_for_event", "tool", "tool"]
    assert [c["attempts"] for c in calls] == [1, 1, 1, 1]


ONE_TRY = """
charge = tool('test.charge_then_hold', key='charges', release_file=release)
after = tool('kv.incr', key='after')['value']
{'charge': charge, 'after': after}
"""


async def test_worker_loss_is_not_an_attempt_of_a_host_call(dev_server: DevServer, tmp_path: Path) -> None:
    """As for a tool step (tests/test_worker_kill.py): a worker killed under a script's host call
    is re-dispatched without spending an attempt, so a script allowed one attempt still completes."""
    dp, queue, release = _kill_client(dev_server, tmp_path, "script-kill1")
    plan = {
        "name": "script-one-try",
        "steps": [
            {
                "id": "s",
                "kind": "script",
                "code": ONE_TRY,
                "inputs": {"release": str(release)},
                "retry": {"max_attempts": 1},
            }
        ],
        "output": "${steps.s.output}",
    }
    store = Store(tmp_path / "store.db")
    workers = [_start_worker(dev_server, tmp_path, queue)]
    try:
        handle = await dp.submit_plan(plan, tenant="acme", session="s1")
        await _until(lambda: store.kv_get("acme", "charges"), timeout=60)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=10)
        release.touch()
        workers.append(_start_worker(dev_server, tmp_path, queue))
        out = await handle.result(timeout=120)
        status = await handle.status()
    finally:
        store.close()
        _stop(workers)
    assert out == {"charge": {"total": 1, "attempt": 1}, "after": 1}
    assert [c["attempts"] for c in _calls(status)] == [1, 1]
