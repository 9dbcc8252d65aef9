"""PostgreSQL stopped under load and started again: a real ``keel serve`` degrades and recovers.

The database is a private cluster this module creates (the shared server is
never stopped); Redis is the shared one, under a key prefix of the test's own.
Two workers serve a paced load of authenticated requests, some of which read
or write the database. ``pg_ctl stop -m fast`` ends every connection: ``/livez``
stays 200, ``/readyz`` turns 503, and every route that needs the database
answers 503 problem+json with the stable code ``database_unavailable`` and
nothing about the database in it. No worker dies. Once PostgreSQL is started
again the same workers answer 2xx within ``RECOVERY_BOUND`` seconds.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from keel.db import migrate
from keel.security.keys import generate_key_file
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._postgres import PostgresCluster, postgres_cluster
from tests.runtime._workers import worker_pids

pytestmark = [pytest.mark.runtime, pytest.mark.redis]

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
WORKERS = 2
USERS = 2
LOAD_THREADS = 4
#: Seconds, from ``pg_ctl start`` returning, by which every route answers 2xx again.
RECOVERY_BOUND = 5.0
#: Seconds between two requests of one load thread.
PACE = 0.02


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as running:
        yield running


@dataclass
class Deployment:
    server: RunningServer
    cluster: PostgresCluster
    tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.server.client.request(method, path, headers=headers, timeout=15.0, json=json)

    def readiness(self) -> int:
        return self.call("GET", "/readyz").status_code


def _until(condition: Callable[[], bool], deadline: float) -> float | None:
    """Seconds until ``condition()`` held, or ``None`` if it never did within ``deadline``."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


async def _create_database(cluster: PostgresCluster) -> str:
    name = f"keel_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return cluster.url(name)


@pytest.fixture
def deployment(
    cluster: PostgresCluster, tmp_path: Path, redis_url: str, redis_namespace: str
) -> Iterator[Deployment]:
    if not cluster.running:  # a failed test may have left it stopped
        cluster.start()
    database_url = asyncio.run(_create_database(cluster))
    migrate.upgrade(Settings(database_url=database_url).database)
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file, "EdDSA")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "KEEL_CACHE_NAMESPACE": redis_namespace,
        "KEEL_JWT_KEY_FILE": str(key_file),
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        "KEEL_THROTTLE_ENABLED": "false",
        "WEB_CONCURRENCY": str(WORKERS),
    }
    with running_server(tmp_path / "keel", FACTORY, env=env) as server:
        d = Deployment(server, cluster)

        def on_redis() -> bool:  # a worker's first Redis connect can time out on a busy machine
            return bool(d.call("GET", "/readyz").json().get("status") == "ok")

        assert _until(on_redis, 30) is not None, server.logs()
        for n in range(USERS):
            body = {"email": f"user{n}@example.com", "password": PASSWORD}
            assert d.call("POST", "/auth/register", json=body).status_code == 202
            login = d.call("POST", "/auth/login", json=body)
            assert login.status_code == 200, login.text
            d.tokens.append(login.json()["access_token"])
            d.refresh_tokens.append(login.json()["refresh_token"])
        yield d


@dataclass(frozen=True)
class Answer:
    at: float
    route: str
    status: int
    content_type: str
    body: str


class Load:
    """Threads sending authenticated requests, each every ``PACE`` s, until stopped."""

    ROUTES = ("GET /sessions", "PATCH /users/me", "GET /users/me")

    def __init__(self, d: Deployment) -> None:
        self._d = d
        self._stop = threading.Event()
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(LOAD_THREADS)
        self._futures = [self._pool.submit(self._run, n) for n in range(LOAD_THREADS)]

    def _run(self, n: int) -> None:
        token, i = self._d.tokens[n % USERS], 0
        while not self._stop.is_set():
            route = self.ROUTES[i % len(self.ROUTES)]
            method, path = route.split(" ")
            body = {"display_name": f"user {n} #{i}"} if method == "PATCH" else None
            try:
                r = self._d.call(method, path, token, json=body)
                answer = Answer(
                    time.monotonic(), route, r.status_code, r.headers["content-type"], r.text
                )
            except httpx.HTTPError as exc:  # a reset or an empty reply: a crash, not an answer
                answer = Answer(time.monotonic(), route, 0, "", type(exc).__name__)
            with self._lock:
                self.answers.append(answer)
            i += 1
            self._stop.wait(PACE)

    def since(self, start: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= start]

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()


