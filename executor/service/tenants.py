"""The tenant registry: who the tenants are, how they authenticate, and what each one may do.

One embedded SQLite file (WAL, ``secure_delete``, mode 0600), or a PostgreSQL database shared by
several machines (a ``postgresql://`` URL, ``DURAPLAN_DATABASE_URL``), holds tenants, hashed API
keys, quota overrides, the run-creation token buckets, tool grants, HTTP egress allowlists and
secrets; the SQL is written once for both (``tools.database``). The API is synchronous and
thread-safe; several registries or processes on the same database are safe too: every
read-modify-write runs in one transaction that first locks its tenant (``BEGIN IMMEDIATE`` on
SQLite, a per-tenant advisory lock on PostgreSQL).

Errors::

    DuraplanError (executor.errors)
    └── TenantError               root of every tenant-registry error
        ├── UnknownTenant         no tenant with that id
        ├── UnknownKey            no API key with that id (for that tenant)
        ├── AuthenticationFailed  a token that is malformed, unknown or revoked (one message for all)
        ├── QuotaExceeded         ``.limit`` names the quota, ``.retry_after_s`` when to retry (None: raise the limit)
        ├── UnknownSecret         no secret with that name for that tenant
        └── ToolNotGranted        ``.tool`` is not granted to ``.tenant``

Design notes:

* API keys are ``dp_<key_id>_<secret>``: ``key_id`` is 16 hex characters (lookup, never secret),
  ``secret`` is 32 random bytes (``secrets.token_urlsafe``). Only ``sha256(token)`` is stored. A
  256-bit random secret cannot be brute-forced, so a slow KDF (scrypt/PBKDF2) would add nothing
  but latency to every request; the hash is compared with ``hmac.compare_digest``.
* Quotas store only a tenant's overrides; everything else follows ``Quotas()`` defaults.
* The run-creation token bucket (``runs_per_second`` refill, ``runs_burst`` capacity) lives in
  SQLite with wall-clock timestamps, so a restarted service continues the same bucket. A submitting
  process leases tokens from it a few at a time (``take_leased_run_token``) and spends them in
  memory within ``RUN_LEASE_S``: the bucket still bounds every process's starts together.
* Tool grants are allow-patterns (``fnmatch``, case-sensitive). A new tenant gets
  ``DEFAULT_TOOL_GRANTS``: every built-in except ``debug.*`` (test tools that sleep, fail or echo).
  Tools from ``DURAPLAN_TOOL_MODULES`` must be granted explicitly.
* The egress allowlist uses ``tools.egress.HttpPolicy`` entry syntax; a new tenant's list is
  empty, which denies all HTTP egress until entries are added. Loopback and private addresses
  stay refused unless an administrator names exact ``host:port`` targets for the tenant
  (``set_private_egress``; none by default). ``http_policy(tenant)`` combines both.
* Tool sources (MCP servers, OpenAPI services) and their catalogs live in the same database
  (``sources``, a ``tools.sources.SourceStore``) and go with the tenant.
* Secret values are Fernet-encrypted when ``DURAPLAN_SECRETS_KEY`` is set and ``cryptography`` is
  installed; otherwise they are stored as plaintext in the 0600 file. A shared PostgreSQL database
  has no file mode to lean on, so there setting a secret without the key is an error. A key set
  without the package is an error on secret operations (never a silent plaintext fallback). Values
  are never logged and no ``repr`` shows them.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import hmac
import importlib
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from executor.engine.models import RunQuotas
from executor.errors import DuraplanError, register_failure_type
from executor.lang.validate import all_steps
from schemas.plan import CodeStep, Plan, ScriptStep, SubplanStep
from tools.database import Tx, is_database_url, open_database

if TYPE_CHECKING:
    from tools.sources.store import SourceStore

__all__ = [
    "DEFAULT_TOOL_GRANTS",
    "SECRETS_KEY_ENV",
    "ApiKey",
    "AuthenticationFailed",
    "QuotaExceeded",
    "Quotas",
    "RateDecision",
    "Tenant",
    "TenantContext",
    "TenantError",
    "TenantRegistry",
    "ToolNotGranted",
    "UnknownKey",
    "UnknownSecret",
    "UnknownTenant",
]

SECRETS_KEY_ENV = "DURAPLAN_SECRETS_KEY"
# Every built-in tool except the debug.* family.
DEFAULT_TOOL_GRANTS: tuple[str, ...] = ("http.request", "kv.*", "notify", "transform")
MiB = 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024

# The same rule as executor.service.client.NAME_PATTERN (a test keeps them equal): tenant ids go into
# Temporal workflow ids and search attributes.
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_TOOL_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,200}$")
_TOKEN = re.compile(r"^dp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_RUN_BUCKET = "runs"


# ---- errors ------------------------------------------------------------------------------------


class TenantError(DuraplanError):
    """Root of every tenant-registry error."""


class UnknownTenant(TenantError):
    http_status, problem, title = 404, "not-found", "Not found"

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        super().__init__(f"unknown tenant {tenant_id!r}")


class UnknownKey(TenantError):
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"unknown API key {key_id!r}")


class AuthenticationFailed(TenantError):
    http_status, problem, title = 401, "authentication", "Authentication failed"

    def __init__(self) -> None:
        super().__init__("invalid or revoked API key")


# A refusal for max_concurrent_runs has no known wait: a run must end first. Clients are told to
# come back after this many seconds (HTTP Retry-After) rather than at once.
CONCURRENCY_RETRY_S = 5.0


class QuotaExceeded(TenantError):
    """A tenant hit ``limit``; retry after ``retry_after_s`` seconds (None: only a raised limit helps)."""

    http_status, problem, title = 429, "quota", "Quota exceeded"

    def __init__(
        self, limit: str, retry_after_s: float | None, *, tenant: str | None = None, detail: str | None = None
    ) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.tenant = tenant
        who = f"tenant {tenant!r} " if tenant else ""
        what = f" ({detail})" if detail else ""
        when = (
            f"retry in {retry_after_s:.3f}s"
            if retry_after_s is not None
            else "retrying will not help until the limit is raised"
        )
        self.detail = detail
        super().__init__(f"{who}exceeded quota {limit}{what}; {when}")

    @property
    def retryable(self) -> bool:  # type: ignore[override]  # a rate refusal passes; a size never does
        return self.retry_after_s is not None

    def status_code(self) -> int:
        return _QUOTA_STATUS.get(self.limit, 429)

    def retry_after_seconds(self) -> float | None:
        if self.retry_after_s is None and self.status_code() == 429:
            return CONCURRENCY_RETRY_S  # a running run must end first: try again later
        return self.retry_after_s

    def problem_extra(self) -> dict[str, Any]:
        return {"limit": self.limit, "retry_after_s": self.retry_after_s}

    def failure_details(self) -> dict[str, Any]:
        return {"limit": self.limit, "retry_after_s": self.retry_after_s, "tenant": self.tenant, "detail": self.detail}

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        if "limit" not in details:  # the workflow's own refusal (EventTooLarge): the run's pinned quota
            return cls("max_event_bytes", None, tenant=details.get("tenant"), detail=message)
        limit, retry = details["limit"], details.get("retry_after_s")
        return cls(limit, retry, tenant=details.get("tenant"), detail=details.get("detail"))


# Limits a request breaks by its own size or shape: retrying the same request cannot help, so not 429.
_QUOTA_STATUS = {"max_event_bytes": 413, "max_steps_per_run": 422, "code_cpu_seconds": 422, "code_memory_mb": 422}
# The workflow refuses an event over the run's pinned max_event_bytes under this name.
register_failure_type("EventTooLarge", QuotaExceeded.from_details)


class UnknownSecret(TenantError):
    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.name = name
        super().__init__(f"tenant {tenant_id!r} has no secret {name!r}")


class ToolNotGranted(TenantError):
    http_status, problem, title = 403, "forbidden", "Tool not granted"

    def __init__(self, tool: str, tenant: str) -> None:
        self.tool = tool
        self.tenant = tenant
        super().__init__(f"tool {tool!r} is not granted to tenant {tenant!r}")


# ---- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    display_name: str | None
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ApiKey:
    """An issued key's metadata; the secret is never stored, so never here either."""

    key_id: str
    tenant_id: str
    label: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "active": self.active}


