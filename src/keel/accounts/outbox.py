"""The durable mail outbox: messages written with the change that causes them, sent after.

A service hands its messages to :meth:`Outbox.stage` inside its unit of work,
so they commit or roll back with the change: a rolled-back registration sends
nothing, a committed one always has its message (the ``mail_outbox`` table,
:class:`keel.accounts.models.OutboxMessage`). The commit wakes this worker's
sender at once; the senders of every other worker and instance find the rows
on their next poll (``KEEL_MAIL_POLL_INTERVAL``).

Delivery is at least once. A sender claims due rows with a lease
(:mod:`keel.accounts.outbox_rows`), so concurrent senders never send the same
message at the same time; a sender that dies mid-send leaves its rows to be
claimed again when the lease ends. Each message carries its row id as an
idempotency key (the ``Message-ID`` over SMTP), so a resend after a crash is
recognisable as the same message. A failed attempt is retried after an
exponential delay with jitter; after ``max_attempts`` the row is marked
``failed`` (kept, with its error), logged ``mail_send_failed`` and audited
``mail_send_fail``. Bodies are sealed at rest (:mod:`keel.accounts.sealing`)
and emptied once a row is settled; sent rows are pruned by the housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import event as sa_event

from keel._clock import Clock, SystemClock
from keel._logging import event
from keel.accounts import outbox_rows as rows
from keel.accounts.mail import Mailer, Message
from keel.accounts.models import OutboxMessage
from keel.accounts.sealing import BodySealer
from keel.audit import Action, ActorType, AuditTrail, Result
from keel.db import Database, UnitOfWork
from keel.settings import MailSettings

__all__ = ["BATCH", "Outbox", "OutboxObserver", "retry_delay"]

_log = logging.getLogger("keel.accounts.mail")


#: How many due messages a sender claims at once, by default.
BATCH: Final = 4


def retry_delay(settings: MailSettings, attempts: int, rng: random.Random) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (equal jitter).

    The ceiling doubles per attempt up to ``retry_max``; the delay is drawn
    from its upper half, so senders that failed together do not retry together.
    """
    doubled = settings.retry_base * float(2 ** max(attempts - 1, 0))
    ceiling = min(settings.retry_max, doubled)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class OutboxObserver(Protocol):
    """Where metrics attach (``keel_mail_outbox_depth``, ``keel_mail_failures_total``)."""

    def depth(self, pending: int) -> None:
        """The sender counted ``pending`` messages not yet sent or given up."""
        ...

    def gave_up(self, kind: str) -> None:
        """A message of ``kind`` was marked failed."""
        ...


