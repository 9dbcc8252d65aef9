"""``RecoveryService``: a forgotten password, reset with a mailed single-use link.

:meth:`RecoveryService.forgot_password` does the same work and answers
nothing whether or not the address has an account; only its owner gets mail
(SEC-12, SEC-25/26). :meth:`RecoveryService.reset_password` sets a new
password with the link's token and signs every session out; it never logs
in (SEC-27).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import NoReturn

from keel.accounts.credentials import issued_before, set_password
from keel.accounts.deps import AccountDeps
from keel.accounts.email import EmailAddress
from keel.accounts.errors import ResetTokenInvalid
from keel.accounts.keys import account_keys
from keel.accounts.mail import Message
from keel.accounts.messages import password_changed, password_reset
from keel.accounts.models import PasswordResetToken, User
from keel.accounts.origin import Origin
from keel.accounts.pacing import Floors, floored
from keel.accounts.repository import AccountRepository
from keel.accounts.staging import MailStaging
from keel.accounts.views import UserView
from keel.audit import Action, Result
from keel.security.opaque import is_opaque_token, new_opaque_token, opaque_token_hash

__all__ = ["RecoveryService"]


class RecoveryService:
    """Forgot password (a link mailed to the owner) and reset password (with that link)."""

    def __init__(self, deps: AccountDeps, *, mail: MailStaging) -> None:
        self._deps = deps
        #: The response floors (:mod:`keel.accounts.pacing`), from the account policy.
        self.floors: Floors = deps.settings.policy
        self._mail = mail

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
        _guard_key, key = account_keys(email)
        token = new_opaque_token()
        digest = opaque_token_hash(token)
        now = self._deps.clock.now()
        ttl = self._deps.settings.policy.password_reset_ttl
        messages: list[Message] = []
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            # Locked: an e-mail change committing meanwhile is seen (its address is gone).
            user = await repo.by_email_key(key, for_update=True) if key is not None else None
            # Over the owner's mail limit: their last link stands and nothing is sent.
            capped = user is not None and user.is_active and not await self._mail.take(user)
            if user is not None and user.is_active and not capped:
                await repo.delete_reset_tokens(user.id)
                repo.add_reset_token(
                    PasswordResetToken(
                        id=uuid.uuid4(),
                        user_id=user.id,
                        token_hash=digest,
                        created_at=now,
                        expires_at=now + timedelta(seconds=ttl),
                        used_at=None,
                    )
                )
                result, details = Result.SUCCESS, None
                messages.append(
                    password_reset(
                        self._deps.settings, to=user.email, token=token, user_id=str(user.id)
                    )
                )
            else:
                reason = "unknown_user" if user is None else "account_unavailable"
                result, details = Result.FAILURE, {"reason": "mail_limit" if capped else reason}
            await self._deps.events.record(
                uow,
                self._deps.events.event(
                    Action.AUTHN_PASSWORD_RESET_REQUEST,
                    result,
                    origin,
                    target_id=str(user.id) if user is not None else None,
                    details=details,
                ),
            )
            self._mail.stage(uow, messages)

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
        now = self._deps.clock.now()
        row: PasswordResetToken | None = None
        user: User | None = None
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            if is_opaque_token(token):
                row = await repo.reset_token_by_hash(opaque_token_hash(token))
            if row is not None:
                user = await repo.by_id(row.user_id)
        reason = _refusal(row, user, now)
        if reason is not None:
            await self._failed(reason, row, origin)
        assert row is not None
        assert user is not None
        address = EmailAddress(address=user.email, key=user.email_key)
        new_hash = await self._deps.passwords.hash(new_password, address, user.display_name)
        now = self._deps.clock.now()
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(row.user_id, for_update=True)
            reason = _refusal(row, user, now)
            if reason is None and not await repo.consume_reset_token(row.id, now):
                reason = "used"  # a concurrent request redeemed it first
            if reason is None:
                assert user is not None
                verified = user.email_verified_at is None
                set_password(user, new_hash, now)
                if verified:
                    user.email_verified_at = now
                await repo.delete_reset_tokens(user.id, except_id=row.id)
                await repo.delete_unused_tokens(user.id)  # e-mail-change links too
                await uow.flush()
                revoked = await self._deps.propagation.revoke_sessions(
                    uow, str(user.id), reason="password_reset"
                )
                await self._deps.events.record(
                    uow,
                    self._deps.events.self_event(
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
                self._mail.stage(
                    uow,
                    [
                        password_changed(
                            self._deps.settings, to=view.email, user_id=view.id, reset=True
                        )
                    ],
                )
        if reason is not None:
            await self._failed(reason, row, origin)
        await self._deps.propagation.sessions_revoked(view.id, revoked)
        await self._deps.propagation.clear_failures(guard_key)
        await self._deps.propagation.forget_known_sources(guard_key)
        await self._deps.propagation.changed(view.id)

    async def _failed(
        self, reason: str, row: PasswordResetToken | None, origin: Origin
    ) -> NoReturn:
        await self._deps.events.record_alone(
            self._deps.events.event(
                Action.AUTHN_PASSWORD_CHANGE_FAIL,
                Result.FAILURE,
                origin,
                target_id=str(row.user_id) if row is not None else None,
                details={"via": "reset", "reason": reason},
            )
        )
        raise ResetTokenInvalid()


def _refusal(row: PasswordResetToken | None, user: User | None, now: datetime) -> str | None:
    """Why the reset link ``row`` cannot set ``user``'s password now (``None``: it can)."""
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
