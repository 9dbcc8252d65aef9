"""Parameters the database cannot hold are refused at the edge; SQL parameters never reach logs.

``GET /admin/audit`` passes its filters to the database: a cursor beyond a
64-bit ``seq``, a time that overflows when converted to UTC, a NUL byte that
PostgreSQL text cannot hold, must each be a 422 problem (``validation_failed``)
like every other parameter that does not validate, never a 500. And when a
statement does fail, the ``unhandled_error`` line names no parameter value.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import text

from keel._logging import JsonFormatter
from keel.accounts import AccountService
from keel.api.app import create_app
from keel.api.deps import UoW
from keel.db import migrate
from keel.settings import Settings

from ._serve import HeaderAuthenticator, serve_in_process

ADMIN = {"x-test-user": "root-admin admin"}
INT64_MAX = 2**63 - 1
CANARY = "canary-7f3e9a1c"
BEYOND_INT64 = 2**63 + 4242  # its digits end in ...4242 (also in no source line)


def _failing_router() -> APIRouter:
    """Routes whose statements fail in the database with a parameter bound."""
    router = APIRouter()

    @router.get("/test/missing-table")
    async def missing_table(uow: UoW) -> None:
        await uow.session.execute(text("SELECT :v FROM no_such_table"), {"v": CANARY})

    @router.get("/test/out-of-range")
    async def out_of_range(uow: UoW) -> None:
        await uow.session.execute(text("SELECT CAST(:v AS BIGINT) + 1"), {"v": BEYOND_INT64})

    return router


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("keel.access")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


@pytest.fixture
async def client(
    settings_factory: Callable[..., Settings], database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_factory(database_url=database_url)
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, authenticator=HeaderAuthenticator(), routers=[_failing_router()])
    async with serve_in_process(app) as http:
        yield http


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": str(INT64_MAX + 1)},
        {"cursor": str(INT64_MAX + 1), "order": "desc"},
        {"cursor": "1" + "0" * 40},
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-01:00"},
        {"since": "9999-12-31T23:59:59-23:59"},
        {"actor_id": "a\x00b"},
        {"target_id": "\x00"},
        {"target_type": "user\x00"},
        {"since": "not a time"},
        # The schema says RFC 3339 date-time: not a Unix time, nor a time without seconds.
        {"until": "0.5"},
        {"since": "1700000000"},
        {"since": "2026-01-01T00:00Z"},
        {"since": "2026-01-01 00:00:00Z"},
    ],
)
async def test_out_of_range_and_malformed_audit_filters_are_422_not_500(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/admin/audit", headers=ADMIN, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_failed"
    for value in params.values():
        if len(value) > 3 and value not in ("desc",):
            assert value not in response.text


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": str(INT64_MAX)},
        {"cursor": str(INT64_MAX), "order": "desc"},
        {"since": "0001-01-01T00:00:00+00:00"},
        {"until": "9999-12-31T23:59:59+00:00"},
        {"since": "0001-01-01T00:00:00-01:00", "until": "9999-12-31T23:59:59+01:00"},
        {"actor_id": "a\tb", "target_type": "user", "target_id": "\u2028"},
        {"since": "2026-01-01t00:00:00.123456z"},
    ],
)
async def test_audit_filters_at_the_edge_of_their_range_are_answered(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/admin/audit", headers=ADMIN, params=params)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/test/missing-table", "/test/out-of-range"])
async def test_a_failed_statements_log_line_names_no_parameter_value(
    client: httpx.AsyncClient, access_log: io.StringIO, path: str
) -> None:
    response = await client.get(path)
    lines: list[dict[str, Any]] = [json.loads(line) for line in access_log.getvalue().splitlines()]
    failures = [line for line in lines if line["event"] == "unhandled_error"]
    assert response.status_code == 500
    [failure] = failures
    assert failure["exc_type"]  # the failure is still described: its type and statement
    assert "no_such_table" in failure["exc"] or "BIGINT" in failure["exc"]
    assert CANARY not in access_log.getvalue()
    assert str(BEYOND_INT64) not in access_log.getvalue()


@pytest.fixture
async def accounts_client(
    settings_factory: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_factory(
        database_url=database_url,
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings)
    async with serve_in_process(app) as http:
        yield http
        if app.state.keel.service(AccountService).outbox is not None:
            await app.state.keel.service(AccountService).outbox.drain()


NUL = "a\x00b"
PASSWORD = "correct horse battery staple 42"


async def test_nul_bytes_in_any_field_of_any_route_are_refused_never_500(
    accounts_client: httpx.AsyncClient,
) -> None:
    http = accounts_client
    email = "nul@example.com"
    registered = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 202
    login = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/auth/register", {"json": {"email": email, "password": NUL * 8}}),
        (
            "POST",
            "/auth/register",
            {"json": {"email": f"x{NUL}@example.com", "password": PASSWORD}},
        ),
        (
            "POST",
            "/auth/register",
            {"json": {"email": "y@example.com", "password": PASSWORD, "display_name": NUL}},
        ),
        ("POST", "/auth/verify-email", {"json": {"token": NUL * 10}}),
        ("POST", "/auth/login", {"json": {"email": f"{NUL}@example.com", "password": PASSWORD}}),
        ("POST", "/auth/login", {"json": {"email": email, "password": NUL * 8}}),
        (
            "POST",
            "/auth/token",
            {"content": f"grant_type=password&username={email}&password=a%00b", "headers": form},
        ),
        (
            "POST",
            "/auth/token",
            {"content": "grant_type=refresh_token&refresh_token=a%00b", "headers": form},
        ),
        ("POST", "/auth/refresh", {"json": {"refresh_token": NUL * 20}}),
        ("POST", "/auth/password/forgot", {"json": {"email": f"{NUL}@example.com"}}),
        ("POST", "/auth/password/reset", {"json": {"token": NUL * 20, "new_password": PASSWORD}}),
        (
            "POST",
            "/auth/password/change",
            {"json": {"current_password": NUL * 8, "new_password": PASSWORD}, "headers": auth},
        ),
        ("PATCH", "/users/me", {"json": {"display_name": NUL}, "headers": auth}),
        (
            "PATCH",
            "/users/me",
            {
                "json": {"email": f"{NUL}@example.com", "current_password": PASSWORD},
                "headers": auth,
            },
        ),
        ("DELETE", "/sessions/a%00b", {"headers": auth}),
        ("GET", "/users/me", {"params": {"x": NUL}, "headers": auth}),
    ]
    for method, path, options in attempts:
        response = await http.request(method, path, **options)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
    assert (await http.get("/users/me", headers=auth)).json()["display_name"] is None
