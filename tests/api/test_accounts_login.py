"""POST /auth/login and /auth/token: storage (SEC-06/07), no default accounts (SEC-09), one opaque
failure (SEC-10), one verification per attempt (SEC-11), no-store (SEC-58), RFC 6749 §5."""

from __future__ import annotations

import base64
import json
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import argon2
import bcrypt
import httpx
import pytest
from sqlalchemy import func, select, update

from keel._clock import FrozenClock
from keel.accounts import User
from keel.security.hashing import PasswordHasher
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, build_accounts_app, running, user_row

SettingsFactory = Callable[..., Settings]
PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")
FORM = {"content-type": "application/x-www-form-urlencoded"}
INVALID_GRANT = "The e-mail address or password is wrong, or the account cannot log in."


@pytest.fixture
def settings(settings_factory: SettingsFactory, database_url: str) -> Settings:
    return settings_factory(database_url=database_url, public_url="https://app.keel.example")


@pytest.fixture
def accounts(settings: Settings, tmp_path: Path, clock: FrozenClock) -> AccountsApp:
    return build_accounts_app(settings, tmp_path / "mail.jsonl", clock=clock)


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


async def _login(http: httpx.AsyncClient, email: str, password: str, **kw: Any) -> httpx.Response:
    return await http.post("/auth/login", json={"email": email, "password": password}, **kw)


async def _token(http: httpx.AsyncClient, **params: str) -> httpx.Response:
    return await http.post("/auth/token", content=urlencode(params), headers=FORM)


async def _set(accounts: AccountsApp, email_key: str, **values: Any) -> None:
    async with accounts.database.unit_of_work() as uow:
        await uow.session.execute(update(User).where(User.email_key == email_key).values(**values))


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


# --- SEC-06, SEC-07: what is stored -------------------------------------------------------------


async def test_sec_06_argon2id_with_owasp_parameters(
    settings: Settings, tmp_path: Path, clock: FrozenClock
) -> None:
    accounts = build_accounts_app(
        settings, tmp_path / "mail.jsonl", clock=clock, hasher=PasswordHasher(settings.passwords)
    )
    async with running(accounts) as http:
        for email in ("one@keel.example", "two@keel.example"):
            await http.post("/auth/register", json={"email": email, "password": STRONG})
        hashes = []
        for key in ("one@keel.example", "two@keel.example"):
            row = await user_row(accounts.database, key)
            assert row is not None
            match = PHC.match(row.password_hash)
            assert match is not None, "not an argon2id PHC string"
            memory, time_cost, parallelism = map(int, match.groups()[:3])
            assert (memory >= 19456 and time_cost >= 2) or (memory >= 47104 and time_cost == 1)
            assert parallelism >= 1
            assert len(base64.b64decode(match.group(4) + "==")) >= 16  # salt
            hashes.append(row.password_hash)
        assert hashes[0] != hashes[1]


@pytest.mark.parametrize(
    "legacy",
    [
        pytest.param(
            lambda password: argon2.PasswordHasher(memory_cost=8192, time_cost=1).hash(password),
            id="weak-argon2",
        ),
        pytest.param(
            lambda password: bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode(),
            id="bcrypt",
        ),
    ],
)
async def test_sec_07_outdated_hash_upgraded_at_login(
    settings: Settings, tmp_path: Path, clock: FrozenClock, legacy: Callable[[str], str]
) -> None:
    hasher = PasswordHasher(settings.passwords)
    accounts = build_accounts_app(settings, tmp_path / "mail.jsonl", clock=clock, hasher=hasher)
    async with running(accounts) as http:
        email = "legacy@keel.example"
        await accounts.verified_user(http, email)
        await _set(accounts, email, password_hash=legacy(STRONG))
        hashes_before = hasher.hashes
        assert (await _login(http, email, STRONG)).status_code == 200
        assert hasher.hashes == hashes_before + 1
        row = await user_row(accounts.database, email)
        assert row is not None
        assert not hasher.needs_rehash(row.password_hash)
        assert PHC.match(row.password_hash)
        assert (await _login(http, email, STRONG)).status_code == 200
        assert hasher.hashes == hashes_before + 1  # current now: no second rehash


