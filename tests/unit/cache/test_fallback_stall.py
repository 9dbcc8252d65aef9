"""One slow answer is not an outage: a stalled event loop must not push a worker onto its fallback.

A private redis-server, a real clock. Reads in flight when the loop blocks for
longer than the cache timeout time out together; the store stays on Redis. A
killed Redis still degrades the store once failures have lasted the window.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from keel._clock import FrozenClock, SystemClock
from keel.cache import CacheStatus, FallbackStore, MemoryStore, RedisStore, Store
from tests.unit.cache._servers import RedisServer

TIMEOUT = 0.25
STALL = 0.4  # longer than TIMEOUT: every read in flight times out


def _status(store: Store) -> CacheStatus:
    return store.status


@pytest.fixture
async def store(private_redis: RedisServer) -> AsyncIterator[FallbackStore]:
    clock = SystemClock()
    primary = RedisStore(private_redis.url, namespace="stall:", timeout=TIMEOUT)
    fallback = FallbackStore(primary, MemoryStore(clock), clock, 1.0)
    try:
        yield fallback
    finally:
        await fallback.close()


async def _reads_across_a_stall(
    store: FallbackStore, redis: RedisServer, reads: int
) -> list[bytes | None]:
    """``reads`` concurrent GETs of "k", with the loop blocked while they wait for Redis.

    Redis holds every client for 50 ms (``CLIENT PAUSE``), so the replies are
    still on their way when a callback blocks the loop for longer than the
    timeout: when the loop runs again, the replies and the timeouts are due together.
    """
    admin = Redis.from_url(redis.url)
    try:
        await admin.client_pause(50)
    finally:
        await admin.aclose()
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(store.get("k")) for _ in range(reads)]
    loop.call_later(0.01, time.sleep, STALL)  # a handler hogging the loop, e.g. a huge body
    return await asyncio.gather(*tasks)


async def test_a_stalled_event_loop_does_not_degrade_the_store(
    store: FallbackStore, private_redis: RedisServer
) -> None:
    await store.set("k", b"in redis")
    await asyncio.gather(*(store.get("k") for _ in range(8)))  # eight pooled connections
    for _ in range(3):
        await _reads_across_a_stall(store, private_redis, 8)
        assert _status(store) == "ok"
        await asyncio.sleep(0.05)
    assert await store.get("k") == b"in redis"
    assert _status(store) == "ok"


async def test_a_killed_redis_still_degrades_the_store(
    store: FallbackStore, private_redis: RedisServer
) -> None:
    await store.set("k", b"in redis")
    private_redis.kill()
    started = time.monotonic()
    while _status(store) == "ok" and time.monotonic() - started < 10:
        assert await store.get("k") is None  # answered, from the fallback
        await asyncio.sleep(0.05)
    assert _status(store) == "degraded"
    assert await store.incr("n") == 1


async def test_failures_degrade_only_once_they_have_lasted_the_window(
    private_redis: RedisServer,
) -> None:
    clock = FrozenClock()
    primary = RedisStore(private_redis.url, namespace="window:", timeout=TIMEOUT)
    store = FallbackStore(primary, MemoryStore(clock), clock, 1.0, degrade_after=1.0)
    try:
        private_redis.kill()
        for _ in range(10):  # many failures at one instant: one stall, not an outage
            await store.get("k")
        assert _status(store) == "ok"
        clock.advance(0.5)
        await store.get("k")
        assert _status(store) == "ok"
        private_redis.start()
        assert await store.get("k") is None  # a success: the run of failures is over
        private_redis.kill()
        clock.advance(0.6)
        await store.get("k")
        assert _status(store) == "ok"  # a new run, 0 s long
        clock.advance(1.0)
        await store.get("k")
        assert _status(store) == "ok"  # failing for 1 s, but two calls only
        await store.get("k")
        assert _status(store) == "degraded"  # failing for 1 s, over three calls
    finally:
        await store.close()


def test_the_window_must_be_a_sane_number() -> None:
    clock = FrozenClock()
    for seconds in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="degrade_after"):
            FallbackStore(MemoryStore(clock), MemoryStore(clock), clock, degrade_after=seconds)
    with pytest.raises(ValueError, match="degrade_failures"):
        FallbackStore(MemoryStore(clock), MemoryStore(clock), clock, degrade_failures=0)
