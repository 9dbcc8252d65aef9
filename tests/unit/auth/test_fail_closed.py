"""Session and subject reads fail closed: a shared store that cannot answer, or answers "unknown",
sends the read to the record, never to "live" (SEC-36; a private redis-server, no mocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from keel._clock import SystemClock
from keel.auth import SecurityState
from keel.cache import RedisStore
from keel.cache.fallback import FallbackStore
from keel.cache.memory import MemoryStore
from tests.unit.auth._support import Directory, active
from tests.unit.cache._channel import channel_workers, until
from tests.unit.cache._servers import RedisServer


@contextlib.asynccontextmanager
async def _workers(url: str, directory: Directory) -> AsyncIterator[list[SecurityState]]:
    async with channel_workers(url, 2, namespace="closed:") as workers:
        yield [
            SecurityState(
                w.store, w.channel, load_subject=directory.load, load_session=directory.session
            )
            for w in workers
        ]


async def _live(state: SecurityState, subject: str, sid: str) -> bool:
    record, live = await state.check(subject, sid)
    return record.state is not None and record.state.active and live


async def test_sec_36_a_logout_during_a_hung_redis_is_refused_on_every_worker(
    private_redis: RedisServer,
) -> None:
    directory = Directory({"alice": active("user")})
    async with _workers(private_redis.url, directory) as (a, b):
        for worker in (a, b):
            assert await _live(worker, "alice", "alice-s")
            assert await _live(worker, "alice", "alice-s")  # now near, and "live" in Redis

        private_redis.pause()  # hung: connections stay open, nothing answers
        try:
            await until(lambda: not a.channel.usable and not b.channel.usable)
            directory.ended.add("alice-s")  # the logout commits to the record
            await a.sessions_ended("alice", ["alice-s"])  # its write-through times out
            for worker in (a, b):
                assert not await _live(worker, "alice", "alice-s")
        finally:
            private_redis.resume()
        await until(lambda: a.channel.usable and b.channel.usable)
        for worker in (a, b):  # Redis still holds "live" from before: never read again
            assert not await _live(worker, "alice", "alice-s")


async def test_a_session_redis_knows_nothing_of_is_read_from_the_record(
    private_redis: RedisServer,
) -> None:
    directory = Directory({"bob": active("user")})
    directory.ended.add("bob-old")
    async with _workers(private_redis.url, directory) as (a, _):
        assert not await _live(a, "bob", "bob-old")
        assert directory.session_loads == 1


async def test_security_state_never_reads_a_per_process_fallback(
    private_redis: RedisServer,
) -> None:
    """Even on a store that falls back to process memory, an outage reads the record."""
    directory = Directory({"carol": active("user")})
    clock = SystemClock()
    async with channel_workers(private_redis.url, 1, namespace="fb:") as (worker,):
        store = FallbackStore(
            RedisStore(private_redis.url, namespace="fb:", timeout=0.2), MemoryStore(clock), clock
        )
        state = SecurityState(
            store, worker.channel, load_subject=directory.load, load_session=directory.session
        )
        try:
            assert await _live(state, "carol", "carol-s")
            private_redis.kill()
            await until(lambda: not worker.channel.usable)
            directory.ended.add("carol-s")
            for _ in range(5):
                assert not await _live(state, "carol", "carol-s")
        finally:
            await store.close()
