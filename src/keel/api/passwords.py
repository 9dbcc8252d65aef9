"""The password routes: change (signed in), forgot and reset (public), built by a function.

Routes (the public ones need no credentials; the others declare the bearer requirement)::

    POST /auth/password/change  bearer; {current_password, new_password}
                                → 200 {access_token, token_type, expires_in}
    POST /auth/password/forgot  {email} → 202, one fixed body (SEC-12)
    POST /auth/password/reset   {token, new_password} → 200 {"status": "reset"}

A change keeps the caller's own session (when the caller authenticated with
an access token of one) and answers with a fresh access token for it: the
change moves ``tokens_valid_after`` on, so tokens from earlier seconds,
including the one just used, stop working. A reset signs nobody in: its
answer carries no token (SEC-27). Bodies are strict (unknown fields 422),
answers ``Cache-Control: no-store``. The rules live in the profile and
recovery areas of ``keel.accounts.AccountService``
(``keel.accounts.profile``, ``keel.accounts.recovery``); the router is
built with them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from keel.accounts.profile import ProfileService
from keel.accounts.recovery import RecoveryService
from keel.api.account_models import (
    AcceptedResponse,
    LookupEmail,
    NewPassword,
    Password,
    StrictBody,
    TokenResponse,
)
from keel.api.accounts import Caller, _account_holder
from keel.api.bearer import BearerPrincipal
from keel.api.contract import authenticated, problems
from keel.api.middleware import no_store
from keel.api.origin import origin_of
from keel.api.ratelimit import rate_limited
from keel.api.token import token_body

__all__ = [
    "FORGOT_ACCEPTED",
    "build_passwords_router",
]

#: The one answer to every forgot-password request, known address or not (SEC-12).
FORGOT_ACCEPTED: Final = {
    "status": "accepted",
    "detail": "If this address has an account, we sent it a link to choose a new password.",
}
_RESET_TOKEN_FIELD_MAX: Final = 128


class ChangePasswordRequest(StrictBody):
    current_password: Password
    new_password: NewPassword


class ForgotPasswordRequest(StrictBody):
    email: LookupEmail


class ResetPasswordRequest(StrictBody):
    token: Annotated[str, Field(min_length=1, max_length=_RESET_TOKEN_FIELD_MAX)]
    new_password: NewPassword


class ResetResponse(BaseModel):
    status: Literal["reset"]


def build_passwords_router(*, profile: ProfileService, recovery: RecoveryService) -> APIRouter:
    """A fresh router with the password routes, served by the given area services."""
    router = APIRouter(tags=["accounts"], dependencies=[Depends(no_store)])

    @router.post(
        "/auth/password/change",
        response_model=TokenResponse,
        response_model_exclude_none=True,
        **authenticated(415, 422, 429),
    )
    async def change_password(
        body: ChangePasswordRequest, request: Request, principal: Caller
    ) -> Any:
        """Change the password (needs the current one); other sessions are signed out."""
        keep = principal.session_id if isinstance(principal, BearerPrincipal) else None
        result = await profile.change_password(
            _account_holder(principal),
            body.current_password.get_secret_value(),
            body.new_password.get_secret_value(),
            origin_of(request),
            keep_session=keep,
            scopes=principal.scopes,
        )
        return token_body(result)

    @router.post(
        "/auth/password/forgot",
        status_code=202,
        response_model=AcceptedResponse,
        dependencies=[Depends(rate_limited("password_forgot", "password"))],
        responses=problems(415, 422, 429),
    )
    async def forgot_password(body: ForgotPasswordRequest, request: Request) -> Any:
        """Ask for a reset link; the answer is the same whether or not the address has one."""
        await recovery.forgot_password(body.email, origin_of(request))
        return FORGOT_ACCEPTED

    @router.post(
        "/auth/password/reset",
        response_model=ResetResponse,
        dependencies=[Depends(rate_limited("password_reset", "password"))],
        responses=problems(415, 422, 429),
    )
    async def reset_password(body: ResetPasswordRequest, request: Request) -> Any:
        """Choose a new password with the token from a reset mail; signs every session out."""
        await recovery.reset_password(
            body.token, body.new_password.get_secret_value(), origin_of(request)
        )
        return {"status": "reset"}

    return router
