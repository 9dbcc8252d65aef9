"""An incoming X-Request-ID is taken only from a trusted proxy; anyone else gets keel's own.

The request id is stored in the audit rows a request writes: a client that
could choose it could make its rows look like another request's, or plant a
value an investigator searches for. As Envoy does for external requests, keel
makes a fresh id unless the direct peer is a trusted proxy
(``KEEL_TRUSTED_PROXIES``), whose id it keeps for correlation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from keel.api.app import create_app
from keel.audit.models import AuditEventRow
from keel.db import migrate
from keel.settings import Settings

from ._accounts_app import audit_rows
from ._serve import serve_in_process

CHOSEN = "chosen-by-the-client-0042"
UNTRUSTED = ("203.0.113.9", 40000)
TRUSTED = ("10.20.0.5", 40000)
LOGIN = {"email": "nobody@example.com", "password": "not the password at all"}


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]) -> FastAPI:
    settings = settings_factory(trusted_proxies="10.20.0.0/16")
    await asyncio.to_thread(migrate.upgrade, settings.database)
    return create_app(settings)


async def _login_from(
    app: FastAPI, peer: tuple[str, int], **headers: str
) -> tuple[httpx.Response, list[AuditEventRow]]:
    """A failed login from ``peer``, and the audit rows afterwards."""
    async with serve_in_process(app, client=peer) as http:
        response = await http.post("/auth/login", json=LOGIN, headers=headers)
        rows = await audit_rows(app.state.keel.database)
    assert response.status_code == 401, response.text
    return response, rows


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-ID": CHOSEN},
        {"X-Request-ID": CHOSEN, "X-Forwarded-For": "10.20.0.7"},
        {"X-Request-ID": CHOSEN, "X-Forwarded-Proto": "https"},
    ],
)
async def test_an_untrusted_clients_request_id_never_reaches_the_audit_row(
    app: FastAPI, headers: dict[str, str]
) -> None:
    response, rows = await _login_from(app, UNTRUSTED, **headers)
    issued = response.headers["x-request-id"]
    assert issued != CHOSEN
    assert response.json()["request_id"] == issued
    assert rows, "the failed login is audited"
    assert {row.request_id for row in rows} == {issued}


async def test_a_trusted_proxys_request_id_is_kept_in_the_audit_row(app: FastAPI) -> None:
    response, rows = await _login_from(
        app, TRUSTED, **{"X-Request-ID": CHOSEN, "X-Forwarded-For": "198.51.100.4"}
    )
    assert response.headers["x-request-id"] == CHOSEN
    assert rows
    assert {(row.request_id, row.source_ip) for row in rows} == {(CHOSEN, "198.51.100.4")}
