"""A private three-node Redis Cluster on loopback, for the cluster tests.

Three ``redis-server --cluster-enabled yes`` processes on free ports, joined by
``redis-cli --cluster create`` with no replicas, so every node is a primary
owning a third of the hash slots. Nodes can be killed one at a time (an
outage); everything is killed on exit.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from tests.unit.cache._servers import RedisServer, free_port, reply_fields

__all__ = ["LocalCluster", "redis_cluster"]

_READY_DEADLINE = 30.0
_BUS_OFFSET = 10000


class LocalCluster:
    """The running nodes of a private cluster; ``url`` names the first one (a startup node)."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        """A ``REDIS_URL`` for the cluster: any one node is enough to discover the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def node(self, port: int) -> RedisServer:
        """The node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def owner(self, name: str) -> int:
        """The port of the node that owns the hash slot of key or channel ``name``."""
        slot = key_slot(name.encode())
        for node in self.nodes:
            if node.running and (port := self._owner_seen_by(node.port, slot)) is not None:
                return port
        raise RuntimeError(f"no live node knows who owns slot {slot}")

    def move_slot(self, name: str, to_port: int) -> None:
        """Hand the (empty) hash slot of ``name`` to the node at ``to_port``, as resharding does."""
        slot = key_slot(name.encode())
        source = self.owner(name)
        ids = {port: _command(port, "CLUSTER", "MYID").decode() for port in self.ports}
        _command(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        _command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to_port])
        # The new owner first: it bumps its epoch, so the others accept the change.
        for port in sorted(self.ports, key=lambda port: port != to_port):
            _command(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[to_port])
        self.wait_until(lambda port: self._owner_seen_by(port, slot) == to_port, self.ports)

    def _owner_seen_by(self, port: int, slot: int) -> int | None:
        for start, end, primary, *_ in _command(port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        return None

    def wait_until_ok(self) -> None:
        """Return once every node says ``cluster_state:ok`` and knows every slot and node."""
        self.wait_until(lambda port: _cluster_ok(port, len(self.nodes)), self.ports)

    def wait_until_down(self, ports: list[int]) -> None:
        """Return once each node in ``ports`` says ``cluster_state:fail``."""
        self.wait_until(lambda port: _cluster_info(port).get("cluster_state") == "fail", ports)

    @staticmethod
    def wait_until(condition: Callable[[int], bool], ports: list[int]) -> None:
        deadline = time.monotonic() + _READY_DEADLINE
        while not all(condition(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach the expected state in time")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL every node."""
        for node in self.nodes:
            node.kill()


def _command(port: int, *args: str | int) -> Any:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _node_port() -> int:
    # A node also listens on its cluster bus port, port + 10000: both must be free.
    while True:
        port = free_port()
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port


def _cluster_info(port: int) -> dict[str, str]:
    try:
        return reply_fields(port, "CLUSTER INFO")
    except (OSError, RuntimeError):
        return {}


def _cluster_ok(port: int, size: int) -> bool:
    info = _cluster_info(port)
    return (
        info.get("cluster_state") == "ok"
        and info.get("cluster_slots_ok") == "16384"
        and info.get("cluster_known_nodes") == str(size)
    )


@contextlib.contextmanager
def redis_cluster(
    workdir: Path, size: int = 3, *, node_timeout_ms: int | None = None
) -> Iterator[LocalCluster]:
    """A running private cluster of ``size`` primaries, always killed on exit.

    ``node_timeout_ms`` sets ``cluster-node-timeout``: how long the others wait
    on a silent node before marking it failed (and, without replicas, the
    cluster down).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster([])
    try:
        for _ in range(size):
            port = _node_port()
            args = ["--cluster-enabled", "yes"]
            args += ["--cluster-config-file", str(workdir / f"nodes-{port}.conf")]
            if node_timeout_ms is not None:
                args += ["--cluster-node-timeout", str(node_timeout_ms)]
            node = RedisServer(port, workdir, args)
            cluster.nodes.append(node)
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=_READY_DEADLINE,
            check=True,
        )
        cluster.wait_until_ok()
        yield cluster
    finally:
        cluster.kill()
