"""A live API (uvicorn on loopback, a worker, two tenants) and one headless Chromium for the console tests.

The server, its Temporal client and the worker run on their own event loop in a thread; the browser
is Debian's ``chromium`` driven by Playwright (its own browser download is not used). Without
chromium the tests fail, naming the fix: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from temporalio.client import Client

from duraplan.api import create_app
from duraplan.worker import running_worker
from executor import Duraplan, Settings
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from planner.testing import ScriptedModel

STREAMS_PER_TENANT = 4  # small, so a test can reach the cap
MODEL = "openai/gpt-4o-mini"  # priced from litellm's bundled cost map; the answers are scripted


def chromium_path() -> str:
    path = os.environ.get("DURAPLAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"headless Chromium not found at {path!r}: install Debian's chromium "
            "(apt-get update && apt-get install -y chromium; .ci/run does this) or set DURAPLAN_CHROMIUM"
        )
    return path


@dataclass
class LiveConsole:
    address: str
    settings: Settings
    tenants: TenantRegistry
    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    model: ScriptedModel = field(default_factory=ScriptedModel)  # the worker's planner model
    _server: uvicorn.Server | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, args=(sock,), name="console-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not (self._server and self._server.started):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"API server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("API server did not start within 60 s")
            time.sleep(0.05)

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except BaseException as exc:
            self._error = exc

    async def _main(self, sock: socket.socket) -> None:
        client = await Client.connect(self.address)
        async with running_worker(client, self.settings, tenants=self.tenants, completion=self.model):
            dp = Duraplan(client, self.settings, tenants=self.tenants)
            app = create_app(dp, self.tenants, max_streams_per_tenant=STREAMS_PER_TENANT)
            self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            await self._server.serve(sockets=[sock])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture(scope="module")
def live(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    home = tmp_path_factory.mktemp("console-home")
    tenants = TenantRegistry(home / "tenants.db")
    settings = Settings(home=home, task_queue=f"console-{uuid.uuid4().hex[:8]}", default_model=MODEL)
    api = LiveConsole(dev_server.address, settings, tenants)
    for name in ("acme", "beta"):
        tenants.create(name)
        api.keys[name] = tenants.issue_key(name, label="console-test")
    api.start()
    try:
        yield api
    finally:
        api.stop()
        tenants.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors too (a Content-Security-Policy violation shows only there), except the
    # browser's own line for a 4xx answer the page handles (e.g. another tenant's run: 404).
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the console: {errors}"
