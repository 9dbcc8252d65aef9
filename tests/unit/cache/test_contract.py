"""One contract for every backend.

Memory, the machine-local file, Redis, Redis Cluster, fallback over live Redis, and a
degraded fallback.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel._clock import FrozenClock
from keel.cache import CacheStatus, FallbackStore, LocalStore, MemoryStore, RedisStore, Store
from keel.cache.store import split_versioned, versioned
from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._servers import free_port


@dataclass
class Backend:
    store: Store
    # Lets time pass: advances the FrozenClock, and really sleeps where Redis keeps time.
    elapse: Callable[[float], Awaitable[None]]
    healthy_status: CacheStatus


BACKENDS = [
    "memory",
    "local",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.cluster),
    pytest.param("fallback", marks=pytest.mark.redis),
    "fallback-degraded",
]


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Backend]:
    kind: str = request.param

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)
        clock.advance(seconds)

    store: Store
    status: CacheStatus
    namespace: str
    if kind == "memory":
        store, elapse, status = MemoryStore(clock), advance, "ok"
    elif kind == "local":
        store, elapse, status = LocalStore(tmp_path / "cache.sqlite3", clock), advance, "ok"
    elif kind == "fallback-degraded":
        # Nothing listens on the primary's port: every call is served from memory, and
        # the first failure degrades the store (no window to wait out).
        dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
        store = FallbackStore(
            dead, MemoryStore(clock), clock, retry_interval=1.0, degrade_after=0, degrade_failures=1
        )
        elapse, status = advance, "degraded"
    elif kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        namespace = request.getfixturevalue("cluster_namespace")
        store = RedisStore(cluster.url, namespace=namespace, timeout=2.0, cluster=True)
        elapse, status = sleep, "ok"
    else:
        url: str = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")
        # Generous: these tests are about semantics, and a loaded machine answers slowly.
        redis_store = RedisStore(url, namespace=namespace, timeout=2.0)
        if kind == "redis":
            store = redis_store
        else:
            store = FallbackStore(redis_store, MemoryStore(clock), clock, retry_interval=1.0)
        elapse, status = sleep, "ok"
    try:
        yield Backend(store, elapse, status)
    finally:
        await store.close()


async def test_get_missing_is_none(backend: Backend) -> None:
    assert await backend.store.get("missing") is None


async def test_set_get_roundtrip_and_overwrite(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"\x00\xffbinary\r\n")
    assert await store.get("k") == b"\x00\xffbinary\r\n"
    await store.set("k", b"second")
    assert await store.get("k") == b"second"
    await store.set("empty", b"")
    assert await store.get("empty") == b""


async def test_set_with_ttl_expires(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"v", ttl=0.2)
    assert await store.get("k") == b"v"
    remaining = await store.ttl("k")
    assert remaining is not None
    assert 0 < remaining <= 0.2 + 1e-9
    await backend.elapse(0.3)
    assert await store.get("k") is None
    assert await store.ttl("k") is None


async def test_get_many_answers_each_key_in_order(backend: Backend) -> None:
    store = backend.store
    await store.set("a", b"\x00first\r\n")
    await store.set("c", b"")
    await store.incr("n", 7)
    assert await store.get_many(["a", "b", "c", "n", "a"]) == [
        b"\x00first\r\n",
        None,
        b"",
        b"7",
        b"\x00first\r\n",
    ]
    assert await store.get_many(["missing"]) == [None]
    assert await store.get_many([]) == []


async def test_get_many_agrees_with_get_after_expiry_and_delete(backend: Backend) -> None:
    store = backend.store
    await store.set("short", b"s", ttl=0.2)
    await store.set("long", b"l", ttl=30)
    await store.set("gone", b"g")
    await store.delete("gone")
    await backend.elapse(0.3)
    keys = ["short", "long", "gone"]
    assert await store.get_many(keys) == [await store.get(key) for key in keys]
    assert await store.get_many(keys) == [None, b"l", None]


async def test_set_without_ttl_clears_previous_expiry(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"v1", ttl=0.2)
    await store.set("k", b"v2")
    assert await store.ttl("k") is None
    await backend.elapse(0.3)
    assert await store.get("k") == b"v2"


async def test_add_only_when_absent(backend: Backend) -> None:
    store = backend.store
    assert await store.add("k", b"first", ttl=None) is True
    assert await store.add("k", b"second", ttl=None) is False
    assert await store.get("k") == b"first"
    assert await store.ttl("k") is None


async def test_add_with_ttl_succeeds_again_after_expiry(backend: Backend) -> None:
    store = backend.store
    assert await store.add("lock", b"a", ttl=0.2) is True
    remaining = await store.ttl("lock")
    assert remaining is not None
    assert 0 < remaining <= 0.2 + 1e-9
    assert await store.add("lock", b"b", ttl=0.2) is False
    await backend.elapse(0.3)
    assert await store.add("lock", b"c", ttl=0.2) is True
    assert await store.get("lock") == b"c"


async def test_delete(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"v")
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("k")  # absent: no error
    assert await store.add("k", b"again", ttl=None) is True


async def test_incr_counts_from_zero(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("n") == 1
    assert await store.incr("n") == 2
    assert await store.incr("n", 10) == 12
    assert await store.incr("n", -20) == -8
    # Counters are stored as decimal bytes, as Redis stores them.
    assert await store.get("n") == b"-8"
    assert await store.ttl("n") is None


async def test_incr_continues_a_set_integer(backend: Backend) -> None:
    store = backend.store
    await store.set("n", b"41")
    assert await store.incr("n") == 42


async def test_incr_ttl_is_a_fixed_window(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("window", ttl=0.4) == 1
    await backend.elapse(0.2)
    # The second increment does not restart the window.
    assert await store.incr("window", ttl=0.4) == 2
    remaining = await store.ttl("window")
    assert remaining is not None
    assert 0 < remaining <= 0.21
    await backend.elapse(0.25)
    assert await store.get("window") is None
    assert await store.incr("window", ttl=0.4) == 1


async def test_incr_ttl_does_not_apply_to_an_existing_key(backend: Backend) -> None:
    store = backend.store
    await store.incr("n")
    await store.incr("n", ttl=0.2)
    assert await store.ttl("n") is None


@pytest.mark.parametrize(
    "stored",
    [b"abc", b"", b"1.5", b" 1", b"+1", b"007", b"-0", b"9223372036854775808"],
)
async def test_incr_on_a_non_integer_raises_value_error(backend: Backend, stored: bytes) -> None:
    store = backend.store
    await store.set("n", stored)
    with pytest.raises(ValueError, match="integer"):
        await store.incr("n")
    assert await store.get("n") == stored
    assert backend.store.status == backend.healthy_status


async def test_incr_overflow_raises_value_error(backend: Backend) -> None:
    store = backend.store
    await store.set("n", b"9223372036854775807")
    with pytest.raises(ValueError, match=r"range|integer"):
        await store.incr("n")
    assert await store.incr("n", -7) == 9223372036854775800


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan])
async def test_invalid_ttl_is_refused(backend: Backend, ttl: float) -> None:
    store = backend.store
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.add("k", b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.incr("k", ttl=ttl)
    assert await store.get("k") is None


async def test_ttl_of_missing_and_persistent_keys_is_none(backend: Backend) -> None:
    store = backend.store
    assert await store.ttl("missing") is None
    await store.set("k", b"v")
    assert await store.ttl("k") is None


async def test_tiny_ttl_still_expires_instead_of_failing(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"v", ttl=0.0001)
    await backend.elapse(0.05)
    assert await store.get("k") is None


async def test_ping_and_status(backend: Backend) -> None:
    await backend.store.ping()
    await backend.store.get("k")
    assert backend.store.status == backend.healthy_status


async def test_concurrent_incr_is_exact(backend: Backend) -> None:
    store = backend.store
    results = await asyncio.gather(*(store.incr("hits", ttl=5) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await store.get("hits") == b"200"


async def test_concurrent_add_has_exactly_one_winner(backend: Backend) -> None:
    store = backend.store
    results = await asyncio.gather(*(store.add("once", str(i).encode(), ttl=5) for i in range(100)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.get("once") == str(winner).encode()


async def test_close_is_idempotent(backend: Backend) -> None:
    await backend.store.set("k", b"v")
    await backend.store.close()
    await backend.store.close()


async def test_set_if_newer_keeps_the_highest_version(backend: Backend) -> None:
    store = backend.store
    assert await store.set_if_newer("v", versioned(5, b"five"), ttl=None) is True
    assert await store.set_if_newer("v", versioned(4, b"four"), ttl=None) is False
    assert await store.set_if_newer("v", versioned(5, b"again"), ttl=None) is False
    assert await store.get("v") == versioned(5, b"five")
    assert await store.set_if_newer("v", versioned(10, b"ten"), ttl=None) is True
    assert split_versioned(await store.get("v") or b"") == (10, b"ten")


async def test_set_if_newer_replaces_unversioned_and_expired_values(backend: Backend) -> None:
    store = backend.store
    await store.set("plain", b"not versioned")
    assert await store.set_if_newer("plain", versioned(0, b"zero"), ttl=None) is True
    assert await store.set_if_newer("short", versioned(9, b"nine"), ttl=0.2) is True
    remaining = await store.ttl("short")
    assert remaining is not None
    assert 0 < remaining <= 0.2 + 1e-9
    await backend.elapse(0.3)
    # An expired entry is gone: any version may take its place.
    assert await store.set_if_newer("short", versioned(1, b"one"), ttl=None) is True
    assert await store.ttl("short") is None


async def test_set_if_newer_refuses_values_without_a_version(backend: Backend) -> None:
    with pytest.raises(ValueError, match="version"):
        await backend.store.set_if_newer("v", b"12", ttl=None)
    with pytest.raises(ValueError, match="version"):
        versioned(-1, b"")


async def test_concurrent_set_if_newer_ends_with_the_highest(backend: Backend) -> None:
    store = backend.store
    versions = [7, 3, 19, 11, 2, 19, 5]
    await asyncio.gather(
        *(store.set_if_newer("race", versioned(v, b"%d" % v), ttl=5) for v in versions)
    )
    assert split_versioned(await store.get("race") or b"") == (19, b"19")
