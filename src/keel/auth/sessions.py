"""``SessionService``: refresh-token families with rotation, reuse detection and revocation.

A login starts a *session* (one per login per device, SEC-42) with its first
refresh token (:meth:`SessionService.start`, called inside the login's
transaction). Every refresh rotates (SEC-38):

1. The first statement locks the session row (``UPDATE … RETURNING`` via the
   token's hash: a row lock on PostgreSQL, the write lock on SQLite), so
   refreshes of one family run one at a time and each sees the previous one
   committed.
2. The live token (``generation`` = the session's) is rotated: a successor is
   stored (hash only), the old row marked ``rotated_at`` and given the
   successor sealed under the old token (see :mod:`keel.auth.refresh`).
3. A token rotated less than ``refresh_grace`` seconds ago whose successor is
   still the live one is a concurrent retry: it gets the *same* successor, so
   there are never two live successors (SEC-40).
4. Any other rotated token is reuse (SEC-39): the whole family is revoked,
   ``authn_token_reuse`` is audited, and its access tokens are put on the
   deny-list. The revocation commits even though the caller gets a 401.

Idle and absolute lifetimes (SEC-41): each refresh moves ``idle_expires_at``
to ``now + idle_ttl`` but never past ``absolute_expires_at``. A refresh also
checks the user's current state (the cached :class:`SubjectState`): a
disabled or deleted user ends the session, and so does a session created
before the user's ``tokens_valid_after`` (its login was checked against
credentials that changed since; the session a password change keeps is
re-stamped by :meth:`SessionService.revoke_all`). Sessions that a password change,
reset or disable ends are revoked by :meth:`SessionService.revoke_all` in the
transaction that makes the change.

Revocation (logout, ``DELETE /sessions/{id}``, an admin, password change,
disable) is durable in the ``sessions`` row, committed before anyone is told;
after the commit :meth:`~keel.auth.SecurityState.sessions_ended` writes it
through to the caches and tells every worker and instance (SEC-36).

Every refusal is one :class:`InvalidRefreshToken`; the reason is logged and,
where it is a security event, audited — never sent to the client.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select, update

from keel._clock import Clock
from keel._logging import event
from keel._types import Origin
from keel.audit import Action, ActorType, AuditEvent, AuditTrail, Result
from keel.auth.models import IP_MAX, USER_AGENT_MAX, AuthSession, RefreshTokenRow
from keel.auth.refresh import (
    is_token_shaped,
    new_refresh_token,
    seal_successor,
    token_hash,
    unseal_successor,
)
from keel.auth.state import SecurityState
from keel.auth.subjects import StateLoader, SubjectState
from keel.db import Database, UnitOfWork
from keel.errors import NotFound, Unauthenticated
from keel.security.tokens import AccessTokenIssuer, IssuedToken
from keel.settings import SessionSettings

__all__ = [
    "InvalidRefreshToken",
    "RefreshScopeNotGranted",
    "Refreshed",
    "SessionInfo",
    "SessionService",
    "session_is_live",
]

_log = logging.getLogger("keel.auth.sessions")

# Why a session ended (``sessions.revoked_reason``).
REASON_LOGOUT: Final = "logout"
REASON_REVOKED: Final = "revoked_by_user"
REASON_ADMIN: Final = "revoked_by_admin"
REASON_REUSE: Final = "token_reuse"
REASON_EXPIRED: Final = "expired"
REASON_SUBJECT: Final = "subject_inactive"
REASON_CREDENTIALS: Final = "credentials_changed"


class InvalidRefreshToken(Unauthenticated):
    """The refresh token cannot be used (unknown, rotated, revoked or expired)."""

    code = "invalid_refresh_token"


class RefreshScopeNotGranted(Unauthenticated):
    """A refresh asked for a scope the session does not hold."""

    code = "invalid_scope"


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A successful refresh: a new access token and the session's live refresh token."""

    access_token: IssuedToken
    refresh_token: str = field(repr=False)
    session_id: str
    scopes: frozenset[str]
    expires_in: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session as its owner sees it."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    source_ip: str | None
    user_agent: str | None


