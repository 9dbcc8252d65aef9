"""Revision 0002 on both databases: tables, seeded head, triggers, and a clean way back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.pool import NullPool

from keel.audit import GENESIS_HASH, AuditEvent, ChainLink, Result, record_many, verify
from keel.audit._reading import chain_columns
from keel.audit.canonical import format_timestamp
from keel.audit.models import events_table
from keel.audit.vocabulary import Action
from keel.db import Database, build_engine
from keel.db.migrate import downgrade, schema_diff, upgrade
from tests.audit._support import KEYRING, head, make_settings

AUDIT_TABLES = {"audit_events", "audit_chain_head", "audit_checkpoints", "audit_prune_window"}


async def _tables_and_triggers(url: str) -> tuple[set[str], set[str]]:
    engine = build_engine(make_settings(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            if conn.dialect.name == "postgresql":
                query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            else:
                query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            triggers = set((await conn.execute(text(query))).scalars())
    finally:
        await engine.dispose()
    return tables, triggers


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest) -> str:
    name = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_postgres_url"
    url: str = request.getfixturevalue(name)
    return url


def test_the_revision_creates_seeds_and_drops_cleanly(fresh_url: str) -> None:
    settings = make_settings(fresh_url)
    tables, triggers = asyncio.run(_tables_and_triggers(fresh_url))
    assert tables >= AUDIT_TABLES
    assert {"audit_events_no_update", "audit_events_append_only"} & triggers
    assert schema_diff(settings) == []
    assert asyncio.run(_head_and_dispose(Database(settings))) == ChainLink(0, GENESIS_HASH)

    downgrade(settings, "0001")
    tables, triggers = asyncio.run(_tables_and_triggers(fresh_url))
    assert not tables & AUDIT_TABLES
    assert triggers == set()
    upgrade(settings)
    assert asyncio.run(_tables_and_triggers(fresh_url))[0] >= AUDIT_TABLES


async def _head_and_dispose(database: Database) -> ChainLink:
    try:
        return await head(database)
    finally:
        await database.dispose()


EDGE_TIMES = [
    datetime(2026, 1, 1, tzinfo=UTC),  # no fraction
    datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 0, 500000, tzinfo=UTC),  # leap day
    datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=2))),  # another zone
    datetime(2026, 6, 1, 0, 0, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    datetime(2000, 1, 1, 0, 0, 0, 10, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
]


async def test_the_database_formats_timestamps_canonically(audit_database: Database) -> None:
    """Verification reads the canonical timestamp text from the database (to_char / replace)."""
    events = [
        AuditEvent(Action.USER_UPDATED, Result.SUCCESS, moment, details={"i": i})
        for i, moment in enumerate(EDGE_TIMES)
    ]
    async with audit_database.unit_of_work() as uow:
        await record_many(uow, events, KEYRING)
    async with audit_database.engine.connect() as conn:
        columns = chain_columns(conn.dialect.name)
        query = select(columns[0], columns[1]).order_by(events_table.c.seq)
        texts = [row[1] for row in await conn.execute(query)]
    assert texts == [format_timestamp(moment) for moment in EDGE_TIMES]
    assert (await verify(audit_database, KEYRING)).count == len(EDGE_TIMES)
