"""The suite's shared fixtures, the one place for them: every fixture that more than one
test directory uses is defined here, and nowhere else (``tests/unit/test_test_layout.py``).

A directory's own ``conftest.py`` keeps only the fixtures that directory alone uses,
under names no other conftest defines; a test module may still override a fixture
for its own tests.

Real PostgreSQL and Redis when configured, isolated per test:
``KEEL_TEST_DATABASE_URL`` and ``KEEL_TEST_REDIS_URL`` name the servers. Where
they are unset the backend tests are skipped, unless ``KEEL_TEST_REQUIRE_BACKENDS``
is set (CI sets it), in which case they fail: CI never counts a skip as a pass.
``redis_cluster`` starts a private three-node Redis Cluster once per run and
``private_redis`` a ``redis-server`` of one test's own; they need ``redis-server``
(and ``redis-cli``) on PATH, under the same skip-or-fail rule.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from keel._clock import FrozenClock
from keel.db import Database, migrate
from keel.settings import Settings
from tests._environment import clear_keel_environment

if TYPE_CHECKING:
    from pathlib import Path

    from tests.unit.cache._cluster import LocalCluster
    from tests.unit.cache._servers import RedisServer


def _backend_url(name: str) -> str:
    url = os.environ.get(name, "").strip()
    if not url:
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail(f"{name} is not set but KEEL_TEST_REQUIRE_BACKENDS is")
        pytest.skip(f"{name} not set")
    return url


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``KEEL_*`` or platform variable is set: ``Settings()`` sees only its defaults."""
    clear_keel_environment(monkeypatch)


@pytest.fixture(autouse=True)
def _private_state_file(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test's machine-shared store file is its own (the default would be in the checkout)."""
    monkeypatch.setenv("KEEL_STATE_FILE", str(tmp_path_factory.mktemp("state") / "state.sqlite3"))


@pytest.fixture(autouse=True)
def _no_response_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SEC-12 floors are pure waiting: off unless a test sets them (their own tests do).

    Hundreds of refused logins across the suite would otherwise each sleep a third
    of a second; servers the tests start inherit the same environment.
    """
    monkeypatch.setenv("KEEL_ENUMERATION_FLOOR", "0")
    monkeypatch.setenv("KEEL_FAILED_LOGIN_FLOOR", "0")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis (``KEEL_TEST_REDIS_URL``)."""
    return _backend_url("KEEL_TEST_REDIS_URL")


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    namespace = f"keeltest:{secrets.token_hex(6)}:"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private three-node Redis Cluster shared by the whole run; never kill its nodes.

    Tests isolate their keys with ``cluster_namespace``; a test that kills
    nodes starts a cluster of its own with ``tests.unit.cache._cluster.redis_cluster``.
    """
    from tests.unit.cache._cluster import redis_cluster as start_cluster
    from tests.unit.cache._servers import require_programs

    require_programs("redis-server", "redis-cli")

    with start_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, which the test may kill and restart (never the
    shared one)."""
    from tests.unit.cache._servers import redis_server, require_programs

    require_programs("redis-server")
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def cluster_namespace(redis_cluster: LocalCluster) -> Iterator[str]:
    """A key prefix of this test's own on ``redis_cluster``; its keys are deleted afterwards."""
    import redis

    namespace = f"keeltest:{secrets.token_hex(6)}:"
    yield namespace
    for port in redis_cluster.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            # Each node holds only its own slots' keys: delete them where they live.
            for key in client.scan_iter(match=f"{namespace}*", count=500):
                client.delete(key)
        finally:
            client.close()


@pytest.fixture
def postgres_admin_url() -> str:
    """URL of the real PostgreSQL server's ``test`` database (``KEEL_TEST_DATABASE_URL``)."""
    return _backend_url("KEEL_TEST_DATABASE_URL")


@pytest.fixture
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    import asyncpg

    name = f"keeltest_{secrets.token_hex(6)}"
    admin_dsn = postgres_admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A fresh SQLite database file of this test's own."""
    return f"sqlite:///{os.fspath(tmp_path)}/keel.sqlite3"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh, empty database of this test's own: a SQLite file, then real PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    """keel's settings on ``database_url``, without Redis."""
    return Settings(database_url=database_url, redis_url=None)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """A ``Database`` on ``settings``, migrated to keel's head, disposed afterwards."""
    await asyncio.to_thread(migrate.upgrade, settings.database)
    db = Database(settings.database)
    try:
        yield db
    finally:
        await db.dispose()
