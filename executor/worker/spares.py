"""Spare sandbox workers: processes started ahead of the steps that will use them.

Starting a sandbox worker (the launcher, then monty) takes 5-20 ms, and no worker ever serves two steps,
so a step that started its own would pay that every time. The sandbox keeps a few spares instead: each
is a one-worker ``AsyncMonty`` pool whose process was spawned in the background, with a session already
open for the most common checkout (a code step with the default limits). A step takes a spare whole;
once it is done its worker is killed and let go of and a replacement started, a little later and in
one go, off the step's answer path (``Sandbox._retire``).

What a spare is, and is not:

* one process for one step: a spare pool is never put back, and after its step its worker is killed. The
  session opened ahead runs no tenant's code: a step with the same checkout uses it, any other step
  closes it and opens its own (the pool allows exactly those two checkouts);
* no one's data: it was started by the same launcher as any worker (empty environment, no inherited
  descriptors, the ceilings' rlimits) and has run no tenant's code: only the host's own constant
  expression (``Spares._warm_up``: no input, binds no name), which pages the interpreter in so that the
  step's first feed is ~0.35 ms faster; the step that takes it lowers its rlimits to its own budget
  before its code runs (``Sandbox._tighten``, as for a worker started on demand);
* never dead when handed out: before a spare is handed out its process is checked through /proc (not
  exited or exiting, not stopped; where there are no pidfds, also the same process as when it was
  started, a child of this one); one that fails the check is killed and the next one taken, or a
  worker started for the step;
* pinned: each worker handed out comes with a pidfd (and its /proc stat file, open) taken while it
  was known to be this process's live child, so that exactly that process is checked, measured and
  killed (``Worker.kill``: one system call, no round trip to the pool), even if its pid were reused;
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

__all__ = ["Checkout", "Spares", "Worker", "close_pool", "cpu_seconds", "proc_stat", "process_start"]

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


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_DEAD_OR_STOPPED = (b"Z", b"X", b"x", b"T", b"t")


def _fields(text: bytes) -> list[bytes] | None:
    fields = text.rpartition(b")")[2].split()
    return fields if len(fields) > 19 else None


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (``[0]`` is the state), or None if the
    process is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _fields(os.read(fd, 4096))
    except OSError:
        return None
    finally:
        os.close(fd)


def cpu_seconds(fields: list[bytes] | None) -> float | None:
    """User + system CPU seconds from a process's stat fields (None if there are none)."""
    if fields is None:
        return None
    try:
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except ValueError:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), if it is a live, running child of this
    process; None if it is gone, exited (a zombie), stopped or not ours."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    state, ppid, start = fields[0], fields[1], fields[19]
    if state in _DEAD_OR_STOPPED or int(ppid) != os.getpid():
        return None
    return start.decode()


