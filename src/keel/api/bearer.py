"""``BearerAuthenticator``: the HTTP transport of keel's access tokens (RFC 6750 §2.1).

The token travels in exactly one ``Authorization: Bearer <token>`` header and
nowhere else: never a query string (``?access_token=``) or a form field, which
end up in logs, browser history and Referer headers (RFC 6750 §2.2-2.3 are
deliberately not supported; SEC-43, ASVS 14.2.1). A request without that
header, or with a malformed or repeated one, has no principal (401 on guarded
routes); a well-formed header with a token that fails any check is one opaque
``InvalidToken`` (401 with ``WWW-Authenticate: Bearer``).

The checks themselves are :class:`keel.auth.TokenAuthenticator`'s; this
module only finds the token and turns the result into a :class:`Principal`,
which carries the caller's ready ``GET /users/me`` body (``profile``) from
the subject record the checks read anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from fastapi import Request

from keel.accounts.roles import RoleCatalog
from keel.api.principal import Principal
from keel.auth import TokenAuthenticator
from keel.security.tokens import MAX_TOKEN_LENGTH

__all__ = ["BearerAuthenticator", "BearerPrincipal", "bearer_token"]

# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive
# (RFC 9110 §11.1), the token is not.
_CREDENTIALS: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_MAX_HEADER: Final = MAX_TOKEN_LENGTH + 64


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerPrincipal(Principal):
    """A caller authenticated by an access token; ``token_id``/``expires_at`` serve logout."""

    session_id: str
    token_id: str
    expires_at: datetime
    #: The caller's ``GET /users/me`` body as its subject record holds it, or ``None``.
    profile: bytes | None = None


def bearer_token(request: Request) -> str | None:
    """The token of the request's one ``Authorization: Bearer`` header, else ``None``."""
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None  # none, or ambiguous: two credentials are no credential
    value = values[0]
    if len(value) > _MAX_HEADER:
        return None
    match = _CREDENTIALS.fullmatch(value)
    return match.group(1) if match is not None else None


class BearerAuthenticator:
    """An ``Authenticator`` for access tokens in the ``Authorization`` header."""

    def __init__(self, tokens: TokenAuthenticator, roles: RoleCatalog | None = None) -> None:
        self._tokens = tokens
        self._roles = roles or RoleCatalog()

    @property
    def tokens(self) -> TokenAuthenticator:
        return self._tokens

    async def authenticate(self, request: Request) -> Principal | None:
        """The token's principal; ``None`` without a usable header; ``InvalidToken`` if refused."""
        token = bearer_token(request)
        if token is None:
            return None
        authentication = await self._tokens.authenticate(token)
        return BearerPrincipal(
            subject=authentication.subject,
            # The token's roles the account still holds, as the scopes they grant.
            scopes=self._roles.scopes_for(authentication.scopes),
            session_id=authentication.session_id,
            token_id=authentication.token_id,
            expires_at=authentication.expires_at,
            profile=authentication.profile,
        )
