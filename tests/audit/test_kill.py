"""A process killed with SIGKILL mid-transaction leaves a sound chain: no change without its event.

First a bare appender (a business row and its event per unit of work); then a
real ``keel serve`` whose workers are killed, each caught inside a write
transaction, while concurrent clients register, log in, refresh, change
passwords, log out and, as an admin, disable accounts, change roles and end
sessions. Afterwards every account, session, rotation and ended session
matches its audit events one for one, no row is an orphan, every acknowledged
write is there, and ``keel audit verify`` passes: on SQLite (the embedded
default) and on PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from keel.accounts.models import User
from keel.audit import verify
from keel.audit.models import events_table
from keel.auth.models import AuthSession
from keel.db import Database
from tests.audit._inflight import WriteProbe
from tests.audit._integrity import problems
from tests.audit._support import KEY, KEYRING, make_settings, rows
from tests.audit._writers import ACCOUNT_WRITERS, PASSWORD, Writers
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._workers import worker_pids

ROOT = Path(__file__).resolve().parents[2]

# Each iteration: one unit of work with a business row and its event; prints n once committed.
APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pydantic import SecretStr
    from sqlalchemy import text
    from keel.audit import Action, AuditEvent, AuditKeyring, Result, record
    from keel.db import Database
    from keel.settings import DatabaseSettings, normalize_database_url

    url, key = sys.argv[1], sys.argv[2]
    keyring = AuditKeyring(current_id="k1", keys={"k1": key.encode()})

    async def main():
        settings = DatabaseSettings(
            url=SecretStr(normalize_database_url(url)), pool_size=1, max_overflow=0,
            pool_timeout=10.0, connect_timeout=10.0, echo=False,
        )
        database = Database(settings)
        n = 0
        while True:
            n += 1
            async with database.unit_of_work() as uow:
                insert = text("INSERT INTO kill_business (n) VALUES (:n)")
                await uow.session.execute(insert, {"n": n})
                sample = AuditEvent(
                    Action.USER_CREATED, Result.SUCCESS, datetime.now(UTC),
                    target_type="business", target_id=str(n), details={"n": n},
                )
                await record(uow, sample, keyring)
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
async def test_sigkill_mid_append_leaves_a_sound_chain(audit_database: Database) -> None:
    async with audit_database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE kill_business (n INTEGER PRIMARY KEY)"))
    url = audit_database.settings.url.get_secret_value()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        APPENDER,
        url,
        KEY.decode(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    committed: list[int] = []
    try:
        assert process.stdout is not None
        target = 25 + random.randrange(15)
        while len(committed) < target:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, "the appender died"
            committed.append(int(line))
        await asyncio.sleep(random.uniform(0, 0.02))  # land somewhere inside an iteration
        process.send_signal(signal.SIGKILL)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        committed.extend(int(n) for n in out.split())
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == -signal.SIGKILL

    result = await verify(audit_database, KEYRING)
    assert result.ok, str(result)
    async with audit_database.engine.connect() as conn:
        business = set((await conn.execute(text("SELECT n FROM kill_business"))).scalars())
    events = {json.loads(row["details"])["n"] for row in await rows(audit_database)}
    assert business == events  # no change without its event, no event without its change
    assert set(committed) <= business  # every acknowledged commit survived
    assert business == set(range(1, len(business) + 1))
    assert result.count == len(events)


async def _half_write(database: Database) -> tuple[uuid.UUID, uuid.UUID]:
    """An account and an ended session written without any of their events."""
    now = datetime.now(UTC)
    user, session = uuid.uuid4(), uuid.uuid4()
    async with database.unit_of_work() as uow:
        uow.session.add(
            User(
                id=user,
                email="half@example.com",
                email_key="half@example.com",
                email_verified_at=None,
                display_name=None,
                password_hash="x",
                roles="user",
                is_active=False,
                tokens_valid_after=now.replace(microsecond=0),
                created_at=now,
                updated_at=now,
            )
        )
        await uow.flush()
        uow.session.add(
            AuthSession(
                id=session,
                user_id=user,
                scopes="user",
                generation=1,
                created_at=now,
                last_used_at=now,
                idle_expires_at=now,
                absolute_expires_at=now,
                revoked_at=now,
                revoked_reason="disabled",
            )
        )
    return user, session


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def own_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of this test's own (the shared one keeps only an empty chain)."""
    name = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_postgres_url"
    url: str = request.getfixturevalue(name)
    return url


async def test_the_integrity_check_finds_rows_without_their_events(own_url: str) -> None:
    """What the HTTP kill test relies on: a half-written change does not go unnoticed."""
    database = Database(make_settings(own_url))
    try:
        assert await problems(database) == []
        user, session = await _half_write(database)
        found = await problems(database)
    finally:
        await database.dispose()
    assert f"account {user} has 0 user_created events" in found
    assert f"session {session} has 0 login events" in found
    assert f"session {session} at 1: refresh tokens []" in found
    assert f"session {session} at 1: renewals []" in found
    assert f"({user!r}, 'disabled'): 1 sessions ended, 0 in the events" in found
    assert f"account {user}: active=False, a disable event: False" in found


# -- the same on the HTTP path: a real ``keel serve`` whose workers are SIGKILLed mid-request ---

WORKERS = 2
KILLS = 3
CATCH_DEADLINE = 10.0
WARM_DEADLINE = 30.0
ADMIN_EMAIL = "root@example.com"


