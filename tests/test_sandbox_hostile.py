"""Defence in depth for code steps: a hostile-code corpus, and the OS-level isolation of sandbox workers.

Every probe must fail its own step with a SandboxError and nothing else: the host's files and environment
are untouched and the same Sandbox serves the next step. Workers are checked from the host through /proc:
an empty environment, no inherited descriptors, rlimits, a fresh process per step.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import pytest_asyncio

from executor.worker import launcher as launcher_module
from executor.worker.launcher import LauncherKind, native_launcher
from executor.worker.sandbox import (
    Sandbox,
    SandboxError,
    SandboxLimits,
    WorkerLimits,
    find_monty_binary,
    write_launcher,
)
from executor.worker.spares import Worker

pytestmark = pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="inspects workers through /proc")

MONTY = os.path.realpath(find_monty_binary())
PROBE_LIMITS = SandboxLimits(memory_mb=32, cpu_seconds=0.5)


@dataclass(frozen=True)
class Probe:
    code: str
    errors: tuple[str, ...]  # the error_type(s) the probe fails with (more than one only where timing decides)
    memory_mb: int = PROBE_LIMITS.memory_mb


# CANARY is replaced by the path of a file the host owns: file probes go straight for it.
HOSTILE: dict[str, Probe] = {
    # dunder chains, introspection, getattr tricks
    "mro_subclasses": Probe("().__class__.__mro__[-1].__subclasses__()", ("AttributeError",)),
    "base_subclasses": Probe("().__class__.__base__.__subclasses__()", ("AttributeError",)),
    "object_subclasses": Probe("object.__subclasses__()", ("AttributeError",)),
    "func_globals": Probe("f = lambda: 0\nf.__globals__['__builtins__']", ("AttributeError",)),
    "builtins_import": Probe("__builtins__.__import__('os')", ("NameError",)),
    "dunder_import": Probe("__import__('os').system('id')", ("NameError",)),
    "getattr_class": Probe("getattr(getattr((), '__class__'), '__subclasses__')()", ("AttributeError",)),
    "getattr_self": Probe("getattr(len, '__self__')", ("AttributeError",)),
    "getattribute": Probe("object.__getattribute__((), '__class__')", ("AttributeError",)),
    "type_construct": Probe("T = type('T', (object,), {})\nT.__subclasses__()", ("TypeError",)),
    "func_code": Probe("def f():\n    return 1\nf.__code__.co_consts", ("AttributeError",)),
    "gen_frame_f_back": Probe(
        "def g():\n    yield 1\ng().gi_frame.f_back.f_globals", ("NotImplementedError", "AttributeError")
    ),
    "coroutine_frame": Probe("async def f():\n    pass\nf().cr_frame.f_back", ("AttributeError",)),
    "sys_getframe": Probe("import sys\nsys._getframe(0).f_back.f_globals", ("AttributeError",)),
    "init_globals": Probe("[].__class__.__init__.__globals__", ("AttributeError",)),
    "class_dict": Probe("int.__dict__['__add__']", ("AttributeError",)),
    "format_attr": Probe("'{0.__class__.__mro__}'.format(1)", ("AttributeError",)),
    "fstring_dunder": Probe("f'{().__class__.__base__.__subclasses__()}'", ("AttributeError",)),
    "metaclass": Probe("class M(type):\n    pass\nclass A(metaclass=M):\n    pass", ("NotImplementedError",)),
    "globals_builtins": Probe("globals()['__builtins__']", ("NameError",)),
    "vars_call": Probe("vars(len)", ("NameError",)),
    # imports
    "import_os_system": Probe("import os\nos.system('touch CANARY')", ("AttributeError",)),
    "import_os_popen": Probe("import os\nos.popen('id').read()", ("AttributeError",)),
    "from_os_import_system": Probe("from os import system\nsystem('id')", ("ImportError",)),
    "import_sys_modules": Probe("import sys\nsys.modules['os']", ("AttributeError",)),
    "import_subprocess": Probe("import subprocess\nsubprocess.run(['id'])", ("ModuleNotFoundError",)),
    "import_socket": Probe("import socket\nsocket.socket()", ("ModuleNotFoundError",)),
    "import_ctypes": Probe("import ctypes\nctypes.CDLL(None)", ("ModuleNotFoundError",)),
    "import_importlib": Probe("import importlib\nimportlib.import_module('os')", ("ModuleNotFoundError",)),
    "import_builtins": Probe("import builtins\nbuiltins.open('CANARY')", ("ModuleNotFoundError",)),
    "import_shutil": Probe("import shutil\nshutil.rmtree('CANARY')", ("ModuleNotFoundError",)),
    "import_io": Probe("import io\nio.open('CANARY').read()", ("ModuleNotFoundError",)),
    "import_multiprocessing": Probe("import multiprocessing\nmultiprocessing.Process()", ("ModuleNotFoundError",)),
    "import_threading": Probe("import threading\nthreading.Thread(target=len)", ("ModuleNotFoundError",)),
    "import_signal": Probe("import signal\nsignal.signal(2, None)", ("ModuleNotFoundError",)),
    "import_resource": Probe("import resource\nresource.setrlimit(0, (0, 0))", ("ModuleNotFoundError",)),
    "import_pickle": Probe("import pickle\npickle.loads(b'cos\\nsystem\\n.')", ("ModuleNotFoundError",)),
    "import_marshal": Probe("import marshal\nmarshal.loads(b'')", ("ModuleNotFoundError",)),
    "import_posix": Probe("import posix\nposix.system('id')", ("ModuleNotFoundError",)),
    # files
    "open_read": Probe("open('CANARY').read()", ("PermissionError",)),
    "open_write": Probe("open('CANARY', 'w').write('pwned')", ("PermissionError",)),
    "open_passwd": Probe("open('/etc/passwd').read()", ("PermissionError",)),
    "open_stdin_fd": Probe("open(0).read()", ("TypeError",)),
    "pathlib_read": Probe("from pathlib import Path\nPath('CANARY').read_text()", ("PermissionError",)),
    "pathlib_write": Probe("from pathlib import Path\nPath('CANARY').write_text('pwned')", ("PermissionError",)),
    "os_remove": Probe("import os\nos.remove('CANARY')", ("PermissionError",)),
    "os_listdir": Probe("import os\nos.listdir('/')", ("PermissionError",)),
    "os_environ": Probe("import os\nos.environ['HOME']", ("RuntimeError",)),
    "os_getenv": Probe("import os\nos.getenv('HOME')", ("RuntimeError",)),
    # network
    "urllib": Probe("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:7233')", ("ModuleNotFoundError",)),
    "http_client": Probe("import http.client\nhttp.client.HTTPConnection('127.0.0.1')", ("ModuleNotFoundError",)),
    # eval / exec / compile and friends: they exist, but only inside the same sandbox
    "eval_escape": Probe("eval(\"__import__('os')\")", ("NameError",)),
    "exec_escape": Probe("exec(\"import os\\nos.system('id')\")", ("AttributeError",)),
    "exec_open": Probe("exec(\"open('CANARY', 'w').write('pwned')\")", ("PermissionError",)),
    "compile": Probe("compile('1', 'x', 'eval')", ("NameError",)),
    "input": Probe("input()", ("NameError",)),
    "breakpoint": Probe("breakpoint()", ("NameError",)),
    "exit": Probe("exit(0)", ("NameError",)),
    "raise_systemexit": Probe("raise SystemExit(0)", ("RuntimeError", "SystemExit")),
    "raise_keyboardinterrupt": Probe("raise KeyboardInterrupt", ("KeyboardInterrupt",)),
    # memory bombs
    "list_bomb": Probe("x = [0] * (10 ** 9)\nx", ("MemoryError",)),
    "str_bomb": Probe("'x' * (10 ** 10)", ("MemoryError",)),
    "dict_bomb": Probe("{i: i for i in range(10 ** 8)}", ("MemoryError", "TimeoutError")),
    "string_doubling": Probe("s = 'x'\nwhile True:\n    s = s + s", ("MemoryError",)),
    # (copying a list element by element is slow: on a loaded machine the time limit can come first)
    "list_doubling": Probe("s = [1]\nwhile True:\n    s = s + s", ("MemoryError", "TimeoutError")),
    "huge_pow": Probe("10 ** 10 ** 8", ("MemoryError",)),
    "huge_shift": Probe("1 << (10 ** 10)", ("MemoryError",)),
    "exception_chain": Probe(
        "e = None\nfor i in range(10 ** 7):\n    try:\n        raise ValueError('x' * 100) from e\n"
        "    except ValueError as err:\n        e = err",
        ("TimeoutError", "MemoryError"),
    ),
    "nested_list_result": Probe("x = []\nfor i in range(10 ** 7):\n    x = [x]\nx", ("MemoryError", "TimeoutError")),
    # CPU bombs
    "infinite_loop": Probe("while True:\n    pass", ("TimeoutError",)),
    "busy_math": Probe("n = 0\nwhile True:\n    n = (n * 7 + 1) % 1000003", ("TimeoutError",)),
    "regex_backtracking": Probe("import re\nwhile True:\n    re.match('(a+)+$', 'a' * 5000 + 'b')", ("TimeoutError",)),
    "sleep_forever": Probe("import time\nwhile True:\n    time.sleep(1)", ("TimeoutError",)),
    # issue 11: one long sleep was cut to the budget and the step completed with null
    "sleep_1e9": Probe("import time\ntime.sleep(1e9)\n'woke up'", ("TimeoutError",)),
    "sleep_inf": Probe(
        "import time\ntime.sleep(float('inf'))\n'woke up'", ("OverflowError", "ValueError", "TimeoutError")
    ),
    "sleep_nan": Probe("import time\ntime.sleep(float('nan'))\n'woke up'", ("ValueError", "TimeoutError")),
    # issue 11: error and output payloads beyond Temporal's limits fail the step, not the worker
    "raise_huge": Probe("raise ValueError('x' * (1024 * 1024))", ("ValueError",)),
    "output_huge": Probe("'x' * (5 * 1024 * 1024)", ("OutputTooLarge",)),
    "async_spin": Probe(
        "import asyncio\nasync def f():\n    while True:\n        await asyncio.sleep(0)\nasyncio.run(f())",
        ("TimeoutError",),
    ),
    # output: printed and returned
    "print_bomb": Probe("while True:\n    print('x' * 100000)", ("MemoryError",)),
    # 16 MiB: far over the 1 MiB output cap, yet quick to build on a loaded machine (100 MiB hit the
    # segment's CPU limit first under load); the memory bomb is the probe below.
    "huge_output": Probe("'x' * (16 * 1024 * 1024)", ("OutputTooLarge",), memory_mb=256),
    "huge_output_default_limits": Probe("'x' * (100 * 1024 * 1024)", ("MemoryError",)),
    "many_small_outputs": Probe("['x' * 100 for i in range(200000)]", ("OutputTooLarge",), memory_mb=256),
    # recursion
    "deep_recursion": Probe("def f(n):\n    return f(n + 1)\nf(0)", ("RecursionError",)),
    "mutual_recursion": Probe("def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\na(0)", ("RecursionError",)),
    "recursive_repr": Probe(
        "class R:\n    def __repr__(self):\n        return repr(self)\nrepr(R())", ("RecursionError",)
    ),
    # parse bombs
    "nested_brackets": Probe("[" * 100000 + "]" * 100000, ("SyntaxError",)),
    "nested_parens": Probe("(" * 100000 + "1" + ")" * 100000, ("SyntaxError",)),
    "nested_braces": Probe("{" * 50000 + "}" * 50000, ("SyntaxError",)),
    "long_expression": Probe("1" + "+1" * 200000, ("SyntaxError",)),
    "nested_blocks": Probe("".join(" " * i + "if 1:\n" for i in range(3000)) + " " * 3000 + "pass", ("SyntaxError",)),
    "nested_lambdas": Probe("lambda: " * 50000 + "0", ("SyntaxError",)),
    "huge_literal": Probe("x = '" + "x" * (5 * 1024 * 1024) + "'\nx * 1000", ("MemoryError",)),
    "unclosed_string": Probe("'''" + "x" * 100000, ("SyntaxError",)),
    # unicode tricks
    "fullwidth_eval": Probe("\uff45\uff56\uff41\uff4c(\"open('CANARY', 'w')\")", ("PermissionError",)),
    "mathbold_import": Probe("__\U0001d422\U0001d426\U0001d429\U0001d428\U0001d42b\U0001d42d__('os')", ("NameError",)),
    "fullwidth_dunder": Probe("().__\uff43\uff4c\uff41\uff53\uff53__", ("AttributeError",)),
    "homoglyph_module": Probe("\u043es = 1\nimport os\nos.system('id')", ("AttributeError",)),
    "rtl_override": Probe(
        "x = 1 # \u202e } \u2066if True:\u2069 \u2066\nimport os\nos.system('id')", ("AttributeError",)
    ),
    "null_byte_source": Probe("1\x00 + 1", ("SyntaxError",)),
    "null_byte_path": Probe("open('CANARY\\x00.txt', 'w')", ("PermissionError", "ValueError")),
    "surrogate_path": Probe("open('CANARY\\ud800', 'w')", ("PermissionError", "UnicodeEncodeError", "ValueError")),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sb:
        yield sb


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    path = tmp_path / "canary.txt"
    path.write_text("the host's own data\n")
    return path


def _proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits as {'Max address space': (soft, hard), ...}."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        limits[name] = (soft, hard)
    return limits


def _stat(pid: int) -> tuple[str, int]:
    state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def monty_workers(parent: int | None = None) -> list[int]:
    """Live monty worker processes whose parent is this process (the pool's workers)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = _stat(int(entry))
            if ppid == parent and state != "Z" and os.path.realpath(f"/proc/{entry}/exe") == MONTY:
                pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone; or it exited between open and read (ESRCH)
        return False


def _spy_on_workers(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pid of the worker each step is served by (the sandbox lowers that worker's limits)."""
    pids: list[int] = []
    tighten = sandbox._tighten

    def spy(worker: Worker, limits: SandboxLimits) -> float | None:
        assert worker.pid is not None
        pids.append(worker.pid)
        return tighten(worker, limits)

    monkeypatch.setattr(sandbox, "_tighten", spy)
    return pids


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def _still_serves(sandbox: Sandbox) -> None:
    assert await sandbox.run("sum(xs) * k", {"xs": [1, 2, 3], "k": 7}, SandboxLimits()) == 42


# -- the corpus -------------------------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_probe_fails_only_its_own_step(sandbox: Sandbox, canary: Path, name: str) -> None:
    probe = HOSTILE[name]
    environ = dict(os.environ)
    before = canary.stat()
    with pytest.raises(SandboxError) as info:
        await sandbox.run(
            probe.code.replace("CANARY", str(canary)), {}, SandboxLimits(probe.memory_mb, PROBE_LIMITS.cpu_seconds)
        )
    assert info.value.error_type in probe.errors, f"{name}: {info.value.error_type}: {info.value}"
    # The host is intact: its file, its directory and its environment are as they were.
    assert canary.read_text() == "the host's own data\n"
    assert canary.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]
    assert dict(os.environ) == environ
    await _still_serves(sandbox)


@pytest.mark.parametrize("name", ["infinite_loop", "list_doubling", "print_bomb", "sleep_forever", "deep_recursion"])
async def test_hostile_step_beside_a_normal_one(sandbox: Sandbox, name: str) -> None:
    """A hostile step and an honest one run at once, on two workers: the honest one gets its result."""
    hostile = sandbox.run(HOSTILE[name].code, {}, PROBE_LIMITS)
    honest = sandbox.run(
        "total = 0\nfor x in xs:\n    total += x * x\ntotal", {"xs": list(range(20000))}, SandboxLimits()
    )
    results = await asyncio.gather(hostile, honest, return_exceptions=True)
    assert isinstance(results[0], SandboxError) and results[0].error_type in HOSTILE[name].errors
    assert results[1] == sum(x * x for x in range(20000))


async def test_no_state_survives_between_steps(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _spy_on_workers(sandbox, monkeypatch)
    await sandbox.run("leak = 42", {}, SandboxLimits())
    with pytest.raises(SandboxError) as info:
        await sandbox.run("leak", {}, SandboxLimits())
    assert info.value.error_type == "NameError"
    for _ in range(3):
        await _still_serves(sandbox)
    # Every step had a process of its own, and a finished step's process is gone.
    assert len(set(pids)) == len(pids) == 5
    await _wait_for(lambda: not any(_alive(pid) for pid in pids[:-1]))


# -- the workers' processes, seen from the host ----------------------------------------------------------


async def test_worker_processes_have_empty_environment_and_rlimits(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPLAN_SECRET_PROBE", "hunter2")
    pids = _spy_on_workers(sandbox, monkeypatch)
    limits = SandboxLimits(memory_mb=48, cpu_seconds=1.5)
    step = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, limits))
    await _wait_for(lambda: bool(pids) or step.done())
    busy = pids[0]
    workers = monty_workers()
    assert busy in workers
    ceilings = sandbox.worker_limits
    for pid in workers:
        assert _stat(pid)[1] == os.getpid()
        assert Path(f"/proc/{pid}/environ").read_bytes() == b"", "workers get an empty environment"
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        # The POSIX-sh launcher (no C compiler, no bash) can only close descriptors 3-9.
        assert fds == [0, 1, 2] or (sandbox.launcher == "sh" and fds[:3] == [0, 1, 2] and min(fds[3:]) >= 10)
        assert os.path.realpath(f"/proc/{pid}/exe") == MONTY, "the launcher exec'd monty in its own place"
        proc = _proc_limits(pid)
        assert proc["Max file size"] == ("0", "0")
        assert proc["Max core file size"] == ("0", "0")
        assert proc["Max open files"] == (str(ceilings.open_files),) * 2
        assert int(proc["Max address space"][1]) <= ceilings.address_space_mb * 1024 * 1024
        assert int(proc["Max cpu time"][1]) <= ceilings.cpu_seconds
    # The busy worker was lowered to its step's own budget.
    proc = _proc_limits(busy)
    expected = sandbox.step_rlimits(limits)
    assert proc["Max address space"] == (str(expected["AS"]),) * 2
    soft, hard = (int(v) for v in proc["Max cpu time"])
    assert soft == hard and expected["CPU"] <= soft <= expected["CPU"] + 1  # + the CPU it used to start
    assert expected["AS"] < ceilings.address_space_mb * 1024 * 1024
    with pytest.raises(SandboxError) as info:
        await step
    assert info.value.error_type == "TimeoutError"


def test_the_native_launcher_is_the_default_where_a_compiler_is() -> None:
    """.ci/run installs a C compiler: the sandbox execs workers through the native launcher, no shell."""
    assert shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"), "a C compiler is installed"
    path = write_launcher(Path(tempfile.mkdtemp()), MONTY, WorkerLimits())
    try:
        assert path.read_bytes()[:4] == b"\x7fELF"
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IRWXU, "only this user may run or change it"
    finally:
        shutil.rmtree(path.parent)


async def test_without_a_compiler_the_sandbox_starts_workers_through_bash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_module, "_compiler", lambda: None)
    launcher_module._build.cache_clear()
    try:
        async with Sandbox(spares=1) as sandbox:
            assert sandbox.launcher == "bash"
            assert sandbox._launcher_dir is not None
            assert (Path(sandbox._launcher_dir) / "monty-worker").read_bytes().startswith(b"#!/bin/sh")
            assert await sandbox.run("x + 1", {"x": 1}, SandboxLimits()) == 2
        with pytest.raises(FileNotFoundError):
            launcher_module.launcher_kind(MONTY, WorkerLimits(), "native")
    finally:
        launcher_module._build.cache_clear()


def _write_launcher(directory: Path, limits: WorkerLimits, form: str) -> Path:
    if form != "native-libc":
        return write_launcher(directory, MONTY, limits, kind=cast(LauncherKind, form))
    program = native_launcher(MONTY, limits, libc=True)  # the C-library form other architectures get
    assert program is not None
    path = directory / "monty-worker"
    path.write_bytes(program)
    path.chmod(0o700)
    return path


@pytest.mark.parametrize("form", ["native", "native-libc", "bash", "sh"])
def test_launcher_clears_environment_and_descriptors(tmp_path: Path, form: str) -> None:
    """The launcher alone, spawned with a secret in its environment and an inheritable descriptor."""
    limits = WorkerLimits(address_space_mb=512, cpu_seconds=20, open_files=12)
    launcher = _write_launcher(tmp_path, limits, form)
    read_end, write_end = os.pipe()
    # Descriptors the host forgot to close (F_DUPFD copies are inheritable): one below 10, one above.
    low = fcntl.fcntl(write_end, fcntl.F_DUPFD, 3)
    high = fcntl.fcntl(write_end, fcntl.F_DUPFD, 40)
    env = {"DURAPLAN_SECRET": "hunter2", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        worker = subprocess.Popen(
            [str(launcher), "subprocess"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(low, high)
        )
    finally:
        for fd in (read_end, write_end, low, high):
            os.close(fd)
    try:
        deadline = time.monotonic() + 10
        while os.path.realpath(f"/proc/{worker.pid}/exe") != MONTY:
            assert worker.poll() is None and time.monotonic() < deadline, "launcher did not exec monty"
            time.sleep(0.005)
        assert Path(f"/proc/{worker.pid}/environ").read_bytes() == b""
        fds = {int(fd) for fd in os.listdir(f"/proc/{worker.pid}/fd")}
        if low < 10:
            assert low not in fds
        if form != "sh":  # POSIX sh can only name descriptors 0-9 in a redirection
            assert fds == {0, 1, 2}
        assert Path(f"/proc/{worker.pid}/cmdline").read_bytes() == os.fsencode(MONTY) + b"\0subprocess\0"
        proc = _proc_limits(worker.pid)
        assert proc["Max address space"] == (str(512 * 1024 * 1024),) * 2
        assert proc["Max cpu time"] == ("20", "20")
        assert proc["Max open files"] == ("12", "12")
        assert proc["Max file size"] == ("0", "0")
        assert proc["Max core file size"] == ("0", "0")
        sigign = int(
            next(
                line
                for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines()
                if line.startswith("SigIgn")
            ).split()[1],
            16,
        )
        assert sigign & (1 << (signal.SIGXFSZ - 1)), "SIGXFSZ is ignored: a write fails with EFBIG, nothing dies"
    finally:
        worker.kill()
        worker.communicate(timeout=10)


async def test_launcher_removed_by_a_temp_cleaner_is_rewritten() -> None:
    async with Sandbox() as sandbox:
        assert sandbox._launcher_dir is not None
        await _still_serves(sandbox)
        await sandbox.settled()  # no worker is being spawned while the launcher goes
        shutil.rmtree(sandbox._launcher_dir)
        for _ in range(sandbox.spares.count + 2):  # the spares, then workers started from the launcher
            await _still_serves(sandbox)


async def test_worker_that_cannot_start_fails_only_its_own_step() -> None:
    async with Sandbox() as sandbox:
        assert sandbox._launcher_dir is not None
        launcher = Path(sandbox._launcher_dir) / "monty-worker"
        await sandbox.settled()
        launcher.chmod(0o600)
        with pytest.raises(SandboxError) as info:
            for _ in range(sandbox.spares.count + 1):  # the spares started before still serve
                await sandbox.run("1 + 1", {}, SandboxLimits())
        assert info.value.error_type == "SandboxUnavailable"
        assert info.value.retryable
        launcher.chmod(0o700)
        await _still_serves(sandbox)


# -- OS limits backstop the sandbox's own limits ----------------------------------------------------------


async def test_address_space_limit_backstops_heap_limit() -> None:
    """A step allowed more heap than its worker's address space: the OS stops it, as a MemoryError."""
    async with Sandbox(worker_limits=WorkerLimits(address_space_mb=400)) as sandbox:
        with pytest.raises(SandboxError) as info:
            await sandbox.run("x = 'x' * (600 * 1024 * 1024)\nlen(x)", {}, SandboxLimits(memory_mb=1024))
        assert info.value.error_type == "MemoryError"
        await _still_serves(sandbox)


async def test_cpu_limit_backstops_time_limit() -> None:
    """A step allowed more time than its worker's CPU budget: the kernel kills the worker."""
    async with Sandbox(worker_limits=WorkerLimits(cpu_seconds=1)) as sandbox:
        started = time.monotonic()
        with pytest.raises(SandboxError) as info:
            await sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=20))
        assert info.value.error_type == "SandboxCrashed"
        assert time.monotonic() - started < 10
        await _still_serves(sandbox)


# -- workers that crash or hang ---------------------------------------------------------------------------


async def test_hung_worker_is_killed_at_its_steps_deadline(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _spy_on_workers(sandbox, monkeypatch)
    started = time.monotonic()
    step = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=0.5)))
    await _wait_for(lambda: bool(pids))
    os.kill(pids[0], signal.SIGSTOP)  # frozen: its own clock cannot fire, only the parent's deadline
    with pytest.raises(SandboxError) as info:
        await step
    assert info.value.error_type == "SandboxCrashed"
    assert "deadline" in str(info.value)
    assert time.monotonic() - started < 10
    await _wait_for(lambda: not _alive(pids[0]))
    await _still_serves(sandbox)


