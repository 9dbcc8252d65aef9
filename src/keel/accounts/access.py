"""``LoginResult``: what a login (or a password change) hands back."""

from __future__ import annotations

from dataclasses import dataclass

from keel.accounts.state import UserState
from keel.security.tokens import IssuedToken

__all__ = ["LoginResult"]


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
