"""``RedisStore``: the shared cache on one Redis server or a Redis Cluster, via redis-py (asyncio).

Every failure to answer (refused, reset, timed out, no free connection, an
error reply such as ``READONLY`` or ``CLUSTERDOWN``, redirections that never
settle) is raised as ``CacheUnavailable`` chained to the redis-py error, so
callers handle one exception whatever the driver or the topology.

On a cluster every key lives in the hash slot of its name, namespace included.
``get_many`` sends one ``MGET`` per slot, so keys read together should share a
hash tag (``user:{42}:state``, ``user:{42}:roles``) and go out as one command.
The namespace itself never contains braces (``KEEL_CACHE_NAMESPACE`` refuses
them), so it cannot turn into, or break, a key's hash tag.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisClusterException, ResponseError

from keel._logging import event
from keel.cache._redis_client import (
    DRIVER_ERRORS,
    Client,
    driver_errors,
    new_client,
    subscriber_connection,
)
from keel.cache.pubsub import RedisSubscriber
from keel.cache.store import VERSION_DIGITS, CacheStatus, validate_ttl, validate_versioned
from keel.errors import CacheUnavailable

__all__ = ["RedisStore"]

_T = TypeVar("_T")
_log = logging.getLogger("keel.cache")

# Create the counter at 0 with its expiry only if absent, then add. A script
# runs as one unit on the key's node, so no client ever sees a counter without
# expiry and a window never restarts while the key lives; one key, so it runs
# on a cluster too. Errors from INCRBY keep Redis's wording.
_INCR_WITH_TTL = """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


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


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # A URL with ?decode_responses=true would hand back str; the contract is bytes.
    return value.encode() if isinstance(value, str) else value