@dataclass(slots=True)
class _Outcome:
    """What a refresh decided inside its transaction; acted on after the commit."""

    result: Refreshed | None = None
    failure: str | None = None
    revoked: str | None = None  # a session id to write through as ended
    user_id: str | None = None  # whose
    scope_refused: bool = False

    @classmethod
    def ended(cls, failure: str, session: AuthSession) -> _Outcome:
        """A refusal that ended ``session``: to be written through after the commit."""
        return cls(failure=failure, revoked=str(session.id), user_id=str(session.user_id))


UserRevocationHook = Callable[[UnitOfWork, str], Awaitable[None]]
"""Run in the transaction of an admin's "end every session" with the user's id."""


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def _scope_set(scopes: str) -> frozenset[str]:
    return frozenset(scopes.split())


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
    ) -> None:
        """``refresh_limit`` is called with a session's id before each refresh of it and may
        raise ``TooManyRequests`` (a per-session refresh rate, ``RateLimiter.refresh``)."""
        if settings.idle_ttl > settings.absolute_ttl:
            raise ValueError("the idle lifetime cannot exceed the absolute lifetime")
        self._database = database
        self._audit = audit
        self._state_cache = state
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._subject_state = subject_state
        self._refresh_limit = refresh_limit
        self._on_revoke_user: UserRevocationHook | None = None

    def set_user_revocation_hook(self, hook: UserRevocationHook | None) -> None:
        """Also run ``hook`` (user id) in the transaction where an admin ends a user's sessions.

        The accounts side ends the user's pending links there (``keel.api`` wires it).
        """
        self._on_revoke_user = hook

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
            source_ip=_clip(origin.source_ip, IP_MAX),
            user_agent=_clip(origin.user_agent, USER_AGENT_MAX),
        )
        uow.session.add(session)
        token = new_refresh_token()
        uow.session.add(self._token_row(session.id, token, 0, now))
        await uow.flush()
        return token

    async def revoke_all(
        self, uow: UnitOfWork, *, user_id: str, reason: str, keep: str | None = None
    ) -> list[str]:
        """In the caller's transaction: end the user's live sessions but ``keep``; their ids."""
        user = _as_uuid(user_id)
        if user is None:
            return []
        statement = (
            update(AuthSession)
            .where(AuthSession.user_id == user, AuthSession.revoked_at.is_(None))
            .values(revoked_at=self._clock.now(), revoked_reason=reason[:32])
            .returning(AuthSession.id)
            .execution_options(synchronize_session=False)
        )
        kept = _as_uuid(keep) if keep is not None else None
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

    # --- refresh ------------------------------------------------------------------------------

    async def refresh(
        self, token: str, origin: Origin, *, scopes: Collection[str] | None = None
    ) -> Refreshed:
        """Rotate ``token``: a new access token and the session's next refresh token.

        ``scopes`` narrows the new access token to some of the session's scopes.
        Raises :class:`InvalidRefreshToken` for every refusal (a reuse has
        already revoked the family when it does), :class:`RefreshScopeNotGranted`
        when ``scopes`` asks for more than the session holds.
        """
        if not is_token_shaped(token):
            raise InvalidRefreshToken()
        wanted = frozenset(scopes) if scopes is not None else None
        if self._refresh_limit is not None:
            # One indexed read, no write: a session over its rate costs no row, lock or audit.
            async with self._database.unit_of_work() as uow:
                session_id = await uow.session.scalar(
                    select(RefreshTokenRow.session_id).where(
                        RefreshTokenRow.token_hash == token_hash(token)
                    )
                )
            if session_id is not None:
                await self._refresh_limit(str(session_id))
        async with self._database.unit_of_work() as uow:
            outcome = await self._refresh_in(uow, token, origin, wanted)
        if outcome.revoked is not None and outcome.user_id is not None:
            await self._state_cache.sessions_ended(outcome.user_id, [outcome.revoked])
        if outcome.result is not None:
            return outcome.result
        event(_log, logging.INFO, "refresh_refused", reason=outcome.failure or "unknown")
        if outcome.scope_refused:
            raise RefreshScopeNotGranted()
        raise InvalidRefreshToken()

    async def _refresh_in(
        self, uow: UnitOfWork, token: str, origin: Origin, wanted: frozenset[str] | None
    ) -> _Outcome:
        digest = token_hash(token)
        db = uow.session
        # Lock first (see the module docstring): the session row of this token's family.
        locked = await db.scalar(
            update(AuthSession)
            .where(
                AuthSession.id
                == select(RefreshTokenRow.session_id)
                .where(RefreshTokenRow.token_hash == digest)
                .scalar_subquery()
            )
            .values(generation=AuthSession.generation)
            .returning(AuthSession.id)
            .execution_options(synchronize_session=False)
        )
        if locked is None:
            return _Outcome(failure="unknown_token")
        session = await db.get(AuthSession, locked, populate_existing=True)
        row = await db.scalar(select(RefreshTokenRow).where(RefreshTokenRow.token_hash == digest))
        if session is None or row is None:  # pragma: no cover - the lock found both
            return _Outcome(failure="unknown_token")
        now = self._clock.now()
        if session.revoked_at is not None:
            return _Outcome(failure="session_revoked")
        if now >= session.idle_expires_at or now >= session.absolute_expires_at:
            self._end(session, REASON_EXPIRED, now)
            await self._audit.record(
                uow, self._session_event(Action.SESSION_EXPIRED, Result.FAILURE, session, origin)
            )
            return _Outcome(
                failure="expired", revoked=str(session.id), user_id=str(session.user_id)
            )
        if row.rotated_at is not None:
            return await self._retry_or_reuse(uow, session, row, token, origin, wanted, now)
        state = await self._state(session)
        refusal = self._state_refusal(state, session)
        if refusal is not None:
            self._end(session, refusal, now)
            return _Outcome.ended(refusal, session)
        assert state is not None
        granted = _scope_set(session.scopes) & state.scopes
        if wanted is not None and not wanted <= granted:
            return _Outcome(failure="scope_not_granted", scope_refused=True)
        successor = new_refresh_token()
        row.rotated_at = now
        row.successor_sealed = seal_successor(token, successor, session_id=str(session.id))
        session.generation += 1
        session.last_used_at = now
        session.idle_expires_at = min(
            now + timedelta(seconds=self._settings.idle_ttl), session.absolute_expires_at
        )
        if origin.source_ip:
            session.source_ip = _clip(origin.source_ip, IP_MAX)
        db.add(self._token_row(session.id, successor, session.generation, now))
        # Older seals can never be used again (their successors are rotated): drop them.
        await db.execute(
            update(RefreshTokenRow)
            .where(
                RefreshTokenRow.session_id == session.id,
                RefreshTokenRow.generation < row.generation,
                RefreshTokenRow.successor_sealed.is_not(None),
            )
            .values(successor_sealed=None)
            .execution_options(synchronize_session=False)
        )
        await self._audit.record(
            uow,
            self._session_event(
                Action.SESSION_RENEWED,
                Result.SUCCESS,
                session,
                origin,
                details={"generation": session.generation},
            ),
        )
        return _Outcome(result=self._refreshed(session, successor, wanted or granted, now))

    async def _retry_or_reuse(
        self,
        uow: UnitOfWork,
        session: AuthSession,
        row: RefreshTokenRow,
        token: str,
        origin: Origin,
        wanted: frozenset[str] | None,
        now: datetime,
    ) -> _Outcome:
        assert row.rotated_at is not None
        grace = timedelta(seconds=self._settings.refresh_grace)
        if (
            row.generation == session.generation - 1
            and row.successor_sealed is not None
            and now - row.rotated_at < grace
        ):
            successor = unseal_successor(token, row.successor_sealed, session_id=str(session.id))
            state = await self._state(session)
            if successor is not None and self._state_refusal(state, session) is None:
                assert state is not None
                granted = _scope_set(session.scopes) & state.scopes
                if wanted is not None and not wanted <= granted:
                    return _Outcome(failure="scope_not_granted", scope_refused=True)
                event(_log, logging.INFO, "refresh_grace_retry", session_id=str(session.id))
                return _Outcome(result=self._refreshed(session, successor, wanted or granted, now))
        # A rotated token came back: someone holds a copy. End the whole family (SEC-39).
        self._end(session, REASON_REUSE, now)
        await self._audit.record(
            uow,
            self._session_event(
                Action.AUTHN_TOKEN_REUSE,
                Result.FAILURE,
                session,
                origin,
                actor_type=ActorType.ANONYMOUS,
                details={
                    "family": str(session.id),
                    "generation": row.generation,
                    "live_generation": session.generation,
                },
            ),
        )
        event(_log, logging.WARNING, "refresh_token_reuse", session_id=str(session.id))
        return _Outcome(
            failure="token_reuse", revoked=str(session.id), user_id=str(session.user_id)
        )

    async def _state(self, session: AuthSession) -> SubjectState | None:
        # A refresh writes to the database anyway: read the record, not a cache.
        return await self._subject_state(str(session.user_id))

    @staticmethod
    def _state_refusal(state: SubjectState | None, session: AuthSession) -> str | None:
        # A password change, reset or disable revokes sessions explicitly, in its own
        # transaction (``revoke_all``). A session created before the user's "tokens valid
        # after" (a login checked against older credentials that a revocation missed) ends
        # here; the one a password change keeps was moved into the new generation.
        if state is None or not state.active:
            return REASON_SUBJECT
        if session.created_at < state.tokens_valid_after:
            return REASON_CREDENTIALS
        return None

    def _refreshed(
        self, session: AuthSession, refresh_token: str, scopes: frozenset[str], now: datetime
    ) -> Refreshed:
        issued = self._tokens.issue(
            subject=str(session.user_id), session_id=str(session.id), scopes=sorted(scopes)
        )
        expires_in = max(0, math.ceil((issued.expires_at - now).total_seconds()))
        return Refreshed(
            access_token=issued,
            refresh_token=refresh_token,
            session_id=str(session.id),
            scopes=scopes,
            expires_in=expires_in,
        )

    # --- ending sessions ----------------------------------------------------------------------

    async def logout(
        self,
        user_id: str,
        session_id: str,
        origin: Origin,
    ) -> None:
        """End the caller's session; its access tokens stop at once."""
        sid, user = _as_uuid(session_id), _as_uuid(user_id)
        if sid is not None and user is not None:
            async with self._database.unit_of_work() as uow:
                session = await self._live_session(uow, user, sid, lock=True)
                if session is not None:
                    self._end(session, REASON_LOGOUT, self._clock.now())
                    await self._audit.record(
                        uow,
                        self._session_event(Action.SESSION_LOGOUT, Result.SUCCESS, session, origin),
                    )
        if user is not None:
            await self._state_cache.sessions_ended(str(user), [str(sid)])

    async def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        user = _as_uuid(user_id)
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
        sid, user = _as_uuid(session_id), _as_uuid(user_id)
        if sid is None or user is None:
            raise NotFound()
        async with self._database.unit_of_work() as uow:
            session = await self._live_session(uow, user, sid, lock=True)
            if session is None:
                raise NotFound()
            self._end(session, REASON_REVOKED, self._clock.now())
            await self._audit.record(
                uow,
                self._session_event(
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
        user = _as_uuid(user_id)
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

    @staticmethod
    def _end(session: AuthSession, reason: str, now: datetime) -> None:
        session.revoked_at = now
        session.revoked_reason = reason

    @staticmethod
    def _token_row(
        session_id: uuid.UUID, token: str, generation: int, now: datetime
    ) -> RefreshTokenRow:
        return RefreshTokenRow(
            id=uuid.uuid4(),
            session_id=session_id,
            token_hash=token_hash(token),
            generation=generation,
            created_at=now,
            rotated_at=None,
            successor_sealed=None,
        )

    def _session_event(
        self,
        action: Action,
        result: Result,
        session: AuthSession,
        origin: Origin,
        *,
        actor_type: ActorType = ActorType.USER,
        details: dict[str, object] | None = None,
    ) -> AuditEvent:
        return self._audit.event(
            action,
            result,
            actor_type=actor_type,
            actor_id=str(session.user_id) if actor_type is ActorType.USER else None,
            target_type="session",
            target_id=str(session.id),
            origin=origin,
            details=details,
        )


async def session_is_live(database: Database, user_id: str, session_id: str) -> bool:
    """Whether session ``session_id`` exists, belongs to ``user_id`` and has not ended.

    One indexed read of the record, for :class:`~keel.auth.SecurityState`: an
    id that is not a UUID, or names someone else's session, is not live.
    """
    sid, user = _as_uuid(session_id), _as_uuid(user_id)
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
