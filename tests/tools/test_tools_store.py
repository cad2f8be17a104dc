"""Store: tenant scoping, the exactly-once ledger, kv semantics, outbox, persistence; each test on
SQLite and on PostgreSQL (``db_location``, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import Store
from tools.database import Tx


@pytest.fixture
def store(db_location: str | Path) -> Iterator[Store]:
    s = Store(db_location)
    yield s
    s.close()


async def test_kv_roundtrip_and_missing(store: Store) -> None:
    assert await store.kv_get("acme", "missing") is None
    assert await store.kv_get("acme", "missing", default="d") == "d"
    await store.kv_put("acme", "cfg", {"a": [1, 2], "b": None, "c": "é"})
    assert await store.kv_get("acme", "cfg") == {"a": [1, 2], "b": None, "c": "é"}
    await store.kv_put("acme", "cfg", 3)  # overwrite
    assert await store.kv_get("acme", "cfg") == 3
    await store.kv_put("acme", "null", None)
    assert await store.kv_get("acme", "null", default="d") is None  # stored null is not missing


async def test_tenants_are_isolated(store: Store) -> None:
    await store.kv_put("acme", "shared/name", "acme's")
    await store.kv_put("globex", "shared/name", "globex's")
    await store.kv_put("globex", "shared/only-globex", 1)
    assert await store.kv_get("acme", "shared/name") == "acme's"
    assert await store.kv_get("globex", "shared/name") == "globex's"
    assert await store.kv_get("acme", "shared/only-globex") is None
    assert await store.kv_list("acme") == ["shared/name"]
    assert await store.kv_list("globex", "shared/") == ["shared/name", "shared/only-globex"]

    assert await store.kv_delete("acme", "shared/only-globex") is False
    assert await store.kv_get("globex", "shared/only-globex") == 1

    # The same idempotency key in two tenants is two separate effects.
    assert await store.once("acme", "k", lambda c: "acme-effect") == "acme-effect"
    assert await store.once("globex", "k", lambda c: "globex-effect") == "globex-effect"
    assert await store.effect_count("acme") == 1
    assert await store.effect_count("globex") == 1

    await store.outbox_add("acme", "k", "ops", "hello")
    assert await store.outbox_list("globex") == []


async def test_purge_tenant_deletes_that_tenant_only(store: Store) -> None:
    """A deleted tenant's data goes; a tenant whose name differs only in case keeps its own."""
    from tools.carry_store import CarryStore

    carries = CarryStore(store.database)
    for tenant in ("Acme", "acme"):
        await store.kv_put(tenant, "k", tenant)
        await store.kv_put(tenant, "j", 1, idempotency_key=f"{tenant}-put")
        await store.outbox_add(tenant, "m", "ops", "hello")
        await carries.save(tenant, "run-1", "c1", ["part"], None)
    assert await store.purge_tenant("Acme") == {"kv": 2, "effects": 2, "outbox": 1}
    assert await carries.purge_tenant("Acme") == 1
    assert await store.kv_list("Acme") == [] and await store.outbox_list("Acme") == []
    assert await store.effect_count("Acme") == 0 and await carries.load("Acme", "run-1", "c1", 0) is None
    assert await store.kv_get("acme", "k") == "acme" and await store.effect_count("acme") == 2
    assert len(await store.outbox_list("acme")) == 1 and await carries.load("acme", "run-1", "c1", 0) is not None
    assert await store.purge_tenant("Acme") == {"kv": 0, "effects": 0, "outbox": 0}


async def test_kv_list_prefix_is_literal_and_sorted(store: Store) -> None:
    for key in ["b/2", "b/1", "a", "b%", "b_x", "B/3"]:
        await store.kv_put("acme", key, 0)
    assert await store.kv_list("acme") == ["B/3", "a", "b%", "b/1", "b/2", "b_x"]
    assert await store.kv_list("acme", "b/") == ["b/1", "b/2"]
    # LIKE wildcards in the prefix are plain characters.
    assert await store.kv_list("acme", "b%") == ["b%"]
    assert await store.kv_list("acme", "b_") == ["b_x"]
    assert await store.kv_list("acme", "b", limit=2) == ["b%", "b/1"]


async def test_kv_delete(store: Store) -> None:
    await store.kv_put("acme", "k", 1)
    assert await store.kv_delete("acme", "k") is True
    assert await store.kv_delete("acme", "k") is False
    assert await store.kv_get("acme", "k") is None


