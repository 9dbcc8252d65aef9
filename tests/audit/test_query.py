"""Reading back: filtered, cursor-paginated pages for the admin API; a stream for export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from keel.audit import (
    MAX_PAGE,
    Action,
    ActorType,
    AuditRecord,
    Result,
    export_events,
    query_events,
    record_many,
)
from keel.audit.canonical import format_timestamp
from keel.db import Database
from keel.errors import InvalidInput
from tests.audit._support import KEYRING, T0, event, rehash_lines

ACTIONS = [Action.AUTHN_LOGIN_SUCCESS, Action.AUTHN_LOGIN_FAIL, Action.USER_UPDATED]


@pytest.fixture
async def db(audit_database: Database) -> Database:
    events = [
        event(
            n,
            action=ACTIONS[n % 3],
            result=Result.FAILURE if ACTIONS[n % 3] is Action.AUTHN_LOGIN_FAIL else Result.SUCCESS,
            actor_id=f"user-{n % 4}",
            target_type="user" if n % 2 else "api_key",
            target_id=f"t-{n % 5}",
            occurred_at=T0 + timedelta(minutes=n),
        )
        for n in range(1, 41)
    ]
    async with audit_database.unit_of_work() as uow:
        await record_many(uow, events, KEYRING)
    return audit_database


async def _query(db: Database, **filters: object) -> list[AuditRecord]:
    async with db.unit_of_work() as uow:
        return await query_events(uow, **filters)  # type: ignore[arg-type]


async def test_a_page_holds_the_stored_event(db: Database) -> None:
    [first] = await _query(db, limit=1)
    source = event(
        1,
        action=ACTIONS[1],
        result=Result.FAILURE,
        actor_id="user-1",
        target_type="user",
        target_id="t-1",
        occurred_at=T0 + timedelta(minutes=1),
    )
    assert first.seq == 1
    assert first.occurred_at == source.occurred_at
    assert first.occurred_at.tzinfo is not None  # SEC-67: aware UTC
    assert (first.action, first.result) == ("authn_login_fail", "failure")
    assert first.actor_type == ActorType.USER.value
    assert (first.actor_id, first.target_type, first.target_id) == ("user-1", "user", "t-1")
    assert (first.source_ip, first.request_id) == ("203.0.113.7", "req-1")
    assert first.details == {"field": "display_name", "n": 1}
    assert first.to_json()["occurred_at"] == format_timestamp(source.occurred_at)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"action": Action.AUTHN_LOGIN_FAIL}, [n for n in range(1, 41) if n % 3 == 1]),
        ({"actor_id": "user-2"}, [n for n in range(1, 41) if n % 4 == 2]),
        ({"target_type": "user", "target_id": "t-3"}, [n for n in range(1, 41) if n % 10 == 3]),
        ({"result": Result.FAILURE}, [n for n in range(1, 41) if n % 3 == 1]),
        (
            {"since": T0 + timedelta(minutes=10), "until": T0 + timedelta(minutes=15)},
            [10, 11, 12, 13, 14],
        ),
        ({"action": "no_such_action"}, []),
    ],
)
async def test_filters(db: Database, filters: dict[str, object], expected: list[int]) -> None:
    page = await _query(db, limit=MAX_PAGE, **filters)
    assert [record.seq for record in page] == expected


async def test_since_until_in_another_zone_mean_the_same_instant(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    since = (T0 + timedelta(minutes=10)).astimezone(plus_two)
    until = (T0 + timedelta(minutes=12)).astimezone(plus_two)
    assert [r.seq for r in await _query(db, since=since, until=until)] == [10, 11]


async def test_cursor_pagination_ascending_and_descending(db: Database) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        page = await _query(db, actor_id="user-1", after_seq=cursor, limit=3)
        seen.extend(record.seq for record in page)
        if len(page) < 3:
            break
        cursor = page[-1].seq
    assert seen == [n for n in range(1, 41) if n % 4 == 1]

    newest: list[int] = []
    before = None
    while True:
        page = await _query(db, actor_id="user-1", before_seq=before, descending=True, limit=4)
        newest.extend(record.seq for record in page)
        if len(page) < 4:
            break
        before = page[-1].seq
    assert newest == list(reversed(seen))


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE + 1])
async def test_page_size_is_bounded(db: Database, limit: int) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await _query(db, limit=limit)


async def test_naive_time_bounds_are_refused(db: Database) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        await _query(db, since=datetime(2026, 1, 1))  # noqa: DTZ001


async def test_export_streams_everything_after_a_seq(db: Database) -> None:
    records = [record async for record in export_events(db, since_seq=33, chunk_size=2)]
    assert [record.seq for record in records] == list(range(34, 41))
    lines = [record.to_json_line() for record in records]
    assert all(line.isascii() and "\n" not in line for line in lines)
    assert all(rehash_lines(lines))  # a SIEM holding the key can re-check every line
    everything = [record.seq async for record in export_events(db, chunk_size=7)]
    assert everything == list(range(1, 41))
    assert [record async for record in export_events(db, since_seq=40)] == []


async def test_export_of_an_empty_chain_is_empty(audit_database: Database) -> None:
    assert [record async for record in export_events(audit_database)] == []


def test_to_json_is_the_documented_export_form() -> None:
    record = AuditRecord(
        seq=5,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        action="user_created",
        result="success",
        actor_type="system",
        actor_id=None,
        target_type="user",
        target_id="u1",
        source_ip=None,
        user_agent="é\u2028",
        request_id=None,
        details={"b": 1, "a": [True, None]},
        key_id="k1",
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    assert record.to_json_line() == (
        '{"action":"user_created","actor_id":null,"actor_type":"system",'
        '"details":{"a":[true,null],"b":1},"hash":"' + "1" * 64 + '","key_id":"k1",'
        '"occurred_at":"2026-01-02T03:04:05.000000Z","prev_hash":"' + "0" * 64 + '",'
        '"request_id":null,"result":"success","seq":5,"source_ip":null,"target_id":"u1",'
        '"target_type":"user","user_agent":"\\u00e9\\u2028"}'
    )