# --- SEC-09: no default accounts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"), [("admin", "admin"), ("root", "root"), ("sa", "sa")]
)
async def test_sec_09_no_default_accounts(
    http: httpx.AsyncClient, accounts: AccountsApp, username: str, password: str
) -> None:
    for email in (username, f"{username}@localhost", f"{username}@keel.example"):
        assert (await _login(http, email, password)).status_code == 401
        grant = await _token(http, grant_type="password", username=email, password=password)
        assert grant.json() == {"error": "invalid_grant", "error_description": INVALID_GRANT}
    async with accounts.database.unit_of_work() as uow:
        assert (await uow.session.execute(select(func.count()).select_from(User))).scalar_one() == 0


# --- SEC-10, SEC-11: one answer, one verification ----------------------------------------------


@pytest.fixture
async def four_failures(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> dict[str, tuple[str, str]]:
    await accounts.verified_user(http, "known@keel.example")
    await accounts.verified_user(http, "disabled@keel.example")
    await _set(accounts, "disabled@keel.example", is_active=False)
    await http.post("/auth/register", json={"email": "unverified@keel.example", "password": STRONG})
    return {
        "unknown_user": ("nobody@keel.example", STRONG),
        "wrong_password": ("known@keel.example", STRONG + "!"),
        "disabled": ("disabled@keel.example", STRONG),
        "email_unverified": ("unverified@keel.example", STRONG),
    }


async def test_sec_10_identical_failures(
    http: httpx.AsyncClient, four_failures: dict[str, tuple[str, str]]
) -> None:
    same_id = {"x-request-id": "sec-10-probe"}
    answers = [
        await _login(http, email, password, headers=same_id)
        for email, password in four_failures.values()
    ]
    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.content for answer in answers}) == 1
    assert len({frozenset(answer.headers.keys()) for answer in answers}) == 1
    assert len({answer.headers["www-authenticate"] for answer in answers}) == 1
    assert answers[0].json()["code"] == "invalid_credentials"

    grants = [
        await _token(http, grant_type="password", username=email, password=password)
        for email, password in four_failures.values()
    ]
    assert {grant.status_code for grant in grants} == {400}
    assert len({grant.content for grant in grants}) == 1
    assert len({frozenset(g.headers.keys()) - {"x-request-id"} for g in grants}) == 1
    assert grants[0].json()["error"] == "invalid_grant"


async def test_sec_11_exactly_one_verification_per_attempt(
    http: httpx.AsyncClient, accounts: AccountsApp, four_failures: dict[str, tuple[str, str]]
) -> None:
    attempts = {
        **four_failures,
        "not_an_address": ("admin", "admin"),
        "success": ("known@keel.example", STRONG),
    }
    for path, (email, password) in attempts.items():
        before = accounts.hasher.verifications
        response = await _login(http, email, password)
        assert response.status_code == (200 if path == "success" else 401), path
        assert accounts.hasher.verifications == before + 1, path


# --- /auth/login and /auth/token answers ---------------------------------------------------------


async def test_sec_58_token_answers_are_not_stored(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "cache@keel.example")
    login = await _login(http, "cache@keel.example", STRONG)
    token = await _token(
        http, grant_type="password", username="cache@keel.example", password=STRONG
    )
    failed = await _login(http, "cache@keel.example", "wrong password here!")
    for response in (login, token, failed):
        assert response.headers["cache-control"] == "no-store"
    assert token.headers["pragma"] == "no-cache"


async def test_login_issues_a_bearer_access_token(
    http: httpx.AsyncClient, accounts: AccountsApp, settings: Settings
) -> None:
    await accounts.verified_user(http, "tokens@keel.example")
    body = (await _login(http, "tokens@keel.example", STRONG)).json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.tokens.access_ttl
    claims = accounts.tokens.verify(body["access_token"])
    row = await user_row(accounts.database, "tokens@keel.example")
    assert row is not None
    assert claims.subject == str(row.id)
    assert claims.scopes == {"user"}
    assert set(_claims(body["access_token"])) == {
        "iss",
        "aud",
        "sub",
        "iat",
        "exp",
        "jti",
        "sid",
        "scope",
    }
    # A new session id per login.
    again = accounts.tokens.verify(
        (await _login(http, "tokens@keel.example", STRONG)).json()["access_token"]
    )
    assert again.session_id != claims.session_id


