"""SEC-55: SQL-shaped input through every string field of the authentication routes is only data.

The whole app (``create_app``) on SQLite and real PostgreSQL. Each payload goes
into every string field of register, login, the token endpoint (both grants),
refresh, forgot, reset, verify-email and ``PATCH /users/me``: none answers
500, no login succeeds, and afterwards the tables are intact, the one real
account still logs in, and a display name made of SQL comes back verbatim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from keel.accounts import User
from keel.api.app import create_app
from keel.db import Database, migrate
from keel.settings import Settings

from ._serve import serve_in_process

PASSWORD = "correct horse battery staple 42"
PAYLOADS = [
    "' OR '1'='1",
    "admin'--",
    "x'); DROP TABLE users; --",
    "1; SELECT pg_sleep(5)--",
    "%' OR 1=1 --",
    '" OR ""="',
    "') UNION SELECT id, password_hash FROM users --",
]


def _requests(payload: str, access: str) -> list[tuple[str, str, dict[str, Any]]]:
    bearer = {"Authorization": f"Bearer {access}"}
    return [
        ("POST", "/auth/register", {"json": {"email": payload, "password": PASSWORD}}),
        ("POST", "/auth/register", {"json": {"email": "new@keel.example", "password": payload}}),
        ("POST", "/auth/login", {"json": {"email": payload, "password": payload}}),
        ("POST", "/auth/login", {"json": {"email": "owner@keel.example", "password": payload}}),
        (
            "POST",
            "/auth/token",
            {"data": {"grant_type": "password", "username": payload, "password": payload}},
        ),
        (
            "POST",
            "/auth/token",
            {"data": {"grant_type": "refresh_token", "refresh_token": payload}},
        ),
        ("POST", "/auth/refresh", {"json": {"refresh_token": payload}}),
        ("POST", "/auth/password/forgot", {"json": {"email": payload}}),
        ("POST", "/auth/password/reset", {"json": {"token": payload, "new_password": PASSWORD}}),
        ("POST", "/auth/verify-email", {"json": {"token": payload}}),
        ("PATCH", "/users/me", {"json": {"email": payload}, "headers": bearer}),
        (
            "PATCH",
            "/users/me",
            {"json": {"email": "x@keel.example", "current_password": payload}, "headers": bearer},
        ),
    ]


async def _users(database: Database) -> int:
    async with database.unit_of_work() as uow:
        return int((await uow.session.execute(select(func.count()).select_from(User))).scalar_one())


async def test_sec_55_sql_shaped_input_is_data_on_every_auth_route(
    settings_factory: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    settings = settings_factory(
        database_url=database_url,
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
        throttle_enabled=False,  # hundreds of refusals: the limits are not what is tested here
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings)
    database: Database = app.state.keel.database
    async with serve_in_process(app) as http:
        owner = {"email": "owner@keel.example", "password": PASSWORD}
        assert (await http.post("/auth/register", json=owner)).status_code == 202
        login = await http.post("/auth/login", json=owner)
        assert login.status_code == 200
        access = login.json()["access_token"]
        users_before = await _users(database)

        for payload in PAYLOADS:
            for method, path, kwargs in _requests(payload, access):
                response: httpx.Response = await http.request(method, path, **kwargs)
                assert response.status_code < 500, (path, payload, response.text)
                assert "access_token" not in response.text, (path, payload)

            named = await http.patch(
                "/users/me",
                json={"display_name": payload},
                headers={"Authorization": f"Bearer {access}"},
            )
            assert named.status_code == 200, named.text
            me = await http.get("/users/me", headers={"Authorization": f"Bearer {access}"})
            assert me.json()["display_name"] == payload  # stored and returned verbatim

        assert await _users(database) == users_before + 1  # only new@keel.example was created
        assert (await http.post("/auth/login", json=owner)).status_code == 200
