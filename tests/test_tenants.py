"""The tenant registry (executor.service.tenants) and ``duraplan tenants`` (duraplan.tenants_cli), each
test on a real SQLite file and on a real PostgreSQL server (``db_location``, tests/conftest.py)."""

from __future__ import annotations

import hmac
import json
import math
import os
import stat
import threading
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from duraplan.tenants_cli import app
from executor.errors import DuraplanError
from executor.service import tenants as tenants_mod
from executor.service.client import NAME_PATTERN
from executor.service.tenants import (
    DEFAULT_TOOL_GRANTS,
    AuthenticationFailed,
    QuotaExceeded,
    Quotas,
    TenantError,
    TenantRegistry,
    ToolNotGranted,
    UnknownKey,
    UnknownSecret,
    UnknownTenant,
)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_secrets_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAPLAN_SECRETS_KEY", raising=False)


@pytest.fixture
def db(db_location: str | Path) -> str | Path:
    return db_location


def _shared_db_key(db: str | Path) -> str | None:
    """A shared database keeps secrets encrypted only: PostgreSQL tests get a Fernet key."""
    if isinstance(db, Path):
        return None
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture
def reg(db: str | Path) -> Any:
    registry = TenantRegistry(db, secrets_key=_shared_db_key(db))
    yield registry
    registry.close()


def _db_bytes(db: str | Path) -> bytes:
    """What is at rest: the SQLite file and any WAL/SHM files beside it, or every row in PostgreSQL."""
    if isinstance(db, Path):
        return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))
    tables = ("tenants", "api_keys", "quota_overrides", "rate_buckets", "tool_grants", "egress", "secrets")
    with psycopg.connect(db) as conn:
        rows = [row for table in tables for row in conn.execute(f"SELECT * FROM {table}").fetchall()]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


# ---- tenants -----------------------------------------------------------------------------------


def test_create_get_list_delete(reg: TenantRegistry) -> None:
    acme = reg.create("acme", display_name="Acme Inc.")
    reg.create("beta")
    assert reg.get("acme") == acme
    assert acme.display_name == "Acme Inc."
    assert [t.tenant_id for t in reg.list()] == ["acme", "beta"]
    with pytest.raises(TenantError, match="already exists"):
        reg.create("acme")
    with pytest.raises(ValueError, match="tenant id"):
        reg.create("bad/id")
    reg.issue_key("beta", label="ci")
    reg.set_secret("beta", "TOKEN", "s3cret")
    reg.delete("beta")
    with pytest.raises(UnknownTenant):
        reg.get("beta")
    with pytest.raises(UnknownTenant):
        reg.delete("beta")
    assert [t.tenant_id for t in reg.list()] == ["acme"]


def test_error_tree() -> None:
    for cls in (UnknownTenant, AuthenticationFailed, QuotaExceeded, UnknownSecret, ToolNotGranted, UnknownKey):
        assert issubclass(cls, TenantError)
    assert issubclass(TenantError, DuraplanError)
    exc = QuotaExceeded("runs_per_second", 0.25, tenant="acme")
    assert (exc.limit, exc.retry_after_s) == ("runs_per_second", 0.25)
    assert "runs_per_second" in str(exc) and "retry in 0.250s" in str(exc)
    assert "raised" in str(QuotaExceeded("max_concurrent_runs", None))
    denied = ToolNotGranted("debug.echo", "acme")
    assert (denied.tool, denied.tenant) == ("debug.echo", "acme")


def test_tenant_id_rule_matches_the_client() -> None:
    assert tenants_mod._TENANT_ID.pattern == NAME_PATTERN.pattern


def test_file_is_private(tmp_path: Path) -> None:
    db = tmp_path / "tenants.db"
    with TenantRegistry(db) as reg:
        reg.create("acme")
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        assert reg._rows("PRAGMA journal_mode")[0][0] == "wal"


