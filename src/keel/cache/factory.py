"""``build_stores``: the stores and the invalidation channel the settings ask for."""

from __future__ import annotations

from dataclasses import dataclass

from keel._clock import Clock
from keel.cache.fallback import FallbackStore
from keel.cache.file_channel import FileInvalidations
from keel.cache.invalidation import Invalidations
from keel.cache.local import LocalStore
from keel.cache.store import Store
from keel.settings import CacheSettings

__all__ = ["Stores", "build_store", "build_stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """What one app uses, all sharing one Redis (or one machine-shared file).

    - ``general``: counters, locks and windows (brute-force limits). Redis
      while it answers, the machine-shared file once it has kept failing for
      ``degrade_after`` seconds (one slow answer is not an outage); the file
      alone without ``REDIS_URL``.
    - ``shared`` and ``channel``: the security cache's shared tier and its
      invalidation channel (``keel.auth.SecurityState``). Never a per-process
      fallback: while Redis is unusable the security cache reads the database.
    """

    general: Store
    shared: Store
    channel: Invalidations


def build_stores(settings: CacheSettings, clock: Clock) -> Stores:
    """Redis (with the shared file as fallback) when ``REDIS_URL`` is set, else the shared file.

    Connects to nothing and opens nothing: clients and files are opened on first use.
    """
    local = LocalStore(settings.state_file, clock)
    url = settings.redis_url.get_secret_value().strip() if settings.redis_url else ""
    if not url:
        # Every worker reads the one file; a shared counter beside it keeps near caches honest.
        changes = FileInvalidations(f"{settings.state_file}-changes")
        return Stores(general=local, shared=local, channel=changes)
    from keel.cache.redis_channel import RedisInvalidations
    from keel.cache.redis_store import RedisStore

    redis = RedisStore(
        url,
        namespace=settings.namespace,
        timeout=settings.timeout,
        cluster=settings.cluster,
        tls_verify=settings.tls_verify,
    )
    return Stores(
        general=FallbackStore(
            redis, local, clock, settings.retry_interval, degrade_after=settings.degrade_after
        ),
        shared=redis,
        channel=RedisInvalidations(redis, clock, retry_interval=settings.retry_interval),
    )


def build_store(settings: CacheSettings, clock: Clock) -> Store:
    """The general store of :func:`build_stores`."""
    return build_stores(settings, clock).general
