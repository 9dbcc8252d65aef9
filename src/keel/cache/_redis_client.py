"""How keel builds its redis-py clients and connections, and which driver errors mean "down".

One place decides the bounds every Redis connection keel opens shares:
connecting and every read are bounded by ``timeout`` seconds, and redis-py's
own retries are off, so a failed call fails after one attempt (a
non-idempotent ``INCRBY`` is never sent twice). Nothing here connects: redis-py
connects on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from keel.errors import CacheUnavailable

__all__ = ["DRIVER_ERRORS", "Client", "driver_errors", "new_client", "subscriber_connection"]

Client: TypeAlias = Redis | RedisCluster

# RedisClusterException (slots not covered, no reachable startup node) is not a
# RedisError; OSError covers TimeoutError and anything redis-py lets through unwrapped.
DRIVER_ERRORS = (RedisError, RedisClusterException, OSError)


def _tls_options(url: str, tls_verify: bool) -> dict[str, Any]:
    """For ``rediss://`` with ``tls_verify`` off: encrypt, but accept any certificate."""
    if tls_verify or not url.lower().startswith("rediss://"):
        return {}
    return {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


def new_client(
    url: str, *, cluster: bool, timeout: float, max_connections: int, tls_verify: bool = True
) -> Client:
    """A client for ``url``: one server, or a Redis Cluster discovered from the node it names.

    Single server: one pool of at most ``max_connections`` connections, and a
    caller waits at most ``timeout`` for a free one. Cluster: at most
    ``max_connections`` connections to each node; redis-py fails instead of
    waiting when a node's connections are all in use, so the caller bounds how
    many commands it has in flight. MOVED and ASK redirections are still
    followed: the node that answered them did not run the command.
    ``tls_verify=False`` (``rediss://`` only) skips certificate verification.
    """
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            # Every MOVED updates the slot it names. The default (reload the whole
            # map every fifth MOVED) closes every connection, those other calls
            # are using included, and fails them all while slots move.
            reinitialize_steps=0,
            **_tls_options(url, tls_verify),
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **_tls_options(url, tls_verify),
    )
    # from_pool: closing the client closes the pool it owns.
    return Redis.from_pool(pool)


def subscriber_connection(
    url: str,
    *,
    timeout: float,
    address: tuple[str, int] | None = None,
    tls_verify: bool = True,
) -> AbstractConnection:
    """A new, unconnected connection for a subscriber: to ``url``, or to the node at ``address``.

    Credentials and TLS come from ``url``; on a cluster ``address`` names the
    node. RESP2 and undecoded replies whatever the URL says, because the
    subscriber parses the pub/sub replies itself and payloads are bytes.
    """
    options: dict[str, Any] = dict(parse_url(url))
    connection_class: type[AbstractConnection] = options.pop("connection_class", Connection)
    if address is not None:
        options["host"], options["port"] = address
    options.update(
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        decode_responses=False,
        **_tls_options(url, tls_verify),
    )
    return connection_class(**options)


@contextmanager
def driver_errors(message: str) -> Iterator[None]:
    """Raise any driver failure inside the block as ``CacheUnavailable(message)``, chained."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise CacheUnavailable(message) from exc
