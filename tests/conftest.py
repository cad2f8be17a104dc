"""Session-wide fixtures: one Temporal dev server (and its client) per test process.

Under pytest-xdist every worker is its own process, so each gets its own server on a free port;
the same holds for the PostgreSQL server, started on first use, where each test gets a fresh schema.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Before anything can import litellm: use the bundled model cost map, never fetch it.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

# Works whether or not the project is pip-installed (e.g. a bare `pytest` in a fresh checkout).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from executor.service.devserver import DevServer, shutdown_env, start_time_skipping  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    """An in-memory dev server on a free port, UI off; logs in a session tmp dir."""
    home = tmp_path_factory.mktemp("temporal-dev")
    async with DevServer(home, port=0, ui=False, in_memory=True) as server:
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ui_dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    """An in-memory dev server with its UI: the UI server's HTTP API routes duraplan's
    ``<tenant>/<run_id>`` workflow ids, which the CLI's HTTP path needs (tests/test_cli_http.py)."""
    home = tmp_path_factory.mktemp("temporal-dev-ui")
    async with DevServer(home, port=0, ui=True, in_memory=True) as server:
        yield server


@pytest.fixture(scope="session")
def client(dev_server: DevServer) -> Client:
    return dev_server.client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (bundled binary), shut down at session end."""
    env = await start_time_skipping()
    try:
        yield env
    finally:
        await shutdown_env(env)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test process (tests/support/postgres.py), stopped at session end."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A database URL whose tables live in a schema of this test alone."""
    return postgres.fresh_url()


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a Store or TenantRegistry lives, once per backend: a SQLite file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return str(request.getfixturevalue("postgres_url"))
