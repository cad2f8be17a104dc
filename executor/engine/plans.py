"""Parsed plans shared by the runs of one worker.

Thousands of runs of one plan each held their own parsed ``Plan`` and their own decoded plan JSON:
a waiting run's largest part after the SDK's own. Runs with the same plan hash and an equal plan
body share one of each instead. Safe to share because the plan model is frozen (no run changes
its plan; a revision is parsed apart) and deterministic because the parse is a pure function of
the body, which is compared in full, so a wrong or forged hash only misses the cache. The module
is passed through the workflow sandbox, so the cache is one per worker process.
"""

from __future__ import annotations

from typing import Any

from schemas.plan import Plan

__all__ = ["MAX_SHARED_PLANS", "shared_names", "shared_plan"]

MAX_SHARED_PLANS = 512  # distinct plans kept; past it the cache starts over (runs keep theirs)

_parsed: dict[str, tuple[dict[str, Any], Plan]] = {}
_names: dict[tuple[str, ...], tuple[list[str], frozenset[str]]] = {}


def shared_plan(digest: str, body: dict[str, Any]) -> tuple[dict[str, Any], Plan]:
    """``(body, parsed)``: the body and model already held for an equal plan, else ``body`` parsed."""
    hit = _parsed.get(digest)
    if hit is not None and hit[0] == body:
        return hit
    entry = (body, Plan.model_validate(body))
    if len(_parsed) >= MAX_SHARED_PLANS:
        _parsed.clear()
    _parsed[digest] = entry
    return entry


def shared_names(names: list[str]) -> tuple[list[str], frozenset[str]]:
    """``(names, as a set)`` already held for an equal list (a run's local tools: the same few
    names in every run of a worker), else ``names`` and a new set. The list is passed on (to
    children and continue-as-new), never changed."""
    key = tuple(names)
    hit = _names.get(key)
    if hit is None:
        if len(_names) >= MAX_SHARED_PLANS:
            _names.clear()
        hit = _names[key] = (names, frozenset(key))
    return hit
