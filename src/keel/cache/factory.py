"""``build_store``: the cache the settings ask for."""

from __future__ import annotations

from keel._clock import Clock
from keel.cache.fallback import FallbackStore
from keel.cache.memory import MemoryStore
from keel.cache.redis_store import RedisStore
from keel.cache.store import Store
from keel.settings import CacheSettings

__all__ = ["build_store"]


def build_store(settings: CacheSettings, clock: Clock, *, namespace: str = "keel:") -> Store:
    """Return a ``MemoryStore`` without ``REDIS_URL``, else Redis with a memory fallback.

    Connects to nothing: the Redis client is created on first use.
    """
    url = settings.redis_url.get_secret_value().strip() if settings.redis_url else ""
    if not url:
        return MemoryStore(clock)
    return FallbackStore(
        RedisStore(url, namespace=namespace, timeout=settings.timeout, cluster=settings.cluster),
        MemoryStore(clock),
        clock,
        settings.retry_interval,
    )
