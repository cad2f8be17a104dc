"""Registry lookups and loading deployment tool modules (DURAPLAN_TOOL_MODULES)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tools import (
    ToolContext,
    ToolRegistry,
    UnknownToolError,
    builtin_tools,
    default_registry,
    load_tool_modules,
)

PLUGIN = """
from tools import Tool

async def shout(args, ctx):
    return {"text": args["text"].upper(), "tenant": ctx.tenant}

def register(registry):
    registry.register(Tool(
        name="{name}",
        description="Upper-case text.",
        args_schema={
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Text."}},
            "required": ["text"],
            "additionalProperties": False,
        },
        handler=shout,
    ))
"""


def plugin(tool_name: str) -> str:
    return PLUGIN.replace("{name}", tool_name)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def test_unknown_tool() -> None:
    registry = default_registry()
    assert "http.request" in registry
    assert "nope" not in registry
    with pytest.raises(UnknownToolError) as info:
        registry.get("nope")
    assert (info.value.retryable, info.value.error_type) == (False, "UnknownToolError")


def test_duplicate_registration_is_refused() -> None:
    tool = builtin_tools()[0]
    registry = ToolRegistry([tool])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(tool)


async def test_load_tool_module(plugin_dir: Path, make_ctx: Callable[..., ToolContext]) -> None:
    module = write_module(plugin_dir, "duraplan_test_plugin_ok", plugin("acme.shout"))
    registry = default_registry(extra_modules=[module])
    tool = registry.get("acme.shout")
    assert "http.request" in registry  # built-ins are still there
    assert await tool.handler({"text": "hi"}, make_ctx()) == {"text": "HI", "tenant": "acme"}


def test_load_tool_modules_errors(plugin_dir: Path) -> None:
    registry = ToolRegistry()
    with pytest.raises(ModuleNotFoundError):
        load_tool_modules(registry, ["duraplan_test_plugin_missing"])

    no_register = write_module(plugin_dir, "duraplan_test_plugin_noreg", "X = 1\n")
    with pytest.raises(ValueError, match="has no register"):
        load_tool_modules(registry, [no_register])

    not_callable = write_module(plugin_dir, "duraplan_test_plugin_notcallable", "register = 1\n")
    with pytest.raises(ValueError, match="has no register"):
        load_tool_modules(registry, [not_callable])

    # A plugin that tries to replace a built-in is refused rather than silently shadowing it.
    clash = write_module(plugin_dir, "duraplan_test_plugin_clash", plugin("kv.get"))
    with pytest.raises(ValueError, match="already registered"):
        default_registry(extra_modules=[clash])

    bad_name = write_module(plugin_dir, "duraplan_test_plugin_badname", plugin("Bad"))
    with pytest.raises(ValueError, match="does not match"):
        load_tool_modules(registry, [bad_name])
