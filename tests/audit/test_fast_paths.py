"""The PostgreSQL fast paths (asyncpg under the session) agree with the SQLAlchemy ones.

Appends insert through the asyncpg connection and verification reads ranges
through it; both must write and read exactly what the SQLAlchemy statements
would, and stay inside the caller's transaction.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from keel.audit import record_many, verify
from keel.audit._reading import _PG_RANGE, chain_columns, read_head, read_range, snapshot_connection
from keel.audit.models import events_table
from keel.audit.writer import _PG_APPEND, CHAIN_FIELDS
from keel.db import Database
from tests.audit._support import KEYRING, event, fill, head, rows


def test_the_one_statement_append_names_every_column_in_order() -> None:
    match = re.search(
        r"INSERT INTO audit_events \((.*?)\) SELECT r\.\* FROM head, unnest\((.*?)\) AS r",
        _PG_APPEND,
    )
    assert match is not None
    assert tuple(match.group(1).split(", ")) == CHAIN_FIELDS
    assert set(CHAIN_FIELDS) == {column.name for column in events_table.columns}
    arrays = match.group(2).split(", ")
    assert [array.split("::")[0] for array in arrays] == [
        f"${i}" for i in range(1, len(CHAIN_FIELDS) + 1)
    ]
    assert arrays[0].endswith("::bigint[]")
    assert arrays[1].endswith("::timestamptz[]")
    assert all(array.endswith("::text[]") for array in arrays[2:])


def test_the_asyncpg_range_reads_the_chain_columns_in_order() -> None:
    names = [column.name for column in events_table.columns]
    read = re.fullmatch(r"SELECT (.*) FROM audit_events WHERE .*", _PG_RANGE)
    assert read is not None
    selected = [
        part.strip()
        for part in re.sub(
            r"to_char\(timezone\('UTC', occurred_at\), '[^']*'\)", "occurred_at", read.group(1)
        ).split(",")
    ]
    assert selected == names  # chain_columns' order is the table's
    assert len(chain_columns("postgresql")) == len(selected)


async def test_range_reads_match_sqlalchemy_rows(audit_database: Database) -> None:
    await fill(audit_database, 7)
    async with audit_database.unit_of_work() as uow:
        conn = await snapshot_connection(uow)
        assert await read_head(conn) is not None
        fast = [tuple(row) for row in await read_range(conn, 2, 6)]
        seq = events_table.c.seq
        query = select(*chain_columns(conn.dialect.name)).where(seq >= 2, seq < 6).order_by(seq)
        slow = [tuple(row) for row in (await conn.execute(query)).all()]
    assert [row[0] for row in fast] == [2, 3, 4, 5]
    assert fast == slow


@pytest.mark.parametrize("count", [1, 3])
async def test_batched_append_rolls_back_with_the_caller(
    audit_database: Database, count: int
) -> None:
    async def append_then_fail() -> None:
        async with audit_database.unit_of_work() as uow:
            await record_many(uow, [event(i) for i in range(count)], KEYRING)
            raise RuntimeError("business failure after the events")

    with pytest.raises(RuntimeError):
        await append_then_fail()
    assert await rows(audit_database) == []
    assert (await head(audit_database)).seq == 0
    async with audit_database.unit_of_work() as uow:
        links = await record_many(uow, [event(i) for i in range(count)], KEYRING)
    assert [link.seq for link in links] == list(range(1, count + 1))
    stored = await rows(audit_database)
    assert [(row["seq"], row["hash"]) for row in stored] == [
        (link.seq, link.hash) for link in links
    ]
    assert await head(audit_database) == links[-1]
    assert (await verify(audit_database, KEYRING)).count == count


@pytest.mark.postgres
async def test_appends_begin_the_transaction_before_queueing_and_skip_sqlalchemy(
    reset_postgres_url: str,
) -> None:
    """The unit of work's BEGIN goes out before the append queues for the lock, and the
    append runs on asyncpg directly; SQLAlchemy still commits (or rolls back) it."""
    from keel.audit.writer import _in_unit
    from tests.audit._support import make_settings

    database = Database(make_settings(reset_postgres_url))
    try:
        async with database.unit_of_work() as uow:
            execute = await _in_unit(uow)
            assert execute.__qualname__.startswith("_on_driver.")
            conn = await uow.session.connection()
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            assert driver.is_in_transaction()

        async def append_then_fail() -> None:
            async with database.unit_of_work() as uow:
                await record_many(uow, [event(1)], KEYRING)
                raise LookupError("rolled back")

        with pytest.raises(LookupError):
            await append_then_fail()
        assert await rows(database) == []
        await fill(database, 2)
        assert [row["seq"] for row in await rows(database)] == [1, 2]
    finally:
        await database.dispose()
