"""The API contract: every problem an operation can answer, declared once.

- :data:`PROBLEM_CODES` is every stable ``code`` a keel problem+json body can
  carry; the ``Problem`` schema component makes it an ``enum``.
  ``tests/contract/test_problem_codes.py`` reads the source and fails when a
  code is raised that is not listed here (or listed and never raised).
- :func:`problems` is what a route passes as ``responses=``: the statuses it
  answers itself, plus the ones every operation can get from the edge
  (:data:`EDGE_STATUSES`: bad framing, ``https_required``, a body too large,
  the error guard, an unavailable dependency, the deadline), each with its
  ``application/problem+json`` body and the headers that go with it.
- :func:`authenticated` adds the bearer security requirement and 401/403.
- :func:`install_contract` makes ``/openapi.json`` carry the ``Problem``
  component, the bearer scheme (OAuth 2.0, its token URL ``/auth/token``),
  and the limits a request schema marks with ``x-keel-limit``, filled from
  the values the server checks: the password policy's lengths, the roles and
  audit actions this application knows.

Statuses answered before the app sees the request (431 for an oversized head)
are the server's, not an operation's, and are not listed.

Plain ``OPTIONS`` is not an operation: it is answered 405 with the ``Allow``
of the path like any other method the path does not have; with CORS origins
configured, a preflight is answered by the CORS middleware before routing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keel.api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, STATUS_CODES
from keel.security.passwords import PasswordPolicy
from keel.settings import Settings

__all__ = [
    "AUDIT_ACTION",
    "BEARER_SCHEME",
    "EDGE_STATUSES",
    "LIMIT_KEY",
    "NEW_PASSWORD",
    "PASSWORD",
    "PASSWORD_FIELD_MAX",
    "PROBLEM_CODES",
    "ROLE",
    "authenticated",
    "build_openapi",
    "install_contract",
    "operations",
    "problems",
]

#: Every ``code`` of keel's own problems (the bare-status ones come from ``STATUS_CODES``).
PROBLEM_CODES: Final[frozenset[str]] = frozenset(
    {
        "audit_append_interrupted",
        "audit_chain_broken",
        "cache_full",
        "cache_unavailable",
        "configuration_error",
        "cors_null",
        "cors_origin_invalid",
        "cors_preflight_rejected",
        "cors_wildcard_credentials",
        "current_password_invalid",
        "current_password_required",
        "database_unavailable",
        "dependency_unavailable",
        "display_name_invalid",
        "email_invalid",
        "email_taken",
        "https_required",
        "invalid_credentials",
        "invalid_framing",
        "invalid_input",
        "invalid_json",
        "invalid_page_size",
        "invalid_refresh_token",
        "invalid_scope",
        "invalid_time_range",
        "invalid_token",
        "json_too_complex",
        "keel_error",
        "key_already_staged",
        "key_is_current",
        "key_not_published_long_enough",
        "key_rotation_refused",
        "metrics_unauthorized",
        "no_staged_key",
        "nothing_to_prune",
        "own_admin_access",
        "password_blocklisted",
        "password_invalid_characters",
        "password_rejected",
        "password_too_long",
        "password_too_short",
        "prune_past_head",
        "reset_token_invalid",
        "role_unknown",
        "unauthenticated",
        "unknown_key",
        "user_not_found",
        "validation_failed",
        "verification_token_invalid",
    }
    | set(STATUS_CODES.values())
)

#: The longest password field read (JSON or form): large enough that the password policy,
#: not the schema, refuses long passwords with its own reason code (KEEL_PASSWORD_MAX_LENGTH
#: is at most 4096, and NFKC may shrink the input).
PASSWORD_FIELD_MAX: Final = 16 * 1024
#: What any request can be answered, whatever its operation.
EDGE_STATUSES: Final = (400, 403, 413, 500, 503, 504)
#: The security scheme of operations that need an access token (RFC 6750, from ``/auth/token``).
BEARER_SCHEME: Final = "access_token"
_TOKEN_URL: Final = "/auth/token"  # noqa: S105 - a path
#: The JSON schema key that marks a property whose limits come from the settings.
LIMIT_KEY: Final = "x-keel-limit"
#: The limit name of a new password (``KEEL_PASSWORD_MIN_LENGTH`` / ``_MAX_LENGTH``).
NEW_PASSWORD: Final = "new_password"  # noqa: S105 - a limit's name, not a password
#: The limit name of a password already set (at most ``KEEL_PASSWORD_MAX_LENGTH``).
PASSWORD: Final = "password"  # noqa: S105 - a limit's name, not a password
#: The limit name of an audit action filter: keel's actions and the application's.
AUDIT_ACTION: Final = "audit_action"
#: The limit name of a role an admin gives: keel's roles and the application's.
ROLE: Final = "role"

_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Malformed request: bad framing, invalid or too complex JSON, or a refused token",
    401: "No valid credentials (WWW-Authenticate: Bearer)",
    403: "Not allowed: a missing scope, an API key on a user route, or plain HTTP via a proxy",
    404: "No such resource, or not the caller's",
    409: "The change clashes with the current state",
    413: "The request body is too large",
    415: "The request body must be application/json",
    422: "The input did not validate",
    429: "Too many attempts: retry after Retry-After seconds",
    500: "Internal error (details stay in the log)",
    503: "A backing service (database, cache) is unavailable",
    504: "The request took longer than KEEL_REQUEST_TIMEOUT",
}

_HEADERS: Final[Mapping[int, dict[str, Any]]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "string", "pattern": r"^[0-9]+$"}, "required": True}},
}

_REF: Final = {"$ref": "#/components/schemas/Problem"}
_NO_NUL: Final = "^[^\\u0000]*$"


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route answering ``statuses`` (plus :data:`EDGE_STATUSES`)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *EDGE_STATUSES}):
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _REF}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        documented[status] = response
    return documented


def authenticated(*statuses: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Route keyword arguments of an operation that needs an access token."""
    return {
        "responses": problems(401, 403, *statuses),
        "openapi_extra": {**(extra or {}), "security": [{BEARER_SCHEME: []}]},
    }