def test_names_that_cannot_exist_are_unknown(reg: TenantRegistry) -> None:
    """Looked up without asking the database: PostgreSQL would refuse a NUL with a driver error."""
    reg.create("acme")
    with pytest.raises(UnknownTenant):
        reg.get("acme\x00")
    with pytest.raises(UnknownTenant):
        reg.set_quotas("acme\x00", runs_burst=1)
    with pytest.raises(UnknownSecret):
        reg.resolve_secret("acme", "TOKEN\x00")
    with pytest.raises(UnknownKey):
        reg.revoke_key("0123\x00")


# ---- API keys ----------------------------------------------------------------------------------


def test_keys_are_hashed_at_rest(db: str | Path) -> None:
    with TenantRegistry(db) as reg:
        reg.create("acme")
        token = reg.issue_key("acme", label="ci")
        assert token.startswith("dp_")
        _, key_id, secret = token.split("_", 2)
        assert len(key_id) == 16 and len(secret) >= 43
        stored = _db_bytes(db)  # while open: WAL included
        assert token.encode() not in stored and secret.encode() not in stored
    stored = _db_bytes(db)  # after close: checkpointed into the main file
    assert token.encode() not in stored and secret.encode() not in stored
    assert key_id.encode() in stored  # the lookup id is stored, only the secret part is not


def test_authenticate_and_revoke(reg: TenantRegistry) -> None:
    reg.create("acme")
    token = reg.issue_key("acme", label="ci")
    other = reg.issue_key("acme", label="agent")
    assert reg.authenticate(token).tenant_id == "acme"
    key_id = token.split("_")[1]
    keys = reg.list_keys("acme")
    assert {k.label for k in keys} == {"ci", "agent"}
    assert all(k.active for k in keys)

    bad = [
        "",
        "nope",
        token[:-1],
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        "dp_" + "0" * 16 + "_" + token.split("_", 2)[2],
        token + "x",
    ]
    for candidate in bad:
        with pytest.raises(AuthenticationFailed) as info:
            reg.authenticate(candidate)
        assert str(info.value) == "invalid or revoked API key"  # never echoes the token

    reg.revoke_key(key_id)
    reg.revoke_key(key_id)  # idempotent
    with pytest.raises(AuthenticationFailed):
        reg.authenticate(token)
    assert reg.authenticate(other).tenant_id == "acme"
    revoked = next(k for k in reg.list_keys("acme") if k.key_id == key_id)
    assert not revoked.active and revoked.revoked_at is not None
    with pytest.raises(UnknownKey):
        reg.revoke_key("0" * 16)


def test_authenticate_uses_constant_time_compare(reg: TenantRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.create("acme")
    token = reg.issue_key("acme", label="ci")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tenants_mod.hmac, "compare_digest", spy)
    reg.authenticate(token)
    assert len(calls) == 1
    with pytest.raises(AuthenticationFailed):
        reg.authenticate("dp_" + "f" * 16 + "_" + "x" * 43)  # unknown key id: still compared
    assert len(calls) == 2


def test_keys_are_isolated_per_tenant(reg: TenantRegistry) -> None:
    reg.create("a")
    reg.create("b")
    token_a = reg.issue_key("a", label="a-key")
    token_b = reg.issue_key("b", label="b-key")
    assert reg.authenticate(token_a).tenant_id == "a"
    assert reg.authenticate(token_b).tenant_id == "b"
    assert [k.label for k in reg.list_keys("a")] == ["a-key"]
    # Tenant-scoped revocation cannot touch another tenant's key.
    with pytest.raises(UnknownKey):
        reg.revoke_key(token_b.split("_")[1], tenant_id="a")
    assert reg.authenticate(token_b).tenant_id == "b"
    reg.delete("a")
    with pytest.raises(AuthenticationFailed):
        reg.authenticate(token_a)


def test_key_metadata_never_holds_secrets(reg: TenantRegistry) -> None:
    reg.create("acme")
    token = reg.issue_key("acme", label="ci")
    secret = token.split("_", 2)[2]
    for key in reg.list_keys("acme"):
        assert secret not in repr(key) and secret not in str(key) and secret not in json.dumps(key.to_dict())


