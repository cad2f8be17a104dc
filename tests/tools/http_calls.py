"""Calling the built-in HTTP tool as a plan step would (arguments checked first): shared by the
HTTP and SSRF tests."""

from __future__ import annotations

from typing import Any

import pytest

from tools import HttpPolicy, Tool, ToolContext, builtin_tools
from tools.errors import ToolError


def tool_named(policy: HttpPolicy, name: str) -> Tool:
    return next(t for t in builtin_tools(policy) if t.name == name)


async def call(policy: HttpPolicy, ctx: ToolContext, **args: Any) -> Any:
    tool = tool_named(policy, "http.request")
    tool.check_args(args)
    return await tool.handler(args, ctx)


async def expect_error(policy: HttpPolicy, ctx: ToolContext, **args: Any) -> ToolError:
    with pytest.raises(ToolError) as info:
        await call(policy, ctx, **args)
    return info.value