@dataclass(frozen=True)
class Quotas:
    """Per-tenant limits; the defaults mirror the reference product."""

    runs_per_second: float = 300.0
    runs_burst: int = 300
    max_concurrent_runs: int = 50_000
    max_steps_per_run: int = 10_000
    max_step_output_bytes: int = 1 * MiB
    max_event_bytes: int = 1 * MiB
    code_cpu_seconds: float = 30.0
    code_memory_mb: int = 256
    # Steps of this tenant running at once on one worker process (tool, code and llm steps); more
    # wait their turn, so a tenant's fan-out cannot take every slot (see executor/fairness.py).
    max_inflight_steps: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def for_run(self) -> RunQuotas:
        """The limits a run carries (and enforces inside the workflow and its activities)."""
        return RunQuotas(
            max_steps=self.max_steps_per_run,
            max_step_output_bytes=self.max_step_output_bytes,
            max_event_bytes=self.max_event_bytes,
            code_cpu_seconds=self.code_cpu_seconds,
            code_memory_mb=self.code_memory_mb,
            max_inflight_steps=self.max_inflight_steps,
        )

    def check_plan(self, plan: Plan, tenant: str) -> None:
        """QuotaExceeded, naming the step and the limit, for a plan that asks for more than the
        tenant may have; before anything starts. Unset limits are lowered to the quota instead."""
        if "max_steps" in plan.limits.model_fields_set and plan.limits.max_steps > self.max_steps_per_run:
            raise QuotaExceeded(
                "max_steps_per_run",
                None,
                tenant=tenant,
                detail=f"the plan sets limits.max_steps={plan.limits.max_steps}; the cap is {self.max_steps_per_run}",
            )
        for step in all_steps(plan.steps):
            if isinstance(step, SubplanStep):
                self.check_plan(step.plan, tenant)
            if not isinstance(step, CodeStep | ScriptStep):  # a script's limits are per segment
                continue
            if step.memory_mb is not None and step.memory_mb > self.code_memory_mb:
                detail = f"step {step.id!r} asks memory_mb={step.memory_mb}; the cap is {self.code_memory_mb}"
                raise QuotaExceeded("code_memory_mb", None, tenant=tenant, detail=detail)
            if step.cpu_seconds is not None and step.cpu_seconds > self.code_cpu_seconds:
                detail = f"step {step.id!r} asks cpu_seconds={step.cpu_seconds:g}; the cap is {self.code_cpu_seconds:g}"
                raise QuotaExceeded("code_cpu_seconds", None, tenant=tenant, detail=detail)


