"""The append paths under concurrency: group commit, stale guesses, queued appends, rollbacks.

On PostgreSQL every append is one statement for a guessed head (the
process's newest append); these tests make the guesses go wrong in every way
they can (another process appended, the append queued ahead rolled back, a
unit of work appends twice while others queue) and check that the chain comes
out whole and gapless all the same. The same scenarios run on SQLite, whose
path takes the lock first.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from keel._clock import FrozenClock
from keel.audit import AuditTrail, ChainLink, record, record_alone, record_many, verify
from keel.db import Database
from keel.errors import DatabaseUnavailable
from tests._net import closed_port
from tests.audit._support import KEYRING, event, head, make_settings, rows


async def _assert_whole(database: Database, count: int) -> list[ChainLink]:
    result = await verify(database, KEYRING)
    assert result.ok, str(result)
    assert result.count == count
    stored = await rows(database)
    assert [row["seq"] for row in stored] == list(range(1, count + 1))
    links = [ChainLink(row["seq"], row["hash"]) for row in stored]
    assert await head(database) == links[-1]
    return links


async def test_sec_68_concurrent_record_alone_calls_share_commits(
    audit_database: Database,
) -> None:
    """150 events from 50 tasks through the trail: one valid chain, far fewer transactions."""
    trail = AuditTrail(audit_database, KEYRING, FrozenClock())

    async def writer(w: int) -> list[ChainLink]:
        return [await trail.record_alone(event(w * 10 + i)) for i in range(3)]

    returned = [link for links in await asyncio.gather(*map(writer, range(50))) for link in links]
    stored = await _assert_whole(audit_database, 150)
    assert sorted(returned, key=lambda link: link.seq) == stored
    if audit_database.dialect == "postgresql":
        async with audit_database.engine.connect() as conn:
            transactions = (
                await conn.execute(text("SELECT count(DISTINCT xmin::text) FROM audit_events"))
            ).scalar_one()
        assert transactions < 75  # group commit: several events per transaction


async def test_two_processes_appending_in_turn_guess_past_each_other(audit_url: str) -> None:
    """Each engine's guess is the other's stale head every time: still one gapless chain."""
    first = Database(make_settings(audit_url))
    second = Database(make_settings(audit_url))
    try:
        n = 0
        for _ in range(4):
            for database in (first, second):
                n += 1
                await record_alone(database, event(n), KEYRING)
                async with database.unit_of_work() as uow:
                    await record(uow, event(n + 100), KEYRING)
                async with database.unit_of_work() as uow:
                    await record_many(uow, [event(n + 200), event(n + 300)], KEYRING)
        await _assert_whole(first, 4 * 2 * 4)
    finally:
        await first.dispose()
        await second.dispose()


async def test_interleaved_writers_in_two_processes_make_one_chain(audit_url: str) -> None:
    first = Database(make_settings(audit_url))
    second = Database(make_settings(audit_url))
    trails = [AuditTrail(db, KEYRING, FrozenClock()) for db in (first, second)]

    async def writer(w: int) -> None:
        database = (first, second)[w % 2]
        for i in range(4):
            if i % 2:
                await trails[w % 2].record_alone(event(w * 10 + i))
            else:
                async with database.unit_of_work() as uow:
                    await record(uow, event(w * 10 + i), KEYRING)

    try:
        await asyncio.gather(*map(writer, range(16)))
        await _assert_whole(first, 64)
    finally:
        await first.dispose()
        await second.dispose()


async def test_an_append_queued_behind_one_that_rolls_back_takes_its_place(
    audit_database: Database,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def doomed() -> None:
        async with audit_database.unit_of_work() as uow:
            await record(uow, event(1), KEYRING)
            started.set()
            await release.wait()
            raise LookupError("the business change fails after its event")

    async def queued() -> ChainLink:
        await started.wait()
        return await record_alone(audit_database, event(2), KEYRING)

    failing = asyncio.create_task(doomed())
    waiting = asyncio.create_task(queued())
    await started.wait()
    await asyncio.sleep(0.3)  # the second append is now waiting for the chain lock
    assert not waiting.done()
    release.set()
    with pytest.raises(LookupError):
        await failing
    link = await asyncio.wait_for(waiting, 10)
    assert link.seq == 1
    [stored] = await _assert_whole(audit_database, 1)
    assert stored == link
    assert (await rows(audit_database))[0]["request_id"] == "req-2"


async def test_a_unit_of_work_appends_again_while_others_queue_for_the_lock(
    audit_database: Database,
) -> None:
    """The second append of a transaction that holds the lock never waits behind the queue."""
    trail = AuditTrail(audit_database, KEYRING, FrozenClock())
    started = asyncio.Event()

    async def twice() -> list[ChainLink]:
        async with audit_database.unit_of_work() as uow:
            first = await record(uow, event(1), KEYRING)
            started.set()
            await asyncio.sleep(0.3)  # the others queue up meanwhile
            second = await record(uow, event(2), KEYRING)
            third = await record_many(uow, [event(3), event(4)], KEYRING)
            return [first, second, *third]

    async def other(n: int) -> ChainLink:
        await started.wait()
        if n % 2:
            return await trail.record_alone(event(n))
        async with audit_database.unit_of_work() as uow:
            return await record(uow, event(n), KEYRING)

    mine, *theirs = await asyncio.wait_for(
        asyncio.gather(twice(), *(other(n) for n in range(10, 16))), 20
    )
    assert isinstance(mine, list)
    assert [link.seq for link in mine] == [1, 2, 3, 4]
    assert sorted(link.seq for link in theirs if isinstance(link, ChainLink)) == list(range(5, 11))
    await _assert_whole(audit_database, 10)


async def test_the_guess_survives_a_chain_reset_under_it(audit_url: str) -> None:
    """A head that went back (a restored backup) is found on the next append, not forked."""
    database = Database(make_settings(audit_url))
    try:
        for n in range(3):
            await record_alone(database, event(n), KEYRING)
        async with database.unit_of_work() as uow:
            await record(uow, event(3), KEYRING)
        await _assert_whole(database, 4)
        if database.dialect == "postgresql":
            statements = [
                "ALTER TABLE audit_events DISABLE TRIGGER USER",
                "ALTER TABLE audit_chain_head DISABLE TRIGGER USER",
                "DELETE FROM audit_events",
                "UPDATE audit_chain_head SET seq = 0, hash = repeat('0', 64)",
                "ALTER TABLE audit_events ENABLE TRIGGER USER",
                "ALTER TABLE audit_chain_head ENABLE TRIGGER USER",
            ]
        else:
            statements = [
                "DROP TRIGGER audit_events_no_delete",
                "DELETE FROM audit_events",
                "UPDATE audit_chain_head SET seq = 0, hash = printf('%064d', 0)",
            ]
        async with database.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
        link = await record_alone(database, event(9), KEYRING)
        assert link.seq == 1
        async with database.unit_of_work() as uow:
            assert (await record(uow, event(10), KEYRING)).seq == 2
        await _assert_whole(database, 2)
    finally:
        await database.dispose()


@pytest.mark.postgres
async def test_every_caller_of_a_batch_learns_the_database_is_down() -> None:
    database = Database(
        make_settings(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", connect_timeout=2)
    )
    trail = AuditTrail(database, KEYRING, FrozenClock())
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(trail.record_alone(event(n)) for n in range(5)), return_exceptions=True
            ),
            20,
        )
        assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
        with pytest.raises(DatabaseUnavailable):  # and the next call is not stuck behind them
            await asyncio.wait_for(trail.record_alone(event(9)), 10)
    finally:
        await database.dispose()
