"""Units of work, foreign keys, aware-UTC timestamps and failure mapping on real databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Text, insert, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from keel.db import Database, UTCDateTime
from keel.db import engine as engine_module
from keel.errors import ConfigurationError, DatabaseUnavailable
from tests._net import closed_port

from ._settings import MakeSettings

metadata = MetaData()
parent = Table(
    "parent",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
)
child = Table(
    "child",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", ForeignKey("parent.id"), nullable=False),
)
stamps = Table(
    "stamps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
)


@pytest.fixture
async def db(empty_database: Database) -> Database:
    async with empty_database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return empty_database


async def _names(db: Database) -> list[str]:
    async with db.unit_of_work() as uow:
        rows = await uow.session.execute(select(parent.c.name).order_by(parent.c.id))
        return list(rows.scalars())


async def test_clean_exit_commits(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(parent).values(id=1, name="kept"))
    assert await _names(db) == ["kept"]
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _insert_then_fail(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(parent).values(id=1, name="lost"))
        await uow.flush()
        raise RuntimeError("boom")


async def test_exception_rolls_back_and_propagates(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await _insert_then_fail(db)
    assert await _names(db) == []
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_session_is_closed_after_the_block(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(select(1))
        assert uow.session.in_transaction()
    assert not uow.session.in_transaction()
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.unit_of_work() as uow:
            await uow.session.execute(insert(child).values(id=1, parent_id=999))
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(parent).values(id=1, name="p"))
        await uow.session.execute(insert(child).values(id=1, parent_id=1))


async def test_foreign_keys_are_enforced_on_every_pooled_connection(db: Database) -> None:
    # Hold two connections at once so the pool opens (and configures) more than one.
    async with db.unit_of_work() as first, db.unit_of_work() as second:
        await first.session.execute(select(1))
        await second.session.execute(select(1))
    for _ in range(3):
        with pytest.raises(IntegrityError):
            async with db.unit_of_work() as uow:
                await uow.session.execute(insert(child).values(id=1, parent_id=999))


async def test_utc_datetime_round_trip_is_aware_utc(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    written = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(stamps).values(id=1, at=written))
    async with db.unit_of_work() as uow:
        read = (await uow.session.execute(select(stamps.c.at))).scalar_one()
    assert read == written
    assert read.tzinfo is UTC
    assert read == datetime(2026, 3, 1, 10, 30, 15, 123456, tzinfo=UTC)


async def test_utc_datetime_refuses_naive(db: Database) -> None:
    naive = datetime(2026, 3, 1, 12, 30)  # noqa: DTZ001  (the point of the test)
    with pytest.raises(StatementError) as caught:
        async with db.unit_of_work() as uow:
            await uow.session.execute(insert(stamps).values(id=1, at=naive))
    assert isinstance(caught.value.orig, ValueError)
    async with db.unit_of_work() as uow:
        assert (await uow.session.execute(select(stamps.c.id))).first() is None


async def test_integrity_errors_are_not_unavailability(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(parent).values(id=1, name="a"))
    with pytest.raises(IntegrityError):
        async with db.unit_of_work() as uow:
            await uow.session.execute(insert(parent).values(id=1, name="again"))


async def test_exhausted_pool_is_unavailable(
    database_url: str, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    try:
        async with db.unit_of_work() as holder:
            await holder.session.execute(select(1))
            with pytest.raises(DatabaseUnavailable) as caught:
                async with db.unit_of_work() as uow:
                    await uow.session.execute(select(1))
            assert caught.value.__cause__ is not None
        async with db.unit_of_work() as uow:
            assert (await uow.session.execute(select(1))).scalar_one() == 1
    finally:
        await db.dispose()


async def test_sqlite_connection_pragmas(sqlite_url: str, make_settings: MakeSettings) -> None:
    db = Database(make_settings(sqlite_url, connect_timeout=3.0))
    try:
        async with db.unit_of_work() as uow:
            session = uow.session
            assert (await session.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar_one() == 3000
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_postgres_session_settings(postgres_url: str, make_settings: MakeSettings) -> None:
    db = Database(make_settings(postgres_url))
    try:
        async with db.unit_of_work() as uow:
            session = uow.session
            assert (await session.execute(text("SHOW timezone"))).scalar_one() == "UTC"
            name = await session.execute(text("SELECT current_setting('application_name')"))
            assert name.scalar_one() == "keel"
    finally:
        await db.dispose()


async def _query_after_being_killed(db: Database, killer: Database) -> None:
    async with db.unit_of_work() as uow:
        pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with killer.unit_of_work() as other:
            await other.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await uow.session.execute(text("SELECT 1"))


@pytest.mark.postgres
async def test_killed_connection_is_unavailable_then_recovers(
    postgres_url: str, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(postgres_url))
    killer = Database(make_settings(postgres_url))
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await _query_after_being_killed(db, killer)
        assert caught.value.__cause__ is not None
        async with db.unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await killer.dispose()
        await db.dispose()


@pytest.mark.postgres
async def test_cancelled_query_leaves_the_pool_usable(
    postgres_url: str, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(postgres_url, pool_size=1, max_overflow=0))
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(10)"))
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with db.unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()


async def _backend_pid(db: Database) -> int:
    async with db.unit_of_work() as uow:
        pid: int = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def _terminate(killer: Database, pid: int) -> None:
    """Terminate ``pid``'s backend and wait until it is gone."""
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    async with killer.unit_of_work() as other:
        await other.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(200):
        async with killer.unit_of_work() as other:
            if (await other.session.execute(alive, {"pid": pid})).scalar_one() == 0:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} outlived pg_terminate_backend")