def _keel(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KEEL_ENV": "development",
        "KEEL_AUDIT_KEY": KEY.decode(),
    }
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _read_back(url: str) -> tuple[list[str], dict[str, Any]]:
    """The mismatches between rows and events, and what the acknowledged writes left."""
    database = Database(make_settings(url))
    try:
        found = await problems(database)
        async with database.engine.connect() as conn:
            users = list(await conn.execute(select(User.email, User.id, User.is_active)))
            query = select(AuthSession.id, AuthSession.generation, AuthSession.revoked_reason)
            sessions = list(await conn.execute(query))
            changes = select(events_table.c.target_id).where(
                events_table.c.action == "authn_password_change",
                events_table.c.result == "success",
            )
            changed = set((await conn.execute(changes)).scalars())
            count = select(func.count()).select_from(events_table)
            events = (await conn.execute(count)).scalar_one()
    finally:
        await database.dispose()
    return found, {
        "emails": {row[0] for row in users},
        "inactive": {uuid.UUID(str(row[1])) for row in users if not row[2]},
        "sessions": {uuid.UUID(str(s[0])): (s[1], s[2]) for s in sessions},
        "changed": {uuid.UUID(t) for t in changed},
        "events": events,
    }


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A migrated database for a server and its environment: SQLite and the state file (the
    embedded default), then PostgreSQL and Redis."""
    env = {
        "WEB_CONCURRENCY": str(WORKERS),
        "KEEL_AUDIT_KEY": KEY.decode(),
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_THROTTLE_ENABLED": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
    }
    if request.param == "sqlite":
        url: str = request.getfixturevalue("migrated_sqlite_url")
    else:
        url = request.getfixturevalue("migrated_postgres_url")
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["KEEL_CACHE_NAMESPACE"] = request.getfixturevalue("redis_namespace")
    env["DATABASE_URL"] = url
    return url, env


def _kill_mid_write(server: RunningServer, writers: Writers, probe: WriteProbe) -> list[bool]:
    """``KILLS`` times: after a random pause, freeze a running worker (SIGSTOP) until one is
    caught inside a write transaction, then SIGKILL it, and wait for its replacement.

    Returns, per kill, whether it landed mid-transaction (each try gives up after
    ``CATCH_DEADLINE`` s and kills the worker wherever it is).
    """
    killed: set[int] = set()
    landed: list[bool] = []
    # Every kind of write is under way before the first kill (hashing paces the accounts).
    warm = time.monotonic() + WARM_DEADLINE
    ledger = writers.ledger
    while not (ledger.changed and ledger.disabled and ledger.logged_out and ledger.renewed):
        assert time.monotonic() < warm, f"not every kind of write was answered: {ledger}"
        time.sleep(0.05)
    for _ in range(KILLS):
        time.sleep(random.uniform(0.1, 0.5))
        deadline = time.monotonic() + CATCH_DEADLINE
        live = sorted(worker_pids(server) - killed)
        assert len(live) == WORKERS, server.logs()
        while True:
            victim = random.choice(live)
            os.kill(victim, signal.SIGSTOP)
            inside = probe.writing(victim)
            if inside or time.monotonic() > deadline:
                os.kill(victim, signal.SIGKILL)  # a stopped process dies at once too
                break
            os.kill(victim, signal.SIGCONT)
            time.sleep(random.uniform(0.02, 0.05))
        killed.add(victim)
        landed.append(inside)
        replaced = time.monotonic() + 30
        while len(worker_pids(server) - killed) < WORKERS:
            assert time.monotonic() < replaced, f"nothing replaced {victim}:\n{server.logs()}"
            time.sleep(0.05)
    time.sleep(0.5)  # the replacements serve some writes too
    return landed


@pytest.mark.runtime
@pytest.mark.timeout(120)
def test_sigkill_of_a_worker_mid_request_leaves_no_half_written_change(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    if not Path("/proc/locks").exists():
        pytest.skip("catching a worker inside a transaction reads Linux's /proc")
    url, env = served
    created = _keel(url, "users", "create-admin", "--email", ADMIN_EMAIL, stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    with running_server(tmp_path / "keel", "keel.api.app:create_app", env=env) as server:
        body = {"email": ADMIN_EMAIL, "password": PASSWORD}
        admin = server.client.post("/auth/login", json=body, timeout=30.0)
        assert admin.status_code == 200, admin.text
        writers, probe = Writers(server, str(admin.json()["access_token"])), WriteProbe(url)
        try:
            landed = _kill_mid_write(server, writers, probe)
        finally:
            ledger = writers.stop()
            probe.close()
        assert server.process.poll() is None
        assert server.logs().count("was sent SIGKILL") == KILLS

    # Every kill caught its worker inside a write transaction; requests were cut short
    # with it, and everything else was answered properly.
    assert landed == [True] * KILLS, f"caught mid-transaction: {landed}"
    assert ledger.cut >= 1
    assert not [s for s in ledger.statuses if s[1] >= 500], ledger.statuses
    assert len(ledger.registered) >= ACCOUNT_WRITERS

    found, rows = asyncio.run(_read_back(url))
    assert found == []
    # Every acknowledged write survived.
    assert ledger.registered <= rows["emails"]
    assert ledger.sessions <= rows["sessions"].keys()
    assert all(rows["sessions"][s][1] == "logout" for s in ledger.logged_out)
    assert all(rows["sessions"][s][0] >= n for s, n in ledger.renewed.items())
    assert ledger.changed <= rows["changed"]
    assert ledger.disabled <= rows["inactive"]

    verified = _keel(url, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {rows['events']} events"), verified.stdout
