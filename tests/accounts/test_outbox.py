"""The durable mail outbox on a SQLite file and on PostgreSQL: once, never for a rollback, retried.

Two ``Database`` objects on one URL are two connection pools, as two workers
(or instances) have: each sender claims through its own connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from keel._clock import FrozenClock
from keel.accounts import NO_ORIGIN, FileMailer, Message, Outbox, OutboxMessage
from keel.accounts.housekeeping import prune_tokens
from keel.accounts.outbox import BATCH, retry_delay
from keel.accounts.sealing import BodySealer
from keel.audit import AuditTrail
from keel.audit.models import AuditEventRow
from keel.db import Database
from keel.settings import MailSettings, Settings

from ._service import ServiceFactory

PASSWORD = "a long enough passphrase 42"


def message(n: int = 0, *, body: str = "hello") -> Message:
    return Message(
        to=f"user{n}@example.com", subject="Hi", body=body, kind="verify_email", user_id=None
    )


class Recorder:
    """Delivers after a short pause (so claims overlap); fails its first ``failures`` calls."""

    def __init__(self, failures: int = 0, pause: float = 0.0) -> None:
        self.failures = failures
        self.pause = pause
        self.calls: list[Message] = []
        self.delivered = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.calls.append(message)
        if self.pause:
            await asyncio.sleep(self.pause)
        if len(self.calls) <= self.failures:
            raise ConnectionRefusedError("relay down")
        self.delivered.set()

    @property
    def keys(self) -> list[str | None]:
        return [m.idempotency_key for m in self.calls]


class Stuck:
    """A send that never ends (a process that dies mid-send)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.started.set()
        await asyncio.sleep(3600)


class Observed:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.gave_up_kinds: list[str] = []

    def depth(self, pending: int) -> None:
        self.depths.append(pending)

    def gave_up(self, kind: str) -> None:
        self.gave_up_kinds.append(kind)


def sealer(settings: Settings) -> BodySealer:
    keys = settings.audit
    return BodySealer(keys.keys, keys.current_key_id)


def outbox(
    settings: Settings,
    database: Database,
    mailer: Any,
    *,
    clock: FrozenClock | None = None,
    audit: AuditTrail | None = None,
    observer: Observed | None = None,
    batch: int = BATCH,
    **overrides: Any,
) -> Outbox:
    defaults: dict[str, Any] = {"max_attempts": 3, "retry_base": 10.0, "retry_max": 100.0}
    tuning = MailSettings(**{**defaults, **overrides})
    return Outbox(
        mailer,
        database=database,
        sealer=sealer(settings),
        audit=audit,
        settings=tuning,
        batch=batch,
        clock=clock,
        observer=observer,
        rng=random.Random(7),
    )


async def stage(box: Outbox, database: Database, *messages: Message) -> None:
    async with database.unit_of_work() as uow:
        box.stage(uow, messages)


async def outbox_rows(database: Database) -> list[OutboxMessage]:
    async with database.unit_of_work() as uow:
        return list((await uow.session.execute(select(OutboxMessage))).scalars())


def wall_clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


async def test_each_message_is_sent_once_with_two_senders_racing(
    settings: Settings, database: Database
) -> None:
    other = Database(settings.database)  # a second worker's pool on the same database
    try:
        for pool in (database, other):  # both connected before the race starts
            async with pool.unit_of_work() as uow:
                await uow.session.execute(select(1))
        mailer = Recorder(pause=0.02)
        first = outbox(settings, database, mailer)
        second = outbox(settings, other, mailer)
        await stage(first, database, *(message(n) for n in range(24)))
        await asyncio.gather(first.drain(), second.drain(), first.drain(), second.drain())
    finally:
        await other.dispose()
    counts = Counter(mailer.keys)
    assert len(counts) == 24
    assert set(counts.values()) == {1}
    assert first.sent > 0
    assert second.sent > 0
    rows = await outbox_rows(database)
    assert {row.status for row in rows} == {"sent"}
    assert {str(row.id) for row in rows} == set(counts)
    assert all(row.body_sealed is None and row.attempts == 1 for row in rows)


