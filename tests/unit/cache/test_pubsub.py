"""RedisStore.publish and RedisSubscriber, on one Redis server and on a Redis Cluster.

Every test runs on real servers: the shared Redis (unique namespaces), the
run's shared cluster, or a private server or cluster a test may kill.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis
from redis.exceptions import RedisError

from keel.cache import RedisStore, RedisSubscriber
from keel.errors import CacheUnavailable
from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._servers import RedisServer, SilentListener, free_port, reply_fields

WAIT = 2.0  # long enough for any event that should arrive, on a loaded machine


@dataclass
class Target:
    store: RedisStore
    url: str
    namespace: str
    # Ports a raw client may publish through (one server, or every cluster node).
    ports: list[int]
    cluster: LocalCluster | None


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ]
)
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    cluster: LocalCluster | None = None
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        namespace: str = request.getfixturevalue("redis_namespace")
        ports = [urlsplit(url).port or 6379]
        store = RedisStore(url, namespace=namespace, timeout=2.0)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        namespace = request.getfixturevalue("cluster_namespace")
        url, ports = cluster.url, cluster.ports
        store = RedisStore(url, namespace=namespace, timeout=2.0, cluster=True)
    try:
        yield Target(store, url, namespace, ports, cluster)
    finally:
        await store.close()


def _connected(subscriber: RedisSubscriber) -> bool:
    # Through a call, so mypy does not narrow the property across awaits.
    return subscriber.connected


def _raw_publish(port: int, channel: str, payload: bytes) -> int:
    raw = redis.Redis(host="127.0.0.1", port=port)
    try:
        return int(raw.publish(channel, payload))
    finally:
        raw.close()


async def test_a_published_message_is_received(target: Target) -> None:
    subscriber = target.store.subscriber("events")
    try:
        await subscriber.connect()
        await target.store.publish("events", b"\x00binary\r\npayload")
        await target.store.publish("events", b"")
        assert await subscriber.receive(WAIT) == ("message", b"\x00binary\r\npayload")
        assert await subscriber.receive(WAIT) == ("message", b"")
    finally:
        await subscriber.close()


async def test_a_pong_follows_every_message_published_before_the_ping(target: Target) -> None:
    subscriber = target.store.subscriber("events")
    try:
        await subscriber.connect()
        for payload in (b"A", b"B", b"C"):
            await target.store.publish("events", payload)
        await subscriber.ping(b"barrier-1")
        events = [await subscriber.receive(WAIT) for _ in range(4)]
        assert events == [
            ("message", b"A"),
            ("message", b"B"),
            ("message", b"C"),
            ("pong", b"barrier-1"),
        ]
        await subscriber.ping(b"")
        assert await subscriber.receive(WAIT) == ("pong", b"")
    finally:
        await subscriber.close()


async def test_receive_returns_none_when_nothing_arrives(target: Target) -> None:
    subscriber = target.store.subscriber("quiet")
    try:
        await subscriber.connect()
        started = time.monotonic()
        assert await subscriber.receive(0.2) is None
        assert 0.15 <= time.monotonic() - started < 1.0
        # A timeout leaves the subscription intact.
        await target.store.publish("quiet", b"late")
        assert await subscriber.receive(WAIT) == ("message", b"late")
        assert await subscriber.receive(0) is None
    finally:
        await subscriber.close()


async def test_the_channel_carries_the_namespace(target: Target) -> None:
    subscriber = target.store.subscriber("events")
    other = RedisStore(
        target.url,
        namespace=target.namespace + "other:",
        timeout=2.0,
        cluster=target.cluster is not None,
    )
    try:
        assert subscriber.channel == f"{target.namespace}events"
        await subscriber.connect()
        _raw_publish(target.ports[0], "events", b"bare name")
        await other.publish("events", b"other namespace")
        assert await subscriber.receive(0.3) is None
        assert _raw_publish(target.ports[0], f"{target.namespace}events", b"full name") >= 0
        assert await subscriber.receive(WAIT) == ("message", b"full name")
    finally:
        await subscriber.close()
        await other.close()


async def test_close_is_idempotent_and_connect_reopens(target: Target) -> None:
    subscriber = target.store.subscriber("events")
    await subscriber.close()  # never connected: nothing to do
    await subscriber.connect()
    assert _connected(subscriber)
    await subscriber.close()
    await subscriber.close()
    assert not _connected(subscriber)
    with pytest.raises(CacheUnavailable):
        await subscriber.receive(0.1)
    with pytest.raises(CacheUnavailable):
        await subscriber.ping(b"x")
    try:
        await subscriber.connect()
        await target.store.publish("events", b"after reconnect")
        assert await subscriber.receive(WAIT) == ("message", b"after reconnect")
    finally:
        await subscriber.close()


async def test_connect_again_replaces_the_connection(target: Target) -> None:
    subscriber = target.store.subscriber("events")
    try:
        await subscriber.connect()
        await subscriber.connect()
        await target.store.publish("events", b"once")
        assert await subscriber.receive(WAIT) == ("message", b"once")
        assert await subscriber.receive(0.2) is None  # one subscription, not two
    finally:
        await subscriber.close()


@pytest.mark.cluster
async def test_cluster_publish_goes_to_the_channel_owner_where_subscribers_connect(
    redis_cluster: LocalCluster, cluster_namespace: str
) -> None:
    store = RedisStore(redis_cluster.url, namespace=cluster_namespace, timeout=2.0, cluster=True)
    subscriber = store.subscriber("events")
    owner = redis_cluster.owner(f"{cluster_namespace}events")
    try:
        await subscriber.connect()
        assert subscriber.address == ("127.0.0.1", owner)
        before = _publishes(redis_cluster)
        await store.publish("events", b"m")
        assert await subscriber.receive(WAIT) == ("message", b"m")
        after = _publishes(redis_cluster)
        assert {port: after[port] - before[port] for port in before} == {
            port: int(port == owner) for port in before
        }
    finally:
        await subscriber.close()
        await store.close()


@pytest.mark.cluster
async def test_cluster_message_published_through_another_node_arrives(
    redis_cluster: LocalCluster, cluster_namespace: str
) -> None:
    store = RedisStore(redis_cluster.url, namespace=cluster_namespace, timeout=2.0, cluster=True)
    subscriber = store.subscriber("events")
    try:
        await subscriber.connect()
        assert subscriber.address is not None
        others = [port for port in redis_cluster.ports if port != subscriber.address[1]]
        for index, port in enumerate(others):
            _raw_publish(port, f"{cluster_namespace}events", f"via {index}".encode())
        received = [await subscriber.receive(WAIT) for _ in others]
        assert received == [("message", f"via {index}".encode()) for index in range(len(others))]
    finally:
        await subscriber.close()
        await store.close()


def _publishes(cluster: LocalCluster) -> dict[int, int]:
    counts = {}
    for port in cluster.ports:
        entry = reply_fields(port, "INFO commandstats").get("cmdstat_publish", "calls=0")
        counts[port] = int(entry.split(",", 1)[0].removeprefix("calls="))
    return counts


async def test_a_killed_server_makes_receive_raise(private_redis: RedisServer) -> None:
    store = RedisStore(private_redis.url, namespace="t:", timeout=0.5)
    subscriber = store.subscriber("events")
    try:
        await subscriber.connect()
        private_redis.kill()
        started = time.monotonic()
        with pytest.raises(CacheUnavailable) as caught:
            await subscriber.receive(5.0)
        assert time.monotonic() - started < 1.0
        assert isinstance(caught.value.__cause__, RedisError)
        assert not _connected(subscriber)
        with pytest.raises(CacheUnavailable):
            await subscriber.receive(0.1)
        # The caller reconnects once the server is back.
        private_redis.start()
        await subscriber.connect()
        await store.publish("events", b"back")
        assert await subscriber.receive(WAIT) == ("message", b"back")
    finally:
        await subscriber.close()
        await store.close()


async def test_connect_to_a_hung_server_times_out(listener: SilentListener) -> None:
    store = RedisStore(listener.url, timeout=0.25)
    subscriber = store.subscriber("events")
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await subscriber.connect()
        assert 0.2 <= time.monotonic() - started < 1.0
        assert not _connected(subscriber)
    finally:
        await subscriber.close()
        await store.close()


async def test_connect_to_a_closed_port_fails_quickly() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    subscriber = store.subscriber("events")
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable) as caught:
            await subscriber.connect()
        assert time.monotonic() - started < 0.75
        assert isinstance(caught.value.__cause__, RedisError)
        with pytest.raises(CacheUnavailable):
            await store.publish("events", b"nobody")
    finally:
        await subscriber.close()
        await store.close()


def test_a_subscriber_opens_nothing_until_connect(listener: SilentListener) -> None:
    # No event loop at all: making a subscriber must not need one.
    subscribers: list[RedisSubscriber] = [
        RedisStore(listener.url, timeout=0.25).subscriber("events"),
        RedisStore(listener.url, timeout=0.25, cluster=True).subscriber("events"),
    ]
    assert not any(subscriber.connected for subscriber in subscribers)
    assert listener.drain() == 0


@pytest.mark.cluster
async def test_cluster_subscriber_connects_to_a_live_node_when_the_owner_is_dead(
    private_cluster: LocalCluster,
) -> None:
    store = RedisStore(private_cluster.url, namespace="t:", timeout=0.5, cluster=True)
    # A channel whose owner is not the node the URL names.
    channel = next(
        f"events-{i}"
        for i in range(100)
        if private_cluster.owner(f"t:events-{i}") != private_cluster.ports[0]
    )
    owner = private_cluster.owner(f"t:{channel}")
    subscriber = store.subscriber(channel)
    try:
        await subscriber.connect()
        assert subscriber.address == ("127.0.0.1", owner)
        private_cluster.node(owner).kill()
        with pytest.raises(CacheUnavailable):
            await subscriber.receive(5.0)
        # Publishing through the dead owner fails; the subscriber moves to a live node,
        # where messages published through any live node still arrive.
        with pytest.raises(CacheUnavailable):
            await store.publish(channel, b"lost")
        await subscriber.connect()
        assert subscriber.address is not None
        assert subscriber.address[1] != owner
        _raw_publish(private_cluster.ports[0], f"t:{channel}", b"still here")
        assert await subscriber.receive(WAIT) == ("message", b"still here")
    finally:
        await subscriber.close()
        await store.close()
