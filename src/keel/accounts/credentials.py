"""The credential generation of an account, and what a new one ends.

An account's *credential generation* is ``users.tokens_valid_after`` (whole
seconds). It moves on with every change of who may act as the account: a
password change or reset, a disable, an admin's "end every session", and the
replacement of an unverified registration by a newer one. Everything issued
under an older generation is refused: access tokens by their ``iat``,
sessions by when their credentials were checked (``keel.auth``), and
verification, e-mail-change and reset links by their ``created_at``.

Because the generation has whole-second resolution, the change that moves it
also deletes the pending links in its own transaction, under the user's row
lock (:func:`end_pending_links`): the comparison is the second line of
defence, the deletion the first.
"""

from __future__ import annotations

from datetime import datetime

from keel.accounts.email import EmailAddress
from keel.accounts.models import User
from keel.accounts.repository import AccountRepository
from keel.accounts.state import whole_second
from keel.db import UnitOfWork

__all__ = [
    "CredentialsChanged",
    "end_pending_links",
    "end_user_links",
    "ensure_still_current",
    "issued_before",
    "move_generation",
    "replace_unverified",
    "set_password",
]


class CredentialsChanged(Exception):
    """A login's credentials changed between its password check and its session (rolls back)."""


def move_generation(user: User, now: datetime) -> None:
    """A new credential generation: whatever was issued in earlier seconds stops working."""
    user.tokens_valid_after = max(user.tokens_valid_after, whole_second(now))
    user.updated_at = now


def set_password(user: User, password_hash: str, now: datetime) -> None:
    """A new password: tokens issued in earlier seconds stop working (see ``UserState``)."""
    user.password_hash = password_hash
    move_generation(user, now)


def issued_before(created_at: datetime, user: User) -> bool:
    """Whether a link created at ``created_at`` belongs to an older credential generation."""
    return created_at < user.tokens_valid_after


def ensure_still_current(checked: User, current: User | None) -> None:
    """Raise :class:`CredentialsChanged` unless ``checked``'s credentials are ``current``'s.

    ``checked`` was read before a login's password hash ran, ``current`` under
    the row lock in the transaction that starts its session. A reset, a change
    or a disable in between moves the hash, the generation or ``is_active``.
    (A concurrent login upgrading the same password's hash moves the hash
    too: that rare login is refused and the next one works.)
    """
    if not (
        current is not None
        and current.is_active
        and current.password_hash == checked.password_hash
        and current.tokens_valid_after == checked.tokens_valid_after
    ):
        raise CredentialsChanged()


async def end_pending_links(repo: AccountRepository, user: User) -> None:
    """Delete the user's unused verification, e-mail-change and password-reset links."""
    await repo.delete_unused_tokens(user.id)
    await repo.delete_reset_tokens(user.id)


async def end_user_links(uow: UnitOfWork, user_id: str) -> None:
    """In ``uow`` (an admin ending every session): the user's pending links die too.

    Under the user's row lock, so no link issued before this commit can be
    redeemed after it. ``keel.api`` hands this to the sessions as their hook.
    """
    repo = AccountRepository(uow)
    user = await repo.by_id(user_id, for_update=True)
    if user is not None:
        await end_pending_links(repo, user)


async def replace_unverified(
    repo: AccountRepository,
    user: User,
    address: EmailAddress,
    password_hash: str,
    display_name: str | None,
    now: datetime,
) -> None:
    """A registration of an address whose account was never verified takes that account over.

    Whoever registered first never proved the mailbox, so nothing of theirs
    survives: the password, display name and spelling of the address become
    the new registrant's, a new credential generation begins and every
    pending link dies. The caller (holding the row lock) ends the sessions
    and mails a fresh link; only that link can verify the account.
    """
    user.password_hash = password_hash
    user.display_name = display_name
    user.email = address.address
    move_generation(user, now)
    await end_pending_links(repo, user)