_QUOTA_TYPES: dict[str, type] = {f.name: get_type_hints(Quotas)[f.name] for f in dataclasses.fields(Quotas)}


@dataclass(frozen=True)
class RateDecision:
    """Whether tokens were taken; if not, how long until enough have refilled (``inf``: never)."""

    allowed: bool
    retry_after_s: float
    remaining: float = 0.0


# ---- the registry ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id {TEXT} PRIMARY KEY,
    display_name {TEXT},
    created_at {REAL} NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    label {TEXT} NOT NULL,
    token_sha256 {BLOB} NOT NULL,
    created_at {REAL} NOT NULL,
    revoked_at {REAL}
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant_id);
CREATE TABLE IF NOT EXISTS quota_overrides (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name {TEXT} NOT NULL,
    value {REAL} NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    bucket {TEXT} NOT NULL,
    tokens {REAL} NOT NULL,
    updated_at {REAL} NOT NULL,
    PRIMARY KEY (tenant_id, bucket)
);
CREATE TABLE IF NOT EXISTS tool_grants (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    pattern {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, pattern)
);
CREATE TABLE IF NOT EXISTS egress (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    entry {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, entry)
);
CREATE TABLE IF NOT EXISTS retired_tenants (
    tenant_id {TEXT} PRIMARY KEY,
    deleted_at {REAL} NOT NULL
);
CREATE TABLE IF NOT EXISTS egress_private (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    target {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, target)
);
CREATE TABLE IF NOT EXISTS secrets (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name {TEXT} NOT NULL,
    scheme {TEXT} NOT NULL,
    value {BLOB} NOT NULL,
    updated_at {REAL} NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""


RUN_LEASE_S = 0.5  # how long run tokens a process took ahead may be spent (then given back)
RUN_LEASE_MAX = 32  # run tokens taken ahead at most, in one transaction


@dataclass
class _Lease:
    tokens: int = 0  # taken from the bucket, not spent yet
    spent: int = 0  # spent from the current lease
    size: int = 1  # how many the current lease took
    expires: float = -math.inf  # time.monotonic()


CONTEXT_TTL_S = 1.0  # how stale a submit's view of a tenant may be (changes made here apply at once)


@dataclass(frozen=True)
class TenantContext:
    """What starting a run needs of a tenant, read in one go and kept ``CONTEXT_TTL_S``: a submit
    then costs no registry read. Changes through this registry drop it at once; changes made by
    another process are seen within the TTL (grants are checked again at dispatch)."""

    tenant: Tenant
    quotas: Quotas
    grants: tuple[str, ...]
    expires: float  # time.monotonic()

    def is_tool_granted(self, tool_name: str) -> bool:
        return any(fnmatch.fnmatchcase(tool_name, pattern) for pattern in self.grants)


def _rate_refused(tenant_id: str, decision: RateDecision, quotas: Quotas) -> QuotaExceeded:
    retry = decision.retry_after_s if math.isfinite(decision.retry_after_s) else None
    detail = f"{quotas.runs_per_second:g}/s, burst {quotas.runs_burst}"
    return QuotaExceeded("runs_per_second", retry, tenant=tenant_id, detail=detail)


class TenantRegistry:
    """Tenants, keys, quotas, rate buckets, grants, egress and secrets in one SQLite file at
    ``path``, or in PostgreSQL when ``path`` is a ``postgresql://`` URL.

    ``secrets_key`` (default: ``$DURAPLAN_SECRETS_KEY``) is a Fernet key for secret values.
    """

    def __init__(self, path: str | os.PathLike[str], *, secrets_key: str | None = None) -> None:
        # The file is created 0600 (its -wal/-shm files copy the mode), in a 0700 directory.
        self._db = open_database(
            path,
            sqlite_pragmas=("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON", "synchronous=NORMAL"),
            sqlite_mode=0o600,
        )
        # Where the registry lives, fit to print: the file, or the URL without its password.
        self.location = self._db.location
        self.path = None if is_database_url(path) else Path(path)
        self._secrets_key = secrets_key if secrets_key is not None else (os.environ.get(SECRETS_KEY_ENV) or None)
        self._cipher: Any = None
        # ciphertext -> value: every tool call reads all of its tenant's secrets (redaction must
        # know them all), and Fernet costs ~10 us each (1.1 ms of CPU per call at 100 secrets). A
        # changed secret has a new ciphertext, so nothing stale is ever returned.
        self._decrypted: dict[bytes, str] = {}
        self._contexts: dict[str, TenantContext] = {}
        self._leases: dict[str, _Lease] = {}  # tenant -> run tokens this process took ahead
        self._lease_lock = threading.Lock()  # the leases in memory (an event loop takes it too)
        self._lease_io = threading.Lock()  # one lease transaction at a time
        try:
            self._db.create_schema(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        encrypted = "on" if self._secrets_key else "off"
        return f"TenantRegistry(location={self.location!r}, secret_encryption={encrypted})"

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TenantRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> contextlib.AbstractContextManager[Tx]:
        """One write transaction; read-modify-write inside it locks its tenant first (``_require``)."""
        return self._db.transaction()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._db.reading() as db:
            return [tuple(row) for row in db.execute(sql, tuple(params)).fetchall()]

    @staticmethod
    def _require(db: Tx, tenant_id: str) -> None:
        """UnknownTenant unless the tenant exists; holds the tenant's lock until the transaction ends."""
        _check_lookup(_TENANT_ID, tenant_id, UnknownTenant(tenant_id))
        db.lock("tenant", tenant_id)
        if db.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone() is None:
            raise UnknownTenant(tenant_id)

    # ---- tenants -------------------------------------------------------------------------------

    def create(self, tenant_id: str, *, display_name: str | None = None) -> Tenant:
        """A new tenant with default quotas, ``DEFAULT_TOOL_GRANTS`` and no egress; TenantError if it exists."""
        if not _TENANT_ID.fullmatch(tenant_id):
            raise ValueError(f"tenant id {tenant_id!r} must match {_TENANT_ID.pattern}")
        tenant = Tenant(tenant_id, display_name, time.time())
        with self._tx() as db:
            db.lock("tenant", tenant_id)
            if db.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone():
                raise TenantError(f"tenant {tenant_id!r} already exists")
            if db.execute("SELECT 1 FROM retired_tenants WHERE tenant_id = ?", (tenant_id,)).fetchone():
                # Run histories (in Temporal, until its retention) and, until purged, kv values (in
                # the tool store) are keyed by the name and outlive the registry row: a new owner of
                # the name would read them.
                raise TenantError(
                    f"tenant {tenant_id!r} was deleted and its run histories stay under that name; "
                    "it cannot be reused: choose another tenant id"
                )
            db.execute("INSERT INTO tenants VALUES (?, ?, ?)", (tenant_id, display_name, tenant.created_at))
            db.executemany("INSERT INTO tool_grants VALUES (?, ?)", [(tenant_id, p) for p in DEFAULT_TOOL_GRANTS])
        return tenant

    def get(self, tenant_id: str) -> Tenant:
        _check_lookup(_TENANT_ID, tenant_id, UnknownTenant(tenant_id))
        rows = self._rows("SELECT tenant_id, display_name, created_at FROM tenants WHERE tenant_id = ?", (tenant_id,))
        if not rows:
            raise UnknownTenant(tenant_id)
        return Tenant(*rows[0])

    def context(self, tenant_id: str) -> TenantContext:
        """The tenant, its quotas and grants; UnknownTenant if it does not exist (cached: see TenantContext)."""
        cached = self._contexts.get(tenant_id)
        now = time.monotonic()
        if cached is not None and cached.expires > now:
            return cached
        context = TenantContext(
            self.get(tenant_id), self.quotas(tenant_id), tuple(self.granted_tools(tenant_id)), now + CONTEXT_TTL_S
        )
        self._contexts[tenant_id] = context
        return context

    def fresh_context(self, tenant_id: str) -> TenantContext | None:
        """The cached context if it is still fresh, else None: never touches the database (an
        event loop may call it; on None, ``context`` off the loop)."""
        cached = self._contexts.get(tenant_id)
        return cached if cached is not None and cached.expires > time.monotonic() else None

    def _forget(self, tenant_id: str) -> None:
        """A change made here applies to the next submit: no cached context, no leased tokens
        (they are not given back: the bucket only ever undercounts what is left)."""
        self._contexts.pop(tenant_id, None)
        with self._lease_lock:
            self._leases.pop(tenant_id, None)

    def list(self) -> builtins.list[Tenant]:
        rows = self._rows("SELECT tenant_id, display_name, created_at FROM tenants ORDER BY tenant_id")
        return [Tenant(*row) for row in rows]

    def delete(self, tenant_id: str) -> None:
        """Remove a tenant and everything of it (keys, quotas, buckets, grants, egress, secrets).
        The name is retired: its run histories outlive it, so no new tenant may take it. Its runs
        and tool-store data are ended by ``executor.service.tenant_purge`` (the CLI's ``delete``)."""
        with self._tx() as db:
            self._require(db, tenant_id)
            db.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant_id,))
            db.execute("DELETE FROM retired_tenants WHERE tenant_id = ?", (tenant_id,))  # portable upsert
            db.execute("INSERT INTO retired_tenants VALUES (?, ?)", (tenant_id, time.time()))
        self._forget(tenant_id)

    def is_retired(self, tenant_id: str) -> bool:
        """True for a deleted tenant's name (``delete``): what ``executor.service.tenant_purge`` ends."""
        return self._rows("SELECT 1 FROM retired_tenants WHERE tenant_id = ?", (tenant_id,)) != []

    # ---- API keys ------------------------------------------------------------------------------

    def issue_key(self, tenant_id: str, *, label: str) -> str:
        """A new key for the tenant; the plaintext is returned here once and never stored."""
        if not label.strip():
            raise ValueError("an API key needs a non-empty label")
        key_id = secrets.token_hex(8)
        token = f"dp_{key_id}_{secrets.token_urlsafe(32)}"
        with self._tx() as db:
            self._require(db, tenant_id)
            db.execute(
                "INSERT INTO api_keys (key_id, tenant_id, label, token_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, tenant_id, label, _digest(token), time.time()),
            )
        return token

    def authenticate(self, token: str) -> Tenant:
        """The tenant an active key belongs to; AuthenticationFailed for anything else."""
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        key_id = match.group(1) if match else ""
        rows = self._rows(
            "SELECT k.token_sha256, k.revoked_at, t.tenant_id, t.display_name, t.created_at"
            " FROM api_keys k JOIN tenants t USING (tenant_id) WHERE k.key_id = ?",
            (key_id,),
        )
        # Compare even when there is nothing to compare with, so timing does not tell them apart.
        stored = bytes(rows[0][0]) if rows else _DUMMY_DIGEST
        same = hmac.compare_digest(stored, _digest(token if isinstance(token, str) else ""))
        if not (match and rows and same and rows[0][1] is None):
            raise AuthenticationFailed()
        return Tenant(*rows[0][2:])

    def revoke_key(self, key_id: str, *, tenant_id: str | None = None) -> None:
        """Revoke a key (idempotent); with ``tenant_id``, only a key of that tenant (else UnknownKey)."""
        _check_lookup(_KEY_ID, key_id, UnknownKey(key_id))
        with self._tx() as db:
            row = db.execute("SELECT tenant_id FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None or (tenant_id is not None and row[0] != tenant_id):
                raise UnknownKey(key_id)
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id)
            )

    def list_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        self.get(tenant_id)
        rows = self._rows(
            "SELECT key_id, tenant_id, label, created_at, revoked_at FROM api_keys WHERE tenant_id = ?"
            " ORDER BY created_at, key_id",
            (tenant_id,),
        )
        return [ApiKey(*row) for row in rows]

    # ---- quotas --------------------------------------------------------------------------------

    def quotas(self, tenant_id: str) -> Quotas:
        self.get(tenant_id)
        with self._db.reading() as db:
            return self._quotas(db, tenant_id)

    def _quotas(self, db: Tx, tenant_id: str) -> Quotas:
        rows = db.execute("SELECT name, value FROM quota_overrides WHERE tenant_id = ?", (tenant_id,)).fetchall()
        values = {name: _QUOTA_TYPES[name](value) for name, value in rows if name in _QUOTA_TYPES}
        return Quotas(**values)

    def set_quotas(self, tenant_id: str, **changes: float | None) -> Quotas:
        """Override quotas by field name; ``None`` resets one to its default. Returns the result."""
        for name, value in changes.items():
            if name not in _QUOTA_TYPES:
                raise ValueError(f"unknown quota {name!r} (known: {', '.join(_QUOTA_TYPES)})")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"quota {name} must be a positive number, not {value!r}")
            if _QUOTA_TYPES[name] is int and value != int(value):
                raise ValueError(f"quota {name} must be a whole number, not {value!r}")
        with self._tx() as db:
            self._require(db, tenant_id)
            for name, value in changes.items():
                if value is None:
                    db.execute("DELETE FROM quota_overrides WHERE tenant_id = ? AND name = ?", (tenant_id, name))
                else:
                    db.execute(
                        "INSERT INTO quota_overrides VALUES (?, ?, ?)"
                        " ON CONFLICT (tenant_id, name) DO UPDATE SET value = excluded.value",
                        (tenant_id, name, float(value)),
                    )
            self._forget(tenant_id)
            return self._quotas(db, tenant_id)

    # ---- run-creation rate limit ---------------------------------------------------------------

    def take_run_tokens(self, tenant_id: str, n: int = 1, *, now: float | None = None) -> RateDecision:
        """Take ``n`` run-creation tokens from the tenant's persistent bucket, or none at all.

        The bucket holds up to ``runs_burst`` tokens and refills at ``runs_per_second``; it starts
        full. ``now`` is wall-clock seconds (injectable for tests); a clock that steps back refills
        nothing. More tokens than the burst can never be granted: ``retry_after_s`` is ``inf``.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        quotas, taken, tokens = self._spend_run_bucket(
            tenant_id, time.time() if now is None else now, lambda available, _: n if n <= available else 0
        )
        if taken:
            return RateDecision(True, 0.0, tokens)
        retry = math.inf if n > quotas.runs_burst else (n - tokens) / quotas.runs_per_second
        return RateDecision(False, retry, tokens)

    def _spend_run_bucket(
        self, tenant_id: str, now: float, spend: Callable[[float, Quotas], int], give_back: int = 0
    ) -> tuple[Quotas, int, float]:
        """In one transaction: refill the tenant's run bucket up to ``now``, add ``give_back``
        (never past the burst), take ``spend(available, quotas)`` tokens and store what is left:
        (quotas, tokens taken, tokens left)."""
        with self._tx() as db:
            self._require(db, tenant_id)
            quotas = self._quotas(db, tenant_id)
            rate, burst = quotas.runs_per_second, float(quotas.runs_burst)
            row = db.execute(
                "SELECT tokens, updated_at FROM rate_buckets WHERE tenant_id = ? AND bucket = ?",
                (tenant_id, _RUN_BUCKET),
            ).fetchone()
            tokens = burst if row is None else min(burst, row[0] + max(0.0, now - row[1]) * rate)
            tokens = min(burst, tokens + give_back)
            taken = spend(tokens, quotas)
            tokens -= taken
            db.execute(
                "INSERT INTO rate_buckets VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, bucket)"
                " DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                (tenant_id, _RUN_BUCKET, tokens, max(now, row[1]) if row else now),
            )
        return quotas, taken, tokens

    def require_run_tokens(self, tenant_id: str, n: int = 1, *, now: float | None = None) -> None:
        """``take_run_tokens`` that raises QuotaExceeded("runs_per_second", retry_after_s) on refusal."""
        decision = self.take_run_tokens(tenant_id, n, now=now)
        if not decision.allowed:
            raise _rate_refused(tenant_id, decision, self.quotas(tenant_id))

    # A submit that took its run token from the database paid a write transaction (a thread hop
    # and a lock on the tenant) per start: a fifth of a start's cost at a few hundred starts/s.
    # A process now takes tokens from the bucket a few at a time (one transaction) and spends them
    # in memory within RUN_LEASE_S. Every run started still spent a token taken from the shared
    # bucket, so the quota stays an exact upper bound across processes (it never over-admits);
    # what a process holds unspent is given back with its next lease, or lost if it has none
    # (the quota then errs low by at most the lease size, a tenth of the burst at most).

    def spend_leased_run_token(self, tenant_id: str) -> bool:
        """Spend one run token this process leased within ``RUN_LEASE_S``; False when it has none
        left (then ``take_leased_run_token``). Memory only: an event loop may call it."""
        with self._lease_lock:
            lease = self._leases.get(tenant_id)
            if lease is None or lease.tokens < 1 or lease.expires <= time.monotonic():
                return False
            lease.tokens -= 1
            lease.spent += 1
            return True

    def take_leased_run_token(self, tenant_id: str) -> None:
        """Spend one run token, leasing a batch from the tenant's bucket (one transaction) when this
        process has none left; QuotaExceeded("runs_per_second") when the bucket has none either.

        The batch follows demand: twice the last one if that was spent before it expired, else
        as many as were spent in it; one for a tenant that starts runs now and then (the same
        write per start as an unleased token), at most ``min(RUN_LEASE_MAX, runs_burst // 10)``."""
        # One lease at a time per process (the others then spend from it); the memory lock is
        # never held across the transaction: the event loop takes it in spend_leased_run_token.
        with self._lease_io:
            with self._lease_lock:
                now = time.monotonic()
                lease = self._leases.setdefault(tenant_id, _Lease())
                if lease.tokens >= 1 and lease.expires > now:
                    lease.tokens -= 1
                    lease.spent += 1
                    return
                want = min(2 * lease.size, RUN_LEASE_MAX) if lease.expires > now else max(1, lease.spent)
                give_back, lease.tokens = lease.tokens, 0  # unspendable now: back with this lease
            try:
                decision, granted = self._lease_run_tokens(tenant_id, want, give_back)
            except BaseException:
                with self._lease_lock:
                    lease.tokens += give_back  # nothing was written: they are still this process's
                raise
            with self._lease_lock:
                # A quota change dropped the lease meanwhile: this start spends its token, the rest
                # of the batch is not spent under the old quota (the bucket undercounts).
                if self._leases.get(tenant_id) is lease:
                    lease.size = max(granted, 1)
                    if decision.allowed:
                        # tokens given back meanwhile (runs that did not start) stay in the lease
                        lease.tokens, lease.spent, lease.expires = lease.tokens + granted - 1, 1, now + RUN_LEASE_S
        if not decision.allowed:
            raise _rate_refused(tenant_id, decision, self._quotas_cached(tenant_id))

    def give_back_run_token(self, tenant_id: str) -> None:
        """A token spent on a run that did not start (refused later, or an idempotent re-submit):
        back into this process's lease, and with it to the bucket at the next lease. Memory only."""
        with self._lease_lock:
            lease = self._leases.setdefault(tenant_id, _Lease())
            lease.tokens += 1
            lease.spent = max(lease.spent - 1, 0)

    def _lease_run_tokens(self, tenant_id: str, want: int, give_back: int) -> tuple[RateDecision, int]:
        """Give ``give_back`` tokens back and take between 1 and ``want`` (capped by the burst), in one
        transaction: (decision, tokens taken)."""

        def lease(available: float, quotas: Quotas) -> int:
            return max(0, min(want, max(1, min(RUN_LEASE_MAX, quotas.runs_burst // 10)), math.floor(available)))

        quotas, taken, tokens = self._spend_run_bucket(tenant_id, time.time(), lease, give_back)
        if taken:
            return RateDecision(True, 0.0, tokens), taken
        return RateDecision(False, (1 - tokens) / quotas.runs_per_second, tokens), 0

    def _quotas_cached(self, tenant_id: str) -> Quotas:
        cached = self.fresh_context(tenant_id)
        return cached.quotas if cached is not None else self.quotas(tenant_id)

    # ---- tool grants ---------------------------------------------------------------------------

    def grant_tools(self, tenant_id: str, patterns: Iterable[str]) -> None:
        checked = _tool_patterns(patterns)
        with self._tx() as db:
            self._require(db, tenant_id)
            db.executemany(
                "INSERT INTO tool_grants VALUES (?, ?) ON CONFLICT DO NOTHING", [(tenant_id, p) for p in checked]
            )
        self._contexts.pop(tenant_id, None)

    def revoke_tools(self, tenant_id: str, patterns: Iterable[str]) -> None:
        """Remove grant patterns exactly as granted (revoking ``kv.get`` does not narrow ``kv.*``)."""
        checked = _tool_patterns(patterns)
        with self._tx() as db:
            self._require(db, tenant_id)
            db.executemany(
                "DELETE FROM tool_grants WHERE tenant_id = ? AND pattern = ?", [(tenant_id, p) for p in checked]
            )
        self._contexts.pop(tenant_id, None)

    def granted_tools(self, tenant_id: str) -> builtins.list[str]:
        self.get(tenant_id)
        rows = self._rows("SELECT pattern FROM tool_grants WHERE tenant_id = ? ORDER BY pattern", (tenant_id,))
        return [row[0] for row in rows]

    def is_tool_granted(self, tenant_id: str, tool_name: str) -> bool:
        return any(fnmatch.fnmatchcase(tool_name, pattern) for pattern in self.granted_tools(tenant_id))

    def require_tool(self, tenant_id: str, tool_name: str) -> None:
        if not self.is_tool_granted(tenant_id, tool_name):
            raise ToolNotGranted(tool_name, tenant_id)

    # ---- HTTP egress ---------------------------------------------------------------------------

    def set_egress(self, tenant_id: str, entries: Iterable[str]) -> builtins.list[str]:
        """Replace the tenant's allowlist (``tools.egress.HttpPolicy`` syntax); empty denies all egress."""
        if isinstance(entries, str):
            raise TypeError("entries must be a collection of strings, not one string")
        normalized = sorted({e.strip().lower() for e in entries})
        from tools.egress import HttpPolicy  # validates the entries exactly as enforcement will read them

        try:
            HttpPolicy(allowed_hosts=frozenset(normalized))
        except ValueError as exc:
            raise ValueError(str(exc).replace("allowed_hosts entry", "egress entry")) from None
        with self._tx() as db:
            self._require(db, tenant_id)
            db.execute("DELETE FROM egress WHERE tenant_id = ?", (tenant_id,))
            db.executemany("INSERT INTO egress VALUES (?, ?)", [(tenant_id, e) for e in normalized])
        return normalized

    def egress(self, tenant_id: str) -> builtins.list[str]:
        self.get(tenant_id)
        return [
            row[0] for row in self._rows("SELECT entry FROM egress WHERE tenant_id = ? ORDER BY entry", (tenant_id,))
        ]

    def set_private_egress(self, tenant_id: str, targets: Iterable[str]) -> builtins.list[str]:
        """Replace the local/private targets (exact ``host:port``) an administrator lets this
        tenant reach despite the address checks; empty (the default) admits none."""
        if isinstance(targets, str):
            raise TypeError("targets must be a collection of strings, not one string")
        from tools.egress import parse_private_target

        normalized = sorted({parse_private_target(t) for t in targets})
        with self._tx() as db:
            self._require(db, tenant_id)
            db.execute("DELETE FROM egress_private WHERE tenant_id = ?", (tenant_id,))
            db.executemany("INSERT INTO egress_private VALUES (?, ?)", [(tenant_id, t) for t in normalized])
        return normalized

    def private_egress(self, tenant_id: str) -> builtins.list[str]:
        self.get(tenant_id)
        rows = self._rows("SELECT target FROM egress_private WHERE tenant_id = ? ORDER BY target", (tenant_id,))
        return [row[0] for row in rows]

    def http_policy(self, tenant_id: str) -> Any:
        """The tenant's ``tools.egress.HttpPolicy``: its allowlist plus its named private targets."""
        from tools.egress import HttpPolicy

        return HttpPolicy(
            allowed_hosts=frozenset(self.egress(tenant_id)), allowed_private=frozenset(self.private_egress(tenant_id))
        )

    @functools.cached_property
    def sources(self) -> SourceStore:
        """The tenants' tool sources (MCP servers, OpenAPI services) and their fetched catalogs."""
        from tools.sources.store import SourceStore

        return SourceStore(self._db)

    # ---- secrets -------------------------------------------------------------------------------

    def set_secret(self, tenant_id: str, name: str, value: str) -> None:
        if not _SECRET_NAME.fullmatch(name):
            raise ValueError(f"secret name {name!r} must match {_SECRET_NAME.pattern}")
        data = value.encode()
        if not data:
            raise ValueError(f"secret {name!r} is empty")
        if len(data) > MAX_SECRET_BYTES:
            raise ValueError(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
        cipher = self._fernet()
        if cipher is None and self.path is None:
            raise TenantError(f"secrets in a shared database are stored encrypted only: set {SECRETS_KEY_ENV}")
        scheme, stored = ("fernet", cipher.encrypt(data)) if cipher is not None else ("plain", data)
        with self._tx() as db:
            self._require(db, tenant_id)
            db.execute(
                "INSERT INTO secrets VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO UPDATE"
                " SET scheme = excluded.scheme, value = excluded.value, updated_at = excluded.updated_at",
                (tenant_id, name, scheme, stored, time.time()),
            )

    def delete_secret(self, tenant_id: str, name: str) -> None:
        _check_lookup(_SECRET_NAME, name, UnknownSecret(tenant_id, name))
        with self._tx() as db:
            self._require(db, tenant_id)
            if db.execute("DELETE FROM secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name)).rowcount == 0:
                raise UnknownSecret(tenant_id, name)

    def secret_names(self, tenant_id: str) -> builtins.list[str]:
        self.get(tenant_id)
        return [
            row[0] for row in self._rows("SELECT name FROM secrets WHERE tenant_id = ? ORDER BY name", (tenant_id,))
        ]

    def resolve_secret(self, tenant_id: str, name: str) -> str:
        self.get(tenant_id)
        _check_lookup(_SECRET_NAME, name, UnknownSecret(tenant_id, name))
        rows = self._rows("SELECT scheme, value FROM secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        if not rows:
            raise UnknownSecret(tenant_id, name)
        scheme, stored = rows[0][0], bytes(rows[0][1])
        if scheme == "plain":
            return stored.decode()
        if self._fernet() is None:
            raise TenantError(f"secret {name!r} of tenant {tenant_id!r} is encrypted; set {SECRETS_KEY_ENV}")
        try:
            value = self._decrypt(stored)
            assert value is not None
            return value
        except Exception:  # cryptography.fernet.InvalidToken, without importing it statically
            raise TenantError(
                f"cannot decrypt secret {name!r} of tenant {tenant_id!r}: wrong {SECRETS_KEY_ENV}?"
            ) from None

    def secret_values(self, tenant_id: str) -> builtins.list[str]:
        """Every secret value of the tenant this process can decrypt: what redaction must find.
        (One it cannot decrypt it cannot have handed to a tool either.)"""
        out = []
        for scheme, stored in self._rows("SELECT scheme, value FROM secrets WHERE tenant_id = ?", (tenant_id,)):
            if scheme == "plain":
                out.append(bytes(stored).decode())
                continue
            with contextlib.suppress(Exception):  # InvalidToken: not this key's, so never resolved here
                value = self._decrypt(bytes(stored))
                if value is not None:
                    out.append(value)
        return out

    def _decrypt(self, stored: bytes) -> str | None:
        """The value of an encrypted secret (None without a key); InvalidToken if not this key's."""
        value = self._decrypted.get(stored)
        if value is None:
            cipher = self._fernet()
            if cipher is None:
                return None
            value = str(cipher.decrypt(stored).decode())
            if len(self._decrypted) >= 10_000:
                self._decrypted.clear()
            self._decrypted[stored] = value
        return value

    def _fernet(self) -> Any:
        """The Fernet cipher for the configured key, None without a key."""
        if self._secrets_key is None:
            return None
        if self._cipher is None:
            try:
                fernet = importlib.import_module("cryptography.fernet")
            except ImportError:
                raise TenantError(f"{SECRETS_KEY_ENV} is set but the 'cryptography' package is not installed") from None
            try:
                self._cipher = fernet.Fernet(self._secrets_key.encode())
            except (ValueError, TypeError):
                raise TenantError(f"{SECRETS_KEY_ENV} is not a valid Fernet key") from None
        return self._cipher


def _check_lookup(rule: re.Pattern[str], value: str, missing: TenantError) -> None:
    """A name that could never have been stored is not there: say so without asking the database
    (PostgreSQL would refuse e.g. a NUL character with a driver error instead)."""
    if not isinstance(value, str) or not rule.fullmatch(value):
        raise missing


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_DUMMY_DIGEST = _digest("dp_0000000000000000_" + "0" * 43)


def _tool_patterns(patterns: Iterable[str]) -> builtins.list[str]:
    if isinstance(patterns, str):
        raise TypeError("patterns must be a collection of strings, not one string")
    checked = [p.strip() for p in patterns]
    for pattern in checked:
        if not _TOOL_PATTERN.fullmatch(pattern):
            raise ValueError(f"tool pattern {pattern!r} must match {_TOOL_PATTERN.pattern}")
    if not checked:
        raise ValueError("no tool patterns given")
    return checked