async def test_a_rolled_back_change_sends_nothing(settings: Settings, database: Database) -> None:
    mailer = Recorder()
    box = outbox(settings, database, mailer)

    async def failing_change() -> None:
        async with database.unit_of_work() as uow:
            box.stage(uow, [message()])
            raise RuntimeError("change failed")

    with pytest.raises(RuntimeError, match="change failed"):
        await failing_change()
    await box.drain()
    assert mailer.calls == []
    assert await outbox_rows(database) == []


async def test_a_registration_whose_transaction_fails_mails_nothing(
    service_factory: ServiceFactory, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_factory()

    async def failing_record(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit down")

    monkeypatch.setattr(AuditTrail, "record", failing_record)
    with pytest.raises(RuntimeError, match="audit down"):
        await service.register("lost@example.com", PASSWORD, None, NO_ORIGIN)
    monkeypatch.undo()
    await service.register("kept@example.com", PASSWORD, None, NO_ORIGIN)
    assert service.outbox is not None
    await service.outbox.drain()
    mailer = service.outbox.mailer
    assert isinstance(mailer, FileMailer)
    assert [m["to"] for m in mailer.read()] == ["kept@example.com"]
    assert len(await outbox_rows(database)) == 1


async def test_sec_25_the_outbox_never_holds_a_link_token_in_clear(
    service_factory: ServiceFactory, database: Database
) -> None:
    service = service_factory()
    await service.forgot_password("nobody@example.com", NO_ORIGIN)
    await service.register("owner@example.com", PASSWORD, None, NO_ORIGIN)
    [row] = await outbox_rows(database)  # committed with the account, before any send
    assert (row.status, row.kind, row.recipient) == ("pending", "verify_email", "owner@example.com")
    assert row.body_sealed is not None
    assert b"#token=" not in row.body_sealed
    assert service.outbox is not None
    await service.outbox.drain()
    mailer = service.outbox.mailer
    assert isinstance(mailer, FileMailer)
    [sent] = mailer.read()
    token = sent["body"].rsplit("#token=", 1)[1].split()[0]
    assert sent["idempotency_key"] == str(row.id)
    [row] = await outbox_rows(database)
    assert row.status == "sent"
    assert row.body_sealed is None
    assert token.encode() not in repr(row.__dict__).encode()


async def test_a_failed_attempt_is_retried_after_a_growing_jittered_delay(
    settings: Settings, database: Database
) -> None:
    clock = wall_clock()
    mailer = Recorder(failures=2)
    box = outbox(settings, database, mailer, clock=clock, max_attempts=5)
    await stage(box, database, message())
    start = clock.now()

    assert await box.send_due() == 1
    [row] = await outbox_rows(database)
    first_delay = (row.available_at - start).total_seconds()
    assert 5.0 <= first_delay <= 10.0  # upper half of retry_base
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "ConnectionRefusedError")
    assert await box.send_due() == 0  # not due yet

    clock.advance(first_delay)
    assert await box.send_due() == 1
    [row] = await outbox_rows(database)
    second_delay = (row.available_at - clock.now()).total_seconds()
    assert 10.0 <= second_delay <= 20.0  # the ceiling doubled

    clock.advance(second_delay)
    assert await box.send_due() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 3, clock.now())
    assert len(set(mailer.keys)) == 1  # every attempt was the same message


