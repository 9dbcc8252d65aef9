"""``POST /auth/token``: the OAuth 2.0 token endpoint's grants, and the token response body.

The endpoint parses its ``application/x-www-form-urlencoded`` body itself
(python-multipart is not a dependency): at most :data:`TOKEN_FORM_MAX` bytes,
ASCII, strict ``&``/``=`` syntax, UTF-8 percent-escapes, each parameter at
most once (RFC 6749 §3.2), unknown parameters ignored (same section). There
are no confidential clients: ``client_id`` and HTTP Basic client credentials
are accepted and ignored (RFC 6749 §2.1, public clients). Its errors are
RFC 6749 §5.2 objects (``invalid_request``, ``invalid_grant``...), not problems;
the route itself is in ``keel.api.accounts``.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from keel.accounts import InvalidCredentials, LoginResult, ScopeNotGranted
from keel.accounts.email import EMAIL_MAX_LENGTH
from keel.accounts.login import LoginService
from keel.api.contract import PASSWORD_FIELD_MAX, problems
from keel.api.origin import origin_of
from keel.api.ratelimit import count_attempt
from keel.api.sessions import refreshed_body
from keel.api.state import get_context
from keel.auth.sessions import InvalidRefreshToken, RefreshScopeNotGranted, SessionService
from keel.security.passwords import PasswordRejected

__all__ = ["TOKEN_FORM_MAX", "TOKEN_REQUEST_BODY", "token_body", "token_grant", "token_responses"]

TOKEN_FORM_MAX: Final = 16 * 1024
_TOKEN_FORM_FIELDS: Final = 32
_INVALID_GRANT: Final = "The e-mail address or password is wrong, or the account cannot log in."
_REFRESH_FIELD_MAX: Final = 128


def token_body(result: LoginResult) -> dict[str, Any]:
    """The token response of a login (RFC 6749 §5.1; ``refresh_token`` with sessions)."""
    body: dict[str, Any] = {
        "access_token": result.access_token.token,
        "token_type": "bearer",
        "expires_in": result.expires_in,
    }
    if result.refresh_token is not None:
        body["refresh_token"] = result.refresh_token
    return body


TOKEN_REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                    "username": {"type": "string", "maxLength": EMAIL_MAX_LENGTH},
                    "password": {
                        "type": "string",
                        "format": "password",
                        "maxLength": PASSWORD_FIELD_MAX,
                    },
                    "refresh_token": {"type": "string", "maxLength": _REFRESH_FIELD_MAX},
                    "scope": {"type": "string"},
                    "client_id": {"type": "string"},
                },
            }
        }
    },
}


def token_responses() -> dict[int | str, dict[str, Any]]:
    """Problems at the edge, and RFC 6749 §5.2 errors as ``application/json`` on 400."""
    responses = problems(429)
    responses[400]["content"]["application/json"] = {"schema": _OAUTH_ERROR}
    responses[400]["description"] = "RFC 6749 §5.2 error, or a malformed request (problem)"
    return responses


_OAUTH_ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {
        "error": {
            "type": "string",
            "enum": ["invalid_request", "invalid_grant", "invalid_scope", "unsupported_grant_type"],
        },
        "error_description": {"type": "string"},
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


async def token_grant(request: Request, login: LoginService) -> Response:
    sessions = get_context(request).services.get(SessionService)
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
    if len(username) > EMAIL_MAX_LENGTH or len(password) > PASSWORD_FIELD_MAX:
        raise _FormError("A parameter is too long.")
    try:
        result = await login.login(username, password, origin_of(request), scopes=scopes)
    except (InvalidCredentials, PasswordRejected):
        # One answer for every credential failure (SEC-10), as RFC 6749 §5.2 names it.
        return _oauth_error("invalid_grant", _INVALID_GRANT)
    except ScopeNotGranted:
        return _oauth_error("invalid_scope", "The requested scope is not available.")
    body = token_body(result)
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
