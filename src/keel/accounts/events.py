"""``AccountEvents``: the audit events of account operations, built and recorded one way.

Every event here has a user account as its target. Three actors: nobody yet
(an anonymous caller: a registration, a failed login), the account's own
user, and an admin (a user, or an API key with the admin scope). A change is
recorded in the unit of work that makes it (:meth:`AccountEvents.record`); a
refusal that changes nothing in a transaction of its own
(:meth:`AccountEvents.record_alone`), and a refused password check so that
losing its record never changes the answer (:meth:`AccountEvents.refusal`).
"""

from __future__ import annotations

from typing import Any

from keel.accounts.origin import Origin
from keel.accounts.refusals import record_refusal
from keel.audit import Action, ActorType, AuditEvent, AuditTrail, Result
from keel.db import UnitOfWork

__all__ = ["AccountEvents"]


class AccountEvents:
    """Audit events about user accounts, on one ``AuditTrail``."""

    def __init__(self, audit: AuditTrail) -> None:
        self._audit = audit

    def event(
        self,
        action: Action,
        result: Result,
        origin: Origin,
        *,
        actor_type: ActorType = ActorType.ANONYMOUS,
        actor_id: str | None = None,
        target_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """An event about an account (``target_id``), by anyone."""
        return self._audit.event(
            action,
            result,
            actor_type=actor_type,
            actor_id=actor_id,
            target_type="user",
            target_id=target_id,
            origin=origin,
            details=details,
        )

    def self_event(
        self,
        action: Action,
        result: Result,
        origin: Origin,
        user_id: object,
        *,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """An event about a user acting on their own account."""
        return self.event(
            action,
            result,
            origin,
            actor_type=ActorType.USER,
            actor_id=str(user_id),
            target_id=str(user_id),
            details=details,
        )

    def admin_event(
        self,
        action: Action,
        result: Result,
        origin: Origin,
        admin_id: str,
        user_id: object,
        *,
        actor_type: ActorType = ActorType.USER,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """An event about an admin (a user, or an API key) acting on an account."""
        return self.event(
            action,
            result,
            origin,
            actor_type=actor_type,
            actor_id=admin_id,
            target_id=str(user_id),
            details=details,
        )

    async def record(self, uow: UnitOfWork, audit_event: AuditEvent) -> None:
        """Append ``audit_event`` in ``uow``: it commits (or rolls back) with the change."""
        await self._audit.record(uow, audit_event)

    async def record_alone(self, audit_event: AuditEvent) -> None:
        """Append ``audit_event`` in a transaction of its own (a refusal that changed nothing)."""
        await self._audit.record_alone(audit_event)

    async def refusal(self, audit_event: AuditEvent) -> None:
        """Record a refused password check or lock; a failure to is logged, never raised."""
        await record_refusal(self._audit, audit_event)
