"""The accounts routes and :func:`install_accounts`, the one place they are wired.

Routes (the public ones need no credentials; the others declare the bearer requirement)::

    POST   /auth/register      JSON {email, password, display_name?} → 202, one fixed body
    POST   /auth/verify-email  JSON {token} → 200 {"status": "verified"}
    POST   /auth/login         JSON {email, password} → {access_token, token_type, expires_in}
    POST   /auth/token         OAuth2 password grant (RFC 6749 §4.3), form-encoded
    GET    /users/me           the caller's account, from the shared cache
    PATCH  /users/me           {display_name?, email?, current_password?}
    DELETE /users/me           {password} → 204

Request bodies are strict (unknown fields 422, SEC-48/51), responses carry
only declared fields (SEC-49); token-bearing and personal responses are
``Cache-Control: no-store`` (SEC-58). Handlers are thin: the rules live in
the area services of ``keel.accounts.AccountService``, which
:func:`install_accounts` builds; each router is built with the areas it
uses, and the service is kept among the app's services by its type
(``AppContext.service(AccountService)``).

``/auth/token``'s form parsing and grants are in :mod:`keel.api.token`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from keel._logging import event
from keel.accounts import (
    UNSET,
    AccountService,
    LoginGuard,
    Mailer,
    Outbox,
    OutboxObserver,
    SessionHooks,
    UserChanged,
    UserView,
    account_settings_from,
    build_mailer,
)
from keel.accounts.email import EMAIL_MAX_LENGTH
from keel.accounts.login import LoginService
from keel.accounts.mail import ConsoleMailer
from keel.accounts.mailcap import CappedMailer
from keel.accounts.models import DISPLAY_NAME_MAX
from keel.accounts.profile import ProfileService
from keel.accounts.registration import RegistrationService
from keel.accounts.sealing import BodySealer
from keel.api.bearer import BearerPrincipal
from keel.api.contract import (
    LIMIT_KEY,
    NEW_PASSWORD,
    PASSWORD,
    PASSWORD_FIELD_MAX,
    authenticated,
    problems,
)
from keel.api.middleware import mark_no_store, no_store
from keel.api.origin import origin_of
from keel.api.principal import Principal, current_principal
from keel.api.ratelimit import count_attempt, rate_limited, rate_limiter
from keel.api.routing import add_direct_route
from keel.api.state import AppContext
from keel.api.token import (
    TOKEN_FORM_MAX,
    TOKEN_REQUEST_BODY,
    token_body,
    token_grant,
    token_responses,
)
from keel.audit import ActorType
from keel.errors import Forbidden
from keel.runtime.lifecycle import Warmup
from keel.security.hashing import PasswordHasher
from keel.security.keys import load_key_set
from keel.security.passwords import PasswordPolicy
from keel.security.tokens import AccessTokens
from keel.settings import MailSettings

__all__ = [
    "REGISTER_ACCEPTED",
    "TOKEN_FORM_MAX",
    "build_accounts_router",
    "install_accounts",
]

#: The one answer to every accepted registration, new address or taken (SEC-12).
REGISTER_ACCEPTED: Final = {
    "status": "accepted",
    "detail": "Check your inbox: we sent a message to this address about the next step.",
}
_TOKEN_FIELD_MAX: Final = 128

_log = logging.getLogger("keel.api.accounts")

#: A password the caller already has (login, re-authentication): any the policy once allowed.
Password = Annotated[
    SecretStr,
    Field(min_length=1, max_length=PASSWORD_FIELD_MAX, json_schema_extra={LIMIT_KEY: PASSWORD}),
]
#: A password being set: its schema carries the policy's lengths (``keel.api.contract``).
NewPassword = Annotated[
    SecretStr,
    Field(min_length=1, max_length=PASSWORD_FIELD_MAX, json_schema_extra={LIMIT_KEY: NEW_PASSWORD}),
]
Email = Annotated[
    str,
    Field(min_length=1, max_length=EMAIL_MAX_LENGTH, json_schema_extra={"format": "email"}),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=DISPLAY_NAME_MAX)]
#: An address only looked up, never stored (a malformed one gets the same answer as any).
LookupEmail = Annotated[str, Field(min_length=1, max_length=EMAIL_MAX_LENGTH)]


class _Strict(BaseModel):
    # SEC-48/51: unknown fields are refused (no mass assignment), no type coercion.
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterRequest(_Strict):
    email: Email
    password: NewPassword
    display_name: DisplayName | None = None


class VerifyEmailRequest(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=_TOKEN_FIELD_MAX)]


class LoginRequest(_Strict):
    email: Email
    password: Password


def _update_me_schema(schema: dict[str, Any]) -> None:
    # What the validator and the service require: a change, and the password with a new address.
    properties = schema["properties"]
    properties["email"] = next(s for s in properties["email"]["anyOf"] if s.get("type") != "null")
    schema["anyOf"] = [
        {"required": ["display_name"], "not": {"required": ["email"]}},
        {"required": ["email", "current_password"], "properties": {"current_password": _STRING}},
    ]


_STRING: Final = {"type": "string"}


class UpdateMeRequest(_Strict):
    """Only these fields; roles, activity, verification and the hash are never settable."""

    model_config = ConfigDict(json_schema_extra=_update_me_schema)

    display_name: DisplayName | None = None
    email: Email | None = None
    current_password: Password | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateMeRequest:
        if not {"display_name", "email"} & self.model_fields_set:
            raise ValueError("give display_name or email")
        if "email" in self.model_fields_set and self.email is None:
            raise ValueError("email cannot be removed")
        return self


class DeleteMeRequest(_Strict):
    password: Password


class AcceptedResponse(BaseModel):
    status: Literal["accepted"]
    detail: str


class VerifiedResponse(BaseModel):
    status: Literal["verified"]


class TokenResponse(BaseModel):
    """RFC 6749 §5.1; ``refresh_token`` when sessions are installed."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str | None = None


