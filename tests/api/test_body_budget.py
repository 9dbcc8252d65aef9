"""A JSON body's cost is bounded before anything parses or validates it (SEC-51).

Authentication routes take at most ``KEEL_MAX_AUTH_BODY_BYTES``; every JSON
body at most ``KEEL_MAX_JSON_MEMBERS`` members and elements and
``KEEL_MAX_JSON_DEPTH`` levels. A body past a bound is refused with a
problem+json and a stable code, at a cost that does not grow with what it holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.settings import Settings

from ._accounts_app import STRONG, build_accounts_app, running

SettingsFactory = Callable[..., Settings]
MIB = 1024 * 1024
# Refusing must cost less than this (the body is in memory already; parsing and validating
# it cost 0.27-0.8 s before the bound existed).
REFUSAL_BUDGET_S = 0.010
JSON = {"content-type": "application/json"}


def _many_members(size: int) -> bytes:
    """A login body padded with unknown members to ``size`` bytes (~90k at 1 MiB)."""
    head = {"email": "a@keel.example", "password": STRONG}
    parts = [json.dumps(head)[:-1]]
    total = len(parts[0])
    i = 0
    while total < size - 16:
        member = f',"{i:x}":1'
        parts.append(member)
        total += len(member)
        i += 1
    return ("".join(parts) + "}").encode()


def _deep(levels: int) -> bytes:
    return (
        b'{"email":"a@keel.example","password":"x","extra":' + b"[" * levels + b"]" * levels + b"}"
    )


@pytest.fixture
async def http(
    settings_factory: SettingsFactory, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    accounts = build_accounts_app(settings_factory(), tmp_path / "mail.jsonl")
    async with running(accounts) as client:
        yield client


@pytest.fixture
async def roomy(
    settings_factory: SettingsFactory, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Size limits of 2 MiB everywhere: only the member and depth bounds are left to refuse."""
    settings = settings_factory(max_body_bytes=2 * MIB, max_auth_body_bytes=2 * MIB)
    accounts = build_accounts_app(settings, tmp_path / "mail.jsonl")
    async with running(accounts) as client:
        yield client


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def test_sec_51_a_body_of_131k_members_is_refused_cheaply(roomy: httpx.AsyncClient) -> None:
    body = _many_members(MIB)
    assert body.count(b":") > 85_000
    headers = {"content-type": "application/json"}
    elapsed = []
    for _ in range(5):
        started = time.perf_counter()
        response = await roomy.post("/auth/login", content=body, headers=headers)
        elapsed.append(time.perf_counter() - started)
        _problem(response, 400, "json_too_complex")
    assert min(elapsed) < REFUSAL_BUDGET_S, elapsed


async def test_sec_51_authentication_routes_take_small_bodies_only(
    http: httpx.AsyncClient,
) -> None:
    big = _many_members(33 * 1024)
    for path in ("/auth/login", "/auth/register", "/auth/password/forgot"):
        response = await http.post(path, content=big, headers={"content-type": "application/json"})
        body = _problem(response, 413, "payload_too_large")
        assert "32768" in body["detail"]
    response = await http.patch(
        "/users/me", content=big, headers={"content-type": "application/json"}
    )
    _problem(response, 413, "payload_too_large")


async def test_sec_51_nesting_past_the_depth_bound_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/auth/login", content=_deep(40), headers=JSON)
    _problem(response, 400, "json_too_complex")
    response = await http.post("/auth/login", content=_deep(2000), headers=JSON)
    _problem(response, 400, "json_too_complex")


async def test_bodies_within_the_bounds_reach_validation(http: httpx.AsyncClient) -> None:
    within = await http.post("/auth/login", content=_deep(20), headers=JSON)
    assert within.status_code in {400, 422}, within.text
    assert within.json()["code"] != "json_too_complex"
    # Separators inside strings are not structure.
    text = json.dumps({"email": "a@keel.example", "password": ":," * 2000})
    response = await http.post("/auth/login", content=text, headers=JSON)
    assert response.status_code != 400 or response.json()["code"] != "json_too_complex"


async def test_the_largest_valid_authentication_body_fits(http: httpx.AsyncClient) -> None:
    # A password change's size: two passwords of the longest allowed length in astral
    # code points, \u-escaped (sent to login, whose validation then refuses the extra one).
    password = "\U0001f510" * 1024
    body = json.dumps({"email": "a@keel.example", "password": password, "new": password})
    assert len(body) > 24_000
    response = await http.post("/auth/login", content=body.encode(), headers=JSON)
    assert response.status_code == 422, response.text  # reached validation
    assert response.json()["code"] == "validation_failed"
