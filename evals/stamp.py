"""Stamps authored recordings with the hash of the prompts today's planner sends for each answer.

Captured recordings carry the hash of the request they answered (``record`` mode), so replay can
report prompt drift. Authored ones were written by hand against no request; stamping them with
today's hashes (``make eval-baseline`` does) makes a later change of the planner's prompts show up
as drift in their replays too. Captured recordings are never stamped: that would hide real drift.

    python -m evals.stamp evals/datasets/starter.yaml authored [gamed ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from evals.dataset import Case, load_dataset
from evals.recording import Recording, RecordingMissing, ReplayModel, recording_path
from evals.runner import DEFAULT_RECORDINGS
from evals.scripted import catalog_registry
from planner.core import plan_goal
from planner.errors import PlannerError

__all__ = ["stamp"]


async def _stamp_one(case: Case, path: Path, model: str) -> bool:
    try:
        recording = Recording.load(path)
    except RecordingMissing:
        return False
    if not recording.authored:
        return False
    replay = ReplayModel(recording.planner, model, f"case {case.id!r}")
    # a flawed answer on purpose may end planning early: the answers it did use are stamped
    with contextlib.suppress(PlannerError, RecordingMissing):
        await plan_goal(
            case.goal, tools=catalog_registry(case), model=model, max_attempts=case.max_attempts, completion=replay
        )
    changed = False
    for answer, digest in zip(recording.planner, replay.digests, strict=False):
        changed |= answer.prompt_sha256 != digest
        answer.prompt_sha256 = digest
    if changed:
        recording.dump(path)
    return changed


async def stamp(dataset_path: Path, models: list[str], root: Path = DEFAULT_RECORDINGS) -> int:
    """Stamp every authored recording of ``models``; returns how many files changed."""
    import litellm

    litellm.suppress_debug_info = True  # no provider-help banner per recorded model name
    dataset = load_dataset(dataset_path)
    changed = 0
    for model in models:
        for case in dataset.cases:
            changed += await _stamp_one(case, recording_path(root, dataset.name, model, case.id), model)
    return changed


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m evals.stamp DATASET MODEL [MODEL ...]")
    count = asyncio.run(stamp(Path(sys.argv[1]), sys.argv[2:]))
    print(f"stamped {count} recording(s)")
