"""Two keel servers, one PostgreSQL, one Redis: what one instance revokes, the other refuses.

Each server is a real ``keel serve`` (gunicorn master + two uvicorn workers)
on its own loopback port, both with the default app factory, the same signing
key file, the same fresh PostgreSQL database and the same Redis namespace —
the production shape of "many identical instances".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.db import migrate
from keel.security.keys import generate_key_file
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._workers import CLIENTS, served_by, spread

pytestmark = pytest.mark.runtime

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
WORKERS = 2
#: The bound on how long after the revoking response any worker may still accept the token.
REVOCATION_BOUND = 0.050


@dataclass
class Pair:
    a: RunningServer
    b: RunningServer

    @staticmethod
    def call(
        server: RunningServer, method: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Connection": "close", **kw.pop("headers", {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return server.client.request(method, path, headers=headers, timeout=10.0, **kw)

    def register(self, email: str) -> None:
        response = self.call(self.a, "POST", "/auth/register", json=_creds(email))
        assert response.status_code == 202, response.text

    def login(self, server: RunningServer, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.call(server, "POST", "/auth/login", json=_creds(email, password))


def _creds(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"email": email, "password": password}


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, redis_url: str, redis_namespace: str) -> Iterator[Pair]:
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=postgres_url).database))
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file, "EdDSA")
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "KEEL_CACHE_NAMESPACE": redis_namespace,
        "KEEL_JWT_KEY_FILE": str(key_file),
        "KEEL_AUDIT_KEY": "two-instances-audit-key-" + "x" * 32,
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        "KEEL_REFRESH_GRACE_SECONDS": "0",
        "KEEL_PUBLIC_URL": "https://keel.example",
        "WEB_CONCURRENCY": str(WORKERS),
    }
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_server(tmp_path / "a", FACTORY, env=env))
        b = stack.enter_context(running_server(tmp_path / "b", FACTORY, env=env))
        for server in (a, b):
            _wait_until_on_redis(server)
        yield Pair(a, b)


def _wait_until_on_redis(server: RunningServer, deadline: float = 30.0) -> None:
    """Until ``/readyz`` says ``ok``: on a loaded machine a worker's first Redis connect can
    time out, and an instance serving from its in-memory fallback shares nothing (the
    documented degraded mode), which is not what these tests are about."""
    stop = time.monotonic() + deadline
    while True:
        ready = Pair.call(server, "GET", "/readyz")
        if ready.status_code == 200 and ready.json()["status"] == "ok":
            return
        if time.monotonic() > stop:
            raise AssertionError(f"the instance never reached Redis: {ready.text}")
        time.sleep(0.2)


def _refused_within_the_bound(server: RunningServer, token: str, *, since: float) -> None:
    """``token`` is refused on ``server``; accepted, if at all, only within the bound after
    ``since`` (when the revoking response arrived). A worker that cached the session as live
    hears of the revocation as fast as Redis delivers the message, and its event loop may
    handle a request that arrived at the same moment first: "at once" on the instance that
    revoked, within ``REVOCATION_BOUND`` on the others."""
    accepted: list[float] = []
    while (status := Pair.call(server, "GET", "/users/me", token).status_code) == 200:
        accepted.append(time.monotonic() - since)
        assert accepted[-1] < REVOCATION_BOUND, accepted
    assert status == 401
    assert Pair.call(server, "GET", "/users/me", token).status_code == 401


def test_sec_36_logout_on_one_instance_is_refused_on_the_other(pair: Pair) -> None:
    pair.register("ann@example.com")
    login = pair.login(pair.a, "ann@example.com")
    assert login.status_code == 200, login.text
    access = login.json()["access_token"]
    assert pair.call(pair.b, "GET", "/users/me", access).status_code == 200
    assert pair.call(pair.a, "POST", "/auth/logout", access).status_code == 204
    _refused_within_the_bound(pair.b, access, since=time.monotonic())
    refresh = login.json()["refresh_token"]
    refused = pair.call(pair.b, "POST", "/auth/refresh", json={"refresh_token": refresh})
    assert refused.status_code == 401


def test_sec_39_reuse_detected_on_one_instance_kills_the_family_on_both(pair: Pair) -> None:
    pair.register("ben@example.com")
    first = pair.login(pair.a, "ben@example.com").json()
    rotated = pair.call(
        pair.a, "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert pair.call(pair.a, "GET", "/users/me", second["access_token"]).status_code == 200
    replay = pair.call(
        pair.b, "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    revoked_at = time.monotonic()
    assert replay.status_code == 401
    # Dead on both: the live refresh token and the family's access token.
    live = pair.call(
        pair.a, "POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert live.status_code == 401
    _refused_within_the_bound(pair.a, second["access_token"], since=revoked_at)
    _refused_within_the_bound(pair.b, second["access_token"], since=revoked_at)


def test_sec_13_lockout_counters_are_shared(pair: Pair) -> None:
    pair.register("cy@example.com")
    # Five failures on each instance: ten for the account, wherever they landed.
    for server in (pair.a, pair.b) * 5:
        assert pair.login(server, "cy@example.com", "wrong horse battery 42").status_code == 401
    for server in (pair.a, pair.b):
        refused = pair.login(server, "cy@example.com")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1


def test_sec_36_a_logout_reaches_every_worker_of_every_instance_within_the_bound(
    pair: Pair,
) -> None:
    pair.register("dee@example.com")
    login = pair.login(pair.a, "dee@example.com")
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]

    def me(server: RunningServer, request_id: str) -> int:
        headers = {"X-Request-ID": request_id}
        return pair.call(server, "GET", "/users/me", token, headers=headers).status_code

    # Every worker of both instances has the token cached as good before the logout.
    for name, server in (("a", pair.a), ("b", pair.b)):

        def warm_me(request_id: str, server: RunningServer = server) -> int:
            return me(server, request_id)

        assert set(spread(server, warm_me, f"warm-{name}", workers=WORKERS)) == {200}

    logout = pair.call(pair.a, "POST", "/auth/logout", token, headers={"X-Request-ID": "out"})
    assert logout.status_code == 204
    revoked_at = time.monotonic()

    sent: list[tuple[float, int, str, str]] = []  # (seconds after the logout, status, ...)

    def probe(index: int) -> None:
        server, name = (pair.a, "a") if index % 2 == 0 else (pair.b, "b")
        request_id = f"after-{name}-{index:04d}"
        started = time.monotonic() - revoked_at
        sent.append((started, me(server, request_id), name, request_id))

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(probe, range(400)))
    served = {**served_by(pair.a, "after-a-"), **served_by(pair.b, "after-b-")}
    workers = {(name, served[rid]) for _, _, name, rid in sent if rid in served}
    assert len(workers) == 2 * WORKERS, f"not every worker was probed: {workers}"
    accepted = sorted(at for at, status, _, _ in sent if status == 200)
    refused_late = [status for at, status, _, _ in sent if at >= REVOCATION_BOUND]
    # Accepted requests, if any, were all sent within the bound after the logout answered.
    assert not accepted or accepted[-1] < REVOCATION_BOUND, accepted
    assert refused_late
    assert set(refused_late) == {401}
    # The worker that handled the logout refused at once.
    logout_pid = served_by(pair.a, "out")["out"]
    assert {status for _, status, _, rid in sent if served.get(rid) == logout_pid} == {401}