async def test_token_endpoint_password_grant(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "oauth@keel.example")
    ok = await _token(
        http, grant_type="password", username="oauth@keel.example", password=STRONG, client_id="cli"
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/json"
    body = ok.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    me = await http.get("/users/me", headers={"authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200

    scoped = await _token(
        http, grant_type="password", username="oauth@keel.example", password=STRONG, scope="user"
    )
    assert scoped.json()["scope"] == "user"
    escalate = await _token(
        http, grant_type="password", username="oauth@keel.example", password=STRONG, scope="admin"
    )
    assert escalate.status_code == 400
    assert escalate.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("content", "headers", "error"),
    [
        (b"grant_type=client_credentials", FORM, "unsupported_grant_type"),
        (b"username=a%40b.example&password=x", FORM, "invalid_request"),
        (b"grant_type=password&username=a%40b.example", FORM, "invalid_request"),
        (b"grant_type=password&grant_type=password&username=u&password=p", FORM, "invalid_request"),
        (b"grant_type=password&username=u&password=%FF", FORM, "invalid_request"),
        (b"grant_type=password&&username", FORM, "invalid_request"),
        (b'{"grant_type": "password"}', {"content-type": "application/json"}, "invalid_request"),
        (b"grant_type=password&username=u&password=" + b"p" * 20000, FORM, "invalid_request"),
        (b"&".join(b"f%d=1" % n for n in range(40)), FORM, "invalid_request"),
    ],
)
async def test_token_endpoint_errors_follow_rfc_6749(
    http: httpx.AsyncClient, content: bytes, headers: dict[str, str], error: str
) -> None:
    response = await http.post("/auth/token", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_token_endpoint_is_documented_as_a_form(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    body = spec["paths"]["/auth/token"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in body


async def test_token_endpoint_works_with_an_oauth2_client(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    import authlib.deprecate  # type: ignore[import-untyped]  # installs authlib's own filter

    with warnings.catch_warnings():
        # authlib announces its move to httpx2 on import; the httpx client is what ships today.
        warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
            AsyncOAuth2Client,
        )

    await accounts.verified_user(http, "authlib@keel.example")
    transport = httpx.ASGITransport(app=accounts.app, client=("127.0.0.1", 50001))
    async with AsyncOAuth2Client(
        client_id="keel-cli", transport=transport, base_url="http://testserver"
    ) as client:
        token = await client.fetch_token(
            "http://testserver/auth/token", username="authlib@keel.example", password=STRONG
        )
        assert token["token_type"] == "bearer"
        me = await client.get("/users/me")
    assert me.status_code == 200
    assert me.json()["email"] == "authlib@keel.example"


# --- SEC-12: the failed-login and enumeration floors reach the app's accounts --------------------


async def test_sec_12_refused_logins_and_registration_answer_no_sooner_than_their_floors(
    settings_factory: SettingsFactory, tmp_path: Path, clock: FrozenClock
) -> None:
    settings = settings_factory(
        public_url="https://app.keel.example", failed_login_floor=0.3, enumeration_floor=0.2
    )
    accounts = build_accounts_app(settings, tmp_path / "mail.jsonl", clock=clock)
    async with running(accounts) as http:
        await accounts.verified_user(http, "floor@keel.example")
        for email, password, status, at_least in [
            ("floor@keel.example", "wrong password entirely 9", 401, 0.3),
            ("nobody@keel.example", "wrong password entirely 9", 401, 0.3),
        ]:
            began = time.monotonic()
            assert (await _login(http, email, password)).status_code == status
            assert time.monotonic() - began >= at_least
        began = time.monotonic()
        assert (await _login(http, "floor@keel.example", STRONG)).status_code == 200
        assert time.monotonic() - began < 0.3  # a correct password is not held back
        began = time.monotonic()
        body = {"email": "floor@keel.example", "password": STRONG}
        assert (await http.post("/auth/register", json=body)).status_code == 202
        assert time.monotonic() - began >= 0.2