class Outbox:
    """Stages messages in a unit of work; sends them from the table, with leases and retries.

    ``settings`` is the settings' ``mail`` section (``KEEL_MAIL_*``: polling,
    retries, the lease, whether this instance sends); ``batch`` is how many
    due messages one claim takes. ``clock`` is the wall clock on purpose:
    leases and due times are compared by every process that shares the database.
    """

    def __init__(
        self,
        mailer: Mailer,
        *,
        database: Database,
        sealer: BodySealer,
        audit: AuditTrail | None,
        settings: MailSettings | None = None,
        batch: int = BATCH,
        clock: Clock | None = None,
        observer: OutboxObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._mailer = mailer
        self._database = database
        self._sealer = sealer
        self._audit = audit
        self._settings = settings or MailSettings()
        self._batch = batch
        # One attempt's bound: well inside the lease, so a claim never outlives it mid-send.
        self._send_timeout = min(30.0, self._settings.lease / 4)
        self._clock = clock or SystemClock()
        self._observer = observer
        # Jitter is not a secret (S311 does not apply).
        self._rng = rng or random.Random()  # noqa: S311
        self._wakeup: asyncio.Event | None = None
        self._earliest_retry: datetime | None = None
        self._counted_at: float | None = None
        self.sent = 0
        self.failed = 0
        self.depth: int | None = None

    @property
    def mailer(self) -> Mailer:
        return self._mailer

    @property
    def settings(self) -> MailSettings:
        return self._settings

    # --- writing ---------------------------------------------------------------------------

    def stage(self, uow: UnitOfWork, messages: Sequence[Message]) -> None:
        """Add ``messages`` to ``uow``: they commit (and wake the sender) or roll back with it."""
        if not messages:
            return
        now = self._clock.now()
        key_id = self._sealer.current_key_id
        for message in messages:
            message_id = uuid.uuid4()
            uow.session.add(
                OutboxMessage(
                    id=message_id,
                    kind=message.kind,
                    recipient=message.to,
                    subject=message.subject,
                    body_sealed=self._sealer.seal(message.body, message_id=str(message_id)),
                    key_id=key_id,
                    user_id=message.user_id,
                    status=rows.PENDING,
                    attempts=0,
                    created_at=now,
                    available_at=now,
                )
            )

        def committed(_session: Any) -> None:
            self.wake()

        sa_event.listen(uow.session.sync_session, "after_commit", committed, once=True)

    def wake(self) -> None:
        """Have this worker's sender look at the table now."""
        if self._wakeup is not None:
            self._wakeup.set()

    # --- sending ---------------------------------------------------------------------------

    async def send_due(self) -> int:
        """One round: claim up to a batch of due messages, attempt each; the number claimed."""
        now = self._clock.now()
        claimed = await rows.claim_due(
            self._database,
            now=now,
            lease_until=now + timedelta(seconds=self._settings.lease),
            limit=self._batch,
        )
        outcomes = await asyncio.gather(
            *(self._attempt(message) for message in claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                # Its row stays claimed until the lease ends, then is tried again.
                event(_log, logging.WARNING, "mail_outbox_failed", error=type(outcome).__name__)
            elif isinstance(outcome, BaseException):
                raise outcome
        return len(claimed)

    async def count(self) -> int:
        """The outbox depth (pending messages), also handed to the observer."""
        self.depth = await rows.pending_count(self._database)
        if self._observer is not None:
            self._observer.depth(self.depth)
        return self.depth

    async def drain(self) -> None:
        """Send until nothing is pending, waiting out retry delays (tests and tools).

        Needs a moving clock; callers bound it (``asyncio.timeout``) as they see fit.
        """
        while True:
            if await self.send_due() >= self._batch:
                continue  # a full batch: more may be due at once
            due = await rows.next_due(self._database)
            if due is None:
                return
            wait = (due - self._clock.now()).total_seconds()
            await asyncio.sleep(min(max(wait, 0.005), 0.05))

    async def run_forever(self) -> None:
        """The supervisor's service: send what is due, then sleep until woken or the next poll."""
        self._wakeup = wakeup = asyncio.Event()
        while True:
            wakeup.clear()  # a commit from now on wakes the next wait
            claimed = 0
            try:
                claimed = await self.send_due()
                if claimed < self._batch and self._count_due():
                    await self.count()
            except Exception as exc:  # noqa: BLE001 - a failed round is logged, the next retries
                event(_log, logging.WARNING, "mail_outbox_failed", error=type(exc).__name__)
            if claimed >= self._batch:
                continue  # a full batch: more may be due
            try:
                async with asyncio.timeout(self._next_wait()):
                    await wakeup.wait()
            except TimeoutError:
                pass

    def _count_due(self) -> bool:
        """At most one depth count per poll interval, however often commits wake the sender."""
        now = self._clock.monotonic()
        if self._counted_at is not None and now - self._counted_at < self._settings.poll_interval:
            return False
        self._counted_at = now
        return True

    def _next_wait(self) -> float:
        wait = self._settings.poll_interval
        if self._earliest_retry is not None:
            until = (self._earliest_retry - self._clock.now()).total_seconds()
            if until <= wait:
                self._earliest_retry = None
            wait = min(wait, max(until, 0.0))
        return wait

    async def _attempt(self, claimed: rows.ClaimedMessage) -> None:
        body = (
            self._sealer.open(
                claimed.body_sealed, key_id=claimed.key_id, message_id=str(claimed.id)
            )
            if claimed.body_sealed is not None
            else None
        )
        if body is None:
            # Sealed under a key this process no longer knows: no retry can help.
            await self._give_up(claimed, error="unsealable")
            return
        message = Message(
            to=claimed.recipient,
            subject=claimed.subject,
            body=body,
            kind=claimed.kind,
            user_id=claimed.user_id,
            idempotency_key=str(claimed.id),
        )
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._mailer.send(message)
        except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then reported
            error = type(exc).__name__
            event(
                _log,
                logging.WARNING,
                "mail_send_error",
                kind=claimed.kind,
                attempt=claimed.attempts,
                error=error,
            )
            if claimed.attempts >= self._settings.max_attempts:
                await self._give_up(claimed, error=error)
            else:
                await self._retry_later(claimed, error)
            return
        self.sent += 1
        if not await rows.settle(self._database, claimed, status=rows.SENT, at=self._clock.now()):
            self._lease_lost(claimed)

    async def _retry_later(self, claimed: rows.ClaimedMessage, error: str) -> None:
        due = self._clock.now() + timedelta(
            seconds=retry_delay(self._settings, claimed.attempts, self._rng)
        )
        if not await rows.settle(self._database, claimed, status=rows.PENDING, at=due, error=error):
            self._lease_lost(claimed)
            return
        if self._earliest_retry is None or due < self._earliest_retry:
            self._earliest_retry = due

    def _lease_lost(self, claimed: rows.ClaimedMessage) -> None:
        # The attempt outlived its lease and another sender took the row: it decides now.
        event(
            _log, logging.WARNING, "mail_lease_lost", kind=claimed.kind, message_id=str(claimed.id)
        )

    async def _give_up(self, claimed: rows.ClaimedMessage, *, error: str) -> None:
        if not await rows.settle(
            self._database, claimed, status=rows.FAILED, at=self._clock.now(), error=error
        ):
            self._lease_lost(claimed)
            return
        self.failed += 1
        if self._observer is not None:
            self._observer.gave_up(claimed.kind)
        event(
            _log,
            logging.ERROR,
            "mail_send_failed",
            kind=claimed.kind,
            user_id=claimed.user_id,
            message_id=str(claimed.id),
            attempts=claimed.attempts,
            error=error,
        )
        if self._audit is None:
            return
        trail = self._audit
        try:
            await trail.record_alone(
                trail.event(
                    Action.MAIL_SEND_FAIL,
                    Result.FAILURE,
                    actor_type=ActorType.SYSTEM,
                    target_type="user" if claimed.user_id else None,
                    target_id=claimed.user_id,
                    details={"kind": claimed.kind, "attempts": claimed.attempts, "error": error},
                )
            )
        except Exception as exc:  # noqa: BLE001 - the log line above already tells the story
            event(
                _log,
                logging.ERROR,
                "audit_write_failed",
                action=Action.MAIL_SEND_FAIL.value,
                error=type(exc).__name__,
            )