async def test_once_runs_effect_once_and_replays_result(store: Store) -> None:
    calls: list[int] = []

    def effect(conn: Tx) -> dict[str, object]:
        calls.append(1)
        return {"n": len(calls), "t": (1, 2)}

    first = await store.once("acme", "run-1/step-a", effect)
    second = await store.once("acme", "run-1/step-a", effect)
    assert first == second == {"n": 1, "t": [1, 2]}  # both are the JSON round trip
    assert len(calls) == 1
    outcome = await store.once_outcome("acme", "run-1/step-a", effect)
    assert outcome.replayed is True and outcome.result == first
    assert await store.effect_count("acme") == 1


async def test_once_effect_and_record_share_a_transaction(store: Store) -> None:
    def write_then_fail(conn: Tx) -> None:
        conn.execute("INSERT INTO kv (tenant, key, value, updated_at) VALUES ('acme', 'x', '1', 0)")
        raise RuntimeError("crash after the write")

    with pytest.raises(RuntimeError, match="crash after the write"):
        await store.once("acme", "key", write_then_fail)
    # Neither the effect's write nor a ledger entry survived, so a retry runs the effect.
    assert await store.kv_get("acme", "x") is None
    assert await store.effect_count("acme") == 0

    def write(conn: Tx) -> str:
        conn.execute("INSERT INTO kv (tenant, key, value, updated_at) VALUES ('acme', 'x', '1', 0)")
        return "done"

    assert await store.once("acme", "key", write) == "done"
    assert await store.kv_get("acme", "x") == 1


