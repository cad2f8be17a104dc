"""The code-step sandbox: pydantic-monty, a Python interpreter in Rust, in subprocesses of its own.

Monty has no filesystem, network or environment access; limits on memory, time, recursion, sleeping and
printed output are enforced in the worker process, and a parent-side deadline kills a worker that ignores
them. Around that, defence in depth at the OS level:

* Workers start through a launcher (executor/worker/launcher.py: a small native program exec'd directly, or
  a shell script where no C compiler is found), written to a private temporary directory when the sandbox
  starts, that execs the real ``monty`` binary with an empty environment, no inherited descriptors beyond
  stdin/stdout/stderr, ``SIGXFSZ`` ignored, and rlimits: address space, CPU seconds, open files, no
  file writes (``RLIMIT_FSIZE`` 0), no core dumps, optionally processes. Those are ceilings for any step;
  when a worker is checked out for a step its address-space and CPU limits are lowered, hard, to that
  step's own budget (``prlimit`` on the worker's pid) before the step's code runs, so a small step cannot
  grow its worker to the ceiling.
* Every step gets a fresh session on a fresh worker, which serves that step only and is killed after it:
  no state survives between steps or tenants, and whatever a step did to its worker's process dies with it.
  So that a step does not wait for its worker to start, a few spare workers are started ahead, in the
  background (executor/worker/spares.py): each is handed to one step, and taking one starts the next.
  Both the kill and the replacement's start wait ``REFILL_DELAY_S`` (20 ms), off the step's answer path;
  meanwhile the worker is idle, its step's code returned (``Sandbox._retire``). After an error or a
  cancellation, when its code may still run, it is killed at once.
* A worker that crashes or hangs fails only its own step (``SandboxCrashed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import resource
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pydantic_monty

from executor.worker.launcher import LAUNCHER_NAME, LauncherKind, launcher_kind, write_launcher
from executor.worker.spares import Checkout, Spares, Worker
from executor.worker.warm import WarmSessions

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "WorkerLimits",
    "find_monty_binary",
    "sandbox_error",
    "write_launcher",
]

_EXC_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt))\b")
_MB = 1024 * 1024
REFILL_DELAY_S = 0.02  # after a step, before its worker is killed and its spare replaced (Sandbox._retire)
_MAX_DONE = 64  # finished steps' workers held for the refill at most (each holds a pool and two descriptors)

# Address space a worker needs beyond its heap: the binary, thread stacks and allocator arenas (an idle
# worker maps ~116 MB and peaks at ~180 MB while starting), plus a copy of the result while it is
# serialised for the host. Measured with monty 1.4: a heap of M MB peaks at ~116 MB + 1.05 * M.
_ADDRESS_SPACE_BASE_MB = 256
_ADDRESS_SPACE_PER_HEAP_MB = 2


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 64
    cpu_seconds: float = 5.0
    max_recursion: int = 200


@dataclass(frozen=True)
class WorkerLimits:
    """OS limits every worker process starts with: ceilings over all steps.

    The defaults cover the largest step a plan may ask for (``memory_mb`` <= 1024, ``cpu_seconds`` <= 300);
    each step then lowers its own worker's address space and CPU time to what its limits need.
    """

    address_space_mb: int = _ADDRESS_SPACE_BASE_MB + _ADDRESS_SPACE_PER_HEAP_MB * 1024
    cpu_seconds: int = 310
    open_files: int = 16
    processes: int | None = None
    """RLIMIT_NPROC. Off by default: Linux counts it per real user id, across the host's own processes and
    threads, and does not enforce it for root, so a fixed value is either meaningless or starves the worker
    (monty cannot start processes anyway). Set it when workers run as a dedicated user."""

    def rlimits(self) -> dict[str, int]:
        """RLIMIT name -> value (soft = hard), each capped at the host's own hard limit (which a child
        cannot raise)."""
        wanted = {
            "AS": self.address_space_mb * _MB,
            "CPU": self.cpu_seconds,
            "NOFILE": self.open_files,
            "FSIZE": 0,
            "CORE": 0,
        }
        if self.processes is not None:
            wanted["NPROC"] = self.processes
        limits: dict[str, int] = {}
        for name, value in wanted.items():
            hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[1]
            limits[name] = value if hard == resource.RLIM_INFINITY else min(value, hard)
        return limits


class SandboxError(Exception):
    """A snippet failed. ``error_type`` is the sandboxed exception's name, or SandboxCrashed (its worker
    died or was killed at its deadline), SandboxUnavailable (no worker could be started) or OutputTooLarge."""

    def __init__(self, error_type: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


def find_monty_binary() -> str:
    """The real ``monty`` binary, found as pydantic_monty finds it: ``MONTY_BIN``, the environment's
    scripts directory (next to ``sys.executable`` in a venv), then ``PATH``."""
    if explicit := os.environ.get("MONTY_BIN"):
        return explicit
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "monty")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    if found := shutil.which("monty"):
        return found
    raise FileNotFoundError("the monty binary was not found: install pydantic-monty or set MONTY_BIN")


def _output_too_large(value: Any, budget: int) -> bool:
    """Whether ``value`` holds more than ``budget`` bytes of text (a cheap walk, no copy; monty caps
    the nesting of converted values, so the walk is bounded too)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            budget -= len(item)
        elif isinstance(item, dict):
            budget -= 8 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            budget -= 8 * len(item)
            stack.extend(item)
        else:
            budget -= 8
        if budget < 0:
            return True
    return False


