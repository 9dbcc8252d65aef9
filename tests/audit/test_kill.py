"""A writer killed with SIGKILL mid-append leaves a sound chain: no change without its event."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from keel.audit import verify
from keel.db import Database
from tests.audit._support import KEY, KEYRING, rows

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
async def test_sigkill_mid_append_leaves_a_sound_chain(database: Database) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE kill_business (n INTEGER PRIMARY KEY)"))
    url = database.settings.url.get_secret_value()
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

    result = await verify(database, KEYRING)
    assert result.ok, str(result)
    async with database.engine.connect() as conn:
        business = set((await conn.execute(text("SELECT n FROM kill_business"))).scalars())
    events = {json.loads(row["details"])["n"] for row in await rows(database)}
    assert business == events  # no change without its event, no event without its change
    assert set(committed) <= business  # every acknowledged commit survived
    assert business == set(range(1, len(business) + 1))
    assert result.count == len(events)