async def test_once_rejects_unserializable_result_without_recording(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.once("acme", "key", lambda c: object())
    with pytest.raises(ValueError):
        await store.once("acme", "key", lambda c: float("nan"))
    assert await store.effect_count("acme") == 0


async def test_once_refuses_effects_that_commit(store: Store) -> None:
    def commits(conn: Tx) -> int:
        conn.execute("COMMIT")
        return 1

    with pytest.raises(RuntimeError, match="must not commit"):
        await store.once("acme", "key", commits)
    assert await store.effect_count("acme") == 0


async def test_once_concurrent_callers_run_effect_once(store: Store) -> None:
    calls = 0
    lock = threading.Lock()

    def effect(conn: Tx) -> int:
        nonlocal calls
        with lock:
            calls += 1
        return 42

    results = await asyncio.gather(*(store.once("acme", "same", effect) for _ in range(25)))
    assert results == [42] * 25
    assert calls == 1


def test_once_across_connections_to_one_file_runs_effect_once(db_location: str | Path) -> None:
    """Several Store objects (separate connections, as separate workers would have) racing."""
    stores = [Store(db_location) for _ in range(4)]
    barrier = threading.Barrier(len(stores) * 3)
    results: list[object] = []
    errors: list[BaseException] = []

    def effect(conn: Tx) -> str:
        conn.execute(
            "INSERT INTO kv (tenant, key, value, updated_at) VALUES ('acme', 'hits', '1', 0) "
            "ON CONFLICT (tenant, key) DO UPDATE SET value = CAST(kv.value AS INTEGER) + 1"
        )
        return "ok"

    def worker(s: Store) -> None:
        try:
            barrier.wait()
            results.append(asyncio.run(s.once("acme", "race", effect)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert results == ["ok"] * len(threads)
        assert asyncio.run(stores[0].kv_get("acme", "hits")) == 1
        assert asyncio.run(stores[0].effect_count("acme")) == 1
    finally:
        for s in stores:
            s.close()


async def test_kv_writes_with_idempotency_key_happen_once(store: Store) -> None:
    assert await store.kv_incr("acme", "n", idempotency_key="s1") == 1
    assert await store.kv_incr("acme", "n", idempotency_key="s1") == 1  # retry: replayed
    assert await store.kv_incr("acme", "n", 5, idempotency_key="s2") == 6
    assert await store.kv_incr("acme", "n", 5, idempotency_key="s2") == 6
    assert await store.kv_incr("acme", "n", -2) == 4  # no key: always applies
    assert await store.kv_incr("acme", "n", -2) == 2
    assert await store.kv_get("acme", "n") == 2

    await store.kv_put("acme", "v", "first", idempotency_key="p1")
    await store.kv_put("acme", "v", "second", idempotency_key="p2")
    await store.kv_put("acme", "v", "first", idempotency_key="p1")  # late retry of p1: no-op
    assert await store.kv_get("acme", "v") == "second"

    assert await store.kv_delete("acme", "v", idempotency_key="d1") is True
    await store.kv_put("acme", "v", "again")
    assert await store.kv_delete("acme", "v", idempotency_key="d1") is True  # replayed
    assert await store.kv_get("acme", "v") == "again"


async def test_one_idempotency_key_for_different_writes_does_not_collide(store: Store) -> None:
    await store.kv_put("acme", "a", 1, idempotency_key="step")
    await store.kv_put("acme", "b", 2, idempotency_key="step")
    assert await store.kv_incr("acme", "c", idempotency_key="step") == 1
    assert await store.kv_get("acme", "a") == 1
    assert await store.kv_get("acme", "b") == 2


async def test_kv_incr_rejects_non_integers(store: Store) -> None:
    await store.kv_put("acme", "s", "text")
    await store.kv_put("acme", "b", True)
    with pytest.raises(TypeError, match="not an integer"):
        await store.kv_incr("acme", "s")
    with pytest.raises(TypeError, match="not an integer"):
        await store.kv_incr("acme", "b", idempotency_key="k")
    assert await store.effect_count("acme") == 0  # the failed effect was not recorded


async def test_outbox_records_once_per_key(store: Store) -> None:
    first = await store.outbox_add("acme", "n1", "ops", {"text": "deploy done"})
    assert first["duplicate"] is False
    assert first["idempotency_key"] == "n1"
    assert first["delivered_at"] is None
    again = await store.outbox_add("acme", "n1", "ops", {"text": "deploy done"})
    assert again["duplicate"] is True
    await store.outbox_add("acme", "n2", "email", "hi")

    entries = await store.outbox_list("acme")
    assert [(e["idempotency_key"], e["channel"], e["message"]) for e in entries] == [
        ("n1", "ops", {"text": "deploy done"}),
        ("n2", "email", "hi"),
    ]
    assert [e["idempotency_key"] for e in await store.outbox_list("acme", "email")] == ["n2"]

    assert await store.outbox_mark_delivered("acme", "n1") is True
    assert await store.outbox_mark_delivered("acme", "nope") is False
    entry = await store.outbox_get("acme", "n1")
    assert entry is not None and entry["delivered_at"] is not None
    replay = await store.outbox_add("acme", "n1", "ops", "changed")
    assert replay["delivered_at"] == entry["delivered_at"]
    assert replay["message"] == {"text": "deploy done"}  # the first message is kept


def test_kv_incr_across_connections_loses_no_update(db_location: str | Path) -> None:
    """Plain increments (no idempotency key) from several stores at once: each one counts."""
    stores = [Store(db_location) for _ in range(3)]
    barrier = threading.Barrier(len(stores))

    def worker(s: Store) -> None:
        barrier.wait()
        for _ in range(20):
            asyncio.run(s.kv_incr("acme", "n"))

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert asyncio.run(stores[0].kv_get("acme", "n")) == 60
    finally:
        for s in stores:
            s.close()


async def test_nul_characters_are_refused_on_both_backends(store: Store) -> None:
    """PostgreSQL text cannot hold NUL; SQLite refuses it too, so a key works on both or neither."""
    with pytest.raises(ValueError, match="key must not contain NUL"):
        await store.kv_put("acme", "a\x00b", 1)
    with pytest.raises(ValueError, match="prefix must not contain NUL"):
        await store.kv_list("acme", "a\x00")
    with pytest.raises(ValueError, match="idempotency_key must not contain NUL"):
        await store.outbox_add("acme", "k\x00", "ops", "hi")
    with pytest.raises(ValueError, match="channel must not contain NUL"):
        await store.outbox_add("acme", "k", "o\x00ps", "hi")
    await store.kv_put("acme", "v", "a\x00b")  # inside a JSON value it is escaped, so it is fine
    assert await store.kv_get("acme", "v") == "a\x00b"
    assert await store.effect_count("acme") == 0


async def test_data_persists_across_reopen(db_location: str | Path) -> None:
    path = db_location
    with Store(path) as s:
        await s.kv_put("acme", "k", {"v": 1})
        assert await s.kv_incr("acme", "n", idempotency_key="step-1") == 1
        await s.outbox_add("acme", "n1", "ops", "hi")
    with Store(str(path)) as s:
        assert await s.kv_get("acme", "k") == {"v": 1}
        # The ledger survived too: the retried step does not count again.
        assert await s.kv_incr("acme", "n", idempotency_key="step-1") == 1
        assert await s.kv_get("acme", "n") == 1
        assert len(await s.outbox_list("acme")) == 1
        if isinstance(path, Path):
            with s._db.reading() as conn:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_closed_store_and_bad_arguments(db_location: str | Path) -> None:
    s = Store(db_location)
    with pytest.raises(ValueError, match="tenant"):
        await s.kv_get("", "k")
    with pytest.raises(ValueError, match="idempotency_key"):
        await s.once("acme", "", lambda c: None)
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await s.kv_get("acme", "k")
