"""``RedisInvalidations``: cache invalidation over Redis pub/sub, with an epoch for outages.

Every worker keeps one subscription to ``<namespace>inv`` (classic pub/sub,
so it also works on Redis Cluster, where a PUBLISH reaches every node). A
message is a scope (a subject id) whose entries changed, or ``!e<n>``: the
epoch is now ``n``.

Bounds, each tested:

- A change is heard by every subscribed worker as fast as Redis delivers a
  message (about a millisecond on one network).
- ``usable`` needs a PONG on the subscription within ``lag_bound`` seconds.
  The worker sends a PING every ``ping_interval``; Redis answers it on the
  same connection after every message published before it, so a fresh PONG
  proves nothing is waiting undelivered. A channel that stalls, or a Redis
  that stops answering, makes the worker stop trusting its near cache and
  the shared store within ``ping_interval + lag_bound`` (0.35 s by default)
  and read the database instead.
- Entries written before an outage may miss changes made during it (their
  write-through failed). So a worker whose subscription was lost, or whose
  write-through failed, moves the epoch on (``INCR <namespace>sec:epoch``)
  as soon as Redis answers again, and tells everyone: keys carry the epoch,
  so no entry from before is read again, even from a Redis restarted with
  its old data (the counter comes back with it, and moves past it).
- A worker that writes a change through while its channel is not usable
  (its subscription is not up yet, or lags) may not know the current epoch:
  it moves the epoch on first (:meth:`advance_epoch`), so its write lands
  where everyone reads and no older entry is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Final, Protocol

from keel._clock import Clock
from keel._logging import event
from keel.cache.invalidation import Fanout, InvalidationHandler
from keel.errors import CacheUnavailable

__all__ = ["CHANNEL", "EPOCH_KEY", "PubSubStore", "RedisInvalidations", "Subscriber"]

CHANNEL: Final = "inv"
EPOCH_KEY: Final = "sec:epoch"
_EPOCH_PREFIX: Final = b"!e"

_log = logging.getLogger("keel.cache")


class Subscriber(Protocol):
    """One subscription on a dedicated connection (``RedisStore.subscriber``)."""

    async def connect(self) -> None: ...

    async def receive(self, timeout: float) -> tuple[str, bytes] | None: ...  # noqa: ASYNC109

    async def ping(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class PubSubStore(Protocol):
    """The part of ``RedisStore`` this channel uses."""

    async def get(self, key: str) -> bytes | None: ...

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool: ...

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int: ...

    async def publish(self, channel: str, payload: bytes) -> None: ...

    def subscriber(self, channel: str) -> Subscriber: ...


class RedisInvalidations:
    """``Invalidations`` over Redis pub/sub; :meth:`run` is the worker's listener task."""

    def __init__(
        self,
        store: PubSubStore,
        clock: Clock,
        *,
        ping_interval: float = 0.1,
        lag_bound: float = 0.25,
        retry_interval: float = 1.0,
    ) -> None:
        for name, value in (
            ("ping_interval", ping_interval),
            ("lag_bound", lag_bound),
            ("retry_interval", retry_interval),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        self._store = store
        self._clock = clock
        self._ping_interval = ping_interval
        self._lag_bound = lag_bound
        self._retry_interval = retry_interval
        self._fanout = Fanout()
        self._epoch: int | None = None
        self._last_pong = -math.inf
        self._dirty = False
        self._connected = False

    def __repr__(self) -> str:
        return f"RedisInvalidations(usable={self.usable}, epoch={self._epoch})"

    @property
    def usable(self) -> bool:
        return (
            self._connected
            and self._epoch is not None
            and self._clock.monotonic() - self._last_pong <= self._lag_bound
        )

    @property
    def near(self) -> bool:
        return True

    @property
    def epoch(self) -> int:
        return self._epoch if self._epoch is not None else 0

    @property
    def stamp(self) -> int:
        return self._fanout.stamp

    def on_invalidate(self, handler: InvalidationHandler) -> None:
        self._fanout.add(handler)

    async def publish(self, scope: str) -> None:
        # This worker forgets at once, whatever happens to the message.
        self._invalidate(scope)
        try:
            await self._store.publish(CHANNEL, scope.encode("utf-8"))
        except CacheUnavailable:
            self.write_failed()
            raise

    def write_failed(self) -> None:
        self._dirty = True

    async def advance_epoch(self) -> None:
        current = await self._store.incr(EPOCH_KEY)
        # Every failure flagged before the INCR is covered by it (no await in between).
        self._dirty = False
        await self._store.publish(CHANNEL, _EPOCH_PREFIX + b"%d" % current)
        event(_log, logging.INFO, "cache_epoch_moved", epoch=current)
        self._set_epoch(current)

    async def run(self) -> None:
        """Subscribe, keep the epoch and the PONGs current, and reconnect after every loss."""
        first = True
        while True:
            subscriber = self._store.subscriber(CHANNEL)
            try:
                await subscriber.connect()
                await self._adopt_epoch(bump=not first or self._dirty)
                first = False
                await self._listen(subscriber)
            except CacheUnavailable as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(CacheUnavailable):
                    await subscriber.close()
            await asyncio.sleep(self._retry_interval)

    # -- internals ---------------------------------------------------------------------------

    async def _adopt_epoch(self, *, bump: bool) -> None:
        """Learn the epoch; move it on first when entries may have missed a change."""
        if bump:
            await self.advance_epoch()
            return
        raw = await self._store.get(EPOCH_KEY)
        if raw is None:
            await self._store.add(EPOCH_KEY, b"1", ttl=None)
            raw = await self._store.get(EPOCH_KEY)
        self._set_epoch(int(raw or b"1"))

    async def _listen(self, subscriber: Subscriber) -> None:
        next_ping = self._clock.monotonic()
        pending: bytes | None = None
        while True:
            now = self._clock.monotonic()
            if now >= next_ping:
                pending = b"%d" % self._stamp_token(now)
                await subscriber.ping(pending)
                next_ping = now + self._ping_interval
            received = await subscriber.receive(max(0.0, next_ping - self._clock.monotonic()))
            if received is None:
                continue
            kind, data = received
            if kind == "pong":
                if data == pending:
                    self._connected = True
                    self._last_pong = self._clock.monotonic()
            elif kind == "message":
                self._message(data)
            if self._dirty:
                await self._adopt_epoch(bump=True)

    @staticmethod
    def _stamp_token(now: float) -> int:
        return int(now * 1_000_000)

    def _message(self, data: bytes) -> None:
        if data.startswith(_EPOCH_PREFIX):
            try:
                announced = int(data[len(_EPOCH_PREFIX) :])
            except ValueError:
                return
            if announced > self.epoch:
                self._set_epoch(announced)
            return
        self._invalidate(data.decode("utf-8", "replace"))

    def _set_epoch(self, epoch: int) -> None:
        if self._epoch is not None and epoch <= self._epoch:
            return
        self._epoch = epoch
        self._invalidate(None)

    def _invalidate(self, scope: str | None) -> None:
        self._fanout(scope)

    def _lost(self, exc: CacheUnavailable) -> None:
        was_connected = self._connected
        self._connected = False
        self._invalidate(None)
        if was_connected:
            cause = exc.__cause__ or exc
            event(
                _log,
                logging.WARNING,
                "cache_channel_lost",
                error=type(cause).__name__,
                retry_interval=self._retry_interval,
            )