def test_retry_delays_double_up_to_the_bound_with_jitter() -> None:
    tuning = MailSettings(retry_base=2.0, retry_max=60.0)
    rng = random.Random(1)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (40, 60.0)):
        delays = {retry_delay(tuning, attempts, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


async def test_after_the_last_attempt_the_message_is_failed_kept_logged_and_audited(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = wall_clock()
    trail = AuditTrail.from_settings(database, settings.audit, clock)
    observed = Observed()
    mailer = Recorder(failures=100)
    box = outbox(settings, database, mailer, clock=clock, audit=trail, observer=observed)
    user_id = str(uuid.uuid4())
    await stage(
        box, database, Message(to="a@example.com", subject="s", body="b", kind="k", user_id=user_id)
    )
    with caplog.at_level(logging.WARNING, logger="keel.accounts.mail"):
        for _ in range(3):
            assert await box.send_due() == 1
            clock.advance(100)
        assert await box.send_due() == 0
    assert len(mailer.calls) == 3
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "ConnectionRefusedError")
    assert row.failed_at is not None
    assert row.body_sealed is None
    assert await box.count() == 0
    assert observed.depths == [0]
    assert observed.gave_up_kinds == ["k"]
    [failed] = [r for r in caplog.records if r.getMessage() == "mail_send_failed"]
    assert failed.__dict__["fields"]["attempts"] == 3
    async with database.unit_of_work() as uow:
        [audit] = (
            await uow.session.execute(
                select(AuditEventRow).where(AuditEventRow.action == "mail_send_fail")
            )
        ).scalars()
    assert (audit.target_type, audit.target_id) == ("user", user_id)
    assert '"attempts":3' in audit.details


async def test_a_sender_that_dies_mid_send_leaves_the_message_to_another_after_its_lease(
    settings: Settings, database: Database
) -> None:
    clock = wall_clock()
    stuck = Stuck()
    dying = outbox(settings, database, stuck, clock=clock, lease=60.0)
    await stage(dying, database, message())
    attempt = asyncio.create_task(dying.send_due())
    await stuck.started.wait()
    attempt.cancel()  # the process is gone; its claim stays
    with pytest.raises(asyncio.CancelledError):
        await attempt

    mailer = Recorder()
    survivor = outbox(settings, database, mailer, clock=clock, lease=60.0)
    assert await survivor.send_due() == 0  # still leased
    clock.advance(61)
    assert await survivor.send_due() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("sent", 2)
    assert mailer.keys == [str(row.id)]


async def test_a_commit_wakes_the_sender_without_waiting_for_the_poll(
    settings: Settings, database: Database
) -> None:
    mailer = Recorder()
    box = outbox(settings, database, mailer, poll_interval=3600.0)
    sender = asyncio.create_task(box.run_forever())
    try:
        await asyncio.sleep(0.2)  # the sender's first (empty) round is done; it waits
        await stage(box, database, message())
        async with asyncio.timeout(5):
            await mailer.delivered.wait()
    finally:
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender


async def test_another_workers_sender_finds_the_message_on_its_next_poll(
    settings: Settings, database: Database
) -> None:
    mailer = Recorder()
    writer = outbox(settings, database, mailer)  # its own sender is not running
    poller = outbox(settings, database, mailer, poll_interval=0.2)
    sender = asyncio.create_task(poller.run_forever())
    try:
        await asyncio.sleep(0.1)
        await stage(writer, database, message())
        async with asyncio.timeout(5):
            await mailer.delivered.wait()
    finally:
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
    assert poller.sent == 1


async def test_housekeeping_prunes_sent_and_failed_mail_after_the_retention_and_keeps_the_rest(
    settings: Settings, database: Database
) -> None:
    clock = wall_clock()
    mailer = Recorder(failures=1)
    box = outbox(settings, database, mailer, clock=clock, max_attempts=1)
    await stage(box, database, message(1), message(2))
    await box.send_due()  # one fails (and is given up), one is sent
    await stage(box, database, message(3))  # pending
    deadline = time.monotonic() + 5

    def now(offset: float) -> datetime:
        return clock.now() + timedelta(seconds=offset)

    kept = await prune_tokens(database, now=now(59), retention=60, batch=10, deadline=deadline)
    assert kept["mail_outbox"].deleted == 0
    pruned = await prune_tokens(database, now=now(61), retention=60, batch=10, deadline=deadline)
    # The sent row and the failed one (its address need not outlive the retention: the
    # give-up stays in the audit trail); a pending message is never pruned, however old.
    assert pruned["mail_outbox"].deleted == 2
    async with database.unit_of_work() as uow:
        left = dict(
            (
                await uow.session.execute(
                    select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
                )
            ).all()
        )
    assert left == {"pending": 1}


async def test_a_body_sealed_under_an_unknown_key_is_given_up(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    mailer = Recorder()
    box = outbox(settings, database, mailer)
    await stage(box, database, message())
    rotated = Settings(
        database_url=settings.database.url.get_secret_value(),
        audit_key="x" * 40,
        audit_key_id="k9",
    )
    other = outbox(rotated, database, mailer)
    assert await other.send_due() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.last_error) == ("failed", "unsealable")
    assert mailer.calls == []


async def test_a_round_claims_at_most_one_batch(settings: Settings, database: Database) -> None:
    mailer = Recorder()
    box = outbox(settings, database, mailer, batch=4)
    await stage(box, database, *(message(n) for n in range(10)))
    assert await box.send_due() == 4
    assert len(mailer.calls) == 4
    assert await box.count() == 6
