"""The accounts routes and :func:`install_accounts`, the one place they are wired.

Routes (public ones in :data:`PUBLIC_OPERATIONS`)::

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

``/auth/token`` parses its ``application/x-www-form-urlencoded`` body itself
(python-multipart is not a dependency): at most :data:`TOKEN_FORM_MAX` bytes,
ASCII, strict ``&``/``=`` syntax, UTF-8 percent-escapes, each parameter at
most once (RFC 6749 §3.2), unknown parameters ignored (same section). There
are no confidential clients: ``client_id`` and HTTP Basic client credentials
are accepted and ignored (RFC 6749 §2.1, public clients).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from keel._logging import event
from keel.accounts import (
    UNSET,
    AccountService,
    InvalidCredentials,
    LoginGuard,
    LoginResult,
    Mailer,
    Outbox,
    OutboxObserver,
    OutboxSettings,
    ScopeNotGranted,
    SessionHooks,
    UserChanged,
    UserView,
    account_settings_from,
    build_mailer,
    mail_settings_from,
    outbox_settings_from,
)
from keel.accounts.login import LoginService
from keel.accounts.mail import ConsoleMailer
from keel.accounts.mailcap import CappedMailer
from keel.accounts.profile import ProfileService
from keel.accounts.registration import RegistrationService
from keel.accounts.sealing import BodySealer
from keel.api.bearer import BearerPrincipal
from keel.api.middleware import mark_no_store, no_store
from keel.api.origin import origin_of
from keel.api.principal import Principal, current_principal
from keel.api.ratelimit import count_attempt, rate_limited, rate_limiter
from keel.api.routing import add_direct_route
from keel.api.sessions import SESSIONS_STATE_KEY, refreshed_body
from keel.api.state import AppContext
from keel.audit import ActorType
from keel.auth.sessions import InvalidRefreshToken, RefreshScopeNotGranted, SessionService
from keel.errors import Forbidden
from keel.runtime.lifecycle import Warmup
from keel.security.hashing import PasswordHasher
from keel.security.keys import load_key_set
from keel.security.passwords import PasswordPolicy, PasswordRejected
from keel.security.tokens import AccessTokens

__all__ = [
    "PUBLIC_OPERATIONS",
    "REGISTER_ACCEPTED",
    "TOKEN_FORM_MAX",
    "build_accounts_router",
    "install_accounts",
]

#: The routes here that need no credentials (for the SEC-46 route walker).
PUBLIC_OPERATIONS: Final = frozenset(
    {
        ("POST", "/auth/register"),
        ("POST", "/auth/verify-email"),
        ("POST", "/auth/login"),
        ("POST", "/auth/token"),
    }
)
#: The one answer to every accepted registration, new address or taken (SEC-12).
REGISTER_ACCEPTED: Final = {
    "status": "accepted",
    "detail": "Check your inbox: we sent a message to this address about the next step.",
}
TOKEN_FORM_MAX: Final = 16 * 1024
_TOKEN_FORM_FIELDS: Final = 32
_INVALID_GRANT: Final = "The e-mail address or password is wrong, or the account cannot log in."
# Large enough that the password policy, not the schema, refuses long passwords with its
# own reason code (KEEL_PASSWORD_MAX_LENGTH ≤ 4096, and NFKC may shrink the input).
_PASSWORD_FIELD_MAX: Final = 16 * 1024
_EMAIL_FIELD_MAX: Final = 320
_NAME_FIELD_MAX: Final = 400
_TOKEN_FIELD_MAX: Final = 128
_REFRESH_FIELD_MAX: Final = 128

_log = logging.getLogger("keel.api.accounts")

Password = Annotated[SecretStr, Field(min_length=1, max_length=_PASSWORD_FIELD_MAX)]
Email = Annotated[str, Field(min_length=1, max_length=_EMAIL_FIELD_MAX)]
DisplayName = Annotated[str, Field(min_length=1, max_length=_NAME_FIELD_MAX)]


class _Strict(BaseModel):
    # SEC-48/51: unknown fields are refused (no mass assignment), no type coercion.
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterRequest(_Strict):
    email: Email
    password: Password
    display_name: DisplayName | None = None


class VerifyEmailRequest(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=_TOKEN_FIELD_MAX)]


class LoginRequest(_Strict):
    email: Email
    password: Password


class UpdateMeRequest(_Strict):
    """Only these fields; roles, activity, verification and the hash are never settable."""

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


def _token_body(result: LoginResult) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": result.access_token.token,
        "token_type": "bearer",
        "expires_in": result.expires_in,
    }
    if result.refresh_token is not None:
        body["refresh_token"] = result.refresh_token
    return body


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
        name="login",  # the route's name (and OpenAPI operation id) as before
    )
    async def password_login(body: LoginRequest, request: Request) -> Any:
        """Exchange an e-mail address and password for an access token."""
        await count_attempt(request, "login", "login", account=body.email)
        result = await login.login(body.email, body.password.get_secret_value(), origin_of(request))
        return _token_body(result)

    @router.post(
        "/auth/token",
        response_model=OAuthTokenResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(no_store)],
        responses={400: {"description": "RFC 6749 §5.2 error"}},
        openapi_extra={"requestBody": _TOKEN_REQUEST_BODY},
    )
    async def token(request: Request) -> Response:
        """OAuth 2.0 token endpoint: the password grant (RFC 6749 §4.3, ``username`` is the
        e-mail) and, with sessions installed, the ``refresh_token`` grant (§6)."""
        return await _token_grant(request, login)

    @router.patch("/users/me", response_model=UserResponse, dependencies=[Depends(no_store)])
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

    @router.delete("/users/me", status_code=204, dependencies=[Depends(no_store)])
    async def delete_me(body: DeleteMeRequest, request: Request, principal: Caller) -> Response:
        """Delete the account; needs the password again. Its tokens stop working at once."""
        await profile.delete_account(
            _account_holder(principal), body.password.get_secret_value(), origin_of(request)
        )
        return Response(status_code=204)

    return router


# --- /auth/token ---------------------------------------------------------------------------

_TOKEN_REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                    "username": {"type": "string", "maxLength": _EMAIL_FIELD_MAX},
                    "password": {
                        "type": "string",
                        "format": "password",
                        "maxLength": _PASSWORD_FIELD_MAX,
                    },
                    "refresh_token": {"type": "string", "maxLength": _REFRESH_FIELD_MAX},
                    "scope": {"type": "string"},
                    "client_id": {"type": "string"},
                },
            }
        }
    },
}


def _oauth_error(error: str, description: str) -> JSONResponse:
    """RFC 6749 §5.2: 400 with ``error`` and a fixed ``error_description``."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=400,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


