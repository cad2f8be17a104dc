"""The launcher a sandbox worker is started through: what runs between the pool's spawn and ``monty``.

The pool spawns ``<launcher> subprocess``; the launcher ignores ``SIGXFSZ``, closes every descriptor above
2, sets the worker's rlimits (soft = hard, so the worker cannot raise them) and execs the real ``monty``
binary with an empty environment. Nothing of the host's gets through but stdin/stdout/stderr (the pool's
pipes), and the limits hold from monty's first instruction, long before any tenant code.

Three forms do the same:

* ``native``: a small C program, compiled once per process for the binary and limits (a C compiler is
  needed; ``gcc`` or ``clang`` as ``cc``). It is exec'd directly: no shell, no dynamic loader on x86-64
  (freestanding, raw system calls), ~0.1 ms of CPU against ~1.8 ms for the shells below, on every step.
* ``bash``: a ``/bin/sh`` script that execs bash (``ulimit``, ``exec -c``, closes descriptors 3 and up).
* ``sh``: a POSIX-shell script (``env -i``); it can only close descriptors 3-9.

The default is the first one this host can provide.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["LauncherKind", "launcher_kind", "native_launcher", "write_launcher"]

log = logging.getLogger(__name__)

LauncherKind = Literal["native", "bash", "sh"]
LAUNCHER_NAME = "monty-worker"


class _Limits(Protocol):
    def rlimits(self) -> dict[str, int]: ...


# The native launcher. Python fills in the binary's path (every byte escaped) and the limits (the
# platform's own RLIMIT_* numbers, from the resource module). On x86-64 it needs no C library at all: the
# whole program is five system calls and an execve, so it starts in microseconds; elsewhere it uses libc.
_C_SOURCE = r"""/* Written by executor.worker.launcher: exec the monty worker with an empty environment, no
   descriptors beyond 0-2, SIGXFSZ ignored and its rlimits set (soft = hard). Exit 126 if any of that fails. */
static const char MONTY[] = "{binary}";
static const struct {{ int resource; unsigned long long value; }} LIMITS[] = {{ {limits} }};
#define NLIMITS (sizeof LIMITS / sizeof LIMITS[0])
#define SIGNAL_XFSZ {sigxfsz}

#if defined(__x86_64__) && !defined(DURAPLAN_LAUNCHER_LIBC)
/* x86-64 Linux system call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_CLOSE 3
#define NR_RT_SIGACTION 13
#define NR_EXECVE 59
#define NR_EXIT 60
#define NR_PRLIMIT64 302
#define NR_CLOSE_RANGE 436
#define ENOSYS 38

static long sys(long n, long a, long b, long c, long d) {{
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
}}

static void __attribute__((noreturn)) die(int code) {{
    for (;;) sys(NR_EXIT, code, 0, 0, 0);
}}

struct kernel_sigaction {{ unsigned long handler, flags, restorer, mask; }};
struct rlimit64 {{ unsigned long long cur, max; }};

void __attribute__((noreturn, used)) launcher_main(long *stack) {{
    char **argv = (char **)(stack + 1);
    if (stack[0] < 1) die(126); /* no argv[0] to replace: argv would run into the environment */
    struct kernel_sigaction ignore = {{ 1 /* SIG_IGN */, 0, 0, 0 }};
    if (sys(NR_RT_SIGACTION, SIGNAL_XFSZ, (long)&ignore, 0, sizeof ignore.mask) != 0) die(126);
    long closed = sys(NR_CLOSE_RANGE, 3, ~0U, 0, 0);
    if (closed == -ENOSYS) {{ /* before Linux 5.9: every descriptor the current limit allows */
        struct rlimit64 nofile;
        if (sys(NR_PRLIMIT64, 0, 7 /* RLIMIT_NOFILE */, 0, (long)&nofile) != 0) die(126);
        for (unsigned long long fd = 3; fd < nofile.cur && fd < (1ULL << 20); fd++) sys(NR_CLOSE, (long)fd, 0, 0, 0);
    }} else if (closed != 0) die(126);
    for (unsigned i = 0; i < NLIMITS; i++) {{
        struct rlimit64 limit = {{ LIMITS[i].value, LIMITS[i].value }};
        if (sys(NR_PRLIMIT64, 0, LIMITS[i].resource, (long)&limit, 0) != 0) die(126);
    }}
    char *empty[] = {{ 0 }};
    argv[0] = (char *)MONTY;
    sys(NR_EXECVE, (long)MONTY, (long)argv, (long)empty, 0);
    die(127);
}}

