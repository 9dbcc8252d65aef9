"""The one place errors become HTTP: RFC 9457 problems with a stable ``code``.

Nothing here ever echoes a submitted value (SEC-52, ``keel.api.validation_errors``)
or an exception's text for a server error (SEC-53).

- :func:`install_error_handlers` maps ``keel.errors`` (by class, see
  :func:`status_for_error`), request validation errors, and Starlette/FastAPI
  ``HTTPException`` onto problems.
- A 405 names in ``Allow`` every method the routes at the path accept.
- The problem builders (``problem_response``, ``send_problem``,
  ``get_request_id``, ...) live in ``keel.api.problems``.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from keel._logging import event
from keel.api.problems import (
    code_for_status,
    get_request_id,
    problem_response,
    status_title,
)
from keel.api.validation_errors import clean_errors, wrong_media_type
from keel.errors import (
    ClientError,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    KeelError,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)

__all__ = ["install_error_handlers", "status_for_error"]

# Most specific first: the first class in an error's MRO found here decides.
_ERROR_STATUS: Final[tuple[tuple[type[KeelError], int], ...]] = (
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (TooManyRequests, 429),
    (ClientError, 400),
    (DependencyUnavailable, 503),
)

_log = logging.getLogger("keel.api.errors")


def status_for_error(error: KeelError) -> int:
    """The HTTP status of a domain error, by class (unknown ones are 500)."""
    for cls, status in _ERROR_STATUS:
        if isinstance(error, cls):
            return status
    return 500


@functools.lru_cache(maxsize=256)
def _path_pattern(path: str) -> re.Pattern[str]:
    return compile_path(path)[0]


def _allowed_methods(request: Request) -> str:
    """The methods the routes at this path accept, for a 405's ``Allow``.

    Routes of included routers are walked too (``iter_route_contexts``): a path
    may be served by several routes (``GET /users/me`` is a direct route, its
    ``PATCH`` and ``DELETE`` an included router's).
    """
    path = request.scope["path"]
    methods: set[str] = set()
    for context in iter_route_contexts(getattr(request.app, "routes", ())):
        if context.path and context.methods and _path_pattern(context.path).match(path):
            methods.update(context.methods)
    methods.discard("TRACE")
    return ", ".join(sorted(methods))


async def _on_keel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeelError)
    status = status_for_error(exc)
    request_id = get_request_id(request)
    if status == 401:
        # One opaque answer for every credential failure (SEC-10, RFC 6750 §3).
        return problem_response(
            401,
            exc.code,
            detail="Authentication required.",
            request_id=request_id,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(exc, TooManyRequests):
        # Which limit fired stays in the log and the audit trail, not in the answer.
        return problem_response(
            429,
            exc.code,
            detail="Too many attempts. Try again later.",
            request_id=request_id,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if status >= 500:
        event(
            _log,
            logging.ERROR if status == 500 else logging.WARNING,
            "request_failed",
            status=status,
            code=exc.code,
            error_type=type(exc).__name__,
        )
        # A server-side message may name hosts or settings: keep it in the log.
        return problem_response(status, exc.code, request_id=request_id)
    return problem_response(status, exc.code, detail=exc.message, request_id=request_id)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if request.method == "TRACE" and status == 404:
        # SEC-54: TRACE never works, whether or not something lives at the path.
        status = 405
    if status == 405:
        # Starlette's Allow names the first route at the path only; a path served by several
        # routes (GET /users/me is a direct route, PATCH and DELETE a router's) needs them all.
        headers["Allow"] = _allowed_methods(request)
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail != status_title(status) else None
    )
    return problem_response(
        status,
        code_for_status(status),
        detail=detail,
        request_id=get_request_id(request),
        headers=headers,
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = clean_errors(list(exc.errors()))
    request_id = get_request_id(request)
    if any(err["type"] == "json_invalid" for err in errors):
        return problem_response(
            400, "invalid_json", detail="The request body is not valid JSON.", request_id=request_id
        )
    if wrong_media_type(request, errors):
        return problem_response(
            415,
            "unsupported_media_type",
            detail="The request body must be application/json.",
            request_id=request_id,
        )
    return problem_response(
        422,
        "validation_failed",
        "Unprocessable Content",
        detail="The request did not validate.",
        request_id=request_id,
        extra={"errors": errors},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app`` (domain, HTTP and validation errors).

    Anything else that escapes a route is ``UnhandledErrorMiddleware``'s job.
    """
    app.add_exception_handler(KeelError, _on_keel_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