class _FormError(ValueError):
    pass


def _parse_form(request: Request, body: bytes) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _FormError("The body must be application/x-www-form-urlencoded.")
    if len(body) > TOKEN_FORM_MAX:
        raise _FormError("The request body is too large.")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            encoding="utf-8",
            errors="strict",
            max_num_fields=_TOKEN_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _FormError("The request body is not a valid form.") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _FormError("A parameter appears more than once.")  # RFC 6749 §3.2
        params[name] = value
    return params


def _requested_scopes(params: dict[str, str]) -> frozenset[str] | None:
    raw = params.get("scope")
    if raw is None or raw == "":
        return None
    scopes = raw.split(" ")
    if any(not scope for scope in scopes):
        raise _FormError("The scope parameter is malformed.")
    return frozenset(scopes)


def _token_json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _token_grant(request: Request, login: LoginService) -> Response:
    sessions = getattr(request.app.state, SESSIONS_STATE_KEY, None)
    try:
        params = _parse_form(request, await request.body())
    except _FormError as exc:
        await count_attempt(request, "token", "login")
        return _oauth_error("invalid_request", str(exc))
    # Counted in the grant's family; a known user from a known source passes a spent budget.
    if params.get("grant_type") == "refresh_token":
        await count_attempt(request, "token", "refresh")
    else:
        await count_attempt(request, "token", "login", account=params.get("username"))
    try:
        grant_type = params.get("grant_type")
        if grant_type is None:
            raise _FormError("grant_type is required.")
        scopes = _requested_scopes(params)
        if grant_type == "password":
            return await _password_grant(request, login, params, scopes)
        if grant_type == "refresh_token" and isinstance(sessions, SessionService):
            return await _refresh_grant(request, sessions, params, scopes)
    except _FormError as exc:
        return _oauth_error("invalid_request", str(exc))
    supported = "password and refresh_token" if isinstance(sessions, SessionService) else "password"
    return _oauth_error("unsupported_grant_type", f"Only the {supported} grants are supported.")


async def _password_grant(
    request: Request,
    login: LoginService,
    params: dict[str, str],
    scopes: frozenset[str] | None,
) -> Response:
    username, password = params.get("username"), params.get("password")
    if not username or not password:
        raise _FormError("username and password are required.")
    if len(username) > _EMAIL_FIELD_MAX or len(password) > _PASSWORD_FIELD_MAX:
        raise _FormError("A parameter is too long.")
    try:
        result = await login.login(username, password, origin_of(request), scopes=scopes)
    except (InvalidCredentials, PasswordRejected):
        # One answer for every credential failure (SEC-10), as RFC 6749 §5.2 names it.
        return _oauth_error("invalid_grant", _INVALID_GRANT)
    except ScopeNotGranted:
        return _oauth_error("invalid_scope", "The requested scope is not available.")
    body = _token_body(result)
    if scopes is not None:
        body["scope"] = " ".join(sorted(result.scopes))
    return _token_json(body)


async def _refresh_grant(
    request: Request,
    sessions: SessionService,
    params: dict[str, str],
    scopes: frozenset[str] | None,
) -> Response:
    token = params.get("refresh_token")
    if not token:
        raise _FormError("refresh_token is required.")
    if len(token) > _REFRESH_FIELD_MAX:
        raise _FormError("A parameter is too long.")
    try:
        result = await sessions.refresh(token, origin_of(request), scopes=scopes)
    except RefreshScopeNotGranted:
        return _oauth_error("invalid_scope", "The requested scope is not available.")
    except InvalidRefreshToken:
        return _oauth_error("invalid_grant", "The refresh token is invalid, expired or revoked.")
    body = refreshed_body(result)
    if scopes is not None:
        body["scope"] = " ".join(sorted(result.scopes))
    return _token_json(body)


# --- wiring --------------------------------------------------------------------------------


def install_accounts(
    app: FastAPI,
    context: AppContext,
    *,
    access_tokens: AccessTokens | None = None,
    mailer: Mailer | None = None,
    hasher: PasswordHasher | None = None,
    on_user_changed: UserChanged | Sequence[UserChanged] = (),
    outbox_settings: OutboxSettings | None = None,
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
            mail_settings_from(settings),
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
        settings=outbox_settings or outbox_settings_from(settings),
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
        responses={401: {"description": "No valid access token"}},
        tags=["accounts"],
    )
    app.include_router(
        build_accounts_router(
            registration=areas.registration, login=areas.login, profile=areas.profile
        )
    )
    return service
