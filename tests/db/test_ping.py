"""``ping``, laziness, connect timeouts and ``sslmode`` against real servers and dead ports."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.db import Database
from keel.errors import DatabaseUnavailable
from tests._net import closed_port

from ._settings import MakeSettings


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port that completes TCP handshakes and then never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_ping_answers(empty_database: Database) -> None:
    await empty_database.ping(2.0)
    await empty_database.ping(2.0)


async def test_constructing_connects_to_nothing(make_settings: MakeSettings) -> None:
    db = Database(make_settings(f"postgresql://postgres@127.0.0.1:{closed_port()}/x"))
    assert db.engine is db.engine  # built lazily, once, still without connecting
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await db.dispose()


async def test_constructing_creates_no_sqlite_file(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    path = tmp_path / "never.sqlite3"
    db = Database(make_settings(f"sqlite:///{path}"))
    _ = db.engine
    await db.dispose()
    assert not path.exists()


async def test_ping_closed_port_is_unavailable_fast(make_settings: MakeSettings) -> None:
    db = Database(make_settings("postgresql://postgres@127.0.0.1:1/x", connect_timeout=5.0))
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.ping(0.5)
    finally:
        await db.dispose()
    assert time.monotonic() - started < 2.0
    assert caught.value.__cause__ is not None


async def test_ping_silent_server_is_cut_by_the_ping_timeout(
    black_hole: int, make_settings: MakeSettings
) -> None:
    db = Database(
        make_settings(f"postgresql://postgres@127.0.0.1:{black_hole}/x", connect_timeout=30)
    )
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.ping(0.5)
    finally:
        await db.dispose()
    assert time.monotonic() - started < 2.0
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_connect_timeout_bounds_a_silent_server(
    black_hole: int, make_settings: MakeSettings
) -> None:
    db = Database(
        make_settings(f"postgresql://postgres@127.0.0.1:{black_hole}/x", connect_timeout=0.3)
    )
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable):
            async with db.unit_of_work() as uow:
                await uow.session.connection()
    finally:
        await db.dispose()
    assert time.monotonic() - started < 2.0


async def _aiosqlite_threads_finished() -> None:
    # aiosqlite (0.22) stops the worker thread of a connection that failed to
    # open without awaiting it; the thread then reports to the event loop. If
    # the test's loop closes first, that report is an unhandled thread error.
    # A long-lived server loop never sees this; a test must wait for the thread.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not any(
            t.is_alive() and "_connection_worker_thread" in t.name for t in threading.enumerate()
        ):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)


async def test_ping_unopenable_sqlite_is_unavailable(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(f"sqlite:///{tmp_path}/missing-dir/db.sqlite3"))
    try:
        with pytest.raises(DatabaseUnavailable):
            await db.ping(1.0)
        with pytest.raises(DatabaseUnavailable):
            async with db.unit_of_work() as uow:
                await uow.session.connection()
    finally:
        await db.dispose()
        await _aiosqlite_threads_finished()


@pytest.mark.postgres
async def test_missing_database_is_unavailable(
    postgres_admin_url: str, make_settings: MakeSettings
) -> None:
    base = postgres_admin_url.rsplit("/", 1)[0]
    db = Database(make_settings(f"{base}/keel_no_such_database"))
    try:
        with pytest.raises(DatabaseUnavailable):
            async with db.unit_of_work() as uow:
                await uow.session.connection()
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("query", ["sslmode=disable", "sslmode=prefer", "ssl=false"])
async def test_sslmode_that_allows_plaintext_connects(
    postgres_url: str, make_settings: MakeSettings, query: str
) -> None:
    # The local server has no TLS: these modes must reach it in plain text.
    db = Database(make_settings(f"{postgres_url}?{query}&application_name=keel-test"))
    try:
        await db.ping(2.0)
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_sslmode_requiring_tls_builds_and_refuses_plaintext(
    postgres_url: str, make_settings: MakeSettings, mode: str
) -> None:
    # Real TLS cannot be tested here; what matters is that the URL parameter is
    # translated (no TypeError from asyncpg) and that TLS is actually insisted on.
    db = Database(make_settings(f"{postgres_url}?sslmode={mode}&sslrootcert=system"))
    try:
        assert "sslmode" not in db.engine.url.query
        with pytest.raises(DatabaseUnavailable):
            await db.ping(2.0)
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_current_revision_is_none_before_migrating(empty_database: Database) -> None:
    assert await empty_database.current_revision() is None


async def test_current_revision_unreachable_is_unavailable(make_settings: MakeSettings) -> None:
    db = Database(make_settings(f"postgresql://postgres@127.0.0.1:{closed_port()}/x"))
    try:
        with pytest.raises(DatabaseUnavailable):
            await db.current_revision()
    finally:
        await db.dispose()
