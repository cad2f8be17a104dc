"""Spare sandbox workers: processes started ahead of the steps that will use them.

Starting a sandbox worker (the launcher, then monty) takes 5-20 ms, and no worker ever serves two steps,
so a step that started its own would pay that every time. The sandbox keeps a few spares instead: each
is a one-worker ``AsyncMonty`` pool whose process was spawned in the background, with a session already
open for the most common checkout (a code step with the default limits). A step takes a spare whole,
and kills its worker the moment it is done; the dead worker is let go of, and a replacement started,
a little later, off the step's answer path (``Sandbox._retire``).

What a spare is, and is not:

* one process for one step: a spare pool is never put back, and after its step it is closed. The
  session opened ahead runs no tenant's code: a step with the same checkout uses it, any other step
  closes it and opens its own (the pool allows exactly those two checkouts);
* no one's data: it was started by the same launcher as any worker (empty environment, no inherited
  descriptors, the ceilings' rlimits) and has run no tenant's code: only the host's own constant
  expression (``Spares._warm_up``: no input, binds no name), which pages the interpreter in so that the
  step's first feed is ~0.35 ms faster; the step that takes it lowers its rlimits to its own budget
  before its code runs (``Sandbox._tighten``, as for a worker started on demand);
* never dead when handed out: before a spare is handed out its process is checked through /proc (same
  process as when it was started, a child of this one, not exited, not stopped); one that fails the
  check is closed and the next one taken, or a worker started for the step;
* pinned: each worker handed out comes with a pidfd opened while it was known to be this process's
  live child, so the step's end can kill exactly that process (``Worker.kill``: one system call, no
  round trip to the pool) even if its pid were reused later;
* reaped at shutdown: ``close`` waits for spares being started and closes every one held.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pydantic_monty

__all__ = ["Checkout", "Spare", "Spares", "Worker", "close_pool", "pin", "proc_stat", "process_start"]

log = logging.getLogger(__name__)

WARM_UP = True  # (a switch for benchmarks: bench/code_step.py --variants native+cold)
WARM_UP_CODE = "{'value': [0, 1.5, 'a', None, True]}"  # a literal of each common kind, as a result


@dataclass(frozen=True)
class Checkout:
    """What a session is opened with (``AsyncMonty.checkout``'s arguments)."""

    script_name: str
    limits: pydantic_monty.ResourceLimits
    os_policy: pydantic_monty.OSPolicy

    def open(self, pool: pydantic_monty.AsyncMonty) -> pydantic_monty.AsyncMontySession:
        return pool.checkout(script_name=self.script_name, limits=self.limits, os_policy=self.os_policy)


async def close_pool(pool: pydantic_monty.AsyncMonty) -> None:
    """Close a one-worker pool: its worker, idle or done, is killed and reaped."""
    with contextlib.suppress(Exception):  # a pool that failed half-way has nothing left to close
        await pool.__aexit__(None, None, None)


async def close_session(session: pydantic_monty.AsyncMontySession, error: BaseException | None = None) -> None:
    with contextlib.suppress(Exception):  # a worker that died has nothing to give back
        await session.__aexit__(type(error) if error else None, error, None)


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (``[0]`` is the state), or None if the
    process is gone. Read with two system calls (a step reads it three times on its path)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = text.rpartition(b")")[2].split()
    return fields if len(fields) > 19 else None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), if it is a live, running child of this
    process; None if it is gone, exited (a zombie), stopped or not ours."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    state, ppid, start = fields[0], fields[1], fields[19]
    if state in (b"Z", b"X", b"x", b"T", b"t") or int(ppid) != os.getpid():
        return None
    return start.decode()


