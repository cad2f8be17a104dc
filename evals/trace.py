"""The trace of a run: every tool call the engine actually made, in order, as the tool saw it.

Evaluators judge what a plan did from this, not what it names: a tool in the plan that never ran,
or ran with placeholder arguments, does not count as having done its work.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["TraceCall", "step_id_of"]


class TraceCall(BaseModel):
    """One tool call as executed: arguments after rendering, the engine's attempt number, and what
    the scripted tool answered (``result``) or raised (``error``)."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    tool: str
    args: dict[str, Any]
    attempt: int
    step: str  # the step path: ``notify``, ``each[2].send``, ``undo#compensate``
    ok: bool
    result: Any = None
    error: str | None = None

    @property
    def effect(self) -> str:
        """The call without its retries: one per step path (a loop's items are distinct paths)."""
        return self.step


_INDEX = re.compile(r"\[\d+\]")


def step_id_of(path: str) -> str:
    """The plan step id a call's step path ends in (ids are unique across a plan)."""
    return _INDEX.sub("", path.split("#", 1)[0]).rsplit(".", 1)[-1]
