"""What a check says (pass / fail / skip, with a reason), and what one world's run gave it to judge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evals.trace import TraceCall

__all__ = ["Check", "Status", "WorldRun"]

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str = ""


@dataclass
class WorldRun:
    """The plan's run in one world: how it ended, its output, and the tool calls it made."""

    name: str
    state: str | None
    output: Any = None
    error: str | None = None
    trace: list[TraceCall] = field(default_factory=list)
