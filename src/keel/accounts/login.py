"""``LoginService``: a login in two steps, credentials verified, then login completed.

:meth:`LoginService.verify_credentials` checks an address and a password and
answers a :class:`VerifiedLogin`; :meth:`LoginService.complete_login` turns
one into a session and an access token. A second factor goes between the two:
nothing is issued, started or audited as a success before ``complete_login``.

Enumeration and timing (SEC-10, SEC-11): every failure is one
:class:`~keel.accounts.errors.InvalidCredentials`, for an unknown address, a
wrong password, a disabled account and an unverified address alike, after
exactly one password verification on every path (see
:meth:`LoginService.verify_credentials`, the one place that rule lives). The
reason is in the audit row, never in the answer; a refusal takes at least the
failed-login floor (:mod:`keel.accounts.pacing`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from keel.accounts.access import LoginResult
from keel.accounts.attempts import PasswordAttempts
from keel.accounts.credentials import CredentialsChanged, ensure_still_current
from keel.accounts.deps import AccountDeps
from keel.accounts.errors import InvalidCredentials, ScopeNotGranted
from keel.accounts.hooks import SessionHooks
from keel.accounts.keys import account_keys
from keel.accounts.models import User
from keel.accounts.origin import Origin
from keel.accounts.pacing import Floors, floored_failure
from keel.accounts.repository import AccountRepository
from keel.accounts.state import UserState
from keel.audit import Action, Result
from keel.metrics import record_login
from keel.security.hashing import PasswordHasher
from keel.security.tokens import AccessTokenIssuer

__all__ = ["LoginService", "VerifiedLogin"]


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    """Credentials that passed :meth:`LoginService.verify_credentials`; not yet a login.

    ``user`` is the account as read before the password hash ran:
    :meth:`LoginService.complete_login` refuses it if its credentials changed
    since. The password is kept (never shown) only so that completing the
    login can upgrade an outdated hash (SEC-07); a second factor that waits
    across requests must not store it.
    """

    user: User
    password: str = field(repr=False, compare=False)

    @property
    def state(self) -> UserState:
        return UserState.of(self.user)


class LoginService:
    """Password logins: ``verify_credentials``, then ``complete_login``."""

    def __init__(
        self,
        deps: AccountDeps,
        *,
        hasher: PasswordHasher,
        attempts: PasswordAttempts,
        tokens: AccessTokenIssuer | None = None,
        sessions: SessionHooks | None = None,
    ) -> None:
        self._deps = deps
        #: The response floors (:mod:`keel.accounts.pacing`), from the account policy.
        self.floors: Floors = deps.settings.policy
        self._hasher = hasher
        self._attempts = attempts
        self._tokens = tokens
        self._sessions = sessions

    @floored_failure(InvalidCredentials)
    async def authenticate(self, email: str, password: str, origin: Origin) -> UserState:
        """Check credentials and audit the login; ``InvalidCredentials`` on any failure.

        Starts no session. ``TooManyRequests`` when the login guard refuses.
        """
        verified = await self.verify_credentials(email, password, origin)
        await self._succeeded(verified, origin, details={})
        return verified.state

    @floored_failure(InvalidCredentials)
    async def login(
        self,
        email: str,
        password: str,
        origin: Origin,
        *,
        scopes: Collection[str] | None = None,
    ) -> LoginResult:
        """Check credentials and issue an access token for a new session (both steps at once)."""
        if self._tokens is None:
            raise RuntimeError("AccountService was built without an access-token issuer")
        verified = await self.verify_credentials(email, password, origin)
        return await self.complete_login(verified, origin, scopes=scopes)

    @floored_failure(InvalidCredentials)
    async def verify_credentials(self, email: str, password: str, origin: Origin) -> VerifiedLogin:
        """Check ``email`` and ``password``; ``InvalidCredentials`` on any failure.

        The one-hash rule (SEC-11, SEC-12): every path through here pays
        exactly one password verification, and only this function verifies a
        login's password. An unknown address and a disabled account get a
        dummy verification (``PasswordHasher.dummy_verify``), which costs what
        a real one does; a malformed address is looked up as nobody, after no
        database read. The guard counts the attempt before the hash
        (``TooManyRequests`` when it refuses, and then nothing is verified)
        and is told the outcome. No database connection is held while the
        hash runs. A right password for an unverified address (when
        ``require_verified_email``) resets the failure count but is refused.
        """
        guard_key, key = account_keys(email)  # key None: not an address, answered like nobody
        user: User | None = None
        if key is not None:
            async with self._deps.database.unit_of_work() as uow:
                user = await AccountRepository(uow).by_email_key(key)
        target = str(user.id) if user is not None else None
        attempt = await self._attempts.reserve(
            guard_key, origin, target_id=target, operation="login"
        )
        # Exactly one verification on every path (SEC-11); no DB connection is held meanwhile.
        reason: str | None = None
        if user is None:
            await self._hasher.dummy_verify(password)
            reason = "unknown_user"
        elif not user.is_active:
            await self._hasher.dummy_verify(password)
            reason = "disabled"
        elif not await self._hasher.verify(user.password_hash, password):
            reason = "wrong_password"
        elif self._deps.settings.policy.require_verified_email and user.email_verified_at is None:
            reason = "email_unverified"
        if reason is not None and reason != "email_unverified":
            # Counted first: whatever happens to its audit record, the failure counts.
            await self._attempts.failed(guard_key, origin, attempt, target_id=target)
            await self._failed(user, reason, origin)
            raise InvalidCredentials()
        assert user is not None
        # The password was right (even when the address is unverified): the count starts over,
        # but only a verified account's login makes its source known.
        await self._attempts.succeeded(
            guard_key, origin, verified=user.email_verified_at is not None
        )
        if reason is not None:
            await self._failed(user, reason, origin)
            raise InvalidCredentials()
        return VerifiedLogin(user, password)

    async def complete_login(
        self,
        verified: VerifiedLogin,
        origin: Origin,
        *,
        scopes: Collection[str] | None = None,
    ) -> LoginResult:
        """Start a session for ``verified`` and issue its access token.

        ``scopes`` narrows the token to some of the account's roles; asking
        for one it lacks raises ``ScopeNotGranted``. With session hooks the
        session (and its refresh token) is created in the transaction that
        audits the login. ``InvalidCredentials`` when the account's
        credentials changed since they were verified (a reset, a change or a
        disable committed meanwhile undoes the login).
        """
        if self._tokens is None:
            raise RuntimeError("AccountService was built without an access-token issuer")
        user = verified.user
        granted = user.role_set
        if scopes is not None and not set(scopes) <= granted:
            await self._failed(user, "scope_not_granted", origin)
            raise ScopeNotGranted()
        chosen = frozenset(scopes) if scopes is not None else granted
        session_id = str(uuid.uuid4())
        issued = self._tokens.issue(
            subject=str(user.id), session_id=session_id, scopes=sorted(chosen)
        )
        refresh = await self._succeeded(
            verified,
            origin,
            details={"session_id": session_id, "jti": issued.jti},
            session=(session_id, chosen),
        )
        return LoginResult(
            state=verified.state,
            access_token=issued,
            session_id=session_id,
            scopes=chosen,
            expires_in=issued.expires_in(self._deps.clock.now()),
            refresh_token=refresh,
        )

    async def _failed(self, user: User | None, reason: str, origin: Origin) -> None:
        # One outcome for every credential failure, as the answer gives (SEC-10).
        record_login("unverified" if reason == "email_unverified" else "bad_credentials")
        await self._deps.events.refusal(
            self._deps.events.event(
                Action.AUTHN_LOGIN_FAIL,
                Result.FAILURE,
                origin,
                target_id=str(user.id) if user is not None else None,
                details={"reason": reason},
            ),
        )

    async def _succeeded(
        self,
        verified: VerifiedLogin,
        origin: Origin,
        *,
        details: dict[str, Any],
        session: tuple[str, frozenset[str]] | None = None,
    ) -> str | None:
        """Audit the login (and start ``session``: id, scopes); its refresh token, if any."""
        user = verified.user
        # SEC-07: a hash with outdated parameters (or legacy bcrypt) is upgraded now,
        # the only moment keel holds the password.
        upgraded = (
            await self._hasher.hash(verified.password)
            if self._hasher.needs_rehash(user.password_hash)
            else None
        )
        refresh: str | None = None
        try:
            async with self._deps.database.unit_of_work() as uow:
                if session is not None and self._sessions is not None:
                    session_id, scopes = session
                    refresh = await self._sessions.start(
                        uow,
                        user_id=str(user.id),
                        session_id=session_id,
                        scopes=scopes,
                        origin=origin,
                    )
                # The password was checked against ``user`` as read before the hash. Re-read
                # under the row lock, after the session's write (on SQLite that write takes the
                # database's lock): a reset, change or disable committed since undoes the login.
                repo = AccountRepository(uow)
                ensure_still_current(
                    user, await repo.by_id(user.id, for_update=True, no_key_update=True)
                )
                if upgraded is not None:
                    await repo.replace_hash(user.id, user.password_hash, upgraded)
                await self._deps.events.record(
                    uow,
                    self._deps.events.self_event(
                        Action.AUTHN_LOGIN_SUCCESS,
                        Result.SUCCESS,
                        origin,
                        user.id,
                        details={**details, "rehashed": upgraded is not None},
                    ),
                )
            record_login("success")
        except CredentialsChanged:
            await self._failed(user, "credentials_changed", origin)
            raise InvalidCredentials() from None
        return refresh