@pytest.mark.postgres
async def test_a_pooled_connection_killed_while_idle_is_replaced_on_checkout(
    postgres_url: str, make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkout ping finds the dead connection: the next unit of work never sees it."""
    monkeypatch.setattr(engine_module, "PING_BYPASS_SECONDS", 0.0)
    db = Database(make_settings(postgres_url, pool_size=1, max_overflow=0))
    killer = Database(make_settings(postgres_url))
    try:
        first = await _backend_pid(db)
        await _terminate(killer, first)
        assert await _backend_pid(db) != first
    finally:
        await killer.dispose()
        await db.dispose()


@pytest.mark.postgres
async def test_a_connection_used_moments_ago_is_handed_out_without_a_ping(
    postgres_url: str, make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the bypass window a dead connection is only found by its first use, which
    fails as unavailable; the pool replaces it and the next unit of work succeeds."""
    monkeypatch.setattr(engine_module, "PING_BYPASS_SECONDS", 60.0)  # however slow the machine
    db = Database(make_settings(postgres_url, pool_size=1, max_overflow=0))
    killer = Database(make_settings(postgres_url))
    try:
        first = await _backend_pid(db)
        await _terminate(killer, first)
        with pytest.raises(DatabaseUnavailable):
            await _backend_pid(db)
        assert await _backend_pid(db) != first
    finally:
        await killer.dispose()
        await db.dispose()


async def test_the_driver_under_a_unit_of_work_is_inside_its_transaction(
    empty_database: Database,
) -> None:
    async with empty_database.unit_of_work() as uow:
        driver = await uow.driver()
        if empty_database.dialect == "sqlite":
            assert driver is None
            return
        assert driver is not None
        assert driver.is_in_transaction()
        await driver.execute("CREATE TABLE driven (id int)")
    async with empty_database.unit_of_work() as uow:
        await uow.session.execute(text("SELECT count(*) FROM driven"))  # committed with the unit

    async def insert_then_fail() -> None:
        async with empty_database.unit_of_work() as uow:
            driver = await uow.driver()
            assert driver is not None
            await driver.execute("INSERT INTO driven VALUES (1)")
            raise LookupError("rolled back")

    with pytest.raises(LookupError):
        await insert_then_fail()
    async with empty_database.unit_of_work() as uow:
        assert (await uow.session.execute(text("SELECT count(*) FROM driven"))).scalar_one() == 0


@pytest.mark.postgres
async def test_autocommit_statements_commit_alone(
    postgres_url: str, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(postgres_url))
    try:
        async with db.autocommit() as driver:
            assert not driver.is_in_transaction()
            await driver.execute("CREATE TABLE alone (id int)")
            await driver.execute("INSERT INTO alone VALUES (1)")
        async with db.unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT count(*) FROM alone"))).scalar_one() == 1
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_autocommit_on_an_unreachable_database_is_unavailable(
    make_settings: MakeSettings,
) -> None:
    db = Database(make_settings(f"postgresql://postgres@127.0.0.1:{closed_port()}/x"))
    try:
        with pytest.raises(DatabaseUnavailable):
            async with db.autocommit():
                pass
    finally:
        await db.dispose()


async def test_autocommit_is_refused_on_sqlite(
    sqlite_url: str, make_settings: MakeSettings
) -> None:
    db = Database(make_settings(sqlite_url))
    try:
        with pytest.raises(ConfigurationError):
            async with db.autocommit():
                pass
    finally:
        await db.dispose()


async def _lock_in_order(db: Database, first: int, second: int, both_hold: asyncio.Barrier) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE parent SET name = name WHERE id = :id"), {"id": first}
        )
        await both_hold.wait()
        await uow.session.execute(
            text("UPDATE parent SET name = name WHERE id = :id"), {"id": second}
        )


@pytest.mark.postgres
async def test_a_deadlock_victim_is_a_retryable_unavailability_not_a_crash(
    postgres_url: str, make_settings: MakeSettings
) -> None:
    """PostgreSQL ends one of two transactions that wait on each other (SQLSTATE 40P01).

    That is transient, like a lost connection: the caller gets ``DatabaseUnavailable`` (a
    503 with Retry-After at the edge), not an unexpected error and a 500.
    """
    db = Database(make_settings(postgres_url, pool_size=3))
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                insert(parent), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
            )
        both_hold = asyncio.Barrier(2)
        outcomes = await asyncio.gather(
            _lock_in_order(db, 1, 2, both_hold),
            _lock_in_order(db, 2, 1, both_hold),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1, outcomes
        assert isinstance(failures[0], DatabaseUnavailable), repr(failures[0])
        assert "40P01" in repr(failures[0].__cause__) or "deadlock" in str(failures[0].__cause__)
    finally:
        await db.dispose()
