"""keel.cache: one ``Store`` protocol over process memory, a machine-local file, Redis, and
Redis with a memory fallback.

``RedisStore`` runs on one server or a Redis Cluster, and also carries pub/sub
messages (``publish``, ``subscriber``).

``build_stores(settings.cache, clock)`` picks the backends; nothing here connects
at import or construction. redis-py is imported only when a Redis store is
used (``RedisStore``, ``RedisSubscriber``, or a ``REDIS_URL``): a worker of the
embedded default never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.cache.factory import Stores, build_store, build_stores
from keel.cache.fallback import FallbackStore
from keel.cache.file_channel import FileInvalidations
from keel.cache.invalidation import InvalidationHandler, Invalidations, LocalInvalidations
from keel.cache.local import LocalStore
from keel.cache.memory import MemoryStore
from keel.cache.store import CacheStatus, Store

if TYPE_CHECKING:
    from keel.cache.pubsub import RedisSubscriber
    from keel.cache.redis_store import RedisStore

__all__ = [
    "CacheStatus",
    "FallbackStore",
    "FileInvalidations",
    "InvalidationHandler",
    "Invalidations",
    "LocalInvalidations",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "RedisSubscriber",
    "Store",
    "Stores",
    "build_store",
    "build_stores",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from keel.cache.redis_store import RedisStore

        return RedisStore
    if name == "RedisSubscriber":
        from keel.cache.pubsub import RedisSubscriber

        return RedisSubscriber
    raise AttributeError(f"module 'keel.cache' has no attribute {name!r}")