class OAuthTokenResponse(TokenResponse):
    """RFC 6749 §5.1; ``scope`` only when the request named one (§3.3)."""

    scope: str | None = None


class UserResponse(BaseModel):
    """The account as its owner sees it (declared fields only, SEC-49)."""

    id: str
    email: str
    email_verified: bool
    display_name: str | None
    roles: list[str]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, view: UserView) -> UserResponse:
        return cls(
            id=view.id,
            email=view.email,
            email_verified=view.email_verified,
            display_name=view.display_name,
            roles=list(view.roles),
            created_at=view.created_at.isoformat(),
            updated_at=view.updated_at.isoformat(),
        )


Caller = Annotated[Principal, Depends(current_principal)]


def _account_holder(principal: Principal) -> str:
    # Account management is for the account's own user session, never an API key (SEC-45).
    if principal.actor_type is not ActorType.USER:
        raise Forbidden()
    return principal.subject


def _read_me(profile: ProfileService) -> Callable[[Request], Awaitable[Response]]:
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

    return read_me


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


# --- wiring --------------------------------------------------------------------------------


def install_accounts(
    app: FastAPI,
    context: AppContext,
    *,
    access_tokens: AccessTokens | None = None,
    mailer: Mailer | None = None,
    hasher: PasswordHasher | None = None,
    on_user_changed: UserChanged | Sequence[UserChanged] = (),
    outbox_settings: MailSettings | None = None,
    outbox_observer: OutboxObserver | None = None,
    sessions: SessionHooks | None = None,
    guard: LoginGuard | None = None,
) -> AccountService:
    """Build the ``AccountService`` for ``context``, mount the routes, return the service.

    - ``access_tokens``: the issuer; pass the same ``AccessTokens`` (same key
      set) the bearer authenticator verifies with. Without one, a key set is
      loaded from the settings here, which in development without a key file
      is a throwaway key no other component shares.
    - ``mailer``: default from the settings (``KEEL_MAIL_BACKEND``, console).
      Messages go through the durable outbox (``keel.accounts.outbox``); its
      sender runs as a supervised service in every worker unless
      ``KEEL_MAIL_SENDER_ENABLED`` is false. ``outbox_settings`` defaults to
      the ``KEEL_MAIL_*`` settings; ``outbox_observer`` is where metrics attach.
    - ``hasher``: default one per app, pre-warmed by a warm-up and closed at
      shutdown; the password blocklist is loaded by a warm-up too.
    - ``on_user_changed``: called with a user id after every committed change
      (``keel.auth`` refreshes its cached user state there).
    - ``sessions`` and ``guard``: the session hooks (logins start a session,
      credential changes revoke them) and the brute-force limits asked before
      every password check (``keel.accounts.hooks``); without them logins
      start no session and nothing is limited.

    The service is kept in ``context.services`` under its type. Call before
    the app starts (warm-ups are registered on the supervisor).
    """
    settings = context.settings
    supervisor = context.supervisor
    account_settings = dataclasses.replace(
        account_settings_from(settings), known_roles=context.roles.names
    )

    if hasher is None:
        owned = PasswordHasher(settings.passwords)

        async def close_hasher() -> None:
            owned.close()

        supervisor.add_warmup(Warmup("password_hasher", owned.prewarm))
        supervisor.add_closer("password_hasher", close_hasher)
        hasher = owned
    policy = PasswordPolicy(settings.passwords)

    async def load_blocklist() -> None:
        await asyncio.to_thread(lambda: policy.blocklist)

    supervisor.add_warmup(Warmup("password_blocklist", load_blocklist))

    if access_tokens is None:
        keys = load_key_set(settings.tokens, production=settings.is_production)
        access_tokens = AccessTokens(keys, settings.tokens, clock=context.clock)
    if mailer is None:
        mailer = build_mailer(
            settings.mail,
            service_name=settings.service_name,
            development=not settings.is_production,
            clock=context.clock,
        )
    if isinstance(mailer, ConsoleMailer) and settings.is_production:
        event(
            _log,
            logging.WARNING,
            "mail_console_in_production",
            detail="account mail is only logged, never delivered: set KEEL_MAIL_BACKEND=smtp",
        )
    budget = rate_limiter(app, context)  # mails per recipient and hour
    audit_keys = settings.audit
    outbox = Outbox(
        CappedMailer(mailer, budget),
        database=context.database,
        sealer=BodySealer(audit_keys.keys, audit_keys.current_key_id),
        audit=context.audit,
        settings=outbox_settings or settings.mail,
        observer=outbox_observer,
    )
    if outbox.settings.sender_enabled:
        supervisor.add_service("mail_sender", outbox.run_forever)
    listeners = [on_user_changed] if callable(on_user_changed) else list(on_user_changed)
    service = AccountService(
        database=context.database,
        audit=context.audit,
        hasher=hasher,
        policy=policy,
        settings=account_settings,
        clock=context.clock,
        tokens=access_tokens,
        outbox=outbox,
        on_user_changed=listeners,
        sessions=sessions,
        guard=guard,
        mail_budget=budget,
    )
    context.services[AccountService] = service
    areas = service.areas
    # The hottest authenticated route: straight in the app's table (keel.api.routing).
    add_direct_route(
        app,
        "/users/me",
        _read_me(areas.profile),
        methods=["GET"],
        response_model=UserResponse,
        tags=["accounts"],
        **authenticated(),
    )
    app.include_router(
        build_accounts_router(
            registration=areas.registration, login=areas.login, profile=areas.profile
        )
    )
    return service
