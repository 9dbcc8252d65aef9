"""The one place errors become HTTP: RFC 9457 ``application/problem+json`` with a stable ``code``.

Every error body looks like::

    {"type": "urn:keel:problem:not_found", "title": "Not Found", "status": 404,
     "detail": "...", "code": "not_found", "request_id": "..."}

``detail`` is present only when there is something safe to say. Nothing here
ever echoes a submitted value (SEC-52) or an exception's text for a server
error (SEC-53).

- :func:`problem_response` builds a response for handlers and routes;
  :func:`send_problem` sends the same body from pure ASGI middleware.
- :func:`install_error_handlers` maps ``keel.errors`` (by class, see
  :func:`status_for_error`), request validation errors, and Starlette/FastAPI
  ``HTTPException`` onto problems.
- The request id lives in ``scope["state"]["request_id"]`` (set by
  ``RequestContextMiddleware``); :func:`get_request_id` reads it from a scope,
  a state mapping, a ``State`` or a request.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import iter_route_contexts
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import Scope, Send

from keel._logging import event
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

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "REQUEST_ID_KEY",
    "STATUS_CODES",
    "code_for_status",
    "get_request_id",
    "install_error_handlers",
    "problem_body",
    "problem_response",
    "send_problem",
    "status_for_error",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_PREFIX: Final = "urn:keel:problem:"

#: Key of the request id in ``scope["state"]`` (``request.state.request_id``).
REQUEST_ID_KEY: Final = "request_id"

#: The ``code`` of a problem that is only its HTTP status (a 404 for an unknown path, say).
STATUS_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    412: "precondition_failed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable_content",
    428: "precondition_required",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "deadline_exceeded",
}

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

_LOC_PART_MAX: Final = 64
_MSG_MAX: Final = 200
_MAX_ERRORS: Final = 50

_log = logging.getLogger("keel.api.errors")


# --- request id -------------------------------------------------------------------------------


def get_request_id(source: HTTPConnection | State | Mapping[str, Any]) -> str | None:
    """The request id of a request, from its scope, its state (``State`` or dict) or itself."""
    if isinstance(source, HTTPConnection):
        source = source.scope
    if isinstance(source, State):
        value = getattr(source, REQUEST_ID_KEY, None)
    else:
        state = source.get("state")
        value = (state if isinstance(state, Mapping) else source).get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


# --- building problems ------------------------------------------------------------------------


def code_for_status(status: int) -> str:
    """The stable ``code`` for a bare HTTP status (``404`` → ``not_found``)."""
    return STATUS_CODES.get(status, f"http_{status}")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem document as a dict (``extra`` adds members such as ``errors``)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title or _title(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body["code"] = code
    body["request_id"] = request_id
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return body


def problem_response(
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    return JSONResponse(
        problem_body(status, code, title, detail, request_id, extra),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def send_problem(
    send: Send,
    scope: Scope,
    status: int,
    code: str,
    title: str | None = None,
    *,
    detail: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a complete problem response on a raw ASGI ``send`` (for middleware).

    The request id is taken from ``scope``. The caller must know that no
    response has started yet.
    """
    body = json.dumps(
        problem_body(status, code, title, detail, get_request_id(scope)),
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    raw = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- mapping ----------------------------------------------------------------------------------


def status_for_error(error: KeelError) -> int:
    """The HTTP status of a domain error, by class (unknown ones are 500)."""
    for cls, status in _ERROR_STATUS:
        if isinstance(error, cls):
            return status
    return 500


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strings_in(value: object, depth: int = 0) -> Iterable[str]:
    if depth > 4:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, Mapping):
        for item in list(value.values())[:100]:
            yield from _strings_in(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value[:100]:
            yield from _strings_in(item, depth + 1)


def _echoes_input(msg: str, submitted: object) -> bool:
    """Whether a message repeats a submitted string (a custom validator's f-string, say)."""
    return any(len(text) >= 4 and text in msg for text in _strings_in(submitted))


def _clean_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only ``loc``, ``type`` and ``msg``; never ``input``, ``ctx`` or ``url`` (SEC-52)."""
    loc: list[str | int] = []
    for part in error.get("loc", ()):
        loc.append(part if isinstance(part, int) else _clip(str(part), _LOC_PART_MAX))
    msg = str(error.get("msg", ""))
    if _echoes_input(msg, error.get("input")):
        msg = "Invalid value"
    return {"loc": loc, "type": str(error.get("type", "invalid")), "msg": _clip(msg, _MSG_MAX)}


def _media_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    if "transfer-encoding" in request.headers:
        return True
    length = request.headers.get("content-length", "0").strip()
    return length.isdigit() and int(length) > 0


def _wrong_media_type(request: Request, errors: list[dict[str, Any]]) -> bool:
    """A JSON-body route got a body that is not declared as JSON (SEC-51 → 415)."""
    if not any(err["loc"][:1] == ["body"] for err in errors):
        return False
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or isinstance(getattr(body_field, "field_info", None), Form):
        return False
    media_type = _media_type(request)
    return _has_body(request) and (media_type is None or not _is_json(media_type))


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
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _title(status) else None
    return problem_response(
        status,
        code_for_status(status),
        detail=detail,
        request_id=get_request_id(request),
        headers=headers,
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    errors = [_clean_error(err) for err in raw[:_MAX_ERRORS]]
    request_id = get_request_id(request)
    if any(err["type"] == "json_invalid" for err in errors):
        return problem_response(
            400, "invalid_json", detail="The request body is not valid JSON.", request_id=request_id
        )
    if _wrong_media_type(request, errors):
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
