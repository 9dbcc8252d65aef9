"""The accounts queries; the only module that builds SQL over ``users`` and their tokens.

Users, e-mail verification tokens and password-reset tokens.

Every statement is parameterised SQLAlchemy Core/ORM (SEC-55).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update

from keel.accounts.models import EmailVerificationToken, PasswordResetToken, User
from keel.accounts.outbox_rows import forget_user
from keel.db import UnitOfWork

__all__ = ["AccountRepository"]


class AccountRepository:
    """Reads and writes accounts inside one unit of work."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def by_email_key(self, key: str, *, for_update: bool = False) -> User | None:
        query = select(User).where(User.email_key == key)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return (await self._uow.session.execute(query)).scalar_one_or_none()

    async def by_id(
        self, user_id: str | uuid.UUID, *, for_update: bool = False, no_key_update: bool = False
    ) -> User | None:
        """The user; ``for_update`` locks the row (``no_key_update``: PostgreSQL's weaker lock).

        ``FOR NO KEY UPDATE`` does not wait for the key-share lock that inserting a
        row referencing the user takes, so two logins that each inserted their
        session can lock the user one after the other instead of deadlocking.
        """
        try:
            key = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(user_id)
        except ValueError:
            return None
        query = select(User).where(User.id == key)
        if for_update:
            # PostgreSQL row lock (SQLite locks on write); the row as it is now, even if
            # this unit of work read it before.
            query = query.with_for_update(key_share=no_key_update).execution_options(
                populate_existing=True
            )
        return (await self._uow.session.execute(query)).scalar_one_or_none()

    async def email_key_taken(self, key: str, *, other_than: uuid.UUID | None = None) -> bool:
        query = select(User.id).where(User.email_key == key)
        if other_than is not None:
            query = query.where(User.id != other_than)
        return (await self._uow.session.execute(query.limit(1))).first() is not None

    def add(self, user: User) -> None:
        self._uow.session.add(user)

    async def delete(self, user: User) -> None:
        """Delete the account and its mail; the database cascades to its tokens."""
        await forget_user(self._uow, str(user.id))
        await self._uow.session.execute(delete(User).where(User.id == user.id))

    # E-mail verification tokens.

    def add_token(self, token: EmailVerificationToken) -> None:
        self._uow.session.add(token)

    async def token_by_hash(self, token_hash: str) -> EmailVerificationToken | None:
        query = select(EmailVerificationToken).where(
            EmailVerificationToken.token_hash == token_hash
        )
        return (await self._uow.session.execute(query)).scalar_one_or_none()

    async def consume_token(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Mark the token used; ``False`` when another request used it first (single use)."""
        result = await self._uow.session.execute(
            update(EmailVerificationToken)
            .where(EmailVerificationToken.id == token_id, EmailVerificationToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def delete_unused_tokens(self, user_id: uuid.UUID) -> None:
        """Forget every unused token of the user (a newer link replaces them, or one was used)."""
        await self._uow.session.execute(
            delete(EmailVerificationToken).where(
                EmailVerificationToken.user_id == user_id,
                EmailVerificationToken.used_at.is_(None),
            )
        )

    async def delete_change_links(self, user_id: uuid.UUID, *, keep_key: str) -> int:
        """Forget the user's unused links to an address other than ``keep_key``; how many."""
        result = await self._uow.session.execute(
            delete(EmailVerificationToken).where(
                EmailVerificationToken.user_id == user_id,
                EmailVerificationToken.used_at.is_(None),
                EmailVerificationToken.email_key != keep_key,
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # Password-reset tokens.

    def add_reset_token(self, token: PasswordResetToken) -> None:
        self._uow.session.add(token)

    async def reset_token_by_hash(self, token_hash: str) -> PasswordResetToken | None:
        query = select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash)
        return (await self._uow.session.execute(query)).scalar_one_or_none()

    async def consume_reset_token(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Mark the reset token used; ``False`` when another request used it first."""
        result = await self._uow.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.id == token_id, PasswordResetToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def delete_reset_tokens(
        self, user_id: uuid.UUID, *, except_id: uuid.UUID | None = None
    ) -> None:
        """Forget the user's reset tokens (but ``except_id``): each one left could still work."""
        query = delete(PasswordResetToken).where(PasswordResetToken.user_id == user_id)
        if except_id is not None:
            query = query.where(PasswordResetToken.id != except_id)
        await self._uow.session.execute(query)

    async def replace_hash(self, user_id: uuid.UUID, old: str, new: str) -> None:
        """Store an upgraded hash of the same password, unless the password changed meanwhile."""
        await self._uow.session.execute(
            update(User)
            .where(User.id == user_id, User.password_hash == old)
            .values(password_hash=new)
            .execution_options(synchronize_session=False)
        )
