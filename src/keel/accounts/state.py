"""``UserState``: what deciding "may this access token still be used?" needs about its user.

The contract with ``keel.auth``: its authenticator caches a ``UserState`` per
user in the shared cache store, filled by :func:`load_user_state`, and
refreshes it when ``AccountService`` reports a change (``on_user_changed``).
A token is refused when the user is gone (``None``), inactive, or the token's
``iat`` is before ``tokens_valid_after``.

``tokens_valid_after`` is always a whole second (JWT ``iat`` is whole seconds,
RFC 7519 §2): compare ``iat >= tokens_valid_after``. A token issued in the
same second as a bump stays valid, so a login straight after a password
change works; tokens from earlier seconds die.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from keel.accounts.email import EmailAddress
from keel.accounts.models import User
from keel.accounts.roles import format_roles, parse_roles
from keel.accounts.views import UserView, profile_json
from keel.db import Database, UnitOfWork

__all__ = ["UserSnapshot", "UserState", "load_user_snapshot", "load_user_state", "whole_second"]


@dataclass(frozen=True, slots=True)
class UserState:
    """The revocation-relevant facts about one user; ``scopes`` are its roles."""

    user_id: str
    active: bool
    tokens_valid_after: datetime
    scopes: frozenset[str]

    @classmethod
    def of(cls, user: User) -> UserState:
        return cls(
            user_id=str(user.id),
            active=user.is_active,
            tokens_valid_after=user.tokens_valid_after,
            scopes=user.role_set,
        )


def whole_second(moment: datetime) -> datetime:
    """``moment`` without its fraction of a second (``tokens_valid_after`` values)."""
    return moment.replace(microsecond=0)


def new_user(
    address: EmailAddress,
    password_hash: str,
    roles: Iterable[str],
    now: datetime,
    *,
    verified: bool,
    display_name: str | None = None,
) -> User:
    """A new active account whose credentials count from ``now`` (``tokens_valid_after``)."""
    return User(
        id=uuid.uuid4(),
        email=address.address,
        email_key=address.key,
        email_verified_at=now if verified else None,
        display_name=display_name,
        password_hash=password_hash,
        roles=format_roles(roles),
        is_active=True,
        tokens_valid_after=whole_second(now),
        created_at=now,
        updated_at=now,
    )


_STATE = select(User.id, User.is_active, User.tokens_valid_after, User.roles)


async def load_user_state(source: UnitOfWork | Database, user_id: str) -> UserState | None:
    """The state of ``user_id``, or ``None`` when there is no such user (one indexed read).

    ``source`` is a unit of work to read inside, or a ``Database`` to open a
    short one on. A ``user_id`` that is not a UUID is simply nobody.
    """
    try:
        key = uuid.UUID(user_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if isinstance(source, Database):
        async with source.unit_of_work() as uow:
            return await _load(uow, key)
    return await _load(source, key)


async def _load(uow: UnitOfWork, key: uuid.UUID) -> UserState | None:
    row = (await uow.session.execute(_STATE.where(User.id == key))).one_or_none()
    if row is None:
        return None
    return UserState(
        user_id=str(row.id),
        active=bool(row.is_active),
        tokens_valid_after=row.tokens_valid_after,
        scopes=parse_roles(row.roles),
    )


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """A user's state and ``GET /users/me`` body at one ``version`` of the row (``0006``)."""

    version: int
    state: UserState
    profile: bytes


async def load_user_snapshot(database: Database, user_id: str) -> UserSnapshot | None:
    """The user's snapshot read in one short transaction; ``None`` when there is no such user."""
    try:
        key = uuid.UUID(user_id)
    except (ValueError, TypeError, AttributeError):
        return None
    async with database.unit_of_work() as uow:
        user = await uow.session.scalar(select(User).where(User.id == key))
        if user is None:
            return None
        return UserSnapshot(
            version=int(user.security_version),
            state=UserState.of(user),
            profile=profile_json(UserView.of(user)),
        )