# What an answer must never carry: SQL, driver or exception names, where the database is.
_INTERNALS = re.compile(
    r"select |insert |update |delete from|sqlalchemy|asyncpg|psycopg|postgres|sqlstate|"
    r"traceback|exception|error:|refused|127\.0\.0\.1|localhost|\.py\b|\bport\b",
    re.IGNORECASE,
)


def _is_clean_database_problem(answer: Answer, port: int) -> bool:
    if answer.status != 503 or answer.content_type != "application/problem+json":
        return False
    if '"code":"database_unavailable"' not in answer.body.replace(" ", ""):
        return False
    return _INTERNALS.search(answer.body) is None and str(port) not in answer.body


def test_sec_53_a_postgresql_outage_under_load_is_503_without_internals_then_recovers(
    deployment: Deployment,
) -> None:
    d, cluster = deployment, deployment.cluster
    pids = worker_pids(d.server)
    assert len(pids) == WORKERS

    load = Load(d)
    try:
        time.sleep(1.0)
        before = load.since(0)
        assert before
        assert {a.status for a in before} == {200}, before[-3:]

        stopped_at = time.monotonic()
        cluster.stop("fast")
        assert _until(lambda: d.readiness() == 503, 10) is not None, d.server.logs()
        time.sleep(1.5)  # the load keeps coming through the outage
        outage_end = time.monotonic()

        # A login, a registration and a refresh need the database too: 503, never a
        # 401 (which would tell the caller its credentials are wrong) or a 202.
        creds = {"email": "user0@example.com", "password": PASSWORD}
        login = d.call("POST", "/auth/login", json=creds)
        fresh = {"email": "new@example.com", "password": PASSWORD}
        register = d.call("POST", "/auth/register", json=fresh)
        refresh = {"refresh_token": d.refresh_tokens[0]}
        refreshed = d.call("POST", "/auth/refresh", json=refresh)
        livez, readyz = d.call("GET", "/livez"), d.call("GET", "/readyz")

        started_at = time.monotonic()
        cluster.start()

        def answering() -> bool:  # every route's last two answers are 200
            recent = load.since(started_at)
            return all(
                [a.status for a in recent if a.route == route][-2:] == [200, 200]
                for route in Load.ROUTES
            )

        _until(answering, RECOVERY_BOUND + 5)
        time.sleep(1.0)  # and they stay 200
    finally:
        load.stop()

    assert livez.status_code == 200
    assert readyz.status_code == 503
    assert readyz.json()["status"] == "unavailable"
    for answer in (login, register, refreshed):
        problem = Answer(0, "", answer.status_code, answer.headers["content-type"], answer.text)
        assert _is_clean_database_problem(problem, cluster.port), answer.text

    during = [a for a in load.since(stopped_at) if a.at < started_at]
    # Answered throughout; never a 500, a reset or an empty reply. /users/me may still be
    # answered from the security cache, which needs no database.
    assert {a.status for a in during} <= {200, 503}, sorted({(a.status, a.body) for a in during})
    unavailable = [a for a in during if a.status == 503]
    assert all(_is_clean_database_problem(a, cluster.port) for a in unavailable), unavailable[:3]
    deep = [a for a in load.since(stopped_at + 1.0) if a.at < outage_end]
    for route in ("GET /sessions", "PATCH /users/me"):
        assert {a.status for a in deep if a.route == route} == {503}, route

    # Recovered: the last answer other than 200 came within the bound, none since.
    since_start = load.since(started_at)
    failed = [a.at for a in since_start if a.status != 200]
    recovered_at = max(failed, default=started_at)
    assert recovered_at - started_at <= RECOVERY_BOUND, recovered_at - started_at
    tail = [a for a in since_start if a.at > recovered_at]
    assert {a.route for a in tail if a.status == 200} == set(Load.ROUTES), since_start[-5:]
    assert d.readiness() == 200

    # The same workers throughout: none crashed or was replaced.
    assert worker_pids(d.server) == pids
    assert d.server.process.poll() is None
    assert d.server.logs().count("Booting worker with pid") == WORKERS
