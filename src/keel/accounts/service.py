"""``AccountService``: the rules of accounts. Routes call it; it calls the repository.

Every write is audited in the unit of work that makes it (``trail.record``);
a refusal that changes nothing is audited in a transaction of its own
(``trail.record_alone``). Mail is staged in the durable ``Outbox`` in the
same unit of work (it commits or rolls back with the change); the change
listeners (``on_user_changed``) run after the commit.

Enumeration and timing (SEC-10..12):

- :meth:`register` answers the same whether the address is new or taken. It
  always runs the password policy and one hash first, so both paths cost the
  same; a taken address gets a notice sent to its real owner instead of an
  account. An address whose account was never verified is taken over by the
  newer registration (:func:`keel.accounts.credentials.replace_unverified`):
  its password, sessions and links are gone, and a fresh link is mailed.
- :meth:`login` raises one :class:`InvalidCredentials` for an unknown address,
  a wrong password, a disabled account and an unverified address, after
  exactly one password verification on every path (a dummy one when there
  is no usable hash). The reason is in the audit row, never in the answer.
- :meth:`forgot_password` does the same work and answers nothing whether or
  not the address has an account; only its owner gets mail.

Sessions and brute-force limits come through the protocols in
:mod:`keel.accounts.hooks` (both optional): the ``LoginGuard`` counts every
password check before it runs (login, password change, e-mail change and
deletion alike) and is told of each outcome; ``SessionHooks`` starts a
session in the login's transaction and
revokes sessions in the transaction of a password change, a reset, a
disable or a deletion, then (after the commit) makes their access tokens
fail at once. Every such change also moves ``tokens_valid_after`` on, so
access tokens from earlier seconds die even without session hooks.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn

from sqlalchemy.exc import IntegrityError

from keel._clock import Clock
from keel._logging import event
from keel.accounts.config import AccountSettings
from keel.accounts.credentials import (
    CredentialsChanged,
    end_pending_links,
    ensure_still_current,
    issued_before,
    move_generation,
    replace_unverified,
)
from keel.accounts.email import EmailAddress, InvalidEmail, normalise_email
from keel.accounts.errors import (
    CurrentPasswordRequired,
    EmailTaken,
    InvalidCredentials,
    OwnAdminAccess,
    ReauthenticationFailed,
    ResetTokenInvalid,
    ScopeNotGranted,
    UnknownRole,
    UserNotFound,
    VerificationFailed,
)
from keel.accounts.hooks import LoginGuard, SessionHooks
from keel.accounts.mail import Message
from keel.accounts.mailcap import MailBudget
from keel.accounts.messages import (
    email_change_attempt,
    email_change_requested,
    password_changed,
    password_reset,
    registration_attempt,
    verify_email,
)
from keel.accounts.models import EmailVerificationToken, PasswordResetToken, User
from keel.accounts.names import normalise_display_name
from keel.accounts.origin import NO_ORIGIN, CallerOrigin, Origin
from keel.accounts.outbox import Outbox
from keel.accounts.pacing import floored, floored_failure
from keel.accounts.refusals import record_refusal
from keel.accounts.repository import AccountRepository
from keel.accounts.roles import ROLE_ADMIN, ROLE_USER, format_roles
from keel.accounts.state import UserState, whole_second
from keel.accounts.views import UserView
from keel.audit import Action, ActorType, AuditEvent, AuditTrail, Result
from keel.db import Database, UnitOfWork
from keel.errors import TooManyRequests, Unauthenticated
from keel.metrics import record_lockout, record_login, record_rate_limit_refusal
from keel.security.hashing import PasswordHasher
from keel.security.opaque import is_opaque_token, new_opaque_token, opaque_token_hash
from keel.security.passwords import PasswordPolicy
from keel.security.tokens import AccessTokenIssuer, IssuedToken

__all__ = [
    "NO_ORIGIN",
    "UNSET",
    "AccountService",
    "CallerOrigin",
    "LoginResult",
    "Origin",
    "UserChanged",
]

_log = logging.getLogger("keel.accounts")

#: ≥ 128 bits (ASVS 11.5.1): 32 random bytes, base64url without padding.
_CLI_ACTOR: Final = "keel-cli"

UserChanged = Callable[[str], Awaitable[None]]
"""Called with a user id after each commit that changes what a token or a view depends on."""


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET
"""``update_profile``'s "leave this field alone" (``None`` clears the display name)."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login (or password change): a fresh access token (never logged).

    ``refresh_token`` is the new session's first refresh token when session
    hooks are attached and a session was started; ``None`` otherwise.
    """

    state: UserState
    access_token: IssuedToken
    session_id: str
    scopes: frozenset[str]
    expires_in: int
    refresh_token: str | None = None


def _account_keys(email: str) -> tuple[str, str | None]:
    """The login guard's key for ``email``, and its e-mail key (``None``: not an address).

    Unknown and known addresses are limited alike; input that is not an
    address is limited by its stripped, lower-cased form.
    """
    try:
        key = normalise_email(email).key
    except InvalidEmail:
        return email.strip().lower(), None
    return key, key


class AccountService:
    """Registration, verification, login, profile, passwords, deletion and admin changes.

    Each with its audit events. ``sessions`` and ``guard`` (see
    :mod:`keel.accounts.hooks`) are optional and can be attached later with
    :meth:`set_session_hooks` and :meth:`set_guard`.
    """

    def __init__(
        self,
        *,
        database: Database,
        audit: AuditTrail,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        settings: AccountSettings,
        clock: Clock,
        tokens: AccessTokenIssuer | None = None,
        outbox: Outbox | None = None,
        on_user_changed: UserChanged | None = None,
        sessions: SessionHooks | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._database = database
        self._audit = audit
        self._hasher = hasher
        self._policy = policy
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._outbox = outbox
        self._sessions = sessions
        self._guard = guard
        self._mail_budget: MailBudget | None = None
        self._listeners: list[UserChanged] = []
        if on_user_changed is not None:
            self._listeners.append(on_user_changed)

    @property
    def settings(self) -> AccountSettings:
        return self._settings

    @property
    def floors(self) -> AccountSettings:
        """The response floors (:mod:`keel.accounts.pacing`), from the settings."""
        return self._settings

    @property
    def hasher(self) -> PasswordHasher:
        return self._hasher

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox

    def add_change_listener(self, listener: UserChanged) -> None:
        """Also call ``listener`` after every committed change to a user."""
        self._listeners.append(listener)

    def set_session_hooks(self, sessions: SessionHooks | None) -> None:
        """Attach (or detach) the sessions: logins start one, credential changes revoke them."""
        self._sessions = sessions

    def set_guard(self, guard: LoginGuard | None) -> None:
        """Attach (or detach) the brute-force limits asked before every password check."""
        self._guard = guard

    def set_mail_budget(self, budget: MailBudget | None) -> None:
        """Attach (or detach) the per-recipient mail limit (``keel.accounts.mailcap``)."""
        self._mail_budget = budget

    # --- registration and verification -----------------------------------------------------

    @floored()
    async def register(
        self, email: str, password: str, display_name: str | None, origin: Origin
    ) -> None:
        """Create an unverified account and mail a link; never says whether the address was free.

        Raises ``InvalidEmail``, ``InvalidDisplayName`` or ``PasswordRejected``
        (each decided by the input alone, never by the database).
        """
        address = normalise_email(email)
        name = normalise_display_name(display_name) if display_name is not None else None
        self._policy.check(password, context=self._context(address, name))
        # Hash before looking: a taken address costs what a new one costs (SEC-12).
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        replaced: list[str] | None = None
        try:
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                existing = await repo.by_email_key(address.key)
                if existing is None:
                    messages = await self._create(
                        uow, repo, address, name, password_hash, now, origin
                    )
                else:
                    messages, replaced = await self._register_taken(
                        uow, repo, existing, (address, name, password_hash), now, origin
                    )
                self._stage(uow, messages)
        except IntegrityError:
            # Another registration took the address between our read and our insert.
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                existing = await repo.by_email_key(address.key)
                if existing is None:
                    raise
                messages, replaced = await self._register_taken(
                    uow, repo, existing, (address, name, password_hash), now, origin
                )
                self._stage(uow, messages)
        if replaced is not None and existing is not None:
            # The unverified account's earlier credentials are gone: so are their sessions.
            await self._sessions_revoked(str(existing.id), replaced)
            await self._forget_known_sources(address.key)
            await self._changed(str(existing.id), None)

    async def _create(
        self,
        uow: UnitOfWork,
        repo: AccountRepository,
        address: EmailAddress,
        name: str | None,
        password_hash: str,
        now: datetime,
        origin: Origin,
    ) -> list[Message]:
        user = User(
            id=uuid.uuid4(),
            email=address.address,
            email_key=address.key,
            email_verified_at=None,
            display_name=name,
            password_hash=password_hash,
            roles=format_roles({ROLE_USER}),
            is_active=True,
            tokens_valid_after=whole_second(now),
            created_at=now,
            updated_at=now,
        )
        repo.add(user)
        await uow.flush()  # a concurrent registration of the address fails here
        token = self._new_token(repo, user, address, now)
        await self._audit.record(
            uow,
            self._self_event(
                Action.USER_CREATED,
                Result.SUCCESS,
                origin,
                user.id,
                details={"roles": [ROLE_USER], "via": "register"},
            ),
        )
        return [
            verify_email(
                self._settings, to=address.address, token=token, user_id=str(user.id), change=False
            )
        ]

    async def _register_taken(
        self,
        uow: UnitOfWork,
        repo: AccountRepository,
        existing: User,
        registration: tuple[EmailAddress, str | None, str],
        now: datetime,
        origin: Origin,
    ) -> tuple[list[Message], list[str] | None]:
        """The address has an account: a notice, or (never verified) the account is replaced.

        Returns the mail and, when an unverified account was replaced, the
        ids of the sessions that ended (``None`` otherwise).
        """
        user_id = str(existing.id)
        user = await repo.by_id(existing.id, for_update=True)  # re-read under the row lock
        details: dict[str, Any] = {"reason": "email_taken", "via": "register"}
        revoked: list[str] | None = None
        if user is not None and user.email_verified_at is None and user.is_active:
            # Nobody proved the mailbox yet: the newest registrant's credentials win, and
            # only the link mailed now can verify them (account pre-hijacking).
            address, name, password_hash = registration
            await replace_unverified(repo, user, address, password_hash, name, now)
            await uow.flush()
            revoked = await self._revoke_sessions(uow, user_id, reason="reregistered")
            token = self._new_token(repo, user, address, now)
            message = verify_email(
                self._settings, to=user.email, token=token, user_id=user_id, change=False
            )
            details.update(unverified_replaced=True, sessions_revoked=len(revoked))
        else:
            message = registration_attempt(self._settings, to=existing.email, user_id=user_id)
        await self._audit.record(
            uow,
            self._event(
                Action.USER_CREATED,
                Result.FAILURE,
                origin,
                target_id=user_id,
                details=details,
            ),
        )
        return [message], revoked

    def _new_token(
        self, repo: AccountRepository, user: User, address: EmailAddress, now: datetime
    ) -> str:
        token = new_opaque_token()
        repo.add_token(
            EmailVerificationToken(
                id=uuid.uuid4(),
                user_id=user.id,
                token_hash=opaque_token_hash(token),
                email=address.address,
                email_key=address.key,
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.verification_ttl),
                used_at=None,
            )
        )
        return token

    async def verify_email(self, token: str, origin: Origin) -> None:
        """Redeem a verification token: single use, unexpired, found by its SHA-256 only.

        Raises ``VerificationFailed`` (or ``EmailTaken`` when an address change
        lost a race for the address); the reason is audited.
        """
        now = self._clock.now()
        reason: str | None = None
        target: str | None = None
        view: UserView | None = None
        try:
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                row = (
                    await repo.token_by_hash(opaque_token_hash(token))
                    if is_opaque_token(token)
                    else None
                )
                if row is None:
                    reason = "unknown"
                elif row.used_at is not None:
                    reason, target = "used", str(row.user_id)
                elif row.expires_at <= now:
                    reason, target = "expired", str(row.user_id)
                else:
                    target = str(row.user_id)
                    user = await repo.by_id(row.user_id, for_update=True)
                    if user is None or not user.is_active:
                        reason = "account_unavailable"
                    elif issued_before(row.created_at, user):
                        reason = "outdated"  # a newer credential generation began since
                    elif not await repo.consume_token(row.id, now):
                        reason = "used"  # a concurrent request redeemed it first
                    elif row.email_key != user.email_key and await repo.email_key_taken(
                        row.email_key, other_than=user.id
                    ):
                        reason = "email_taken"
                    else:
                        view = await self._apply_verification(uow, repo, user, row, now, origin)
        except IntegrityError:
            reason = "email_taken"  # the address was taken while this change committed
        if reason is not None:
            await self._record_alone(
                self._event(
                    Action.AUTHN_EMAIL_VERIFIED,
                    Result.FAILURE,
                    origin,
                    target_id=target,
                    details={"reason": reason},
                )
            )
            if reason == "email_taken":
                raise EmailTaken()
            raise VerificationFailed()
        assert view is not None
        await self._changed(view.id, view)

    async def _apply_verification(
        self,
        uow: UnitOfWork,
        repo: AccountRepository,
        user: User,
        row: EmailVerificationToken,
        now: datetime,
        origin: Origin,
    ) -> UserView:
        change = row.email_key != user.email_key
        if change:
            user.email = row.email
            user.email_key = row.email_key
            await repo.delete_reset_tokens(user.id)  # mailed to the old address
        user.email_verified_at = now
        user.updated_at = now
        await repo.delete_unused_tokens(user.id)
        await uow.flush()
        await self._audit.record(
            uow,
            self._self_event(
                Action.AUTHN_EMAIL_VERIFIED,
                Result.SUCCESS,
                origin,
                user.id,
                details={"change": change},
            ),
        )
        return UserView.of(user)

    # --- login --------------------------------------------------------------------------------

    @floored_failure(InvalidCredentials)
    async def authenticate(self, email: str, password: str, origin: Origin) -> UserState:
        """Check credentials and audit the login; ``InvalidCredentials`` on any failure.

        Starts no session. ``TooManyRequests`` when the login guard refuses.
        """
        user = await self._check_credentials(email, password, origin)
        await self._login_succeeded(user, password, origin, details={})
        return UserState.of(user)

    @floored_failure(InvalidCredentials)
    async def login(
        self,
        email: str,
        password: str,
        origin: Origin,
        *,
        scopes: Collection[str] | None = None,
    ) -> LoginResult:
        """Check credentials and issue an access token for a new session.

        ``scopes`` narrows the token to some of the account's roles; asking
        for one it lacks raises ``ScopeNotGranted`` (after the password check).
        With session hooks the session (and its refresh token) is created in
        the transaction that audits the login. ``TooManyRequests`` when the
        login guard refuses the attempt (before any password is checked).
        """
        if self._tokens is None:
            raise RuntimeError("AccountService was built without an access-token issuer")
        user = await self._check_credentials(email, password, origin)
        granted = user.role_set
        if scopes is not None and not set(scopes) <= granted:
            await self._login_failed(user, "scope_not_granted", origin)
            raise ScopeNotGranted()
        chosen = frozenset(scopes) if scopes is not None else granted
        session_id = str(uuid.uuid4())
        issued = self._tokens.issue(
            subject=str(user.id), session_id=session_id, scopes=sorted(chosen)
        )
        refresh = await self._login_succeeded(
            user,
            password,
            origin,
            details={"session_id": session_id, "jti": issued.jti},
            session=(session_id, chosen),
        )
        return LoginResult(
            state=UserState.of(user),
            access_token=issued,
            session_id=session_id,
            scopes=chosen,
            expires_in=issued.expires_in(self._clock.now()),
            refresh_token=refresh,
        )

    async def _check_credentials(self, email: str, password: str, origin: Origin) -> User:
        guard_key, key = _account_keys(email)  # key None: not an address, answered like nobody
        user: User | None = None
        if key is not None:
            async with self._database.unit_of_work() as uow:
                user = await AccountRepository(uow).by_email_key(key)
        target = str(user.id) if user is not None else None
        attempt = await self._guard_check(guard_key, origin, target_id=target, operation="login")
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
        elif self._settings.require_verified_email and user.email_verified_at is None:
            reason = "email_unverified"
        if reason is not None and reason != "email_unverified":
            # Counted first: whatever happens to its audit record, the failure counts.
            await self._count_failure(guard_key, origin, attempt, target_id=target)
            await self._login_failed(user, reason, origin)
            raise InvalidCredentials()
        assert user is not None
        # The password was right (even when the address is unverified): the count starts over,
        # but only a verified account's login makes its source known.
        if self._guard is not None:
            await self._guard.succeeded(
                guard_key, origin.source_ip, remember_source=user.email_verified_at is not None
            )
        if reason is not None:
            await self._login_failed(user, reason, origin)
            raise InvalidCredentials()
        return user

    async def _guard_check(
        self,
        guard_key: str,
        origin: Origin,
        *,
        target_id: str | None,
        operation: str,
        actor_id: str | None = None,
    ) -> int:
        """Count the attempt with the guard before its password check; its failure number.

        A refusal is audited, then re-raised.
        """
        if self._guard is None:
            return 0
        try:
            return await self._guard.reserve(guard_key, origin.source_ip)
        except TooManyRequests as exc:
            locked = exc.limit == "account"
            action = Action.AUTHN_LOGIN_LOCK if locked else Action.EXCESS_RATE_LIMIT_EXCEEDED
            if not locked:
                record_rate_limit_refusal(operation)
            if operation == "login":
                record_login("locked" if locked else "throttled")
            await record_refusal(
                self._audit,
                self._event(
                    action,
                    Result.FAILURE,
                    origin,
                    actor_type=ActorType.USER if actor_id is not None else ActorType.ANONYMOUS,
                    actor_id=actor_id,
                    target_id=target_id,
                    details={
                        "limit": exc.limit,
                        "retry_after": exc.retry_after,
                        "operation": operation,
                    },
                ),
            )
            raise

    async def _count_failure(
        self, guard_key: str, origin: Origin, attempt: int, *, target_id: str | None
    ) -> None:
        """Tell the guard the reserved ``attempt`` failed; audit the one reaching the threshold."""
        if self._guard is None:
            return
        failures = await self._guard.failed(guard_key, origin.source_ip, attempt)
        if failures == self._settings.lockout_threshold:
            record_lockout()
            await record_refusal(
                self._audit,
                self._event(
                    Action.AUTHN_LOGIN_FAIL_MAX,
                    Result.FAILURE,
                    origin,
                    target_id=target_id,
                    details={"failures": failures},
                ),
            )

    async def _login_failed(self, user: User | None, reason: str, origin: Origin) -> None:
        # One outcome for every credential failure, as the answer gives (SEC-10).
        record_login("unverified" if reason == "email_unverified" else "bad_credentials")
        await record_refusal(
            self._audit,
            self._event(
                Action.AUTHN_LOGIN_FAIL,
                Result.FAILURE,
                origin,
                target_id=str(user.id) if user is not None else None,
                details={"reason": reason},
            ),
        )

    async def _login_succeeded(
        self,
        user: User,
        password: str,
        origin: Origin,
        *,
        details: dict[str, Any],
        session: tuple[str, frozenset[str]] | None = None,
    ) -> str | None:
        """Audit the login (and start ``session``: id, scopes); its refresh token, if any."""
        # SEC-07: a hash with outdated parameters (or legacy bcrypt) is upgraded now,
        # the only moment keel holds the password.
        upgraded = (
            await self._hasher.hash(password)
            if self._hasher.needs_rehash(user.password_hash)
            else None
        )
        refresh: str | None = None
        try:
            async with self._database.unit_of_work() as uow:
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
                await self._audit.record(
                    uow,
                    self._self_event(
                        Action.AUTHN_LOGIN_SUCCESS,
                        Result.SUCCESS,
                        origin,
                        user.id,
                        details={**details, "rehashed": upgraded is not None},
                    ),
                )
            record_login("success")
        except CredentialsChanged:
            await self._login_failed(user, "credentials_changed", origin)
            raise InvalidCredentials() from None
        return refresh

    # --- profile ------------------------------------------------------------------------------

    async def profile(self, user_id: str) -> UserView:
        """The user's view, read from the database.

        A bearer-authenticated ``GET /users/me`` does not come here: its body
        travels in the subject's cached record (``keel.auth.SubjectRecord``).
        """
        async with self._database.unit_of_work() as uow:
            user = await AccountRepository(uow).by_id(user_id)
        if user is None:
            raise Unauthenticated()  # the token's subject no longer exists
        return UserView.of(user)

    @floored(when="email")
    async def update_profile(
        self,
        user_id: str,
        origin: Origin,
        *,
        display_name: str | _Unset | None = UNSET,
        email: str | None = None,
        current_password: str | None = None,
    ) -> UserView:
        """Change the display name, or request an address change (re-verified, old one told).

        An address change needs the current password (ASVS 7.5.1) and takes
        effect when the link sent to the new address is used; whether the new
        address belongs to someone else is never revealed (its owner is told).
        """
        name = (
            display_name
            if display_name is UNSET or display_name is None
            else normalise_display_name(display_name)
        )
        address = normalise_email(email) if email is not None else None
        current = await self._existing(user_id)
        moving = address is not None and address.key != current.email_key
        if moving:
            if current_password is None:
                raise CurrentPasswordRequired()
            await self._reauthenticate(
                current, current_password, origin, Action.USER_UPDATED, operation="email_change"
            )
        now = self._clock.now()
        messages: list[Message] = []
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise Unauthenticated()
            changed: list[str] = []
            if name is not UNSET and name != user.display_name:
                user.display_name = name
                changed.append("display_name")
            if address is not None and address.key == user.email_key:
                if address.address != user.email:
                    user.email = address.address  # same mailbox, another spelling
                    changed.append("email")
                if await repo.delete_change_links(user.id, keep_key=user.email_key):
                    changed.append("email_change_cancelled")  # back to the current address
            elif address is not None:
                changed.append("email_change_requested")
                messages.extend(await self._request_email_change(repo, user, address, now))
            if not changed:
                return UserView.of(user)
            user.updated_at = now
            await uow.flush()
            await self._audit.record(
                uow,
                self._self_event(
                    Action.USER_UPDATED,
                    Result.SUCCESS,
                    origin,
                    user.id,
                    details={"fields": changed},
                ),
            )
            self._stage(uow, messages)
            view = UserView.of(user)
        await self._changed(view.id, view)
        return view

    async def _request_email_change(
        self, repo: AccountRepository, user: User, address: EmailAddress, now: datetime
    ) -> list[Message]:
        user_id = str(user.id)
        notice = email_change_requested(self._settings, to=user.email, user_id=user_id)
        # A reset link mailed to the current address would outlive the change (as Django).
        await repo.delete_reset_tokens(user.id)
        owner = await repo.by_email_key(address.key)
        if owner is not None:
            return [notice, email_change_attempt(self._settings, to=owner.email, user_id=user_id)]
        await repo.delete_unused_tokens(user.id)  # a newer request replaces older links
        token = self._new_token(repo, user, address, now)
        link = verify_email(
            self._settings, to=address.address, token=token, user_id=user_id, change=True
        )
        return [notice, link]

    async def delete_account(self, user_id: str, password: str, origin: Origin) -> None:
        """Delete the account after re-authentication with its password.

        Its tokens die with the row: ``load_user_state`` answers ``None`` and
        the listeners are told; its sessions are revoked in the same
        transaction. Verification and reset tokens go by ``ON DELETE CASCADE``.
        """
        current = await self._existing(user_id)
        await self._reauthenticate(
            current, password, origin, Action.USER_DELETED, operation="account_deletion"
        )
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise Unauthenticated()
            revoked = await self._revoke_sessions(uow, str(user.id), reason="deleted")
            await repo.delete(user)
            await self._audit.record(
                uow,
                self._self_event(
                    Action.USER_DELETED,
                    Result.SUCCESS,
                    origin,
                    user.id,
                    details={"via": "self"},
                ),
            )
        await self._sessions_revoked(str(current.id), revoked)
        await self._changed(str(current.id), None)

    # --- passwords ----------------------------------------------------------------------------

    async def change_password(
        self,
        user_id: str,
        current_password: str,
        new_password: str,
        origin: Origin,
        *,
        keep_session: str | None = None,
        scopes: Collection[str] | None = None,
    ) -> LoginResult:
        """Replace the password after checking the current one (SEC-08); a fresh access token.

        The guard is asked first and told of the outcome (a wrong current
        password counts like a failed login: ``ReauthenticationFailed``, 400).
        In one transaction: the new hash, ``tokens_valid_after`` moved on,
        pending reset links dropped, every session but ``keep_session``
        revoked. The owner is mailed. The returned token is for
        ``keep_session`` (a new session id when ``None``), limited to
        ``scopes`` (the caller's) and the account's current roles, so the
        caller's session goes on while tokens from earlier seconds die.
        """
        if self._tokens is None:
            raise RuntimeError("AccountService was built without an access-token issuer")
        current = await self._existing(user_id)
        target = str(current.id)
        await self._reauthenticate(
            current,
            current_password,
            origin,
            Action.AUTHN_PASSWORD_CHANGE_FAIL,
            operation="password_change",
        )
        address = EmailAddress(address=current.email, key=current.email_key)
        self._policy.check(new_password, context=self._context(address, current.display_name))
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(current.id, for_update=True)
            if user is None or not user.is_active:
                raise Unauthenticated()
            if user.password_hash != current.password_hash:
                # Changed (or reset) meanwhile: the password checked above is no longer current.
                raise ReauthenticationFailed()
            self._set_password(user, new_hash, now)
            # A pending reset or e-mail-change link would undo this (or hand the account on).
            await end_pending_links(repo, user)
            await uow.flush()
            revoked = await self._revoke_sessions(
                uow, target, reason="password_change", keep=keep_session
            )
            await self._audit.record(
                uow,
                self._self_event(
                    Action.AUTHN_PASSWORD_CHANGE,
                    Result.SUCCESS,
                    origin,
                    target,
                    details={"via": "change", "sessions_revoked": len(revoked)},
                ),
            )
            state, view = UserState.of(user), UserView.of(user)
            self._stage(
                uow, [password_changed(self._settings, to=view.email, user_id=view.id, reset=False)]
            )
        await self._sessions_revoked(view.id, revoked)
        await self._forget_known_sources(current.email_key)
        await self._changed(view.id, view)
        chosen = state.scopes if scopes is None else state.scopes & frozenset(scopes)
        session_id = keep_session if keep_session is not None else str(uuid.uuid4())
        issued = self._tokens.issue(subject=target, session_id=session_id, scopes=sorted(chosen))
        return LoginResult(
            state=state,
            access_token=issued,
            session_id=session_id,
            scopes=chosen,
            expires_in=issued.expires_in(self._clock.now()),
        )

    @floored()
    async def forgot_password(self, email: str, origin: Origin) -> None:
        """Mail a reset link to the owner of ``email``, if it has an active account (SEC-25/26).

        Never raises for an unknown, disabled or malformed address, and does
        the same work either way (a token is made and hashed, one lookup, one
        audit row; only the owner's path also replaces their older links), so
        the answer says nothing about the address (SEC-12). The link is built
        on ``KEEL_PUBLIC_URL`` only, the token in its fragment; only the
        token's SHA-256 is stored. A newer request makes older links fail.
        """
        _guard_key, key = _account_keys(email)
        token = new_opaque_token()
        digest = opaque_token_hash(token)
        now = self._clock.now()
        messages: list[Message] = []
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            # Locked: an e-mail change committing meanwhile is seen (its address is gone).
            user = await repo.by_email_key(key, for_update=True) if key is not None else None
            # Over the owner's mail limit: their last link stands and nothing is sent.
            capped = user is not None and user.is_active and not await self._mail_taken(user)
            if user is not None and user.is_active and not capped:
                await repo.delete_reset_tokens(user.id)
                repo.add_reset_token(
                    PasswordResetToken(
                        id=uuid.uuid4(),
                        user_id=user.id,
                        token_hash=digest,
                        created_at=now,
                        expires_at=now + timedelta(seconds=self._settings.password_reset_ttl),
                        used_at=None,
                    )
                )
                result, details = Result.SUCCESS, None
                messages.append(
                    password_reset(self._settings, to=user.email, token=token, user_id=str(user.id))
                )
            else:
                reason = "unknown_user" if user is None else "account_unavailable"
                result, details = Result.FAILURE, {"reason": "mail_limit" if capped else reason}
            await self._audit.record(
                uow,
                self._event(
                    Action.AUTHN_PASSWORD_RESET_REQUEST,
                    result,
                    origin,
                    target_id=str(user.id) if user is not None else None,
                    details=details,
                ),
            )
            self._stage(uow, messages)

    async def reset_password(self, token: str, new_password: str, origin: Origin) -> None:
        """Set a new password with a reset token (SEC-25/27, SEC-15); never logs in.

        The token must be well-formed, known (by its SHA-256), unused and
        unexpired, and its account active; otherwise ``ResetTokenInvalid``
        (400) and the reason is audited. A password the policy refuses leaves
        the token usable. In one transaction: the new hash, the token used and
        the user's others deleted, ``tokens_valid_after`` moved on, the address
        marked verified (the mailbox is proven), every session revoked. After
        the commit the guard forgets the account's failures (a reset ends a
        lockout) and the owner is mailed.
        """
        now = self._clock.now()
        row: PasswordResetToken | None = None
        user: User | None = None
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            if is_opaque_token(token):
                row = await repo.reset_token_by_hash(opaque_token_hash(token))
            if row is not None:
                user = await repo.by_id(row.user_id)
        reason = self._reset_refusal(row, user, now)
        if reason is not None:
            await self._reset_failed(reason, row, origin)
        assert row is not None
        assert user is not None
        address = EmailAddress(address=user.email, key=user.email_key)
        self._policy.check(new_password, context=self._context(address, user.display_name))
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(row.user_id, for_update=True)
            reason = self._reset_refusal(row, user, now)
            if reason is None and not await repo.consume_reset_token(row.id, now):
                reason = "used"  # a concurrent request redeemed it first
            if reason is None:
                assert user is not None
                verified = user.email_verified_at is None
                self._set_password(user, new_hash, now)
                if verified:
                    user.email_verified_at = now
                await repo.delete_reset_tokens(user.id, except_id=row.id)
                await repo.delete_unused_tokens(user.id)  # e-mail-change links too
                await uow.flush()
                revoked = await self._revoke_sessions(uow, str(user.id), reason="password_reset")
                await self._audit.record(
                    uow,
                    self._self_event(
                        Action.AUTHN_PASSWORD_CHANGE,
                        Result.SUCCESS,
                        origin,
                        user.id,
                        details={
                            "via": "reset",
                            "sessions_revoked": len(revoked),
                            "email_verified": verified,
                        },
                    ),
                )
                view, guard_key = UserView.of(user), user.email_key
                self._stage(
                    uow,
                    [password_changed(self._settings, to=view.email, user_id=view.id, reset=True)],
                )
        if reason is not None:
            await self._reset_failed(reason, row, origin)
        await self._sessions_revoked(view.id, revoked)
        if self._guard is not None:
            await self._after_commit("login_guard_clear", self._guard.clear(guard_key))
        await self._forget_known_sources(guard_key)
        await self._changed(view.id, view)

    @staticmethod
    def _reset_refusal(
        row: PasswordResetToken | None, user: User | None, now: datetime
    ) -> str | None:
        if row is None:
            return "unknown"
        if row.used_at is not None:
            return "used"
        if row.expires_at <= now:
            return "expired"
        if user is None or not user.is_active:
            return "account_unavailable"
        if issued_before(row.created_at, user):
            return "outdated"  # a newer credential generation began since
        return None

    async def _reset_failed(
        self, reason: str, row: PasswordResetToken | None, origin: Origin
    ) -> NoReturn:
        await self._record_alone(
            self._event(
                Action.AUTHN_PASSWORD_CHANGE_FAIL,
                Result.FAILURE,
                origin,
                target_id=str(row.user_id) if row is not None else None,
                details={"via": "reset", "reason": reason},
            )
        )
        raise ResetTokenInvalid()

    def _set_password(self, user: User, password_hash: str, now: datetime) -> None:
        """A new password: tokens issued in earlier seconds stop working (see ``UserState``)."""
        user.password_hash = password_hash
        move_generation(user, now)

    # --- administration -----------------------------------------------------------------------

    async def create_admin(
        self, email: str, password: str, *, origin: Origin = NO_ORIGIN
    ) -> UserView:
        """Create an active, verified account with the ``admin`` role (``keel users create-admin``).

        The only way keel ever creates an admin (SEC-09: no default accounts).
        Raises ``EmailTaken`` when the address already has an account.
        """
        address = normalise_email(email)
        self._policy.check(password, context=self._context(address, None))
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        roles = sorted({ROLE_USER, ROLE_ADMIN})
        try:
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                if await repo.email_key_taken(address.key):
                    raise EmailTaken()
                user = User(
                    id=uuid.uuid4(),
                    email=address.address,
                    email_key=address.key,
                    email_verified_at=now,
                    display_name=None,
                    password_hash=password_hash,
                    roles=format_roles(roles),
                    is_active=True,
                    tokens_valid_after=whole_second(now),
                    created_at=now,
                    updated_at=now,
                )
                repo.add(user)
                await uow.flush()
                await self._audit.record(
                    uow,
                    self._event(
                        Action.USER_CREATED,
                        Result.SUCCESS,
                        origin,
                        actor_type=ActorType.SYSTEM,
                        actor_id=_CLI_ACTOR,
                        target_id=str(user.id),
                        details={"roles": roles, "via": "create_admin"},
                    ),
                )
                view = UserView.of(user)
        except IntegrityError as exc:
            raise EmailTaken() from exc
        return view

    async def admin_view(
        self,
        admin_id: str,
        user_id: str,
        origin: Origin,
        *,
        actor_type: ActorType = ActorType.USER,
    ) -> UserView:
        """An account as an admin sees it; the read is audited (``authz_admin``) as it happens.

        ``UserNotFound`` for an unknown (or malformed) id. ``actor_type`` is
        the admin's kind (a user, or an API key with the admin scope).
        """
        async with self._database.unit_of_work() as uow:
            user = await AccountRepository(uow).by_id(user_id)
            if user is None:
                raise UserNotFound()
            await self._audit.record(
                uow,
                self._admin_event(
                    Action.AUTHZ_ADMIN,
                    Result.SUCCESS,
                    origin,
                    admin_id,
                    user.id,
                    actor_type=actor_type,
                    details={"operation": "user_read"},
                ),
            )
            return UserView.of(user)

    async def set_active(
        self, admin_id: str, user_id: str, active: bool, origin: Origin
    ) -> UserView:
        """Enable or disable an account (see :meth:`update_user`)."""
        return await self.update_user(admin_id, user_id, origin, active=active)

    async def set_roles(
        self, admin_id: str, user_id: str, roles: Collection[str], origin: Origin
    ) -> UserView:
        """Replace an account's roles (see :meth:`update_user`)."""
        return await self.update_user(admin_id, user_id, origin, roles=roles)

    async def update_user(
        self,
        admin_id: str,
        user_id: str,
        origin: Origin,
        *,
        active: bool | None = None,
        roles: Collection[str] | None = None,
        actor_type: ActorType = ActorType.USER,
    ) -> UserView:
        """An admin changes an account's activity and/or roles, in one transaction.

        ``roles`` must be known roles (``UnknownRole``). An admin cannot
        disable themselves or drop their own ``admin`` role (``OwnAdminAccess``,
        audited). A role change is ``authz_change``; it takes effect on the
        next request, since tokens carry only scopes the account still holds.
        Disabling moves ``tokens_valid_after`` on and revokes every session
        (``user_updated``). ``UserNotFound`` for an unknown id.
        """
        wanted = frozenset(roles) if roles is not None else None
        if wanted is not None and not wanted <= self._settings.known_roles:
            raise UnknownRole()
        now = self._clock.now()
        revoked: list[str] = []
        refused = False
        changed = False
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise UserNotFound()
            target = str(user.id)
            if (
                actor_type is ActorType.USER
                and target == admin_id
                and (active is False or (wanted is not None and ROLE_ADMIN not in wanted))
            ):
                refused = True
            else:
                events: list[AuditEvent] = []
                if wanted is not None and wanted != user.role_set:
                    before = sorted(user.role_set)
                    user.roles = format_roles(wanted, self._settings.known_roles)
                    events.append(
                        self._admin_event(
                            Action.AUTHZ_CHANGE,
                            Result.SUCCESS,
                            origin,
                            admin_id,
                            target,
                            actor_type=actor_type,
                            details={"roles_before": before, "roles": sorted(wanted)},
                        )
                    )
                if active is not None and active != user.is_active:
                    user.is_active = active
                    if not active:
                        move_generation(user, now)
                        await end_pending_links(repo, user)
                        revoked = await self._revoke_sessions(uow, target, reason="disabled")
                    events.append(
                        self._admin_event(
                            Action.USER_UPDATED,
                            Result.SUCCESS,
                            origin,
                            admin_id,
                            target,
                            actor_type=actor_type,
                            details={
                                "fields": ["is_active"],
                                "active": active,
                                "via": "admin",
                                "sessions_revoked": len(revoked),
                            },
                        )
                    )
                changed = bool(events)
                if changed:
                    user.updated_at = now
                    await uow.flush()
                for audit_event in events:
                    await self._audit.record(uow, audit_event)
            view = UserView.of(user)
        if refused:
            await self._record_alone(
                self._admin_event(
                    Action.AUTHZ_CHANGE if active is not False else Action.USER_UPDATED,
                    Result.FAILURE,
                    origin,
                    admin_id,
                    view.id,
                    actor_type=actor_type,
                    details={"reason": "own_admin_access"},
                )
            )
            raise OwnAdminAccess()
        if changed:
            await self._sessions_revoked(view.id, revoked)
            await self._changed(view.id, view)
        return view

    # --- helpers ------------------------------------------------------------------------------

    def _context(self, address: EmailAddress, name: str | None) -> list[str]:
        # The service name comes from the policy's settings; these are the account's words.
        words = [address.address, address.local_part]
        if name:
            words.append(name)
        return words

    def _event(
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

    def _self_event(
        self,
        action: Action,
        result: Result,
        origin: Origin,
        user_id: object,
        *,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """An event about a user acting on their own account."""
        return self._event(
            action,
            result,
            origin,
            actor_type=ActorType.USER,
            actor_id=str(user_id),
            target_id=str(user_id),
            details=details,
        )

    def _admin_event(
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
        return self._event(
            action,
            result,
            origin,
            actor_type=actor_type,
            actor_id=admin_id,
            target_id=str(user_id),
            details=details,
        )

    async def _existing(self, user_id: str) -> User:
        """The caller's account, read in a short transaction; ``Unauthenticated`` when gone."""
        async with self._database.unit_of_work() as uow:
            current = await AccountRepository(uow).by_id(user_id)
        if current is None:
            raise Unauthenticated()  # the token's subject no longer exists
        return current

    async def _reauthenticate(
        self, user: User, password: str, origin: Origin, action: Action, *, operation: str
    ) -> None:
        """Ask for ``password`` again before a sensitive change; refusals audited as ``action``.

        Through the login's limits, as a login: counted before the hash
        (``TooManyRequests`` when the account or the source must wait), a wrong
        password counts as a failed login, a right one resets the count.
        """
        target = str(user.id)
        attempt = await self._guard_check(
            user.email_key, origin, target_id=target, operation=operation, actor_id=target
        )
        if not await self._hasher.verify(user.password_hash, password):
            await self._count_failure(user.email_key, origin, attempt, target_id=target)
            await record_refusal(
                self._audit,
                self._self_event(
                    action,
                    Result.FAILURE,
                    origin,
                    user.id,
                    details={"reason": "reauthentication_failed"},
                ),
            )
            raise ReauthenticationFailed()
        if self._guard is not None:
            await self._guard.succeeded(
                user.email_key,
                origin.source_ip,
                remember_source=user.email_verified_at is not None,
            )

    async def _mail_taken(self, user: User) -> bool:
        """Count one mail to ``user``'s address; ``False`` beyond its per-recipient limit."""
        return self._mail_budget is None or await self._mail_budget.take_mail(user.email_key)

    async def _record_alone(self, audit_event: AuditEvent) -> None:
        await self._audit.record_alone(audit_event)

    async def _revoke_sessions(
        self, uow: UnitOfWork, user_id: str, *, reason: str, keep: str | None = None
    ) -> list[str]:
        """In ``uow``: revoke the user's sessions (but ``keep``); their ids (none without hooks)."""
        if self._sessions is None:
            return []
        return await self._sessions.revoke_all(uow, user_id=user_id, reason=reason, keep=keep)

    async def _sessions_revoked(self, user_id: str, session_ids: Sequence[str]) -> None:
        """After the commit: the revoked sessions' access tokens stop working everywhere."""
        if self._sessions is not None and session_ids:
            await self._after_commit(
                "sessions_revoked", self._sessions.revoked(user_id, session_ids)
            )

    async def _forget_known_sources(self, account_key: str) -> None:
        """After a new password: no earlier login source is "known" to the guard any more."""
        if self._guard is not None:
            await self._after_commit(
                "login_guard_forget", self._guard.forget_known_sources(account_key)
            )

    async def _after_commit(self, step: str, work: Awaitable[None]) -> None:
        """Run a follow-up of a committed change; a failure is reported, never raised.

        The change stands either way: ``tokens_valid_after`` and the revoked
        rows already refuse the old credentials, this only makes it faster.
        """
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - the change is committed; report, go on
            event(_log, logging.ERROR, "after_commit_failed", step=step, error=type(exc).__name__)

    def _stage(self, uow: UnitOfWork, messages: Sequence[Message]) -> None:
        """Write ``messages`` to the outbox in ``uow``: sent if (and only if) it commits."""
        if not messages:
            return
        if self._outbox is None:
            raise RuntimeError("AccountService was built without an outbox")
        self._outbox.stage(uow, messages)

    async def _changed(self, user_id: str, view: UserView | None) -> None:
        """After a commit: tell every listener (``keel.auth`` writes the new record through)."""
        del view  # listeners reload what they keep from the record
        for listener in self._listeners:
            try:
                await listener(user_id)
            except Exception as exc:  # noqa: BLE001 - the change is committed; report, go on
                event(
                    _log,
                    logging.ERROR,
                    "user_change_listener_failed",
                    user_id=user_id,
                    error=type(exc).__name__,
                )