async def test_request_timeout_backstops_long_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Sandbox(request_timeout=1.0) as sandbox:
        pids = _spy_on_workers(sandbox, monkeypatch)
        step = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=30)))
        await _wait_for(lambda: bool(pids))
        os.kill(pids[0], signal.SIGSTOP)
        with pytest.raises(SandboxError) as info:
            await step
        assert info.value.error_type == "SandboxCrashed"
        assert info.value.retryable
        await _still_serves(sandbox)


async def test_crashed_worker_fails_only_its_own_step(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _spy_on_workers(sandbox, monkeypatch)
    doomed = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=5)))
    await _wait_for(lambda: bool(pids))
    honest = asyncio.ensure_future(sandbox.run("sum(range(n))", {"n": 1000}, SandboxLimits()))
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(SandboxError) as info:
        await doomed
    assert info.value.error_type == "SandboxCrashed"
    assert await honest == sum(range(1000))
    await _still_serves(sandbox)


def test_host_process_exits_cleanly_after_the_pool(tmp_path: Path) -> None:
    """monty 1.4's pool can abort the interpreter that exits right after it closes; the Sandbox waits."""
    script = tmp_path / "host.py"
    script.write_text(
        "import asyncio\n"
        "from executor.worker.sandbox import Sandbox, SandboxLimits\n"
        "async def main():\n"
        "    async with Sandbox() as sandbox:\n"
        "        assert await sandbox.run('1 + 1', {}, SandboxLimits()) == 2\n"
        "asyncio.run(main())\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    runs = [
        subprocess.Popen([sys.executable, str(script)], cwd=root, env={**os.environ, "PYTHONPATH": root})
        for _ in range(4)
    ]
    assert [run.wait(timeout=60) for run in runs] == [0] * 4
