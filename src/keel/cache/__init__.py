"""keel.cache: one ``Store`` protocol over process memory, a machine-local file, Redis, and
Redis with a memory fallback.

``RedisStore`` runs on one server or a Redis Cluster, and also carries pub/sub
messages (``publish``, ``subscriber``).

``build_store(settings.cache, clock)`` picks the backend; nothing here connects
at import or construction.
"""

from __future__ import annotations

from keel.cache.factory import Stores, build_store, build_stores
from keel.cache.fallback import FallbackStore
from keel.cache.file_channel import FileInvalidations
from keel.cache.invalidation import InvalidationHandler, Invalidations, LocalInvalidations
from keel.cache.local import LocalStore
from keel.cache.memory import MemoryStore
from keel.cache.pubsub import RedisSubscriber
from keel.cache.redis_store import RedisStore
from keel.cache.store import CacheStatus, Store

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
