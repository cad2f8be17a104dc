"""A worker SIGKILLed while a compensation is in flight: a new worker finishes the saga, the undo
took effect once, the lost worker cost it no attempt, and the run ends compensated (failed, with
no compensation error)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_worker_kill import _kill_client, _start_worker, _stop, _until

from executor import RunFailed
from executor.service.devserver import DevServer
from tools import Store


async def test_killed_mid_compensation_undoes_once(dev_server: DevServer, tmp_path: Path) -> None:
    dp, queue, release = _kill_client(dev_server, tmp_path, "saga-kill")
    plan = {
        "name": "saga-after-crash",
        "steps": [
            {
                "id": "book",
                "kind": "tool",
                "tool": "kv.incr",
                "args": {"key": "booked"},
                "compensate": {
                    "tool": "test.charge_then_hold",
                    "args": {"key": "unbooked", "release_file": str(release), "attempt_key": "undo_attempt"},
                },
            },
            {"id": "boom", "kind": "fail", "message": "no seats", "depends_on": ["book"]},
        ],
    }
    store = Store(tmp_path / "store.db")
    workers = [_start_worker(dev_server, tmp_path, queue)]
    try:
        handle = await dp.submit_plan(plan, tenant="acme", session="s1")
        # The undo has taken effect and holds: kill the worker mid-compensation.
        await _until(lambda: store.kv_get("acme", "unbooked"), timeout=60)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=10)
        release.touch()
        workers.append(_start_worker(dev_server, tmp_path, queue))
        with pytest.raises(RunFailed):
            await handle.result(timeout=120)
        status = await handle.status()
        assert status["state"] == "failed", status
        book = next(s for s in status["steps"] if s["id"] == "book")
        assert book["state"] == "compensated", book
        assert not status.get("compensation_errors"), status
        assert await store.kv_get("acme", "booked") == 1
        assert await store.kv_get("acme", "unbooked") == 1, "the undo ran twice"
        # re-dispatched on the new worker, not a new attempt (a lost worker is not the undo's fault)
        assert await store.kv_get("acme", "undo_attempt") == 1
    finally:
        store.close()
        _stop(workers)