class RedisStore:
    """A ``Store`` on Redis, every key prefixed with ``namespace``; ``cluster`` for a Redis Cluster.

    Constructing it connects to nothing: the client is created on first use,
    inside the running event loop. Connecting and every read are bounded by
    ``timeout`` seconds, and so is waiting for one of the ``max_connections``
    connections (per node on a cluster, where at most ``max_connections``
    commands are in flight at once). redis-py's own retries are off: a failed
    call fails after one attempt, so the caller's latency stays bounded and a
    non-idempotent ``incr`` is never applied twice.

    ``publish`` and ``subscriber`` carry messages between processes over
    classic pub/sub; see ``keel.cache.pubsub`` for what is guaranteed.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "keel:",
        timeout: float,
        max_connections: int = 32,
        cluster: bool = False,
        tls_verify: bool = True,
    ) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._url = url
        self._namespace = namespace
        self._timeout = timeout
        self._max_connections = max_connections
        self._cluster = cluster
        self._tls_verify = tls_verify
        self._client: Client | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._status: CacheStatus = "ok"

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        return (
            f"RedisStore(namespace={self._namespace!r}, timeout={self._timeout}, "
            f"cluster={self._cluster})"
        )

    @property
    def namespace(self) -> str:
        """The prefix of every key and channel this store uses."""
        return self._namespace

    @property
    def status(self) -> CacheStatus:
        """``"degraded"`` when the last call could not reach Redis, else ``"ok"``."""
        return self._status

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        name = self._namespace + key
        with self._guard():
            value: bytes | str | None = await self._run(lambda redis: redis.get(name))
        return _as_bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order; one ``MGET`` (per hash slot on a cluster)."""
        if not keys:
            return []
        names = [self._namespace + key for key in keys]
        with self._guard():
            client = self._redis()
            if isinstance(client, RedisCluster):
                values = await self._mget_by_slot(client, names)
            else:
                values = await self._run(lambda redis: redis.mget(names))
        return [_as_bytes(value) for value in values]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        validate_ttl(ttl)
        name, px = self._namespace + key, None if ttl is None else _milliseconds(ttl)
        with self._guard():
            await self._run(lambda redis: redis.set(name, value, px=px))

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX``); ``True`` when stored."""
        validate_ttl(ttl)
        name, px = self._namespace + key, None if ttl is None else _milliseconds(ttl)
        with self._guard():
            stored = await self._run(lambda redis: redis.set(name, value, nx=True, px=px))
        return bool(stored)

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store the versioned ``value`` unless ``key`` holds one at least as new (one script)."""
        validate_ttl(ttl)
        validate_versioned(value)
        px = 0 if ttl is None else _milliseconds(ttl)
        name = self._namespace + key
        with self._guard():
            stored = await self._run(
                lambda redis: redis.eval(_SET_IF_NEWER, 1, name, value, VERSION_DIGITS, px)
            )
        return bool(stored)

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        name = self._namespace + key
        with self._guard():
            await self._run(lambda redis: redis.delete(name))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key``; ``ttl`` applies only on creation."""
        validate_ttl(ttl)
        name = self._namespace + key
        with self._guard(), _integer_errors():
            if ttl is None:
                result: int = await self._run(lambda redis: redis.incrby(name, amount))
            else:
                px = _milliseconds(ttl)
                result = await self._run(
                    lambda redis: redis.eval(_INCR_WITH_TTL, 1, name, amount, px)
                )
        return int(result)

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        name = self._namespace + key
        with self._guard():
            pttl: int = await self._run(lambda redis: redis.pttl(name))
        # -2: no such key, -1: no expiry.
        return None if pttl < 0 else pttl / 1000

    async def ping(self) -> None:
        """Return when Redis (every cluster node) answers ``PING``; else ``CacheUnavailable``."""
        # On a cluster, PING without a target asks one node; a dead primary
        # means part of the keyspace does not answer, so ask them all.
        with self._guard():
            if self._cluster:
                await self._run(lambda redis: redis.ping(target_nodes=RedisCluster.PRIMARIES))
            else:
                await self._run(lambda redis: redis.ping())

    async def evicts(self) -> bool:
        """Whether Redis (any cluster node) may evict keys to make room.

        True when a ``maxmemory`` is set with any ``maxmemory-policy`` but
        ``noeviction``: rate-limit counters and locks could then vanish under
        memory pressure. Read from ``INFO memory``, which managed services that
        refuse ``CONFIG GET`` still answer.
        """
        with self._guard():
            if self._cluster:
                reply = await self._run(
                    lambda redis: redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
                )
            else:
                reply = await self._run(lambda redis: redis.info("memory"))
        sections = [reply] if "maxmemory_policy" in reply else list(reply.values())
        return any(
            int(section.get("maxmemory", 0) or 0) > 0
            and str(section.get("maxmemory_policy", "noeviction")) != "noeviction"
            for section in sections
            if isinstance(section, dict)
        )

    async def publish(self, channel: str, payload: bytes) -> None:
        """``PUBLISH`` ``payload`` on ``channel`` (namespaced) to every subscriber connected now.

        On a cluster it goes through the node that owns the channel's hash slot,
        where ``subscriber`` connects first. Raises ``CacheUnavailable`` when
        Redis does not take it.
        """
        name = self._namespace + channel
        with self._guard():
            client = self._redis()
            if isinstance(client, RedisCluster):
                owner = await self._slot_owner(client, name)
                await self._run(lambda redis: redis.publish(name, payload, target_nodes=owner))
            else:
                await self._run(lambda redis: redis.publish(name, payload))

    def subscriber(self, channel: str) -> RedisSubscriber:
        """A subscriber to ``channel`` (namespaced); it connects to nothing until ``connect()``."""
        name = self._namespace + channel
        return RedisSubscriber(name, lambda: self._subscriber_connections(name))

    async def close(self) -> None:
        """Close the client's connections; a later call would open new ones."""
        client, self._client = self._client, None
        self._in_flight = None
        if client is None:
            return
        try:
            await client.aclose()
        except DRIVER_ERRORS as exc:
            # Shutdown must go on even if a dead server makes closing fail.
            event(_log, logging.DEBUG, "cache_close_failed", error=type(exc).__name__)

    def _redis(self) -> Client:
        if self._client is None:
            self._client = new_client(
                self._url,
                cluster=self._cluster,
                timeout=self._timeout,
                max_connections=self._max_connections,
                tls_verify=self._tls_verify,
            )
            if self._cluster:
                # redis-py's cluster client fails instead of waiting when a node's
                # connections are all busy; waiting here keeps the single-server
                # behaviour: bounded connections, a bounded wait for one.
                self._in_flight = asyncio.Semaphore(self._max_connections)
        return self._client

    async def _run(self, command: Callable[[Client], Awaitable[_T]]) -> _T:
        client = self._redis()
        in_flight = self._in_flight
        if in_flight is None or not isinstance(client, RedisCluster):
            return await command(client)
        async with asyncio.timeout(self._timeout):
            await in_flight.acquire()
        try:
            # Load the slot map (once, or again after a connection failure) before
            # routing: a command routed without it goes to a random node and
            # comes back MOVED.
            await client.initialize()
            return await command(client)
        finally:
            in_flight.release()

    async def _mget_by_slot(
        self, client: RedisCluster, names: list[str]
    ) -> list[bytes | str | None]:
        slots: dict[int, list[str]] = {}
        for name in dict.fromkeys(names):
            slots.setdefault(client.keyslot(name), []).append(name)
        groups = list(slots.values())
        replies = await _all([self._mget(group) for group in groups])
        values = {
            name: value
            for group, reply in zip(groups, replies, strict=True)
            for name, value in zip(group, reply, strict=True)
        }
        return [values[name] for name in names]

    async def _mget(self, names: list[str]) -> list[bytes | str | None]:
        values: list[bytes | str | None] = await self._run(lambda redis: redis.mget(names))
        return values

    async def _slot_owner(self, client: RedisCluster, name: str) -> ClusterNode:
        # The slot map is loaded on the first command; publish may be the first.
        await client.initialize()
        owner = client.get_node_from_key(name)
        if owner is None:  # only possible when asking for a replica; never here
            raise RedisClusterException(f"no node owns the slot of {name!r}")
        return owner

    async def _subscriber_connections(self, channel: str) -> list[AbstractConnection]:
        with driver_errors("Redis did not answer"):
            client = self._redis()
            if not isinstance(client, RedisCluster):
                return [
                    subscriber_connection(
                        self._url, timeout=self._timeout, tls_verify=self._tls_verify
                    )
                ]
            owner = await self._slot_owner(client, channel)
        # The owner first (where publish goes), then every other node: classic
        # PUBLISH reaches them all, so any live node will do.
        nodes = sorted(client.get_nodes(), key=lambda node: node.name != owner.name)
        return [
            subscriber_connection(
                self._url,
                timeout=self._timeout,
                address=(n.host, int(n.port)),
                tls_verify=self._tls_verify,
            )
            for n in nodes
        ]

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            with driver_errors("Redis did not answer"):
                yield
        except CacheUnavailable:
            self._status = "degraded"
            raise
        self._status = "ok"


async def _all(calls: list[Awaitable[_T]]) -> list[_T]:
    """Await ``calls`` concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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
