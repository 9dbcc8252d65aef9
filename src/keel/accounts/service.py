"""``AccountService``: the rules of accounts. Routes call it; it calls the repository.

Every write is audited in the unit of work that makes it (``trail.record``);
a refusal that changes nothing is audited in a transaction of its own
(``trail.record_alone``). Mail is handed to the ``Outbox`` only after the
commit, and the change listeners (``on_user_changed``) run after it too.

Enumeration and timing (SEC-10..12):

- :meth:`register` answers the same whether the address is new or taken. It
  always runs the password policy and one hash first, so both paths cost the
  same; a taken address gets a notice (or, if never verified, a fresh link)
  sent to its real owner instead of an account.
- :meth:`login` raises one :class:`InvalidCredentials` for an unknown address,
  a wrong password, a disabled account and an unverified address, after
  exactly one password verification on every path (a dummy one when there
  is no usable hash). The reason is in the audit row, never in the answer.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from keel._clock import Clock
from keel._logging import event
from keel.accounts.config import AccountSettings
from keel.accounts.email import EmailAddress, InvalidEmail, normalise_email
from keel.accounts.errors import (
    CurrentPasswordRequired,
    EmailTaken,
    InvalidCredentials,
    ReauthenticationFailed,
    ScopeNotGranted,
    VerificationFailed,
)
from keel.accounts.mail import Message, Outbox
from keel.accounts.messages import (
    email_change_attempt,
    email_change_requested,
    registration_attempt,
    verify_email,
)
from keel.accounts.models import EmailVerificationToken, User
from keel.accounts.names import normalise_display_name
from keel.accounts.origin import NO_ORIGIN, CallerOrigin, Origin
from keel.accounts.repository import AccountRepository
from keel.accounts.roles import ROLE_ADMIN, ROLE_USER, format_roles
from keel.accounts.state import UserState, whole_second
from keel.accounts.views import UserView, UserViewCache
from keel.audit import Action, ActorType, AuditEvent, AuditTrail, Result
from keel.db import Database, UnitOfWork
from keel.errors import Unauthenticated
from keel.security.hashing import PasswordHasher
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
_TOKEN_BYTES: Final = 32
_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CLI_ACTOR: Final = "keel-cli"

UserChanged = Callable[[str], Awaitable[None]]
"""Called with a user id after each commit that changes what a token or a view depends on."""


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET
"""``update_profile``'s "leave this field alone" (``None`` clears the display name)."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the user's state and a fresh access token (never logged)."""

    state: UserState
    access_token: IssuedToken
    session_id: str
    scopes: frozenset[str]
    expires_in: int


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class AccountService:
    """Registration, verification, login, profile and deletion, with their audit events."""

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
        views: UserViewCache | None = None,
        on_user_changed: UserChanged | None = None,
    ) -> None:
        self._database = database
        self._audit = audit
        self._hasher = hasher
        self._policy = policy
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._outbox = outbox
        self._views = views
        self._listeners: list[UserChanged] = []
        if on_user_changed is not None:
            self._listeners.append(on_user_changed)

    @property
    def settings(self) -> AccountSettings:
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

    # --- registration and verification -----------------------------------------------------

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
        try:
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                existing = await repo.by_email_key(address.key)
                if existing is None:
                    messages = await self._create(
                        uow, repo, address, name, password_hash, now, origin
                    )
                else:
                    messages = await self._register_taken(uow, repo, existing, now, origin)
        except IntegrityError:
            # Another registration took the address between our read and our insert.
            async with self._database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                existing = await repo.by_email_key(address.key)
                if existing is None:
                    raise
                messages = await self._register_taken(uow, repo, existing, now, origin)
        self._post(messages)

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
        now: datetime,
        origin: Origin,
    ) -> list[Message]:
        user_id = str(existing.id)
        if existing.email_verified_at is None and existing.is_active:
            # The owner never confirmed: a fresh link is the helpful notice.
            await repo.delete_unused_tokens(existing.id)
            address = EmailAddress(address=existing.email, key=existing.email_key)
            token = self._new_token(repo, existing, address, now)
            message = verify_email(
                self._settings, to=existing.email, token=token, user_id=user_id, change=False
            )
        else:
            message = registration_attempt(self._settings, to=existing.email, user_id=user_id)
        await self._audit.record(
            uow,
            self._event(
                Action.USER_CREATED,
                Result.FAILURE,
                origin,
                target_id=user_id,
                details={"reason": "email_taken", "via": "register"},
            ),
        )
        return [message]

    def _new_token(
        self, repo: AccountRepository, user: User, address: EmailAddress, now: datetime
    ) -> str:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        repo.add_token(
            EmailVerificationToken(
                id=uuid.uuid4(),
                user_id=user.id,
                token_hash=_token_digest(token),
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
                    await repo.token_by_hash(_token_digest(token))
                    if _TOKEN_SHAPE.fullmatch(token)
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

    async def authenticate(self, email: str, password: str, origin: Origin) -> UserState:
        """Check credentials and audit the login; ``InvalidCredentials`` on any failure."""
        user = await self._check_credentials(email, password, origin)
        await self._login_succeeded(user, password, origin, details={})
        return UserState.of(user)

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
        await self._login_succeeded(
            user, password, origin, details={"session_id": session_id, "jti": issued.jti}
        )
        expires_in = math.ceil((issued.expires_at - self._clock.now()).total_seconds())
        return LoginResult(
            state=UserState.of(user),
            access_token=issued,
            session_id=session_id,
            scopes=chosen,
            expires_in=max(0, expires_in),
        )

    async def _check_credentials(self, email: str, password: str, origin: Origin) -> User:
        try:
            key: str | None = normalise_email(email).key
        except InvalidEmail:
            key = None  # not an address: nobody, and answered like nobody
        user: User | None = None
        if key is not None:
            async with self._database.unit_of_work() as uow:
                user = await AccountRepository(uow).by_email_key(key)
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
        if reason is not None:
            await self._login_failed(user, reason, origin)
            raise InvalidCredentials()
        assert user is not None
        return user

    async def _login_failed(self, user: User | None, reason: str, origin: Origin) -> None:
        await self._record_alone(
            self._event(
                Action.AUTHN_LOGIN_FAIL,
                Result.FAILURE,
                origin,
                target_id=str(user.id) if user is not None else None,
                details={"reason": reason},
            )
        )

    async def _login_succeeded(
        self, user: User, password: str, origin: Origin, *, details: dict[str, Any]
    ) -> None:
        # SEC-07: a hash with outdated parameters (or legacy bcrypt) is upgraded now,
        # the only moment keel holds the password.
        upgraded = (
            await self._hasher.hash(password)
            if self._hasher.needs_rehash(user.password_hash)
            else None
        )
        async with self._database.unit_of_work() as uow:
            if upgraded is not None:
                await AccountRepository(uow).replace_hash(user.id, user.password_hash, upgraded)
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

    # --- profile ------------------------------------------------------------------------------

    async def profile(self, user_id: str) -> UserView:
        """The user's view, from the shared cache when it holds one (no database round trip)."""
        if self._views is not None:
            cached = await self._views.get(user_id)
            if cached is not None:
                return cached
        async with self._database.unit_of_work() as uow:
            user = await AccountRepository(uow).by_id(user_id)
        if user is None:
            raise Unauthenticated()  # the token's subject no longer exists
        view = UserView.of(user)
        if self._views is not None:
            await self._views.fill(view)
        return view

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
        async with self._database.unit_of_work() as uow:
            current = await AccountRepository(uow).by_id(user_id)
        if current is None:
            raise Unauthenticated()
        moving = address is not None and address.key != current.email_key
        if moving:
            if current_password is None:
                raise CurrentPasswordRequired()
            if not await self._hasher.verify(current.password_hash, current_password):
                await self._record_alone(
                    self._self_event(
                        Action.USER_UPDATED,
                        Result.FAILURE,
                        origin,
                        current.id,
                        details={"reason": "reauthentication_failed"},
                    )
                )
                raise ReauthenticationFailed()
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
            view = UserView.of(user)
        self._post(messages)
        await self._changed(view.id, view)
        return view

    async def _request_email_change(
        self, repo: AccountRepository, user: User, address: EmailAddress, now: datetime
    ) -> list[Message]:
        user_id = str(user.id)
        notice = email_change_requested(self._settings, to=user.email, user_id=user_id)
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
        the listeners are told. Verification tokens go by ``ON DELETE CASCADE``.
        """
        async with self._database.unit_of_work() as uow:
            current = await AccountRepository(uow).by_id(user_id)
        if current is None:
            raise Unauthenticated()
        if not await self._hasher.verify(current.password_hash, password):
            await self._record_alone(
                self._self_event(
                    Action.USER_DELETED,
                    Result.FAILURE,
                    origin,
                    current.id,
                    details={"reason": "reauthentication_failed"},
                )
            )
            raise ReauthenticationFailed()
        async with self._database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise Unauthenticated()
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
        await self._changed(str(current.id), None)

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
            source_ip=origin.source_ip,
            user_agent=origin.user_agent,
            request_id=origin.request_id,
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

    async def _record_alone(self, audit_event: AuditEvent) -> None:
        await self._audit.record_alone(audit_event)

    def _post(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        if self._outbox is None:
            raise RuntimeError("AccountService was built without an outbox")
        self._outbox.post(*messages)

    async def _changed(self, user_id: str, view: UserView | None) -> None:
        """After a commit: refresh the cached view, then tell every listener."""
        if self._views is not None:
            if view is None:
                await self._views.discard(user_id)
            else:
                await self._views.refresh(view)
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