def pin(pid: int | None) -> int | None:
    """A pidfd for ``pid`` if it is a live, running child of this process (checked after the descriptor
    is opened, so the descriptor names that child, not a process that took a reused pid); None if it is
    not, or pidfds are not available (Linux before 5.3, other systems)."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if process_start(pid) is None:
        os.close(fd)
        return None
    return fd


@dataclass
class Worker:
    """A one-worker pool and the session a step uses on it. ``pidfd`` (``pin``) names its process."""

    pool: pydantic_monty.AsyncMonty
    session: pydantic_monty.AsyncMontySession
    pidfd: int | None

    def kill(self) -> bool:
        """SIGKILL the worker now, without a round trip to the pool (whose ``__aexit__`` would kill it
        too, after one). False when there is no pidfd to do it with: then ``close`` must."""
        if self.pidfd is None:
            return False
        with contextlib.suppress(ProcessLookupError):  # (it already exited: a crash, or its deadline)
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        return True

    def drop(self) -> None:
        """Let go of a killed worker: the pool and session are dropped (the pool first: its runtime
        then reaps the dead process at once; dropped the other way round, it reaps it only when the
        next worker starts), the pidfd closed. No await, no message to anyone: the process is gone."""
        del self.pool
        del self.session
        self.forget()

    async def close(self, error: BaseException | None = None) -> None:
        """Close the session and the pool (the pool's ``__aexit__`` kills and reaps the worker)."""
        await close_session(self.session, error)
        await close_pool(self.pool)
        self.forget()

    def forget(self) -> None:
        """Close the pidfd (the process is dead or closed by its pool: nothing more to kill)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@dataclass
class Spare:
    worker: Worker  # its session opened for ``Spares.prepared``, only the warm-up run in it
    pid: int
    started: str  # process_start(pid) when it was ready: a pid the kernel reused does not match

    def alive(self) -> bool:
        return process_start(self.pid) == self.started

    async def close(self) -> None:
        await self.worker.close()


class Spares:
    """Up to ``count`` started one-worker pools, each with a session open for ``prepared``.

    ``start(checkouts)`` makes and enters one pool allowing that many checkouts (spawning its worker);
    it raises if the worker cannot be spawned.
    """

    def __init__(
        self, start: Callable[[int], Awaitable[pydantic_monty.AsyncMonty]], prepared: Checkout, count: int
    ) -> None:
        if count < 0:
            raise ValueError(f"spares must be >= 0, got {count}")
        self.count = count
        self.prepared = prepared
        self._start = start
        self._ready: collections.deque[Spare] = collections.deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """Spares started and waiting for a step."""
        return len(self._ready)

    async def take(self, checkout: Checkout) -> Worker:
        """A worker for one step, with an entered session on it for ``checkout``: a live spare's when
        one is ready, else a worker started now. The caller owns it, kills and drops (or closes) it,
        and then calls ``top_up``: starting a process costs this process's event loop ~0.3 ms (the
        fork), which a step should not wait for. Only when no spare was ready are the replacements
        started at once."""
        if self._closed:
            raise RuntimeError("the sandbox's spares are closed")
        while self._ready:
            spare = self._ready.popleft()
            if not spare.alive():
                log.warning("spare sandbox worker %d died while idle: closed, not used", spare.pid)
                await spare.close()
                continue
            worker = spare.worker
            if checkout != self.prepared:
                # only the warm-up ran in it; the pool allows one more checkout
                await close_session(worker.session)
                try:
                    worker.session = await self._open(worker.pool, checkout)
                except BaseException:
                    worker.forget()  # (_open closed the pool)
                    raise
            return worker
        self.top_up()
        pool = await self._start(1)
        session = await self._open(pool, checkout)
        return Worker(pool, session, pin(session.worker_pid))

    @staticmethod
    async def _open(pool: pydantic_monty.AsyncMonty, checkout: Checkout) -> pydantic_monty.AsyncMontySession:
        try:
            session = checkout.open(pool)
            await session.__aenter__()
        except BaseException:
            await close_pool(pool)
            raise
        return session

    @staticmethod
    async def _warm_up(session: pydantic_monty.AsyncMontySession) -> None:
        """Evaluate the host's own constant expression in the spare's session: the worker's parser,
        compiler and interpreter are paged in, so the step's first feed does not pay for that (a code
        step's ``Sandbox.run`` took 0.8 ms without, 0.45 ms with, for the same CPU in its worker: the
        pages are touched either way). The expression binds no name (a REPL session keeps no ``_``)
        and takes no input, so the step's code finds the session as empty as a fresh one."""
        await session.feed_run(WARM_UP_CODE)

    def top_up(self) -> None:
        """Start as many spares as are missing (ready or starting)."""
        if self._closed:
            return
        for _ in range(self.count - len(self._ready) - len(self._starting)):
            task = asyncio.get_running_loop().create_task(self._refill())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def settled(self) -> None:
        """Wait until the spares being started are ready (or failed to start)."""
        while self._starting:
            await asyncio.wait(set(self._starting))  # (not gather: a cancelled wait must not cancel them)

    async def _refill(self) -> None:
        try:
            pool = await self._start(2)
            session = await self._open(pool, self.prepared)
            if WARM_UP:
                try:
                    await self._warm_up(session)
                except BaseException:
                    await close_session(session)
                    await close_pool(pool)
                    raise
        except Exception as exc:  # the next take starts its own worker, and reports why it cannot
            log.warning("could not start a spare sandbox worker: %s", exc)
            return
        pid = session.worker_pid
        worker = Worker(pool, session, pin(pid))
        spare = Spare(worker, pid or 0, (process_start(pid) if pid else None) or "")
        if self._closed or not spare.alive():
            await spare.close()
        else:
            self._ready.append(spare)

    async def close(self) -> None:
        """Stop starting spares and close every one held. Spares being started are waited for, not
        cancelled: a pool cancelled half-way could leave its worker to the garbage collector."""
        self._closed = True
        await self.settled()
        while self._ready:
            await self._ready.popleft().close()
