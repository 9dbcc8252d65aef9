"""``RedisSubscriber``: one channel of classic Redis pub/sub on a connection of its own.

What is guaranteed, and what is not:

- Messages from one publisher connection arrive in the order it published them.
  Nothing is stored: a message published while no subscriber is connected is
  lost, so a subscriber whose connection broke must assume it missed messages.
- A lost connection is never repaired behind the caller's back: ``receive``
  raises ``CacheUnavailable`` and the caller reconnects (and resynchronises).
- ``ping(data)`` travels on the subscriber's own connection, so the ``pong``
  comes after every message the server had queued for this subscriber when
  the PING arrived: on one server, after every message whose ``PUBLISH`` had
  returned before the PING was sent.
- On a Redis Cluster a classic ``PUBLISH`` reaches every node over the cluster
  bus. ``RedisStore`` publishes through the node that owns the channel's hash
  slot and subscribers connect there first, so while both meet on that node
  the single-server guarantees above hold. A subscriber on another node (it
  had to fall back, or the slot moved since it connected) gets messages
  relayed by the bus: still in order per publisher, but a pong there does not
  prove that messages published through the owner have arrived, and a bus
  failure between the nodes can lose them.
- A server that dies closes the connection and ``receive`` raises at once; a
  server that hangs is only noticed by a ``pong`` that does not come, so a
  caller that needs to know pings and bounds the wait itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Literal, TypeAlias

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from keel._logging import event
from keel.cache._redis_client import driver_errors
from keel.errors import CacheUnavailable

__all__ = ["Event", "RedisSubscriber"]

Event: TypeAlias = tuple[Literal["message", "pong"], bytes]

_log = logging.getLogger("keel.cache")


class RedisSubscriber:
    """A subscription to one channel; ``RedisStore.subscriber`` makes it, ``connect`` opens it.

    One task reads (``receive``) at a time; ``ping`` may be sent from another.
    """

    def __init__(
        self,
        channel: str,
        candidates: Callable[[], Awaitable[list[AbstractConnection]]],
    ) -> None:
        self._channel = channel.encode()
        # Unconnected connections, best first: connect() subscribes on the first that answers.
        self._candidates = candidates
        self._connection: AbstractConnection | None = None

    def __repr__(self) -> str:
        return f"RedisSubscriber(channel={self._channel.decode()!r}, connected={self.connected})"

    @property
    def channel(self) -> str:
        """The full channel name, namespace included."""
        return self._channel.decode()

    @property
    def connected(self) -> bool:
        """Whether a subscription is open (it may still turn out to be lost on the next read)."""
        return self._connection is not None

    @property
    def address(self) -> tuple[str, int] | None:
        """The ``(host, port)`` of the server the subscription is on, while connected over TCP."""
        connection = self._connection
        host, port = getattr(connection, "host", None), getattr(connection, "port", None)
        return (host, int(port)) if isinstance(host, str) and port is not None else None

    async def connect(self) -> None:
        """``SUBSCRIBE`` on a new connection; return once the server has confirmed it.

        Any previous connection is closed first. On a cluster the nodes are
        tried in turn until one confirms. Raises ``CacheUnavailable`` when none
        does; each attempt is bounded by the store's timeout.
        """
        await self.close()
        connections = await self._candidates()
        failure: CacheUnavailable | None = None
        for index, connection in enumerate(connections):
            try:
                await self._subscribe(connection)
            except CacheUnavailable as exc:
                failure = exc
                await _disconnect(connection)
                continue
            except BaseException:
                # Cancelled while subscribing: no connection may be left open.
                for unused in connections[index:]:
                    await _disconnect(unused)
                raise
            self._connection = connection
            return
        cause = None if failure is None else failure.__cause__ or failure
        raise CacheUnavailable("no Redis server confirmed the subscription") from cause

    # The timeout is part of the call on purpose: no event within it is an
    # answer (None), not an error. An outer cancellation is safe as well.
    async def receive(self, timeout: float) -> Event | None:  # noqa: ASYNC109
        """The next event, or ``None`` when nothing arrives within ``timeout`` seconds.

        ``("message", payload)`` for a published message, ``("pong", data)``
        for the answer to ``ping(data)``. Raises ``CacheUnavailable`` when the
        connection is lost or closed by the server, or was never opened; the
        subscription is then closed and ``connect`` opens a new one.
        """
        if not (math.isfinite(timeout) and timeout >= 0):
            raise ValueError("timeout must be a non-negative, finite number of seconds")
        connection = self._require()
        try:
            with driver_errors("the subscription's connection was lost"):
                # The parser keeps a partly read reply across timeouts and
                # cancellation, so neither breaks the connection.
                reply = await connection.read_response(timeout=timeout, disconnect_on_error=False)
        except CacheUnavailable:
            await self.close()
            raise
        if reply is None:
            return None
        parsed = _parse(reply)
        if parsed is None:
            await self.close()
            raise CacheUnavailable("unexpected reply on the subscription's connection")
        return parsed

    async def ping(self, data: bytes) -> None:
        """Send ``PING data`` on the subscription's connection; ``receive`` yields its pong."""
        connection = self._require()
        try:
            with driver_errors("the subscription's connection was lost"):
                await connection.send_command("PING", data, check_health=False)
        except CacheUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the subscription's connection. Safe to call more than once."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await _disconnect(connection)

    def _require(self) -> AbstractConnection:
        connection = self._connection
        if connection is not None and not connection.is_connected:
            # redis-py dropped the socket: never let a later write reconnect it
            # silently, without the subscription.
            self._connection = connection = None
        if connection is None:
            raise CacheUnavailable("the subscriber is not connected")
        return connection

    async def _subscribe(self, connection: AbstractConnection) -> None:
        with driver_errors("Redis did not confirm the subscription"):
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
            await connection.send_command("SUBSCRIBE", self._channel, check_health=False)
            # Bounded by the connection's socket timeout: a hung server fails here.
            reply = await connection.read_response(disconnect_on_error=False)
        if not (
            isinstance(reply, list)
            and len(reply) == 3
            and reply[0] == b"subscribe"
            and reply[1] == self._channel
        ):
            raise CacheUnavailable("Redis did not confirm the subscription")


def _parse(reply: object) -> Event | None:
    if not isinstance(reply, list) or len(reply) < 2:
        return None
    kind, *rest = reply
    if kind == b"message" and len(rest) == 2 and isinstance(rest[1], bytes):
        return ("message", rest[1])
    if kind == b"pong" and len(rest) == 1 and isinstance(rest[0], bytes):
        return ("pong", rest[0])
    return None


async def _disconnect(connection: AbstractConnection) -> None:
    try:
        # nowait: do not wait for a dead peer to acknowledge the close.
        await connection.disconnect(nowait=True)
    except (RedisError, OSError) as exc:
        event(_log, logging.DEBUG, "cache_subscriber_close_failed", error=type(exc).__name__)
