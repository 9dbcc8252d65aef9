"""Invalidation channels: how a worker learns that entries of a shared store changed.

A worker may keep a *near cache* of entries it read from a shared store (Redis)
only while it is sure to hear of every change to them. An ``Invalidations``
object is that assurance:

- ``usable`` says whether the shared store may be read and a near cache
  served right now. While it is ``False`` the caller reads the record (the
  database) instead: the channel is down, lagging, or the worker has not yet
  learnt the current epoch.
- ``epoch`` is part of every key of invalidated entries. After an outage the
  first worker back moves it on, so entries written before (which may miss
  changes made while the channel was down) are never read again.
- ``publish(scope)`` tells every worker, this one included, that the entries
  of ``scope`` changed; handlers registered with ``on_invalidate`` run for
  each scope heard (``None``: everything, after an epoch change).
- ``stamp`` grows with every invalidation heard: a reader compares it before
  and after a read to know whether a change crossed the read.

:class:`LocalInvalidations` serves a store only one process reads (process
memory, in tests): there is no near cache to invalidate, so it is always
usable. ``FileInvalidations`` (:mod:`keel.cache.file_channel`) keeps the near
caches of one machine's workers honest over the shared state file, and
``RedisInvalidations`` (:mod:`keel.cache.redis_channel`) those of every
instance over Redis pub/sub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Fanout", "InvalidationHandler", "Invalidations", "LocalInvalidations"]

#: Called with the scope whose entries changed, or ``None`` for every scope.
InvalidationHandler = Callable[[str | None], None]


class Invalidations(Protocol):
    """What a near cache needs to know to stay no staler than its shared store."""

    @property
    def usable(self) -> bool:
        """Whether the shared store may be read and a near cache served right now.

        Reading it may first catch up with changes published elsewhere (and run
        the handlers), so read it right before using a near cache.
        """
        ...

    @property
    def near(self) -> bool:
        """Whether a per-worker near cache is worth keeping (a remote shared store)."""
        ...

    @property
    def epoch(self) -> int:
        """The current epoch, part of every invalidated key."""
        ...

    @property
    def stamp(self) -> int:
        """A counter that grows with every invalidation this worker hears."""
        ...

    def on_invalidate(self, handler: InvalidationHandler) -> None:
        """Call ``handler`` for every invalidation heard, this worker's own included."""
        ...

    async def publish(self, scope: str) -> None:
        """Tell every worker that the entries of ``scope`` changed; raises ``CacheUnavailable``."""
        ...

    def write_failed(self) -> None:
        """A change could not be written through: move the epoch on once the store is back."""
        ...

    async def advance_epoch(self) -> None:
        """Move the epoch on now and tell every worker; raises ``CacheUnavailable``.

        A writer calls it before writing a change through while the channel is
        not ``usable``: it may not know the current epoch, so what it writes
        could land where no one reads, while the others keep reading the old
        entries. After the move nobody reads an entry written before it.
        """
        ...

    async def run(self) -> None:
        """Listen until cancelled (a supervised background task); a no-op where not needed."""
        ...


class Fanout:
    """A channel's handlers, and ``stamp``: how many invalidations were passed to them."""

    def __init__(self) -> None:
        self._handlers: list[InvalidationHandler] = []
        self.stamp = 0

    def add(self, handler: InvalidationHandler) -> None:
        self._handlers.append(handler)

    def __call__(self, scope: str | None) -> None:
        self.stamp += 1
        for handler in self._handlers:
            handler(scope)


class LocalInvalidations:
    """For a store only one process reads: always usable, nothing to listen to."""

    def __init__(self) -> None:
        self._fanout = Fanout()

    @property
    def usable(self) -> bool:
        return True

    @property
    def near(self) -> bool:
        return False

    @property
    def epoch(self) -> int:
        return 0

    @property
    def stamp(self) -> int:
        return self._fanout.stamp

    def on_invalidate(self, handler: InvalidationHandler) -> None:
        self._fanout.add(handler)

    async def publish(self, scope: str) -> None:
        self._fanout(scope)

    def write_failed(self) -> None:
        """Nothing to move on: the one process reads the one store, which it could not write."""

    async def advance_epoch(self) -> None:
        """Nothing to move on: always usable, there is one epoch."""

    async def run(self) -> None:
        """Nothing to listen to."""
