"""A tool's error text that is not Unicode (a lone surrogate, as JSON's "\\ud800" from an MCP
server's error parses) fails its step with the tool's own error, once.

Found by probing: bounding the message (its UTF-8 bytes) raised UnicodeEncodeError inside the
activity's error handling, so the step failed as a retryable UnicodeEncodeError instead: a tool
error its server marked not retryable was called again, twice more."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.engine.limits import bounded_text
from executor.service.devserver import DevServer
from tools import Tool, ToolContext, ToolError, default_registry

calls: list[int] = []


async def _refuses(args: dict[str, Any], ctx: ToolContext) -> Any:
    calls.append(ctx.attempt)
    raise ToolError("order \ud800 refused", retryable=False, error_type="OrderRefused")


def test_bounded_text_takes_any_str() -> None:
    assert bounded_text("a\ud800b") == "a\ufffdb"
    assert bounded_text("\ud800" * 100, 70).endswith("more bytes cut]")


async def test_a_tool_error_that_is_not_unicode_fails_once_with_its_type(dev_server: DevServer, tmp_path: Path) -> None:
    registry = default_registry()
    registry.register(Tool("shop.order", "refuses", {"type": "object"}, _refuses))
    settings = Settings(home=tmp_path, task_queue=f"text-{uuid.uuid4().hex[:8]}")
    step = {"id": "o", "kind": "tool", "tool": "shop.order", "args": {}, "retry": {"max_attempts": 3}}
    async with running_worker(dev_server.client, settings, registry=registry):
        dp = Duraplan(dev_server.client, settings, registry)
        handle = await dp.submit_plan({"name": "t", "steps": [step]}, tenant="acme", session="s")
        try:
            await handle.result()
        except RunFailed as exc:
            failure = str(exc)
        status = await handle.status()
    assert calls == [1], "not retried"
    assert "OrderRefused: order \ufffd refused" in failure, failure
    assert status.steps[0].error.type == "OrderRefused"