# ---- quotas ------------------------------------------------------------------------------------


def test_quota_defaults_and_overrides(reg: TenantRegistry) -> None:
    reg.create("acme")
    q = reg.quotas("acme")
    assert q == Quotas()
    assert (q.runs_per_second, q.runs_burst, q.max_concurrent_runs, q.max_steps_per_run) == (300, 300, 50_000, 10_000)
    assert (q.max_step_output_bytes, q.max_event_bytes, q.code_cpu_seconds, q.code_memory_mb) == (MiB, MiB, 30, 256)

    changed = reg.set_quotas("acme", runs_per_second=2.5, max_concurrent_runs=10)
    assert changed == reg.quotas("acme")
    assert changed.runs_per_second == 2.5 and changed.max_concurrent_runs == 10
    assert isinstance(changed.max_concurrent_runs, int)
    assert changed.runs_burst == 300

    assert reg.set_quotas("acme", runs_per_second=None).runs_per_second == 300
    with pytest.raises(ValueError, match="unknown quota"):
        reg.set_quotas("acme", nope=1)
    with pytest.raises(ValueError, match="positive"):
        reg.set_quotas("acme", runs_burst=0)
    with pytest.raises(ValueError, match="whole number"):
        reg.set_quotas("acme", runs_burst=1.5)
    with pytest.raises(UnknownTenant):
        reg.quotas("ghost")
    with pytest.raises(FrozenInstanceError):
        q.runs_burst = 1  # type: ignore[misc]


# ---- run-creation token bucket -----------------------------------------------------------------


def test_bucket_burst_then_refusal_then_refill(reg: TenantRegistry) -> None:
    reg.create("acme")
    reg.set_quotas("acme", runs_per_second=2, runs_burst=5)
    t0 = 1_000_000.0
    assert all(reg.take_run_tokens("acme", now=t0).allowed for _ in range(5))
    refused = reg.take_run_tokens("acme", now=t0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.5)  # one token at 2/s

    assert not reg.take_run_tokens("acme", now=t0 + 0.25).allowed
    assert reg.take_run_tokens("acme", now=t0 + 0.5).allowed
    # After a long idle period the bucket is full again, but never more than the burst.
    assert reg.take_run_tokens("acme", 5, now=t0 + 1000).allowed
    assert not reg.take_run_tokens("acme", now=t0 + 1000).allowed
    # Batches: all-or-nothing, and more than the burst can never be granted.
    decision = reg.take_run_tokens("acme", 3, now=t0 + 1001)  # 2 tokens refilled
    assert not decision.allowed and decision.retry_after_s == pytest.approx(0.5)
    assert reg.take_run_tokens("acme", 6, now=t0 + 5000).retry_after_s == math.inf
    # A clock that steps back refills nothing.
    reg.take_run_tokens("acme", 5, now=t0 + 6000)
    assert not reg.take_run_tokens("acme", now=t0 + 10).allowed


def test_require_run_tokens_raises_quota_exceeded(reg: TenantRegistry) -> None:
    reg.create("acme")
    reg.set_quotas("acme", runs_per_second=1, runs_burst=1)
    reg.require_run_tokens("acme", now=50.0)
    with pytest.raises(QuotaExceeded) as info:
        reg.require_run_tokens("acme", now=50.0)
    assert info.value.limit == "runs_per_second"
    assert info.value.retry_after_s == pytest.approx(1.0)
    assert "acme" in str(info.value) and "retry in 1.000s" in str(info.value)
    with pytest.raises(QuotaExceeded) as never:
        reg.require_run_tokens("acme", 2, now=500.0)
    assert never.value.retry_after_s is None


