"""Interoperability: authlib's OAuth 2.0 client logs in and refreshes against a running keel.

A real ``keel serve`` (gunicorn + uvicorn worker, the default app factory)
with the accounts and session routes; authlib's own ``OAuth2Client`` uses the
password grant at ``/auth/token``, calls ``/users/me`` with the bearer token,
then rotates its refresh token with the ``refresh_token`` grant (RFC 6749 §6).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.db import migrate
from keel.security.keys import generate_key_file
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server

pytestmark = pytest.mark.runtime

EMAIL = "authlib@keel.example"
PASSWORD = "correct horse battery staple 42"


def _oauth2_client() -> Any:
    import authlib.deprecate  # type: ignore[import-untyped]  # installs authlib's own filter

    with warnings.catch_warnings():
        # authlib announces its move to httpx2 on import; the httpx client is what ships today.
        warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
            OAuth2Client,
        )
    return OAuth2Client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    # The harness serves the SQLite file in its working directory: migrate it first.
    migrate.upgrade(Settings(database_url=f"sqlite:///{workdir / 'keel.sqlite3'}").database)
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file, "EdDSA")
    env = {
        "KEEL_JWT_KEY_FILE": str(key_file),
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        # No grace window: a replay below is reuse at once, however fast the test runs.
        "KEEL_REFRESH_GRACE_SECONDS": "0",
    }
    with running_server(workdir, "keel.api.app:create_app", env=env) as running:
        yield running


def test_authlib_logs_in_and_refreshes(server: RunningServer) -> None:
    registered = server.client.post(
        "/auth/register",
        json={"email": EMAIL, "password": PASSWORD},
        headers={"Connection": "close"},
    )
    assert registered.status_code == 202, registered.text
    token_url = server.base_url + "/auth/token"
    with _oauth2_client()(client_id="keel-cli", base_url=server.base_url) as client:
        token = client.fetch_token(token_url, username=EMAIL, password=PASSWORD)
        assert token["token_type"] == "bearer"
        first_refresh = token["refresh_token"]
        me = client.get("/users/me")
        assert me.status_code == 200, me.text
        assert me.json()["email"] == EMAIL

        renewed = client.refresh_token(token_url, refresh_token=first_refresh)
        assert renewed["refresh_token"] != first_refresh
        assert renewed["access_token"] != token["access_token"]
        assert client.get("/users/me").status_code == 200

    # The rotated-out token is refused with the RFC 6749 error a client understands.
    replay = httpx.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": first_refresh},
        headers={"Connection": "close"},
    )
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
