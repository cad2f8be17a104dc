import json
import pytest
from .conftest import wait_for
from executor.errors import *

PLAN = {"name": "p", "steps": [{"id": "a", "kind": "set", "value": "${input.x}"}], "output": "${steps.a.output}"}

async def test_idem(dp, tenant):
    h = await dp.submit_plan(PLAN, tenant=tenant, session="s", inputs={"x": 1}, run_id="r1")
    print(await h.result())
    try:
        h2 = await dp.submit_plan(PLAN, tenant=tenant, session="s", inputs={"x": 1}, run_id="r1")
        print("same ok", h2)
    except Exception as e:
        print("same:", repr(e))
    try:
        h3 = await h.restart()
        print("restart", await h3.result(), (await h3.status())["generation"])
    except Exception as e:
        print("restart:", repr(e))

async def test_maxpar(dp, tenant):
    plan = {"name": "p", "limits": {"max_parallel": 1}, "steps": [
        {"id": "a", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": 0.5}},
        {"id": "b", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": 0.5}}]}
    h = await dp.submit_plan(plan, tenant=tenant, session="s")
    await h.result()
    for s in (await h.status())["steps"]:
        print(s["id"], s["started_at"], s["ended_at"])

async def test_localtimeout(dp, tenant):
    plan = {"name": "p", "steps": [
        {"id": "a", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": 3}, "timeout": "1s", "execution": "local", "retry": {"max_attempts": 1}}]}
    h = await dp.submit_plan(plan, tenant=tenant, session="s")
    try:
        await h.result()
    except RunFailed as e:
        print("local timeout", e, e.status, e.details)

async def test_subnone(dp, tenant):
    plan = {"name": "p", "steps": [
        {"id": "a", "kind": "subplan", "plan": {"name": "c", "steps": [{"id": "x", "kind": "tool", "tool": "debug.echo", "args": {"v": None}}], "output": "${steps.x.output}"}}], "output": "${steps.a.output}"}
    h = await dp.submit_plan(plan, tenant=tenant, session="s")
    try:
        print("subnone", await h.result())
    except RunFailed as e:
        print("subnone fail", e, e.details)
