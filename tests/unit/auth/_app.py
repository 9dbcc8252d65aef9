"""An in-process keel app with real bearer authentication, for the HTTP-level auth tests.

``build_auth_app`` is ``create_app`` with the real ``BearerAuthenticator``
over ``AccessTokens`` (behind a ``VerifiedTokenCache``) and a
``SecurityState`` over the app's stores and a test ``Directory``, the JWKS
route, and ``/_t/me``: a route that only answers an authenticated caller and
returns what the principal says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import iter_route_contexts

from keel._clock import FrozenClock
from keel.api.app import create_app
from keel.api.bearer import BearerAuthenticator, BearerPrincipal
from keel.api.jwks import JWKS_PATH, build_jwks_router
from keel.api.principal import Principal, current_principal
from keel.auth import SecurityState, TokenAuthenticator, VerifiedTokenCache
from keel.cache import Store, Stores, build_stores
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens
from keel.settings import Settings
from tests.unit.auth._support import Directory, active, token_settings

__all__ = ["AuthApp", "bearer", "build_auth_app", "protected_router"]

Caller = Annotated[Principal, Depends(current_principal)]


def protected_router() -> APIRouter:
    router = APIRouter(prefix="/_t", tags=["test"])

    @router.get("/me")
    async def me(principal: Caller) -> dict[str, Any]:
        assert isinstance(principal, BearerPrincipal)
        return {
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "session_id": principal.session_id,
            "token_id": principal.token_id,
            "expires_at": principal.expires_at.isoformat(),
        }

    @router.post("/me")
    async def me_by_post(principal: Caller) -> dict[str, str]:
        return {"subject": principal.subject}

    return router


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class AuthApp:
    app: FastAPI
    keys: KeySet
    tokens: AccessTokens
    directory: Directory
    clock: FrozenClock
    security: SecurityState

    @property
    def store(self) -> Store:
        """The app's own cache store (what the authenticator uses unless given another)."""
        store: Store = self.app.state.keel.store
        return store

    def token(self, subject: str = "user-1", *scopes: str, session_id: str = "sid-1") -> str:
        return self.tokens.issue(
            subject=subject, session_id=session_id, scopes=scopes or ("user",)
        ).token


def build_auth_app(
    settings: Settings,
    clock: FrozenClock,
    *,
    keys: KeySet | None = None,
    directory: Directory | None = None,
    stores: Stores | None = None,
    routers: Sequence[APIRouter] = (),
) -> AuthApp:
    keys = keys or KeySet.generate("EdDSA")
    tokens = AccessTokens(keys, token_settings(keys.algorithm), clock=clock)
    if directory is None:
        directory = Directory({"user-1": active("user"), "admin-1": active("user", "admin")})
    verifier = VerifiedTokenCache(tokens, clock=clock)  # as production wires it
    stores = stores or build_stores(settings.cache, clock)
    security = SecurityState(
        stores.shared,
        stores.channel,
        load_subject=directory.load,
        load_session=directory.session,
    )
    authenticator = BearerAuthenticator(TokenAuthenticator(verifier, security))
    app = create_app(
        settings,
        routers=[protected_router(), *routers],
        clock=clock,
        authenticator=authenticator,
        keys=keys,
        stores=stores,
    )
    served = {context.path for context in iter_route_contexts(app.routes)}
    if JWKS_PATH not in served:  # once create_app mounts it itself, do not mount it twice
        app.include_router(build_jwks_router(keys))
    return AuthApp(app, keys, tokens, directory, clock, security)
