"""The layers hold at import time: the engine loads no service, worker, tenancy or interface code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ABOVE_THE_ENGINE = ("duraplan", "evals", "planner", "executor.service", "executor.worker", "tools", "litellm", "mcp")


@pytest.mark.parametrize("module", ["executor.engine", "executor.engine.workflow", "executor.lang.validate"])
def test_importing_the_engine_loads_nothing_above_it(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = json.loads(out)
    above = [m for m in loaded if (m + ".").startswith(tuple(p + "." for p in ABOVE_THE_ENGINE))]
    assert above == [], f"{module} imports {above}"
