"""Recordings of a model's answers, per case, so an eval replays offline and deterministically.

``evals/recordings/<dataset>/<model>/<case>.yaml`` holds the planner's answers in order (and the
judge's, when one was asked), each with its usage, cost and latency. ``record`` mode writes them
from live calls; ``replay`` mode answers from them and never reaches a provider. Recordings
written by hand (``authored: true``) say so, and say what flaw, if any, they carry on purpose.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.provider import text_response, usage_of

__all__ = [
    "RecordedAnswer",
    "Recorder",
    "Recording",
    "RecordingMissing",
    "ReplayModel",
    "model_slug",
    "prompt_digest",
    "recording_path",
]


class RecordingMissing(LookupError):
    """Replay asked for an answer the recording does not have."""


class RecordedAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    # sha256 of the request messages when recorded live: replay notes prompt drift (a changed planner)
    prompt_sha256: str | None = None
    flaw: str | None = Field(default=None, description="Authored recordings: the mistake this answer makes on purpose.")


class Recording(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str
    model: str
    authored: bool = Field(default=False, description="Written by hand, not captured from a provider.")
    note: str | None = None
    recorded_at: str | None = None
    planner: list[RecordedAnswer] = Field(default_factory=list)
    judge: RecordedAnswer | None = None

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json", exclude_none=True)
        path.write_text(yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=120))

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()))
        except FileNotFoundError:
            raise RecordingMissing(f"no recording at {path}; run with --record first") from None
        except (yaml.YAMLError, ValidationError) as exc:
            raise RecordingMissing(f"{path}: not a valid recording: {exc}") from None


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (answers are JSON documents) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def model_slug(model: str) -> str:
    """A model name as a directory name: ``openai/gpt-4o-mini`` -> ``openai__gpt-4o-mini``."""
    return model.replace("/", "__").replace(":", "_")


def recording_path(root: Path, dataset: str, model: str, case: str) -> Path:
    return root / dataset / model_slug(model) / f"{case}.yaml"


def prompt_digest(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReplayModel:
    """A ``litellm.acompletion`` stand-in answering from a list of recorded answers, in order."""

    def __init__(self, answers: list[RecordedAnswer], model: str, what: str) -> None:
        self._answers = list(answers)
        self._model = model
        self._what = what
        self.used: list[RecordedAnswer] = []
        self.drift = 0  # answers whose recorded request differs from today's
        self.unhashed = 0  # answers recorded without a request hash: drift cannot be told
        self.digests: list[str] = []  # today's request hashes, in order (to stamp a recording)

    async def __call__(self, **kwargs: Any) -> Any:
        if not self._answers:
            raise RecordingMissing(
                f"{self._what}: the recording has {len(self.used)} answer(s); a call asked for one more"
            )
        answer = self._answers.pop(0)
        self.used.append(answer)
        digest = prompt_digest(list(kwargs.get("messages", [])))
        self.digests.append(digest)
        if answer.prompt_sha256 is None:
            self.unhashed += 1
        elif answer.prompt_sha256 != digest:
            self.drift += 1
        # the recorded cost, not today's price
        return text_response(
            answer.content, self._model, answer.prompt_tokens, answer.completion_tokens, cost_usd=answer.cost_usd
        )


class Recorder:
    """Wraps a completion function; keeps each answer with its usage, cost and latency."""

    def __init__(self, completion: Callable[..., Awaitable[Any]]) -> None:
        self._completion = completion
        self.answers: list[RecordedAnswer] = []

    async def __call__(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        response = await self._completion(**kwargs)
        latency = (time.perf_counter() - started) * 1000
        usage = usage_of(response, str(kwargs.get("model", "")))
        try:
            content = response.choices[0].message.content or ""
        except (AttributeError, IndexError):
            content = ""
        self.answers.append(
            RecordedAnswer(
                content=str(content),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=usage.cost_usd,
                latency_ms=round(latency, 1),
                prompt_sha256=prompt_digest(list(kwargs.get("messages", []))),
            )
        )
        return response
