"""Errors become RFC 9457 problems (SEC-51..54)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.datastructures import State

from keel.api.errors import status_for_error
from keel.api.middleware import UnhandledErrorMiddleware
from keel.api.problems import (
    code_for_status,
    get_request_id,
    problem_body,
    problem_response,
    send_problem,
)
from keel.errors import CacheUnavailable, InvalidInput, KeelError
from tests.api.edge._app import DOMAIN_ERRORS, LogCapture, call_asgi, client, make_scope

CANARY = "Canary-9f3b2c7e-pass"


def _assert_problem(response_json: dict[str, Any], status: int, code: str) -> None:
    assert response_json["type"] == f"urn:keel:problem:{code}"
    assert response_json["status"] == status
    assert response_json["code"] == code
    assert isinstance(response_json["title"], str)
    assert response_json["title"]


# --- SEC-52: validation errors never echo input ----------------------------------------------


async def test_sec_52_validation_error_lacks_the_submitted_password(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post("/items", json={"password": CANARY, "count": "many"})
    assert response.status_code == 422
    assert CANARY not in response.text
    assert "many" not in response.text
    body = response.json()
    _assert_problem(body, 422, "validation_failed")
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["errors"]
    for error in body["errors"]:
        assert set(error) == {"loc", "type", "msg"}
    locs = [tuple(e["loc"]) for e in body["errors"]]
    assert ("body", "name") in locs
    assert ("body", "count") in locs


async def test_sec_52_unknown_field_is_rejected_without_its_value(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post("/items", json={"name": "a", "password": "b", "extra": CANARY})
    assert response.status_code == 422
    assert CANARY not in response.text
    assert any(e["type"] == "extra_forbidden" for e in response.json()["errors"])


async def test_sec_52_custom_validator_message_echoing_input_is_replaced(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post("/nick", json={"nick": f"{CANARY}!"})
    assert response.status_code == 422
    assert CANARY not in response.text
    assert response.json()["errors"][0]["msg"] == "Invalid value"


async def test_sec_52_invalid_json_is_400_without_echo(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post(
            "/items",
            content=f'{{"name": "a", "password": "{CANARY}"'.encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    _assert_problem(response.json(), 400, "invalid_json")
    assert CANARY not in response.text


# --- SEC-51: media type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_sec_51_non_json_body_is_415(app: FastAPI, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    payload = json.dumps({"name": "a", "password": CANARY}).encode()
    async with client(app) as http:
        response = await http.post("/items", content=payload, headers=headers)
    assert response.status_code == 415
    _assert_problem(response.json(), 415, "unsupported_media_type")
    assert CANARY not in response.text


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
async def test_json_media_types_are_accepted(app: FastAPI, content_type: str) -> None:
    payload = json.dumps({"name": "a", "password": "b"}).encode()
    async with client(app) as http:
        response = await http.post(
            "/items", content=payload, headers={"Content-Type": content_type}
        )
    assert response.status_code == 200


async def test_empty_body_is_a_validation_error_not_415(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post("/items")
    assert response.status_code == 422


# --- SEC-54: methods -----------------------------------------------------------------------------


async def test_sec_54_undeclared_method_is_405_with_allow(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.patch("/ok")
    assert response.status_code == 405
    _assert_problem(response.json(), 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize("path", ["/", "/ok", "/items", "/nothing/here"])
async def test_sec_54_trace_is_405_everywhere(app: FastAPI, path: str) -> None:
    async with client(app) as http:
        response = await http.request("TRACE", path, headers={"X-Secret": CANARY})
    assert response.status_code == 405
    _assert_problem(response.json(), 405, "method_not_allowed")
    assert "allow" in response.headers
    assert "TRACE" not in response.headers["allow"]
    assert CANARY not in response.text


async def test_sec_54_trace_allow_lists_the_path_methods(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.request("TRACE", "/items")
    assert response.headers["allow"] == "POST"


# --- HTTP exceptions and domain errors ---------------------------------------------------------


async def test_404_is_a_problem(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    _assert_problem(body, 404, "not_found")
    assert body["title"] == "Not Found"
    assert "detail" not in body


async def test_http_exception_keeps_detail_and_headers(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/unauthorized")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    _assert_problem(body, 401, "unauthorized")
    assert body["detail"] == "Sign in first."


@pytest.mark.parametrize(
    ("kind", "status", "code", "detail"),
    [
        ("invalid", 422, "invalid_input", "The name is not acceptable."),
        ("missing", 404, "not_found", "No such user."),
        ("conflict", 409, "conflict", "The e-mail is taken."),
        ("client", 400, "bad_request", "Bad request, plainly."),
        ("database", 503, "database_unavailable", None),
        ("config", 500, "configuration_error", None),
        ("base", 500, "keel_error", None),
    ],
)
async def test_domain_errors_map_by_class(
    app: FastAPI, kind: str, status: int, code: str, detail: str | None
) -> None:
    async with client(app) as http:
        response = await http.get(f"/domain/{kind}")
    assert response.status_code == status
    body = response.json()
    _assert_problem(body, status, code)
    assert body.get("detail") == detail
    if detail is None:  # server-side messages stay in the log
        assert str(DOMAIN_ERRORS[kind]) not in response.text


def test_status_for_error_follows_the_class_tree() -> None:
    assert status_for_error(CacheUnavailable()) == 503
    assert status_for_error(InvalidInput(code="weak_password")) == 422

    class Custom(InvalidInput):
        code = "custom"

    assert status_for_error(Custom()) == 422
    assert status_for_error(KeelError()) == 500


# --- SEC-53: unexpected errors -----------------------------------------------------------------


async def test_sec_53_unhandled_error_is_a_generic_500(app: FastAPI, log: LogCapture) -> None:
    async with client(app) as http:
        response = await http.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    _assert_problem(body, 500, "internal_error")
    assert body["request_id"] == response.headers["x-request-id"] == "boom-1"
    for leak in ("Traceback", "kaboom", "sqlalchemy", "/srv/keel", "hunter2", "RuntimeError"):
        assert leak not in response.text
    # Logged exactly once, with the traceback, under the request id.
    (logged,) = log.events("unhandled_error")
    assert logged["level"] == "error"
    assert logged["exc_type"] == "RuntimeError"
    assert "Traceback" in logged["exc"]
    assert logged["request_id"] == "boom-1"
    assert logged["path"] == "/boom"


async def test_sec_53_error_after_the_response_started_just_ends_it(
    app: FastAPI, log: LogCapture
) -> None:
    exchange = await call_asgi(app, make_scope(path="/broken-stream"))
    assert exchange.status == 200  # the one start message; no 500 after it
    assert b"first chunk" in exchange.body
    assert not exchange.complete
    (logged,) = log.events("unhandled_error")
    assert logged["response_started"] is True


async def test_unhandled_middleware_does_not_reraise() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("inner text")

    capture = LogCapture()
    exchange = await call_asgi(UnhandledErrorMiddleware(failing, logger=capture.logger))
    assert exchange.status == 500
    assert b"inner text" not in exchange.body
    assert len(capture.events("unhandled_error")) == 1


# --- building blocks ----------------------------------------------------------------------------


def test_problem_response_shape() -> None:
    response = problem_response(
        409, "conflict", "Conflict", "Taken.", "rid-1", {"Retry-After": "3"}
    )
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"
    assert response.headers["retry-after"] == "3"
    assert json.loads(bytes(response.body)) == {
        "type": "urn:keel:problem:conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "Taken.",
        "code": "conflict",
        "request_id": "rid-1",
    }


def test_problem_body_defaults_title_and_keeps_core_members() -> None:
    body = problem_body(429, "rate_limited", extra={"status": 200, "retry_after": 5})
    assert body["title"] == "Too Many Requests"
    assert body["status"] == 429  # extra never overrides the core members
    assert body["retry_after"] == 5
    assert "detail" not in body
    assert problem_body(599, "odd")["title"] == "Error"


async def test_send_problem_from_raw_asgi() -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    scope = make_scope()
    scope["state"]["request_id"] = "rid-2"
    await send_problem(send, scope, 413, "payload_too_large", headers=[("Connection", "close")])
    start, body = messages
    headers = dict(start["headers"])
    assert start["status"] == 413
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["request_id"] == "rid-2"
    assert body["more_body"] is False


def test_get_request_id_sources() -> None:
    scope = make_scope()
    assert get_request_id(scope) is None
    scope["state"]["request_id"] = "rid-3"
    assert get_request_id(scope) == "rid-3"
    assert get_request_id(scope["state"]) == "rid-3"
    assert get_request_id(State(scope["state"])) == "rid-3"
    assert get_request_id(State({})) is None


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "not_found"), (405, "method_not_allowed"), (429, "rate_limited"), (418, "http_418")],
)
def test_code_for_status(status: int, code: str) -> None:
    assert code_for_status(status) == code