def test_bucket_survives_a_restart(db: str | Path) -> None:
    t0 = 2_000_000.0
    with TenantRegistry(db) as first:
        first.create("acme")
        first.set_quotas("acme", runs_per_second=1, runs_burst=3)
        assert [first.take_run_tokens("acme", now=t0).allowed for _ in range(4)] == [True, True, True, False]
    # The service restarts: a new registry on the same file continues the same (empty) bucket.
    with TenantRegistry(db) as second:
        decision = second.take_run_tokens("acme", now=t0 + 0.4)
        assert not decision.allowed and decision.retry_after_s == pytest.approx(0.6)
        assert second.take_run_tokens("acme", now=t0 + 2).allowed
        assert second.take_run_tokens("acme", now=t0 + 2).allowed
        assert not second.take_run_tokens("acme", now=t0 + 2).allowed


@pytest.mark.parametrize("shared", [True, False], ids=["one-registry", "registry-per-thread"])
def test_concurrent_takers_never_over_grant(db: str | Path, shared: bool) -> None:
    burst, threads, attempts = 40, 8, 25
    with TenantRegistry(db) as setup:
        setup.create("acme")
        # Refill so slow it cannot add a whole token during the test.
        setup.set_quotas("acme", runs_per_second=0.0001, runs_burst=burst)
    shared_reg = TenantRegistry(db) if shared else None
    granted: list[int] = []
    start = threading.Barrier(threads)

    def worker() -> None:
        reg = shared_reg or TenantRegistry(db)
        try:
            start.wait()
            mine = sum(reg.take_run_tokens("acme").allowed for _ in range(attempts))
            granted.append(mine)
        finally:
            if reg is not shared_reg:
                reg.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if shared_reg is not None:
        shared_reg.close()
    assert len(granted) == threads
    assert sum(granted) == burst


def test_buckets_are_per_tenant(reg: TenantRegistry) -> None:
    reg.create("a")
    reg.create("b")
    for tenant in ("a", "b"):
        reg.set_quotas(tenant, runs_per_second=1, runs_burst=1)
    assert reg.take_run_tokens("a", now=10.0).allowed
    assert not reg.take_run_tokens("a", now=10.0).allowed
    assert reg.take_run_tokens("b", now=10.0).allowed


# ---- tool grants -------------------------------------------------------------------------------


def test_default_grants_exclude_debug(reg: TenantRegistry) -> None:
    reg.create("acme")
    assert reg.granted_tools("acme") == sorted(DEFAULT_TOOL_GRANTS)
    for tool in ("http.request", "kv.get", "kv.put", "kv.incr", "notify", "transform"):
        assert reg.is_tool_granted("acme", tool), tool
    for tool in ("debug.echo", "debug.fail", "custom.tool", "KV.get"):
        assert not reg.is_tool_granted("acme", tool), tool
    with pytest.raises(ToolNotGranted, match=r"debug\.echo"):
        reg.require_tool("acme", "debug.echo")


def test_grant_and_revoke_patterns(reg: TenantRegistry) -> None:
    reg.create("acme")
    reg.revoke_tools("acme", list(DEFAULT_TOOL_GRANTS))
    assert reg.granted_tools("acme") == []
    assert not reg.is_tool_granted("acme", "kv.get")
    reg.grant_tools("acme", ["kv.*", "http.request"])
    reg.grant_tools("acme", ["kv.*"])  # idempotent
    assert reg.granted_tools("acme") == ["http.request", "kv.*"]
    assert reg.is_tool_granted("acme", "kv.get") and reg.is_tool_granted("acme", "http.request")
    assert not reg.is_tool_granted("acme", "http.other")
    reg.revoke_tools("acme", ["kv.get"])  # not a granted pattern: kv.* stays
    assert reg.is_tool_granted("acme", "kv.get")
    reg.grant_tools("acme", ["*"])
    assert reg.is_tool_granted("acme", "debug.echo")
    with pytest.raises(ValueError):
        reg.grant_tools("acme", ["kv get"])
    with pytest.raises(TypeError):
        reg.grant_tools("acme", "kv.*")
    with pytest.raises(UnknownTenant):
        reg.grant_tools("ghost", ["*"])


