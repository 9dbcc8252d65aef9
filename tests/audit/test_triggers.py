"""SEC-68: the database itself refuses to change or delete audit rows."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from keel.audit import ChainLink, take_checkpoint, verify
from keel.db import Database
from tests.audit._support import KEYRING, T0, fill, make_settings, rows

REFUSED = [
    "UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 2",
    "UPDATE audit_events SET seq = seq + 100",
    "DELETE FROM audit_events WHERE seq = 2",
    "DELETE FROM audit_events",
    "UPDATE audit_checkpoints SET seq = 1",
    "DELETE FROM audit_checkpoints",
    "DELETE FROM audit_chain_head",
]


class _Clock:
    def now(self):  # type: ignore[no-untyped-def]
        return T0

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
async def chain(audit_database: Database) -> list[ChainLink]:
    links = await fill(audit_database, 5)
    await take_checkpoint(audit_database, KEYRING, clock=_Clock())
    return links


@pytest.mark.parametrize("statement", REFUSED)
async def test_sec_68_the_app_cannot_update_or_delete_audit_rows(
    audit_database: Database, chain: list[ChainLink], statement: str
) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        async with audit_database.unit_of_work() as uow:
            await uow.session.execute(text(statement))
    assert len(await rows(audit_database)) == 5
    assert (await verify(audit_database, KEYRING)).ok


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints", "audit_chain_head"])
async def test_sec_68_truncate_is_refused_on_postgres(
    migrated_postgres_url: str, table: str
) -> None:
    database = Database(make_settings(migrated_postgres_url))
    try:
        await fill(database, 2)
        with pytest.raises(DBAPIError, match="append-only"):
            async with database.unit_of_work() as uow:
                await uow.session.execute(text(f"TRUNCATE {table} CASCADE"))
        assert len(await rows(database)) == 2
    finally:
        await database.dispose()


@pytest.fixture
async def app_role_url(migrated_postgres_url: str) -> AsyncIterator[str]:
    """The URL of a login role with ordinary DML rights on every table, and no more.

    Deliberately over-granted (UPDATE, DELETE, TRUNCATE): the triggers, not the
    grants, are what must stop it. It owns nothing, so it cannot disable them.
    """
    role = f"keel_app_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(migrated_postgres_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await admin.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public "
            f"TO {role}"
        )
    finally:
        await admin.close()
    parts = urlsplit(migrated_postgres_url)
    host = parts.netloc.rpartition("@")[2]
    yield urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, ""))
    admin = await asyncpg.connect(migrated_postgres_url)
    try:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.close()


@pytest.mark.postgres
async def test_sec_68_the_app_role_is_refused_even_with_update_and_delete_grants(
    migrated_postgres_url: str, app_role_url: str
) -> None:
    owner = Database(make_settings(migrated_postgres_url))
    app = Database(make_settings(app_role_url))
    try:
        await fill(owner, 3)
        await fill(app, 2, first=4)  # the app role can append...
        await take_checkpoint(app, KEYRING, clock=_Clock())  # ...and record checkpoints
        for statement in [*REFUSED, "TRUNCATE audit_events"]:
            with pytest.raises(DBAPIError, match="append-only") as caught:
                async with app.unit_of_work() as uow:
                    await uow.session.execute(text(statement))
            assert getattr(caught.value.orig, "sqlstate", None) == "42501", statement
        for statement in (
            "ALTER TABLE audit_events DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_events_append_only ON audit_events",
            "DROP TABLE audit_events",
        ):
            with pytest.raises(DBAPIError, match="must be owner"):
                async with app.unit_of_work() as uow:
                    await uow.session.execute(text(statement))
        assert (await verify(app, KEYRING)).count == 5  # ...and read
    finally:
        await app.dispose()
        await owner.dispose()


@pytest.mark.postgres
async def test_a_prune_window_left_behind_opens_nothing_on_postgres(
    migrated_postgres_url: str,
) -> None:
    database = Database(make_settings(migrated_postgres_url))
    try:
        await fill(database, 4)
        async with database.unit_of_work() as uow:  # committed, by another transaction
            await uow.session.execute(
                text("INSERT INTO audit_prune_window (before_seq, txid) VALUES (100, 1)")
            )
        with pytest.raises(DBAPIError, match="append-only"):
            async with database.unit_of_work() as uow:
                await uow.session.execute(text("DELETE FROM audit_events WHERE seq < 3"))
        assert len(await rows(database)) == 4
    finally:
        await database.dispose()
