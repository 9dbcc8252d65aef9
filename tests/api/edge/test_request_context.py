"""Request ids and the access line (SEC-43, SEC-66, SEC-67)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI

from keel._logging import request_id_var
from keel.api.middleware.proxy import TRUSTED_PEER_KEY
from keel.api.middleware.request_context import RequestContextMiddleware
from tests.api.edge._app import (
    UNTRUSTED_PEER,
    LogCapture,
    build_app,
    call_asgi,
    client,
    make_scope,
)

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "incoming",
    ["abc", "a" * 128, "1-67891233-abcdef012345678912345678", "req.1_2:3-4", "0"],
)
async def test_sane_incoming_request_id_is_kept_and_echoed(app: FastAPI, incoming: str) -> None:
    async with client(app) as http:
        response = await http.get("/whoami", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    assert response.json()["request_id"] == incoming
    assert response.json()["state_request_id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["", "a" * 129, "has space", "semi;colon", "<script>", "quote'", "slash/", "percent%41"],
)
async def test_insane_incoming_request_id_is_replaced(app: FastAPI, incoming: str) -> None:
    async with client(app) as http:
        response = await http.get("/whoami", headers={"X-Request-ID": incoming})
    echoed = response.headers["x-request-id"]
    assert echoed != incoming
    assert GENERATED.fullmatch(echoed)
    assert response.json()["request_id"] == echoed


async def test_control_characters_in_request_id_are_refused() -> None:
    seen: list[str | None] = []

    async def inner(scope: object, receive: object, send: object) -> None:
        seen.append(request_id_var.get())
        assert callable(send)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    capture = LogCapture()
    middleware = RequestContextMiddleware(inner, logger=capture.logger)
    exchange = await call_asgi(middleware, headers=[("X-Request-ID", "ok\r\nforged: 1")])
    assert GENERATED.fullmatch(exchange.headers["x-request-id"])
    assert seen == [exchange.headers["x-request-id"]]
    assert request_id_var.get() is None  # reset after the request


async def test_request_id_generated_when_absent_and_unique(app: FastAPI) -> None:
    async with client(app) as http:
        first = await http.get("/ok")
        second = await http.get("/ok")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(GENERATED.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/ok", 200), ("GET", "/missing", 404), ("GET", "/boom", 500), ("GET", "/slow", 504)],
)
async def test_request_id_on_every_response(
    app: FastAPI, method: str, path: str, status: int
) -> None:
    async with client(app) as http:
        response = await http.request(method, path, headers={"X-Request-ID": "trace-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "trace-1"
    if status >= 400:
        assert response.json()["request_id"] == "trace-1"


async def test_app_cannot_override_request_id_header() -> None:
    async def inner(scope: object, receive: object, send: object) -> None:
        assert callable(send)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"X-Request-ID", b"mine")]}
        )
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestContextMiddleware(inner, logger=LogCapture().logger)
    scope = make_scope(headers=[("X-Request-ID", "theirs")])
    scope[TRUSTED_PEER_KEY] = True  # as TrustedProxyMiddleware marks a trusted proxy
    exchange = await call_asgi(middleware, scope)
    values = [v for k, v in exchange.start["headers"] if k.lower() == b"x-request-id"]
    assert values == [b"theirs"]


async def test_one_access_line_per_request_as_json(app: FastAPI, log: LogCapture) -> None:
    async with client(app, peer=UNTRUSTED_PEER) as http:
        response = await http.get(
            "/ok", headers={"User-Agent": "curl/8.0", "X-Forwarded-For": "1.2.3.4"}
        )
    (line,) = log.events("http_request")
    assert line["method"] == "GET"
    assert line["path"] == "/ok"
    assert line["status"] == 200
    assert line["client_ip"] == "10.9.9.9"
    assert line["user_agent"] == "curl/8.0"
    assert line["request_id"] == response.headers["x-request-id"]
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"


async def test_sec_43_access_line_never_has_the_query_string(app: FastAPI, log: LogCapture) -> None:
    canary = "Canary-tok-7d1e0c5b"
    async with client(app) as http:
        await http.get(f"/ok?access_token={canary}&x=1")
    (line,) = log.events("http_request")
    assert line["path"] == "/ok"
    assert canary not in log.text
    assert "access_token" not in log.text


async def test_access_line_status_of_server_errors(app: FastAPI, log: LogCapture) -> None:
    async with client(app) as http:
        await http.get("/boom")
        await http.get("/slow")
    statuses = [e["status"] for e in log.events("http_request")]
    assert statuses == [500, 504]


async def test_sec_66_control_characters_in_path_and_user_agent_are_escaped(
    log: LogCapture,
) -> None:
    app = build_app(logger=log.logger)
    forged = "bob\r\n2026-01-01 INFO admin login ok"
    exchange = await call_asgi(
        app,
        make_scope(path=f"/{forged}", headers=[("User-Agent", f"ua{forged}\x00\x1b[31m")]),
    )
    assert exchange.status == 404
    lines = log.lines
    assert len(lines) == 1
    assert "\r" not in log.text.rstrip("\n")
    assert "\n" not in log.text.rstrip("\n")
    record = json.loads(lines[0])
    assert record["path"] == f"/{forged}"
    assert record["user_agent"] == f"ua{forged}\x00\x1b[31m"


async def test_long_user_agent_is_truncated(app: FastAPI, log: LogCapture) -> None:
    async with client(app) as http:
        await http.get("/ok", headers={"User-Agent": "x" * 5000})
    (line,) = log.events("http_request")
    assert len(line["user_agent"]) <= 257


async def test_sec_67_log_lines_inside_the_request_carry_its_id(
    app: FastAPI, log: LogCapture
) -> None:
    async with client(app) as http:
        response = await http.get("/boom", headers={"X-Request-ID": "corr-42"})
    assert response.headers["x-request-id"] == "corr-42"
    events = log.events()
    assert {e["event"] for e in events} == {"unhandled_error", "http_request"}
    assert all(e["request_id"] == "corr-42" for e in events)
