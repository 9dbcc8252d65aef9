"""What the accounts side needs from sessions and from brute-force limits, as protocols.

``keel.accounts`` never imports ``keel.auth``; ``keel.api`` hands an
``AccountService`` objects that fit these protocols (``keel.auth.sessions``
and ``keel.auth.throttle`` provide them).

- :class:`SessionHooks`: a login starts a session (its first refresh token is
  created in the login's own transaction); a password change, a reset, a
  disable or a deletion revokes sessions in the transaction that makes the
  change, and after the commit :meth:`SessionHooks.revoked` makes the revoked
  sessions' access tokens fail everywhere at once.
- :class:`LoginGuard`: counts an attempt before its password is checked (it
  may refuse with ``keel.errors.TooManyRequests``), told of every failure and
  success.
  ``account_key`` is the normalised e-mail key (or the raw input when it is
  not an address), so unknown and known addresses are limited alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keel.accounts.origin import Origin
from keel.db import UnitOfWork

__all__ = ["LoginGuard", "SessionHooks"]


class SessionHooks(Protocol):
    """Sessions, as the accounts side uses them."""

    async def start(
        self,
        uow: UnitOfWork,
        *,
        user_id: str,
        session_id: str,
        scopes: frozenset[str],
        origin: Origin,
    ) -> str:
        """In the login's transaction: record session ``session_id``; return its refresh token."""
        ...

    async def revoke_all(
        self, uow: UnitOfWork, *, user_id: str, reason: str, keep: str | None = None
    ) -> list[str]:
        """In the caller's transaction: revoke the user's sessions but ``keep``; their ids."""
        ...

    async def revoked(self, user_id: str, session_ids: Sequence[str]) -> None:
        """After the commit: the access tokens of ``user_id``'s ``session_ids`` stop at once."""
        ...


class LoginGuard(Protocol):
    """Brute-force limits on password checks, shared by every worker and instance."""

    async def reserve(self, account_key: str, source_ip: str | None) -> int:
        """Count an attempt before its password is checked; its failure number if it fails.

        Raises ``TooManyRequests`` (nothing counted) when the attempt must wait.
        """
        ...

    async def failed(self, account_key: str, source_ip: str | None, attempt: int) -> int:
        """The reserved ``attempt`` failed; return the account's consecutive failures now."""
        ...

    async def succeeded(
        self, account_key: str, source_ip: str | None, *, remember_source: bool = True
    ) -> None:
        """A correct password: reset the account's count; remember ``source_ip`` as known.

        ``remember_source`` is ``False`` for an account whose address is unverified.
        """
        ...

    async def forget_known_sources(self, account_key: str) -> None:
        """A new password: no source the account logged in from before is known any more."""
        ...

    async def clear(self, account_key: str) -> None:
        """Forget the account's failures (a completed password reset ends a lockout)."""
        ...
