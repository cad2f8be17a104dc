"""Commands imported when they run: the CLI starts in a fraction of a second.

Each sub-app (the MCP server, the planner, evals, tenants) pulls in heavy libraries (the MCP SDK,
litellm, the Temporal client). The root group knows them by name and imports one only when it is
invoked, or when ``--help`` lists it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer.main
from typer._click.core import Command, Context  # typer vendors its own click
from typer.core import TyperGroup

__all__ = ["LAZY_COMMANDS", "LazyCommand", "LazyGroup"]


@dataclass(frozen=True)
class LazyCommand:
    module: str
    app: str = "app"  # the module's typer.Typer
    pick: bool = True  # the app's command of this name (the app adds commands to the root), else the app itself


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "plan": LazyCommand("planner.cli"),
    "chat": LazyCommand("planner.cli"),
    "eval": LazyCommand("evals.cli"),
    "eval-compare": LazyCommand("evals.cli"),
    "tenants": LazyCommand("duraplan.sources_cli", app="tenants_app", pick=False),  # with `tenants source`
    "tools": LazyCommand("duraplan.sources_cli", app="tools_app", pick=False),
    "mcp": LazyCommand("duraplan.mcp_server"),
    "usage": LazyCommand("duraplan.ops_cli"),
    "bulk": LazyCommand("duraplan.ops_cli"),
}


class LazyGroup(TyperGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        spec = LAZY_COMMANDS.get(cmd_name)
        if cmd_name in self.commands or spec is None:
            return super().get_command(ctx, cmd_name)
        sub = getattr(importlib.import_module(spec.module), spec.app)
        # A sub-app stays a group even with one command (`tools list`), as add_typer makes it.
        command: Command = typer.main.get_group(sub) if not spec.pick else typer.main.get_command(sub)
        if spec.pick and isinstance(command, TyperGroup):
            found = command.get_command(ctx, cmd_name)
            if found is None:
                raise RuntimeError(f"{spec.module} has no command {cmd_name!r}")
            command = found
        command.name = cmd_name
        # Converted on its own, a sub-app gets the root's shell-completion options: not here.
        command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
        self.commands[cmd_name] = command
        return command
