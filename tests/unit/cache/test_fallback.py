"""FallbackStore against a private redis-server that the tests kill and restart (no mocks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from keel._clock import FrozenClock
from keel.cache import CacheStatus, FallbackStore, MemoryStore, RedisStore, Store
from keel.errors import CacheFull
from tests.unit.cache._servers import RedisServer, SilentListener, free_port

RETRY = 1.0


def _at_once(primary: Store, fallback: Store, clock: FrozenClock) -> FallbackStore:
    """A store the first failure degrades: these tests are about serving, probing and
    recovering once degraded (test_fallback_stall.py is about when a store degrades)."""
    return FallbackStore(primary, fallback, clock, RETRY, degrade_after=0, degrade_failures=1)


def _status(store: Store) -> CacheStatus:
    # Through a call, so mypy does not narrow the property across awaits.
    return store.status


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "keel.cache" and r.getMessage() == name]


@pytest.fixture
def caplog_cache(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="keel.cache")
    return caplog


@pytest.fixture
async def store(private_redis: RedisServer, clock: FrozenClock) -> AsyncIterator[FallbackStore]:
    primary = RedisStore(private_redis.url, namespace="t:", timeout=0.25)
    fallback = _at_once(primary, MemoryStore(clock), clock)
    try:
        yield fallback
    finally:
        await fallback.close()


async def test_outage_is_served_from_memory_then_redis_again(
    store: FallbackStore,
    private_redis: RedisServer,
    clock: FrozenClock,
    caplog_cache: pytest.LogCaptureFixture,
) -> None:
    await store.set("before", b"in redis")
    assert _status(store) == "ok"

    private_redis.kill()
    # The caller never sees the outage; Redis's values are simply not there.
    assert await store.get("before") is None
    assert _status(store) == "degraded"
    await store.set("during", b"in memory")
    assert await store.incr("count") == 1
    assert await store.get("during") == b"in memory"
    [degraded] = _events(caplog_cache, "cache_degraded")
    assert degraded.levelno == logging.WARNING

    private_redis.start()
    before = private_redis.connections_received()
    # Within retry_interval the store does not go back to Redis, even though it is up.
    clock.advance(RETRY / 2)
    assert await store.get("during") == b"in memory"
    assert _status(store) == "degraded"
    assert private_redis.connections_received() == before + 1  # only this INFO call

    clock.advance(RETRY / 2)
    # The probe succeeds: Redis again (a fresh, empty server), memory is not consulted.
    assert await store.get("during") is None
    assert _status(store) == "ok"
    assert await store.incr("count") == 1
    [recovered] = _events(caplog_cache, "cache_recovered")
    assert recovered.levelno == logging.INFO
    assert recovered.__dict__["fields"]["outage_seconds"] == RETRY
    assert len(_events(caplog_cache, "cache_degraded")) == 1


async def test_get_many_follows_get_through_an_outage(
    store: FallbackStore,
    private_redis: RedisServer,
    clock: FrozenClock,
    caplog_cache: pytest.LogCaptureFixture,
) -> None:
    await store.set("a", b"in redis")
    assert await store.get_many(["a", "b"]) == [b"in redis", None]

    private_redis.kill()
    # Answered from memory within the same call: the caller never sees the outage.
    assert await store.get_many(["a", "b"]) == [None, None]
    assert _status(store) == "degraded"
    await store.set("b", b"in memory")
    assert await store.get_many(["a", "b"]) == [None, b"in memory"]
    assert len(_events(caplog_cache, "cache_degraded")) == 1

    private_redis.start()
    before = private_redis.connections_received()
    clock.advance(RETRY / 2)
    assert await store.get_many(["b"]) == [b"in memory"]  # no probe before the interval
    assert private_redis.connections_received() == before + 1  # only this INFO call
    clock.advance(RETRY / 2)
    # Probed and recovered: Redis is the truth again, memory is not consulted.
    assert await store.get_many(["a", "b"]) == [None, None]
    assert _status(store) == "ok"
    assert len(_events(caplog_cache, "cache_recovered")) == 1


async def test_concurrent_failures_degrade_once(
    store: FallbackStore, private_redis: RedisServer, caplog_cache: pytest.LogCaptureFixture
) -> None:
    await asyncio.gather(*(store.set(f"k{i}", b"v") for i in range(20)))
    private_redis.kill()
    results = await asyncio.gather(*(store.incr("hits") for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert _status(store) == "degraded"
    assert len(_events(caplog_cache, "cache_degraded")) == 1


async def test_ping_reports_but_never_raises(
    store: FallbackStore, private_redis: RedisServer, clock: FrozenClock
) -> None:
    await store.ping()
    assert _status(store) == "ok"
    private_redis.kill()
    await store.ping()
    assert _status(store) == "degraded"
    private_redis.start()
    clock.advance(RETRY)
    await store.ping()
    assert _status(store) == "ok"


async def test_a_failed_probe_waits_another_interval(
    store: FallbackStore, private_redis: RedisServer, clock: FrozenClock
) -> None:
    private_redis.kill()
    await store.set("k", b"memory")
    clock.advance(RETRY)
    assert await store.get("k") == b"memory"  # probe failed, still memory
    private_redis.start()
    clock.advance(RETRY / 2)
    assert await store.get("k") == b"memory"  # next probe not due yet
    clock.advance(RETRY / 2)
    assert await store.get("k") is None
    assert _status(store) == "ok"


async def test_a_hung_redis_is_probed_at_most_once_per_interval(
    listener: SilentListener, clock: FrozenClock
) -> None:
    primary = RedisStore(listener.url, timeout=0.1)
    store = _at_once(primary, MemoryStore(clock), clock)
    try:
        await store.set("k", b"v")  # times out once, then memory
        assert _status(store) == "degraded"
        assert listener.drain() == 1
        started = time.monotonic()
        for _ in range(50):
            assert await store.get("k") == b"v"
        # Fifty calls, no connection attempt, no timeout paid (one would cost 0.1 s each).
        assert time.monotonic() - started < 1.0
        assert listener.drain() == 0
        clock.advance(RETRY)
        results = await asyncio.gather(*(store.get("k") for _ in range(10)))
        assert results == [b"v"] * 10
        assert listener.drain() == 1  # one probe for ten concurrent calls
        assert _status(store) == "degraded"
    finally:
        await store.close()


async def test_caller_errors_pass_through_without_degrading(store: FallbackStore) -> None:
    await store.set("n", b"not a number")
    with pytest.raises(ValueError, match="integer"):
        await store.incr("n")
    assert _status(store) == "ok"


async def test_a_full_fallback_refuses_with_cache_full_while_degraded(
    clock: FrozenClock, caplog_cache: pytest.LogCaptureFixture
) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    store = _at_once(dead, MemoryStore(clock, max_entries=2), clock)
    try:
        await store.set("revoked", b"1")
        await store.set("other", b"v")
        assert _status(store) == "degraded"
        with pytest.raises(CacheFull):
            await store.set("new", b"v")
        with pytest.raises(CacheFull):
            await store.incr("counter")
        # Still degraded, still one warning, and nothing already held was dropped.
        assert _status(store) == "degraded"
        assert len(_events(caplog_cache, "cache_degraded")) == 1
        assert await store.get_many(["revoked", "other", "new"]) == [b"1", b"v", None]
    finally:
        await store.close()


async def test_cache_full_from_the_primary_is_not_an_outage(
    clock: FrozenClock, caplog_cache: pytest.LogCaptureFixture
) -> None:
    # A primary that answers but is full: the caller must see CacheFull, and the new
    # key must not be written to the fallback instead.
    primary, fallback = MemoryStore(clock, max_entries=1), MemoryStore(clock)
    store = _at_once(primary, fallback, clock)
    await store.set("held", b"v")
    with pytest.raises(CacheFull):
        await store.set("new", b"v")
    with pytest.raises(CacheFull):
        await store.add("new", b"v", ttl=5)
    assert _status(store) == "ok"
    assert _events(caplog_cache, "cache_degraded") == []
    assert await fallback.get("new") is None
    assert await store.get("held") == b"v"
    await store.close()


def test_retry_interval_must_not_be_negative(clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        FallbackStore(MemoryStore(clock), MemoryStore(clock), clock, -1)
