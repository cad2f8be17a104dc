"""The engine's control flow and expression scope: how a failure unwinds, what a block can see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor.engine.models import StepError, StepRecord
from schemas.plan import Step

__all__ = ["Drained", "Frame", "StepFailed", "StepsView"]


class StepFailed(Exception):
    """A step failed and its on_error says fail: the run fails (after compensation)."""

    def __init__(self, path: str, error: StepError) -> None:
        super().__init__(f"step {path!r} failed: {error.type}: {error.message}")
        self.path = path
        self.error = error


class Drained(BaseException):
    """Unwinds a block for continue-as-new; BaseException so no step handler swallows it."""


@dataclass(slots=True)
class Frame:
    prefix: str
    visible: dict[str, str]  # step id -> record path
    extras: dict[str, Any] = field(default_factory=dict)

    def child(self, prefix: str, steps: list[Step], **extras: Any) -> Frame:
        visible = dict(self.visible)
        visible.update({s.id: prefix + s.id for s in steps})
        return Frame(prefix, visible, {**self.extras, **extras})


class StepsView(dict[str, Any]):
    """``steps`` in expression scope, built lazily: JMESPath looks fields up with ``.get``."""

    def __init__(self, record: Callable[[str], StepRecord | None], frame: Frame) -> None:
        super().__init__()
        self._record = record
        self._frame = frame

    def get(self, key: str, default: Any = None) -> Any:
        path = self._frame.visible.get(key)
        rec = self._record(path) if path else None
        if rec is None:
            return default
        err = {"type": rec.error.type, "message": rec.error.message} if rec.error else None
        return {"output": rec.output, "status": rec.state, "error": err}

    def __getitem__(self, key: str) -> Any:
        return self.get(key)
