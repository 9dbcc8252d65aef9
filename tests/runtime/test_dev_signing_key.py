"""``keel serve`` in development without a signing key: every worker, and the next start,
accept the same tokens (one development key file, made by the master)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from keel.db import migrate
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server, server_command
from tests.runtime._workers import events, spread

pytestmark = pytest.mark.runtime

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
REQUESTS = 64


def _me(server: RunningServer, token: str, request_id: str) -> int:
    """``GET /users/me`` on a fresh connection (so the kernel may hand it to any worker)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Connection": "close",
        "X-Request-ID": request_id,
    }
    return server.client.get("/users/me", headers=headers, timeout=15.0).status_code


def _every_worker_accepts(server: RunningServer, token: str, label: str) -> int:
    """Send the token until every worker has served some; every answer must be 200."""
    statuses = spread(server, lambda rid: _me(server, token, rid), label, workers=2)
    assert set(statuses) == {200}, server.logs()
    return len(statuses)


def test_every_worker_and_the_next_start_accept_the_same_token(tmp_path: Path) -> None:
    workdir = tmp_path / "keel"
    workdir.mkdir()
    database = Settings(database_url=f"sqlite:///{workdir / 'keel.sqlite3'}").database
    asyncio.run(asyncio.to_thread(migrate.upgrade, database))
    env = {
        "WEB_CONCURRENCY": "2",
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(workdir / "mail.jsonl"),
    }
    key_file = workdir / "var" / "dev-signing-keys.json"

    with running_server(workdir, FACTORY, env=env) as first:
        credentials = {"email": "dev@example.com", "password": PASSWORD}
        registered = first.client.post("/auth/register", json=credentials)
        assert registered.status_code == 202, registered.text
        login = first.client.post("/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]

        assert _every_worker_accepts(first, token, "first") >= REQUESTS
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        announced = [e for e in events(first) if e.get("event") == "jwt_development_key_file"]
        assert [(e["path"], e["created"]) for e in announced] == [(str(key_file), True)]
        assert "jwt_ephemeral_key" not in first.logs()
    assert first.process.returncode == 0, first.logs()  # SIGTERM: a clean stop

    with running_server(workdir, FACTORY, env=env) as second:
        assert _every_worker_accepts(second, token, "second") >= REQUESTS
        announced = [e for e in events(second) if e.get("event") == "jwt_development_key_file"]
        assert [(e["path"], e["created"]) for e in announced] == [(str(key_file), False)]


def test_keel_dev_signs_with_the_same_development_key_file(tmp_path: Path) -> None:
    workdir = tmp_path / "keel"
    workdir.mkdir()
    database = Settings(database_url=f"sqlite:///{workdir / 'keel.sqlite3'}").database
    asyncio.run(asyncio.to_thread(migrate.upgrade, database))
    env = {
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(workdir / "mail.jsonl"),
    }

    def keel_dev(_: int) -> list[str]:
        return server_command(FACTORY, "dev")

    # A token from keel dev's reloading child verifies on a later keel serve in the same
    # directory: both took their key from the file the first of them made.
    with running_server(workdir, FACTORY, env=env, command=keel_dev) as dev:
        credentials = {"email": "dev@example.com", "password": PASSWORD}
        assert dev.client.post("/auth/register", json=credentials).status_code == 202
        login = dev.client.post("/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        assert _me(dev, token, "dev-0") == 200
        assert "jwt_ephemeral_key" not in dev.logs()
    with running_server(workdir, FACTORY, env=env) as served:
        assert _me(served, token, "serve-0") == 200
        announced = [e for e in events(served) if e.get("event") == "jwt_development_key_file"]
        assert [e["created"] for e in announced] == [False]
