"""``ProfileService``: what a signed-in user does to their own account.

Read it, rename it, move it to another address, change its password, delete
it. Every change that needs the password again (a new address, a new
password, a deletion) asks for it through the login's limits
(:meth:`keel.accounts.attempts.PasswordAttempts.reauthenticate`). An address
change takes effect when the link mailed to the new address is used
(:mod:`keel.accounts.registration` redeems it); whether the new address
belongs to someone else is never revealed (its owner is told instead), and
the answer takes at least the enumeration floor (SEC-12).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Final

from keel.accounts.access import LoginResult
from keel.accounts.attempts import PasswordAttempts
from keel.accounts.credentials import end_pending_links, set_password
from keel.accounts.deps import AccountDeps
from keel.accounts.email import EmailAddress, normalise_email
from keel.accounts.errors import CurrentPasswordRequired, ReauthenticationFailed
from keel.accounts.links import new_verification_token
from keel.accounts.mail import Message
from keel.accounts.messages import (
    email_change_attempt,
    email_change_requested,
    password_changed,
    verify_email,
)
from keel.accounts.models import User
from keel.accounts.names import normalise_display_name
from keel.accounts.origin import Origin
from keel.accounts.pacing import Floors, floored
from keel.accounts.repository import AccountRepository
from keel.accounts.staging import MailStaging
from keel.accounts.state import UserState
from keel.accounts.views import UserView
from keel.audit import Action, Result
from keel.errors import Unauthenticated
from keel.security.tokens import AccessTokenIssuer

__all__ = ["UNSET", "ProfileService"]


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET
"""``update_profile``'s "leave this field alone" (``None`` clears the display name)."""


class ProfileService:
    """The signed-in user's own account: read, update, change password, delete."""

    def __init__(
        self,
        deps: AccountDeps,
        *,
        attempts: PasswordAttempts,
        mail: MailStaging,
        tokens: AccessTokenIssuer | None = None,
    ) -> None:
        self._deps = deps
        #: The response floors (:mod:`keel.accounts.pacing`), from the account policy.
        self.floors: Floors = deps.settings.policy
        self._attempts = attempts
        self._mail = mail
        self._tokens = tokens

    async def profile(self, user_id: str) -> UserView:
        """The user's view, read from the database.

        A bearer-authenticated ``GET /users/me`` does not come here: its body
        travels in the subject's cached record (``keel.auth.SubjectRecord``).
        """
        return UserView.of(await self._existing(user_id))

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
            await self._attempts.reauthenticate(
                current, current_password, origin, Action.USER_UPDATED, operation="email_change"
            )
        now = self._deps.clock.now()
        messages: list[Message] = []
        async with self._deps.database.unit_of_work() as uow:
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
            await self._deps.events.record(
                uow,
                self._deps.events.self_event(
                    Action.USER_UPDATED,
                    Result.SUCCESS,
                    origin,
                    user.id,
                    details={"fields": changed},
                ),
            )
            self._mail.stage(uow, messages)
            view = UserView.of(user)
        await self._deps.propagation.changed(view.id)
        return view

    async def _request_email_change(
        self, repo: AccountRepository, user: User, address: EmailAddress, now: datetime
    ) -> list[Message]:
        user_id = str(user.id)
        notice = email_change_requested(self._deps.settings, to=user.email, user_id=user_id)
        # A reset link mailed to the current address would outlive the change (as Django).
        await repo.delete_reset_tokens(user.id)
        owner = await repo.by_email_key(address.key)
        if owner is not None:
            return [
                notice,
                email_change_attempt(self._deps.settings, to=owner.email, user_id=user_id),
            ]
        await repo.delete_unused_tokens(user.id)  # a newer request replaces older links
        token = new_verification_token(
            repo, user, address, now, ttl=self._deps.settings.verification_ttl
        )
        link = verify_email(
            self._deps.settings, to=address.address, token=token, user_id=user_id, change=True
        )
        return [notice, link]

    async def delete_account(self, user_id: str, password: str, origin: Origin) -> None:
        """Delete the account after re-authentication with its password.

        Its tokens die with the row: ``load_user_state`` answers ``None`` and
        the listeners are told; its sessions are revoked in the same
        transaction. Verification and reset tokens go by ``ON DELETE CASCADE``.
        """
        current = await self._existing(user_id)
        await self._attempts.reauthenticate(
            current, password, origin, Action.USER_DELETED, operation="account_deletion"
        )
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise Unauthenticated()
            revoked = await self._deps.propagation.revoke_sessions(
                uow, str(user.id), reason="deleted"
            )
            await repo.delete(user)
            await self._deps.events.record(
                uow,
                self._deps.events.self_event(
                    Action.USER_DELETED,
                    Result.SUCCESS,
                    origin,
                    user.id,
                    details={"via": "self"},
                ),
            )
        await self._deps.propagation.sessions_revoked(str(current.id), revoked)
        await self._deps.propagation.changed(str(current.id))

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
        await self._attempts.reauthenticate(
            current,
            current_password,
            origin,
            Action.AUTHN_PASSWORD_CHANGE_FAIL,
            operation="password_change",
        )
        address = EmailAddress(address=current.email, key=current.email_key)
        new_hash = await self._deps.passwords.hash(new_password, address, current.display_name)
        now = self._deps.clock.now()
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(current.id, for_update=True)
            if user is None or not user.is_active:
                raise Unauthenticated()
            if user.password_hash != current.password_hash:
                # Changed (or reset) meanwhile: the password checked above is no longer current.
                raise ReauthenticationFailed()
            set_password(user, new_hash, now)
            # A pending reset or e-mail-change link would undo this (or hand the account on).
            await end_pending_links(repo, user)
            await uow.flush()
            revoked = await self._deps.propagation.revoke_sessions(
                uow, target, reason="password_change", keep=keep_session
            )
            await self._deps.events.record(
                uow,
                self._deps.events.self_event(
                    Action.AUTHN_PASSWORD_CHANGE,
                    Result.SUCCESS,
                    origin,
                    target,
                    details={"via": "change", "sessions_revoked": len(revoked)},
                ),
            )
            state, view = UserState.of(user), UserView.of(user)
            self._mail.stage(
                uow,
                [
                    password_changed(
                        self._deps.settings, to=view.email, user_id=view.id, reset=False
                    )
                ],
            )
        await self._deps.propagation.sessions_revoked(view.id, revoked)
        await self._deps.propagation.forget_known_sources(current.email_key)
        await self._deps.propagation.changed(view.id)
        chosen = state.scopes if scopes is None else state.scopes & frozenset(scopes)
        session_id = keep_session if keep_session is not None else str(uuid.uuid4())
        issued = self._tokens.issue(subject=target, session_id=session_id, scopes=sorted(chosen))
        return LoginResult(
            state=state,
            access_token=issued,
            session_id=session_id,
            scopes=chosen,
            expires_in=issued.expires_in(self._deps.clock.now()),
        )

    async def _existing(self, user_id: str) -> User:
        """The caller's account, read in a short transaction; ``Unauthenticated`` when gone."""
        async with self._deps.database.unit_of_work() as uow:
            current = await AccountRepository(uow).by_id(user_id)
        if current is None:
            raise Unauthenticated()  # the token's subject no longer exists
        return current
