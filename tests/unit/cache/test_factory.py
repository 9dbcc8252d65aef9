"""build_store, and the promise that building a store connects to nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import SecretStr

from keel._clock import FrozenClock
from keel.cache import (
    FallbackStore,
    FileInvalidations,
    LocalStore,
    MemoryStore,
    RedisStore,
    build_store,
    build_stores,
)
from keel.cache.redis_channel import RedisInvalidations
from keel.settings import CacheSettings
from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._servers import RedisServer, SilentListener


def _settings(url: str | None, *, namespace: str = "keel:", cluster: bool = False) -> CacheSettings:
    return CacheSettings(
        redis_url=None if url is None else SecretStr(url),
        timeout=0.25,
        retry_interval=1.0,
        namespace=namespace,
        cluster=cluster,
    )


@pytest.mark.parametrize("url", [None, "", "  "])
def test_without_redis_url_every_worker_shares_one_file(
    clock: FrozenClock, url: str | None, tmp_path: Path
) -> None:
    settings = dataclasses.replace(_settings(url), state_file=str(tmp_path / "state.sqlite3"))
    stores = build_stores(settings, clock)
    # One store for everything, and a counter beside it that keeps near caches honest.
    assert isinstance(stores.general, LocalStore)
    assert stores.shared is stores.general
    assert stores.general.path == tmp_path / "state.sqlite3"
    assert isinstance(stores.channel, FileInvalidations)
    assert stores.channel.path == tmp_path / "state.sqlite3-changes"
    assert not (tmp_path / "state.sqlite3").exists()  # opened on first use only


def test_with_redis_the_security_cache_has_no_per_process_fallback(
    clock: FrozenClock, listener: SilentListener
) -> None:
    stores = build_stores(_settings(listener.url), clock)
    assert isinstance(stores.general, FallbackStore)
    assert isinstance(stores.shared, RedisStore)
    assert isinstance(stores.channel, RedisInvalidations)


def test_constructing_stores_connects_to_nothing(
    clock: FrozenClock, listener: SilentListener
) -> None:
    # No event loop here at all: construction must not need one.
    stores = [
        RedisStore(listener.url, timeout=0.25),
        RedisStore(listener.url, timeout=0.25, cluster=True),
        FallbackStore(RedisStore(listener.url, timeout=0.25), MemoryStore(clock), clock),
        build_store(_settings(listener.url, cluster=True), clock),
        build_store(_settings(listener.url), clock),
    ]
    assert isinstance(stores[-1], FallbackStore)
    assert listener.drain() == 0


async def test_built_store_uses_redis_with_the_namespace(
    clock: FrozenClock, private_redis: RedisServer
) -> None:
    store = build_store(_settings(private_redis.url, namespace="app:"), clock)
    try:
        before = private_redis.connections_received()
        assert store.status == "ok"
        await store.set("k", b"v")
        assert private_redis.connections_received() > before
        raw = RedisStore(private_redis.url, namespace="app:", timeout=0.25)
        try:
            assert await raw.get("k") == b"v"
        finally:
            await raw.close()
    finally:
        await store.close()


@pytest.mark.cluster
async def test_cluster_mode_builds_a_store_on_the_cluster(
    clock: FrozenClock, redis_cluster: LocalCluster, cluster_namespace: str
) -> None:
    store = build_store(
        _settings(redis_cluster.url, namespace=cluster_namespace, cluster=True), clock
    )
    try:
        # Keys in every node's slots: a single-server client would get MOVED for some.
        for index in range(12):
            await store.set(f"k{index}", str(index).encode())
        assert store.status == "ok"
        raw = RedisStore(redis_cluster.url, namespace=cluster_namespace, timeout=2.0, cluster=True)
        try:
            assert await raw.get_many([f"k{index}" for index in range(12)]) == [
                str(index).encode() for index in range(12)
            ]
        finally:
            await raw.close()
    finally:
        await store.close()