def test_grants_are_isolated_per_tenant(reg: TenantRegistry) -> None:
    reg.create("a")
    reg.create("b")
    reg.grant_tools("a", ["debug.*"])
    assert reg.is_tool_granted("a", "debug.echo")
    assert not reg.is_tool_granted("b", "debug.echo")
    assert "debug.*" not in reg.granted_tools("b")


# ---- egress ------------------------------------------------------------------------------------


def test_egress_allowlist(reg: TenantRegistry) -> None:
    reg.create("a")
    reg.create("b")
    assert reg.egress("a") == []
    stored = reg.set_egress("a", ["https://API.example.com", "*.example.com:443", " https://api.example.com "])
    assert stored == ["*.example.com:443", "https://api.example.com"]
    assert reg.egress("a") == stored
    assert reg.egress("b") == []
    with pytest.raises(ValueError):
        reg.set_egress("a", ["ftp://x.example.com"])
    with pytest.raises(ValueError):
        reg.set_egress("a", ["https://x.example.com/path"])
    assert reg.egress("a") == stored  # a refused update changes nothing
    assert reg.set_egress("a", []) == []


# ---- secrets -----------------------------------------------------------------------------------


def test_secrets_resolve_and_never_show(reg: TenantRegistry, db: str | Path) -> None:
    value = "hunter2-very-secret-value"
    acme = reg.create("acme")
    reg.set_secret("acme", "API_TOKEN", value)
    reg.set_secret("acme", "other", "x")
    assert reg.resolve_secret("acme", "API_TOKEN") == value
    assert reg.secret_names("acme") == ["API_TOKEN", "other"]
    reg.set_secret("acme", "API_TOKEN", value + "-2")
    assert reg.resolve_secret("acme", "API_TOKEN") == value + "-2"

    with pytest.raises(UnknownSecret) as info:
        reg.resolve_secret("acme", "missing")
    shown = [repr(reg), str(reg), repr(acme), str(acme), repr(reg.quotas("acme")), str(info.value)]
    shown += [repr(k) for k in reg.list_keys("acme")]
    assert not any(value in text for text in shown)

    reg.delete_secret("acme", "other")
    assert reg.secret_names("acme") == ["API_TOKEN"]
    with pytest.raises(UnknownSecret):
        reg.delete_secret("acme", "other")
    with pytest.raises(ValueError):
        reg.set_secret("acme", "bad name", "v")
    with pytest.raises(ValueError):
        reg.set_secret("acme", "EMPTY", "")


def test_secrets_are_isolated_per_tenant(reg: TenantRegistry) -> None:
    reg.create("a")
    reg.create("b")
    reg.set_secret("a", "TOKEN", "a-value")
    assert reg.secret_names("b") == []
    with pytest.raises(UnknownSecret):
        reg.resolve_secret("b", "TOKEN")
    with pytest.raises(UnknownSecret):
        reg.delete_secret("b", "TOKEN")
    assert reg.resolve_secret("a", "TOKEN") == "a-value"


def test_a_shared_database_stores_no_plaintext_secret(postgres_url: str) -> None:
    with TenantRegistry(postgres_url) as reg:
        reg.create("acme")
        with pytest.raises(TenantError, match="DURAPLAN_SECRETS_KEY"):
            reg.set_secret("acme", "TOKEN", "plain-value")
        assert reg.secret_names("acme") == []


def test_secrets_key_without_cryptography_is_an_error(db: str | Path) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("cryptography is installed: encryption is covered by test_secrets_encrypted_at_rest")
    with TenantRegistry(db, secrets_key="not-used") as reg:
        reg.create("acme")
        with pytest.raises(TenantError, match="cryptography"):
            reg.set_secret("acme", "TOKEN", "v")
        assert "not-used" not in repr(reg)


