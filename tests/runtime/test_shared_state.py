"""The embedded default with several workers: one truth for every worker (real ``keel serve``).

SQLite and no ``REDIS_URL``, as ``make run`` starts keel: every worker opens the
same machine-shared state file, so a logout, a lockout and an owner's known
addresses are the same answer whichever worker takes the next request. Each
test checks in the access log that its requests were spread over the workers,
so none can pass because one worker happened to take them all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from keel.db import migrate
from keel.settings import Settings
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._workers import CLIENTS, served_by, spread

pytestmark = pytest.mark.runtime

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
WRONG = "wrong horse battery staple 42"
HOME = "198.51.100.7"


@pytest.fixture(params=[2, 4], ids=["2-workers", "4-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    count: int = request.param
    return count


@pytest.fixture
def server(workers: int, tmp_path: Path) -> Iterator[RunningServer]:
    database = Settings(database_url=f"sqlite:///{tmp_path / 'keel.sqlite3'}").database
    asyncio.run(asyncio.to_thread(migrate.upgrade, database))
    env = {
        "WEB_CONCURRENCY": str(workers),
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
    }
    with running_server(tmp_path, FACTORY, env=env) as running:
        yield running


def _call(
    server: RunningServer,
    method: str,
    path: str,
    *,
    request_id: str,
    token: str | None = None,
    source: str | None = None,
    json: dict[str, str] | None = None,
) -> httpx.Response:
    """One request on a fresh connection, from ``source`` (as the trusted loopback proxy says)."""
    headers = {"Connection": "close", "X-Request-ID": request_id}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if source is not None:
        headers["X-Forwarded-For"] = source
    return server.client.request(method, path, headers=headers, timeout=30.0, json=json)


def _login(
    server: RunningServer, email: str, password: str, *, source: str, request_id: str
) -> httpx.Response:
    body = {"email": email, "password": password}
    return _call(server, "POST", "/auth/login", request_id=request_id, source=source, json=body)


def _register(server: RunningServer, email: str) -> None:
    body = {"email": email, "password": PASSWORD}
    response = _call(server, "POST", "/auth/register", request_id=f"reg-{email}", json=body)
    assert response.status_code == 202, response.text


def _verify(server: RunningServer, email: str) -> None:
    """Redeem the link mailed to ``email`` (only verified accounts make their sources known)."""
    mail_file = server.stdout_path.parent / "mail.jsonl"
    deadline = time.monotonic() + 30
    while True:
        lines = mail_file.read_text().splitlines() if mail_file.exists() else []
        links = [
            m for m in map(json.loads, lines) if m["to"] == email and m["kind"] == "verify_email"
        ]
        if links:
            break
        assert time.monotonic() < deadline, f"no verification mail for {email}"
        time.sleep(0.1)
    line = next(x for x in links[-1]["body"].splitlines() if "#token=" in x)
    body = {"token": line.rsplit("#token=", 1)[1]}
    verified = _call(server, "POST", "/auth/verify-email", request_id=f"ver-{email}", json=body)
    assert verified.status_code == 200, verified.text


def test_sec_36_after_logout_every_worker_refuses_the_token(
    server: RunningServer, workers: int
) -> None:
    _register(server, "ann@example.com")
    login = _login(server, "ann@example.com", PASSWORD, source=HOME, request_id="login-ann")
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]

    def me(request_id: str) -> int:
        return _call(server, "GET", "/users/me", request_id=request_id, token=token).status_code

    # Every worker has seen the token as good (and cached what it read) before the logout.
    assert set(spread(server, me, "before", workers=workers)) == {200}
    logout = _call(server, "POST", "/auth/logout", request_id="logout", token=token)
    assert logout.status_code == 204
    after = spread(server, me, "after", workers=workers, per_round=50)
    assert len(after) >= 50
    assert set(after) == {401}


def test_sec_13_a_stranger_cannot_lock_the_owner_out_with_failures_spread_over_workers(
    server: RunningServer,
) -> None:
    for attempt in range(3):
        email = f"owner{attempt}@example.com"
        _register(server, email)
        _verify(server, email)
        home = _login(server, email, PASSWORD, source=HOME, request_id=f"home-{attempt}")
        assert home.status_code == 200, home.text  # the owner's address is now known

        # The lockout threshold (10) in failures, each from its own address, all at once.
        def fail(n: int, attempt: int = attempt, email: str = email) -> int:
            rid = f"fail-{attempt}-{n:02d}"
            return _login(server, email, WRONG, source=f"203.0.113.{n}", request_id=rid).status_code

        with ThreadPoolExecutor(CLIENTS) as pool:
            assert list(pool.map(fail, range(10))) == [401] * 10
        failed_on = set(served_by(server, f"fail-{attempt}-").values())
        if len(failed_on) < 2:
            continue  # one worker took them all: this attempt proves nothing, try again

        # A stranger with the right password is held back on every worker: the count is shared.
        def stranger(n: int, attempt: int = attempt, email: str = email) -> httpx.Response:
            rid = f"stranger-{attempt}-{n:02d}"
            return _login(server, email, PASSWORD, source=f"192.0.2.{n}", request_id=rid)

        with ThreadPoolExecutor(CLIENTS) as pool:
            refused = list(pool.map(stranger, range(8)))
        assert [r.status_code for r in refused] == [429] * 8, [r.text for r in refused]
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert len(set(served_by(server, f"stranger-{attempt}-").values())) >= 2

        # The owner, from home, is not: the known address is shared too, on every worker.
        def owner(n: int, attempt: int = attempt, email: str = email) -> int:
            rid = f"owner-{attempt}-{n:02d}"
            return _login(server, email, PASSWORD, source=HOME, request_id=rid).status_code

        with ThreadPoolExecutor(CLIENTS) as pool:
            assert list(pool.map(owner, range(8))) == [200] * 8
        assert len(set(served_by(server, f"owner-{attempt}-").values())) >= 2
        return
    pytest.fail("the failures never reached more than one worker in three attempts")
