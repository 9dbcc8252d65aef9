"""Appending: inside the caller's transaction, gapless, sealed as documented."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError

from keel._clock import FrozenClock
from keel.audit import (
    GENESIS_HASH,
    Action,
    ActorType,
    AuditTrail,
    ChainLink,
    Result,
    record,
    record_alone,
    verify,
)
from keel.audit.canonical import canonical_row
from keel.db import Database
from keel.settings import AuditSettings
from tests.audit._support import KEY_ID, KEYRING, event, head, rows

metadata = MetaData()
widgets = Table(
    "widgets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
)


@pytest.fixture
async def db(audit_database: Database) -> Database:
    async with audit_database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return audit_database


async def _widgets(db: Database) -> list[str]:
    async with db.unit_of_work() as uow:
        return list((await uow.session.execute(select(widgets.c.name))).scalars())


async def test_first_event_links_to_genesis_and_is_sealed_as_documented(db: Database) -> None:
    link = await record_alone(db, event(1), KEYRING)
    assert link.seq == 1
    [row] = await rows(db)
    source = event(1)
    expected = KEYRING.seal(
        canonical_row(
            seq=1,
            key_id=KEY_ID,
            prev_hash=GENESIS_HASH,
            occurred_at=source.occurred_at,
            action=source.action,
            result=source.result,
            actor_type=source.actor_type,
            actor_id=source.actor_id,
            target_type=source.target_type,
            target_id=source.target_id,
            source_ip=source.source_ip,
            user_agent=source.user_agent,
            request_id=source.request_id,
            details=source.details,
        )
    )
    assert row["prev_hash"] == GENESIS_HASH
    assert row["hash"] == link.hash == expected
    assert row["key_id"] == KEY_ID
    assert row["details"] == '{"field":"display_name","n":1}'
    assert await head(db) == link


async def test_events_chain_one_after_another(db: Database) -> None:
    first = await record_alone(db, event(1), KEYRING)
    second = await record_alone(db, event(2), KEYRING)
    stored = await rows(db)
    assert [r["seq"] for r in stored] == [1, 2]
    assert stored[1]["prev_hash"] == first.hash
    assert await head(db) == second
    assert (await verify(db, KEYRING)).ok


async def _change_then_refuse(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(widgets).values(id=1, name="lost"))
        await record(uow, event(1), KEYRING)
        raise RuntimeError("business rule says no")


async def _event_then_duplicate(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await record(uow, event(1), KEYRING)
        await uow.session.execute(insert(widgets).values(id=1, name="duplicate"))


async def test_rolled_back_change_takes_its_event_with_it(db: Database) -> None:
    with pytest.raises(RuntimeError, match="business rule"):
        await _change_then_refuse(db)
    assert await _widgets(db) == []
    assert await rows(db) == []
    assert await head(db) == ChainLink(0, GENESIS_HASH)  # the seq was given back: no gap

    link = await record_alone(db, event(2), KEYRING)
    assert link.seq == 1
    assert (await verify(db, KEYRING)).ok


async def test_failing_business_write_after_the_event_rolls_both_back(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(widgets).values(id=1, name="first"))
    with pytest.raises(IntegrityError):
        await _event_then_duplicate(db)
    assert await _widgets(db) == ["first"]
    assert await rows(db) == []


async def test_committed_change_and_event_are_there_together(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(widgets).values(id=1, name="kept"))
        link = await record(uow, event(1), KEYRING)
    assert await _widgets(db) == ["kept"]
    assert [r["seq"] for r in await rows(db)] == [link.seq]


async def test_the_trail_stamps_events_with_its_clock(db: Database) -> None:
    clock = FrozenClock()
    trail = AuditTrail(db, KEYRING, clock)
    failed = trail.event(
        Action.AUTHN_LOGIN_FAIL,
        Result.FAILURE,
        actor_type=ActorType.ANONYMOUS,
        target_type="user",
        target_id="alice",
        source_ip="2001:db8::1",
        user_agent="curl/8",
        request_id="req-1",
        details={"reason": "bad_password", "password": "hunter2"},
    )
    assert failed.occurred_at == clock.now()
    link = await trail.record_alone(failed)
    [row] = await rows(db)
    assert row["seq"] == link.seq
    assert row["action"] == "authn_login_fail"
    assert "hunter2" not in row["details"]  # SEC-65: scrubbed before it is sealed
    assert (await trail.verify()).ok


def test_the_trail_builds_its_keyring_from_settings(audit_database: Database) -> None:
    from pydantic import SecretStr

    from keel.errors import ConfigurationError

    settings = AuditSettings(
        current_key_id="k2",
        keys={"k1": SecretStr("a" * 32), "k2": SecretStr("b" * 40)},
        is_development_key=False,
    )
    trail = AuditTrail.from_settings(audit_database, settings)
    assert trail.keyring.current_id == "k2"
    assert set(trail.keyring.keys) == {"k1", "k2"}
    short = AuditSettings(
        current_key_id="k1", keys={"k1": SecretStr("short")}, is_development_key=False
    )
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
        AuditTrail.from_settings(audit_database, short)