def test_secrets_encrypted_at_rest(db: str | Path) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    key = fernet.Fernet.generate_key().decode()
    value = "plain-text-that-must-not-be-on-disk"
    with TenantRegistry(db, secrets_key=key) as reg:
        reg.create("acme")
        reg.set_secret("acme", "TOKEN", value)
        assert reg.resolve_secret("acme", "TOKEN") == value
        assert key not in repr(reg)
    assert value.encode() not in _db_bytes(db)
    with TenantRegistry(db) as no_key, pytest.raises(TenantError, match="encrypted"):
        no_key.resolve_secret("acme", "TOKEN")
    wrong = fernet.Fernet.generate_key().decode()
    with TenantRegistry(db, secrets_key=wrong) as other, pytest.raises(TenantError, match="decrypt"):
        other.resolve_secret("acme", "TOKEN")


def test_encrypted_secrets_are_decrypted_once_and_a_changed_one_is_read_anew(db: str | Path) -> None:
    """Every tool call reads all of its tenant's secrets (redaction needs them): with Fernet that
    was ~1 ms of CPU per call at 100 secrets. Each value is decrypted once; a changed secret (a
    new ciphertext) is decrypted again, never answered from before."""
    fernet = pytest.importorskip("cryptography.fernet")
    key = fernet.Fernet.generate_key().decode()
    with TenantRegistry(db, secrets_key=key) as reg:
        reg.create("acme")
        for i in range(20):
            reg.set_secret("acme", f"S{i}", f"value-{i}")
        real = reg._fernet()
        decrypted: list[bytes] = []

        class Counting:
            def encrypt(self, data: bytes) -> bytes:
                return bytes(real.encrypt(data))

            def decrypt(self, token: bytes) -> bytes:
                decrypted.append(token)
                return bytes(real.decrypt(token))

        reg._cipher = Counting()
        first = reg.secret_values("acme")
        assert sorted(first) == sorted(f"value-{i}" for i in range(20)) and len(decrypted) == 20
        assert reg.secret_values("acme") == first and reg.resolve_secret("acme", "S3") == "value-3"
        assert len(decrypted) == 20, "nothing decrypted twice"
        reg.set_secret("acme", "S3", "rotated")
        assert reg.resolve_secret("acme", "S3") == "rotated"
        assert "rotated" in reg.secret_values("acme") and "value-3" not in reg.secret_values("acme")
        assert len(decrypted) == 21


# ---- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, db_location: str | Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    home = tmp_path / "home"
    monkeypatch.setenv("DURAPLAN_HOME", str(home))
    monkeypatch.setenv("DURAPLAN_ADDRESS", "127.0.0.1:1")  # no Temporal: `delete` ends runs there (test_tenant_purge)
    if isinstance(db_location, str):
        monkeypatch.setenv("DURAPLAN_DATABASE_URL", db_location)
        monkeypatch.setenv("DURAPLAN_SECRETS_KEY", str(_shared_db_key(db_location)))
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    invoke.db = db_location if isinstance(db_location, str) else home / "tenants.db"  # type: ignore[attr-defined]
    return invoke


