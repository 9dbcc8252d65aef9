"""RFC 9457 ``application/problem+json`` documents: building them, sending them, their request id.

Every error body looks like::

    {"type": "urn:keel:problem:not_found", "title": "Not Found", "status": 404,
     "detail": "...", "code": "not_found", "request_id": "..."}

``detail`` is present only when there is something safe to say.

- :func:`problem_response` builds a response for handlers and routes;
  :func:`send_problem` sends the same body from pure ASGI middleware.
- The request id lives in ``scope["state"]["request_id"]`` (set by
  ``RequestContextMiddleware``); :func:`get_request_id` reads it from a scope,
  a state mapping, a ``State`` or a request.

``keel.api.errors`` maps exceptions onto these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from starlette.datastructures import State
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import Scope, Send

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "REQUEST_ID_KEY",
    "STATUS_CODES",
    "code_for_status",
    "get_request_id",
    "problem_body",
    "problem_response",
    "send_problem",
    "status_title",
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


def status_title(status: int) -> str:
    """The reason phrase of ``status`` (``404`` → ``Not Found``), ``Error`` for an unknown one."""
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
        "title": title or status_title(status),
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
