"""``RedisStore``: the shared cache on Redis, via redis-py's asyncio client.

Every failure of the server to answer (refused, reset, timed out, pool
exhausted, or an error reply such as ``READONLY``) is raised as
``CacheUnavailable`` chained to the redis-py error, so callers handle one
exception whatever the driver does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from keel._logging import event
from keel.cache.store import VERSION_DIGITS, CacheStatus, validate_ttl, validate_versioned
from keel.errors import CacheUnavailable

__all__ = ["RedisStore"]

_log = logging.getLogger("keel.cache")


# KEYS[1] = key; ARGV = value, prefix length, expiry in ms (0: none). Byte-wise comparison of
# the zero-padded prefixes is numeric comparison of the versions.
_SET_IF_NEWER = """
local stored = redis.call('GET', KEYS[1])
local width = tonumber(ARGV[2])
if stored then
  local prefix = string.sub(stored, 1, width)
  if string.len(prefix) == width and not string.find(prefix, '%D')
     and prefix >= string.sub(ARGV[1], 1, width) then
    return 0
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


def _milliseconds(ttl: float) -> int:
    # Redis expiries are whole milliseconds; round up so a tiny ttl never becomes 0 (an error).
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    """A ``Store`` on Redis, every key prefixed with ``namespace``.

    Constructing it connects to nothing: the client and its pool are created on
    first use, inside the running event loop. Connecting and every read are
    bounded by ``timeout`` seconds, and so is waiting for one of the
    ``max_connections`` pooled connections. redis-py's own retries are off: a
    failed call fails after one attempt, so the caller's latency stays bounded
    and a non-idempotent ``incr`` is never applied twice.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "keel:",
        timeout: float,
        max_connections: int = 32,
    ) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._url = url
        self._namespace = namespace
        self._timeout = timeout
        self._max_connections = max_connections
        self._client: Redis | None = None
        self._status: CacheStatus = "ok"

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        return f"RedisStore(namespace={self._namespace!r}, timeout={self._timeout})"

    @property
    def namespace(self) -> str:
        """The prefix of every key this store writes."""
        return self._namespace

    @property
    def status(self) -> CacheStatus:
        """``"degraded"`` when the last call could not reach Redis, else ``"ok"``."""
        return self._status

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        with self._guard():
            value = await self._redis().get(self._namespace + key)
        # A URL with ?decode_responses=true would hand back str; the contract is bytes.
        return value.encode() if isinstance(value, str) else value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order, by one ``MGET``; ``None`` for absent ones."""
        if not keys:
            return []
        names = [self._namespace + key for key in keys]
        with self._guard():
            values: list[bytes | str | None] = await self._redis().mget(names)
        return [value.encode() if isinstance(value, str) else value for value in values]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        validate_ttl(ttl)
        px = None if ttl is None else _milliseconds(ttl)
        with self._guard():
            await self._redis().set(self._namespace + key, value, px=px)

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX``); ``True`` when stored."""
        validate_ttl(ttl)
        px = None if ttl is None else _milliseconds(ttl)
        with self._guard():
            stored = await self._redis().set(self._namespace + key, value, nx=True, px=px)
        return bool(stored)

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store the versioned ``value`` unless ``key`` holds one at least as new (one script)."""
        validate_ttl(ttl)
        validate_versioned(value)
        px = 0 if ttl is None else _milliseconds(ttl)
        with self._guard():
            stored = await self._redis().eval(
                _SET_IF_NEWER, 1, self._namespace + key, value, VERSION_DIGITS, px
            )
        return bool(stored)

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        with self._guard():
            await self._redis().delete(self._namespace + key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key``; ``ttl`` applies only on creation."""
        validate_ttl(ttl)
        name = self._namespace + key
        with self._guard(), _integer_errors():
            if ttl is None:
                result: int = await self._redis().incrby(name, amount)
                return result
            # MULTI/EXEC: create the key at 0 with its expiry only if absent, then add.
            # Both run as one unit, so no other client can see a counter without expiry
            # and a window never restarts while the key lives.
            async with self._redis().pipeline(transaction=True) as pipe:
                pipe.set(name, b"0", nx=True, px=_milliseconds(ttl))
                pipe.incrby(name, amount)
                _, result = await pipe.execute()
            return result

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        with self._guard():
            pttl: int = await self._redis().pttl(self._namespace + key)
        # -2: no such key, -1: no expiry.
        return None if pttl < 0 else pttl / 1000

    async def ping(self) -> None:
        """Return when Redis answers ``PING``; raise ``CacheUnavailable`` otherwise."""
        with self._guard():
            await self._redis().ping()

    async def close(self) -> None:
        """Close the pool's connections; a later call would open new ones."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.aclose()
        except (RedisError, OSError) as exc:
            # Shutdown must go on even if a dead server makes closing fail.
            event(_log, logging.DEBUG, "cache_close_failed", error=type(exc).__name__)

    def _redis(self) -> Redis:
        if self._client is None:
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                socket_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
            )
            # from_pool: closing the client closes the pool it owns.
            self._client = Redis.from_pool(pool)
        return self._client

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            # OSError includes TimeoutError, for anything redis-py lets through unwrapped.
            self._status = "degraded"
            raise CacheUnavailable("Redis did not answer") from exc
        self._status = "ok"


@contextmanager
def _integer_errors() -> Iterator[None]:
    # A non-integer value or an overflow is the caller's error, not an outage:
    # raise it as the ValueError the memory store raises.
    try:
        yield
    except ResponseError as exc:
        message = str(exc)
        if "not an integer" in message or "overflow" in message:
            raise ValueError("the stored value is not a 64-bit integer") from exc
        raise
