"""Configuration, resolved once at the edges: argument, then environment, then default.

Workflow code never reads this; activities and clients get a resolved ``Settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from executor.errors import SettingsInvalid

if TYPE_CHECKING:
    # Imported when used: reading settings (every CLI command does) must not load the Temporal
    # client and its protobufs (~0.3 s), which `duraplan validate` never needs.
    from temporalio.client import Client, TLSConfig

    from executor.engine.contract import (
        SA_PLAN_HASH,
        SA_PLAN_NAME,
        SA_SESSION,
        SA_STATUS,
        SA_TENANT,
        SEARCH_ATTRIBUTES,
    )

_CONTRACT_NAMES = frozenset(
    {"SA_PLAN_HASH", "SA_PLAN_NAME", "SA_SESSION", "SA_STATUS", "SA_TENANT", "SEARCH_ATTRIBUTES"}
)


def __getattr__(name: str) -> Any:
    """The search attribute keys, re-exported on first use (they import temporalio)."""
    if name in _CONTRACT_NAMES:
        from executor.engine import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from executor.service.tenants import TenantRegistry

__all__ = [
    "SA_PLAN_HASH",
    "SA_PLAN_NAME",
    "SA_SESSION",
    "SA_STATUS",
    "SA_TENANT",
    "SEARCH_ATTRIBUTES",
    "Settings",
    "connect",
]


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


@dataclass(frozen=True)
class Settings:
    address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "duraplan"
    api_key: str | None = field(default=None, repr=False)  # a credential: never in repr
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    home: Path = Path(".duraplan")
    default_model: str | None = None
    tool_modules: tuple[str, ...] = field(default_factory=tuple)
    # Tag runs with tenant/session/status search attributes (needs them registered on the server;
    # ``duraplan dev`` does). Off only for servers without them, e.g. the time-skipping test server.
    search_attributes: bool = True
    # How long one workflow task may take. Local activities run inside workflow tasks, so long
    # fan-outs of local steps need headroom on a loaded machine; a crashed worker's in-flight
    # local steps are retried after this long.
    workflow_task_timeout: float = 10.0
    # Temporal's HTTP API (http(s)://host:port): the CLI reads runs and sends events through it
    # without loading the Temporal SDK (executor.service.endpoints; `duraplan dev` records its own).
    http_address: str | None = None
    # Enforce the tenant registry (<home>/tenants.db): known tenants, tool grants, rate quotas.
    tenancy: bool = False
    # Per-tenant usage ledger in <home>/store.db (executor.metering).
    metering: bool = True
    # OpenTelemetry traces by OTLP/HTTP to this endpoint (e.g. http://localhost:4318); off when unset.
    otlp_endpoint: str | None = None
    # Temporal SDK metrics for Prometheus on this address (e.g. 127.0.0.1:9464); off when unset.
    prometheus_address: str | None = None
    # PostgreSQL for the tool store and the tenant registry, shared by every worker and client
    # (postgresql://user:password@host:port/dbname); None: SQLite files in ``home``. Not in repr:
    # it may hold a password.
    database_url: str | None = field(default=None, repr=False)
    # Let tenants' stdio MCP sources spawn their command on this worker (DURAPLAN_MCP_STDIO=1).
    # Off by default: a stdio source is code running on the worker host.
    mcp_stdio: bool = False
    # Sandbox workers started ahead of the code steps that will use them, per worker (0: each step
    # waits 5-20 ms for its own). Each idle one is a monty process of ~6 MB RSS; none serves two steps.
    sandbox_spares: int = 2

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """DURAPLAN_* variables over defaults; explicit non-None overrides win over both."""
        env: dict[str, Any] = {
            "address": _env("DURAPLAN_ADDRESS") or _env("TEMPORAL_ADDRESS"),
            "namespace": _env("DURAPLAN_NAMESPACE") or _env("TEMPORAL_NAMESPACE"),
            "task_queue": _env("DURAPLAN_TASK_QUEUE"),
            "api_key": _env("DURAPLAN_API_KEY") or _env("TEMPORAL_API_KEY"),
            "tls": (_env("DURAPLAN_TLS") or "").lower() in ("1", "true", "yes") or None,
            "tls_ca": _path(_env("DURAPLAN_TLS_CA")),
            "tls_cert": _path(_env("DURAPLAN_TLS_CERT")),
            "tls_key": _path(_env("DURAPLAN_TLS_KEY")),
            "home": _path(_env("DURAPLAN_HOME")),
            "default_model": _env("DURAPLAN_MODEL"),
            "tool_modules": tuple(m.strip() for m in (_env("DURAPLAN_TOOL_MODULES") or "").split(",") if m.strip())
            or None,
            "http_address": _http_address(_env("DURAPLAN_HTTP_ADDRESS")),
            "search_attributes": (_env("DURAPLAN_SEARCH_ATTRIBUTES") or "1").lower() not in ("0", "false", "no"),
            "tenancy": (_env("DURAPLAN_TENANCY") or "0").lower() in ("1", "true", "yes"),
            "metering": (_env("DURAPLAN_METERING") or "1").lower() not in ("0", "false", "no"),
            "otlp_endpoint": _env("DURAPLAN_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "prometheus_address": _env("DURAPLAN_PROMETHEUS_ADDRESS"),
            "database_url": _database_url(_env("DURAPLAN_DATABASE_URL")),
            "mcp_stdio": (_env("DURAPLAN_MCP_STDIO") or "0").lower() in ("1", "true", "yes"),
            "sandbox_spares": _count("DURAPLAN_SANDBOX_SPARES", _env("DURAPLAN_SANDBOX_SPARES"), maximum=16),
        }
        values = {k: v for k, v in env.items() if v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def tenant_registry(self) -> TenantRegistry | None:
        """The tenant registry when tenancy is enforced, else None (single-tenant development)."""
        if not self.tenancy:
            return None
        from executor.service.tenants import TenantRegistry

        return TenantRegistry(self.registry_location())

    def store_location(self) -> str | Path:
        """What ``tools.Store`` opens: the shared database, else ``<home>/store.db``."""
        return self.database_url or self.home / "store.db"

    def registry_location(self) -> str | Path:
        """What ``TenantRegistry`` opens: the shared database, else ``<home>/tenants.db``."""
        return self.database_url or self.home / "tenants.db"

    def tls_config(self) -> TLSConfig | bool:
        if not (self.tls or self.tls_ca or self.tls_cert):
            # Temporal Cloud API keys imply TLS.
            return self.api_key is not None
        from temporalio.client import TLSConfig

        return TLSConfig(
            server_root_ca_cert=self.tls_ca.read_bytes() if self.tls_ca else None,
            client_cert=self.tls_cert.read_bytes() if self.tls_cert else None,
            client_private_key=self.tls_key.read_bytes() if self.tls_key else None,
        )


def _database_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("postgresql://", "postgres://")):
        # Never echo the value: it may hold a password.
        raise SettingsInvalid("DURAPLAN_DATABASE_URL must be a postgresql:// URL")
    return value


def _http_address(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        # Never echoed: it may hold credentials.
        raise SettingsInvalid("DURAPLAN_HTTP_ADDRESS must be an http:// or https:// URL")
    return value.rstrip("/") if value else None


def _count(name: str, value: str | None, *, maximum: int) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > maximum:
        raise SettingsInvalid(f"{name} must be a whole number from 0 to {maximum}, got {value!r}")
    return int(value)


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """``lazy``: connect on the first call (a server that must start without Temporal)."""
    from temporalio.client import Client

    from executor.service.converter import UTF8_DATA_CONVERTER
    from executor.service.telemetry import client_interceptors, configure_telemetry, runtime

    configure_telemetry(settings)  # traces / SDK metrics, when the settings ask for them
    return await Client.connect(
        settings.address,
        lazy=lazy,
        namespace=settings.namespace,
        api_key=settings.api_key,
        tls=settings.tls_config(),
        interceptors=client_interceptors(),
        runtime=runtime(),
        data_converter=UTF8_DATA_CONVERTER,  # history stores UTF-8, as every size limit counts it
    )
