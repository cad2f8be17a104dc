"""What a check says (pass / fail / skip, with a reason), and what one world's run gave it to judge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evals.trace import TraceCall

__all__ = ["Check", "Status", "WorldRun", "in_worlds"]

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


def in_worlds(failures: list[tuple[str, str]], worlds: int) -> str:
    """Failures as one detail: one world's as they are, several prefixed by their world's name."""
    if worlds == 1:
        return "; ".join(f for _, f in failures)
    return "; ".join(f"[{name}] {f}" for name, f in failures)
