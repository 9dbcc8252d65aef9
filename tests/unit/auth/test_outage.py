"""Redis goes away and comes back with its old data: security state stays no more permissive than
the record, on every worker, before, during and after (a private redis-server).

Two "workers" (each a ``SecurityState`` with its own ``RedisStore`` and
``RedisInvalidations`` listener) share one Redis and one record (the test
``Directory``). While Redis is down, every check reads the record; changes
made then are refused at once everywhere; after Redis restarts with the
entries it held before the outage (``SAVE`` first), none of them is read
again (the epoch moved on).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from keel._clock import SystemClock
from keel.auth import SecurityState, SubjectState
from keel.cache import RedisStore
from keel.cache.redis_channel import RedisInvalidations
from tests.unit.auth._support import Directory, active
from tests.unit.cache._channel import channel_workers, until
from tests.unit.cache._servers import RedisServer


@contextlib.asynccontextmanager
async def _workers(url: str, directory: Directory) -> AsyncIterator[list[SecurityState]]:
    async with channel_workers(url, 2, namespace="outage:") as workers:
        yield [
            SecurityState(
                w.store, w.channel, load_subject=directory.load, load_session=directory.session
            )
            for w in workers
        ]


async def _admitted(state: SecurityState, subject: str, sid: str) -> set[str] | None:
    """The scopes a token of ``subject`` in ``sid`` would get now, or ``None`` if refused."""
    record, live = await state.check(subject, sid)
    if record.state is None or not record.state.active or not live:
        return None
    return set(record.state.scopes)


async def test_sec_36_changes_made_during_an_outage_hold_during_it_and_after_it(
    private_redis: RedisServer,
) -> None:
    directory = Directory(
        {
            "alice": active("user"),
            "bob": active("user", "admin"),
            "carol": active("user"),
        }
    )
    async with _workers(private_redis.url, directory) as (a, b):
        for worker in (a, b):
            assert await _admitted(worker, "alice", "alice-s") == {"user"}
            assert await _admitted(worker, "bob", "bob-s") == {"user", "admin"}
            assert await _admitted(worker, "carol", "carol-s") == {"user"}
        loads = directory.loads
        for worker in (a, b):  # warm: near caches answer without the record
            await _admitted(worker, "alice", "alice-s")
        assert directory.loads == loads

        private_redis.snapshot()  # Redis will come back with these (now stale) entries
        private_redis.kill()
        await until(lambda: not a.channel.usable and not b.channel.usable)

        # During the outage: a logout, a disable and a role change, each committed to the
        # record first; the write-throughs fail, and every worker still refuses at once.
        directory.ended.add("alice-s")
        await a.sessions_ended("alice", ["alice-s"])
        directory.change("carol", SubjectState(False, datetime.now(UTC), frozenset({"user"})))
        await b.subject_changed("carol")
        directory.change("bob", active("user"))
        await a.subject_changed("bob")
        for worker in (a, b):
            assert await _admitted(worker, "alice", "alice-s") is None
            assert await _admitted(worker, "carol", "carol-s") is None
            assert await _admitted(worker, "bob", "bob-s") == {"user"}

        private_redis.start()
        await until(lambda: a.channel.usable and b.channel.usable)
        for _ in range(3):  # the record once, then the shared and near tiers: all agree
            for worker in (a, b):
                assert await _admitted(worker, "alice", "alice-s") is None
                assert await _admitted(worker, "carol", "carol-s") is None
                assert await _admitted(worker, "bob", "bob-s") == {"user"}


async def test_good_tokens_keep_working_through_an_outage(private_redis: RedisServer) -> None:
    directory = Directory({"dave": active("user")})
    async with _workers(private_redis.url, directory) as (a, _b):
        assert await _admitted(a, "dave", "dave-s") == {"user"}
        private_redis.kill()
        await until(lambda: not a.channel.usable)
        for _ in range(5):
            assert await _admitted(a, "dave", "dave-s") == {"user"}


async def test_a_change_is_heard_by_the_other_worker_through_redis(
    private_redis: RedisServer,
) -> None:
    directory = Directory({"erin": active("user", "admin")})
    async with _workers(private_redis.url, directory) as (a, b):
        assert await _admitted(b, "erin", "erin-s") == {"user", "admin"}
        directory.change("erin", active("user"))
        heard = b.channel.stamp
        await a.subject_changed("erin")
        await until(lambda: b.channel.stamp > heard)
        assert await _admitted(b, "erin", "erin-s") == {"user"}


async def test_sec_36_a_change_on_a_worker_not_yet_subscribed_is_refused_by_the_others(
    private_redis: RedisServer,
) -> None:
    """A worker that answers requests before its subscription is up (just started, or its
    channel lags) cannot know the current epoch, so its write-through may land under an old
    one. The workers that have the session as live under the current epoch must still refuse
    it as soon as they hear of the change, not when that worker's listener catches up."""
    directory = Directory({"fay": active("user"), "gus": active("user", "admin")})
    async with _workers(private_redis.url, directory) as (a, b):
        for worker in (a, b):
            assert await _admitted(worker, "fay", "fay-s") == {"user"}
            assert await _admitted(worker, "gus", "gus-s") == {"user", "admin"}
        store = RedisStore(private_redis.url, namespace="outage:", timeout=1.0)
        try:
            # Its listener is never started: Redis answers it, but it hears nothing.
            late = SecurityState(
                store,
                RedisInvalidations(store, SystemClock()),
                load_subject=directory.load,
                load_session=directory.session,
            )
            assert not late.channel.usable
            heard: tuple[list[str | None], ...] = ([], [])
            for worker, scopes in zip((a, b), heard, strict=True):
                worker.channel.on_invalidate(scopes.append)
            directory.ended.add("fay-s")
            directory.change("gus", active("user"))
            await late.sessions_ended("fay", ["fay-s"])
            await late.subject_changed("gus")
            # One channel delivers in order: whoever heard the last change heard them all.
            await until(lambda: all("gus" in scopes for scopes in heard))
            for worker in (a, b):
                assert await _admitted(worker, "fay", "fay-s") is None
                assert await _admitted(worker, "gus", "gus-s") == {"user"}
        finally:
            await store.close()
