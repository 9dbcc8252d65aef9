"""The accounts routes: :func:`build_accounts_router` and :func:`install_read_me`.

Routes (the public ones need no credentials; the others declare the bearer requirement)::

    POST   /auth/register      JSON {email, password, display_name?} → 202, one fixed body
    POST   /auth/verify-email  JSON {token} → 200 {"status": "verified"}
    POST   /auth/login         JSON {email, password} → {access_token, token_type, expires_in}
    POST   /auth/token         OAuth2 password grant (RFC 6749 §4.3), form-encoded
    GET    /users/me           the caller's account, from the shared cache
    PATCH  /users/me           {display_name?, email?, current_password?}
    DELETE /users/me           {password} → 204

Request bodies are strict (unknown fields 422, SEC-48/51), responses carry
only declared fields (SEC-49): the bodies are in :mod:`keel.api.account_models`.
Token-bearing and personal responses are ``Cache-Control: no-store`` (SEC-58).
Handlers are thin: the rules live in the area services of
``keel.accounts.AccountService``, which ``create_app`` builds
(``keel.api.assembly``) and hands, area by area, to the router and to
``GET /users/me`` (a direct route in the app's own table, for speed).

``/auth/token``'s form parsing and grants are in :mod:`keel.api.token`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from keel.accounts import UNSET
from keel.accounts.login import LoginService
from keel.accounts.profile import ProfileService
from keel.accounts.registration import RegistrationService
from keel.api.account_models import (
    AcceptedResponse,
    DeleteMeRequest,
    LoginRequest,
    OAuthTokenResponse,
    RegisterRequest,
    TokenResponse,
    UpdateMeRequest,
    UserResponse,
    VerifiedResponse,
    VerifyEmailRequest,
)
from keel.api.bearer import BearerPrincipal
from keel.api.contract import authenticated, problems
from keel.api.middleware import mark_no_store, no_store
from keel.api.origin import origin_of
from keel.api.principal import Principal, current_principal
from keel.api.ratelimit import count_attempt, rate_limited
from keel.api.routing import add_direct_route
from keel.api.token import (
    TOKEN_FORM_MAX,
    TOKEN_REQUEST_BODY,
    token_body,
    token_grant,
    token_responses,
)
from keel.audit import ActorType
from keel.errors import Forbidden

__all__ = [
    "REGISTER_ACCEPTED",
    "TOKEN_FORM_MAX",
    "build_accounts_router",
    "install_read_me",
]

#: The one answer to every accepted registration, new address or taken (SEC-12).
REGISTER_ACCEPTED: Final = {
    "status": "accepted",
    "detail": "Check your inbox: we sent a message to this address about the next step.",
}

Caller = Annotated[Principal, Depends(current_principal)]


def _account_holder(principal: Principal) -> str:
    # Account management is for the account's own user session, never an API key (SEC-45).
    if principal.actor_type is not ActorType.USER:
        raise Forbidden()
    return principal.subject


def install_read_me(app: FastAPI, profile: ProfileService) -> None:
    """Add ``GET /users/me`` straight to ``app``'s own table (``keel.api.routing``).

    The hottest authenticated route: call it before the routers are included, so
    it is matched first.
    """

    async def read_me(request: Request) -> Response:
        """The caller's account, as its subject's cached record holds it."""
        principal = await current_principal(request)
        mark_no_store(request.scope)
        user_id = _account_holder(principal)
        if isinstance(principal, BearerPrincipal) and principal.profile is not None:
            # Ready JSON from the security cache: no database read, nothing to serialise.
            return Response(principal.profile, media_type="application/json")
        view = UserResponse.of(await profile.profile(user_id))
        return Response(view.model_dump_json(), media_type="application/json")

    add_direct_route(
        app,
        "/users/me",
        read_me,
        methods=["GET"],
        response_model=UserResponse,
        tags=["accounts"],
        **authenticated(),
    )


def build_accounts_router(
    *, registration: RegistrationService, login: LoginService, profile: ProfileService
) -> APIRouter:
    """A fresh router with every accounts route, served by the given area services."""
    router = APIRouter(tags=["accounts"])

    @router.post(
        "/auth/register",
        status_code=202,
        response_model=AcceptedResponse,
        dependencies=[Depends(no_store), Depends(rate_limited("register", "register"))],
        responses=problems(415, 422, 429),
    )
    async def register(body: RegisterRequest, request: Request) -> Any:
        """Start an account; the answer is the same whether or not the address has one."""
        await registration.register(
            body.email, body.password.get_secret_value(), body.display_name, origin_of(request)
        )
        return REGISTER_ACCEPTED

    @router.post(
        "/auth/verify-email",
        response_model=VerifiedResponse,
        dependencies=[Depends(rate_limited("verify_email", "verify"))],
        responses=problems(415, 422, 429),
    )
    async def verify_email(body: VerifyEmailRequest, request: Request) -> Any:
        """Redeem the token from a verification mail (single use, 24 hours)."""
        await registration.verify_email(body.token, origin_of(request))
        return {"status": "verified"}

    @router.post(
        "/auth/login",
        response_model=TokenResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(no_store)],
        responses=problems(401, 403, 415, 422, 429),
        name="login",  # the route's name (and OpenAPI operation id) as before
    )
    async def password_login(body: LoginRequest, request: Request) -> Any:
        """Exchange an e-mail address and password for an access token."""
        await count_attempt(request, "login", "login", account=body.email)
        result = await login.login(body.email, body.password.get_secret_value(), origin_of(request))
        return token_body(result)

    @router.post(
        "/auth/token",
        response_model=OAuthTokenResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(no_store)],
        responses=token_responses(),
        openapi_extra={"requestBody": TOKEN_REQUEST_BODY},
    )
    async def token(request: Request) -> Response:
        """OAuth 2.0 token endpoint: the password grant (RFC 6749 §4.3, ``username`` is the
        e-mail) and, with sessions installed, the ``refresh_token`` grant (§6)."""
        return await token_grant(request, login)

    @router.patch(
        "/users/me",
        response_model=UserResponse,
        dependencies=[Depends(no_store)],
        **authenticated(409, 415, 422, 429),
    )
    async def update_me(body: UpdateMeRequest, request: Request, principal: Caller) -> Any:
        """Change the display name, or ask to change the address (needs ``current_password``)."""
        given = body.model_fields_set
        view = await profile.update_profile(
            _account_holder(principal),
            origin_of(request),
            display_name=body.display_name if "display_name" in given else UNSET,
            email=body.email,
            current_password=(
                body.current_password.get_secret_value() if body.current_password else None
            ),
        )
        return UserResponse.of(view)

    @router.delete(
        "/users/me",
        status_code=204,
        dependencies=[Depends(no_store)],
        **authenticated(415, 422, 429),
    )
    async def delete_me(body: DeleteMeRequest, request: Request, principal: Caller) -> Response:
        """Delete the account; needs the password again. Its tokens stop working at once."""
        await profile.delete_account(
            _account_holder(principal), body.password.get_secret_value(), origin_of(request)
        )
        return Response(status_code=204)

    return router
