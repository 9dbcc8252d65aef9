"""``SessionService``: sessions and their refresh-token families, started and ended.

A login starts a *session* (one per login per device, SEC-42) with its first
refresh token (:meth:`SessionService.start`, called inside the login's
transaction). Refreshing rotates the family's token with reuse detection: that
lives in :mod:`keel.auth.rotation`, which :meth:`SessionService.refresh` calls.
Sessions that a password change, reset or disable ends are revoked by
:meth:`SessionService.revoke_all` in the transaction that makes the change.

Revocation (logout, ``DELETE /sessions/{id}``, an admin, password change,
disable) is durable in the ``sessions`` row, committed before anyone is told;
after the commit :meth:`~keel.auth.SecurityState.sessions_ended` writes it
through to the caches and tells every worker and instance (SEC-36).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta

from sqlalchemy import select, update

from keel._clock import Clock
from keel._types import Origin
from keel.audit import Action, ActorType, AuditTrail, Result
from keel.auth.models import IP_MAX, USER_AGENT_MAX, AuthSession
from keel.auth.refresh import new_refresh_token
from keel.auth.rotation import RefreshRotation
from keel.auth.session_records import (
    REASON_ADMIN,
    REASON_LOGOUT,
    REASON_REVOKED,
    InvalidRefreshToken,
    Refreshed,
    RefreshScopeNotGranted,
    SessionInfo,
    as_uuid,
    clip,
    end_session,
    session_event,
    token_row,
)
from keel.auth.state import SecurityState
from keel.auth.subjects import StateLoader
from keel.db import Database, UnitOfWork
from keel.errors import NotFound
from keel.security.tokens import AccessTokenIssuer
from keel.settings import SessionSettings

__all__ = [
    "InvalidRefreshToken",
    "RefreshScopeNotGranted",
    "Refreshed",
    "SessionInfo",
    "SessionService",
    "session_is_live",
]

UserRevocationHook = Callable[[UnitOfWork, str], Awaitable[None]]
"""Run in the transaction of an admin's "end every session" with the user's id."""


class SessionService:
    """Sessions and refresh tokens. Also the accounts side's ``SessionHooks``."""

    def __init__(
        self,
        *,
        database: Database,
        audit: AuditTrail,
        state: SecurityState,
        settings: SessionSettings,
        clock: Clock,
        tokens: AccessTokenIssuer,
        subject_state: StateLoader,
        refresh_limit: Callable[[str], Awaitable[None]] | None = None,
        on_revoke_user: UserRevocationHook | None = None,
    ) -> None:
        """``refresh_limit`` is called with a session's id before each refresh of it and may
        raise ``TooManyRequests`` (a per-session refresh rate, ``RateLimiter.refresh``).
        ``on_revoke_user`` also runs, with the user's id, in the transaction where an admin
        ends a user's sessions (the accounts side ends the user's pending links there)."""
        if settings.idle_ttl > settings.absolute_ttl:
            raise ValueError("the idle lifetime cannot exceed the absolute lifetime")
        self._database = database
        self._audit = audit
        self._state_cache = state
        self._settings = settings
        self._clock = clock
        self._on_revoke_user = on_revoke_user
        self._rotation = RefreshRotation(
            database=database,
            audit=audit,
            state=state,
            settings=settings,
            clock=clock,
            tokens=tokens,
            subject_state=subject_state,
            refresh_limit=refresh_limit,
        )

    # --- SessionHooks -------------------------------------------------------------------------

    async def start(
        self,
        uow: UnitOfWork,
        *,
        user_id: str,
        session_id: str,
        scopes: frozenset[str],
        origin: Origin,
    ) -> str:
        """In the login's transaction: record the session; return its first refresh token."""
        now = self._clock.now()
        absolute = now + timedelta(seconds=self._settings.absolute_ttl)
        session = AuthSession(
            id=uuid.UUID(session_id),
            user_id=uuid.UUID(user_id),
            scopes=" ".join(sorted(scopes)),
            generation=0,
            created_at=now,
            last_used_at=now,
            idle_expires_at=min(now + timedelta(seconds=self._settings.idle_ttl), absolute),
            absolute_expires_at=absolute,
            revoked_at=None,
            revoked_reason=None,
            source_ip=clip(origin.source_ip, IP_MAX),
            user_agent=clip(origin.user_agent, USER_AGENT_MAX),
        )
        uow.session.add(session)
        token = new_refresh_token()
        uow.session.add(token_row(session.id, token, 0, now))
        await uow.flush()
        return token

    async def revoke_all(
        self, uow: UnitOfWork, *, user_id: str, reason: str, keep: str | None = None
    ) -> list[str]:
        """In the caller's transaction: end the user's live sessions but ``keep``; their ids."""
        user = as_uuid(user_id)
        if user is None:
            return []
        statement = (
            update(AuthSession)
            .where(AuthSession.user_id == user, AuthSession.revoked_at.is_(None))
            .values(revoked_at=self._clock.now(), revoked_reason=reason[:32])
            .returning(AuthSession.id)
            .execution_options(synchronize_session=False)
        )
        kept = as_uuid(keep) if keep is not None else None
        if kept is not None:
            statement = statement.where(AuthSession.id != kept)
        ended = [str(sid) for sid in (await uow.session.scalars(statement)).all()]
        if kept is not None:
            # The kept session proved the credentials just now (a password change made in it):
            # it belongs to the new generation (see ``_state_refusal``).
            await uow.session.execute(
                update(AuthSession)
                .where(AuthSession.id == kept, AuthSession.user_id == user)
                .values(created_at=self._clock.now())
                .execution_options(synchronize_session=False)
            )
        return ended

    async def revoked(self, user_id: str, session_ids: Sequence[str]) -> None:
        """After the commit: the access tokens of ``session_ids`` stop working everywhere."""
        await self._state_cache.sessions_ended(user_id, session_ids)

    async def refresh(
        self, token: str, origin: Origin, *, scopes: Collection[str] | None = None
    ) -> Refreshed:
        """Rotate ``token`` (see :meth:`keel.auth.rotation.RefreshRotation.refresh`)."""
        return await self._rotation.refresh(token, origin, scopes=scopes)

    # --- ending sessions ----------------------------------------------------------------------

    async def logout(
        self,
        user_id: str,
        session_id: str,
        origin: Origin,
    ) -> None:
        """End the caller's session; its access tokens stop at once."""
        sid, user = as_uuid(session_id), as_uuid(user_id)
        if sid is not None and user is not None:
            async with self._database.unit_of_work() as uow:
                session = await self._live_session(uow, user, sid, lock=True)
                if session is not None:
                    end_session(session, REASON_LOGOUT, self._clock.now())
                    await self._audit.record(
                        uow,
                        session_event(
                            self._audit, Action.SESSION_LOGOUT, Result.SUCCESS, session, origin
                        ),
                    )
        if user is not None:
            await self._state_cache.sessions_ended(str(user), [str(sid)])

    async def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        user = as_uuid(user_id)
        if user is None:
            return []
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            rows = (
                await uow.session.scalars(
                    select(AuthSession)
                    .where(
                        AuthSession.user_id == user,
                        AuthSession.revoked_at.is_(None),
                        AuthSession.idle_expires_at > now,
                        AuthSession.absolute_expires_at > now,
                    )
                    .order_by(AuthSession.created_at, AuthSession.id)
                )
            ).all()
        return [
            SessionInfo(
                id=str(row.id),
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=min(row.idle_expires_at, row.absolute_expires_at),
                source_ip=row.source_ip,
                user_agent=row.user_agent,
            )
            for row in rows
        ]

    async def revoke(self, user_id: str, session_id: str, origin: Origin) -> None:
        """End one of the user's own sessions; ``NotFound`` for anyone else's (SEC-47)."""
        sid, user = as_uuid(session_id), as_uuid(user_id)
        if sid is None or user is None:
            raise NotFound()
        async with self._database.unit_of_work() as uow:
            session = await self._live_session(uow, user, sid, lock=True)
            if session is None:
                raise NotFound()
            end_session(session, REASON_REVOKED, self._clock.now())
            await self._audit.record(
                uow,
                session_event(
                    self._audit,
                    Action.SESSION_LOGOUT,
                    Result.SUCCESS,
                    session,
                    origin,
                    details={"via": "session_revoke"},
                ),
            )
        await self._state_cache.sessions_ended(str(user), [str(sid)])

    async def revoke_user(self, admin_id: str, user_id: str, origin: Origin) -> int:
        """An admin ends every session of ``user_id``; returns how many ended."""
        user = as_uuid(user_id)
        if user is None:
            raise NotFound()
        async with self._database.unit_of_work() as uow:
            if self._on_revoke_user is not None:
                await self._on_revoke_user(uow, str(user))
            ids = await self.revoke_all(uow, user_id=str(user), reason=REASON_ADMIN)
            await self._audit.record(
                uow,
                self._audit.event(
                    Action.AUTHN_TOKEN_REVOKED,
                    Result.SUCCESS,
                    actor_type=ActorType.USER,
                    actor_id=admin_id,
                    target_type="user",
                    target_id=str(user),
                    origin=origin,
                    details={"sessions": len(ids), "via": "admin"},
                ),
            )
        await self.revoked(str(user), ids)
        return len(ids)

    # --- helpers ------------------------------------------------------------------------------

    async def _live_session(
        self, uow: UnitOfWork, user: uuid.UUID, sid: uuid.UUID, *, lock: bool
    ) -> AuthSession | None:
        query = select(AuthSession).where(
            AuthSession.id == sid,
            AuthSession.user_id == user,
            AuthSession.revoked_at.is_(None),
        )
        if lock:
            query = query.with_for_update()
        return await uow.session.scalar(query)


async def session_is_live(database: Database, user_id: str, session_id: str) -> bool:
    """Whether session ``session_id`` exists, belongs to ``user_id`` and has not ended.

    One indexed read of the record, for :class:`~keel.auth.SecurityState`: an
    id that is not a UUID, or names someone else's session, is not live.
    """
    sid, user = as_uuid(session_id), as_uuid(user_id)
    if sid is None or user is None:
        return False
    async with database.unit_of_work() as uow:
        row = (
            await uow.session.execute(
                select(AuthSession.revoked_at).where(
                    AuthSession.id == sid, AuthSession.user_id == user
                )
            )
        ).one_or_none()
    return row is not None and row.revoked_at is None
