"""Refresh-token rotation with reuse detection: ``RefreshRotation``.

Every refresh rotates (SEC-38):

1. The first statement locks the session row via the token's hash
   (PostgreSQL: ``SELECT … FOR NO KEY UPDATE``, the lock an ``UPDATE`` takes,
   without a row version that would make the next ``UPDATE`` wait for the
   user's row; SQLite: ``UPDATE … RETURNING``, the write lock), so refreshes
   of one family run one at a time and each sees the previous one committed.
2. The live token (``generation`` = the session's) is rotated: a successor is
   stored (hash only), the old row marked ``rotated_at`` and given the
   successor sealed under the old token (see :mod:`keel.auth.refresh`).
3. A token rotated less than ``refresh_grace`` seconds ago whose successor is
   still the live one is a concurrent retry: it gets the *same* successor, so
   there are never two live successors (SEC-40).
4. Any other rotated token is reuse (SEC-39): the whole family is revoked,
   ``authn_token_reuse`` is audited, and its access tokens stop working. The
   revocation commits even though the caller gets a 401.

Idle and absolute lifetimes (SEC-41): each refresh moves ``idle_expires_at``
to ``now + idle_ttl`` but never past ``absolute_expires_at``. A refresh also
checks the user's current state, read from the database: a disabled or deleted
user ends the session, and so does a session created before the user's
``tokens_valid_after`` (its login was checked against credentials that changed
since; the session a password change keeps is re-stamped by
:meth:`keel.auth.sessions.SessionService.revoke_all`).

Every refusal is one :class:`InvalidRefreshToken`; the reason is logged and,
where it is a security event, audited — never sent to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from keel._clock import Clock
from keel._logging import event
from keel._types import Origin
from keel.audit import Action, ActorType, AuditTrail, Result
from keel.auth.models import IP_MAX, AuthSession, RefreshTokenRow
from keel.auth.refresh import (
    is_token_shaped,
    new_refresh_token,
    seal_successor,
    token_hash,
    unseal_successor,
)
from keel.auth.session_records import (
    REASON_CREDENTIALS,
    REASON_EXPIRED,
    REASON_REUSE,
    REASON_SUBJECT,
    InvalidRefreshToken,
    Refreshed,
    RefreshScopeNotGranted,
    clip,
    end_session,
    scope_set,
    session_event,
    token_row,
)
from keel.auth.state import SecurityState
from keel.auth.subjects import StateLoader, SubjectState
from keel.db import Database, UnitOfWork
from keel.security.tokens import AccessTokenIssuer
from keel.settings import SessionSettings

__all__ = ["RefreshRotation"]

_log = logging.getLogger("keel.auth.sessions")


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


class RefreshRotation:
    """Rotates refresh tokens; ``SessionService.refresh`` hands every refresh here."""

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
        self._database = database
        self._audit = audit
        self._state_cache = state
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._subject_state = subject_state
        self._refresh_limit = refresh_limit

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
        family = (
            select(RefreshTokenRow.session_id)
            .where(RefreshTokenRow.token_hash == digest)
            .scalar_subquery()
        )
        if self._database.dialect == "postgresql":
            # A row lock that leaves the row as it is. Had this statement written a row version
            # of its own, the session's real UPDATE below would re-check the foreign key,
            # waiting for the user's row, which a disable, a password change or an admin's
            # revocation locks before it ends this very session: a deadlock.
            locked = await db.scalar(
                select(AuthSession.id)
                .where(AuthSession.id == family)
                .with_for_update(key_share=True)
            )
        else:
            # SQLite has no row locks: a write takes the database's write lock at once.
            locked = await db.scalar(
                update(AuthSession)
                .where(AuthSession.id == family)
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
            end_session(session, REASON_EXPIRED, now)
            await self._audit.record(
                uow,
                session_event(self._audit, Action.SESSION_EXPIRED, Result.FAILURE, session, origin),
            )
            return _Outcome(
                failure="expired", revoked=str(session.id), user_id=str(session.user_id)
            )
        if row.rotated_at is not None:
            return await self._retry_or_reuse(uow, session, row, token, origin, wanted, now)
        state = await self._state(session)
        refusal = self._state_refusal(state, session)
        if refusal is not None:
            # keel's own changes revoke sessions in their transaction; this catches what they
            # missed (a change made straight in the database). Ending it is audited like any
            # other end of a session.
            end_session(session, refusal, now)
            await self._audit.record(
                uow,
                session_event(
                    self._audit,
                    Action.AUTHN_TOKEN_REVOKED,
                    Result.SUCCESS,
                    session,
                    origin,
                    actor_type=ActorType.SYSTEM,
                    details={"reason": refusal, "via": "refresh", "user_id": str(session.user_id)},
                ),
            )
            return _Outcome.ended(refusal, session)
        assert state is not None
        granted = scope_set(session.scopes) & state.scopes
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
            session.source_ip = clip(origin.source_ip, IP_MAX)
        db.add(token_row(session.id, successor, session.generation, now))
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
            session_event(
                self._audit,
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
                granted = scope_set(session.scopes) & state.scopes
                if wanted is not None and not wanted <= granted:
                    return _Outcome(failure="scope_not_granted", scope_refused=True)
                event(_log, logging.INFO, "refresh_grace_retry", session_id=str(session.id))
                return _Outcome(result=self._refreshed(session, successor, wanted or granted, now))
        # A rotated token came back: someone holds a copy. End the whole family (SEC-39).
        end_session(session, REASON_REUSE, now)
        await self._audit.record(
            uow,
            session_event(
                self._audit,
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
        return Refreshed(
            access_token=issued,
            refresh_token=refresh_token,
            session_id=str(session.id),
            scopes=scopes,
            expires_in=issued.expires_in(now),
        )