@dataclass
class Worker:
    """A one-worker pool and the session a step uses on it, and its process, pinned (``pin``)."""

    pool: pydantic_monty.AsyncMonty
    session: pydantic_monty.AsyncMontySession
    pid: int | None = None
    pidfd: int | None = None  # a pidfd for the process: kill exactly it, see it exit
    stat_fd: int | None = None  # its /proc/<pid>/stat, open: read again with one system call
    started: str | None = None  # process_start(pid) when pinned (without a pidfd: a reused pid does not match)
    cpu_seen: float | None = None  # CPU seconds used when ``alive`` last looked (an idle worker uses none)

    def pin(self) -> Worker:
        """Open descriptors for the session's process while it is a live, running child of this one
        (checked after they are opened, so they name that child, not a process that took a reused pid).
        Without pidfds (Linux before 5.3, other systems) only ``started`` is kept."""
        self.pid = pid = self.session.worker_pid
        if pid is None:
            return self
        fds: list[int] = []
        try:
            if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
                fds.append(os.pidfd_open(pid))
            fds.append(os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass
        self.started = process_start(pid)
        if self.started is None or len(fds) < 2:
            for fd in fds:
                os.close(fd)
        else:
            self.pidfd, self.stat_fd = fds
        return self

    def alive(self) -> bool:
        """Whether the process is still a live, running child of this one: not exited or exiting, not
        stopped. Read from its stat file (one ``pread`` where it is held open): a killed worker's
        thread-group leader shows as a zombie there before the group can be waited for, so
        ``waitid`` would still call it alive. Notes the CPU it has used (``cpu_seen``)."""
        fields = self._stat()
        if fields is None or fields[0] in _DEAD_OR_STOPPED:
            return False
        if self.stat_fd is None and (fields[19].decode() != self.started or int(fields[1]) != os.getpid()):
            return False  # (unpinned: the pid was reused)
        self.cpu_seen = cpu_seconds(fields)
        return True

    def cpu_seconds(self) -> float | None:
        """CPU seconds the process has used so far (None if it cannot be read, e.g. it is gone)."""
        return cpu_seconds(self._stat())

    def _stat(self) -> list[bytes] | None:
        if self.stat_fd is None:
            return None if self.pid is None or self.started is None else proc_stat(self.pid)
        try:
            return _fields(os.pread(self.stat_fd, 4096, 0))
        except OSError:  # reaped
            return None

    def kill(self) -> bool:
        """SIGKILL the worker now, without a round trip to the pool (whose ``__aexit__`` would kill it
        too, after one). False when there is no pidfd to do it with: then ``close`` must."""
        if self.pidfd is None:
            return False
        with contextlib.suppress(ProcessLookupError):  # (it already exited: a crash, or its deadline)
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        return True

    async def exited(self) -> None:
        """Wait until the process has exited (its pidfd turns readable; at once without a pidfd)."""
        if self.pidfd is None:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(self.pidfd, readable)
        try:
            await done
        finally:
            loop.remove_reader(self.pidfd)

    def drop(self) -> None:
        """Let go of a killed worker: the pool and session are dropped (the pool first: its runtime
        then reaps the dead process at once; dropped the other way round, it reaps it only when the
        next worker starts), the descriptors closed. No await, no message to anyone."""
        del self.pool
        del self.session
        self.forget()

    async def discard(self) -> None:
        """Kill and drop it; without a pidfd, close it (a stopped worker then holds this up until the
        pool's request timeout: it cannot answer)."""
        if self.kill():
            self.drop()
        else:
            await self.close()

    async def close(self, error: BaseException | None = None) -> None:
        """Close the session and the pool (the pool's ``__aexit__`` kills and reaps the worker)."""
        await close_session(self.session, error)
        await close_pool(self.pool)
        self.forget()

    def forget(self) -> None:
        """Close the descriptors (the process is dead or closed by its pool: nothing more to do)."""
        for fd in (self.pidfd, self.stat_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.stat_fd = None


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
        self._ready: collections.deque[Worker] = collections.deque()  # sessions open for ``prepared``
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """Spares started and waiting for a step."""
        return len(self._ready)

    def take_ready(self, checkout: Checkout) -> Worker | None:
        """``take``'s usual case without an await: a live spare already open for ``checkout`` (None
        when the first ready spare is not: then ``take``)."""
        if self._closed or not self._ready or not (checkout is self.prepared or checkout == self.prepared):
            return None
        worker = self._ready[0]
        if not worker.alive():
            return None
        return self._ready.popleft()

    async def take(self, checkout: Checkout) -> Worker:
        """A worker for one step, with an entered session on it for ``checkout``: a live spare's when
        one is ready, else a worker started now. The caller owns it, kills and drops (or closes) it,
        and then calls ``top_up``: starting a process costs this process's event loop ~0.3 ms (the
        fork), which a step should not wait for. Only when no spare was ready are the replacements
        started at once."""
        if self._closed:
            raise RuntimeError("the sandbox's spares are closed")
        while self._ready:
            worker = self._ready.popleft()
            if not worker.alive():
                log.warning("spare sandbox worker %s died or stopped while idle: killed, not used", worker.pid)
                await worker.discard()
                continue
            if checkout != self.prepared:
                # only the warm-up ran in it; the pool allows one more checkout
                await close_session(worker.session)
                worker.cpu_seen = None  # (opening a session uses some)
                try:
                    worker.session = await self._open(worker.pool, checkout)
                except BaseException:
                    worker.forget()  # (_open closed the pool)
                    raise
            return worker
        self.top_up()
        pool = await self._start(1)
        session = await self._open(pool, checkout)
        return Worker(pool, session).pin()

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
        worker = Worker(pool, session).pin()
        if self._closed or not worker.alive():
            await worker.close()
        else:
            self._ready.append(worker)

    async def close(self) -> None:
        """Stop starting spares and close every one held. Spares being started are waited for, not
        cancelled: a pool cancelled half-way could leave its worker to the garbage collector."""
        self._closed = True
        await self.settled()
        while self._ready:
            await self._ready.popleft().close()
