"""Workers of a Redis invalidation channel, for tests: each a ``RedisStore`` and a listening
``RedisInvalidations``, as an app's lifespan runs them; and a polling ``until``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from keel._clock import SystemClock
from keel.cache import RedisStore
from keel.cache.redis_channel import RedisInvalidations

__all__ = ["ChannelWorker", "channel_workers", "until"]


@dataclass
class ChannelWorker:
    store: RedisStore
    channel: RedisInvalidations
    heard: list[str | None] = field(default_factory=list)


async def until(condition: Callable[[], bool], within: float = 5.0) -> float:
    """Wait until ``condition()`` holds; the seconds it took. Fails after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def channel_workers(
    url: str,
    count: int,
    *,
    namespace: str = "chan:",
    cluster: bool = False,
    ping_interval: float = 0.05,
    lag_bound: float = 0.2,
) -> AsyncIterator[list[ChannelWorker]]:
    """``count`` workers listening on ``url``; yields once every channel is usable."""
    workers: list[ChannelWorker] = []
    tasks: list[asyncio.Task[None]] = []
    for _ in range(count):
        store = RedisStore(url, namespace=namespace, timeout=1.0, cluster=cluster)
        channel = RedisInvalidations(
            store,
            SystemClock(),
            ping_interval=ping_interval,
            lag_bound=lag_bound,
            retry_interval=0.1,
        )
        worker = ChannelWorker(store, channel)
        channel.on_invalidate(worker.heard.append)
        workers.append(worker)
        tasks.append(asyncio.create_task(channel.run()))
    try:
        await until(lambda: all(w.channel.usable for w in workers))
        yield workers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in workers:
            await worker.store.close()
