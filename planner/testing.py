"""A scripted stand-in for ``litellm.acompletion``: replays answers, records calls, fails loudly.

    model = ScriptedModel('{"name": ...}', RateLimitError(...), {"name": ...})
    with model:                                  # on exit: every scripted answer was used
        result = await plan_goal(goal, tools=registry, completion=model)
    assert "unknown tool" in model.calls[1].messages[-1]["content"]

Answers are strings (the message content), dicts (dumped as JSON) or exceptions (raised). A call
beyond the script raises ``ScriptError`` (an ``AssertionError``) and is remembered, so the test
fails even if the code under test swallowed it. Responses are real ``litellm.ModelResponse``s
with usage, so litellm's cost functions work on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["Call", "ScriptError", "ScriptedModel"]


class ScriptError(AssertionError):
    """The code under test called the model more (or less) than the script says."""


@dataclass
class Call:
    messages: list[dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def last_user_message(self) -> str:
        return next((str(m.get("content", "")) for m in reversed(self.messages) if m.get("role") == "user"), "")


class ScriptedModel:
    def __init__(self, *answers: str | Mapping[str, Any] | BaseException, usage: tuple[int, int] | None = None) -> None:
        """``usage``: (prompt, completion) tokens per answer; estimated from the text (4 chars a token) if None."""
        self._answers: list[str | Mapping[str, Any] | BaseException] = list(answers)
        self._usage = usage
        self.calls: list[Call] = []
        self.unexpected: list[Call] = []

    @property
    def remaining(self) -> int:
        return len(self._answers)

    def add(self, *answers: str | Mapping[str, Any] | BaseException) -> ScriptedModel:
        self._answers.extend(answers)
        return self

    async def __call__(self, **kwargs: Any) -> Any:
        messages = [dict(m) for m in kwargs.get("messages", [])]
        call = Call(messages, {k: v for k, v in kwargs.items() if k != "messages"})
        if not self._answers:
            self.unexpected.append(call)
            last = call.last_user_message[:200]
            raise ScriptError(
                f"ScriptedModel: unexpected call #{len(self.calls) + len(self.unexpected)} "
                f"(all {len(self.calls)} scripted answer(s) used); last user message: {last!r}"
            )
        self.calls.append(call)
        answer = self._answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return self._response(text, str(kwargs.get("model", "scripted")), messages)

    def _response(self, text: str, model: str, messages: list[dict[str, Any]]) -> Any:
        from planner.provider import text_response

        if self._usage is not None:
            prompt, completion = self._usage
        else:
            prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
            completion = len(text) // 4 + 1
        return text_response(text, model, prompt, completion)

    def assert_all_consumed(self) -> None:
        """Raise ``ScriptError`` if answers are left over or a call came beyond the script."""
        problems = []
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected call(s) beyond the script")
        if self._answers:
            problems.append(f"{len(self._answers)} scripted answer(s) never requested: {self._answers!r:.300}")
        if problems:
            raise ScriptError("ScriptedModel: " + "; ".join(problems))

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.assert_all_consumed()

    async def __aenter__(self) -> ScriptedModel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
