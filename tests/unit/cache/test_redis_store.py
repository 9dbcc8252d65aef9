"""RedisStore specifics: namespacing, bounded failures, the bounded pool, laziness.

Tests marked ``redis`` use the shared server; the others a private server or none.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from keel.cache import CacheStatus, RedisStore, Store
from keel.errors import CacheUnavailable
from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._servers import RedisServer, SilentListener, free_port


def _status(store: Store) -> CacheStatus:
    # Through a call, so mypy does not narrow the property across awaits.
    return store.status


@pytest.mark.redis
async def test_every_key_carries_the_namespace(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(redis_url, namespace=redis_namespace, timeout=0.25)
    other = RedisStore(redis_url, namespace=redis_namespace + "other:", timeout=0.25)
    try:
        await store.set("plain", b"1")
        await store.add("added", b"2", ttl=5)
        await store.incr("counter", ttl=5)
        await store.incr("bare-counter")
        assert await other.get("plain") is None
        raw = redis.Redis.from_url(redis_url)
        try:
            keys = sorted(raw.scan_iter(match=f"{redis_namespace}*"))
            assert raw.get("plain") is None
        finally:
            raw.close()
        assert keys == sorted(
            f"{redis_namespace}{name}".encode()
            for name in ("plain", "added", "counter", "bare-counter")
        )
    finally:
        await store.close()
        await other.close()


async def test_get_many_is_one_mget_within_the_namespace(private_redis: RedisServer) -> None:
    # A private server: nobody else's MGETs show in its command counts.
    store = RedisStore(private_redis.url, namespace="t:", timeout=1.0)
    raw = redis.Redis.from_url(private_redis.url)
    try:
        raw.set("bare", b"outside the namespace")
        await store.set("bare", b"inside")
        await store.set("x", b"1")
        await store.get_many(["x"])  # the connection is open: the stats below count one call
        before = _mget_calls(raw)
        assert await store.get_many(["bare", "x", "nope"]) == [b"inside", b"1", None]
        assert _mget_calls(raw) == before + 1
    finally:
        raw.delete("bare")
        raw.close()
        await store.close()


def _mget_calls(raw: redis.Redis) -> int:
    stats = raw.info("commandstats")
    entry = stats.get("cmdstat_mget", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


async def test_get_many_on_a_closed_port_raises_cache_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    try:
        with pytest.raises(CacheUnavailable):
            await store.get_many(["a", "b"])
        assert _status(store) == "degraded"
        assert await store.get_many([]) == []  # nothing to read: no round trip at all
    finally:
        await store.close()


@pytest.mark.redis
async def test_incr_with_ttl_sets_the_expiry_in_redis(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(redis_url, namespace=redis_namespace, timeout=0.25)
    try:
        await store.incr("window", 3, ttl=30)
        raw = redis.Redis.from_url(redis_url)
        try:
            assert raw.get(f"{redis_namespace}window") == b"3"
            assert 29_000 < raw.pttl(f"{redis_namespace}window") <= 30_000
        finally:
            raw.close()
    finally:
        await store.close()


async def test_closed_port_raises_cache_unavailable_quickly() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable) as caught:
            await store.get("k")
        assert time.monotonic() - started < 0.75
        assert isinstance(caught.value.__cause__, RedisError)
        assert _status(store) == "degraded"
        with pytest.raises(CacheUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_hung_server_times_out(listener: SilentListener) -> None:
    store = RedisStore(listener.url, timeout=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.incr("k", ttl=1)
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 1.0
        assert _status(store) == "degraded"
    finally:
        await store.close()


async def test_status_follows_the_server(private_redis: RedisServer) -> None:
    store = RedisStore(private_redis.url, timeout=0.25)
    try:
        await store.set("k", b"v")
        assert _status(store) == "ok"
        private_redis.kill()
        with pytest.raises(CacheUnavailable):
            await store.get("k")
        assert _status(store) == "degraded"
        private_redis.start()
        # The pooled connection died with the old server; the pool reconnects by itself.
        assert await store.get("k") is None
        assert _status(store) == "ok"
    finally:
        await store.close()


async def test_pool_is_bounded(private_redis: RedisServer) -> None:
    store = RedisStore(private_redis.url, timeout=0.25, max_connections=2)
    try:
        before = private_redis.connections_received()
        results = await asyncio.gather(*(store.incr("n") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
        # Our two pooled connections, plus the one this INFO call opens.
        assert private_redis.connections_received() - before <= 3
    finally:
        await store.close()


@pytest.mark.redis
async def test_close_then_reuse_reconnects(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(redis_url, namespace=redis_namespace, timeout=0.25)
    try:
        await store.set("k", b"v")
        await store.close()
        assert await store.get("k") == b"v"
    finally:
        await store.close()


def test_repr_hides_the_url() -> None:
    store = RedisStore("redis://:hunter2@127.0.0.1:1/0", timeout=0.25)
    assert "hunter2" not in repr(store)


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        RedisStore("redis://127.0.0.1:1/0", timeout=timeout)


async def test_evicts_tells_whether_redis_may_drop_keys_to_make_room(tmp_path: Path) -> None:
    for extra, expected in (
        ((), False),  # no maxmemory: nothing is ever evicted
        (("--maxmemory", "64mb", "--maxmemory-policy", "noeviction"), False),
        (("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"), True),
        (("--maxmemory", "64mb", "--maxmemory-policy", "volatile-ttl"), True),
    ):
        workdir = tmp_path / "-".join(extra or ("plain",))
        workdir.mkdir()
        server = RedisServer(free_port(), workdir, extra)
        server.start()
        store = RedisStore(server.url, timeout=1.0)
        try:
            assert await store.evicts() is expected, extra
        finally:
            await store.close()
            server.kill()


@pytest.mark.cluster
async def test_evicts_asks_every_cluster_node(redis_cluster: LocalCluster) -> None:
    store = RedisStore(redis_cluster.url, timeout=2.0, cluster=True)
    try:
        assert await store.evicts() is False
    finally:
        await store.close()