def _one_line_error(result: Result) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_cli_create_issue_key_show(cli: Any) -> None:
    r = cli("create", "acme", "--display-name", "Acme")
    assert r.exit_code == 0, r.output
    r = cli("issue-key", "acme", "--label", "ci")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("dp_") and r.stdout.count("dp_") == 1  # printed once, alone on stdout
    assert "not be shown again" in r.stderr

    with TenantRegistry(cli.db) as reg:
        assert reg.authenticate(token).tenant_id == "acme"

    r = cli("secret", "set", "acme", "API_TOKEN", input="s3cr3t-value\n")
    assert r.exit_code == 0, r.output
    with TenantRegistry(cli.db) as reg:
        assert reg.resolve_secret("acme", "API_TOKEN") == "s3cr3t-value"

    secret_part = token.split("_", 2)[2]
    for args in (("show", "acme"), ("show", "acme", "--json")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert secret_part not in r.output and "s3cr3t-value" not in r.output
        assert "API_TOKEN" in r.output and token.split("_")[1] in r.output
    data = json.loads(cli("show", "acme", "--json").stdout)
    assert data["quotas"]["runs_per_second"] == 300
    assert data["tool_grants"] == sorted(DEFAULT_TOOL_GRANTS)
    assert data["secrets"] == ["API_TOKEN"]
    assert [k["label"] for k in data["keys"]] == ["ci"]

    assert json.loads(cli("list", "--json").stdout)[0]["tenant_id"] == "acme"
    issued = json.loads(cli("issue-key", "acme", "--label", "agent", "--json").stdout)
    assert issued["key"].startswith(f"dp_{issued['key_id']}_")


def test_cli_quota_grants_egress_secrets(cli: Any, tmp_path: Path) -> None:
    assert cli("create", "acme").exit_code == 0
    r = cli("set-quota", "acme", "--runs-per-second", "10", "--max-concurrent-runs", "5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs_per_second"] == 10
    assert json.loads(r.stdout)["max_concurrent_runs"] == 5
    r = cli("set-quota", "acme", "--reset", "runs_per_second", "--json")
    assert json.loads(r.stdout)["runs_per_second"] == 300

    assert cli("grant", "acme", "debug.*", "custom.*").exit_code == 0
    assert cli("revoke", "acme", "custom.*").exit_code == 0
    with TenantRegistry(cli.db) as reg:
        assert reg.is_tool_granted("acme", "debug.echo") and not reg.is_tool_granted("acme", "custom.x")

    r = cli("egress", "acme", "https://api.example.com", "*.example.com:443")
    assert r.exit_code == 0, r.output
    assert json.loads(cli("egress", "acme", "--json").stdout) == ["*.example.com:443", "https://api.example.com"]
    assert json.loads(cli("egress", "acme", "--clear", "--json").stdout) == []

    value_file = tmp_path / "value.txt"
    value_file.write_text("from-file\n")
    assert cli("secret", "set", "acme", "F", "--value-file", str(value_file)).exit_code == 0
    assert cli("secret", "set", "acme", "V", "--value", "from-flag").exit_code == 0
    with TenantRegistry(cli.db) as reg:
        assert reg.resolve_secret("acme", "F") == "from-file"
        assert reg.resolve_secret("acme", "V") == "from-flag"
    assert cli("secret", "rm", "acme", "V").exit_code == 0
    with TenantRegistry(cli.db) as reg:
        assert reg.secret_names("acme") == ["F"]

    key = cli("issue-key", "acme", "--label", "ci").stdout.strip()
    assert cli("revoke-key", key.split("_")[1]).exit_code == 0
    with TenantRegistry(cli.db) as reg, pytest.raises(AuthenticationFailed):
        reg.authenticate(key)
    r = cli("delete", "acme", "--yes")
    assert r.exit_code == 1 and "deleted tenant acme" in r.stdout, r.output  # its runs: when Temporal is reachable
    assert json.loads(cli("list", "--json").stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ("show", "ghost"),
        ("issue-key", "ghost", "--label", "x"),
        ("create", "bad/id"),
        ("revoke-key", "0000000000000000"),
        ("set-quota", "acme"),
        ("set-quota", "acme", "--runs-burst", "0"),
        ("set-quota", "acme", "--reset", "nope"),
        ("grant", "acme", "bad pattern"),
        ("egress", "acme", "ftp://nope.example.com"),
        ("secret", "rm", "acme", "missing"),
        ("secret", "set", "acme", "bad name", "--value", "v"),
        ("secret", "set", "acme", "X", "--value-file", "/nonexistent/file"),
        ("delete", "acme"),
    ],
)
def test_cli_user_errors_are_one_line(cli: Any, args: tuple[str, ...]) -> None:
    assert cli("create", "acme").exit_code == 0
    _one_line_error(cli(*args))


def test_cli_create_twice_is_one_line(cli: Any) -> None:
    assert cli("create", "acme").exit_code == 0
    r = cli("create", "acme")
    _one_line_error(r)
    assert "already exists" in r.stderr


