"""Fixtures for the cache tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cache._servers import RedisServer, SilentListener, redis_server, silent_listener


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, which the test may kill and restart."""
    if shutil.which("redis-server") is None:
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail("redis-server is not on PATH but KEEL_TEST_REQUIRE_BACKENDS is set")
        pytest.skip("redis-server is not on PATH")
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def listener() -> Iterator[SilentListener]:
    """A TCP port that accepts connections and never answers."""
    with silent_listener() as sock:
        yield sock