def sandbox_error(exc: BaseException) -> SandboxError:
    """The step's error for what the pool raised: the sandboxed exception by name, or a crash or an
    unavailable worker (both retryable)."""
    if isinstance(exc, pydantic_monty.MontySyntaxError):
        return SandboxError("SyntaxError", str(exc), retryable=False)
    if isinstance(exc, pydantic_monty.MontyCrashedError):
        what = "was killed after its deadline" if exc.timed_out else "crashed"
        return SandboxError("SandboxCrashed", f"sandbox worker {what}: {exc}", retryable=True)
    if isinstance(exc, pydantic_monty.MontyError):
        text = str(exc)
        match = _EXC_NAME.match(text)
        return SandboxError(match.group(1) if match else "CodeError", text, retryable=False)
    # the pool could not start a worker, or had none free
    return SandboxError("SandboxUnavailable", f"no sandbox worker: {exc}", retryable=True)


class Sandbox:
    """Sandbox workers for steps. ``run`` executes one step on a worker process of its own.

    ``max_processes`` is how many steps (and script sessions) run at once; more wait up to
    ``checkout_timeout`` seconds for one to finish, then fail retryably (SandboxUnavailable).
    ``spares`` is how many idle workers are kept started ahead, on top of those (0: every step waits for its
    worker to start, 5-20 ms). A worker is never reused: each serves one step.
    ``request_timeout`` is the pool's hard per-request deadline in seconds, the backstop behind each
    step's own deadline (its ``cpu_seconds`` plus a grace second), sized for the longest step allowed.
    ``max_output_bytes`` bounds a step's result on its way to the host (results beyond it fail the step
    with OutputTooLarge); printed output is collected up to ``max_print_bytes`` and discarded.
    """

    def __init__(
        self,
        *,
        max_processes: int = 2,
        spares: int = 2,
        checkout_timeout: float = 60.0,
        worker_limits: WorkerLimits | None = None,
        request_timeout: float | None = None,
        max_output_bytes: int = 4 * _MB,
        max_print_bytes: int = _MB,
        binary_path: str | None = None,
        launcher: LauncherKind | None = None,
    ) -> None:
        self.worker_limits = worker_limits or WorkerLimits()
        self._ceilings = self.worker_limits.rlimits()
        self.max_output_bytes = max_output_bytes
        self.max_print_bytes = max_print_bytes
        self.request_timeout = request_timeout or self.worker_limits.cpu_seconds + 30.0
        self._binary = binary_path or find_monty_binary()
        self._slots = asyncio.Semaphore(max_processes)
        self._max_processes = max_processes
        self._checkout_timeout = checkout_timeout
        self._launcher_wanted = launcher
        self.launcher: LauncherKind | None = None  # the form in use, once running (executor/worker/launcher.py)
        self._launcher_dir: str | None = None
        self._spares: Spares | None = None
        self._spare_count = spares
        self._retiring: set[asyncio.Task[None]] = set()  # workers of finished steps being closed (no pidfd)
        self._done: list[Worker] = []  # workers of finished steps, idle or killed, not yet let go of
        self._idle = 0  # how many of those are idle (not killed yet)
        self._refill: asyncio.TimerHandle | None = None  # when those are killed and let go of, spares topped up
        self.warm = WarmSessions()  # a script session kept between its segments (executor/worker/warm.py)

    def _write_launcher(self) -> Path:
        assert self._launcher_dir is not None
        return write_launcher(Path(self._launcher_dir), self._binary, self.worker_limits, kind=self.launcher)

    async def __aenter__(self) -> Sandbox:
        # The native launcher is compiled the first time (~0.1 s, once per process): not on the event loop.
        self.launcher = await asyncio.to_thread(launcher_kind, self._binary, self.worker_limits, self._launcher_wanted)
        self._launcher_dir = tempfile.mkdtemp(prefix="duraplan-sandbox-")
        try:
            self._write_launcher()
            self._spares = Spares(self._start_worker, self._step_checkout(SandboxLimits()), self._spare_count)
            self._spares.top_up()
        except BaseException:
            self._cleanup()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.warm.close_all()
            if self._refill is not None:
                self._refill.cancel()
            self._refill_now(top_up=False)
            if self._spares is not None:
                await self._spares.close()
            while self._retiring:  # the workers of steps just finished
                await asyncio.wait(set(self._retiring))
            if self._spares is not None:
                # monty 1.4's pool finishes tearing down on its own threads just after __aexit__ returns; an
                # interpreter that exits within those few milliseconds aborts (SIGABRT) about one time in
                # three. Give it a moment.
                await asyncio.sleep(0.05)
        finally:
            self._spares = None
            self._cleanup()

    async def _start_worker(self, checkouts: int) -> pydantic_monty.AsyncMonty:
        """A pool of one worker for one step, allowing ``checkouts`` sessions (a spare's first runs no
        code), its process spawned (raises RuntimeError if it cannot be)."""
        self._restore_launcher()
        assert self._launcher_dir is not None
        pool = pydantic_monty.AsyncMonty(
            binary_path=os.path.join(self._launcher_dir, LAUNCHER_NAME),
            min_processes=1,
            max_processes=1,
            max_checkouts_per_worker=checkouts,
            checkout_timeout=self._checkout_timeout,
            request_timeout=self.request_timeout,
        )
        await pool.__aenter__()
        return pool

    @contextlib.asynccontextmanager
    async def _checkout(self, checkout: Checkout) -> AsyncIterator[Worker]:
        """A started worker of its own, with a session open for ``checkout`` (a spare when one is ready).
        When the block exits its slot is freed and the worker retired (``_retire``): the step's answer
        does not wait for that."""
        spares = self._require_running()
        if self._slots.locked():  # (else the slot is taken at once: no timer to set and cancel)
            try:
                async with asyncio.timeout(self._checkout_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise TimeoutError(f"every sandbox worker was busy for {self._checkout_timeout:g} s") from None
        else:
            await self._slots.acquire()
        try:
            worker = spares.take_ready(checkout)
            if worker is None:
                # The pool may start a worker at checkout (in place of one that died), from the launcher.
                self._restore_launcher()
                worker = await spares.take(checkout)
        except BaseException:
            self._slots.release()
            raise
        error: BaseException | None = None
        try:
            yield worker
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._retire(worker, error)

    def _retire(self, worker: Worker, error: BaseException | None) -> None:
        """The step is done with its worker: free the slot, and kill the worker and start its
        replacement a little later, off the step's answer path.

        The step's answer is still on its way through this process (activity result, workflow task,
        completion), on cores the workflow shares with the workers. Closing the session and the pool
        (two round trips to the worker and the pool's threads) and starting the replacement (a fork,
        the pool's set-up, the warm-up) there cost this process ~2 ms of CPU, and the code step as
        much end to end; even a bare SIGKILL cost the step ~0.2 ms (the dying worker is scheduled in
        at once, on the core the step's answer was using). So after ``REFILL_DELAY_S`` the workers of
        all the steps finished meanwhile are killed through their pidfds (no word to their pools) and
        let go of (the pools dropped: no await, their runtime reaps the dead), and the spares topped
        up, in one go.

        Until then such a worker is idle: its step's code has returned, and it waits on its pipe for
        a request that never comes (no one else holds its session). A step that ended otherwise (an
        error, a cancellation: its code may still be running) has its worker killed at once, as has
        any beyond ``max_processes`` waiting. A worker without a pidfd is closed through its pool
        (which kills it) at once, as before."""
        if worker.pidfd is not None:
            if error is not None or self._idle >= self._max_processes:
                worker.kill()
            else:
                self._idle += 1
            self._slots.release()
            self._done.append(worker)
            if len(self._done) >= _MAX_DONE:  # (a burst of short steps) now, rather than hold more
                if self._refill is not None:
                    self._refill.cancel()
                self._refill_now()
            else:
                self._schedule_refill()
            return

        async def retire() -> None:
            try:
                await worker.close(error)
            finally:
                self._slots.release()
                self._schedule_refill()

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _schedule_refill(self) -> None:
        if self._refill is None and self._spares is not None:
            self._refill = asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._refill_now)

    def _refill_now(self, *, top_up: bool = True) -> None:
        """Kill the finished steps' workers and let go of them, then top up the spares (the new
        workers' start also has the pools' runtime reap any dead one it had not yet)."""
        self._refill = None
        done, self._done, self._idle = self._done, [], 0
        for worker in done:
            worker.kill()
            worker.drop()
        if top_up and self._spares is not None:
            self._spares.top_up()

    @property
    def spares(self) -> Spares:
        """The spare workers (``ready``: how many wait for a step)."""
        return self._require_running()

    async def settled(self) -> None:
        """Wait until the workers of finished steps are gone and the spares being started are started
        (for tests and benchmarks: a quiet sandbox)."""
        spares = self._require_running()
        while self._retiring:
            await asyncio.wait(set(self._retiring))
        if self._refill is not None:  # due soon: now, and the workers killed seen gone
            self._refill.cancel()
            self._refill = None
            for worker in self._done:
                worker.kill()
            self._idle = 0
            await asyncio.gather(*(worker.exited() for worker in self._done))
            self._refill_now()
        await spares.settled()

    def _require_running(self) -> Spares:
        if self._spares is None:
            raise RuntimeError("Sandbox is not running: use `async with Sandbox() as sandbox`")
        return self._spares

    def _cleanup(self) -> None:
        if self._launcher_dir is not None:
            shutil.rmtree(self._launcher_dir, ignore_errors=True)
            self._launcher_dir = None

    def step_rlimits(self, limits: SandboxLimits, cpu_used: float = 0.0) -> dict[str, int]:
        """The OS limits a worker is lowered to for a step: room for its heap and its result, and the CPU
        time the worker has used so far plus the step's, with two seconds' slack (monty's own limits
        fire first; these catch what escapes them)."""
        address_space = (_ADDRESS_SPACE_BASE_MB + _ADDRESS_SPACE_PER_HEAP_MB * limits.memory_mb) * _MB
        cpu = math.ceil(cpu_used + limits.cpu_seconds) + 2
        return {
            "AS": min(address_space, self._ceilings["AS"]),
            "CPU": min(cpu, self._ceilings["CPU"]),
        }

    def _tighten(self, worker: Worker, limits: SandboxLimits) -> float | None:
        """Lower the checked-out worker's limits to the step's, soft and hard: it serves this step only,
        and can never raise them again. Returns the CPU seconds the worker had used (None if unknown)."""
        # (a spare was just looked at, idle since: no second read on the step's path)
        pid, cpu_used = worker.pid, worker.cpu_seen if worker.cpu_seen is not None else worker.cpu_seconds()
        worker.cpu_seen = None
        if pid is None or cpu_used is None:  # no local worker attached (the launcher's ceilings hold), or gone
            return None
        try:
            for name, value in self.step_rlimits(limits, cpu_used).items():
                resource.prlimit(pid, getattr(resource, f"RLIMIT_{name}"), (value, value))
        except (OSError, ValueError):
            return None  # the worker is already gone (its step fails with it) or is not ours to limit
        return cpu_used

    @contextlib.asynccontextmanager
    async def session(
        self,
        limits: SandboxLimits,
        *,
        max_suspensions: int = 1000,
        os_policy: pydantic_monty.OSPolicy | None = None,
    ) -> AsyncIterator[pydantic_monty.AsyncMontySession]:
        """A fresh session on a fresh worker, held for a script segment: ``limits`` bound each turn
        between host calls (``max_turn_duration_secs``), not the whole session."""
        self._require_running()
        resource_limits: pydantic_monty.ResourceLimits = {
            "max_memory": limits.memory_mb * _MB,
            "max_turn_duration_secs": limits.cpu_seconds,
            "max_recursion_depth": limits.max_recursion,
            "max_total_sleep_secs": limits.cpu_seconds,
            "max_suspensions": max_suspensions,
        }
        policy: pydantic_monty.OSPolicy = {"sleep_system_max": limits.cpu_seconds, **(os_policy or {})}
        async with self._checkout(Checkout("script.py", resource_limits, policy)) as worker:
            self._tighten(worker, limits)
            yield worker.session

    @staticmethod
    @functools.lru_cache(maxsize=64)  # one object per limits: a spare's checkout is matched by identity first
    def _step_checkout(limits: SandboxLimits) -> Checkout:
        """The session a code step runs in (a spare has one open for the default limits)."""
        resource_limits: pydantic_monty.ResourceLimits = {
            "max_memory": limits.memory_mb * _MB,
            "max_feed_duration_secs": limits.cpu_seconds,
            "max_recursion_depth": limits.max_recursion,
            # time.sleep() does not count as execution time: without this a step could sleep in 10 s
            # slices for as long as its suspension budget lasts (~3 hours), holding its worker.
            "max_total_sleep_secs": limits.cpu_seconds,
        }
        # Above the total: one sleep longer than the step's budget (time.sleep(1e9)) must fail the
        # step as a TimeoutError, not be cut short silently and let the code go on as if it had slept.
        os_policy: pydantic_monty.OSPolicy = {"sleep_system_max": limits.cpu_seconds + 1.0}
        return Checkout("step.py", resource_limits, os_policy)

    def _restore_launcher(self) -> None:
        if self._launcher_dir is not None and not os.path.exists(os.path.join(self._launcher_dir, LAUNCHER_NAME)):
            # A temp-dir cleaner removed the launcher under a long-running sandbox: put it back, or no new
            # worker could start.
            os.makedirs(self._launcher_dir, mode=0o700, exist_ok=True)
            self._write_launcher()

    async def run(
        self,
        code: str,
        inputs: dict[str, Any],
        limits: SandboxLimits,
        *,
        on_cpu: Callable[[float], None] | None = None,
    ) -> Any:
        """Value of the snippet's last expression; ``on_cpu(seconds)`` hears the CPU time the step's
        worker spent on it (for metering), when the worker could be measured."""
        self._require_running()
        printed = pydantic_monty.CollectString(max_bytes=self.max_print_bytes)
        try:
            async with self._checkout(self._step_checkout(limits)) as worker:
                cpu_before = self._tighten(worker, limits)
                try:
                    result = await worker.session.feed_run(code, inputs=inputs, print_callback=printed)
                finally:
                    cpu_after = worker.cpu_seconds()
                    if on_cpu is not None and cpu_before is not None and cpu_after is not None:
                        on_cpu(max(cpu_after - cpu_before, 0.0))
        except (pydantic_monty.MontyError, RuntimeError, TimeoutError) as exc:
            raise sandbox_error(exc) from None
        if _output_too_large(result, self.max_output_bytes):
            raise SandboxError(
                "OutputTooLarge", f"code step result exceeds {self.max_output_bytes} bytes", retryable=False
            )
        return result