def test_a_deleted_tenants_name_is_never_handed_to_a_new_owner(reg: TenantRegistry) -> None:
    # Issue 11 item 4: runs and kv values are keyed by the tenant id and outlive the registry row,
    # so a new "acme" would have listed the old acme's runs and read its kv values.
    reg.create("acme")
    old_key = reg.issue_key("acme", label="old")
    reg.set_secret("acme", "TOKEN", "s3cret")
    assert not reg.is_retired("acme")
    reg.delete("acme")
    assert reg.is_retired("acme") and not reg.is_retired("Acme")  # what tenant_purge may end
    with pytest.raises(TenantError, match="cannot be reused"):
        reg.create("acme")
    with pytest.raises(AuthenticationFailed):
        reg.authenticate(old_key)
    assert reg.secret_values("acme") == []
    if reg.path is not None:  # (SQLite) the retirement is durable
        reopened = TenantRegistry(reg.path)
        with pytest.raises(TenantError, match="cannot be reused"):
            reopened.create("acme")
        reopened.close()


def _spend_leased(reg: TenantRegistry, tenant: str) -> bool:
    """What a submit does for its run token: from this process's lease, else a new lease."""
    if reg.spend_leased_run_token(tenant):
        return True
    try:
        reg.take_leased_run_token(tenant)
    except QuotaExceeded:
        return False
    return True


def test_leased_run_tokens_never_over_admit_across_registries(db: str | Path) -> None:
    """Two processes leasing batches from one bucket admit exactly the burst between them, then
    both refuse: tokens leased ahead were taken from the shared bucket."""
    burst = 60  # leases of up to 6
    with TenantRegistry(db) as first, TenantRegistry(db) as second:
        first.create("acme")
        first.set_quotas("acme", runs_per_second=0.0001, runs_burst=burst)  # no whole token refills meanwhile
        admitted = {id(first): 0, id(second): 0}
        refused: set[int] = set()
        while len(refused) < 2:
            for reg in (first, second):
                if _spend_leased(reg, "acme"):
                    admitted[id(reg)] += 1
                    refused.discard(id(reg))
                else:
                    refused.add(id(reg))
        assert sum(admitted.values()) == burst
        assert min(admitted.values()) > 0
        with pytest.raises(QuotaExceeded) as info:
            second.take_leased_run_token("acme")
        assert info.value.limit == "runs_per_second"
        assert not first.take_run_tokens("acme").allowed


def test_leased_tokens_given_back_reach_the_bucket(db: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token given back (a run that did not start) is spent again here, or, once the lease has
    expired, returned to the bucket with the next lease: the quota counts started runs only."""
    monkeypatch.setattr(tenants_mod, "RUN_LEASE_S", 0.0)  # every lease expires at once
    with TenantRegistry(db) as reg:
        reg.create("acme")
        reg.set_quotas("acme", runs_per_second=0.0001, runs_burst=2)
        reg.take_leased_run_token("acme")
        reg.take_leased_run_token("acme")
        with pytest.raises(QuotaExceeded):
            reg.take_leased_run_token("acme")
        reg.give_back_run_token("acme")
        assert not reg.spend_leased_run_token("acme")  # expired: not spendable from memory ...
        reg.take_leased_run_token("acme")  # ... but back in the bucket with this lease
        with pytest.raises(QuotaExceeded):
            reg.take_leased_run_token("acme")


def test_a_quota_change_drops_leased_tokens(reg: TenantRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants_mod, "RUN_LEASE_S", 60.0)  # however slow the machine, the lease holds
    reg.create("acme")
    reg.set_quotas("acme", runs_per_second=0.0001, runs_burst=300)
    for _ in range(8):  # leases grow with demand: 1, 2, 4, ...
        assert _spend_leased(reg, "acme")
    assert reg.spend_leased_run_token("acme")
    reg.set_quotas("acme", runs_burst=1)
    assert not reg.spend_leased_run_token("acme")  # the new quota applies to the next submit
    reg.take_leased_run_token("acme")
    with pytest.raises(QuotaExceeded):
        reg.take_leased_run_token("acme")
