"""Validation remembered by plan content: a plan submitted again is not checked again.

Agents submit the same few plans over and over; checking one (parsing, expressions, tool argument
schemas) costs more than starting its run. A valid result is kept per tool registry, keyed by the
sha256 of the plan's canonical JSON and the registry's tool names. Tenant grants are not part of
the key: the tool names the check asked about are kept with the answers it got, and a hit asks
them again (a grant revoked since is seen at once). Only valid plans are kept: an invalid one is
checked in full each time, so its error list is always fresh.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from executor.errors import PlanInvalid
from executor.lang.validate import check_plan
from schemas.plan import Plan

if TYPE_CHECKING:
    from tools.registry import ToolRegistry

__all__ = ["CACHE_SIZE", "clear_validation_cache", "validate_plan_cached"]

CACHE_SIZE = 512
MAX_CACHED_PLAN_CHARS = 256 * 1024


@dataclass(frozen=True)
class _Entry:
    plan: Plan
    grants: tuple[tuple[str, bool], ...]  # (tool name, answer) the check asked and got


class _Cache:
    def __init__(self) -> None:
        # (plan digest, the registry's tool names, whether grants were checked) -> entry
        self.entries: OrderedDict[tuple[str, tuple[str, ...], bool], _Entry] = OrderedDict()


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[object, _Cache] = weakref.WeakKeyDictionary()
_no_registry = _Cache()


def _digest(plan: Any) -> str | None:
    """The cache key of a plan as given, or None for one that is not plain JSON (validation says why):
    nested past the stack (RecursionError) or holding a lone surrogate (UnicodeEncodeError), which
    were 500s from the Python API's callers."""
    if not isinstance(plan, dict):
        return None
    try:
        canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        if len(canonical) > MAX_CACHED_PLAN_CHARS:
            return None  # validated afresh: 512 parsed 2 MiB plans would stay in the API's memory
        return hashlib.sha256(canonical.encode()).hexdigest()
    except (RecursionError, ValueError):  # UnicodeEncodeError is a ValueError
        return None


def validate_plan_cached(
    plan: dict[str, Any] | Plan, *, tools: ToolRegistry | None = None, granted: Callable[[str], bool] | None = None
) -> Plan:
    """``validate_plan``, remembered: the parsed plan, or ``PlanInvalid`` listing every problem.

    The returned ``Plan`` is shared between callers: treat it as read-only."""
    digest = None if isinstance(plan, Plan) else _digest(plan)
    if digest is None:
        parsed, issues = check_plan(plan, tools=tools, granted=granted)
        if issues or parsed is None:
            raise PlanInvalid(issues)
        return parsed
    key = (digest, tuple(tools.names()) if tools is not None else (), granted is not None)
    with _lock:
        cache = _no_registry if tools is None else _by_registry.setdefault(tools, _Cache())
        entry = cache.entries.get(key)
        if entry is not None:
            cache.entries.move_to_end(key)
    if entry is not None and (granted is None or all(granted(name) == answer for name, answer in entry.grants)):
        return entry.plan
    asked: dict[str, bool] = {}

    def recording(name: str) -> bool:
        assert granted is not None
        asked[name] = answer = granted(name)
        return answer

    parsed, issues = check_plan(plan, tools=tools, granted=recording if granted is not None else None)
    if issues or parsed is None:
        raise PlanInvalid(issues)
    with _lock:
        cache.entries[key] = _Entry(parsed, tuple(sorted(asked.items())))
        while len(cache.entries) > CACHE_SIZE:
            cache.entries.popitem(last=False)
    return parsed


def clear_validation_cache() -> None:
    with _lock:
        _by_registry.clear()
        _no_registry.entries.clear()
