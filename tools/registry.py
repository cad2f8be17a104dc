"""The tool registry: named tools with JSON-Schema'd arguments, looked up by plans.

A tool is an async function ``handler(args, ctx)``. The registry validates arguments against the
tool's schema before the call, both at plan validation (for literal arguments) and at dispatch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from executor.lang.json_schema import schema_problem, validator
from tools.errors import ToolArgumentsError, UnknownToolError

if TYPE_CHECKING:
    from tools.egress import HttpPolicy
    from tools.store import Store

__all__ = [
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolContext",
    "ToolHandler",
    "ToolRegistry",
    "load_tool_modules",
]

# Lower-case dotted names ("http.request", "kv.get"): plans refer to tools by these.
TOOL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


@dataclass(frozen=True)
class ToolContext:
    """What a tool knows about the call. Nothing here comes from the plan's author."""

    tenant: str
    run_id: str
    step_path: str
    attempt: int
    # Stable across retries and re-runs of the same step (run, step, loop index):
    # side-effecting tools use it so an effect happens once.
    idempotency_key: str
    store: Store
    # The calling tenant's egress policy when tenancy is enforced; HTTP tools use it over their own.
    http_policy: HttpPolicy | None = None


ToolHandler = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_schema: dict[str, Any]
    handler: ToolHandler
    side_effects: bool = False
    # Short and bounded: may run as a Temporal local activity (no extra server round trip).
    local: bool = True
    # False for tools that store or reshape their arguments (kv.*, transform): a secret in them
    # would escape redaction (stored, reversed, sliced), so the activity refuses it.
    accepts_secrets: bool = True
    # A schema already known to be valid JSON Schema (the built-in tools': a test checks them) is
    # not checked again: checking one against the metaschema costs ~1.5 ms, and every CLI start and
    # worker builds the whole catalog.
    trusted_schema: bool = field(default=False, repr=False, compare=False, kw_only=True)
    _validator: jsonschema.Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not TOOL_NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"tool name {self.name!r} does not match {TOOL_NAME_PATTERN.pattern}")
        if not self.trusted_schema:  # a source's schema is remote data: no fetching $refs, no endless cycles
            problem = schema_problem(self.args_schema)
            if problem is not None:
                where, message = problem
                raise ValueError(f"tool {self.name!r}: args_schema{where or ''} is not usable: {message}")
        object.__setattr__(self, "_validator", validator(self.args_schema))

    def argument_errors(self, args: dict[str, Any]) -> list[tuple[str, str]]:
        """(JSON pointer inside args, message) for each schema violation."""
        out = []
        for err in sorted(self._validator.iter_errors(args), key=lambda e: list(e.path)):
            pointer = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in err.path)
            out.append((pointer, err.message))
        return out

    def check_args(self, args: dict[str, Any]) -> None:
        errors = self.argument_errors(args)
        if errors:
            detail = "; ".join(f"{p or '/'}: {m}" for p, m in errors)
            raise ToolArgumentsError(f"tool {self.name!r} arguments invalid: {detail}")


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._local: tuple[str, ...] | None = None
        for t in tools:
            self.register(t)

    def register(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        self._local = None
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def local_names(self) -> list[str]:
        """The tools that may run as local activities, sorted: what every run's input lists.
        Kept until the next ``register`` (every start asked each tool again)."""
        if self._local is None:
            self._local = tuple(n for n in self.names() if self._tools[n].local)
        return list(self._local)

    def catalog(self) -> list[dict[str, Any]]:
        """Names, descriptions and argument schemas, e.g. for a planner's prompt."""
        return [
            {
                "name": t.name,
                "description": t.description,
                "args_schema": t.args_schema,
                "side_effects": t.side_effects,
            }
            for t in (self._tools[n] for n in self.names())
        ]


def load_tool_modules(registry: ToolRegistry, modules: Iterable[str]) -> None:
    """Import modules that define ``register(registry)``: how deployments add their own tools."""
    for name in modules:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(f"tool module {name!r} has no register(registry) function")
        register(registry)
