"""Refused scope checks are audited once per caller, route and window, not once per request.

Every audit append takes the chain's one lock: a non-admin looping over an
admin route must not turn each 403 into a write. Like the rate-limit refusals
(``excess_rate_limit_exceeded``), the first refusal of a caller on a route in
a window is recorded, with its request id; the rest of the window is not.
SQLite with the state file, and PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from keel._clock import FrozenClock
from keel.api.app import create_app
from keel.audit.models import AuditEventRow
from keel.db import migrate
from keel.settings import Settings

from ._accounts_app import audit_rows
from ._serve import HeaderAuthenticator, serve_in_process

USER = {"x-test-user": "plain-user"}
OTHER = {"x-test-user": "other-user"}
WINDOW = 60
SOME_ID = "00000000-0000-0000-0000-000000000001"


@dataclass
class Running:
    app: FastAPI
    http: httpx.AsyncClient
    clock: FrozenClock

    async def refusals(self) -> list[AuditEventRow]:
        return await audit_rows(self.app.state.keel.database, "authz_fail")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_settings(request: pytest.FixtureRequest, sqlite_url: str) -> dict[str, str]:
    if request.param == "sqlite":
        return {"database_url": sqlite_url}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "redis_url": request.getfixturevalue("redis_url"),
        "cache_namespace": request.getfixturevalue("redis_namespace"),
    }


@pytest.fixture
async def running(
    settings_factory: Callable[..., Settings], backend_settings: dict[str, str]
) -> AsyncIterator[Running]:
    settings = settings_factory(rate_limit_window=WINDOW, **backend_settings)
    await asyncio.to_thread(migrate.upgrade, settings.database)
    clock = FrozenClock()
    app = create_app(settings, authenticator=HeaderAuthenticator(), clock=clock)
    async with serve_in_process(app) as http:
        # The store connected first: a gate the store cannot answer records every refusal
        # (evidence over volume), which is not what these tests measure.
        await app.state.keel.supervisor.wait_warmups()
        yield Running(app, http, clock)


async def test_fifty_refused_audit_reads_write_one_row_and_keep_the_first(
    running: Running,
) -> None:
    answers = [await running.http.get("/admin/audit", headers=USER) for _ in range(50)]
    assert {answer.status_code for answer in answers} == {403}
    [row] = await running.refusals()
    assert (row.actor_id, row.target_type, row.target_id) == ("plain-user", "route", "/admin/audit")
    assert row.request_id == answers[0].headers["x-request-id"]
    details = json.loads(row.details)
    assert (details["required_scope"], details["method"]) == ("admin", "GET")
    assert details["window_seconds"] == WINDOW


async def test_refusals_are_counted_apart_per_caller_route_and_window(running: Running) -> None:
    for _ in range(5):
        assert (await running.http.get("/admin/audit", headers=USER)).status_code == 403
        assert (await running.http.get("/admin/audit", headers=OTHER)).status_code == 403
        # Another id on the same route is the same route: an id cannot buy more rows.
        for n in range(3):
            path = f"/admin/users/{SOME_ID[:-1]}{n}"
            assert (await running.http.get(path, headers=USER)).status_code == 403
    assert len(await running.refusals()) == 3

    running.clock.advance(WINDOW)
    assert (await running.http.get("/admin/audit", headers=USER)).status_code == 403
    rows = await running.refusals()
    assert len(rows) == 4
    assert rows[-1].actor_id == "plain-user"
