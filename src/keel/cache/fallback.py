"""``FallbackStore``: Redis while it answers, process memory while it does not.

Consistency trade-off, accepted on purpose: during an outage every process
keeps its own values (rate-limit counters count per worker, an ``add`` lock is
exclusive only within the worker, a revocation is seen only where it was
written). Nothing is copied back to Redis on recovery and memory values are not
consulted afterwards: Redis is the truth again from the first call after
recovery. A write whose reply timed out may have reached Redis as well as
memory. Keep a revocation in the database too, not only in the cache.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from keel._clock import Clock
from keel._logging import event
from keel.cache.store import CacheStatus, Store
from keel.errors import CacheFull, CacheUnavailable
from keel.metrics import record_cache_fallback, set_cache_degraded

__all__ = ["DEGRADE_FAILURES", "FallbackStore"]

#: Failed calls, with no success in between, before a store may degrade (with ``degrade_after``).
DEGRADE_FAILURES: Final = 3

_T = TypeVar("_T")
_log = logging.getLogger("keel.cache")


class FallbackStore:
    """A ``Store`` that serves from ``fallback`` whenever ``primary`` is unreachable.

    A call that finds the primary down is answered from the fallback within the
    same call, so callers never see an outage. One failure is not an outage,
    though: a stalled event loop (a handler hogging it) makes every read in
    flight time out at once although Redis answered. The store degrades only
    when calls have kept failing, with no success in between, for at least
    ``degrade_after`` seconds and ``degrade_failures`` calls; then it logs one
    ``cache_degraded`` warning and reports ``"degraded"``. While degraded it
    does not retry the primary on every call: at most once per
    ``retry_interval`` seconds (``clock.monotonic()``) one call first pings the
    primary, paying at most the primary's timeout, and on success the store
    logs ``cache_recovered`` and uses the primary again.

    ``CacheFull`` is not an outage: from the primary or from the fallback it
    reaches the caller as it is, and the state (``"ok"`` or ``"degraded"``)
    does not change.
    """

    def __init__(
        self,
        primary: Store,
        fallback: Store,
        clock: Clock,
        retry_interval: float = 1.0,
        *,
        degrade_after: float = 1.0,
        degrade_failures: int = DEGRADE_FAILURES,
    ) -> None:
        if not (math.isfinite(retry_interval) and retry_interval >= 0):
            raise ValueError("retry_interval must be a non-negative number of seconds")
        if not (math.isfinite(degrade_after) and degrade_after >= 0) or degrade_failures < 1:
            raise ValueError("degrade_after must be >= 0 seconds and degrade_failures >= 1")
        self._primary = primary
        self._fallback = fallback
        self._clock = clock
        self._retry_interval = retry_interval
        self._degrade_after = degrade_after
        self._degrade_failures = degrade_failures
        # The current run of failed calls: when its first failed, and how many did.
        self._failing_since: float | None = None
        self._failures = 0
        self._degraded = False
        self._degraded_since = 0.0
        self._next_probe = 0.0

    def __repr__(self) -> str:
        return f"FallbackStore({self._primary!r}, {self._fallback!r}, status={self.status!r})"

    @property
    def status(self) -> CacheStatus:
        """``"degraded"`` while serving from the fallback, else ``"ok"``."""
        return "degraded" if self._degraded else "ok"

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        return await self._run(lambda store: store.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order; all from the same store (primary or fallback)."""
        return await self._run(lambda store: store.get_many(keys))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        await self._run(lambda store: store.set(key, value, ttl=ttl))

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when this call stored it."""
        return await self._run(lambda store: store.add(key, value, ttl=ttl))

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store the versioned ``value`` unless ``key`` holds one at least as new."""
        return await self._run(lambda store: store.set_if_newer(key, value, ttl=ttl))

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        await self._run(lambda store: store.delete(key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key``; ``ttl`` applies only on creation."""
        return await self._run(lambda store: store.incr(key, amount, ttl=ttl))

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        return await self._run(lambda store: store.ttl(key))

    async def ping(self) -> None:
        """Check the primary (rate-limited while degraded) and update ``status``; never raises.

        The fallback always answers, so this store as a whole is never unavailable;
        /readyz reads ``status`` after it.
        """
        await self._run(lambda store: store.ping())

    async def close(self) -> None:
        """Close both stores."""
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()

    async def _run(self, operation: Callable[[Store], Awaitable[_T]]) -> _T:
        if await self._primary_usable():
            try:
                result = await operation(self._primary)
            except CacheFull:
                # A full store answered: not an outage, and writing the new key to
                # the fallback instead would split the data. The caller fails closed.
                self._failing_since = None
                raise
            except CacheUnavailable as exc:
                self._failed(exc)
            else:
                self._failing_since = None
                return result
        return await operation(self._fallback)

    def _failed(self, exc: CacheUnavailable) -> None:
        """Count a failed call; degrade once failures have lasted long enough."""
        if self._degraded:
            self._degrade(exc)
            return
        now = self._clock.monotonic()
        if self._failing_since is None:
            self._failing_since, self._failures = now, 0
        self._failures += 1
        if self._failures >= self._degrade_failures and (
            now - self._failing_since >= self._degrade_after
        ):
            self._degrade(exc)

    async def _primary_usable(self) -> bool:
        if not self._degraded:
            return True
        now = self._clock.monotonic()
        if now < self._next_probe:
            return False
        # Claim the probe before awaiting, so concurrent calls keep using the
        # fallback instead of all piling onto a server that may still be down.
        self._next_probe = now + self._retry_interval
        try:
            await self._primary.ping()
        except CacheUnavailable:
            return False
        if self._degraded:
            self._degraded = False
            self._failing_since = None
            set_cache_degraded(False)
            event(
                _log,
                logging.INFO,
                "cache_recovered",
                outage_seconds=round(self._clock.monotonic() - self._degraded_since, 3),
            )
        return True

    def _degrade(self, exc: CacheUnavailable) -> None:
        now = self._clock.monotonic()
        self._next_probe = now + self._retry_interval
        if self._degraded:
            return
        # Concurrent calls failing together flip the state once and log once.
        self._degraded = True
        self._degraded_since = now
        set_cache_degraded(True)
        record_cache_fallback()
        cause = exc.__cause__ or exc
        event(
            _log,
            logging.WARNING,
            "cache_degraded",
            error=type(cause).__name__,
            detail=str(cause)[:200],
            retry_interval=self._retry_interval,
        )
