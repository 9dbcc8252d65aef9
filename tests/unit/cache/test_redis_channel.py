"""RedisInvalidations against real servers: delivery, the PONG-bounded lag, the epoch after outages.

Each "worker" is a ``RedisInvalidations`` with its own ``RedisStore`` and its
listener running as a task, as the lifespan runs it. Private servers are
killed, paused (SIGSTOP: a hang with every connection open) and restarted
with the data they had (``SAVE`` before the kill), never the shared one.
"""

from __future__ import annotations

import pytest

from keel.cache.redis_channel import EPOCH_KEY
from tests.unit.cache._channel import channel_workers, until
from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._servers import RedisServer

PING = 0.05
LAG = 0.2


async def test_a_published_scope_reaches_every_worker_and_the_publisher_at_once(
    private_redis: RedisServer,
) -> None:
    async with channel_workers(private_redis.url, 3) as (a, b, c):
        await a.channel.publish("user-1")
        assert a.heard[-1] == "user-1"  # at once, before any message comes back
        await until(lambda: b.heard[-1:] == ["user-1"] and c.heard[-1:] == ["user-1"])
        stamps = [w.channel.stamp for w in (a, b, c)]
        await b.channel.publish("user-2")
        await until(lambda: all(w.heard[-1] == "user-2" for w in (a, b, c)))
        assert [w.channel.stamp for w in (a, b, c)] > stamps


async def test_every_worker_agrees_on_the_epoch_and_first_starts_move_nothing(
    private_redis: RedisServer,
) -> None:
    async with channel_workers(private_redis.url, 2) as (a, b):
        assert a.channel.epoch == b.channel.epoch == 1
    async with channel_workers(private_redis.url, 2) as (c, d):
        # A restart of every worker, with Redis up all along: no flush for anyone.
        assert c.channel.epoch == d.channel.epoch == 1


async def test_a_hung_redis_makes_the_channel_unusable_within_the_bound_and_back(
    private_redis: RedisServer,
) -> None:
    async with channel_workers(private_redis.url, 2) as (a, b):
        private_redis.pause()
        try:
            took = await until(lambda: not a.channel.usable and not b.channel.usable)
        finally:
            private_redis.resume()
        assert took <= PING + LAG + 0.2  # the bound, plus this loop's own polling
        await until(lambda: a.channel.usable and b.channel.usable)


async def test_after_redis_restarts_with_its_old_data_the_epoch_has_moved_past_it(
    private_redis: RedisServer,
) -> None:
    async with channel_workers(private_redis.url, 2) as (a, b):
        before = a.channel.epoch
        await a.store.set("sec:e1:{u}:s", b"stale entry")
        private_redis.snapshot()  # what the restarted server will come back with
        private_redis.kill()
        await until(lambda: not a.channel.usable and not b.channel.usable)
        assert a.heard[-1] is None  # the near cache was emptied when the channel went
        private_redis.start()
        await until(lambda: a.channel.usable and b.channel.usable)
        assert await a.store.get("sec:e1:{u}:s") == b"stale entry"  # the old data is back...
        # ...but no worker reads it again: every key is now under a newer epoch.
        assert a.channel.epoch == b.channel.epoch > before
        assert int(await a.store.get(EPOCH_KEY) or b"0") == a.channel.epoch


async def test_a_failed_write_through_moves_the_epoch_on_for_everyone(
    private_redis: RedisServer,
) -> None:
    async with channel_workers(private_redis.url, 2) as (a, b):
        before = b.channel.epoch
        a.channel.write_failed()
        await until(lambda: b.channel.epoch > before and a.channel.epoch == b.channel.epoch)
        assert b.heard[-1] is None


@pytest.mark.redis
async def test_workers_on_the_shared_redis_hear_each_other(
    redis_url: str, redis_namespace: str
) -> None:
    async with channel_workers(redis_url, 2, namespace=redis_namespace) as (a, b):
        await a.channel.publish("subject-9")
        await until(lambda: "subject-9" in b.heard)


@pytest.mark.cluster
async def test_on_a_cluster_every_worker_hears_every_change(
    redis_cluster: LocalCluster, cluster_namespace: str
) -> None:
    async with channel_workers(redis_cluster.url, 3, namespace=cluster_namespace, cluster=True) as (
        a,
        b,
        c,
    ):
        assert a.channel.epoch == b.channel.epoch == c.channel.epoch
        await c.channel.publish("subject-c")
        await until(lambda: all("subject-c" in w.heard for w in (a, b, c)))
