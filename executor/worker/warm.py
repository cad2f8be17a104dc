"""Warm script sessions: a sandbox session kept suspended at its last host call, so the script's
next segment on this worker resumes it in place instead of loading its snapshot into a new one.

Only a cache: the snapshot carried in history stays the truth. An entry is used only by a segment
that brings exactly the snapshot the session is suspended at (same run, step and call), so a
retried or re-routed segment, or one after a crash, takes the cold path (load the snapshot). One
session is kept per worker process, for a short idle time, and only after calls whose answer comes
back at once (tool, llm, now, random, compensate): a sleeping or waiting script holds no worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = ["WarmEntry", "WarmSessions"]


@dataclass
class WarmEntry:
    context: Any  # the entered ``Sandbox.session(...)`` context manager
    snap: Any  # the pydantic_monty.AsyncFunctionSnapshot it is suspended at
    snapshot: str  # the encoded dump of that state, as carried in history


class WarmSessions:
    def __init__(self, idle_seconds: float = 2.0) -> None:
        self.idle_seconds = idle_seconds
        self._entries: dict[str, WarmEntry] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.hits = 0
        self.misses = 0

    def take(self, key: str, snapshot: str | None) -> WarmEntry | None:
        """The session suspended exactly at ``snapshot``, removed from the cache; None otherwise."""
        entry = self._entries.get(key)
        if entry is None or snapshot is None or entry.snapshot != snapshot:
            self.misses += 1
            return None
        self.hits += 1
        self._forget(key)
        return entry

    async def put(self, key: str, entry: WarmEntry) -> None:
        await self.close_all()  # one warm session per worker process: it holds a sandbox worker
        self._entries[key] = entry
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self.idle_seconds, lambda: asyncio.ensure_future(self._expire(key, entry)))

    async def close_all(self) -> None:
        for key in list(self._entries):
            entry = self._entries[key]
            self._forget(key)
            await close(entry)

    async def _expire(self, key: str, entry: WarmEntry) -> None:
        if self._entries.get(key) is entry:
            self._forget(key)
            await close(entry)

    def _forget(self, key: str) -> None:
        self._entries.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()


async def close(entry: WarmEntry, exc: BaseException | None = None) -> None:
    """Give the session's worker back to the pool (a worker that died is replaced by it)."""
    with contextlib.suppress(Exception):
        await entry.context.__aexit__(type(exc) if exc else None, exc, None)
