"""Exec a sandbox worker with an empty environment, no inherited descriptors and OS resource limits.

The sandbox pool spawns this (through a wrapper that executor.sandbox writes) instead of the ``monty``
binary: ``python -I -S sandbox_launcher.py <limits> <monty> [args...]``, where ``<limits>`` is
``NAME=soft:hard`` pairs joined by commas (``RLIMIT_`` prefix dropped, e.g. ``AS=1073741824:1073741824``).
The limits apply to the worker for its whole life: they are inherited across ``exec`` and cannot be raised
again by an unprivileged process. Only the standard library is used, so the launcher adds one interpreter
start-up (about 10 ms) to a worker's spawn and nothing to a step served by a warm worker.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def parse_limits(spec: str) -> list[tuple[int, int, int]]:
    """``AS=1:2,CPU=3:4`` -> ``[(RLIMIT_AS, 1, 2), (RLIMIT_CPU, 3, 4)]``."""
    limits: list[tuple[int, int, int]] = []
    for item in filter(None, spec.split(",")):
        name, _, values = item.partition("=")
        soft, _, hard = values.partition(":")
        limits.append((getattr(resource, f"RLIMIT_{name}"), int(soft), int(hard or soft)))
    return limits


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.stderr.write("usage: sandbox_launcher.py LIMITS BINARY [ARGS...]\n")
        raise SystemExit(2)
    spec, binary, *args = argv[1:]
    limits = parse_limits(spec)
    # Descriptors the host left inheritable (a CI runner's pipes, a shell's saved fds) stay with the host:
    # the worker talks to the pool over stdin/stdout and reports fatal errors on stderr, nothing else.
    os.closerange(3, 1 << 20)
    os.umask(0o077)
    os.chdir("/")
    # With RLIMIT_FSIZE 0 a write to a regular file fails with EFBIG instead of killing the worker, so a
    # worker whose stderr the host redirected to a log file still reports its own fatal errors cleanly.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    os.execve(binary, [binary, *args], {})


if __name__ == "__main__":
    main(sys.argv)
