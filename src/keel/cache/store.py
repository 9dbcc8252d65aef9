"""The ``Store`` protocol every cache backend implements, and the rules they share.

Keys are ``str`` and values ``bytes``. A ``ttl`` is a positive, finite number of
seconds; ``None`` means "no expiry". An expired key is gone: ``get`` returns
``None``, ``add`` succeeds again and ``incr`` starts from zero. Every backend
(memory, Redis, fallback) gives the same answers; one contract suite proves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, TypeAlias

__all__ = ["INT64_MAX", "INT64_MIN", "CacheStatus", "Store", "validate_ttl"]

CacheStatus: TypeAlias = Literal["ok", "degraded"]

# Redis counters are signed 64-bit; the memory store enforces the same range so a
# counter that overflows fails the same way everywhere.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class Store(Protocol):
    """An async key/value cache shared by every request that reaches it.

    Everything that must be shared between workers and instances (rate limits,
    revocations) goes through a ``Store``; only the memory store is per-process.
    """

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order (``None`` for each absent or expired one).

        One round trip to a shared backend (Redis ``MGET``; on a Redis Cluster
        one ``MGET`` per hash slot, sent at once): several lookups a request
        needs cost the latency of one. Not a snapshot across keys on every
        backend; each value is what ``get`` would have returned.
        """
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        ...

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when this call stored it.

        Atomic: of any number of concurrent ``add`` calls for one key, exactly one wins.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` (0 when absent) and return the result.

        Atomic. ``ttl`` applies only when this call creates the key, so the key
        expires ``ttl`` seconds after the first increment: a fixed window. Raises
        ``ValueError`` when the stored value is not a 64-bit decimal integer or the
        result would overflow.
        """
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise ``CacheUnavailable`` when it does not."""
        ...

    async def close(self) -> None:
        """Release connections and memory. Safe to call more than once."""
        ...

    @property
    def status(self) -> CacheStatus:
        """``"ok"``, or ``"degraded"`` while the shared backend is unreachable (for /readyz)."""
        ...


def validate_ttl(ttl: float | None) -> None:
    """Raise ``ValueError`` unless ``ttl`` is ``None`` or a positive finite number of seconds."""
    # Redis rejects 0 and negative expiries; refusing them everywhere keeps backends alike.
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        raise ValueError("ttl must be a positive, finite number of seconds")
