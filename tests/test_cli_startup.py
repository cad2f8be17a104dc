"""Everyday commands import what they use: `duraplan validate` loads no MCP SDK, no litellm and no
Temporal client (bench/cli_startup.py reports the times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("mcp", "litellm", "temporalio.client", "evals", "planner")

PROBE = """
import runpy, sys
sys.argv = ["duraplan", *sys.argv[1:]]
try:
    runpy.run_module("duraplan.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print()
print("loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_after(*args: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, check=True
    )
    output, _, loaded = done.stdout.rpartition("\nloaded:")
    return output, [m for m in loaded.strip().split(",") if m]


def test_validate_imports_no_heavy_module(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"name": "x", "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]})
    )
    output, loaded = _loaded_after("validate", str(plan))
    assert output.startswith("valid:"), output
    assert loaded == []


def test_help_lists_the_lazy_commands() -> None:
    output, _ = _loaded_after("--help")
    for name in ("validate", "status", "runs", "events", "plan", "chat", "eval", "eval-compare", "tenants", "mcp"):
        assert f" {name} " in output, name
