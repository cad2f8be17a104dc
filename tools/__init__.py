"""Tools that plan steps call: the registry, the built-in catalog, and the tenant store."""

from __future__ import annotations

from collections.abc import Iterable as _Iterable
from typing import TYPE_CHECKING, Any

from tools.builtin import builtin_tools
from tools.egress import HttpPolicy
from tools.errors import DatabaseUnavailable, ToolArgumentsError, ToolError, UnknownToolError
from tools.registry import Tool, ToolContext, ToolRegistry, load_tool_modules

if TYPE_CHECKING:
    from tools.store import Store

__all__ = [
    "DatabaseUnavailable",
    "HttpPolicy",
    "Store",
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "UnknownToolError",
    "builtin_tools",
    "default_registry",
    "load_tool_modules",
]


def default_registry(http_policy: HttpPolicy | None = None, extra_modules: _Iterable[str] = ()) -> ToolRegistry:
    """The built-in tools plus those registered by ``extra_modules``.

    ``extra_modules`` are import paths of modules with a ``register(registry)`` function,
    usually ``Settings.tool_modules`` (from ``DURAPLAN_TOOL_MODULES``).
    """
    registry = ToolRegistry(builtin_tools(http_policy))
    load_tool_modules(registry, extra_modules)
    return registry


def __getattr__(name: str) -> Any:
    # The store (sqlite3, the database layer) loads when first named: validating a plan needs only
    # the registry, and `duraplan validate` starts faster without it.
    if name != "Store":
        raise AttributeError(f"module 'tools' has no attribute {name!r}")
    from tools.store import Store

    globals()["Store"] = Store
    return Store
