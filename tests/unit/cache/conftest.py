"""Fixtures for the cache tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cache._cluster import LocalCluster
from tests.unit.cache._cluster import redis_cluster as start_cluster
from tests.unit.cache._servers import SilentListener, require_programs, silent_listener


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A three-node Redis Cluster of this test's own, whose nodes the test may kill.

    Nodes give up on a silent peer after one second (``cluster-node-timeout``),
    so a test sees the cluster go down in a few seconds rather than fifteen.
    """
    require_programs("redis-server", "redis-cli")
    with start_cluster(tmp_path, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture
def listener() -> Iterator[SilentListener]:
    """A TCP port that accepts connections and never answers."""
    with silent_listener() as sock:
        yield sock
