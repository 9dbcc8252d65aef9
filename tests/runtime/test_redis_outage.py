"""SEC-36 through a Redis outage, on real ``keel serve`` processes with two workers each and a
private Redis: one instance on SQLite, and two instances sharing PostgreSQL.

Redis is killed (after a ``SAVE``, so it comes back with the entries it held,
which the changes below make stale). While it is down a logout, a disable and
a role change succeed on the first instance and every worker of every
instance refuses the old rights at once; after Redis is back with its old
data, every worker still refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.db import migrate
from keel.security.keys import generate_key_file
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._workers import spread
from tests.unit.cache._servers import RedisServer, redis_server, require_programs

pytestmark = pytest.mark.runtime

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
WORKERS = 2


@dataclass
class Deployment:
    servers: list[RunningServer]
    redis: RedisServer

    @property
    def server(self) -> RunningServer:
        """The instance that takes the writes (any would do)."""
        return self.servers[0]

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        server: RunningServer | None = None,
        **kw: object,
    ) -> httpx.Response:
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request_id = kw.pop("request_id", None)
        if isinstance(request_id, str):
            headers["X-Request-ID"] = request_id
        return (server or self.server).client.request(
            method, path, headers=headers, timeout=15.0, json=kw.get("json")
        )

    def login(self, email: str) -> str:
        response = self.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def register(self, email: str) -> str:
        body = {"email": email, "password": PASSWORD}
        assert self.call("POST", "/auth/register", json=body).status_code == 202
        token = self.login(email)
        return str(self.call("GET", "/users/me", token).json()["id"])

    def everywhere(self, label: str, request: Callable[[RunningServer, str], int]) -> set[int]:
        """The statuses of ``request`` sent until every worker of every instance answered some."""
        statuses: set[int] = set()
        for n, server in enumerate(self.servers):

            def send(request_id: str, server: RunningServer = server) -> int:
                return request(server, request_id)

            statuses |= set(spread(server, send, f"{label}-{n}", workers=WORKERS, per_round=32))
        return statuses

    def readiness(self) -> set[str]:
        """Each instance's ``/readyz`` status."""
        return {str(self.call("GET", "/readyz", server=s).json()["status"]) for s in self.servers}


def _eventually(condition: Callable[[], bool], deadline: float = 15.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="one-instance-sqlite"),
        pytest.param("postgresql", id="two-instances-postgresql", marks=pytest.mark.postgres),
    ]
)
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    require_programs("redis-server")
    (tmp_path / "keel").mkdir()
    if request.param == "sqlite":
        database_url, instances = f"sqlite:///{tmp_path / 'keel' / 'keel.sqlite3'}", 1
    else:
        database_url, instances = str(request.getfixturevalue("postgres_url")), 2
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=database_url).database))
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file, "EdDSA")
    with redis_server(tmp_path / "redis") as redis, contextlib.ExitStack() as stack:
        env = {
            "WEB_CONCURRENCY": str(WORKERS),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            # Every instance signs and seals with the same keys, as a deployment's do.
            "KEEL_JWT_KEY_FILE": str(key_file),
            "KEEL_AUDIT_KEY": "redis-outage-audit-key-" + "x" * 32,
            "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
            "KEEL_MAIL_BACKEND": "file",
            "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
            "KEEL_THROTTLE_ENABLED": "false",
        }
        servers = [
            stack.enter_context(running_server(tmp_path / f"keel-{n}", FACTORY, env=env))
            for n in range(instances)
        ]
        deployment = Deployment(servers, redis)
        assert _eventually(lambda: deployment.readiness() == {"ok"}), servers[0].logs()
        created = subprocess.run(
            [sys.executable, "-m", "keel", "users", "create-admin", "--email", "root@x.io"],
            input=PASSWORD + "\n",
            env={**os.environ, "DATABASE_URL": database_url, "KEEL_ENV": "development"},
            cwd=tmp_path / "keel",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        yield deployment


def test_sec_36_logout_disable_and_demotion_during_a_redis_outage_hold_during_and_after(
    deployment: Deployment,
) -> None:
    d = deployment
    d.register("alice@x.io")
    carol_id = d.register("carol@x.io")
    bob_id = d.register("bob@x.io")
    root = d.login("root@x.io")
    promoted = d.call("PATCH", f"/admin/users/{bob_id}", root, json={"roles": ["admin", "user"]})
    assert promoted.status_code == 200, promoted.text
    alice, carol, bob = d.login("alice@x.io"), d.login("carol@x.io"), d.login("bob@x.io")

    def me(token: str) -> Callable[[RunningServer, str], int]:
        return lambda server, rid: (
            d.call("GET", "/users/me", token, server=server, request_id=rid).status_code
        )

    def audit(token: str) -> Callable[[RunningServer, str], int]:
        return lambda server, rid: (
            d.call("GET", "/admin/audit", token, server=server, request_id=rid).status_code
        )

    # Every worker has seen each token as good, so each may hold a copy that says so.
    assert d.everywhere("warm-alice", me(alice)) == {200}
    assert d.everywhere("warm-carol", me(carol)) == {200}
    assert d.everywhere("warm-bob", audit(bob)) == {200}

    d.redis.snapshot()  # Redis comes back with these entries, which are about to go stale
    d.redis.kill()
    assert _eventually(lambda: d.readiness() == {"degraded"}), d.server.logs()

    assert d.call("POST", "/auth/logout", alice).status_code == 204
    disabled = d.call("PATCH", f"/admin/users/{carol_id}", root, json={"active": False})
    assert disabled.status_code == 200, disabled.text
    demoted = d.call("PATCH", f"/admin/users/{bob_id}", root, json={"roles": ["user"]})
    assert demoted.status_code == 200, demoted.text

    for phase in ("outage", "back"):
        if phase == "back":
            d.redis.start()
            assert _eventually(lambda: d.readiness() == {"ok"}), d.server.logs()
        assert d.everywhere(f"{phase}-alice", me(alice)) == {401}
        assert d.everywhere(f"{phase}-carol", me(carol)) == {401}
        assert d.everywhere(f"{phase}-bob-admin", audit(bob)) == {403}
        assert d.everywhere(f"{phase}-bob", me(bob)) == {200}
