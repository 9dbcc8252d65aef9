"""An accounts app with the password and admin-user routes, recording session hooks and guard.

Built like ``_accounts_app.build_accounts_app``; ``SessionAuthenticator``
stands in for ``keel.auth``'s bearer authenticator: it yields a
``BearerPrincipal`` (so the session id reaches the routes) and refuses a
token when its user is gone or inactive, when it was issued before the
user's ``tokens_valid_after``, or (with ``deny_revoked``) when its session
was revoked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from keel._clock import FrozenClock
from keel.accounts import load_user_state
from keel.api.admin_users import build_admin_users_router
from keel.api.bearer import BearerPrincipal
from keel.api.passwords import build_passwords_router
from keel.api.principal import Principal
from keel.api.state import get_context
from keel.security.tokens import AccessTokens, InvalidToken
from keel.settings import Settings
from tests.accounts._hooks import FakeGuard, FakeSessions

from ._accounts_app import AccountsApp, build_accounts_app

__all__ = ["PasswordsApp", "SessionAuthenticator", "build_passwords_app", "reset_token"]

_LINK = re.compile(r"(https?://[^\s#]+)#token=([A-Za-z0-9_-]+)")


class SessionAuthenticator:
    """Access tokens as ``BearerPrincipal``s, checked against the user's state and sessions."""

    def __init__(self, sessions: FakeSessions, *, deny_revoked: bool = True) -> None:
        self.tokens: AccessTokens | None = None
        self.sessions = sessions
        self.deny_revoked = deny_revoked

    async def authenticate(self, request: Request) -> Principal | None:
        assert self.tokens is not None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            return None
        state = await load_user_state(get_context(request).database, claims.subject)
        if state is None or not state.active or claims.issued_at < state.tokens_valid_after:
            return None
        revoked = {sid for batch in self.sessions.revoked_batches for sid in batch}
        if self.deny_revoked and claims.session_id in revoked:
            return None
        return BearerPrincipal(
            subject=claims.subject,
            scopes=claims.scopes & state.scopes,
            session_id=claims.session_id,
            token_id=claims.jti,
            expires_at=claims.expires_at,
        )


@dataclass
class PasswordsApp:
    accounts: AccountsApp
    sessions: FakeSessions
    guard: FakeGuard
    authenticator: SessionAuthenticator


def build_passwords_app(
    settings: Settings,
    mail_path: Path,
    *,
    clock: FrozenClock,
    deny_revoked: bool = True,
    threshold: int = 3,
) -> PasswordsApp:
    sessions, guard = FakeSessions(), FakeGuard(threshold=threshold)
    authenticator = SessionAuthenticator(sessions, deny_revoked=deny_revoked)
    accounts = build_accounts_app(
        settings,
        mail_path,
        clock=clock,
        authenticator=authenticator,
        sessions=sessions,
        guard=guard,
    )
    authenticator.tokens = accounts.tokens
    areas = accounts.service.areas
    accounts.app.include_router(
        build_passwords_router(profile=areas.profile, recovery=areas.recovery)
    )
    accounts.app.include_router(build_admin_users_router(areas.admin))
    return PasswordsApp(accounts, sessions, guard, authenticator)


async def reset_token(accounts: AccountsApp, to: str) -> tuple[str, str]:
    """The link base and the token of the newest reset mail to ``to``."""
    for message in reversed(await accounts.mail()):
        if message["kind"] == "password_reset" and message["to"] == to:
            match = _LINK.search(message["body"])
            assert match is not None
            return match.group(1), match.group(2)
    raise AssertionError("no reset mail")
