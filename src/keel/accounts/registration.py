"""``RegistrationService``: registering an address and proving it with a mailed link.

:meth:`RegistrationService.register` answers the same whether the address is
new or taken (SEC-12). It always runs the password policy and one hash
first, so both paths cost the same, and answers no sooner than the
enumeration floor (:mod:`keel.accounts.pacing`); a taken address gets a
notice sent to its real owner instead of an account. An address whose
account was never verified is taken over by the newer registration
(:func:`keel.accounts.credentials.replace_unverified`): its password,
sessions and links are gone, and a fresh link is mailed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from keel.accounts.credentials import issued_before, replace_unverified
from keel.accounts.deps import AccountDeps
from keel.accounts.email import EmailAddress, normalise_email
from keel.accounts.errors import EmailTaken, VerificationFailed
from keel.accounts.links import new_verification_token
from keel.accounts.mail import Message
from keel.accounts.messages import registration_attempt, verify_email
from keel.accounts.models import EmailVerificationToken, User
from keel.accounts.names import normalise_display_name
from keel.accounts.origin import Origin
from keel.accounts.pacing import Floors, floored
from keel.accounts.repository import AccountRepository
from keel.accounts.roles import ROLE_USER
from keel.accounts.staging import MailStaging
from keel.accounts.state import new_user
from keel.audit import Action, Result
from keel.db import UnitOfWork
from keel.security.opaque import is_opaque_token, opaque_token_hash

__all__ = ["RegistrationService"]


class RegistrationService:
    """Register an account; verify an address (a new account's, or a changed one)."""

    def __init__(self, deps: AccountDeps, *, mail: MailStaging) -> None:
        self._deps = deps
        #: The response floors (:mod:`keel.accounts.pacing`), from the account policy.
        self.floors: Floors = deps.settings.policy
        self._mail = mail

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
        # Hash before looking: a taken address costs what a new one costs (SEC-12).
        password_hash = await self._deps.passwords.hash(password, address, name)
        now = self._deps.clock.now()
        replaced: list[str] | None = None
        try:
            async with self._deps.database.unit_of_work() as uow:
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
                self._mail.stage(uow, messages)
        except IntegrityError:
            # Another registration took the address between our read and our insert.
            async with self._deps.database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                existing = await repo.by_email_key(address.key)
                if existing is None:
                    raise
                messages, replaced = await self._register_taken(
                    uow, repo, existing, (address, name, password_hash), now, origin
                )
                self._mail.stage(uow, messages)
        if replaced is not None and existing is not None:
            # The unverified account's earlier credentials are gone: so are their sessions.
            await self._deps.propagation.sessions_revoked(str(existing.id), replaced)
            await self._deps.propagation.forget_known_sources(address.key)
            await self._deps.propagation.changed(str(existing.id))

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
        user = new_user(address, password_hash, {ROLE_USER}, now, verified=False, display_name=name)
        repo.add(user)
        await uow.flush()  # a concurrent registration of the address fails here
        token = self._new_token(repo, user, address, now)
        await self._deps.events.record(
            uow,
            self._deps.events.self_event(
                Action.USER_CREATED,
                Result.SUCCESS,
                origin,
                user.id,
                details={"roles": [ROLE_USER], "via": "register"},
            ),
        )
        return [
            verify_email(
                self._deps.settings,
                to=address.address,
                token=token,
                user_id=str(user.id),
                change=False,
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
            revoked = await self._deps.propagation.revoke_sessions(
                uow, user_id, reason="reregistered"
            )
            token = self._new_token(repo, user, address, now)
            message = verify_email(
                self._deps.settings, to=user.email, token=token, user_id=user_id, change=False
            )
            details.update(unverified_replaced=True, sessions_revoked=len(revoked))
        else:
            message = registration_attempt(self._deps.settings, to=existing.email, user_id=user_id)
        await self._deps.events.record(
            uow,
            self._deps.events.event(
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
        return new_verification_token(
            repo, user, address, now, ttl=self._deps.settings.verification_ttl
        )

    async def verify_email(self, token: str, origin: Origin) -> None:
        """Redeem a verification token: single use, unexpired, found by its SHA-256 only.

        Raises ``VerificationFailed`` (or ``EmailTaken`` when an address change
        lost a race for the address); the reason is audited.
        """
        now = self._deps.clock.now()
        reason: str | None = None
        target: str | None = None
        user_id: str | None = None
        try:
            async with self._deps.database.unit_of_work() as uow:
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
                        user_id = await self._apply(uow, repo, user, row, now, origin)
        except IntegrityError:
            reason = "email_taken"  # the address was taken while this change committed
        if reason is not None:
            await self._deps.events.record_alone(
                self._deps.events.event(
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
        assert user_id is not None
        await self._deps.propagation.changed(user_id)

    async def _apply(
        self,
        uow: UnitOfWork,
        repo: AccountRepository,
        user: User,
        row: EmailVerificationToken,
        now: datetime,
        origin: Origin,
    ) -> str:
        """The address of ``row`` is proven: mark it verified (or move the account to it)."""
        change = row.email_key != user.email_key
        if change:
            user.email = row.email
            user.email_key = row.email_key
            await repo.delete_reset_tokens(user.id)  # mailed to the old address
        user.email_verified_at = now
        user.updated_at = now
        await repo.delete_unused_tokens(user.id)
        await uow.flush()
        await self._deps.events.record(
            uow,
            self._deps.events.self_event(
                Action.AUTHN_EMAIL_VERIFIED,
                Result.SUCCESS,
                origin,
                user.id,
                details={"change": change},
            ),
        )
        return str(user.id)