def _problem_schema() -> dict[str, Any]:
    error = {
        "type": "object",
        "required": ["loc", "type", "msg"],
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "type": {"type": "string"},
            "msg": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "description": "RFC 9457 problem details; `code` is stable, the texts are not.",
        "required": ["type", "title", "status", "code", "request_id"],
        "properties": {
            "type": {"type": "string", "pattern": f"^{PROBLEM_TYPE_PREFIX}[a-z0-9_]+$"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": sorted(PROBLEM_CODES)},
            "request_id": {"type": ["string", "null"]},
            "errors": {"type": "array", "items": error},
        },
    }


def _limits(app: FastAPI, settings: Settings) -> dict[str, dict[str, Any]]:
    """What each ``x-keel-limit`` name stands for in this app: the values the server checks."""
    policy = PasswordPolicy(settings.passwords)
    context = getattr(app.state, "keel", None)
    actions: frozenset[str] = getattr(context, "audit_actions", frozenset())
    roles: frozenset[str] = getattr(getattr(context, "roles", None), "names", frozenset())
    return {
        # Any password with NUL is refused (password_invalid_characters).
        NEW_PASSWORD: {
            "minLength": policy.min_length,
            "maxLength": policy.max_length,
            "pattern": _NO_NUL,
        },
        PASSWORD: {"maxLength": policy.max_length, "pattern": _NO_NUL},
        AUDIT_ACTION: {"enum": sorted(str(action) for action in actions)},
        ROLE: {"enum": sorted(roles)},
    }


def _apply_limits(node: Any, limits: Mapping[str, Mapping[str, int]]) -> None:
    if isinstance(node, dict):
        name = node.pop(LIMIT_KEY, None)
        if isinstance(name, str):
            node.update(limits[name])
        for value in node.values():
            _apply_limits(value, limits)
    elif isinstance(node, list):
        for value in node:
            _apply_limits(value, limits)


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with keel's contract completed."""
    document = get_openapi(
        title=app.title, version=app.version, routes=app.routes, description=app.description
    )
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _problem_schema()
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "oauth2",
        "description": "An access token from /auth/login or /auth/token, as `Bearer` (RFC 6750)",
        "flows": {"password": {"tokenUrl": _TOKEN_URL, "refreshUrl": _TOKEN_URL, "scopes": {}}},
    }
    _apply_limits(document, _limits(app, settings))
    _drop_default_validation_errors(document)
    return document


def _drop_default_validation_errors(document: dict[str, Any]) -> None:
    """FastAPI documents a JSON 422 on every operation with parameters; keel's routes say
    themselves whether they answer 422 (as a problem), so the default goes."""
    default = "#/components/schemas/HTTPValidationError"
    for _, _, operation in operations(document):
        content = operation.get("responses", {}).get("422", {}).get("content", {})
        if content.get("application/json", {}).get("schema", {}).get("$ref") == default:
            del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def install_contract(app: FastAPI, settings: Settings) -> None:
    """Serve :func:`build_openapi` at ``/openapi.json`` (built once, on first request)."""
    cache: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not cache:
            cache.append(build_openapi(app, settings))
        return cache[0]

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def operations(document: Mapping[str, Any]) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    """Every (method, path, operation) of an OpenAPI document."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "options", "head", "trace"}:
                yield method.upper(), path, operation
