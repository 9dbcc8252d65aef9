"""No answer of the API is built from the ``Host`` header: no trailing-slash redirects.

A redirect to the same path with or without a trailing slash is built from
``Host``; a 307 also makes the client resend its body (a password) there. The
API answers such a path 404 instead, like any other unknown path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from keel.api.app import create_app
from keel.db import migrate
from keel.settings import Settings

from ._serve import serve_in_process

EVIL = {"Host": "evil.example"}
_PARAM = re.compile(r"\{[^}]+\}")
_SOME_ID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def app_and_client(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = settings_factory(require_verified_email=False)
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings)
    async with serve_in_process(app) as http:
        yield app, http


def _variants(path: str) -> list[str]:
    concrete = _PARAM.sub(_SOME_ID, path)
    return [concrete.rstrip("/")] if concrete.endswith("/") else [concrete + "/"]


async def test_login_with_a_trailing_slash_is_404_not_a_redirect_to_host(
    app_and_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = app_and_client
    response = await http.post(
        "/auth/login/", json={"email": "a@example.com", "password": "x" * 12}, headers=EVIL
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert "location" not in response.headers
    assert "evil.example" not in response.text


async def test_no_route_answers_a_slash_variant_with_a_location_from_host(
    app_and_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = app_and_client
    checked = 0
    for route in iter_route_contexts(app.routes):
        if route.path is None or not route.methods:
            continue
        for method in sorted(set(route.methods) - {"HEAD"}):
            for path in _variants(route.path):
                response = await http.request(method, path, headers=EVIL)
                checked += 1
                assert "location" not in response.headers, (method, path)
                assert response.status_code in (404, 405), (method, path, response.status_code)
                assert "evil.example" not in response.text, (method, path)
    assert checked >= 15  # the whole API was walked, not an empty route table
