"""``AuditTrail``: the audit trail of one application, for services to record into.

It holds what every write needs (the database, the keyring, the clock), so a
service calls ``trail.record(uow, trail.event(Action.USER_CREATED, ...))``
inside its unit of work, or ``trail.record_alone(...)`` for a failure that
changes nothing else.

``record_alone`` is group-committed: events recorded alone at the same time
by this process (a burst of failed logins) go out together, one short
transaction for the lot, each caller returning once its own event is
committed (``keel.audit._coalesce``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from keel._clock import Clock, SystemClock
from keel._types import Origin
from keel.audit._coalesce import Coalescer
from keel.audit.app_actions import AppAction
from keel.audit.chain import AuditKeyring, ChainLink, keyring_from_settings
from keel.audit.checkpoints import Checkpoint, take_checkpoint
from keel.audit.event import AuditEvent
from keel.audit.retention import PruneResult, prune
from keel.audit.verify import VerifyResult, verify
from keel.audit.vocabulary import Action, ActorType, Result
from keel.audit.writer import append_alone, record
from keel.db import Database, UnitOfWork
from keel.settings import AuditSettings

__all__ = ["AuditTrail"]


class AuditTrail:
    """Records events stamped by one clock and sealed by one keyring into one database."""

    __slots__ = ("_alone", "_clock", "_database", "_keyring")

    def __init__(self, database: Database, keyring: AuditKeyring, clock: Clock) -> None:
        self._database = database
        self._keyring = keyring
        self._clock = clock
        self._alone: Coalescer[AuditEvent, ChainLink] = Coalescer(self._append_alone)

    @classmethod
    def from_settings(
        cls, database: Database, settings: AuditSettings, clock: Clock | None = None
    ) -> AuditTrail:
        """The trail for ``Settings().audit`` (``ConfigurationError`` for an unusable key)."""
        return cls(database, keyring_from_settings(settings), clock or SystemClock())

    @property
    def database(self) -> Database:
        return self._database

    @property
    def keyring(self) -> AuditKeyring:
        return self._keyring

    @property
    def clock(self) -> Clock:
        return self._clock

    def event(
        self,
        action: Action | AppAction,
        result: Result = Result.SUCCESS,
        *,
        actor_type: ActorType = ActorType.ANONYMOUS,
        actor_id: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
        request_id: str | None = None,
        origin: Origin | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """An ``AuditEvent`` stamped with the trail's clock (scrubbed and validated).

        ``origin`` (a request's or a caller's) fills the source address, user agent and
        request id at once; the three keywords stay for events with no origin object.
        """
        if origin is not None:
            source_ip, user_agent = origin.source_ip, origin.user_agent
            request_id = origin.request_id
        return AuditEvent(
            action=action,
            result=result,
            occurred_at=self._clock.now(),
            actor_type=actor_type,
            actor_id=actor_id,
            target_type=target_type,
            target_id=target_id,
            source_ip=source_ip,
            user_agent=user_agent,
            request_id=request_id,
            details=dict(details or {}),
        )

    async def record(self, uow: UnitOfWork, event: AuditEvent) -> ChainLink:
        """Append ``event`` inside ``uow`` (commits or rolls back with it)."""
        return await record(uow, event, self._keyring)

    async def record_alone(self, event: AuditEvent) -> ChainLink:
        """Append ``event`` in a short transaction of its own; returns once committed.

        Concurrent calls share that transaction (group commit). A failure to
        commit raises in every caller whose event was in it.
        """
        return await self._alone.submit(event)

    async def _append_alone(self, events: Sequence[AuditEvent]) -> list[ChainLink]:
        return await append_alone(self._database, events, self._keyring)

    async def verify(self, *, against: ChainLink | tuple[int, str] | None = None) -> VerifyResult:
        return await verify(self._database, self._keyring, against=against)

    async def checkpoint(self) -> Checkpoint:
        return await take_checkpoint(self._database, self._keyring, clock=self._clock)

    async def prune(
        self,
        *,
        before_seq: int,
        archive_path: str | os.PathLike[str],
        actor_id: str | None = None,
    ) -> PruneResult:
        return await prune(
            self._database,
            self._keyring,
            before_seq=before_seq,
            archive_path=archive_path,
            clock=self._clock,
            actor_id=actor_id,
        )