__asm__(".globl _start\n_start:\n xor %ebp, %ebp\n mov %rsp, %rdi\n and $-16, %rsp\n call launcher_main\n hlt\n");
#else
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {{
    if (argc < 1) _exit(126); /* no argv[0] to replace: argv would run into the environment */
    if (signal(SIGNAL_XFSZ, SIG_IGN) == SIG_ERR) _exit(126);
#ifdef SYS_close_range
    long closed = syscall(SYS_close_range, 3U, ~0U, 0U);
#else
    long closed = -1;
    errno = ENOSYS;
#endif
    if (closed != 0) {{
        if (errno != ENOSYS) _exit(126);
        struct rlimit nofile;
        if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) _exit(126);
        for (rlim_t fd = 3; fd < nofile.rlim_cur && fd < (1U << 20); fd++) close((int)fd);
    }}
    for (unsigned i = 0; i < NLIMITS; i++) {{
        struct rlimit limit = {{ (rlim_t)LIMITS[i].value, (rlim_t)LIMITS[i].value }};
        if (setrlimit(LIMITS[i].resource, &limit) != 0) _exit(126);
    }}
    char *empty[] = {{ NULL }};
    argv[0] = (char *)MONTY;
    execve(MONTY, argv, empty);
    _exit(127);
}}
#endif
"""

_FREESTANDING = ["-nostdlib", "-static", "-ffreestanding", "-fno-stack-protector", "-fno-builtin", "-no-pie"]


def _c_string(text: str) -> str:
    return "".join(f"\\{byte:03o}" for byte in os.fsencode(text))


def native_source(binary: str, rlimits: dict[str, int]) -> str:
    limits = ", ".join(f"{{ {getattr(resource, f'RLIMIT_{name}')}, {value}ULL }}" for name, value in rlimits.items())
    return _C_SOURCE.format(binary=_c_string(binary), limits=limits, sigxfsz=int(signal.SIGXFSZ))


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        if found := shutil.which(name):
            return found
    return None


@functools.cache
def _build(binary: str, rlimits: tuple[tuple[str, int], ...], libc: bool) -> bytes | None:
    """The launcher program for ``binary`` and ``rlimits``, or None when it cannot be built here. Built
    once per process for each (cached: the sandbox writes a copy into its private directory)."""
    cc = _compiler()
    if cc is None or platform.system() != "Linux":
        return None
    source = native_source(binary, dict(rlimits))
    # Freestanding first on x86-64 (the compiler may still build for another target: then the C-library
    # form), then the C-library form, static when libc.a is installed.
    libc_forms = [["-static", "-DDURAPLAN_LAUNCHER_LIBC"], ["-DDURAPLAN_LAUNCHER_LIBC"]]
    freestanding = platform.machine() in ("x86_64", "AMD64") and not libc
    attempts = [_FREESTANDING, *libc_forms] if freestanding else libc_forms
    errors = ""
    with tempfile.TemporaryDirectory(prefix="duraplan-launcher-") as tmp:
        src, out = Path(tmp, "launcher.c"), Path(tmp, LAUNCHER_NAME)
        src.write_text(source)
        for flags in attempts:
            command = [cc, "-O2", "-w", *flags, "-o", str(out), str(src)]
            try:
                done = subprocess.run(command, capture_output=True, timeout=60, check=False, env=_compiler_env())
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("could not build the native sandbox launcher: %s", exc)
                return None
            if done.returncode == 0:
                return out.read_bytes() if _works(out) else None
            errors = done.stderr.decode(errors="replace")[-500:]
        log.warning("could not build the native sandbox launcher: %s", errors)
        return None


def _works(launcher: Path) -> bool:
    """Whether the launcher starts monty here: a host whose seccomp policy refuses one of its system
    calls gets exit status 126 from every worker, and is better served by a shell launcher. Monty exits
    0 at once on an empty stdin."""
    try:
        done = subprocess.run(
            [str(launcher), "subprocess"], stdin=subprocess.DEVNULL, capture_output=True, env={}, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("the native sandbox launcher does not run here: %s", exc)
        return False
    if done.returncode != 0:
        log.warning("the native sandbox launcher does not run here (exit status %d)", done.returncode)
    return done.returncode == 0


def _compiler_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def native_launcher(binary: str, limits: _Limits, *, libc: bool = False) -> bytes | None:
    """The compiled native launcher for ``binary`` with ``limits``' rlimits, or None if this host cannot
    build one (no C compiler, not Linux). ``libc`` builds the portable C-library form on x86-64 too."""
    return _build(binary, tuple(limits.rlimits().items()), libc)


def launcher_kind(binary: str, limits: _Limits, wanted: LauncherKind | None = None) -> LauncherKind:
    """The launcher a sandbox uses: ``wanted``, or the cheapest this host provides (native, bash, sh).
    Raises FileNotFoundError when ``wanted`` cannot be provided."""
    if wanted == "native" or wanted is None:
        if native_launcher(binary, limits) is not None:
            return "native"
        if wanted == "native":
            raise FileNotFoundError("the native sandbox launcher cannot be built here (no C compiler?)")
    if wanted in (None, "bash"):
        if shutil.which("bash") is not None:
            return "bash"
        if wanted == "bash":
            raise FileNotFoundError("bash not found")
    return "sh"


# bash: `ulimit` takes several limits at once (KiB for -v, seconds for -t), `exec -c` clears the environment,
# and descriptors above 9 can be closed. The script goes through `bash -c` so that bash holds no descriptor
# of its own (a script file would be open while the loop closes descriptors).
_BASH_SCRIPT = """trap "" XFSZ
ulimit {ulimits} || exit 126
for fd in /proc/$$/fd/*; do fd=${{fd##*/}}; if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then exec {{fd}}>&-; fi; done
exec -c "$0" "$@"
"""
_BASH_FLAGS = {"AS": "-v", "CPU": "-t", "NOFILE": "-n", "FSIZE": "-f", "CORE": "-c", "NPROC": "-u"}
# POSIX sh (dash, busybox): one limit per `ulimit`, `env -i` for the environment, and only single-digit
# descriptors can be named in a redirection, so descriptors above 9 that the host left inheritable leak.
_SH_FLAGS = {"AS": "-v", "CPU": "-t", "NOFILE": "-n", "FSIZE": "-f", "CORE": "-c", "NPROC": "-p"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _ulimit_value(name: str, value: int) -> int:
    return value // 1024 if name == "AS" else value  # -v is in KiB; the others are counts/seconds/0


def _script(binary: str, rlimits: dict[str, int], kind: LauncherKind) -> str:
    if kind == "bash":
        bash = shutil.which("bash")
        assert bash is not None
        ulimits = " ".join(f"{_BASH_FLAGS[n]} {_ulimit_value(n, v)}" for n, v in rlimits.items())
        script = _BASH_SCRIPT.format(ulimits=ulimits)
        # (BASH_ENV would make a non-interactive bash source a file before the script.)
        body = f'unset BASH_ENV ENV\nexec {_quote(bash)} --noprofile --norc -c {_quote(script)} {_quote(binary)} "$@"\n'
    else:
        env = shutil.which("env") or "/usr/bin/env"
        ulimits = " && ".join(f"ulimit {_SH_FLAGS[n]} {_ulimit_value(n, v)}" for n, v in rlimits.items())
        closes = " ".join(f"{fd}>&-" for fd in range(3, 10))
        body = f"trap '' XFSZ\n{ulimits} || exit 126\nexec {closes}\nexec {_quote(env)} -i {_quote(binary)} \"$@\"\n"
    return (
        "#!/bin/sh\n# Written by executor.worker.sandbox: a monty worker with an empty environment and OS limits.\n"
        + body
    )


def write_launcher(directory: Path, binary: str, limits: _Limits, *, kind: LauncherKind | None = None) -> Path:
    """Write the executable that the pool spawns instead of ``binary`` into ``directory`` (private to
    this process); returns its path. ``kind`` as ``launcher_kind`` resolves it."""
    kind = launcher_kind(binary, limits, kind)
    path = directory / LAUNCHER_NAME
    # Written under another name and renamed into place: a worker spawned meanwhile finds either no
    # launcher or a whole one, never a half-written file.
    partial = directory / f".{LAUNCHER_NAME}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, stat.S_IRWXU)
    with os.fdopen(fd, "wb") as f:
        if kind == "native":
            program = native_launcher(binary, limits)
            assert program is not None  # launcher_kind built it
            f.write(program)
        else:
            f.write(_script(binary, limits.rlimits(), kind).encode())
    os.chmod(partial, stat.S_IRWXU)
    os.replace(partial, path)
    return path
